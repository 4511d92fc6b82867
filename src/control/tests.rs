//! The control core's release paths and party model, in virtual time.
//!
//! Each test drives the core through the harness — SIP text from a peer, API actions, engine
//! events, time — and asserts on what a user would see: the SIP messages on the wire, the
//! events on the stream, the listings; and ends with the harness's leak check.

use std::time::Duration;

use serde_json::Value;

use super::harness::*;
use super::{AttributeChange, CallAction, CodecChoice, ControlRequest, MediaAction, Target};
use crate::control::operations::TermConds;
use crate::engine::EngineEvent;
use crate::sip::message::{Method, SipMessage};

/// An echo call from `user`, answered and acknowledged: the peer's dialog and the connection.
fn answered(h: &mut Harness, user: &str, name: &str) -> (PeerCall, u32) {
    let mut peer = PeerCall::new(user, name);
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    let wire = h.take_wire();
    let ok = response(&wire, 200);
    peer.learn(&ok);
    h.sip_from(PEER, peer.ack());
    let id = connection_of(h, &peer);
    (peer, id)
}

/// The connection bound to the peer's call (from `ConnectionCreated`).
fn connection_of(h: &Harness, peer: &PeerCall) -> u32 {
    let calls = h.events_named("IncomingCall");
    let call_id = calls
        .iter()
        .rev()
        .find(|e| e["To"].as_str().unwrap_or_default().contains(&peer.user))
        .map(|e| e["CallId"].clone())
        .expect("the call was offered");
    let created = h.one_event("ConnectionCreated", |e| e["CallId"] == call_id);
    id(&created["ConnectionId"])
}

fn id(v: &Value) -> u32 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an id: {v}"))
}

/// A listed id (a string) is `n`.
fn same_id(v: &Value, n: u32) -> bool {
    v.as_str().and_then(|s| s.parse::<u32>().ok()) == Some(n)
}

fn released(h: &Harness, connection: u32) -> Value {
    h.one_event("ConnectionReleased", |e| {
        same_id(&e["ConnectionId"], connection)
    })
}

fn delete(connection: Option<u32>, conference: Option<u32>) -> MediaAction {
    MediaAction::Delete {
        connection,
        conference,
    }
}

fn requests_named(wire: &[SipMessage], method: Method) -> usize {
    requests(wire).iter().filter(|r| r.method == method).count()
}

#[test]
fn a_bye_from_the_caller_releases_its_connection_with_the_workers_final_statistics() {
    let mut h = Harness::new();
    let (mut peer, connection) = answered(&mut h, "echo", "bye-in");
    h.take_wire();
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    assert_eq!(statuses(&h.take_wire()), [(200, "BYE".to_string())]);
    let event = released(&h, connection);
    assert_eq!(event["Reason"], "remote-hangup");
    // Not the last 100 ms publication: what the worker counted until it closed.
    assert_eq!(
        event["RtpPacketsReceived"],
        PUBLISHED_RECEIVED + FINAL_EXTRA_RECEIVED
    );
    assert_eq!(event["DN"], "5551001");
    assert_eq!(event["ConnID"].as_str().map(str::len), Some(16));
    assert_eq!(event["ReleasedBy"]["Kind"], "remote");
    assert_eq!(h.core.engine.closed, [u64::from(connection)]);
    h.assert_no_leaks();
}

#[test]
fn after_a_connection_closes_the_engine_is_asked_to_close_idle_sockets_until_none_are_left() {
    let mut h = Harness::new();
    let (mut peer, _) = answered(&mut h, "echo", "idle-sockets");
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    assert_eq!(h.core.engine.idle_socket_checks, 0);
    // One pair still idle after the first check, due 300 ms later; none after the second.
    h.core
        .engine
        .idle_sockets_due
        .push_back(Duration::from_millis(300));
    h.advance(crate::engine::IDLE_SOCKETS_MAX - Duration::from_millis(1));
    assert_eq!(h.core.engine.idle_socket_checks, 0, "not before its time");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.core.engine.idle_socket_checks, 1);
    h.advance(Duration::from_millis(300));
    assert_eq!(h.core.engine.idle_socket_checks, 2);
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.core.engine.idle_socket_checks, 2,
        "none left: not asked again"
    );
    h.assert_no_leaks();
}

#[test]
fn delete_connection_of_a_call_sends_bye_and_names_the_client() {
    let mut h = Harness::new();
    let (_peer, connection) = answered(&mut h, "echo", "bye-out");
    h.take_wire();
    h.action(delete(Some(connection), None)).expect("deleted");
    let wire = h.take_wire();
    assert_eq!(requests_named(&wire, Method::Bye), 1, "{wire:#?}");
    let bye = requests(&wire)[0].clone();
    assert!(
        bye.headers
            .get("Reason")
            .is_some_and(|r| r.contains("cause=16")),
        "{bye:?}"
    );
    let event = released(&h, connection);
    assert_eq!(event["Reason"], "api-request");
    assert_eq!(event["ReleasedBy"]["Kind"], "client");
    assert_eq!(event["ReleasedBy"]["Action"], "DeleteConnection");
    // The far end answers our BYE.
    h.sip_from(
        PEER,
        SipMessage::Response(crate::sip::message::Response::for_request(&bye, 200, "OK")),
    );
    assert!(h.events_named("CallEnded").len() == 1);
    h.assert_no_leaks();
}

#[test]
fn cancel_while_ringing_releases_the_call_as_cancelled() {
    let mut h = Harness::new();
    let peer = PeerCall::new("ring", "cancel");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_002)), ""));
    h.advance(Duration::from_millis(500));
    let connection = connection_of(&h, &peer);
    h.take_wire();
    h.sip_from(PEER, peer.cancel());
    let wire = h.take_wire();
    let got = statuses(&wire);
    assert!(got.contains(&(200, "CANCEL".into())), "{got:?}");
    assert!(got.contains(&(487, "INVITE".into())), "{got:?}");
    assert_eq!(released(&h, connection)["Reason"], "cancelled");
    // The peer acknowledges the 487.
    let mut peer = peer;
    h.sip_from(PEER, peer.ack_failure(&response(&wire, 487)));
    h.assert_no_leaks();
}

#[test]
fn a_missing_ack_ends_the_call_with_bye_at_64_t1() {
    let mut h = Harness::new();
    let peer = PeerCall::new("echo", "no-ack");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_004)), ""));
    let connection = connection_of(&h, &peer);
    h.advance(Duration::from_secs(31));
    assert!(h.events_named("ConnectionReleased").is_empty(), "not yet");
    h.advance(Duration::from_secs(2));
    let wire = h.take_wire();
    assert!(requests_named(&wire, Method::Bye) >= 1, "{wire:#?}");
    assert_eq!(released(&h, connection)["Reason"], "ack-timeout");
    assert_eq!(released(&h, connection)["ReleasedBy"]["Kind"], "system");
    h.assert_no_leaks();
}

#[test]
fn calls_routed_and_calls_answered_are_counted_for_metrics() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "counted");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_008)), ""));
    peer.learn(&response(&h.take_wire(), 200));
    // The 2xx is retransmitted until the ACK; the call is answered once.
    h.advance(Duration::from_secs(2));
    let retransmitted = statuses(&h.take_wire());
    assert!(
        retransmitted.contains(&(200, "INVITE".into())),
        "{retransmitted:?}"
    );
    h.sip_from(PEER, peer.ack());
    // A call routed but refused (its prompt is missing) is routed, not answered.
    h.core.engine.prompts.clear();
    let mut refused = PeerCall::new("hello", "counted-refused");
    h.sip_from(PEER, refused.invite(Some(&pcmu_sdp(30_010)), ""));
    let wire = h.take_wire();
    h.sip_from(PEER, refused.ack_failure(&response(&wire, 404)));
    let status = h.core.status();
    assert_eq!((status.calls_total, status.calls_answered_total), (2, 1));
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    assert_eq!(h.core.status().calls_answered_total, 1);
    h.assert_no_leaks();
}

#[test]
fn an_invite_that_cannot_be_served_is_refused_and_its_connection_released() {
    let mut h = Harness::new();
    h.core.engine.prompts.clear();
    let mut peer = PeerCall::new("hello", "no-prompt");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_006)), ""));
    let wire = h.take_wire();
    let refused = response(&wire, 404);
    let connection = connection_of(&h, &peer);
    assert_eq!(released(&h, connection)["Reason"], "invite-failed");
    h.sip_from(PEER, peer.ack_failure(&refused));
    h.assert_no_leaks();
}

/// ReserveConnection: the reserved connection.
fn reserve(h: &mut Harness) -> u32 {
    let result = h
        .action(MediaAction::Reserve {
            rx_codec: None,
            tx_codec: None,
            requester: "127.0.0.9".parse().unwrap(),
        })
        .expect("reserved");
    id(&result["ConnectionId"])
}

#[test]
fn an_uncompleted_reservation_expires() {
    let mut h = Harness::new();
    let connection = reserve(&mut h);
    h.advance(Duration::from_secs(29));
    assert!(h.events_named("ConnectionReleased").is_empty());
    h.advance(Duration::from_secs(2));
    let event = released(&h, connection);
    assert_eq!(event["Reason"], "reserve-timeout");
    // An application's connection is no party of any call.
    assert!(event.get("ConnID").is_none());
    h.assert_no_leaks();
}

#[test]
fn a_completed_reservation_does_not_expire() {
    let mut h = Harness::new();
    let connection = reserve(&mut h);
    h.action(MediaAction::Create {
        connection: Some(connection),
        tx: "127.0.0.9:7000".parse().unwrap(),
        codecs: CodecChoice::default(),
        requester: "127.0.0.9".parse().unwrap(),
    })
    .expect("created");
    h.advance(Duration::from_secs(60));
    assert!(h.events_named("ConnectionReleased").is_empty());
    h.action(delete(Some(connection), None)).expect("deleted");
    h.assert_no_leaks();
}

#[test]
fn rtp_timeout_hangs_up_the_call() {
    let mut h = Harness::new();
    let (_peer, connection) = answered(&mut h, "echo", "rtp-timeout");
    h.take_wire();
    h.engine_event(EngineEvent::RtpTimeout {
        key: u64::from(connection),
    });
    assert_eq!(requests_named(&h.take_wire(), Method::Bye), 1);
    let event = released(&h, connection);
    assert_eq!(event["Reason"], "rtp-timeout");
    assert_eq!(event["ReleasedBy"]["Kind"], "system");
    h.assert_no_leaks();
}

