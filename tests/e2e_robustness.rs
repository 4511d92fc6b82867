//! Bad input of every kind, in bulk: mutated SIP over UDP and TCP, and junk JSON. The server
//! must answer or drop, never crash, and leak nothing (connections, calls).

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{client, Server, TOKEN};

fn invite(port: u16, server_port: u16, n: usize) -> Vec<u8> {
    let sdp = "v=0\r\no=f 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:echo@127.0.0.1:{server_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKfz{n};rport\r\n\
         From: \"F\" <sip:f@127.0.0.1:{port}>;tag=f{n}\r\nTo: <sip:echo@127.0.0.1>\r\nCall-ID: fuzz{n}@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:f@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// Small deterministic generator (no external randomness: failures reproduce).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn mutate(mut msg: Vec<u8>, rng: &mut Lcg) -> Vec<u8> {
    let edits = 1 + rng.next() % 4;
    for _ in 0..edits {
        let at = (rng.next() as usize) % msg.len().max(1);
        match rng.next() % 5 {
            0 => msg[at] = rng.next() as u8,
            1 => {
                let specials = b"\r\n:;<>@ ,\"\\[]=0";
                msg[at] = specials[(rng.next() as usize) % specials.len()];
            }
            2 => {
                msg.remove(at);
            }
            3 => msg.truncate(at),
            _ => {
                let specials = b"\r\n:;<>@ ,";
                msg.insert(at, specials[(rng.next() as usize) % specials.len()]);
            }
        }
        if msg.is_empty() {
            msg.push(b'X');
        }
    }
    msg
}

fn alive(server: &Server) {
    let r = client()
        .get(server.url("/health"))
        .send()
        .expect("server still answers");
    assert_eq!(r.status(), 200, "log:\n{}", server.log());
}

