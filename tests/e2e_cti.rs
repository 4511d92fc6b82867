//! The CTI surface end to end: real SIP calls to the real binary, T-Library clients on the
//! `/cti` WebSocket (and `POST /cti/{Request}`), seed 05's release models attribute by
//! attribute, registration filtering, ReferenceIDs, sequence numbers and bad input.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::uac::{status, to_tag, Uac};
use common::{client, Server, TOKEN};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const ROOM: &str = r#"
[[route]]
user = "^conf=(?P<conference>[a-z]+)$"
service = "conference"
dn = "8000"
"#;

/// A T-Library client on the WebSocket.
struct Cti {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Cti {
    fn connect(server: &Server) -> Cti {
        let mut request = format!("ws://127.0.0.1:{}/cti", server.api_port)
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {TOKEN}").parse().expect("a header value"),
        );
        let (socket, _) = tungstenite::connect(request).expect("the CTI WebSocket opens");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("read timeout");
        }
        Cti { socket }
    }

    fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send");
    }

    /// The next message within `within`, if any.
    fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).expect("JSON events"))
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("CTI stream broke: {e}"),
            }
        }
        None
    }

    /// Messages until one matches `pred` (returned last), within 5 s.
    fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(m) = self.next(Duration::from_millis(200)) {
                let done = pred(&m);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
        panic!("no matching CTI message; got {seen:#?}");
    }

    /// Everything that arrives within `within`.
    fn drain(&mut self, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            seen.push(m);
        }
        seen
    }

    fn register(&mut self, dn: &str, reference: u64) {
        self.send(
            json!({"Request": "RequestRegisterAddress", "ThisDN": dn, "ReferenceID": reference}),
        );
        let answer = self.until(|m| m["ReferenceID"] == reference);
        let last = answer.last().unwrap();
        assert_eq!(last["Event"], "EventRegistered", "{answer:#?}");
        assert_eq!(last["ThisDN"], dn);
    }
}

/// A call from DN `dn` (P-Asserted-Identity) to `user`, answered and acknowledged.
fn call_as(server: &Server, name: &str, user: &str, dn: &str) -> (Uac, String) {
    let uac = Uac::new(server, name);
    let invite = uac
        .request("INVITE", user, 1, "", "inv1", &uac.sdp("0"))
        .replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nP-Asserted-Identity: <sip:{dn}@127.0.0.1>\r\n"),
            1,
        );
    uac.send(&invite);
    let ok = uac.final_response("INVITE");
    assert_eq!(status(&ok), 200, "{ok}");
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", user, 1, &tag, "ack1", ""));
    (uac, tag)
}

fn attrs(e: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|k| e.get(*k).and_then(Value::as_str).unwrap_or("-").to_string())
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str, dn: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["Event"] == name && e["ThisDN"] == dn)
        .collect()
}

const SEED: [&str; 7] = [
    "Event",
    "ThisDN",
    "OtherDN",
    "OtherDNRole",
    "ThirdPartyDN",
    "ThirdPartyDNRole",
    "CallState",
];

