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
