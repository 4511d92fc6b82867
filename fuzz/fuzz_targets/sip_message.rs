//! SIP messages off the network: datagram parsing, stream framing, the typed header accessors
//! the transaction and dialog layers call, and print → re-parse (the printed form of a parsed
//! message must parse back to the same message, Content-Length aside, and print the same).
#![no_main]

use callbridge::sip::message::{frame, parse, Frame, Headers, NameAddr, Response, SipMessage, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Frame::Complete(len) = frame(data) {
        let _ = data.get(..len).map(parse);
    }
    let Ok(message) = parse(data) else { return };
    exercise_headers(message.headers());
    match &message {
        SipMessage::Request(request) => {
            let _ = request.check_mandatory();
            round_trip_uri(&request.uri);
            let response = Response::for_request(request, 200, "OK");
            let _ = parse(&response.to_bytes()).expect("a response to a parsed request parses");
        }
        SipMessage::Response(_) => {}
    }
    let printed = message.to_bytes();
    let reparsed = match parse(&printed) {
        Ok(m) => m,
        Err(e) => panic!(
            "printed message does not parse: {e}\n{}",
            String::from_utf8_lossy(&printed)
        ),
    };
    assert_eq!(reparsed.to_bytes(), printed, "printing is not stable");
    assert_eq!(
        without_content_length(&reparsed),
        without_content_length(&message),
        "print → parse changed the message"
    );
});

/// Every typed accessor; errors are fine, panics are not.
fn exercise_headers(headers: &Headers) {
    if let Ok(vias) = headers.vias() {
        for via in vias {
            let _ = via.branch();
            let _ = via.to_string();
        }
    }
    let _ = headers.top_via();
    for name_addr in [headers.from(), headers.to()].into_iter().flatten() {
        let _ = name_addr.tag();
        round_trip_name_addr(&name_addr);
    }
    let _ = headers.call_id();
    if let Ok(cseq) = headers.cseq() {
        let _ = cseq.to_string();
    }
    for list in [
        headers.contacts(),
        headers.record_routes(),
        headers.routes(),
    ]
    .into_iter()
    .flatten()
    {
        list.iter().for_each(round_trip_name_addr);
    }
    let _ = headers.contact_is_wildcard();
    let _ = headers.max_forwards();
    let _ = headers.content_type();
}

/// A parsed URI prints as a URI that parses back to itself.
fn round_trip_uri(uri: &Uri) {
    let printed = uri.to_string();
    match Uri::parse(&printed) {
        Ok(again) => assert_eq!(&again, uri, "URI print → parse: {printed}"),
        Err(e) => panic!("printed URI {printed:?} does not parse: {e}"),
    }
}

/// A parsed name-addr prints as one that parses back to itself.
fn round_trip_name_addr(name_addr: &NameAddr) {
    let printed = name_addr.to_string();
    match NameAddr::parse(&printed) {
        Ok(again) => assert_eq!(&again, name_addr, "name-addr print → parse: {printed}"),
        Err(e) => panic!("printed name-addr {printed:?} does not parse: {e}"),
    }
}

/// The message with its Content-Length headers dropped: the printer writes its own, last.
fn without_content_length(message: &SipMessage) -> SipMessage {
    let mut message = message.clone();
    let headers = match &mut message {
        SipMessage::Request(r) => &mut r.headers,
        SipMessage::Response(r) => &mut r.headers,
    };
    headers.remove("Content-Length");
    message
}
