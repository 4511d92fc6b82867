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