#[test]
fn seed_05_release_and_delete_from_conference_on_the_wire() {
    let server = Server::start(ROOM);
    let mut all = Cti::connect(&server);
    all.register("*", 1);
    let mut only_a = Cti::connect(&server);
    only_a.register("1001", 2);

    let (_a, _) = call_as(&server, "cti-a", "conf=sales", "1001");
    let (b, b_tag) = call_as(&server, "cti-b", "conf=sales", "1002");
    let (c, _) = call_as(&server, "cti-c", "conf=sales", "1003");
    // A hears of B and C joining.
    let joined = all.until(|m| {
        m["Event"] == "EventPartyAdded" && m["OtherDN"] == "1003" && m["ThisDN"] == "1002"
    });
    let room = joined.last().unwrap()["ConnID"]
        .as_str()
        .unwrap()
        .to_string();
    all.drain(Duration::from_millis(300));

    // B releases itself (its BYE): seed 05, "Release from conference".
    b.send(&b.request("BYE", "conf=sales", 2, &b_tag, "bye1", ""));
    assert_eq!(status(&b.final_response("BYE")), 200);
    let events =
        all.until(|m| named(std::slice::from_ref(m), "EventPartyDeleted", "1003").len() == 1);
    let events = [events, all.drain(Duration::from_millis(300))].concat();
    let released = named(&events, "EventReleased", "1002");
    assert_eq!(released.len(), 1, "{events:#?}");
    assert_eq!(
        attrs(released[0], &SEED),
        ["EventReleased", "1002", "-", "-", "-", "-", "OK"]
    );
    for dn in ["1001", "1003"] {
        let deleted = named(&events, "EventPartyDeleted", dn);
        assert_eq!(deleted.len(), 1, "{events:#?}");
        assert_eq!(
            attrs(deleted[0], &SEED),
            [
                "EventPartyDeleted",
                dn,
                "1002",
                "DeletedParty",
                "1002",
                "DeletedBy",
                "OK"
            ]
        );
        assert_eq!(deleted[0]["ConnID"], room.as_str());
        assert_eq!(deleted[0]["Cause"], 16);
    }
    // Sequence numbers go up by one on each client's stream.
    let numbers: Vec<u64> = events
        .iter()
        .filter_map(|e| e["EventSequenceNumber"].as_u64())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");

    // A deletes C: seed 05, "Delete from conference", with the request's ReferenceID.
    all.send(json!({
        "Request": "RequestDeleteFromConference",
        "ThisDN": "1001",
        "ConnID": room,
        "OtherDN": "1003",
        "ReferenceID": 77
    }));
    let events = all.until(|m| m["Event"] == "EventACK");
    let events = [events, all.drain(Duration::from_millis(300))].concat();
    let ack = events.iter().find(|e| e["Event"] == "EventACK").unwrap();
    assert_eq!(ack["ReferenceID"], 77);
    let released = named(&events, "EventReleased", "1003");
    assert_eq!(released.len(), 1, "{events:#?}");
    assert_eq!(released[0]["ReferenceID"], 77);
    let deleted = named(&events, "EventPartyDeleted", "1001");
    assert_eq!(
        attrs(deleted[0], &SEED),
        [
            "EventPartyDeleted",
            "1001",
            "1003",
            "DeletedParty",
            "1001",
            "DeletedBy",
            "OK"
        ]
    );
    // C's phone is hung up.
    let bye = c.recv(Duration::from_secs(3)).expect("a BYE for C");
    assert!(bye.starts_with("BYE "), "{bye}");

    // The client registered on 1001 saw only 1001's events.
    let mine = only_a.drain(Duration::from_millis(500));
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|e| e["ThisDN"] == "1001"), "{mine:#?}");
    assert!(!named(&mine, "EventPartyDeleted", "1001").is_empty());
}