#[test]
fn a_session_not_refreshed_in_time_expires() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("echo", "session");
    h.sip_from(
        PEER,
        peer.invite(
            Some(&pcmu_sdp(30_008)),
            "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        ),
    );
    peer.learn(&response(&h.take_wire(), 200));
    h.sip_from(PEER, peer.ack());
    let connection = connection_of(&h, &peer);
    // RFC 4028 §10: the BYE goes a third of the interval (at most 32 s) before it ends.
    h.advance(Duration::from_secs(59));
    assert!(h.events_named("ConnectionReleased").is_empty());
    h.advance(Duration::from_secs(2));
    assert!(requests_named(&h.take_wire(), Method::Bye) >= 1);
    assert_eq!(released(&h, connection)["Reason"], "session-expired");
    h.assert_no_leaks();
}

/// Three callers in room `sales`: their connections and the conference.
fn three_in_a_room(h: &mut Harness) -> (Vec<u32>, u32) {
    let (_, members, conference) = three_peers_in_a_room(h);
    (members, conference)
}

/// Three callers in room `sales`: their dialogs, their connections and the conference.
fn three_peers_in_a_room(h: &mut Harness) -> (Vec<PeerCall>, Vec<u32>, u32) {
    let mut peers = Vec::new();
    let mut members = Vec::new();
    for name in ["c1", "c2", "c3"] {
        let (peer, connection) = answered(h, "conf=sales", name);
        peers.push(peer);
        members.push(connection);
    }
    let created = h.one_event("ConferenceCreated", |_| true);
    (peers, members, id(&created["ConferenceId"]))
}

#[test]
fn delete_connection_with_only_a_connection_id_leaves_the_conference_and_releases() {
    let mut h = Harness::new();
    let (members, conference) = three_in_a_room(&mut h);
    let conn_id = h.core.model.conn_id_of(members[0]).expect("a party");
    assert_eq!(
        h.core.model.call(conn_id).map(|c| c.state()),
        Some(super::party::CallState::Conferenced)
    );
    h.action(delete(Some(members[2]), None)).expect("deleted");
    let event = released(&h, members[2]);
    assert_eq!(event["ConferenceId"], conference.to_string());
    assert_eq!(event["ConnID"], conn_id.to_string());
    let left = h.one_event("ConferenceLeft", |e| {
        same_id(&e["ConnectionId"], members[2])
    });
    assert_eq!(left["Reason"], "api-request");
    // Two parties remain: the call is no longer conferenced (seed 05).
    assert_eq!(
        h.core.model.call(conn_id).map(|c| c.state()),
        Some(super::party::CallState::Ok)
    );
    for &m in &members[..2] {
        h.action(delete(Some(m), None)).expect("deleted");
    }
    h.one_event("ConferenceReleased", |e| {
        e["Reason"] == "last-connection-left"
    });
    h.assert_no_leaks();
}

#[test]
fn delete_connection_with_only_a_conference_id_releases_every_member() {
    let mut h = Harness::new();
    let (members, conference) = three_in_a_room(&mut h);
    h.take_wire();
    h.action(delete(None, Some(conference))).expect("deleted");
    assert_eq!(requests_named(&h.take_wire(), Method::Bye), 3);
    for &m in &members {
        assert_eq!(released(&h, m)["Reason"], "conference-released");
    }
    // Every member's release is on the stream before the conference's.
    let names = h.event_names();
    let last_release = names
        .iter()
        .rposition(|n| n == "ConnectionReleased")
        .unwrap();
    let gone = names
        .iter()
        .position(|n| n == "ConferenceReleased")
        .unwrap();
    assert!(last_release < gone, "{names:?}");
    h.assert_no_leaks();
}

#[test]
fn delete_connection_with_both_ids_takes_the_connection_out_and_keeps_it() {
    let mut h = Harness::new();
    let (members, conference) = three_in_a_room(&mut h);
    let room_call = h.core.model.conn_id_of(members[0]).unwrap();
    h.action(delete(Some(members[1]), Some(conference)))
        .expect("left");
    assert!(h.events_named("ConnectionReleased").is_empty());
    h.one_event("ConferenceLeft", |e| {
        same_id(&e["ConnectionId"], members[1])
    });
    // It goes on in a call of its own, the room's ConnID as its previous one.
    let own = h.core.model.conn_id_of(members[1]).unwrap();
    assert_ne!(own, room_call);
    assert_eq!(
        h.core.model.party(members[1]).and_then(|p| p.previous),
        Some(room_call)
    );
    h.action(delete(None, Some(conference))).expect("released");
    h.action(delete(Some(members[1]), None)).expect("deleted");
    h.assert_no_leaks();
}

#[test]
fn a_conference_goes_with_its_last_member() {
    let mut h = Harness::new();
    let (members, conference) = three_in_a_room(&mut h);
    let mut peers = Vec::new();
    for m in &members {
        peers.push(*m);
    }
    for m in peers {
        h.engine_event(EngineEvent::RtpTimeout { key: u64::from(m) });
    }
    let gone = h.one_event("ConferenceReleased", |_| true);
    assert_eq!(gone["ConferenceId"], conference.to_string());
    assert_eq!(gone["Reason"], "last-connection-left");
    assert!(h.core.engine.conferences.is_empty());
    h.assert_no_leaks();
}

#[test]
fn operations_end_with_autostop_when_their_connection_is_released() {
    let mut h = Harness::new();
    let (mut peer, connection) = answered(&mut h, "echo", "autostop");
    h.action(MediaAction::GatherDigits {
        connection,
        conds: TermConds {
            max_digits: Some(4),
            max_time: Some(Duration::from_secs(30)),
            ..TermConds::default()
        },
        state: Some("menu".into()),
    })
    .expect("gathering");
    h.action(MediaAction::Play(super::PlayRequest::prompt(
        Target::Connection(connection),
        "hello.wav",
    )))
    .expect("playing");
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    let gathered = h.one_event("GatherDigits_Complete", |_| true);
    assert_eq!(gathered["TerminationCondition"], "autostop");
    assert_eq!(gathered["State"], "menu");
    let played = h.one_event("Play_Complete", |_| true);
    assert_eq!(played["TerminationCondition"], "autostop");
    // The completions come before the release.
    let names = h.event_names();
    let done = names.iter().position(|n| n == "Play_Complete").unwrap();
    let gone = names
        .iter()
        .position(|n| n == "ConnectionReleased")
        .unwrap();
    assert!(done < gone, "{names:?}");
    h.assert_no_leaks();
}

#[test]
fn an_operations_maxtime_fires_on_its_timer() {
    let mut h = Harness::new();
    let (_peer, connection) = answered(&mut h, "echo", "maxtime");
    h.action(MediaAction::GatherDigits {
        connection,
        conds: TermConds {
            max_time: Some(Duration::from_secs(5)),
            ..TermConds::default()
        },
        state: None,
    })
    .expect("gathering");
    h.advance(Duration::from_millis(4_900));
    assert!(h.events_named("GatherDigits_Complete").is_empty());
    h.advance(Duration::from_millis(200));
    let done = h.one_event("GatherDigits_Complete", |_| true);
    assert_eq!(done["TerminationCondition"], "maxtime");
    h.action(delete(Some(connection), None)).expect("deleted");
    h.assert_no_leaks();
}

#[test]
fn a_lost_closed_event_still_releases_with_the_published_statistics() {
    let mut h = Harness::new();
    h.core.engine.lose_closed = true;
    let (mut peer, connection) = answered(&mut h, "echo", "lost-closed");
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    // Later events wait behind the owed release ...
    h.engine_event(EngineEvent::Talker {
        conference: 9,
        key: 9,
        talking: true,
    });
    assert!(h.events_named("ConnectionReleased").is_empty());
    assert!(h.events_named("TalkerStarted").is_empty());
    // ... until the wait for the final statistics runs out.
    h.advance(Duration::from_secs(1));
    let event = released(&h, connection);
    assert_eq!(event["RtpPacketsReceived"], PUBLISHED_RECEIVED);
    let names = h.event_names();
    let gone = names
        .iter()
        .position(|n| n == "ConnectionReleased")
        .unwrap();
    let talker = names.iter().position(|n| n == "TalkerStarted").unwrap();
    assert!(gone < talker, "{names:?}");
    h.assert_no_leaks();
}

#[test]
fn hold_and_retrieve_are_party_state_changes_by_the_remote_party() {
    let mut h = Harness::new();
    let (mut peer, connection) = answered(&mut h, "echo", "hold");
    let held = peer.reinvite(&sdp_with(30_000, "sendonly"));
    h.sip_from(PEER, held);
    peer.learn(&response(&h.take_wire(), 200));
    h.sip_from(PEER, peer.ack());
    let state = |h: &Harness| h.core.model.party(connection).map(|p| p.state);
    assert_eq!(state(&h), Some(super::party::PartyState::Held));
    h.sip_from(PEER, peer.reinvite(&pcmu_sdp(30_000)));
    h.take_wire();
    h.sip_from(PEER, peer.ack());
    assert_eq!(state(&h), Some(super::party::PartyState::Established));
    let calls = h.list(ControlRequest::ListCalls);
    let call = &calls["Calls"][0];
    assert_eq!(call["DN"], "5551001");
    assert_eq!(call["Parties"][0]["State"], "established");
    let changes: Vec<&str> = calls["CallModel"][0]["Changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Change"].as_str().unwrap())
        .collect();
    assert_eq!(
        changes,
        ["created", "established", "held", "retrieved"],
        "{calls:#}"
    );
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.assert_no_leaks();
}

