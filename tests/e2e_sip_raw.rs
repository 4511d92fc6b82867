//! End to end with a hand-driven SIP UAC over UDP: RTP echo content, offerless INVITE,
//! and the error answers (404, 488, 400, 501, 481) a trunk would see.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Server;

/// A minimal UAC: one signalling socket, one RTP socket.
struct Uac {
    sip: UdpSocket,
    rtp: UdpSocket,
    server: String,
    call_id: String,
    tag: String,
}

impl Uac {
    fn new(server: &Server, call: &str) -> Uac {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind SIP");
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
        rtp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Uac {
            sip,
            rtp,
            server: format!("127.0.0.1:{}", server.sip_port),
            call_id: format!("{call}-{}@127.0.0.1", std::process::id()),
            tag: format!("t{}", std::process::id()),
        }
    }

    fn sip_port(&self) -> u16 {
        self.sip.local_addr().unwrap().port()
    }

    fn sdp(&self, payload_types: &str) -> String {
        let port = self.rtp.local_addr().unwrap().port();
        format!(
            "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {payload_types}\r\na=sendrecv\r\n"
        )
    }

    fn request(
        &self,
        method: &str,
        user: &str,
        cseq: u32,
        to_tag: &str,
        branch: &str,
        body: &str,
    ) -> String {
        let port = self.sip_port();
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:{user}@{server} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:uac@127.0.0.1:{port}>;tag={tag}\r\n\
             To: <sip:{user}@{server}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:uac@127.0.0.1:{port}>\r\n\
             {content_type}Content-Length: {len}\r\n\r\n{body}",
            server = self.server,
            tag = self.tag,
            call_id = self.call_id,
            len = body.len(),
        )
    }

    fn send(&self, text: &str) {
        self.sip
            .send_to(text.as_bytes(), &self.server)
            .expect("send SIP");
    }

    /// Next message received within `within` (responses and requests alike).
    fn recv(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 65535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sip.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// The first final (>= 200) response to `method`, skipping provisionals.
    fn final_response(&self, method: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let Some(msg) = self.recv(Duration::from_millis(500)) else {
                continue;
            };
            if status(&msg) >= 200 && header(&msg, "CSeq").is_some_and(|c| c.ends_with(method)) {
                return msg;
            }
        }
        panic!("no final response to {method}");
    }
}

fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn to_tag(msg: &str) -> String {
    let to = header(msg, "To").expect("To header");
    let tag = to
        .split(";tag=")
        .nth(1)
        .expect("To tag")
        .split(';')
        .next()
        .unwrap();
    format!(";tag={tag}")
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port in SDP")
}