#[test]
fn bad_requests_get_coded_errors_and_break_no_stream() {
    let server = Server::start(ROOM);
    let mut bad = Cti::connect(&server);
    let mut good = Cti::connect(&server);
    good.register("*", 1);

    bad.send(json!("not an object"));
    assert_eq!(bad.until(|_| true)[0]["ErrorCode"], 400);
    bad.socket.send(Message::text("{ not json")).unwrap();
    assert_eq!(bad.until(|_| true)[0]["ErrorCode"], 400);
    bad.socket
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .unwrap();
    assert_eq!(bad.until(|_| true)[0]["ErrorCode"], 400);
    bad.send(json!({"Request": "RequestTeleport", "ReferenceID": 5}));
    let unknown = bad.until(|_| true);
    assert_eq!(unknown[0]["Event"], "EventError");
    assert_eq!(unknown[0]["ErrorCode"], 401);
    assert_eq!(unknown[0]["ReferenceID"], 5);
    bad.send(json!({"Request": "RequestReleaseCall", "ThisDN": "1", "ConnID": "0123456789abcdef", "ReferenceID": 6}));
    assert_eq!(bad.until(|_| true)[0]["ErrorCode"], 410);
    bad.send(json!({"Request": "RequestHoldCall", "ThisDN": "1", "ConnID": "0123456789abcdef"}));
    assert_eq!(bad.until(|_| true)[0]["ErrorCode"], 410);
    bad.send(
        json!({"Request": "RequestCompleteTransfer", "ThisDN": "1", "ConnID": "0123456789abcdef"}),
    );
    assert_eq!(bad.until(|_| true)[0]["ErrorCode"], 412);

    // Both streams still work: a call's events reach the registered client.
    let (_a, _) = call_as(&server, "cti-good", "conf=sales", "1001");
    let seen = good.until(|m| m["Event"] == "EventEstablished" || m["Event"] == "EventDialing");
    assert!(seen.iter().any(|e| e["ThisDN"] == "1001"), "{seen:#?}");
    bad.register("1001", 9);

    // POST: the same requests, one at a time.
    let post = |path: &str, body: Value| {
        let r = client()
            .post(server.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .expect("POST");
        (r.status().as_u16(), r.json::<Value>().expect("JSON"))
    };
    let (code, answer) = post(
        "/cti/RequestQueryAddress",
        json!({"ThisDN": "1001", "ReferenceID": 11}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["Event"], "EventAddressInfo");
    assert_eq!(answer["ReferenceID"], 11);
    let conn_id = answer["Calls"][0]["ConnID"].as_str().unwrap().to_string();
    let (code, info) = post("/cti/RequestQueryCall", json!({"ConnID": conn_id}));
    assert_eq!(code, 200);
    assert_eq!(info["Parties"][0]["DN"], "1001");
    let (code, error) = post("/cti/RequestQueryCall", json!({"ConnID": "nope"}));
    assert_eq!((code, error["ErrorCode"].as_u64()), (400, Some(403)));
    let (code, _) = post("/cti/RequestRegisterAddress", json!({"ThisDN": "1001"}));
    assert_eq!(code, 501);
    // Without the token: 401, as for every other API path.
    let r = client().get(server.url("/cti")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A release by request reaches both streams.
    let (code, _) = post(
        "/cti/RequestReleaseCall",
        json!({"ThisDN": "1001", "ConnID": conn_id, "ReferenceID": 12}),
    );
    assert_eq!(code, 200);
    let released = good.until(|m| m["Event"] == "EventReleased" && m["ThisDN"] == "1001");
    assert_eq!(released.last().unwrap()["ReferenceID"], 12);
    bad.until(|m| m["Event"] == "EventReleased" && m["ThisDN"] == "1001");
}

/// A callbridge with the meet-me room and a trunk to a SIPp UAS running `scenario` (one
/// call), and a CTI client registered on every DN: the server, the client, the UAS's port and
/// its run.
fn with_sipp_target(
    scenario: &str,
) -> (
    Server,
    Cti,
    u16,
    std::thread::JoinHandle<std::process::Output>,
) {
    let (far, uas) = common::sipp_uas_on_a_free_port(&[
        "-sf",
        &common::repo_path(&format!("tests/sipp/{scenario}"))
            .display()
            .to_string(),
        "-m",
        "1",
    ]);
    let server = Server::start(&format!(
        "{ROOM}[[trunk]]\nname = \"far\"\naddress = \"127.0.0.1:{far}\"\n"
    ));
    let mut cti = Cti::connect(&server);
    cti.register("*", 1);
    (server, cti, far, uas)
}

/// A (1001) and B (1002) in the room: their phones and the room's ConnID.
fn room_of_two(server: &Server, cti: &mut Cti, tag: &str) -> (Uac, Uac, String) {
    let (a, _) = call_as(server, &format!("{tag}-a"), "conf=sales", "1001");
    let (b, _) = call_as(server, &format!("{tag}-b"), "conf=sales", "1002");
    let joined = cti.until(|m| m["Event"] == "EventPartyAdded" && m["OtherDN"] == "1002");
    let room = joined.last().unwrap()["ConnID"]
        .as_str()
        .unwrap()
        .to_string();
    (a, b, room)
}

/// The participants of room `sales` in the conference listing, and how many conferences
/// there are.
fn sales_participants(server: &Server) -> (usize, usize) {
    let rooms = server.get("/mediacontrol/conferences")["Conferences"].clone();
    let list = rooms.as_array().cloned().unwrap_or_default();
    let sales = list
        .iter()
        .find(|c| c["Name"] == "sales")
        .unwrap_or_else(|| panic!("room sales: {rooms:#}"));
    (sales["Participants"].as_array().unwrap().len(), list.len())
}

/// Releases every conference (callbridge hangs its members up) and checks the SIPp UAS saw
/// its call through to our BYE.
fn release_rooms_and_check(server: &Server, uas: std::thread::JoinHandle<std::process::Output>) {
    let rooms = server.get("/mediacontrol/conferences")["Conferences"].clone();
    for room in rooms.as_array().cloned().unwrap_or_default() {
        let (code, _) = server.action(
            "DeleteConnection",
            json!({"ConferenceId": room["ConferenceId"]}),
        );
        assert_eq!(code, 200);
    }
    let (ok, output) = common::sipp_result(uas.join().unwrap());
    assert!(ok, "{output}");
}

/// A PBX's REFER (SIPp) moves its place in the room to the target (a SIPp UAS behind a
/// trunk): the CTI single-step transfer model (vendor-apis.md §3.3.7, docs/CTI.md).
#[test]
fn a_pbx_refer_is_a_transfer_on_the_cti_stream() {
    let (server, mut all, bob, target) = with_sipp_target("uas_transfer_target.xml");
    let (_alice, _) = call_as(&server, "cti-alice", "conf=sales", "1001");
    let pbx = server.sipp_in_background(&[
        "-sf",
        &common::repo_path("tests/sipp/uac_refer.xml")
            .display()
            .to_string(),
        "-s",
        "conf=sales",
        "-key",
        "target",
        &format!("sip:bob@127.0.0.1:{bob}"),
        "-m",
        "1",
    ]);
    let events = all.until(|m| m["Event"] == "EventReleased" && m["ThisDN"] == "pbx");
    let (ok, output) = common::sipp_result(pbx.join().unwrap());
    assert!(ok, "{output}");
    let room = named(&events, "EventPartyAdded", "1001")[0]["ConnID"]
        .as_str()
        .unwrap()
        .to_string();
    let moved = named(&events, "EventPartyChanged", "bob");
    assert_eq!(moved.len(), 1, "{events:#?}");
    assert_eq!(
        attrs(moved[0], &SEED),
        [
            "EventPartyChanged",
            "bob",
            "1001",
            "ConferenceMember",
            "pbx",
            "TransferredBy",
            "Transferred"
        ]
    );
    assert_eq!(moved[0]["ConnID"], room.as_str());
    assert!(moved[0]["PreviousConnID"].is_string());
    let told = named(&events, "EventPartyChanged", "1001");
    assert_eq!(
        attrs(told[0], &SEED),
        [
            "EventPartyChanged",
            "1001",
            "bob",
            "ConferenceMember",
            "pbx",
            "TransferredBy",
            "Transferred"
        ]
    );
    let gone = named(&events, "EventReleased", "pbx");
    assert_eq!(
        attrs(gone[0], &SEED),
        [
            "EventReleased",
            "pbx",
            "1001",
            "ConferenceMember",
            "bob",
            "TransferredBy",
            "Transferred"
        ]
    );
    assert!(
        named(&events, "EventPartyDeleted", "1001").is_empty(),
        "a transferred party is not deleted: {events:#?}"
    );
    // Release the room: Bob's UAS gets our BYE and ends.
    release_rooms_and_check(&server, target);
}

/// Answers callbridge's re-INVITE on `uac`'s socket with 200 and an SDP of `direction`;
/// returns the offer's direction line.
fn answer_reinvite(uac: &Uac, direction: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Some(message) = uac.recv(Duration::from_millis(500)) else {
            continue;
        };
        if !message.starts_with("INVITE ") {
            continue;
        }
        let offered = common::uac::body(&message)
            .lines()
            .find(|l| l.starts_with("a=send") || l.starts_with("a=recv") || l == &"a=inactive")
            .unwrap_or_default()
            .to_string();
        let sdp = uac
            .sdp("0")
            .replace("a=sendrecv", &format!("a={direction}"));
        let ok = common::uac::ok_for(&message).replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Contact: <sip:uac@127.0.0.1:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                uac.sip_port(),
                sdp.len()
            ),
        );
        uac.sip
            .send_to(ok.as_bytes(), &uac.server)
            .expect("send the 200");
        return offered;
    }
    panic!("no re-INVITE from callbridge");
}