#[test]
fn an_invite_with_replaces_takes_the_calls_place_in_its_conference() {
    let mut h = Harness::new();
    let (peers, members, conference) = three_peers_in_a_room(&mut h);
    let room_call = h.core.model.conn_id_of(members[0]).unwrap();
    // The replaced dialog: its Call-ID, our tag, the peer's tag.
    let old_peer = &peers[1];
    let replaces = format!(
        "Replaces: {};to-tag={};from-tag=peer-c2\r\n",
        old_peer.call_id,
        old_peer.to_tag.as_deref().expect("a confirmed dialog")
    );
    let mut new_peer = PeerCall::new("conf=sales", "c4").with_dn("5552002");
    h.take_wire();
    h.sip_from(PEER, new_peer.invite(Some(&pcmu_sdp(30_010)), &replaces));
    let wire = h.take_wire();
    new_peer.learn(&response(&wire, 200));
    assert_eq!(requests_named(&wire, Method::Bye), 1, "the old dialog ends");
    h.sip_from(PEER, new_peer.ack());
    let changed = h.one_event("CallChanged", |_| true);
    let new_connection = id(&changed["ConnectionId"]);
    let event = released(&h, members[1]);
    assert_eq!(event["Reason"], "replaced");
    assert_eq!(event["ReleasedBy"]["Kind"], "party");
    assert!(same_id(
        &event["ReleasedBy"]["ConnectionId"],
        new_connection
    ));
    // The new party is in the room's call, in the old one's place.
    assert_eq!(h.core.model.conn_id_of(new_connection), Some(room_call));
    assert_eq!(
        h.core.conferences[&conference].members.len(),
        3,
        "still three in the room"
    );
    h.action(delete(None, Some(conference))).expect("released");
    h.assert_no_leaks();
}

#[test]
fn a_refer_places_the_transfer_and_the_new_call_takes_the_old_ones_place() {
    let mut h = Harness::new();
    let (mut peers, members, conference) = three_peers_in_a_room(&mut h);
    let room_call = h.core.model.conn_id_of(members[2]).unwrap();
    let mut transferor = peers.pop().expect("three peers");
    h.take_wire();
    h.sip_from(
        PEER,
        transferor.in_dialog("REFER", "Refer-To: <sip:7002@127.0.0.3>\r\n"),
    );
    let wire = h.take_wire();
    assert!(
        statuses(&wire).contains(&(202, "REFER".into())),
        "{wire:#?}"
    );
    // The target answers.
    answer_trunk_invite(&mut h, &wire, "7002");
    let changed = h.one_event("CallChanged", |_| true);
    let new_connection = id(&changed["ConnectionId"]);
    // The transferred party is in the room's call; the transferor hangs up.
    assert_eq!(h.core.model.conn_id_of(new_connection), Some(room_call));
    let party = h.core.model.party(new_connection).unwrap().clone();
    assert_eq!(party.dn, "7002");
    assert!(party.previous.is_some() && party.previous != Some(room_call));
    h.sip_from(PEER, transferor.in_dialog("BYE", ""));
    let event = released(&h, members[2]);
    assert_eq!(event["Reason"], "transferred");
    assert_eq!(event["ReleasedBy"]["Kind"], "remote");
    h.action(delete(None, Some(conference))).expect("released");
    // The target answers our BYE.
    answer_trunk_byes(&mut h);
    h.assert_no_leaks();
}

#[test]
fn conferee_attributes_and_joins_by_the_api_are_party_changes_by_the_client() {
    let mut h = Harness::new();
    let (_p1, a) = answered(&mut h, "echo", "api1");
    let (_p2, b) = answered(&mut h, "echo", "api2");
    let call_b = h.core.model.conn_id_of(b).unwrap();
    let created = h.action(create_conference(a)).expect("created");
    let conference = id(&created["ConferenceId"]);
    h.action(join_conference(b, conference)).expect("joined");
    let room = h.core.model.conn_id_of(a).unwrap();
    assert_eq!(h.core.model.conn_id_of(b), Some(room));
    let party = h.core.model.party(b).unwrap();
    assert_eq!(party.previous, Some(call_b));
    let joined = h
        .core
        .model
        .call(room)
        .unwrap()
        .changes
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        joined.by,
        super::party::Actor::Client {
            action: "JoinConference".into()
        }
    );
    h.action(MediaAction::SetConfereeAttribute {
        connection: b,
        conference,
        change: AttributeChange {
            mute: Some(true),
            ..AttributeChange::default()
        },
    })
    .expect("muted");
    h.call_action(CallAction::Hangup {
        call: h.core.connections[&a].call.unwrap(),
    })
    .expect("hung up");
    let event = released(&h, a);
    assert_eq!(event["ReleasedBy"]["Action"], "Hangup");
    h.action(delete(Some(b), None)).expect("deleted");
    h.assert_no_leaks();
}

#[test]
fn a_call_we_place_is_a_destination_party_that_dials_rings_and_is_cancelled_at_ringout() {
    let mut h = Harness::new();
    let placed = h.call_action(make_call("7002")).expect("placed");
    let connection = id(&placed["ConnectionId"]);
    let party = |h: &Harness| h.core.model.party(connection).cloned().expect("a party");
    assert_eq!(party(&h).role, super::party::Role::Destination);
    assert_eq!(party(&h).state, super::party::PartyState::Dialing);
    assert_eq!(party(&h).dn, "7002");
    let wire = h.take_wire();
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("the INVITE to the trunk")
        .clone();
    trunk_rings(&mut h, &invite);
    assert_eq!(party(&h).state, super::party::PartyState::Ringing);
    // Nobody answers: at the ring timeout the call is cancelled.
    h.advance(Duration::from_secs(60));
    let wire = h.take_wire();
    trunk_accepts_cancel(&mut h, &wire, &invite);
    let failed = h.one_event("MakeCall_Failed", |_| true);
    assert_eq!(failed["EndReason"], "Ringout");
    let event = released(&h, connection);
    assert_eq!(event["DN"], "7002");
    assert_eq!(event["ReleasedBy"]["Kind"], "system");
    h.assert_no_leaks();
}

// --- The CTI view (T-Library events, seed 05, vendor-apis.md §3) ---

use super::party::ConnId;
use super::CtiRequest;

/// An answered call from DN `dn` (its P-Asserted-Identity) to `user`.
fn answered_as(h: &mut Harness, user: &str, name: &str, dn: &str) -> (PeerCall, u32) {
    let mut peer = PeerCall::new(user, name).with_dn(dn);
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    let ok = response(&h.take_wire(), 200);
    peer.learn(&ok);
    h.sip_from(PEER, peer.ack());
    let connection = connection_of(h, &peer);
    (peer, connection)
}

/// A call from `dn` offered to the applications (route `app`): the caller's dialog and the
/// call's id from `IncomingCall`.
fn offered_app_call(h: &mut Harness, name: &str, dn: &str) -> (PeerCall, crate::sip::ua::CallId) {
    let peer = PeerCall::new("app", name).with_dn(dn);
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    let offered = h.one_event("IncomingCall", |_| true);
    let call = offered["CallId"].as_str().unwrap().parse().unwrap();
    (peer, call)
}

/// A, B and C (DNs 1001, 1002, 1003) in room `sales`; the CTI events so far are taken.
fn room_of_three(h: &mut Harness) -> (Vec<PeerCall>, Vec<u32>, ConnId) {
    let mut peers = Vec::new();
    let mut members = Vec::new();
    for (name, dn) in [("a", "1001"), ("b", "1002"), ("c", "1003")] {
        let (peer, connection) = answered_as(h, "conf=sales", name, dn);
        peers.push(peer);
        members.push(connection);
    }
    let conn_id = h.core.model.conn_id_of(members[0]).expect("a party");
    h.take_cti();
    (peers, members, conn_id)
}

/// The one CTI event named `name` for `dn`.
fn cti_for(events: &[Value], name: &str, dn: &str) -> Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["Event"] == name && e["ThisDN"] == dn)
        .collect();
    assert_eq!(found.len(), 1, "one {name} for {dn}: {events:#?}");
    found[0].clone()
}

/// The one CTI event named `name` for `dn` in the call `conn_id`.
fn cti_in(events: &[Value], name: &str, dn: &str, conn_id: ConnId) -> Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["Event"] == name && e["ThisDN"] == dn && e["ConnID"] == conn_id.to_string())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} for {dn} in {conn_id}: {events:#?}"
    );
    found[0].clone()
}

/// The ConnIDs other than `conn_id` in which `dn` got a `name` event.
fn cti_elsewhere(events: &[Value], name: &str, dn: &str, conn_id: ConnId) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["Event"] == name && e["ThisDN"] == dn && e["ConnID"] != conn_id.to_string())
        .cloned()
        .collect()
}

/// The attributes of a CTI event that seed 05's tables name.
fn attributes(e: &Value) -> Vec<(String, String)> {
    [
        "Event",
        "ThisDN",
        "OtherDN",
        "OtherDNRole",
        "ThirdPartyDN",
        "ThirdPartyDNRole",
        "CallState",
    ]
    .iter()
    .filter_map(|k| {
        e.get(*k)
            .map(|v| (k.to_string(), v.as_str().unwrap_or("").to_string()))
    })
    .collect()
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cti_a_call_in_dials_rings_and_is_established_on_both_dns() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("ring", "cti-in").with_dn("5552000");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    let events = h.take_cti();
    let dialing = cti_for(&events, "EventDialing", "5552000");
    assert_eq!(dialing["ThisDNRole"], "Origination");
    assert_eq!(dialing["OtherDN"], "ring");
    let ringing = cti_for(&events, "EventRinging", "ring");
    assert_eq!(
        attributes(&ringing),
        expect(&[
            ("Event", "EventRinging"),
            ("ThisDN", "ring"),
            ("OtherDN", "5552000"),
            ("OtherDNRole", "Origination"),
            ("CallState", "OK"),
        ])
    );
    assert_eq!(ringing["ThisDNRole"], "Destination");
    assert_eq!(ringing["ConnID"], dialing["ConnID"]);
    assert!(ringing["Time"].as_str().unwrap().ends_with('Z'));
    h.advance(Duration::from_secs(2));
    peer.learn(&response(&h.take_wire(), 200));
    h.sip_from(PEER, peer.ack());
    let events = h.take_cti();
    cti_for(&events, "EventEstablished", "5552000");
    cti_for(&events, "EventEstablished", "ring");
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.assert_no_leaks();
}

/// An application that hangs up a call offered to it (no answer yet): the caller gets 480, and
/// the CTI clients see the call end — the ringing party is not left in the call model.
#[test]
fn cti_an_application_that_hangs_up_an_offered_call_releases_it() {
    let mut h = Harness::new();
    let (mut peer, call) = offered_app_call(&mut h, "cti-app-hangup", "5552003");
    h.take_cti();
    h.call_action(CallAction::Hangup { call }).expect("hung up");
    let events = h.take_cti();
    let caller = cti_for(&events, "EventReleased", "5552003");
    assert_eq!(caller["OtherDN"], "app");
    let called = cti_for(&events, "EventReleased", "app");
    assert_eq!(called["Cause"], 16);
    // And the application's stream ends the call as for one with a connection.
    let ended = h.one_event("CallEnded", |_| true);
    assert_eq!(ended["CallId"], call.to_string());
    assert_eq!(ended["Reason"], "api-request");
    let wire = h.take_wire();
    h.sip_from(PEER, peer.ack_failure(&response(&wire, 480)));
    h.assert_no_leaks();
}

