//! End to end over the HTTP API: the connection life cycle, every documented error code,
//! authentication, reservation expiry and port exhaustion — against the real binary.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{client, Server, TOKEN};
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["ResultCode"].as_str().unwrap_or("<missing>")
}

#[test]
fn requests_without_a_valid_token_get_401() {
    let server = Server::start("");
    let url = server.url("/mediacontrol/connections");
    assert_eq!(client().get(&url).send().unwrap().status(), 401);
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status(),
        200
    );
    let post = client()
        .post(server.url("/mediacontrol/DeleteConnection"))
        .json(&json!({"ConnectionId": "1"}))
        .send()
        .unwrap();
    assert_eq!(post.status(), 401);
    assert_eq!(
        client().get(server.url("/events")).send().unwrap().status(),
        401
    );
    // Health is for probes and needs no token.
    assert_eq!(
        client().get(server.url("/health")).send().unwrap().status(),
        200
    );
}

#[test]
fn reserve_create_modify_delete_life_cycle() {
    let server = Server::start("");
    let mut events = server.events();

    let (status, reserved) = server.action("ReserveConnection", json!({}));
    assert_eq!((status, code(&reserved)), (200, "0"), "{reserved}");
    let id = reserved["ConnectionId"]
        .as_str()
        .expect("ConnectionId")
        .to_string();
    assert_eq!(reserved["MediaRxIP"], "127.0.0.1");
    let rx_port = reserved["MediaRxPort"].as_u64().expect("MediaRxPort") as u16;
    assert!(rx_port >= server.rtp_min && rx_port <= server.rtp_max);
    assert_eq!(rx_port % 2, 0, "RTP on an even port");
    assert_eq!(reserved["MediaRxControlPort"], rx_port + 1);
    // The port really is ours: nobody else can bind it.
    assert!(UdpSocket::bind(("127.0.0.1", rx_port)).is_err());

    let listed = server.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["State"], "reserved");

    // ModifyConnection on a reservation is refused (reference §3.3).
    let (status, body) = server.action(
        "ModifyConnection",
        json!({"ConnectionId": id, "MediaTxIP": "127.0.0.1", "MediaTxPort": 40000}),
    );
    assert_eq!((status, code(&body)), (409, "16"), "{body}");

    let (status, created) = server.action(
        "CreateConnection",
        json!({"ConnectionId": id, "MediaTxIP": "127.0.0.1", "MediaTxPort": 40000,
               "MediaTxCodec": "G711a", "MediaRxCodec": "G711a", "MediaTxFramesize": 30}),
    );
    assert_eq!((status, code(&created)), (200, "0"), "{created}");
    assert_eq!(created["ConnectionId"], id.as_str());
    assert_eq!(created["MediaRxPort"], rx_port);
    let listed = server.connections();
    assert_eq!(listed[0]["State"], "connected");
    assert_eq!(listed[0]["MediaTxPort"], 40000);
    assert_eq!(listed[0]["MediaTxCodec"], "G711a");
    assert_eq!(listed[0]["MediaTxFramesize"], 30);

    let (status, modified) = server.action(
        "ModifyConnection",
        json!({"ConnectionId": id, "MediaTxIP": "127.0.0.1", "MediaTxPort": 40002}),
    );
    assert_eq!((status, code(&modified)), (200, "0"), "{modified}");
    assert_eq!(server.connections()[0]["MediaTxPort"], 40002);

    let (status, deleted) = server.action("DeleteConnection", json!({"ConnectionId": id}));
    assert_eq!((status, code(&deleted)), (200, "0"), "{deleted}");
    assert!(server.connections().is_empty());
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["ConnectionId"], id.as_str());
    assert_eq!(released["Reason"], "api-request");
    // The port went back to the pool; its sockets, kept bound for a next connection, close
    // 2 s after (nothing asked for a port since).
    let metrics = server.metrics();
    assert!(
        metrics.contains("callbridge_rtp_ports_in_use 0"),
        "{metrics}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind(("127.0.0.1", rx_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "port {rx_port} still bound"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second delete of the same id: unknown.
    let (status, again) = server.action("DeleteConnection", json!({"ConnectionId": id}));
    assert_eq!((status, code(&again)), (404, "23"), "{again}");
}

#[test]
fn create_without_reservation_makes_a_new_connection() {
    let server = Server::start("");
    let (status, created) = server.action(
        "CreateConnection",
        json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": "41000", "ConnectionId": "0"}),
    );
    assert_eq!((status, code(&created)), (200, "0"), "{created}");
    let listed = server.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["ConnectionId"], created["ConnectionId"]);
    assert_eq!(listed[0]["MediaRxCodec"], "G711u", "default codec");
    assert_eq!(listed[0]["MediaRxFramesize"], 20, "default framesize");
    let (_, deleted) = server.action(
        "DeleteConnection",
        json!({"ConnectionId": created["ConnectionId"]}),
    );
    assert_eq!(code(&deleted), "0");
}