#[test]
fn hold_and_retrieve_by_request_reinvite_the_phone() {
    let server = Server::start(ROOM);
    let mut cti = Cti::connect(&server);
    cti.register("1001", 1);
    let (uac, _) = call_as(&server, "cti-hold", "conf=sales", "1001");
    let dialing = cti.until(|m| m["Event"] == "EventEstablished");
    let conn_id = dialing.last().unwrap()["ConnID"]
        .as_str()
        .unwrap()
        .to_string();
    for (request, offered, answer, event) in [
        ("RequestHoldCall", "a=sendonly", "recvonly", "EventHeld"),
        (
            "RequestRetrieveCall",
            "a=sendrecv",
            "sendrecv",
            "EventRetrieved",
        ),
    ] {
        cti.send(
            json!({"Request": request, "ThisDN": "1001", "ConnID": conn_id, "ReferenceID": 40}),
        );
        assert_eq!(answer_reinvite(&uac, answer), offered, "{request}");
        // The event and the answer, in either order.
        let mut seen = Vec::new();
        while !(seen.iter().any(|m: &Value| m["Event"] == event)
            && seen
                .iter()
                .any(|m: &Value| m["ReferenceID"] == 40 && m["Event"] != event))
        {
            seen.extend(cti.until(|m| m["ReferenceID"] == 40));
        }
        let got = seen.iter().find(|m| m["Event"] == event).unwrap();
        assert_eq!(got["ThisDN"], "1001");
        let answer = seen
            .iter()
            .find(|m| m["ReferenceID"] == 40 && m["Event"] != event);
        assert_eq!(answer.unwrap()["Event"], "EventACK", "{seen:#?}");
        // Our ACK of the phone's 200.
        let ack = uac.recv(Duration::from_secs(2)).expect("ACK");
        assert!(ack.starts_with("ACK "), "{ack}");
    }
}