fn rtp_packet(seq: u16, payload_type: u8) -> Vec<u8> {
    let mut p = vec![0x80, payload_type, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Sends `count` RTP packets to `port` and checks each comes back byte-identical.
fn assert_echo(uac: &Uac, port: u16, count: u16) {
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let packet = rtp_packet(seq, 0);
        uac.rtp.send_to(&packet, ("127.0.0.1", port)).unwrap();
        let (n, from) = uac.rtp.recv_from(&mut buf).expect("echoed RTP packet");
        assert_eq!(from.port(), port, "echo comes from the announced port");
        assert_eq!(&buf[..n], &packet[..], "packet {seq} echoed unchanged");
    }
}

#[test]
fn rtp_sent_to_an_echo_call_comes_back_packet_for_packet() {
    let server = Server::start("");
    let uac = Uac::new(&server, "echo-rtp");
    uac.send(&uac.request(
        "INVITE",
        "echo",
        1,
        "",
        "inv1",
        &uac.sdp("0 8 101\r\na=rtpmap:101 telephone-event/8000"),
    ));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    assert_eq!(header(&ok, "Content-Type"), Some("application/sdp"));
    let answer = body(&ok);
    assert!(
        answer.contains("RTP/AVP 0"),
        "PCMU chosen (offerer's order): {answer}"
    );
    let port = media_port(answer);
    assert!(
        port >= server.rtp_min && port <= server.rtp_max,
        "port {port} from the configured range"
    );
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", 1, &tag, "ack1", ""));

    assert_echo(&uac, port, 100);

    let listed = server.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["Stats"]["RtpPacketsReceived"], 100);
    assert_eq!(listed[0]["MediaRxCodec"], "G711u");

    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye1", ""));
    let bye_ok = uac.final_response("BYE");
    assert_eq!(status(&bye_ok), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

#[test]
fn invite_without_sdp_gets_an_offer_and_the_ack_carries_the_answer() {
    let server = Server::start("");
    let mut events = server.events();
    let uac = Uac::new(&server, "offerless");
    uac.send(&uac.request("INVITE", "echo", 1, "", "inv2", ""));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    let offer = body(&ok);
    assert!(offer.contains("a=rtpmap:0 PCMU/8000"), "{offer}");
    assert!(offer.contains("telephone-event/8000"), "{offer}");
    let port = media_port(offer);
    let tag = to_tag(&ok);
    let mut ack = uac.request("ACK", "echo", 1, &tag, "ack2", &uac.sdp("0"));
    // The answer's address is where we send from; the echo goes to the packet's source anyway.
    assert!(ack.contains("m=audio"));
    uac.send(&std::mem::take(&mut ack));
    let modified = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionModified"
    });
    assert_eq!(
        modified["MediaTxPort"],
        uac.rtp.local_addr().unwrap().port()
    );
    assert_echo(&uac, port, 20);
    uac.send(&uac.request("BYE", "echo", 2, &tag, "bye2", ""));
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

#[test]
fn error_answers_name_the_problem_and_allocate_nothing() {
    let server = Server::start("");
    let uac = Uac::new(&server, "errors");

    uac.send(&uac.request("INVITE", "nobody", 1, "", "e1", &uac.sdp("0")));
    assert_eq!(status(&uac.final_response("INVITE")), 404);

    let mut other = Uac::new(&server, "nocodec");
    other.call_id.push('x');
    other.send(&other.request(
        "INVITE",
        "echo",
        1,
        "",
        "e2",
        &other.sdp("18\r\na=rtpmap:18 G729/8000"),
    ));
    let refused = other.final_response("INVITE");
    assert_eq!(status(&refused), 488, "{refused}");
    assert!(
        header(&refused, "Warning").is_some(),
        "488 says why: {refused}"
    );

    let unknown = uac.request("FROBNICATE", "echo", 5, "", "e3", "");
    uac.send(&unknown);
    assert_eq!(status(&uac.final_response("FROBNICATE")), 501);

    let no_call_id = uac
        .request("INVITE", "echo", 7, "", "e4", "")
        .lines()
        .filter(|l| !l.starts_with("Call-ID"))
        .collect::<Vec<_>>()
        .join("\r\n");
    uac.send(&no_call_id);
    let bad = uac.recv(Duration::from_secs(3)).expect("a 400");
    assert_eq!(status(&bad), 400, "{bad}");
    assert!(
        bad.lines().next().unwrap().contains("Call-ID"),
        "reason names the header: {bad}"
    );

    uac.send(&uac.request("BYE", "echo", 9, ";tag=nosuchdialog", "e5", ""));
    assert_eq!(status(&uac.final_response("BYE")), 481);

    // Garbage is dropped without an answer, and the server keeps serving.
    uac.sip
        .send_to(b"\x00\x01garbage\r\n\r\n", &uac.server)
        .unwrap();
    uac.send(&uac.request("OPTIONS", "echo", 10, "", "e6", ""));
    assert_eq!(status(&uac.final_response("OPTIONS")), 200);

    assert!(
        server.connections().is_empty(),
        "no connection was allocated"
    );
}

#[test]
fn compact_headers_and_multiple_vias_on_one_line_are_understood() {
    let server = Server::start("");
    let uac = Uac::new(&server, "compact");
    let port = uac.sip_port();
    let sdp = uac.sdp("8");
    let text = format!(
        "INVITE sip:echo@127.0.0.1:{sp} SIP/2.0\r\n\
         v: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcmp1;rport, SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKupstream\r\n\
         f: <sip:uac@127.0.0.1:{port}>;tag=cmp\r\n\
         t: <sip:echo@127.0.0.1>\r\n\
         i: compact-{pid}@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         m: <sip:uac@127.0.0.1:{port}>\r\n\
         c: application/sdp\r\n\
         l: {len}\r\n\r\n{sdp}",
        sp = server.sip_port,
        pid = std::process::id(),
        len = sdp.len()
    );
    uac.send(&text);
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(body(&ok).contains("RTP/AVP 8"), "PCMA answered: {ok}");
    let vias: Vec<&str> = ok
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
        .collect();
    assert_eq!(vias.len(), 2, "both Vias returned: {ok}");
    assert!(
        vias[0].contains(&format!("rport={port}")),
        "rport filled: {}",
        vias[0]
    );
    let ack = format!(
        "ACK sip:uac@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKcmpack\r\n\
         From: <sip:uac@127.0.0.1:{port}>;tag=cmp\r\nTo: <sip:echo@127.0.0.1>{tag}\r\n\
         Call-ID: compact-{pid}@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        tag = to_tag(&ok),
        pid = std::process::id()
    );
    uac.send(&ack);
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("cmpack", "cmpbye");
    uac.send(&bye);
    assert_eq!(status(&uac.final_response("BYE")), 200);
    server.wait_no_connections(Duration::from_secs(5));
}

#[test]
fn an_answer_never_acknowledged_ends_with_bye_and_releases_the_connection() {
    // Test config: T1 = 100 ms, so the ACK wait (64*T1) is 6.4 s.
    let server = Server::start("");
    let mut events = server.events();
    let uac = Uac::new(&server, "noack");
    uac.send(&uac.request("INVITE", "echo", 1, "", "noack1", &uac.sdp("0")));
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200);
    // Retransmissions of the 200 keep coming while we stay silent; then the server gives up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut retransmitted_200 = 0;
    let bye = loop {
        assert!(Instant::now() < deadline, "no BYE after the ACK timeout");
        let Some(msg) = uac.recv(Duration::from_millis(500)) else {
            continue;
        };
        if msg.starts_with("SIP/2.0 200") {
            retransmitted_200 += 1;
        } else if msg.starts_with("BYE ") {
            break msg;
        }
    };
    assert!(
        retransmitted_200 >= 3,
        "the 200 was retransmitted ({retransmitted_200})"
    );
    assert!(header(&bye, "Reason").is_some(), "BYE says why: {bye}");
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["Reason"], "ack-timeout");
    server.wait_no_connections(Duration::from_secs(2));
}