#[test]
fn mutated_sip_over_udp_and_tcp_never_crashes_or_leaks() {
    let server = Server::start("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{}", server.sip_port);
    let mut rng = Lcg(0x5eed);
    for n in 0..3000 {
        let msg = mutate(invite(port, server.sip_port, n), &mut rng);
        sock.send_to(&msg, &target).unwrap();
        if n % 200 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for n in 0..50 {
        let Ok(mut tcp) = TcpStream::connect(&target) else {
            continue;
        };
        let _ = tcp.write_all(&mutate(invite(port, server.sip_port, 10_000 + n), &mut rng));
        let _ = tcp.write_all(b"\r\n\r\n\x00\xff garbage without framing\r\n\r\n");
    }
    alive(&server);
    // Mutants that were still valid calls are answered; their ACK never comes, so they end
    // by the ACK timeout (6.4 s with the test T1) or were refused outright.
    server.wait_no_connections(Duration::from_secs(20));
    alive(&server);
}

#[test]
fn junk_json_never_crashes_the_api() {
    let server = Server::start("");
    let mut rng = Lcg(42);
    let seeds: [(&str, &[u8]); 2] = [
        (
            "mediacontrol",
            br#"{"ConnectionId":"1","ConferenceId":"1","MediaTxIP":"127.0.0.1","MediaTxPort":4000,"MediaTxCodec":"G711u","Prompt1":"beep.wav","TermCondMaxTime":500,"Mute":true,"Digits":"12#","SilenceTime":300,"Volume":2}"#,
        ),
        ("callcontrol", br#"{"CallId":"1","To":"alice","Conference":true,"Status":486}"#),
    ];
    let actions = [
        ("mediacontrol", "CreateConnection"),
        ("mediacontrol", "ModifyConnection"),
        ("mediacontrol", "DeleteConnection"),
        ("mediacontrol", "ReserveConnection"),
        ("mediacontrol", "CreateConference"),
        ("mediacontrol", "JoinConference"),
        ("mediacontrol", "LeaveConference"),
        ("mediacontrol", "SetConfereeAttribute"),
        ("mediacontrol", "Play"),
        ("mediacontrol", "PlayTone"),
        ("mediacontrol", "Record"),
        ("mediacontrol", "GatherDigits"),
        ("mediacontrol", "SendDigits"),
        ("mediacontrol", "StopMediaOperation"),
        ("mediacontrol", "AdjustPlay"),
        ("mediacontrol", "DetectSilence"),
        ("callcontrol", "AnswerCall"),
        ("callcontrol", "RejectCall"),
        ("callcontrol", "Redirect"),
        ("callcontrol", "Hangup"),
    ];
    for (surface, action) in actions {
        let seed = seeds.iter().find(|(s, _)| *s == surface).expect("seed").1;
        for _ in 0..40 {
            let body = mutate(seed.to_vec(), &mut rng);
            let r = client()
                .post(server.url(&format!("/{surface}/{action}")))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .expect("API answers");
            let status = r.status().as_u16();
            let json: serde_json::Value = r.json().expect("always a JSON body");
            assert!(json["ResultCode"].is_string(), "{action}: {json}");
            assert!(status < 500 || status == 503, "{action}: {status} {json}");
        }
    }
    // Whatever junk succeeded (a ReserveConnection, a conference) is still accounted for and
    // deletable, and every resource comes back.
    for c in server.connections() {
        let (_, r) = server.action(
            "DeleteConnection",
            serde_json::json!({"ConnectionId": c["ConnectionId"]}),
        );
        assert_eq!(r["ResultCode"], "0");
    }
    assert!(server.connections().is_empty());
    assert!(server.get("/mediacontrol/conferences")["Conferences"]
        .as_array()
        .expect("list")
        .is_empty());
    let resources = server.get("/mediacontrol/resources");
    for kind in ["Rtp", "EnhancedRtp", "Conference"] {
        assert_eq!(resources[kind]["Used"], 0, "{kind}: {resources}");
    }
    alive(&server);
}

/// An in-dialog request of the fuzz call, with `extra` headers and an optional SDP body.
fn in_dialog(
    method: &str,
    port: u16,
    server_port: u16,
    to_tag: &str,
    n: usize,
    extra: &str,
) -> Vec<u8> {
    let sdp = "v=0\r\no=f 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly\r\n";
    let body = if method == "UPDATE" || method == "INVITE" {
        sdp
    } else {
        "SIP/2.0 200 OK\r\n"
    };
    format!(
        "{method} sip:echo@127.0.0.1:{server_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdlg{n};rport\r\n\
         From: <sip:f@127.0.0.1:{port}>;tag=dlg\r\nTo: <sip:echo@127.0.0.1>{to_tag}\r\nCall-ID: dialog-fuzz@x\r\n\
         CSeq: {} {method}\r\nContact: <sip:f@127.0.0.1:{port}>\r\n{extra}Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        10 + n,
        body.len()
    )
    .into_bytes()
}

#[test]
fn mutated_transfers_notifies_updates_pracks_and_replaces_never_crash_or_leak() {
    // A trunk that never answers: transfers the fuzz asks for are placed and time out.
    let dead = common::free_udp_tcp_port();
    let server = Server::start(&format!(
        "[[trunk]]\nname = \"dead\"\naddress = \"127.0.0.1:{dead}\"\n"
    ));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{}", server.sip_port);
    // One real call to aim the in-dialog requests at.
    let first = String::from_utf8(invite(port, server.sip_port, 0))
        .unwrap()
        .replace("fuzz0@x", "dialog-fuzz@x")
        .replace("tag=f0", "tag=dlg");
    sock.send_to(first.as_bytes(), &target).unwrap();
    let mut buf = [0u8; 4096];
    let ok = loop {
        let (n, _) = sock.recv_from(&mut buf).expect("the INVITE is answered");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
    };
    let to_tag = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .map(|t| format!(";tag={}", t.trim()))
        .expect("our tag");
    let ack = String::from_utf8(in_dialog("ACK", port, server.sip_port, &to_tag, 0, ""))
        .unwrap()
        .replace("CSeq: 10 ACK", "CSeq: 1 ACK");
    sock.send_to(ack.as_bytes(), &target).unwrap();

    let mut rng = Lcg(0xd1a1);
    let kinds: [(&str, &str); 6] = [
        (
            "REFER",
            "Refer-To: <sip:bob@127.0.0.1?Replaces=a%40b%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n",
        ),
        (
            "NOTIFY",
            "Event: refer;id=5\r\nSubscription-State: terminated\r\n",
        ),
        (
            "UPDATE",
            "Session-Expires: 1800;refresher=uac\r\nSupported: timer\r\n",
        ),
        ("PRACK", "RAck: 1 1 INVITE\r\n"),
        (
            "INVITE",
            "Session-Expires: 90\r\nSupported: timer, 100rel\r\nRequire: timer\r\n",
        ),
        ("INFO", "Content-Type: application/dtmf-relay\r\n"),
    ];
    for n in 1..1500 {
        let (method, extra) = kinds[n % kinds.len()];
        let clean = in_dialog(method, port, server.sip_port, &to_tag, n, extra);
        let msg = if n % 3 == 0 {
            clean
        } else {
            mutate(clean, &mut rng)
        };
        sock.send_to(&msg, &target).unwrap();
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // New dialogs that claim to replace ours, or carry odd extension headers.
    for n in 0..600 {
        let mut msg =
            String::from_utf8_lossy(&invite(port, server.sip_port, 20_000 + n)).into_owned();
        let extra = match n % 3 {
            0 => format!(
                "Replaces: dialog-fuzz@x;to-tag={};from-tag=dlg\r\n",
                to_tag.trim_start_matches(";tag=")
            ),
            1 => "Session-Expires: 30\r\nSupported: timer\r\n".to_string(),
            _ => "Require: 100rel, replaces\r\nSupported: 100rel\r\n".to_string(),
        };
        msg = msg.replace("Contact:", &format!("{extra}Contact:"));
        sock.send_to(&mutate(msg.into_bytes(), &mut rng), &target)
            .unwrap();
        if n % 100 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    alive(&server);
    let log = server.log();
    assert!(
        log.contains("transferring (REFER)"),
        "the fuzz reached the transfer path"
    );
    // Calls that answered end by their ACK timeout, transfers to the dead trunk by Timer B
    // (6.4 s with the test T1); the fuzz call by its BYE, if a mutant did not end it already.
    let bye = in_dialog("BYE", port, server.sip_port, &to_tag, 9_000, "");
    sock.send_to(&bye, &target).unwrap();
    server.wait_no_connections(Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let health: serde_json::Value = client()
            .get(server.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if health["Calls"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "calls left: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
    alive(&server);
}