/// A call in that rings and is abandoned (SIPp CANCEL), and a call placed by request that
/// rings and is busy (a raw trunk answering 180 then 486).
#[test]
fn ringing_abandoned_and_busy_on_the_wire() {
    let (trunk, trunk_port) = common::RawTrunk::bind();
    let server = Server::start(&format!(
        "{ROOM}[[trunk]]\nname = \"far\"\naddress = \"127.0.0.1:{trunk_port}\"\n"
    ));
    let mut cti = Cti::connect(&server);
    cti.register("*", 1);

    // The `ring` route answers after 5 s; SIPp cancels after the 180.
    let (ok, output) = server.sipp(&[
        "-sf",
        &common::repo_path("tests/sipp/uac_cancel.xml")
            .display()
            .to_string(),
        "-s",
        "ring",
        "-m",
        "1",
    ]);
    assert!(ok, "{output}");
    let events = cti.until(|m| m["Event"] == "EventAbandoned");
    let ringing = named(&events, "EventRinging", "ring");
    assert_eq!(
        attrs(ringing[0], &SEED),
        [
            "EventRinging",
            "ring",
            "sipp",
            "Origination",
            "-",
            "-",
            "OK"
        ]
    );
    assert_eq!(
        named(&events, "EventDialing", "sipp").len(),
        1,
        "{events:#?}"
    );
    let events = [events, cti.drain(Duration::from_millis(300))].concat();
    let abandoned = named(&events, "EventAbandoned", "ring");
    assert_eq!(abandoned[0]["OtherDN"], "sipp");
    assert_eq!(named(&events, "EventReleased", "sipp")[0]["Cause"], 16);

    // A call placed by request: dialing, ringing on the 180, busy on the 486.
    cti.send(json!({"Request": "RequestMakeCall", "ThisDN": "7000", "OtherDN": "7002", "ReferenceID": 5}));
    let (invite, from) = trunk.expect("INVITE");
    assert!(
        invite.contains("sip:7000@"),
        "From is the requesting DN: {invite}"
    );
    trunk.respond(&invite, from, "180 Ringing", "");
    let events = cti.until(|m| m["Event"] == "EventRinging" && m["ThisDN"] == "7002");
    let ack = events
        .iter()
        .find(|m| m["Event"] == "EventACK")
        .expect("EventACK");
    assert_eq!(ack["ReferenceID"], 5);
    let dialing = named(&events, "EventDialing", "7000");
    assert_eq!(dialing[0]["OtherDN"], "7002");
    assert_eq!(dialing[0]["ReferenceID"], 5);
    assert_eq!(dialing[0]["ConnID"], ack["ConnID"]);
    trunk.respond(&invite, from, "486 Busy Here", "");
    trunk.expect("ACK");
    let events = cti.until(|m| m["Event"] == "EventReleased" && m["ThisDN"] == "7000");
    let busy = named(&events, "EventDestinationBusy", "7000");
    assert_eq!(
        attrs(busy[0], &SEED),
        [
            "EventDestinationBusy",
            "7000",
            "7002",
            "Destination",
            "-",
            "-",
            "Busy"
        ]
    );
    assert_eq!(named(&events, "EventReleased", "7000")[0]["Cause"], 17);
    server.wait_no_connections(Duration::from_secs(3));
}