/// A conference an application makes of calls to a route (CreateConference, JoinConference):
/// each call's route stops being a party of it — it is released (its other DN the caller),
/// and a caller that stays in the call is told the route was deleted — so no CTI client is
/// left with a route in a call it has left. Deleting the whole conference then releases each
/// member once, from a conference: the others are told it was deleted.
#[test]
fn cti_an_application_conference_releases_the_routes_then_each_member_once() {
    let mut h = Harness::new();
    let (_p1, a) = answered_as(&mut h, "echo", "whole1", "1001");
    let (_p2, b) = answered_as(&mut h, "echo", "whole2", "1002");
    let (_p3, c) = answered_as(&mut h, "echo", "whole3", "1003");
    let room = h.core.model.conn_id_of(a).unwrap();
    let call_b = h.core.model.conn_id_of(b).unwrap();
    h.take_cti();
    let created = h.action(create_conference(a)).expect("created");
    let conference = id(&created["ConferenceId"]);
    let events = h.take_cti();
    let route = cti_in(&events, "EventReleased", "echo", room);
    assert_eq!(route["OtherDN"], "1001");
    assert_eq!(route["Cause"], 16);
    let told = cti_in(&events, "EventPartyDeleted", "1001", room);
    assert_eq!(told["OtherDN"], "echo");
    assert_eq!(told["OtherDNRole"], "DeletedParty");
    assert_eq!(events.len(), 2, "{events:#?}");

    for m in [b, c] {
        h.action(join_conference(m, conference)).expect("joined");
    }
    let events = h.take_cti();
    // 1002's call is over for its route; 1002 goes on in the room.
    assert_eq!(
        cti_in(&events, "EventReleased", "echo", call_b)["OtherDN"],
        "1002"
    );
    assert_eq!(
        cti_in(&events, "EventPartyChanged", "1002", room)["PreviousConnID"],
        call_b.to_string()
    );

    h.action(delete(None, Some(conference))).expect("released");
    let events = h.take_cti();
    for dn in ["1001", "1002", "1003"] {
        assert_eq!(cti_in(&events, "EventReleased", dn, room)["Cause"], 16);
    }
    assert!(events.iter().all(|e| e["ThisDN"] != "echo"), "{events:#?}");
    // The first out is deleted from two views, the second from one.
    let deleted = events
        .iter()
        .filter(|e| e["Event"] == "EventPartyDeleted")
        .count();
    assert_eq!((deleted, events.len()), (3, 6), "{events:#?}");
    h.assert_no_leaks();
}

/// A call we place that is hung up before the destination rings: the calling DN is released;
/// the destination, never told of the call, is told nothing of its end either.
#[test]
fn cti_a_placed_call_hung_up_before_it_rings_tells_the_destination_nothing() {
    let mut h = Harness::new();
    let placed = h.call_action(make_call("7002")).expect("placed");
    let call = placed["CallId"].as_str().unwrap().parse().unwrap();
    h.call_action(CallAction::Hangup { call }).expect("hung up");
    let events = h.take_cti();
    assert!(events.iter().all(|e| e["ThisDN"] != "7002"), "{events:#?}");
    assert_eq!(
        cti_for(&events, "EventReleased", "callbridge")["OtherDN"],
        "7002"
    );
    h.advance(Duration::from_secs(64));
    h.assert_no_leaks();
}

/// A Play to a conference makes the conference a connection of its own for the prompt; that
/// connection is no caller: joining it to a conference, its own or another, is refused (it
/// was taken as a member with no party, which outlived the conference in the call model), and
/// so are gathering its digits and listening for its silence (their completions came after
/// the connection had gone with its prompt).
#[test]
fn a_conference_connection_of_a_play_is_no_caller() {
    let mut h = Harness::new();
    let (_p, a) = answered(&mut h, "echo", "leg-join");
    let created = h.action(create_conference(a)).expect("created");
    let conference = id(&created["ConferenceId"]);
    let played = h
        .action(MediaAction::Play(super::PlayRequest::prompt(
            Target::Conference(conference),
            "hello.wav",
        )))
        .expect("playing");
    let leg = id(&played["ConnectionId"]);
    for make in [join_conference(leg, conference), create_conference(leg)] {
        let refused = h.action(make).expect_err("refused");
        assert_eq!(
            refused.code,
            super::ResultCode::AlreadyConnected,
            "{refused:?}"
        );
    }
    for make in [
        MediaAction::GatherDigits {
            connection: leg,
            conds: TermConds::default(),
            state: None,
        },
        MediaAction::DetectEnergy {
            connection: leg,
            silence: false,
            needed: Duration::from_secs(2),
            command_timeout: None,
            state: None,
        },
    ] {
        let refused = h.action(make).expect_err("refused");
        assert_eq!(
            refused.code,
            super::ResultCode::TermCondition,
            "{refused:?}"
        );
    }
    h.action(delete(None, Some(conference))).expect("released");
    h.assert_no_leaks();
}

/// A caller to a route transfers its call (REFER) and hangs up before the target answers:
/// nobody has taken its place, so the call is over for the route as well — the route is
/// released with it, not left in a call that no longer exists.
#[test]
fn cti_a_caller_who_transfers_and_hangs_up_first_leaves_no_route_behind() {
    let mut h = Harness::new();
    let (mut peer, _connection) = answered_as(&mut h, "echo", "refer-bye", "5552100");
    h.take_cti();
    h.take_wire();
    h.sip_from(
        PEER,
        peer.in_dialog("REFER", "Refer-To: <sip:7002@127.0.0.3>\r\n"),
    );
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    let events = h.take_cti();
    let caller = cti_for(&events, "EventReleased", "5552100");
    assert_eq!(caller["CallState"], "Transferred");
    let route = cti_for(&events, "EventReleased", "echo");
    assert_eq!(route["OtherDN"], "5552100");
    assert_eq!(route["ConnID"], caller["ConnID"]);
    h.advance(Duration::from_secs(64));
    h.assert_no_leaks();
}

/// An offered call accepted with early media has its connection before the answer. The
/// application's Hangup releases that connection with the call (it stayed, with its port, until
/// the application deleted it); and once released by DeleteConnection, a late AnswerCall
/// gives the ended call no connection again.
#[test]
fn an_early_media_call_hung_up_or_released_before_its_answer_keeps_no_connection() {
    for hang_up in [true, false] {
        let mut h = Harness::new();
        let (mut peer, call) = offered_app_call(&mut h, "early-end", "5552300");
        h.call_action(CallAction::Accept {
            call,
            early_media: true,
        })
        .expect("accepted");
        let connection = *h.core.call_connections.get(&call).expect("early media");
        if hang_up {
            h.call_action(CallAction::Hangup { call }).expect("hung up");
        } else {
            h.action(delete(Some(connection), None)).expect("deleted");
            let _ = h.call_action(CallAction::Answer {
                call,
                conference: None,
            });
        }
        assert!(h.core.connections.is_empty(), "hang up {hang_up}");
        assert_eq!(h.events_named("CallEnded").len(), 1, "hang up {hang_up}");
        assert_eq!(
            h.events_named("ConnectionCreated").len(),
            1,
            "hang up {hang_up}"
        );
        let wire = h.take_wire();
        h.sip_from(PEER, peer.ack_failure(&response(&wire, 480)));
        h.assert_no_leaks();
    }
}

/// A BlindTransfer waits for its outcome; when the call is released meanwhile (here by
/// DeleteConnection) it is answered then, and the REFER's late timeout reports nothing about
/// a call that is gone.
#[test]
fn a_blind_transfer_whose_call_is_released_is_answered_then_and_reports_nothing_later() {
    let mut h = Harness::new();
    let (_peer, connection) = answered(&mut h, "echo", "xfer-released");
    let call = h.core.connections[&connection].call.unwrap();
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    h.input(super::Input::Request(ControlRequest::Call(
        CallAction::BlindTransfer {
            call,
            to: "7200".into(),
        },
        reply,
    )));
    assert!(answer.try_recv().is_err(), "it waits for the outcome");
    h.action(delete(Some(connection), None)).expect("deleted");
    let outcome = answer.try_recv().expect("answered at the release");
    assert!(outcome.is_err(), "{outcome:?}");
    h.advance(Duration::from_secs(64));
    assert!(h.events_named("TransferFailed").is_empty());
    h.assert_no_leaks();
}

#[test]
fn cti_a_caller_who_hangs_up_while_ringing_abandons_the_call() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("ring", "cti-abandon").with_dn("5552001");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    h.take_cti();
    h.sip_from(PEER, peer.cancel());
    let events = h.take_cti();
    let released = cti_for(&events, "EventReleased", "5552001");
    assert_eq!(released["Cause"], 16);
    let abandoned = cti_for(&events, "EventAbandoned", "ring");
    assert_eq!(abandoned["OtherDN"], "5552001");
    assert_eq!(abandoned["CallState"], "OK");
    let wire = h.take_wire();
    h.sip_from(PEER, peer.ack_failure(&response(&wire, 487)));
    h.assert_no_leaks();
}

