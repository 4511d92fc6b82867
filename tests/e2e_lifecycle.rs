//! The appliance's life cycle with the real binary: systemd notifications (READY, STATUS,
//! WATCHDOG, STOPPING in order), SIGHUP reload without dropping a call, SIGTERM drain (new
//! INVITEs get 503 while a call in progress continues), and `callbridge ctl`.

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{client, repo_path, Server, TOKEN};
use serde_json::json;

/// Receives sd_notify datagrams until `pred` matches one; returns everything received.
fn notifications_until(
    socket: &UnixDatagram,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = pred(&text);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("notification not received within {within:?}; got {seen:?}");
}

#[test]
fn systemd_notifications_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let notify = path.to_str().unwrap().to_string();
    let mut server = Server::start_with_env(
        "",
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    );

    let first = notifications_until(&socket, Duration::from_secs(5), |m| m.contains("READY=1"));
    assert!(first.last().unwrap().contains("READY=1"));
    let running = notifications_until(&socket, Duration::from_secs(5), |m| {
        m.contains("WATCHDOG=1")
    });
    let with_status = running
        .iter()
        .find(|m| m.contains("STATUS="))
        .expect("STATUS sent");
    assert!(
        with_status.contains("calls=0 connections=0"),
        "{with_status}"
    );
    // The watchdog keeps being fed (every WATCHDOG_USEC/2).
    notifications_until(&socket, Duration::from_secs(2), |m| {
        m.contains("WATCHDOG=1")
    });

    server.signal(libc::SIGTERM);
    notifications_until(&socket, Duration::from_secs(5), |m| {
        m.contains("STOPPING=1")
    });
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "log:\n{}",
        server.log()
    );
}

fn assert_sipp_ok(out: std::process::Output, server: &Server) {
    assert!(
        out.status.success(),
        "SIPp failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// One INVITE from a raw socket; returns the final status line and the response text.
fn invite_status(server: &Server, user: &str) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let invite = format!(
        "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{user}{port}\r\n\
         From: <sip:t@127.0.0.1>;tag=x\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {user}-{port}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:t@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), ("127.0.0.1", server.sip_port))
        .unwrap();
    let mut buf = [0u8; 8192];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a response");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

#[test]
fn sighup_reloads_routes_and_tokens_without_dropping_a_call() {
    let server = Server::start("");
    let mut events = server.events();
    // A call in progress for 3 s.
    let call = server.sipp_in_background(&["-sn", "uac", "-s", "echo", "-m", "1", "-d", "3000"]);
    events.wait_for_while(&call, Duration::from_secs(5), |e| {
        e["Event"] == "CallAnswered"
    });
    assert!(invite_status(&server, "newroute").starts_with("SIP/2.0 404"));

    let path = server.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "tokens = [\"test-token\"]",
        "tokens = [\"test-token\", \"second-token\"]",
    );
    std::fs::write(
        &path,
        format!("{text}\n[[route]]\nuser = \"^newroute$\"\nservice = \"echo\"\n"),
    )
    .unwrap();
    server.signal(libc::SIGHUP);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client()
            .get(server.url("/mediacontrol/connections"))
            .bearer_auth("second-token")
            .send()
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new token never accepted; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = invite_status(&server, "newroute");
    assert!(
        ok.starts_with("SIP/2.0 200"),
        "reloaded route answers: {ok}"
    );
    assert_sipp_ok(call.join().unwrap(), &server);
    // The call that was up during the reload ended normally, by its own BYE.
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased" && e["Reason"] == "remote-hangup"
    });
    assert!(released["CallId"].is_string());

    // A broken file is refused and the running configuration stays.
    std::fs::write(&path, "[sip]\nbogus = 1\n").unwrap();
    let r = client()
        .post(server.url("/admin/reload"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["Error"].as_str().unwrap().contains("bogus"), "{body}");
    assert_eq!(
        client().get(server.url("/health")).send().unwrap().status(),
        200
    );
}

#[test]
fn sigterm_drains_new_invites_get_503_while_a_call_continues() {
    let mut server = Server::start("");
    let mut events = server.events();
    let call = server.sipp_in_background(&["-sn", "uac", "-s", "echo", "-m", "1", "-d", "2500"]);
    events.wait_for_while(&call, Duration::from_secs(5), |e| {
        e["Event"] == "CallAnswered"
    });
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));

    let refused = invite_status(&server, "echo");
    assert!(refused.starts_with("SIP/2.0 503"), "{refused}");
    assert!(refused.contains("Retry-After:"), "{refused}");
    // The call in progress is untouched and ends by its own BYE; then the server exits.
    assert_sipp_ok(call.join().unwrap(), &server);
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["Reason"], "remote-hangup");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "log:\n{}",
        server.log()
    );
}