/// Two-step conference with a real consulted party (a SIPp UAS behind a trunk): B (1002)
/// consults from the room, then completes the conference; the room then has A, B and the
/// consulted party, as the CTI stream and the conference listing both say.
#[test]
fn a_two_step_conference_with_a_real_consulted_party() {
    let (server, mut cti, far, uas) = with_sipp_target("uas_answer.xml");
    let (_a, _b, room) = room_of_two(&server, &mut cti, "cti-2s");

    cti.send(json!({
        "Request": "RequestInitiateConference",
        "ThisDN": "1002",
        "ConnID": room,
        "OtherDN": format!("sip:bob@127.0.0.1:{far}"),
        "ReferenceID": 90
    }));
    let seen = cti.until(|m| m["Event"] == "EventEstablished" && m["ThisDN"] == "bob");
    assert_eq!(
        named(&seen, "EventHeld", "1002")[0]["ConnID"],
        room.as_str()
    );
    let consultation = seen.iter().find(|m| m["Event"] == "EventACK").unwrap()["ConnID"].clone();
    assert_ne!(consultation, json!(room));
    // While consulting, the room's mix has A only; B and bob have a hairpin of their own.
    assert_eq!(sales_participants(&server), (1, 2));

    cti.send(json!({
        "Request": "RequestCompleteConference",
        "ThisDN": "1002",
        "ConnID": room,
        "ReferenceID": 91
    }));
    let seen = cti.until(|m| m["Event"] == "EventPartyChanged" && m["ThisDN"] == "bob");
    let changed = seen.last().unwrap();
    assert_eq!(changed["ConnID"], room.as_str());
    assert_eq!(changed["PreviousConnID"], consultation);
    let seen = [seen, cti.drain(Duration::from_millis(300))].concat();
    assert_eq!(named(&seen, "EventRetrieved", "1002").len(), 1, "{seen:#?}");
    let added = named(&seen, "EventPartyAdded", "1001");
    assert_eq!(
        attrs(added[0], &SEED),
        [
            "EventPartyAdded",
            "1001",
            "bob",
            "NewParty",
            "1002",
            "AddedBy",
            "Conferenced"
        ]
    );
    // All three in the room's mix; the hairpin is gone.
    assert_eq!(sales_participants(&server), (3, 1));
    // Releasing the room hangs everyone up; the UAS sees its BYE.
    release_rooms_and_check(&server, uas);
}