/// Seed 05, "Release phase": both parties of a two-party call get EventReleased, CallState OK,
/// whatever ends it; the Cause says why.
#[test]
fn cti_release_phase_holds_for_every_trigger() {
    type Trigger = fn(&mut Harness, &mut PeerCall, u32, ConnId);
    let triggers: [(&str, Trigger, u8); 5] = [
        (
            "SIP BYE",
            |h, peer, _, _| h.sip_from(PEER, peer.in_dialog("BYE", "")),
            16,
        ),
        (
            "Hangup",
            |h, _, connection, _| {
                let call = h.core.connections[&connection].call.unwrap();
                h.call_action(CallAction::Hangup { call }).expect("hung up");
            },
            16,
        ),
        (
            "DeleteConnection",
            |h, _, connection, _| {
                h.action(delete(Some(connection), None)).expect("deleted");
            },
            16,
        ),
        (
            "RequestReleaseCall",
            |h, _, _, conn_id| {
                h.cti_request(
                    CtiRequest::ReleaseCall {
                        this_dn: "5553000".into(),
                        conn_id,
                    },
                    42,
                )
                .expect("released");
            },
            16,
        ),
        (
            "RTP timeout",
            |h, _, connection, _| {
                h.engine_event(EngineEvent::RtpTimeout {
                    key: u64::from(connection),
                })
            },
            41,
        ),
    ];
    for (what, trigger, cause) in triggers {
        let mut h = Harness::new();
        let (mut peer, connection) = answered_as(&mut h, "echo", "release", "5553000");
        let conn_id = h.core.model.conn_id_of(connection).unwrap();
        h.take_cti();
        trigger(&mut h, &mut peer, connection, conn_id);
        let events = h.take_cti();
        assert_eq!(events.len(), 2, "{what}: {events:#?}");
        let a = cti_for(&events, "EventReleased", "5553000");
        let b = cti_for(&events, "EventReleased", "echo");
        assert_eq!(
            attributes(&a),
            expect(&[
                ("Event", "EventReleased"),
                ("ThisDN", "5553000"),
                ("OtherDN", "echo"),
                ("OtherDNRole", "Destination"),
                ("CallState", "OK"),
            ]),
            "{what}"
        );
        assert_eq!(b["OtherDN"], "5553000", "{what}");
        assert_eq!(b["CallState"], "OK", "{what}");
        for e in [&a, &b] {
            assert_eq!(e["ConnID"], conn_id.to_string(), "{what}");
            assert_eq!(e["Cause"], cause, "{what}");
        }
        if what == "RequestReleaseCall" {
            assert_eq!(a["ReferenceID"], 42);
        } else {
            assert!(a.get("ReferenceID").is_none(), "{what}");
        }
        h.assert_no_leaks();
    }
}

/// Seed 05, "Release from conference": B releases itself from A+B+C; A and C are told B was
/// deleted by B; B is released. CallState OK with two parties left, Conferenced with more.
#[test]
fn cti_release_from_conference_holds_for_every_trigger() {
    type Trigger = fn(&mut Harness, &mut PeerCall, u32, ConnId);
    let triggers: [(&str, Trigger); 4] = [
        ("SIP BYE", |h, peer, _, _| {
            h.sip_from(PEER, peer.in_dialog("BYE", ""))
        }),
        ("Hangup", |h, _, b, _| {
            let call = h.core.connections[&b].call.unwrap();
            h.call_action(CallAction::Hangup { call }).expect("hung up");
        }),
        ("DeleteConnection", |h, _, b, _| {
            h.action(delete(Some(b), None)).expect("deleted");
        }),
        ("RequestReleaseCall", |h, _, _, conn_id| {
            h.cti_request(
                CtiRequest::ReleaseCall {
                    this_dn: "1002".into(),
                    conn_id,
                },
                7,
            )
            .expect("released");
        }),
    ];
    for (what, trigger) in triggers {
        let mut h = Harness::new();
        let (mut peers, members, conn_id) = room_of_three(&mut h);
        trigger(&mut h, &mut peers[1], members[1], conn_id);
        let events = h.take_cti();
        assert_eq!(events.len(), 3, "{what}: {events:#?}");
        let released = cti_for(&events, "EventReleased", "1002");
        assert_eq!(
            attributes(&released),
            expect(&[
                ("Event", "EventReleased"),
                ("ThisDN", "1002"),
                ("CallState", "OK")
            ]),
            "{what}"
        );
        for dn in ["1001", "1003"] {
            let deleted = cti_for(&events, "EventPartyDeleted", dn);
            assert_eq!(
                attributes(&deleted),
                expect(&[
                    ("Event", "EventPartyDeleted"),
                    ("ThisDN", dn),
                    ("OtherDN", "1002"),
                    ("OtherDNRole", "DeletedParty"),
                    ("ThirdPartyDN", "1002"),
                    ("ThirdPartyDNRole", "DeletedBy"),
                    ("CallState", "OK"),
                ]),
                "{what}"
            );
            assert_eq!(deleted["ConnID"], conn_id.to_string());
        }
        h.action(delete(
            None,
            Some(id(
                &h.one_event("ConferenceCreated", |_| true)["ConferenceId"]
            )),
        ))
        .expect("released");
        h.assert_no_leaks();
    }
}

#[test]
fn cti_conferenced_while_more_than_two_parties_remain() {
    let mut h = Harness::new();
    let (mut peers, members, _) = room_of_three(&mut h);
    let (_, d) = answered_as(&mut h, "conf=sales", "d", "1004");
    h.take_cti();
    h.sip_from(PEER, peers[1].in_dialog("BYE", ""));
    let events = h.take_cti();
    for dn in ["1001", "1003", "1004"] {
        assert_eq!(
            cti_for(&events, "EventPartyDeleted", dn)["CallState"],
            "Conferenced"
        );
    }
    for m in [members[0], members[2], d] {
        h.action(delete(Some(m), None)).expect("deleted");
    }
    h.assert_no_leaks();
}

/// Seed 05, "Delete from conference": A deletes B; the third party is A.
#[test]
fn cti_delete_from_conference_names_the_deleting_party() {
    let mut h = Harness::new();
    let (_, members, conn_id) = room_of_three(&mut h);
    h.cti_request(
        CtiRequest::DeleteFromConference {
            this_dn: "1001".into(),
            conn_id,
            other_dn: "1002".into(),
        },
        9,
    )
    .expect("deleted");
    let events = h.take_cti();
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(
        attributes(&cti_for(&events, "EventReleased", "1002")),
        expect(&[
            ("Event", "EventReleased"),
            ("ThisDN", "1002"),
            ("CallState", "OK")
        ])
    );
    for dn in ["1001", "1003"] {
        let deleted = cti_for(&events, "EventPartyDeleted", dn);
        assert_eq!(
            attributes(&deleted),
            expect(&[
                ("Event", "EventPartyDeleted"),
                ("ThisDN", dn),
                ("OtherDN", "1002"),
                ("OtherDNRole", "DeletedParty"),
                ("ThirdPartyDN", "1001"),
                ("ThirdPartyDNRole", "DeletedBy"),
                ("CallState", "OK"),
            ])
        );
        assert_eq!(deleted["ReferenceID"], 9);
    }
    // The BYE went to B's phone.
    assert_eq!(requests_named(&h.take_wire(), Method::Bye), 1);
    // Errors: unknown ConnID, a DN not in the call, a call that is no conference.
    let unknown = ConnId::parse("00000000000000aa").unwrap();
    let err = |h: &mut Harness, this: &str, conn_id, other: &str| {
        h.cti_request(
            CtiRequest::DeleteFromConference {
                this_dn: this.into(),
                conn_id,
                other_dn: other.into(),
            },
            1,
        )
        .unwrap_err()
        .code
    };
    assert_eq!(
        err(&mut h, "1001", unknown, "1003"),
        super::cti_codes::UNKNOWN_CONN_ID
    );
    assert_eq!(
        err(&mut h, "9999", conn_id, "1003"),
        super::cti_codes::DN_NOT_IN_CALL
    );
    for m in [members[0], members[2]] {
        h.action(delete(Some(m), None)).expect("deleted");
    }
    let (_, lone) = answered_as(&mut h, "echo", "lone", "1005");
    let lone_call = h.core.model.conn_id_of(lone).unwrap();
    assert_eq!(
        err(&mut h, "1005", lone_call, "echo"),
        super::cti_codes::INVALID_STATE
    );
    h.action(delete(Some(lone), None)).expect("deleted");
    h.assert_no_leaks();
}

#[test]
fn cti_a_joining_party_is_added_to_the_others_and_its_call_changes() {
    let mut h = Harness::new();
    let (_, a) = answered_as(&mut h, "conf=sales", "a", "1001");
    let (_, b) = answered_as(&mut h, "conf=sales", "b", "1002");
    let room = h.core.model.conn_id_of(a).unwrap();
    let events = h.take_cti();
    let added = cti_for(&events, "EventPartyAdded", "1001");
    assert_eq!(
        attributes(&added),
        expect(&[
            ("Event", "EventPartyAdded"),
            ("ThisDN", "1001"),
            ("OtherDN", "1002"),
            ("OtherDNRole", "NewParty"),
            ("ThirdPartyDN", "1002"),
            ("ThirdPartyDNRole", "AddedBy"),
            ("CallState", "OK"),
        ])
    );
    let changed = cti_for(&events, "EventPartyChanged", "1002");
    assert_eq!(changed["ConnID"], room.to_string());
    let own = changed["PreviousConnID"].as_str().unwrap();
    assert_ne!(own, room.to_string());
    // The joiner's own call started (dialing to the room) on the previous ConnID.
    assert_eq!(cti_for(&events, "EventDialing", "1002")["ConnID"], own);
    for m in [a, b] {
        h.action(delete(Some(m), None)).expect("deleted");
    }
    h.assert_no_leaks();
}

#[test]
fn cti_hold_and_retrieve_go_to_the_party_that_holds() {
    let mut h = Harness::new();
    let (mut peer, _) = answered_as(&mut h, "echo", "cti-hold", "1006");
    h.take_cti();
    h.sip_from(PEER, peer.reinvite(&sdp_with(30_000, "inactive")));
    peer.learn(&response(&h.take_wire(), 200));
    h.sip_from(PEER, peer.ack());
    let held = cti_for(&h.take_cti(), "EventHeld", "1006");
    assert_eq!(held["OtherDN"], "echo");
    h.sip_from(PEER, peer.reinvite(&pcmu_sdp(30_000)));
    h.take_wire();
    h.sip_from(PEER, peer.ack());
    cti_for(&h.take_cti(), "EventRetrieved", "1006");
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.assert_no_leaks();
}

#[test]
fn cti_a_call_we_place_that_is_busy_tells_the_caller_the_destination_is_busy() {
    let mut h = Harness::new();
    h.cti_request(
        CtiRequest::MakeCall {
            this_dn: "7000".into(),
            destination: "7002".into(),
            trunk: None,
        },
        3,
    )
    .expect("placed");
    let dialing = cti_for(&h.take_cti(), "EventDialing", "7000");
    assert_eq!(dialing["OtherDN"], "7002");
    assert_eq!(dialing["ReferenceID"], 3);
    let wire = h.take_wire();
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("the INVITE")
        .clone();
    let mut busy = crate::sip::message::Response::for_request(&invite, 486, "Busy Here");
    let to = invite.headers.get("To").unwrap().to_string();
    busy.headers.set("To", format!("{to};tag=busy"));
    h.sip_from(TRUNK, SipMessage::Response(busy));
    let events = h.take_cti();
    let busy = cti_for(&events, "EventDestinationBusy", "7000");
    assert_eq!(busy["CallState"], "Busy");
    assert_eq!(busy["OtherDN"], "7002");
    let released = cti_for(&events, "EventReleased", "7000");
    assert_eq!(released["Cause"], 17);
    assert!(
        events.iter().all(|e| e["ThisDN"] != "7002"),
        "it never rang"
    );
    h.assert_no_leaks();
}