#[test]
fn drain_timeout_ends_remaining_calls_with_bye() {
    let mut server = Server::start("[app]\ndrain_timeout_s = 1\n");
    let mut events = server.events();
    let scenario = repo_path("tests/sipp/uac_remote_bye.xml");
    let call =
        server.sipp_in_background(&["-sf", scenario.to_str().unwrap(), "-s", "echo", "-m", "1"]);
    events.wait_for_while(&call, Duration::from_secs(5), |e| {
        e["Event"] == "CallAnswered"
    });
    std::thread::sleep(Duration::from_millis(200));
    let stopped_at = Instant::now();
    server.signal(libc::SIGTERM);
    assert_sipp_ok(call.join().unwrap(), &server);
    let waited = stopped_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "BYE came only after the drain timeout ({waited:?})"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

fn ctl(server: &Server, args: &[&str]) -> (bool, String) {
    server.ctl(args)
}

#[test]
fn ctl_lists_shows_hangs_up_and_reloads() {
    let server = Server::start("");
    let mut events = server.events();
    let (_, reserved) = server.action("ReserveConnection", json!({}));
    let id = reserved["ConnectionId"].as_str().unwrap().to_string();

    let (ok, out) = ctl(&server, &["connections"]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&id) && l.contains("reserved")),
        "{out}"
    );
    assert!(out.contains("(1 total)"), "{out}");

    let (ok, out) = ctl(&server, &["show", &id]);
    assert!(ok, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("show prints JSON");
    assert_eq!(shown["ConnectionId"], id.as_str());

    let scenario = repo_path("tests/sipp/uac_remote_bye.xml");
    let call =
        server.sipp_in_background(&["-sf", scenario.to_str().unwrap(), "-s", "echo", "-m", "1"]);
    let answered = events.wait_for_while(&call, Duration::from_secs(5), |e| {
        e["Event"] == "CallAnswered"
    });
    let call_id = answered["CallId"].as_str().unwrap().to_string();
    let (ok, out) = ctl(&server, &["calls"]);
    assert!(
        ok && out.contains("answered") && out.contains("(1 total)"),
        "{out}"
    );
    let (ok, out) = ctl(&server, &["hangup", &call_id]);
    assert!(ok, "{out}");
    assert_sipp_ok(call.join().unwrap(), &server);

    let (ok, out) = ctl(&server, &["hangup", "999999"]);
    assert!(!ok && out.contains("does not exist"), "{out}");
    let (ok, out) = ctl(&server, &["release-conference", "5"]);
    assert!(!ok && out.contains("ResultCode 24"), "{out}");
    let (ok, out) = ctl(&server, &["reload"]);
    assert!(ok, "{out}");
    let (ok, out) = ctl(&server, &["conferences"]);
    assert!(ok && out.contains("(0 total)"), "{out}");

    // A live conference is listed with its size, and released by id.
    let (_, created) = server.action(
        "CreateConnection",
        json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000}),
    );
    let member = created["ConnectionId"].as_str().unwrap().to_string();
    let (_, conference) = server.action("CreateConference", json!({"ConnectionId": member}));
    let conference = conference["ConferenceId"].as_str().unwrap().to_string();
    let (ok, out) = ctl(&server, &["conferences"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&conference))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [conference.as_str(), "-", "1", "false", "8000"],
        "{out}"
    );
    let (ok, out) = ctl(&server, &["release-conference", &conference]);
    assert!(ok, "{out}");
    assert!(
        server
            .connections()
            .iter()
            .all(|c| c["ConnectionId"] != member.as_str()),
        "its connection went with it"
    );
}