/// A client that registers for everything and then reads nothing is disconnected once its
/// socket stops taking events (`[api] client_send_buffer` bounds what the kernel holds for
/// it); the client that reads gets every event and the server stays healthy.
#[test]
fn a_client_that_stops_reading_is_disconnected_and_the_others_go_on() {
    let server = Server::start_with_extra_and_overrides("", &["api.client_send_buffer=4096"]);
    // The stuck client: a small receive buffer too, so its socket fills after a few events.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", server.api_port).parse().unwrap();
    socket.connect(&address.into()).unwrap();
    let mut request = format!("ws://127.0.0.1:{}/cti", server.api_port)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut stuck, _) = tungstenite::client(request, TcpStream::from(socket)).expect("handshake");
    stuck
        .send(Message::text(
            json!({"Request": "RequestRegisterAddress", "ThisDN": "*"}).to_string(),
        ))
        .unwrap();

    let mut good = Cti::connect(&server);
    good.register("*", 1);
    let calls = 60;
    let reader = std::thread::spawn(move || {
        let mut released = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while released < calls * 2 && Instant::now() < deadline {
            if let Some(e) = good.next(Duration::from_millis(200)) {
                if e["Event"] == "EventReleased" {
                    released += 1;
                }
            }
        }
        released
    });
    let (ok, output) = server.sipp(&[
        "-sn", "uac", "-s", "echo", "-m", "60", "-r", "30", "-l", "20", "-d", "50",
    ]);
    assert!(ok, "{output}");
    assert_eq!(
        reader.join().unwrap(),
        calls * 2,
        "the reading client got every release"
    );

    // The stuck client's stream ends after what the buffers held: the server gives a stuck
    // send 5 s and its close frame 5 s more, so it is gone within about 10 s of sticking.
    std::thread::sleep(Duration::from_secs(6));
    stuck
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = 0;
    let ended = loop {
        match stuck.read() {
            Ok(Message::Text(_)) => received += 1,
            Ok(Message::Close(frame)) => break frame.map(|f| f.reason.to_string()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(
                    Instant::now() < deadline,
                    "the stuck client was never disconnected ({received} events read)"
                );
            }
            Err(_) => break None,
        }
    };
    assert!(
        received < calls * 6,
        "it did not get every event ({received})"
    );
    if let Some(reason) = ended {
        assert!(reason.starts_with("too slow"), "{reason}");
    }
    assert_eq!(
        client().get(server.url("/health")).send().unwrap().status(),
        200
    );
}