#[test]
fn cti_queries_list_a_calls_parties_and_a_dns_calls() {
    let mut h = Harness::new();
    let (_, members, conn_id) = room_of_three(&mut h);
    let info = h
        .cti_request(CtiRequest::QueryCall { conn_id }, 1)
        .expect("queried");
    assert_eq!(info["Event"], "EventPartyInfo");
    assert_eq!(info["CallState"], "Conferenced");
    let dns: Vec<&str> = info["Parties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["DN"].as_str().unwrap())
        .collect();
    assert_eq!(dns, ["1001", "1002", "1003"]);
    let address = h
        .cti_request(
            CtiRequest::QueryAddress {
                this_dn: "1002".into(),
            },
            2,
        )
        .expect("queried");
    assert_eq!(address["Calls"][0]["ConnID"], conn_id.to_string());
    assert_eq!(address["Calls"][0]["Role"], "ConferenceMember");
    let nobody = h
        .cti_request(
            CtiRequest::QueryAddress {
                this_dn: "4242".into(),
            },
            3,
        )
        .expect("queried");
    assert_eq!(nobody["Calls"], serde_json::json!([]));
    for m in members {
        h.action(delete(Some(m), None)).expect("deleted");
    }
    h.assert_no_leaks();
}

#[test]
fn cti_a_refer_moves_the_transfer_target_into_the_call_transferred_by_the_referrer() {
    let mut h = Harness::new();
    let (mut transferor, b) = answered_as(&mut h, "echo", "cti-refer", "1002");
    let conn_id = h.core.model.conn_id_of(b).unwrap();
    h.take_cti();
    h.take_wire();
    h.sip_from(
        PEER,
        transferor.in_dialog("REFER", "Refer-To: <sip:7003@127.0.0.3>\r\n"),
    );
    let wire = h.take_wire();
    answer_trunk_invite(&mut h, &wire, "7003");
    let events = h.take_cti();
    let target = cti_for(&events, "EventPartyChanged", "7003");
    assert_eq!(target["ConnID"], conn_id.to_string());
    assert_eq!(target["ThirdPartyDN"], "1002");
    assert_eq!(target["ThirdPartyDNRole"], "TransferredBy");
    assert_eq!(target["CallState"], "Transferred");
    assert!(target["PreviousConnID"].is_string());
    // The transferor hangs up: released, transferred to 7003.
    h.sip_from(PEER, transferor.in_dialog("BYE", ""));
    let released = cti_for(&h.take_cti(), "EventReleased", "1002");
    assert_eq!(released["CallState"], "Transferred");
    assert_eq!(released["ThirdPartyDN"], "7003");
    let new_connection = h
        .core
        .model
        .call(conn_id)
        .unwrap()
        .parties
        .keys()
        .copied()
        .next()
        .unwrap();
    h.action(delete(Some(new_connection), None))
        .expect("deleted");
    answer_trunk_byes(&mut h);
    h.assert_no_leaks();
}

/// The trunk's target rings for the core's `invite` (180, To tag `far`).
pub(super) fn trunk_rings(h: &mut Harness, invite: &crate::sip::message::Request) {
    let ringing = trunk_response(invite, 180, "Ringing", "far");
    h.sip_from(TRUNK, SipMessage::Response(ringing));
}

/// The core cancelled the ringing `invite` (its CANCEL is in `wire`): the trunk answers the
/// CANCEL 200 and the INVITE 487, as RFC 3261 §9.2.
pub(super) fn trunk_accepts_cancel(
    h: &mut Harness,
    wire: &[SipMessage],
    invite: &crate::sip::message::Request,
) {
    let cancel = requests(wire)
        .into_iter()
        .find(|r| r.method == Method::Cancel)
        .expect("the ringing call is cancelled")
        .clone();
    h.sip_from(
        TRUNK,
        SipMessage::Response(crate::sip::message::Response::for_request(
            &cancel, 200, "OK",
        )),
    );
    let terminated = trunk_response(invite, 487, "Request Terminated", "far");
    h.sip_from(TRUNK, SipMessage::Response(terminated));
}

/// The INVITE the core sent to the trunk, answered 200 by the target with SDP.
pub(super) fn answer_trunk_invite(h: &mut Harness, wire: &[SipMessage], user: &str) {
    let invite = requests(wire)
        .into_iter()
        .find(|r| r.method == Method::Invite && r.uri.to_string().contains(user))
        .unwrap_or_else(|| panic!("an INVITE to {user}: {wire:#?}"))
        .clone();
    let ok = trunk_response(&invite, 200, "OK", "target");
    h.sip_from(TRUNK, SipMessage::Response(ok));
}

/// The far end's response to the core's `invite` through the trunk, in the dialog its `tag`
/// names; a 2xx has its Contact (the called user at the trunk) and an SDP answer.
pub(super) fn trunk_response(
    invite: &crate::sip::message::Request,
    status: u16,
    reason: &str,
    tag: &str,
) -> crate::sip::message::Response {
    let mut response = crate::sip::message::Response::for_request(invite, status, reason);
    let to = invite.headers.get("To").expect("a To").to_string();
    response.headers.set("To", format!("{to};tag={tag}"));
    if (200..300).contains(&status) {
        let user = invite.uri.user.as_deref().unwrap_or_default();
        response
            .headers
            .push("Contact", format!("<sip:{user}@{TRUNK}>"));
        response
            .headers
            .set("Content-Type", "application/sdp".to_string());
        response.body = pcmu_sdp(31_000).into_bytes();
    }
    response
}

/// The BYE of the far end of `invite`'s call, in the dialog the core's INVITE began (the
/// far end's tag `target`, as `answer_trunk_invite` gives it); `n` tells its branch apart.
pub(super) fn trunk_bye(invite: &crate::sip::message::Request, n: u32) -> SipMessage {
    trunk_request(invite, "BYE", n, 1, "", None)
}

/// A request of the far end of `invite`'s call in the dialog the core's INVITE began (the far
/// end's tag `target`), CSeq `cseq`, with `extra` headers and an SDP `body`; `n` tells its
/// branch apart.
pub(super) fn trunk_request(
    invite: &crate::sip::message::Request,
    method: &str,
    n: u32,
    cseq: u32,
    extra: &str,
    body: Option<&str>,
) -> SipMessage {
    let header = |name: &str| invite.headers.get(name).expect(name).to_string();
    let target = header("Contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_string();
    let (content_type, body) = match body {
        Some(body) => ("Content-Type: application/sdp\r\n", body),
        None => ("", ""),
    };
    // A target refresh names its Contact again (RFC 3261 §12.2.1.1).
    let contact = match method {
        "INVITE" | "UPDATE" => format!("Contact: <sip:target@{TRUNK}>\r\n"),
        _ => String::new(),
    };
    let branch = method.to_ascii_lowercase();
    sip(&format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKtrunk{branch}{n}\r\n\
         Max-Forwards: 70\r\nFrom: {};tag=target\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n{contact}{extra}{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        header("To"),
        header("From"),
        header("Call-ID"),
        body.len(),
    ))
}

/// Answers every BYE the core sent to the trunk.
pub(super) fn answer_trunk_byes(h: &mut Harness) {
    let byes: Vec<_> = h
        .take_wire()
        .into_iter()
        .filter_map(|m| match m {
            SipMessage::Request(r) if r.method == Method::Bye => Some(r),
            _ => None,
        })
        .collect();
    for bye in byes {
        h.sip_from(
            TRUNK,
            SipMessage::Response(crate::sip::message::Response::for_request(&bye, 200, "OK")),
        );
    }
}

#[test]
fn cti_single_step_transfer_gives_a_partys_place_to_the_destination() {
    let mut h = Harness::new();
    let (_, members, room) = room_of_three(&mut h);
    h.take_wire();
    h.cti_request(
        CtiRequest::SingleStepTransfer {
            this_dn: "1002".into(),
            conn_id: room,
            destination: "7004".into(),
        },
        21,
    )
    .expect("transferring");
    let wire = h.take_wire();
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("the INVITE")
        .clone();
    assert!(
        invite.headers.get("From").unwrap().contains("1002"),
        "{invite:?}"
    );
    // Until the target answers, the room is as it was.
    assert_eq!(h.core.model.call(room).unwrap().parties.len(), 3);
    answer_trunk_invite(&mut h, &wire, "7004");
    let events = h.take_cti();
    let target = cti_for(&events, "EventPartyChanged", "7004");
    assert_eq!(target["ConnID"], room.to_string());
    assert_eq!(target["ThirdPartyDN"], "1002");
    assert_eq!(target["ThirdPartyDNRole"], "TransferredBy");
    assert_eq!(target["CallState"], "Transferred");
    for dn in ["1001", "1003"] {
        let changed = cti_for(&events, "EventPartyChanged", dn);
        assert_eq!(changed["OtherDN"], "7004");
        assert_eq!(changed["ThirdPartyDN"], "1002");
    }
    let released = cti_in(&events, "EventReleased", "1002", room);
    assert_eq!(released["CallState"], "Transferred");
    assert_eq!(released["ThirdPartyDN"], "7004");
    // The call placed from 1002 to 7004 is over for 1002, its calling DN: 7004 went on into
    // the room.
    let placed = cti_elsewhere(&events, "EventReleased", "1002", room);
    assert_eq!(placed.len(), 1, "{events:#?}");
    assert_eq!(placed[0]["OtherDN"], "7004");
    assert_eq!(placed[0]["CallState"], "OK");
    assert!(
        events.iter().all(|e| e["Event"] != "EventPartyDeleted"),
        "{events:#?}"
    );
    // B's phone got its BYE; the room still has three members, 7004 among them.
    assert_eq!(requests_named(&h.take_wire(), Method::Bye), 1);
    let call = h.core.model.call(room).unwrap();
    let dns: Vec<&str> = call.parties.values().map(|p| p.dn.as_str()).collect();
    assert_eq!(dns.len(), 3);
    assert!(dns.contains(&"7004") && !dns.contains(&"1002"), "{dns:?}");
    let conference = h.core.conferences.keys().copied().next().unwrap();
    h.action(delete(None, Some(conference))).expect("released");
    answer_trunk_byes(&mut h);
    let _ = members;
    h.assert_no_leaks();
}

#[test]
fn cti_single_step_conference_adds_the_destination_to_a_two_party_call() {
    let mut h = Harness::new();
    let (_, a) = answered_as(&mut h, "echo", "ssc", "1001");
    let call = h.core.model.conn_id_of(a).unwrap();
    h.take_cti();
    h.take_wire();
    h.cti_request(
        CtiRequest::SingleStepConference {
            this_dn: "echo".into(),
            conn_id: call,
            destination: "7005".into(),
        },
        31,
    )
    .expect("adding");
    let wire = h.take_wire();
    answer_trunk_invite(&mut h, &wire, "7005");
    let events = h.take_cti();
    let added = cti_for(&events, "EventPartyAdded", "1001");
    assert_eq!(added["ConnID"], call.to_string());
    assert_eq!(added["OtherDN"], "7005");
    assert_eq!(added["OtherDNRole"], "NewParty");
    assert_eq!(added["ThirdPartyDN"], "echo");
    assert_eq!(added["ThirdPartyDNRole"], "AddedBy");
    let changed = cti_for(&events, "EventPartyChanged", "7005");
    assert_eq!(changed["ConnID"], call.to_string());
    assert!(changed["PreviousConnID"].is_string());
    assert_eq!(h.core.model.call(call).unwrap().parties.len(), 2);
    let conference = h.core.conferences.keys().copied().next().unwrap();
    h.action(delete(None, Some(conference))).expect("released");
    answer_trunk_byes(&mut h);
    h.take_wire();
    h.assert_no_leaks();
}

#[test]
fn cti_a_meet_me_room_is_no_party_but_a_lone_members_other_dn() {
    let mut h = Harness::new();
    let (mut peer, _) = answered_as(&mut h, "conf=sales", "lone", "1001");
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    let events = h.take_cti();
    assert!(
        events.iter().all(|e| e["ThisDN"] == "1001"),
        "the room gets nothing: {events:#?}"
    );
    for name in ["EventDialing", "EventEstablished", "EventReleased"] {
        assert_eq!(
            cti_for(&events, name, "1001")["OtherDN"],
            "conf=sales",
            "{name}"
        );
    }
    h.assert_no_leaks();
}

/// Our re-INVITE to the peer (the one request among `wire`), answered by the peer with `status`
/// and, for a 2xx, an SDP with `direction`.
fn answer_our_reinvite(
    h: &mut Harness,
    wire: &[SipMessage],
    status: u16,
    direction: &str,
) -> String {
    let reinvite = requests(wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .unwrap_or_else(|| panic!("our re-INVITE: {wire:#?}"))
        .clone();
    let body = String::from_utf8(reinvite.body.clone()).unwrap();
    let mut response = crate::sip::message::Response::for_request(&reinvite, status, "X");
    if status == 200 {
        response
            .headers
            .push("Contact", format!("<sip:5551001@{PEER}>"));
        response
            .headers
            .set("Content-Type", "application/sdp".to_string());
        response.body = sdp_with(30_000, direction).into_bytes();
    }
    h.sip_from(PEER, SipMessage::Response(response));
    body
}

#[test]
fn cti_hold_and_retrieve_by_request_reinvite_the_party_and_answer_when_it_has() {
    let mut h = Harness::new();
    let (mut peer, connection) = answered_as(&mut h, "echo", "cti-hold-req", "1007");
    let conn_id = h.core.model.conn_id_of(connection).unwrap();
    h.take_cti();
    h.take_wire();
    let mut answer = h.cti_request_later(
        CtiRequest::Hold {
            this_dn: "1007".into(),
            conn_id,
            hold: true,
        },
        51,
    );
    assert!(
        answer.try_recv().is_err(),
        "answered when the party has answered"
    );
    let wire = h.take_wire();
    // The peer's own re-INVITE meanwhile: glare, 491.
    h.sip_from(PEER, peer.reinvite(&pcmu_sdp(30_000)));
    assert!(statuses(&h.take_wire()).contains(&(491, "INVITE".into())));
    let offer = answer_our_reinvite(&mut h, &wire, 200, "recvonly");
    assert!(offer.contains("a=sendonly"), "{offer}");
    assert_eq!(
        requests_named(&h.take_wire(), Method::Ack),
        1,
        "our ACK of its 200"
    );
    assert_eq!(
        answer.try_recv().expect("answered").unwrap()["Event"],
        "EventACK"
    );
    let held = cti_for(&h.take_cti(), "EventHeld", "1007");
    assert_eq!(held["ReferenceID"], 51);
    assert_eq!(
        h.core.model.party(connection).unwrap().state,
        super::party::PartyState::Held
    );
    // While held, no RTP timeout is expected of it.
    assert!(
        !h.core.engine.connections[&u64::from(connection)]
            .media
            .expects_rtp
    );

    let mut answer = h.cti_request_later(
        CtiRequest::Hold {
            this_dn: "1007".into(),
            conn_id,
            hold: false,
        },
        52,
    );
    let wire = h.take_wire();
    let offer = answer_our_reinvite(&mut h, &wire, 200, "sendrecv");
    assert!(offer.contains("a=sendrecv"), "{offer}");
    assert!(answer.try_recv().unwrap().is_ok());
    assert_eq!(
        cti_for(&h.take_cti(), "EventRetrieved", "1007")["ReferenceID"],
        52
    );

    // A refusal leaves the call as it was.
    let mut answer = h.cti_request_later(
        CtiRequest::Hold {
            this_dn: "1007".into(),
            conn_id,
            hold: true,
        },
        53,
    );
    let wire = h.take_wire();
    answer_our_reinvite(&mut h, &wire, 488, "");
    let refused = answer.try_recv().unwrap().unwrap_err();
    assert_eq!(refused.code, super::cti_codes::REFUSED);
    assert!(h.take_cti().is_empty());
    assert_eq!(
        h.core.model.party(connection).unwrap().state,
        super::party::PartyState::Established
    );
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    h.assert_no_leaks();
}

#[test]
fn cti_an_application_route_rings_while_offered_and_is_answered_by_request() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("app", "cti-answer").with_dn("1008");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    assert!(h.core.connections.is_empty(), "no media before the answer");
    let events = h.take_cti();
    let ringing = cti_for(&events, "EventRinging", "app");
    assert_eq!(ringing["OtherDN"], "1008");
    let conn_id = ConnId::parse(ringing["ConnID"].as_str().unwrap()).unwrap();
    // The listing shows the ringing party without a connection.
    let listed = h.list(ControlRequest::ListCalls);
    assert!(
        listed["CallModel"][0]["Parties"][0]["ConnectionId"].is_null(),
        "{listed:#}"
    );
    // Only the route it rings may answer it.
    let wrong = h
        .cti_request(
            CtiRequest::AnswerCall {
                this_dn: "1008".into(),
                conn_id,
            },
            60,
        )
        .unwrap_err();
    assert_eq!(wrong.code, super::cti_codes::DN_NOT_IN_CALL);
    h.cti_request(
        CtiRequest::AnswerCall {
            this_dn: "app".into(),
            conn_id,
        },
        61,
    )
    .expect("answered");
    peer.learn(&response(&h.take_wire(), 200));
    h.sip_from(PEER, peer.ack());
    let events = h.take_cti();
    for dn in ["1008", "app"] {
        assert_eq!(
            cti_for(&events, "EventEstablished", dn)["ConnID"],
            conn_id.to_string()
        );
    }
    // The same call and party, now with its connection.
    let connection = *h.core.connections.keys().next().unwrap();
    assert_eq!(h.core.model.conn_id_of(connection), Some(conn_id));
    h.sip_from(PEER, peer.in_dialog("BYE", ""));
    cti_for(&h.take_cti(), "EventReleased", "app");
    h.assert_no_leaks();
}

#[test]
fn cti_an_offered_call_the_caller_gives_up_is_abandoned_on_the_route() {
    let mut h = Harness::new();
    let mut peer = PeerCall::new("app", "cti-offer-cancel").with_dn("1009");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_000)), ""));
    h.take_cti();
    h.sip_from(PEER, peer.cancel());
    let events = h.take_cti();
    assert_eq!(cti_for(&events, "EventAbandoned", "app")["OtherDN"], "1009");
    cti_for(&events, "EventReleased", "1009");
    let wire = h.take_wire();
    h.sip_from(PEER, peer.ack_failure(&response(&wire, 487)));
    h.assert_no_leaks();
}

