//! End to end: calls callbridge places (MakeCall through a `[[trunk]]`) and calls that change
//! hands — a PBX's REFER (blind transfer), an INVITE with Replaces (attended transfer) and the
//! application's BlindTransfer. Real SIPp peers on loopback play the PBX and the trunk's far
//! end; each test checks the connections, conferences and events afterwards, and that nothing
//! leaks.

mod common;

use std::time::{Duration, Instant};

use common::uac::{self, Uac};
use common::{repo_path, sipp_result, sipp_uas_on_a_free_port, RawTrunk, Server};
use serde_json::{json, Value};

const CONF_ROUTE: &str =
    "[[route]]\nuser = \"^conf=(?P<conference>[^@;]+)$\"\nservice = \"conference\"\n";
const APP_ROUTE: &str = "[[route]]\nuser = \"^app$\"\nservice = \"application\"\n";

fn trunk(port: u16, extra: &str) -> String {
    format!("[[trunk]]\nname = \"far\"\naddress = \"127.0.0.1:{port}\"\n{extra}")
}

fn scenario(name: &str) -> String {
    repo_path(&format!("tests/sipp/{name}"))
        .display()
        .to_string()
}

fn call_action(server: &Server, action: &str, body: Value) -> (u16, Value) {
    let r = common::client()
        .post(server.url(&format!("/callcontrol/{action}")))
        .bearer_auth(common::TOKEN)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .expect("API reachable");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON body"))
}

fn named(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["Event"] == name
}