/// Seed 05's release phase over the wire for the CUAE triggers: a two-party call (a caller
/// and the `echo` route) ended by Media Control DeleteConnection, then another by Call
/// Control Hangup — both sides `EventReleased`, OtherDN each other, CallState OK, Cause 16.
#[test]
fn release_phase_by_delete_connection_and_hangup_on_the_wire() {
    let server = Server::start("");
    let mut cti = Cti::connect(&server);
    cti.register("*", 1);
    for (name, trigger) in [("DeleteConnection", 0), ("Hangup", 1)] {
        let (uac, _) = call_as(&server, &format!("cti-{name}"), "echo", "5554000");
        let established = cti.until(|m| m["Event"] == "EventEstablished" && m["ThisDN"] == "echo");
        let conn_id = established.last().unwrap()["ConnID"].clone();
        let listed = server.get("/callcontrol/calls");
        let call = listed["Calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["ConnID"] == conn_id)
            .expect("listed")
            .clone();
        if trigger == 0 {
            let (code, _) = server.action(
                "DeleteConnection",
                json!({"ConnectionId": call["ConnectionId"]}),
            );
            assert_eq!(code, 200);
        } else {
            let r = client()
                .post(server.url("/callcontrol/Hangup"))
                .bearer_auth(TOKEN)
                .json(&json!({"CallId": call["CallId"]}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{name}");
        }
        let seen = cti.until(|m| m["Event"] == "EventReleased" && m["ThisDN"] == "echo");
        let seen = [seen, cti.drain(Duration::from_millis(300))].concat();
        let caller = named(&seen, "EventReleased", "5554000");
        assert_eq!(caller.len(), 1, "{name}: {seen:#?}");
        assert_eq!(
            attrs(caller[0], &SEED),
            [
                "EventReleased",
                "5554000",
                "echo",
                "Destination",
                "-",
                "-",
                "OK"
            ],
            "{name}"
        );
        let route = named(&seen, "EventReleased", "echo");
        assert_eq!(
            attrs(route[0], &SEED),
            [
                "EventReleased",
                "echo",
                "5554000",
                "Origination",
                "-",
                "-",
                "OK"
            ],
            "{name}"
        );
        for e in [caller[0], route[0]] {
            assert_eq!(e["ConnID"], conn_id, "{name}");
            assert_eq!(e["Cause"], 16, "{name}");
        }
        // The phone got our BYE.
        expect_bye(&uac);
    }
}

/// A single-step transfer by request over the wire: the target (a SIPp UAS behind a trunk)
/// takes B's place in the room; B's phone gets our BYE.
#[test]
fn a_single_step_transfer_on_the_wire() {
    let (server, mut cti, far, uas) = with_sipp_target("uas_answer.xml");
    let (_a, b, room) = room_of_two(&server, &mut cti, "cti-sst");
    cti.send(json!({
        "Request": "RequestSingleStepTransfer",
        "ThisDN": "1002",
        "ConnID": room,
        "OtherDN": format!("sip:carol@127.0.0.1:{far}"),
        "ReferenceID": 95
    }));
    // 1002 is released twice: from the call placed from it (carol went on into the room),
    // then from the room.
    let seen = cti.until(|m| {
        m["Event"] == "EventReleased" && m["ThisDN"] == "1002" && m["ConnID"] == room.as_str()
    });
    let placed: Vec<&Value> = named(&seen, "EventReleased", "1002")
        .into_iter()
        .filter(|e| e["ConnID"] != room.as_str())
        .collect();
    assert_eq!(placed.len(), 1, "{seen:#?}");
    assert_eq!(placed[0]["OtherDN"], "carol");
    let moved = named(&seen, "EventPartyChanged", "carol");
    assert_eq!(
        attrs(moved[0], &SEED),
        [
            "EventPartyChanged",
            "carol",
            "1001",
            "ConferenceMember",
            "1002",
            "TransferredBy",
            "Transferred"
        ]
    );
    assert_eq!(moved[0]["ConnID"], room.as_str());
    let gone: Vec<&Value> = named(&seen, "EventReleased", "1002")
        .into_iter()
        .filter(|e| e["ConnID"] == room.as_str())
        .collect();
    assert_eq!(gone[0]["CallState"], "Transferred");
    assert_eq!(gone[0]["ThirdPartyDN"], "carol");
    expect_bye(&b);
    assert_eq!(
        sales_participants(&server),
        (2, 1),
        "A and carol in the room"
    );
    release_rooms_and_check(&server, uas);
}

/// Waits for callbridge's BYE on a hand-driven phone.
fn expect_bye(uac: &Uac) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if uac
            .recv(Duration::from_millis(500))
            .is_some_and(|m| m.starts_with("BYE "))
        {
            return;
        }
    }
    panic!("no BYE reached the phone");
}