/// A and B (1001, 1002) in room `sales`: their dialogs, connections and the room's ConnID.
fn room_of_two(h: &mut Harness) -> (Vec<PeerCall>, Vec<u32>, ConnId) {
    let mut peers = Vec::new();
    let mut members = Vec::new();
    for (name, dn) in [("a2", "1001"), ("b2", "1002")] {
        let (peer, connection) = answered_as(h, "conf=sales", name, dn);
        peers.push(peer);
        members.push(connection);
    }
    let conn_id = h.core.model.conn_id_of(members[0]).expect("a party");
    h.take_cti();
    h.take_wire();
    (peers, members, conn_id)
}

/// B (1002) starts a consultation to `target` from the room; the target answers.
fn consult(h: &mut Harness, room: ConnId, target: &str) -> ConnId {
    let answer = h
        .cti_request(
            CtiRequest::Initiate {
                this_dn: "1002".into(),
                conn_id: room,
                destination: target.into(),
            },
            70,
        )
        .expect("consulting");
    let consult_call = ConnId::parse(answer["ConnID"].as_str().unwrap()).unwrap();
    let events = h.take_cti();
    assert_eq!(
        cti_for(&events, "EventHeld", "1002")["ConnID"],
        room.to_string()
    );
    let dialing = cti_for(&events, "EventDialing", "1002");
    assert_eq!(dialing["ConnID"], consult_call.to_string());
    assert_eq!(dialing["OtherDN"], target);
    let wire = h.take_wire();
    answer_trunk_invite(h, &wire, target);
    let events = h.take_cti();
    cti_for(&events, "EventEstablished", target);
    assert_eq!(
        cti_for(&events, "EventEstablished", "1002")["ConnID"],
        consult_call.to_string()
    );
    consult_call
}

