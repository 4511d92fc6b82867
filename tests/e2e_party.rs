//! The party call model as a user sees it: real SIP calls to the real binary, the call
//! listing (`/callcontrol/calls`, `/mediacontrol/calls`, `callbridge ctl calls`), the
//! `ConnectionReleased` event and the party gauges on `/metrics`.

mod common;

use std::time::Duration;

use common::uac::{body, media_port, status, to_tag, Uac};
use common::Server;
use serde_json::Value;

/// A route whose calls are for DN 7000, and a conference route.
const ROUTES: &str = r#"
[[route]]
user = "^sales$"
service = "echo"
dn = "7000"
[[route]]
user = "^conf=(?P<conference>[a-z]+)$"
service = "conference"
"#;

/// An INVITE from `uac` to `user`, with a P-Asserted-Identity when `asserted` is given;
/// answered and acknowledged. Returns the 200's To tag.
fn call(uac: &Uac, user: &str, asserted: Option<&str>) -> String {
    let mut invite = uac.request("INVITE", user, 1, "", "inv1", &uac.sdp("0"));
    if let Some(number) = asserted {
        invite = invite.replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nP-Asserted-Identity: <sip:{number}@127.0.0.1>\r\n"),
            1,
        );
    }
    uac.send(&invite);
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(media_port(body(&ok)) > 0);
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", user, 1, &tag, "ack1", ""));
    tag
}

fn hang_up(uac: &Uac, user: &str, tag: &str) {
    uac.send(&uac.request("BYE", user, 2, tag, "bye1", ""));
    let ok = uac.final_response("BYE");
    assert_eq!(status(&ok), 200, "{ok}");
}

fn ctl(server: &Server, args: &[&str]) -> String {
    let (ok, out) = server.ctl(args);
    assert!(ok, "{out}");
    out
}

fn is_conn_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn a_call_is_listed_by_its_conn_id_and_numbers_and_its_release_names_them() {
    let server = Server::start(ROUTES);
    let mut events = server.events();
    let uac = Uac::new(&server, "party-pai");
    let tag = call(&uac, "sales", Some("5551234"));
    events.wait_for(Duration::from_secs(5), |e| e["Event"] == "CallAnswered");

    let listed = server.get("/callcontrol/calls");
    let call = &listed["Calls"][0];
    assert!(is_conn_id(&call["ConnID"]), "{listed:#}");
    // The caller's number comes from P-Asserted-Identity, not From (`uac`).
    assert_eq!(call["DN"], "5551234");
    assert_eq!(call["CallState"], "OK");
    let party = &call["Parties"][0];
    assert_eq!(party["Role"], "Origination");
    assert_eq!(party["State"], "established");
    assert_eq!(party["ConnectionId"], call["ConnectionId"]);
    // The number the call reached: the route's DN.
    assert_eq!(listed["CallModel"][0]["ServiceDN"], "7000");
    assert_eq!(server.get("/mediacontrol/calls")["Calls"], listed["Calls"]);
    assert_eq!(server.metric("callbridge_parties"), 1.0);

    let table = ctl(&server, &["calls"]);
    let conn_id = call["ConnID"].as_str().unwrap();
    assert!(table.lines().next().unwrap().contains("ConnID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(conn_id) && l.contains("5551234")),
        "{table}"
    );

    hang_up(&uac, "sales", &tag);
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["ConnID"], conn_id);
    assert_eq!(released["DN"], "5551234");
    assert_eq!(released["Reason"], "remote-hangup");
    assert_eq!(released["ReleasedBy"]["Kind"], "remote");
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(server.metric("callbridge_parties"), 0.0);
    assert_eq!(server.metric("callbridge_party_calls"), 0.0);
}

#[test]
fn callers_of_one_room_are_parties_of_one_call() {
    let server = Server::start(ROUTES);
    let mut events = server.events();
    let first = Uac::new(&server, "room-1");
    let second = Uac::new(&server, "room-2");
    let third = Uac::new(&server, "room-3");
    let tags: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|uac| call(uac, "conf=sales", None))
        .collect();
    for _ in 0..3 {
        events.wait_for(Duration::from_secs(5), |e| e["Event"] == "ConferenceJoined");
    }

    let listed = server.get("/callcontrol/calls");
    let calls = listed["Calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "{listed:#}");
    let conn_id = calls[0]["ConnID"].clone();
    assert!(is_conn_id(&conn_id));
    for c in calls {
        // One ConnID for the conference; the joiners' own calls are their previous ones.
        assert_eq!(c["ConnID"], conn_id, "{listed:#}");
        assert_eq!(c["CallState"], "Conferenced");
        assert_eq!(c["Parties"].as_array().unwrap().len(), 3);
    }
    let model = listed["CallModel"].as_array().unwrap();
    assert_eq!(model.len(), 1, "merged calls are gone: {listed:#}");
    let previous: Vec<&Value> = model[0]["Parties"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.get("PreviousConnID"))
        .collect();
    assert_eq!(previous.len(), 2, "{listed:#}");
    assert!(previous.iter().all(|p| is_conn_id(p) && **p != conn_id));

    hang_up(&third, "conf=sales", &tags[2]);
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["ConnID"], conn_id);
    let listed = server.get("/callcontrol/calls");
    assert_eq!(listed["Calls"][0]["CallState"], "OK", "two parties left");

    hang_up(&first, "conf=sales", &tags[0]);
    hang_up(&second, "conf=sales", &tags[1]);
    events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConferenceReleased"
    });
    server.wait_no_connections(Duration::from_secs(5));
    assert_eq!(
        server.get("/callcontrol/calls")["CallModel"],
        serde_json::json!([])
    );
}