fn conference_members(server: &Server) -> Vec<(String, Vec<String>)> {
    let list = server.get("/mediacontrol/conferences");
    list["Conferences"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let members = c["Participants"]
                        .as_array()
                        .map(|m| {
                            m.iter()
                                .map(|x| x["ConnectionId"].as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        c["ConferenceId"].as_str().unwrap_or("").to_string(),
                        members,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A raw UAC calls `user` and completes the INVITE; returns it with the 200.
fn call_in(server: &Server, user: &str, name: &str) -> (Uac, String) {
    let uac = Uac::new(server, name);
    uac.send(&uac.request("INVITE", user, 1, "", &format!("{name}i"), &uac.sdp("0")));
    let ok = uac.final_response("INVITE");
    assert_eq!(uac::status(&ok), 200, "{ok}");
    let tag = uac::to_tag(&ok);
    uac.send(&uac.request("ACK", user, 1, &tag, &format!("{name}a"), ""));
    (uac, ok)
}

/// Waits for a request of `method` on the raw UAC and answers it 200.
fn answer_request(uac: &Uac, method: &str) -> String {
    for _ in 0..50 {
        let Some(msg) = uac.recv(Duration::from_millis(200)) else {
            continue;
        };
        if msg.starts_with(method) {
            let response = uac::ok_for(&msg);
            uac.send(&response);
            return msg;
        }
    }
    panic!("no {method} came");
}

#[test]
fn make_call_through_a_trunk_is_answered_joins_a_conference_and_hangup_sends_bye() {
    let (far, uas) = sipp_uas_on_a_free_port(&["-sf", &scenario("uas_answer.xml"), "-m", "1"]);
    let server = Server::start(&trunk(far, ""));
    let mut events = server.events();

    let (code, body) = call_action(
        &server,
        "MakeCall",
        json!({"To": "1001", "Conference": true, "DisplayName": "IVR"}),
    );
    assert_eq!(code, 200, "{body}");
    let call = body["CallId"].as_str().expect("CallId").to_string();
    let complete = events.wait_for(Duration::from_secs(10), named("MakeCall_Complete"));
    assert_eq!(complete["CallId"], call.as_str());
    assert_eq!(complete["To"], "1001");
    assert_eq!(complete["From"], "callbridge");
    assert!(complete["MediaTxPort"].as_u64().is_some(), "{complete}");
    assert_eq!(complete["MediaTxCodec"], "G711u");
    let conference = complete["ConferenceId"]
        .as_str()
        .expect("ConferenceId")
        .to_string();
    let connection = complete["ConnectionId"].as_str().unwrap().to_string();
    events.wait_for(Duration::from_secs(2), |e| {
        e["Event"] == "StartRx" && e["CallId"] == call.as_str()
    });
    std::thread::sleep(Duration::from_millis(200));
    let count = |events: &mut common::EventStream, name: &str| {
        events
            .drain()
            .iter()
            .filter(|e| e["Event"] == name && e["CallId"] == call.as_str())
            .count()
    };
    assert_eq!(
        count(&mut events, "StartTx"),
        1,
        "one StartTx for the answer"
    );
    assert_eq!(count(&mut events, "StartRx"), 1, "one StartRx");
    assert_eq!(
        conference_members(&server),
        [(conference, vec![connection.clone()])]
    );
    let calls = server.get("/callcontrol/calls");
    assert_eq!(calls["Calls"].as_array().map(Vec::len), Some(1), "{calls}");

    let (code, body) = call_action(&server, "Hangup", json!({"CallId": call}));
    assert_eq!(code, 200, "{body}");
    let (ok, output) = sipp_result(uas.join().unwrap());
    assert!(ok, "the far end got our BYE: {output}");
    server.wait_no_connections(Duration::from_secs(3));
    assert!(conference_members(&server).is_empty());
    let released = events.wait_for(Duration::from_secs(2), named("ConnectionReleased"));
    assert_eq!(released["ConnectionId"], connection.as_str());
}

#[test]
fn make_call_answers_a_digest_challenge_and_reports_busy() {
    let (trunk_socket, port) = RawTrunk::bind();
    let server = Server::start(&trunk(
        port,
        "username = \"cb\"\npassword = \"s3cret\"\nfrom_user = \"4000\"\ncodecs = [\"PCMA\"]\n",
    ));
    let mut events = server.events();
    let (code, body) = call_action(&server, "MakeCall", json!({"To": "1002"}));
    assert_eq!(code, 200, "{body}");
    let call = body["CallId"].as_str().unwrap().to_string();

    let (invite, from) = trunk_socket.expect("INVITE");
    assert!(
        invite.starts_with("INVITE sip:1002@127.0.0.1 SIP/2.0"),
        "{invite}"
    );
    assert!(
        uac::header(&invite, "From").unwrap().contains("sip:4000@"),
        "{invite}"
    );
    let offer = uac::body(&invite);
    assert!(
        offer
            .lines()
            .any(|l| l.starts_with("m=audio ") && l.contains("RTP/AVP 8")),
        "the trunk's codecs are offered: {offer}"
    );
    assert!(!offer.contains("PCMU"), "{offer}");
    trunk_socket.respond(
        &invite,
        from,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"far\", nonce=\"abc123\", qop=\"auth\"\r\n",
    );
    trunk_socket.expect("ACK");
    let (retry, from) = trunk_socket.expect("INVITE");
    let auth = uac::header(&retry, "Authorization").expect("the INVITE again, with credentials");
    assert!(
        auth.contains("username=\"cb\"") && auth.contains("nonce=\"abc123\""),
        "{auth}"
    );
    assert_eq!(uac::header(&retry, "CSeq"), Some("2 INVITE"));
    trunk_socket.respond(&retry, from, "486 Busy Here", "");
    trunk_socket.expect("ACK");

    let failed = events.wait_for(Duration::from_secs(5), named("MakeCall_Failed"));
    assert_eq!(failed["CallId"], call.as_str());
    assert_eq!(failed["EndReason"], "Busy");
    assert_eq!(failed["Status"], 486);
    server.wait_no_connections(Duration::from_secs(2));
    let status = server.get("/health");
    assert_eq!(status["Calls"], 0, "{status}");
}

/// A MakeCall to `to` that the raw trunk rings and the application hangs up: the INVITE,
/// the CANCEL that follows, and where they came from.
fn ringing_make_call_hung_up(
    server: &Server,
    trunk_socket: &RawTrunk,
    to: &str,
) -> (String, String, std::net::SocketAddr) {
    let (_, body) = call_action(server, "MakeCall", json!({ "To": to }));
    let call = body["CallId"].as_str().unwrap().to_string();
    let (invite, from) = trunk_socket.expect("INVITE");
    trunk_socket.respond(&invite, from, "180 Ringing", "");
    std::thread::sleep(Duration::from_millis(200));
    let (code, _) = call_action(server, "Hangup", json!({ "CallId": call }));
    assert_eq!(code, 200);
    let (cancel, from) = trunk_socket.expect("CANCEL");
    assert_eq!(uac::header(&cancel, "CSeq"), Some("1 CANCEL"));
    (invite, cancel, from)
}

#[test]
fn hangup_of_a_ringing_make_call_cancels_it_without_make_call_failed() {
    let (trunk_socket, port) = RawTrunk::bind();
    let server = Server::start(&trunk(port, ""));
    let mut events = server.events();
    let (invite, cancel, from) =
        ringing_make_call_hung_up(&server, &trunk_socket, "sip:1003@127.0.0.1");
    trunk_socket.respond(&cancel, from, "200 OK", "");
    trunk_socket.respond(&invite, from, "487 Request Terminated", "");
    trunk_socket.expect("ACK");
    server.wait_no_connections(Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !events
            .drain()
            .iter()
            .any(|e| e["Event"] == "MakeCall_Failed"),
        "a Hangup of a ringing MakeCall reports nothing more"
    );
    assert_eq!(server.get("/health")["Calls"], 0);
}

/// A trunk that rings, takes the CANCEL and then never sends the INVITE's final response:
/// RFC 3261 §9.1 has the INVITE considered cancelled 64*T1 after the CANCEL (6.4 s at the
/// tests' T1 of 100 ms), so the call and its transactions do not stay for ever.
#[test]
fn a_cancelled_make_call_whose_trunk_goes_quiet_is_forgotten_after_64_t1() {
    let (trunk_socket, port) = RawTrunk::bind();
    let server = Server::start(&trunk(port, ""));
    let (_, cancel, from) = ringing_make_call_hung_up(&server, &trunk_socket, "sip:1004@127.0.0.1");
    trunk_socket.respond(&cancel, from, "200 OK", "");
    server.wait_no_connections(Duration::from_secs(2));
    assert_eq!(
        server.get("/health")["Calls"],
        1,
        "the SIP call waits for the INVITE's final response"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.get("/health")["Calls"] != 0 || server.metric("callbridge_sip_transactions") > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the cancelled INVITE still held: {}",
            server.get("/health")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pbx_refer_moves_the_call_to_the_target_in_the_same_conference_place() {
    let (bob, target) =
        sipp_uas_on_a_free_port(&["-sf", &scenario("uas_transfer_target.xml"), "-m", "1"]);
    let server = Server::start(&format!("{CONF_ROUTE}{}", trunk(bob, "")));
    let mut events = server.events();

    let (alice, alice_ok) = call_in(&server, "conf=room1", "alice");
    let joined = events.wait_for(Duration::from_secs(3), named("ConferenceJoined"));
    let conference = joined["ConferenceId"].as_str().unwrap().to_string();
    let alice_connection = joined["ConnectionId"].as_str().unwrap().to_string();
    let pbx = server.sipp_in_background(&[
        "-sf",
        &scenario("uac_refer.xml"),
        "-s",
        "conf=room1",
        "-key",
        "target",
        &format!("sip:bob@127.0.0.1:{bob}"),
        "-m",
        "1",
    ]);
    let transferor = events.wait_for_while(&pbx, Duration::from_secs(5), |e| {
        e["Event"] == "ConferenceJoined"
            && e["ConferenceId"] == conference.as_str()
            && e["ConnectionId"] != alice_connection.as_str()
    });
    let old_connection = transferor["ConnectionId"].as_str().unwrap().to_string();

    let changed = events.wait_for(Duration::from_secs(10), named("CallChanged"));
    let new_connection = changed["ConnectionId"].as_str().unwrap().to_string();
    assert!(changed["To"]
        .as_str()
        .unwrap()
        .contains(&format!("bob@127.0.0.1:{bob}")));
    let (ok, output) = sipp_result(pbx.join().unwrap());
    assert!(ok, "the PBX saw 202, NOTIFY 100 and NOTIFY 200: {output}");
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == old_connection.as_str()
    });
    assert_eq!(released["Reason"], "transferred");

    // Bob sits where the PBX's call was: in room1 with Alice.
    let members = conference_members(&server);
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].0, conference);
    assert!(members[0].1.contains(&new_connection), "{members:?}");
    assert!(!members[0].1.contains(&old_connection), "{members:?}");
    assert_eq!(members[0].1.len(), 2, "{members:?}");

    // Alice hangs up; deleting Bob's connection sends Bob our BYE.
    alice.send(&alice.request(
        "BYE",
        "conf=room1",
        2,
        &uac::to_tag(&alice_ok),
        "aliceb",
        "",
    ));
    let (code, body) = server.action("DeleteConnection", json!({"ConnectionId": new_connection}));
    assert_eq!(code, 200, "{body}");
    let (ok, output) = sipp_result(target.join().unwrap());
    assert!(
        ok,
        "Bob got Referred-By, answered and got our BYE: {output}"
    );
    server.wait_no_connections(Duration::from_secs(3));
    assert!(conference_members(&server).is_empty());
    assert_eq!(server.get("/health")["Calls"], 0);
}

#[test]
fn an_invite_with_replaces_takes_the_replaced_calls_conference_place() {
    let server = Server::start(CONF_ROUTE);
    let mut events = server.events();
    let (alice, ok) = call_in(&server, "conf=room2", "alice2");
    let joined = events.wait_for(Duration::from_secs(3), named("ConferenceJoined"));
    let old_connection = joined["ConnectionId"].as_str().unwrap().to_string();
    let ours = uac::to_tag(&ok);
    let ours = ours.trim_start_matches(";tag=");

    // No such dialog: 481, and nothing changes.
    let stranger = Uac::new(&server, "stranger");
    let bad = stranger
        .request("INVITE", "anything", 1, "", "strangeri", &stranger.sdp("0"))
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nReplaces: nosuch@127.0.0.1;to-tag={ours};from-tag=x\r\n"),
        );
    stranger.send(&bad);
    assert_eq!(uac::status(&stranger.final_response("INVITE")), 481);

    let replaces = format!("{};to-tag={ours};from-tag={}", alice.call_id, alice.tag);
    let pbx = server.sipp_in_background(&[
        "-sf",
        &scenario("uac_replaces.xml"),
        "-s",
        "whoever",
        "-key",
        "replaces",
        &replaces,
        "-m",
        "1",
    ]);
    let changed = events.wait_for_while(&pbx, Duration::from_secs(10), named("CallChanged"));
    let new_connection = changed["ConnectionId"].as_str().unwrap().to_string();
    // The replaced dialog gets BYE; its connection the implicit DeleteConnection.
    answer_request(&alice, "BYE");
    let released = events.wait_for(Duration::from_secs(3), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == old_connection.as_str()
    });
    assert_eq!(released["Reason"], "replaced");
    let members = conference_members(&server);
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(
        members[0].1,
        [new_connection],
        "the newcomer is in room2 alone"
    );

    let (ok, output) = sipp_result(pbx.join().unwrap());
    assert!(ok, "{output}");
    server.wait_no_connections(Duration::from_secs(3));
    assert!(conference_members(&server).is_empty());
    assert_eq!(server.get("/health")["Calls"], 0);
}

#[test]
fn blind_transfer_refers_the_caller_and_success_releases_the_connection() {
    let server = Server::start(APP_ROUTE);
    let mut events = server.events();
    let pbx = server.sipp_in_background(&[
        "-sf",
        &scenario("uac_transferee.xml"),
        "-s",
        "app",
        "-key",
        "target_user",
        "sip:2002@",
        "-m",
        "1",
    ]);
    let incoming = events.wait_for_while(&pbx, Duration::from_secs(5), named("IncomingCall"));
    let call = incoming["CallId"].as_str().unwrap().to_string();
    let (code, body) = call_action(&server, "AnswerCall", json!({"CallId": call}));
    assert_eq!(code, 200, "{body}");
    let connection = body["ConnectionId"].as_str().unwrap().to_string();

    let (code, body) = call_action(
        &server,
        "BlindTransfer",
        json!({"CallId": call, "To": "2002"}),
    );
    assert_eq!(code, 200, "the NOTIFY said 200: {body}");
    let released = events.wait_for(Duration::from_secs(5), |e| {
        e["Event"] == "ConnectionReleased" && e["ConnectionId"] == connection.as_str()
    });
    assert_eq!(released["Reason"], "transferred");
    let (ok, output) = sipp_result(pbx.join().unwrap());
    assert!(
        ok,
        "the PBX got REFER, sent NOTIFY 200 and got BYE: {output}"
    );
    server.wait_no_connections(Duration::from_secs(2));
    assert_eq!(server.get("/health")["Calls"], 0);

    // No such call any more: the action says so.
    let (code, body) = call_action(
        &server,
        "BlindTransfer",
        json!({"CallId": call, "To": "2002"}),
    );
    assert_ne!(code, 200, "{body}");
}

#[test]
fn make_call_without_a_trunk_address_and_bad_parameters_are_refused() {
    let server = Server::start("");
    let (code, body) = call_action(&server, "MakeCall", json!({"To": "1001"}));
    assert_eq!(code, 503);
    assert_eq!(body["ResultCode"], "8", "{body}");
    assert!(body["Error"].as_str().unwrap().contains("trunk"), "{body}");
    let (_, body) = call_action(&server, "MakeCall", json!({}));
    assert_eq!(body["ResultCode"], "26", "To is required: {body}");
    let (_, body) = call_action(
        &server,
        "SendUserInput",
        json!({"CallId": "1", "Digits": "12x"}),
    );
    assert_eq!(body["ResultCode"], "27", "{body}");
    let (_, body) = call_action(&server, "Barge", json!({"From": "1001"}));
    assert_eq!(body["ResultCode"], "8", "{body}");
    let (_, body) = call_action(&server, "BridgeCalls", json!({"CallId": "1"}));
    assert_eq!(body["ResultCode"], "26", "PeerCallId is needed: {body}");
    assert!(server.connections().is_empty());
}