#[test]
fn cti_two_step_conference_merges_the_consultation_into_the_held_call() {
    let mut h = Harness::new();
    let (_, members, room) = room_of_two(&mut h);
    let conference = *h.core.conferences.keys().next().unwrap();
    let consult_call = consult(&mut h, room, "7010");
    // While consulting, the room's mix has A only; B hears 7010.
    assert_eq!(h.core.conferences[&conference].members.len(), 1);
    h.cti_request(
        CtiRequest::Complete {
            this_dn: "1002".into(),
            conn_id: room,
            transfer: false,
        },
        71,
    )
    .expect("completed");
    let events = h.take_cti();
    assert_eq!(
        cti_for(&events, "EventRetrieved", "1002")["ConnID"],
        room.to_string()
    );
    for dn in ["1001", "1002"] {
        let added = cti_for(&events, "EventPartyAdded", dn);
        assert_eq!(
            attributes(&added),
            expect(&[
                ("Event", "EventPartyAdded"),
                ("ThisDN", dn),
                ("OtherDN", "7010"),
                ("OtherDNRole", "NewParty"),
                ("ThirdPartyDN", "1002"),
                ("ThirdPartyDNRole", "AddedBy"),
                ("CallState", "Conferenced"),
            ])
        );
        assert_eq!(added["ReferenceID"], 71);
    }
    let changed = cti_for(&events, "EventPartyChanged", "7010");
    assert_eq!(changed["ConnID"], room.to_string());
    assert_eq!(changed["PreviousConnID"], consult_call.to_string());
    assert_eq!(h.core.conferences[&conference].members.len(), 3);
    assert_eq!(
        h.core.conferences.len(),
        1,
        "the consultation's hairpin is gone"
    );
    assert_eq!(h.core.model.call(room).unwrap().parties.len(), 3);
    h.action(delete(None, Some(conference))).expect("released");
    answer_trunk_byes(&mut h);
    let _ = members;
    h.assert_no_leaks();
}

#[test]
fn cti_two_step_transfer_gives_the_consulting_partys_place_to_the_consulted() {
    let mut h = Harness::new();
    let (_, members, room) = room_of_two(&mut h);
    let conference = *h.core.conferences.keys().next().unwrap();
    consult(&mut h, room, "7011");
    h.cti_request(
        CtiRequest::Complete {
            this_dn: "1002".into(),
            conn_id: room,
            transfer: true,
        },
        72,
    )
    .expect("completed");
    let events = h.take_cti();
    let moved = cti_for(&events, "EventPartyChanged", "7011");
    assert_eq!(moved["ConnID"], room.to_string());
    assert_eq!(moved["ThirdPartyDN"], "1002");
    assert_eq!(moved["CallState"], "Transferred");
    assert_eq!(
        cti_for(&events, "EventPartyChanged", "1001")["OtherDN"],
        "7011"
    );
    let released = cti_in(&events, "EventReleased", "1002", room);
    assert_eq!(released["CallState"], "Transferred");
    assert_eq!(released["ThirdPartyDN"], "7011");
    // And from the consultation call: 7011 went on into the room.
    let consultation = cti_elsewhere(&events, "EventReleased", "1002", room);
    assert_eq!(consultation.len(), 1, "{events:#?}");
    assert_eq!(consultation[0]["OtherDN"], "7011");
    assert_eq!(
        requests_named(&h.take_wire(), Method::Bye),
        1,
        "B's phone hung up"
    );
    let dns: Vec<String> = h
        .core
        .model
        .call(room)
        .unwrap()
        .parties
        .values()
        .map(|p| p.dn.clone())
        .collect();
    assert_eq!(dns.len(), 2);
    assert!(
        dns.contains(&"1001".to_string()) && dns.contains(&"7011".to_string()),
        "{dns:?}"
    );
    assert_eq!(h.core.conferences[&conference].members.len(), 2);
    h.action(delete(None, Some(conference))).expect("released");
    answer_trunk_byes(&mut h);
    let _ = members;
    h.assert_no_leaks();
}

#[test]
fn cti_a_refused_consultation_gives_the_consulting_party_back_to_its_call() {
    let mut h = Harness::new();
    let (_, members, room) = room_of_two(&mut h);
    let conference = *h.core.conferences.keys().next().unwrap();
    h.cti_request(
        CtiRequest::Initiate {
            this_dn: "1002".into(),
            conn_id: room,
            destination: "7012".into(),
        },
        73,
    )
    .expect("consulting");
    h.take_cti();
    let wire = h.take_wire();
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("the INVITE")
        .clone();
    let mut busy = crate::sip::message::Response::for_request(&invite, 486, "Busy Here");
    let to = invite.headers.get("To").unwrap().to_string();
    busy.headers.set("To", format!("{to};tag=busy"));
    h.sip_from(TRUNK, SipMessage::Response(busy));
    let events = h.take_cti();
    assert_eq!(
        cti_for(&events, "EventDestinationBusy", "1002")["CallState"],
        "Busy"
    );
    assert_eq!(
        cti_for(&events, "EventRetrieved", "1002")["ConnID"],
        room.to_string()
    );
    assert_eq!(
        h.core.conferences[&conference].members.len(),
        2,
        "B is back in the mix"
    );
    let early = h
        .cti_request(
            CtiRequest::Complete {
                this_dn: "1002".into(),
                conn_id: room,
                transfer: false,
            },
            74,
        )
        .unwrap_err();
    assert_eq!(early.code, super::cti_codes::INVALID_STATE);
    for m in members {
        h.action(delete(Some(m), None)).expect("deleted");
    }
    h.assert_no_leaks();
}

#[test]
fn cti_a_consulting_party_that_hangs_up_takes_its_consultation_with_it() {
    let mut h = Harness::new();
    let (mut peers, members, room) = room_of_two(&mut h);
    let conference = *h.core.conferences.keys().next().unwrap();
    let consult_call = consult(&mut h, room, "7013");
    assert_eq!(
        h.core.conferences.len(),
        2,
        "the room and the consultation's hairpin"
    );
    // B's phone hangs up while it talks to 7013.
    h.sip_from(PEER, peers[1].in_dialog("BYE", ""));
    let events = h.take_cti();
    // B leaves both calls — the room's and the consultation, whose far end is hung up (our
    // BYE to the trunk).
    let mut left: Vec<String> = events
        .iter()
        .filter(|e| e["Event"] == "EventReleased" && e["ThisDN"] == "1002")
        .map(|e| e["ConnID"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    let mut both = vec![room.to_string(), consult_call.to_string()];
    both.sort();
    assert_eq!(left, both, "{events:#?}");
    let target = cti_for(&events, "EventReleased", "7013");
    assert_eq!(target["ConnID"], consult_call.to_string());
    assert_eq!(target["ThirdPartyDN"], serde_json::Value::Null);
    let wire = h.take_wire();
    assert!(
        requests(&wire)
            .iter()
            .any(|r| r.method == Method::Bye && r.uri.to_string().contains("7013")),
        "{wire:#?}"
    );
    let released = released(&h, h.core.engine.closed.last().copied().unwrap() as u32);
    assert_eq!(released["DN"], "7013");
    assert_eq!(released["ReleasedBy"]["Kind"], "party");
    assert_eq!(released["ReleasedBy"]["DN"], "1002");
    // A stays alone in the room; the hairpin is gone.
    assert_eq!(h.core.conferences.len(), 1);
    assert_eq!(h.core.conferences[&conference].members.len(), 1);
    h.sip_from(
        TRUNK,
        SipMessage::Response(crate::sip::message::Response::for_request(
            requests(&wire)
                .into_iter()
                .find(|r| r.method == Method::Bye)
                .unwrap(),
            200,
            "OK",
        )),
    );
    h.action(delete(Some(members[0]), None)).expect("deleted");
    h.assert_no_leaks();
}

#[test]
fn ids_carry_the_node_in_their_top_byte_and_wrap_below_it() {
    let mut next = 1;
    let id = super::allocate_in(&mut next, 5, |_| false).expect("an id");
    assert_eq!(id, (5 << 24) | 1);
    assert_eq!(super::node_of(id), 5);
    // The 24-bit number wraps to 1, the node stays; taken ids are skipped.
    let mut next = 0x00FF_FFFF;
    let taken = super::with_node(5, 1);
    let last = super::allocate_in(&mut next, 5, |id| id == taken).expect("the last number");
    assert_eq!(last, (5 << 24) | 0x00FF_FFFF);
    let wrapped = super::allocate_in(&mut next, 5, |id| id == taken).expect("after the wrap");
    assert_eq!(wrapped, (5 << 24) | 2);
    assert_eq!(
        super::with_node(0, 42),
        42,
        "a single server's ids are unchanged"
    );
}

#[test]
fn a_100_trying_goes_only_when_no_other_response_to_the_invite_goes_in_the_same_turn() {
    let mut h = Harness::new();
    // Answered at once (echo): the 200 makes the 100 redundant (RFC 3261 §17.2.1).
    let mut echo = PeerCall::new("echo", "at-once");
    h.sip_from(PEER, echo.invite(Some(&pcmu_sdp(30_010)), ""));
    let wire = h.take_wire();
    assert_eq!(statuses(&wire), [(200, "INVITE".to_string())]);
    // Ringing at once: the 180 does.
    let ring = PeerCall::new("ring", "ringing");
    h.sip_from(PEER, ring.invite(Some(&pcmu_sdp(30_012)), ""));
    assert_eq!(statuses(&h.take_wire()), [(180, "INVITE".to_string())]);
    // Offered to an application, which has not answered by the end of the turn: the 100
    // goes, and again for a retransmission of the INVITE.
    let app = PeerCall::new("app", "offered");
    h.sip_from(PEER, app.invite(Some(&pcmu_sdp(30_014)), ""));
    assert_eq!(statuses(&h.take_wire()), [(100, "INVITE".to_string())]);
    h.sip_from(PEER, app.invite(Some(&pcmu_sdp(30_014)), ""));
    assert_eq!(statuses(&h.take_wire()), [(100, "INVITE".to_string())]);
    // The answered call goes on as ever: ACK, then BYE and its 200.
    echo.learn(&response(&wire, 200));
    h.sip_from(PEER, echo.ack());
    h.sip_from(PEER, echo.in_dialog("BYE", ""));
    assert_eq!(statuses(&h.take_wire()), [(200, "BYE".to_string())]);
}