#[test]
fn every_documented_error_code() {
    let server = Server::start("");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("DeleteConnection", json!({}), 400, "26"),
        ("DeleteConnection", json!({"ConnectionId": "0"}), 400, "26"),
        (
            "DeleteConnection",
            json!({"ConnectionId": "9999"}),
            404,
            "23",
        ),
        (
            "DeleteConnection",
            json!({"ConnectionId": "abc"}),
            400,
            "22",
        ),
        ("DeleteConnection", json!({"ConferenceId": "77"}), 404, "24"),
        ("DeleteConnection", json!({"ConferenceId": "x"}), 400, "27"),
        ("DeleteConnection", json!({"ConnectionID": "1"}), 400, "27"),
        (
            "CreateConnection",
            json!({"MediaTxIP": "127.0.0.1"}),
            400,
            "26",
        ),
        (
            "CreateConnection",
            json!({"MediaTxIP": "not-an-ip", "MediaTxPort": 4000}),
            400,
            "27",
        ),
        (
            "CreateConnection",
            json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000, "MediaTxCodec": "G729"}),
            503,
            "8",
        ),
        (
            "CreateConnection",
            json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000, "ConnectionId": "424242"}),
            404,
            "23",
        ),
        (
            "ModifyConnection",
            json!({"ConnectionId": "5", "MediaTxIP": "127.0.0.1", "MediaTxPort": 4000}),
            404,
            "23",
        ),
        (
            "ModifyConnection",
            json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000}),
            400,
            "26",
        ),
        ("ReserveConnection", json!({"MmsId": 3}), 503, "8"),
        ("NoSuchAction", json!({}), 404, "21"),
    ];
    for (action, body, http, result) in cases {
        let (status, reply) = server.action(action, body.clone());
        assert_eq!(
            (status, code(&reply)),
            (http, result),
            "{action} {body} → {reply}"
        );
        assert!(
            reply["Error"].as_str().is_some_and(|m| !m.is_empty()),
            "message for {action} {body}"
        );
    }
    // Malformed JSON and a non-object body: HTTP 400 with a ResultCode, not a crash.
    for raw in ["{not json", "[1,2]", "\"text\""] {
        let r = client()
            .post(server.url("/mediacontrol/DeleteConnection"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{raw}");
        let body: Value = r.json().unwrap();
        assert_eq!(code(&body), "27", "{raw}");
    }
    assert!(
        server.connections().is_empty(),
        "no failed action left anything behind"
    );
}

#[test]
fn a_reservation_never_completed_is_released() {
    // reserve_timeout_s is a config key; a short one makes the 300 s default testable.
    let server = Server::start_with_overrides(&["media.reserve_timeout_s=1"]);
    let mut events = server.events();
    let (_, reserved) = server.action("ReserveConnection", json!({}));
    let id = reserved["ConnectionId"].as_str().unwrap().to_string();
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["ConnectionId"], id.as_str());
    assert_eq!(released["Reason"], "reserve-timeout");
    assert!(server.connections().is_empty());
}

#[test]
fn port_exhaustion_answers_server_busy_and_leaks_nothing() {
    let server = Server::start_with("", 2);
    let (_, a) = server.action("ReserveConnection", json!({}));
    let (_, b) = server.action("ReserveConnection", json!({}));
    assert_eq!((code(&a), code(&b)), ("0", "0"));
    let (status, c) = server.action("ReserveConnection", json!({}));
    assert_eq!((status, code(&c)), (503, "4"), "{c}");
    assert_eq!(
        server.connections().len(),
        2,
        "the failed reservation left nothing"
    );
    server.action(
        "DeleteConnection",
        json!({"ConnectionId": a["ConnectionId"]}),
    );
    let (_, d) = server.action("ReserveConnection", json!({}));
    assert_eq!(code(&d), "0", "a released pair is usable again: {d}");
}

#[test]
fn conferences_list_is_empty_and_health_reports_counts() {
    let server = Server::start("");
    let conferences = server.get("/mediacontrol/conferences");
    assert_eq!(conferences["Conferences"], json!([]));
    let health: Value = client()
        .get(server.url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["Status"], "running");
    assert_eq!(health["Connections"], 0);
}

#[test]
fn sigterm_releases_everything_and_exits_cleanly() {
    let mut server = Server::start("");
    let mut events = server.events();
    let (_, r) = server.action("ReserveConnection", json!({}));
    assert_eq!(code(&r), "0");
    assert_eq!(server.stop(), Some(0), "clean exit; log:\n{}", server.log());
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased"
    });
    assert_eq!(released["Reason"], "shutdown");
}
