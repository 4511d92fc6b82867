//! End to end with SIPp (Debian `sip-tester`) against the real binary on loopback.

mod common;

use std::time::Duration;

use common::{repo_path, Server};
use serde_json::json;

fn scenario(name: &str) -> String {
    repo_path(&format!("tests/sipp/{name}"))
        .to_string_lossy()
        .into_owned()
}

fn count_released(events: &mut common::EventStream, reason: &str) -> usize {
    events
        .drain()
        .iter()
        .filter(|e| e["Event"] == "ConnectionReleased" && e["Reason"] == reason)
        .count()
}

#[test]
fn hundred_udp_calls_to_echo_all_succeed_and_release_their_connections() {
    let server = Server::start_with("", 60);
    let mut events = server.events();
    let (ok, out) = server.sipp(&[
        "-sn", "uac", "-s", "echo", "-m", "100", "-r", "50", "-l", "40", "-d", "300",
    ]);
    assert!(
        ok,
        "SIPp reported failed calls:\n{out}\nserver log:\n{}",
        server.log()
    );
    server.wait_no_connections(Duration::from_secs(10));
    // Every call went through the implicit DeleteConnection with the peer's BYE as reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count_released(&mut events, "remote-hangup") < 100 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_released(&mut events, "remote-hangup"), 100);
    let answered = events
        .drain()
        .iter()
        .filter(|e| e["Event"] == "CallAnswered")
        .count();
    assert_eq!(answered, 100);
}

#[test]
fn tcp_calls_to_echo_succeed() {
    let server = Server::start("");
    let (ok, out) = server.sipp(&[
        "-sn", "uac", "-s", "echo", "-t", "t1", "-m", "20", "-r", "20", "-d", "200",
    ]);
    assert!(
        ok,
        "SIPp over TCP failed:\n{out}\nserver log:\n{}",
        server.log()
    );
    server.wait_no_connections(Duration::from_secs(10));
}

#[test]
fn cancel_before_answer_gets_487_and_releases_the_connection() {
    let server = Server::start("");
    let mut events = server.events();
    let (ok, out) = server.sipp(&[
        "-sf",
        &scenario("uac_cancel.xml"),
        "-s",
        "ring",
        "-m",
        "3",
        "-r",
        "3",
    ]);
    assert!(
        ok,
        "CANCEL scenario failed:\n{out}\nserver log:\n{}",
        server.log()
    );
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased" && e["Reason"] == "cancelled"
    });
    assert!(released["CallId"].is_string());
    server.wait_no_connections(Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count_released(&mut events, "cancelled") < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_released(&mut events, "cancelled"), 3);
}

#[test]
fn options_probe_is_answered_with_capabilities() {
    let server = Server::start("");
    let (ok, out) = server.sipp(&[
        "-sf",
        &scenario("options.xml"),
        "-s",
        "probe",
        "-m",
        "5",
        "-r",
        "5",
    ]);
    assert!(
        ok,
        "OPTIONS scenario failed:\n{out}\nserver log:\n{}",
        server.log()
    );
}

#[test]
fn delete_connection_of_a_call_sends_bye_with_q850_cause_16() {
    let server = Server::start("");
    let mut events = server.events();
    let bye_scenario = scenario("uac_remote_bye.xml");
    let sipp = server.sipp_in_background(&["-sf", &bye_scenario, "-s", "echo", "-m", "1"]);
    let answered = events.wait_for_while(&sipp, Duration::from_secs(10), |e| {
        e["Event"] == "CallAnswered"
    });
    let connection = answered["ConnectionId"]
        .as_str()
        .expect("ConnectionId")
        .to_string();
    let (status, body) = server.action("DeleteConnection", json!({ "ConnectionId": connection }));
    assert_eq!(
        (status, body["ResultCode"].as_str()),
        (200, Some("0")),
        "{body}"
    );
    let out = sipp.join().expect("sipp thread");
    assert!(
        out.status.success(),
        "SIPp did not get the BYE it expected:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == connection.as_str()
    });
    assert_eq!(released["Reason"], "api-request");
    let ended = events.wait_for(Duration::from_secs(5), |e| e["Event"] == "CallEnded");
    assert_eq!(ended["Reason"], "api-request");
    server.wait_no_connections(Duration::from_secs(5));
}

/// An OPTIONS request from `transport` at `port` (Via and Contact), numbered `n`.
fn options(transport: &str, port: u16, server_port: u16, n: usize) -> String {
    format!(
        "OPTIONS sip:echo@127.0.0.1:{server_port} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bKopt{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1:{port}>;tag=p{n}\r\n\
         To: <sip:echo@127.0.0.1:{server_port}>\r\nCall-ID: options-{n}@probe\r\n\
         CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_burst_of_udp_requests_is_answered_whole_one_answer_each() {
    // More requests at once than one `sendmmsg` of the control plane carries (32): the
    // answers it gathers go out in several calls, every one of them.
    const BURST: usize = 80;
    let server = Server::start("");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    for n in 1..=BURST {
        socket
            .send_to(
                options("UDP", port, server.sip_port, n).as_bytes(),
                ("127.0.0.1", server.sip_port),
            )
            .unwrap();
    }
    let mut answered = std::collections::BTreeSet::new();
    let mut buffer = [0u8; 65_536];
    while answered.len() < BURST {
        let Ok(len) = socket.recv(&mut buffer) else {
            panic!(
                "{} of {BURST} answered: {answered:?}\nserver log:\n{}",
                answered.len(),
                server.log()
            );
        };
        let text = String::from_utf8_lossy(&buffer[..len]);
        assert!(text.starts_with("SIP/2.0 200 "), "{text}");
        let cseq = text
            .lines()
            .find_map(|line| line.strip_prefix("CSeq: "))
            .and_then(|value| value.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no CSeq in {text}"));
        assert!(answered.insert(cseq), "CSeq {cseq} answered twice");
    }
    assert_eq!(answered, (1..=BURST).collect());
}

#[test]
fn a_tcp_peer_that_closes_after_its_request_still_gets_the_answer() {
    use std::io::{Read, Write};
    let server = Server::start("");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.sip_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = stream.local_addr().unwrap().port();
    stream
        .write_all(options("TCP", port, server.sip_port, 1).as_bytes())
        .unwrap();
    // Nothing more from us: the server ends the connection once it has answered.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut read = Vec::new();
    stream
        .read_to_end(&mut read)
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log()));
    let text = String::from_utf8_lossy(&read);
    assert!(
        text.starts_with("SIP/2.0 200 ") && text.contains("CSeq: 1 OPTIONS"),
        "{text:?}\nserver log:\n{}",
        server.log()
    );
}
