//! End to end: Call Control for `application` routes — an application accepts, answers
//! (alone or into a conference), rejects, redirects and hangs up calls offered to it through
//! `IncomingCall`; undecided calls time out; the far end's hang-up is `RemoteHangup`.

mod common;

use std::time::Duration;

use common::uac::{self, Uac};
use common::Server;
use serde_json::{json, Value};

const APP_ROUTE: &str = "[[route]]\nuser = \"^app$\"\nservice = \"application\"\n";

fn call_action(server: &Server, action: &str, body: Value) -> (u16, Value) {
    let r = common::client()
        .post(server.url(&format!("/callcontrol/{action}")))
        .bearer_auth(common::TOKEN)
        .json(&body)
        .send()
        .expect("API reachable");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON body"))
}

fn is(event: &Value, name: &str) -> bool {
    event["Event"] == name
}

/// Sends an INVITE to `app` and waits for its offer (the next `IncomingCall`); returns the UAC
/// and the CallId.
fn offer(server: &Server, events: &mut common::EventStream, name: &str) -> (Uac, String) {
    let incoming = |events: &mut common::EventStream| -> Vec<Value> {
        events
            .drain()
            .iter()
            .filter(|e| is(e, "IncomingCall"))
            .cloned()
            .collect()
    };
    let before = incoming(events).len();
    let uac = Uac::new(server, name);
    uac.send(&uac.request("INVITE", "app", 1, "", &format!("{name}i"), &uac.sdp("0")));
    for _ in 0..150 {
        let offers = incoming(events);
        if let Some(new) = offers.get(before) {
            assert_eq!(new["Service"], "application");
            return (uac, new["CallId"].as_str().unwrap().to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name}: no IncomingCall");
}

/// Like `offer`, with an SDP of the UAC's choosing.
fn offer_with_sdp(
    server: &Server,
    events: &mut common::EventStream,
    name: &str,
    sdp: impl Fn(&Uac) -> String,
) -> (Uac, String) {
    let uac = Uac::new(server, name);
    uac.send(&uac.request("INVITE", "app", 1, "", &format!("{name}i"), &sdp(&uac)));
    let incoming = events.wait_for(Duration::from_secs(3), |e| {
        let port = format!(":{}>", uac.sip_port());
        is(e, "IncomingCall") && e["From"].as_str().is_some_and(|f| f.contains(&port))
    });
    (uac, incoming["CallId"].as_str().unwrap().to_string())
}

/// The next SIP message with a status (skipping 100 Trying), within 3 s.
fn next_status(uac: &Uac) -> (u16, String) {
    for _ in 0..30 {
        if let Some(msg) = uac.recv(Duration::from_millis(100)) {
            let status = uac::status(&msg);
            if status > 100 {
                return (status, msg);
            }
        }
    }
    panic!("no response");
}

#[test]
fn an_application_accepts_answers_and_hangs_up_a_call() {
    let server = Server::start(APP_ROUTE);
    let mut events = server.events();
    let (uac, call) = offer(&server, &mut events, "cc1");
    assert!(
        server.connections().is_empty(),
        "no media before the answer"
    );

    let (code, body) = call_action(&server, "AcceptCall", json!({"CallId": call}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(next_status(&uac).0, 180);

    let (code, answered) = call_action(
        &server,
        "AnswerCall",
        json!({"CallId": call, "WaitForMedia": "TxRx"}),
    );
    assert_eq!(code, 200, "{answered}");
    let (status, ok) = next_status(&uac);
    assert_eq!(status, 200);
    let port = uac::media_port(uac::body(&ok));
    assert_eq!(answered["MediaRxPort"], port);
    assert_eq!(
        answered["MediaTxPort"],
        uac.rtp.local_addr().unwrap().port()
    );
    assert_eq!(answered["MediaRxCodec"], "G711u");
    let connection = answered["ConnectionId"].as_str().unwrap().to_string();
    let tag = uac::to_tag(&ok);
    uac.send(&uac.request("ACK", "app", 1, &tag, "cc1a", ""));
    let listed = server.connections();
    assert_eq!(listed[0]["ConnectionId"], connection.as_str());
    assert_eq!(listed[0]["CallId"], call.as_str());
    let rx = events.wait_for(Duration::from_secs(2), |e| is(e, "StartRx"));
    assert_eq!(rx["MediaRxPort"], port);
    assert_eq!(rx["ConnectionId"], connection.as_str());
    let tx = events.wait_for(Duration::from_secs(2), |e| is(e, "StartTx"));
    assert_eq!(tx["MediaTxPort"], uac.rtp.local_addr().unwrap().port());

    // Hold (the caller sends only) → StopTx; resume → StartTx again.
    for (cseq, direction, expected) in [(2, "sendonly", "StopTx"), (3, "sendrecv", "StartTx")] {
        events.drain();
        let before = events.drain().iter().filter(|e| is(e, expected)).count();
        let offer = uac
            .sdp("0")
            .replace("a=sendrecv", &format!("a={direction}"));
        uac.send(&uac.request("INVITE", "app", cseq, &tag, &format!("re{cseq}"), &offer));
        assert_eq!(uac::status(&uac.final_response("INVITE")), 200);
        uac.send(&uac.request("ACK", "app", cseq, &tag, &format!("re{cseq}a"), ""));
        let mut seen = 0;
        for _ in 0..100 {
            seen = events.drain().iter().filter(|e| is(e, expected)).count();
            if seen > before {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(seen > before, "{direction}: {expected}");
    }
    // Digits in SIP INFO on the call: GotDigits.
    let info = uac
        .request(
            "INFO",
            "app",
            4,
            &tag,
            "info4",
            "Signal=9\r\nDuration=100\r\n",
        )
        .replace("application/sdp", "application/dtmf-relay");
    uac.send(&info);
    assert_eq!(uac::status(&uac.final_response("INFO")), 200);
    let digits = events.wait_for(Duration::from_secs(2), |e| is(e, "GotDigits"));
    assert_eq!(digits["Digits"], "9");
    assert_eq!(digits["CallId"], call.as_str());

    // Hangup: BYE, and the implicit DeleteConnection.
    let (code, _) = call_action(&server, "Hangup", json!({"CallId": call}));
    assert_eq!(code, 200);
    let bye = uac.recv(Duration::from_secs(2)).expect("BYE");
    assert!(bye.starts_with("BYE "), "{bye}");
    let released = events.wait_for(Duration::from_secs(2), |e| is(e, "ConnectionReleased"));
    assert_eq!(released["ConnectionId"], connection.as_str());
    assert_eq!(released["Reason"], "api-request");
    // Hangup of an ended call succeeds (CUAE), AnswerCall does not.
    assert_eq!(
        call_action(&server, "Hangup", json!({"CallId": call})).0,
        200
    );
    let (code, body) = call_action(&server, "AnswerCall", json!({"CallId": call}));
    assert_eq!((code, body["ResultCode"].as_str()), (404, Some("23")));
}

#[test]
fn reject_redirect_timeout_and_remote_hangup() {
    let server =
        Server::start_with_extra_and_overrides(APP_ROUTE, &["app.call_decision_timeout_s=1"]);
    let mut events = server.events();

    let (uac, call) = offer(&server, &mut events, "rej");
    let (code, _) = call_action(
        &server,
        "RejectCall",
        json!({"CallId": call, "Status": 486}),
    );
    assert_eq!(code, 200);
    assert_eq!(next_status(&uac).0, 486);

    let (uac, call) = offer(&server, &mut events, "red");
    let (code, _) = call_action(&server, "Redirect", json!({"CallId": call, "To": "alice"}));
    assert_eq!(code, 200);
    let (status, moved) = next_status(&uac);
    assert_eq!(status, 302);
    let contact = uac::header(&moved, "Contact").expect("Contact");
    assert!(contact.starts_with("<sip:alice@127.0.0.1"), "{contact}");

    // Nobody decides: 480 after the decision timeout.
    let (uac, _call) = offer(&server, &mut events, "late");
    let (status, _) = next_status(&uac);
    assert_eq!(status, 480);

    // The caller hangs up an answered call: RemoteHangup, and the connection goes.
    let (uac, call) = offer(&server, &mut events, "bye");
    call_action(&server, "AnswerCall", json!({"CallId": call}));
    let (_, ok) = next_status(&uac);
    let tag = uac::to_tag(&ok);
    uac.send(&uac.request("ACK", "app", 1, &tag, "byea", ""));
    uac.send(&uac.request("BYE", "app", 2, &tag, "byeb", ""));
    let hangup = events.wait_for(Duration::from_secs(3), |e| is(e, "RemoteHangup"));
    assert_eq!(hangup["CallId"], call.as_str());
    assert_eq!(hangup["EndReason"], "Normal");
    server.wait_no_connections(Duration::from_secs(3));
    assert!(server.get("/callcontrol/calls")["Calls"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn answer_call_with_conference_creates_then_joins_one() {
    let server = Server::start(APP_ROUTE);
    let mut events = server.events();
    let (first, call) = offer(&server, &mut events, "cf1");
    let (code, answered) = call_action(
        &server,
        "AnswerCall",
        json!({"CallId": call, "Conference": true}),
    );
    assert_eq!(code, 200, "{answered}");
    let conference = answered["ConferenceId"]
        .as_str()
        .expect("ConferenceId")
        .to_string();
    assert_eq!(next_status(&first).0, 200);
    let (second, call) = offer(&server, &mut events, "cf2");
    let (code, answered) = call_action(
        &server,
        "AnswerCall",
        json!({"CallId": call, "Conference": true, "ConferenceId": conference}),
    );
    assert_eq!(code, 200, "{answered}");
    assert_eq!(answered["ConferenceId"], conference.as_str());
    assert_eq!(next_status(&second).0, 200);
    let rooms = server.get("/mediacontrol/conferences");
    assert_eq!(
        rooms["Conferences"][0]["Participants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A conference that does not exist: 24, and the call is still waiting.
    let (third, call) = offer(&server, &mut events, "cf3");
    let (code, body) = call_action(
        &server,
        "AnswerCall",
        json!({"CallId": call, "Conference": true, "ConferenceId": 4242}),
    );
    assert_eq!((code, body["ResultCode"].as_str()), (404, Some("24")));
    call_action(&server, "RejectCall", json!({"CallId": call}));
    assert_eq!(next_status(&third).0, 480);
}

#[test]
fn send_user_input_sends_rfc_4733_events_on_the_call() {
    let server = Server::start(APP_ROUTE);
    let mut events = server.events();
    let with_events = |uac: &Uac| {
        uac.sdp("0 101").replace(
            "a=sendrecv\r\n",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n",
        )
    };
    let (uac, call) = offer_with_sdp(&server, &mut events, "sui", with_events);
    let (code, body) = call_action(&server, "AnswerCall", json!({"CallId": call}));
    assert_eq!(code, 200, "{body}");
    let ok = uac.final_response("INVITE");
    uac.send(&uac.request("ACK", "app", 1, &uac::to_tag(&ok), "suia", ""));

    let (code, body) = call_action(
        &server,
        "SendUserInput",
        json!({"CallId": call, "Digits": "12#"}),
    );
    assert_eq!(code, 200, "{body}");
    // The UAC reads the events off its RTP socket: payload type 101, codes 1, 2, 11, each
    // ending with the E bit.
    let mut ended = Vec::new();
    let mut buf = [0u8; 1500];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while ended.len() < 3 && std::time::Instant::now() < deadline {
        let Ok(n) = uac.rtp.recv(&mut buf) else {
            continue;
        };
        if n < 16 || buf[1] & 0x7f != 101 {
            continue;
        }
        let (event, end) = (buf[12], buf[13] & 0x80 != 0);
        if end && ended.last() != Some(&event) {
            ended.push(event);
        }
    }
    assert_eq!(ended, [1, 2, 11]);

    // A call without telephone-event cannot carry digits: the action says why.
    let (_plain, plain_call) = offer_with_sdp(&server, &mut events, "sui2", |u: &Uac| u.sdp("0"));
    call_action(&server, "AnswerCall", json!({"CallId": plain_call}));
    let (code, body) = call_action(
        &server,
        "SendUserInput",
        json!({"CallId": plain_call, "Digits": "5"}),
    );
    assert_eq!(
        (code, body["ResultCode"].as_str()),
        (503, Some("8")),
        "{body}"
    );
    assert!(body["Error"].as_str().unwrap().contains("telephone-event"));
    let (code, _) = call_action(
        &server,
        "SendUserInput",
        json!({"CallId": "999", "Digits": "5"}),
    );
    assert_eq!(code, 404);
}

#[test]
fn accept_call_with_early_media_sends_a_reliable_183_and_answer_call_keeps_its_connection() {
    let server = Server::start(APP_ROUTE);
    let mut events = server.events();
    let uac = Uac::new(&server, "early");
    let invite = uac
        .request("INVITE", "app", 1, "", "earlyi", &uac.sdp("0"))
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nSupported: 100rel\r\n",
        );
    uac.send(&invite);
    let incoming = events.wait_for(Duration::from_secs(3), |e| is(e, "IncomingCall"));
    let call = incoming["CallId"].as_str().unwrap().to_string();

    let (code, body) = call_action(
        &server,
        "AcceptCall",
        json!({"CallId": call, "EarlyMedia": true}),
    );
    assert_eq!(code, 200, "{body}");
    let connection = body["ConnectionId"]
        .as_str()
        .expect("early connection")
        .to_string();
    let rx_port = body["MediaRxPort"].as_u64().unwrap();
    let (status, progress) = next_status(&uac);
    assert_eq!(status, 183, "{progress}");
    assert_eq!(uac::header(&progress, "Require"), Some("100rel"));
    let rseq = uac::header(&progress, "RSeq").expect("RSeq").to_string();
    assert_eq!(u64::from(uac::media_port(uac::body(&progress))), rx_port);
    let tag = uac::to_tag(&progress);
    let prack = uac.request("PRACK", "app", 2, &tag, "earlyp", "").replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nRAck: {rseq} 1 INVITE\r\n"),
    );
    uac.send(&prack);
    assert_eq!(uac::status(&uac.final_response("PRACK")), 200);

    let (code, body) = call_action(&server, "AnswerCall", json!({"CallId": call}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["ConnectionId"],
        connection.as_str(),
        "the early connection is kept"
    );
    std::thread::sleep(Duration::from_millis(200));
    let rx = events
        .drain()
        .iter()
        .filter(|e| is(e, "StartRx") && e["CallId"] == call.as_str())
        .count();
    assert_eq!(rx, 1, "StartRx once, at AcceptCall");
    let ok = uac.final_response("INVITE");
    assert_eq!(uac::status(&ok), 200);
    assert_eq!(u64::from(uac::media_port(uac::body(&ok))), rx_port);
    uac.send(&uac.request("ACK", "app", 1, &tag, "earlya", ""));
    assert_eq!(server.connections().len(), 1);
    let (code, _) = call_action(&server, "Hangup", json!({"CallId": call}));
    assert_eq!(code, 200);
    server.wait_no_connections(Duration::from_secs(2));
}

#[test]
fn bridge_calls_lets_two_calls_hear_each_other_and_unbridge_parts_them() {
    let server = Server::start(APP_ROUTE);
    let mut events = server.events();
    let mut answered = Vec::new();
    for name in ["bra", "brb"] {
        let (uac, call) = offer_with_sdp(&server, &mut events, name, |u: &Uac| u.sdp("0"));
        let (code, body) = call_action(&server, "AnswerCall", json!({"CallId": call}));
        assert_eq!(code, 200, "{body}");
        let ok = uac.final_response("INVITE");
        uac.send(&uac.request("ACK", "app", 1, &uac::to_tag(&ok), &format!("{name}a"), ""));
        let rx: std::net::SocketAddr = format!(
            "{}:{}",
            body["MediaRxIP"].as_str().unwrap(),
            body["MediaRxPort"]
        )
        .parse()
        .unwrap();
        answered.push((uac, call, rx));
    }
    let (a_call, b_call) = (answered[0].1.clone(), answered[1].1.clone());
    let (code, body) = call_action(
        &server,
        "BridgeCalls",
        json!({"CallId": a_call, "PeerCallId": b_call}),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body["ConferenceId"].as_str().is_some(), "{body}");
    assert!(body["PeerConnectionId"].as_str().is_some(), "{body}");
    // A's tone reaches B.
    common::heard(&answered[1].0.rtp);
    common::send_tone(&answered[0].0.rtp, answered[0].2, 0xa, 1000.0, 25);
    let at_b = common::heard(&answered[1].0.rtp);
    assert!(
        common::tone_power(&at_b, 1000.0) > 1e5,
        "B hears A: {}",
        common::tone_power(&at_b, 1000.0)
    );
    // Bridging again is refused; unbridging (by either leg) parts them and keeps both calls.
    let (code, _) = call_action(&server, "BridgeCalls", json!({"CallId": b_call}));
    assert_eq!(code, 409);
    let (code, body) = call_action(&server, "UnbridgeCalls", json!({"CallId": b_call}));
    assert_eq!(code, 200, "{body}");
    assert!(server.get("/mediacontrol/conferences")["Conferences"]
        .as_array()
        .unwrap()
        .is_empty());
    let listed = server.connections();
    assert_eq!(listed.len(), 2, "both calls stay up: {listed:?}");
    for c in &listed {
        assert!(c["ConferenceId"].is_null(), "out of the bridge: {c}");
    }
    let (code, _) = call_action(&server, "UnbridgeCalls", json!({"CallId": a_call}));
    assert_eq!(code, 409, "not bridged any more");
    for (_, call, _) in &answered {
        call_action(&server, "Hangup", json!({"CallId": call}));
    }
    server.wait_no_connections(Duration::from_secs(2));
}
