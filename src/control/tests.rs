//! The control core's release paths and party model, in virtual time.
//!
//! Each test drives the core through the harness — SIP text from a peer, API actions, engine
//! events, time — and asserts on what a user would see: the SIP messages on the wire, the
//! events on the stream, the listings; and ends with the harness's leak check.

use std::time::Duration;

use serde_json::Value;

use super::harness::*;
use super::{
    AttributeChange, CallAction, CodecChoice, Completion, ControlRequest, MediaAction, Target,
};
use crate::control::operations::TermConds;
use crate::engine::{ConfereeSpec, EngineEvent};
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
    peer.learn(&response(&wire, 487));
    h.sip_from(
        PEER,
        sip(&peer.text("ACK", "z9hG4bK-cancel-1", 100, "", None)),
    );
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
fn an_invite_that_cannot_be_served_is_refused_and_its_connection_released() {
    let mut h = Harness::new();
    h.core.engine.prompts.clear();
    let mut peer = PeerCall::new("hello", "no-prompt");
    h.sip_from(PEER, peer.invite(Some(&pcmu_sdp(30_006)), ""));
    let wire = h.take_wire();
    let refused = response(&wire, 404);
    let connection = connection_of(&h, &peer);
    assert_eq!(released(&h, connection)["Reason"], "invite-failed");
    peer.learn(&refused);
    h.sip_from(
        PEER,
        sip(&peer.text("ACK", "z9hG4bK-no-prompt-1", 100, "", None)),
    );
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
    h.action(MediaAction::Play(super::PlayRequest {
        target: Target::Connection(connection),
        prompts: vec!["hello.wav".into()],
        application: None,
        locale: None,
        conds: TermConds::default(),
        volume: 0,
        speed: 0,
        state: None,
    }))
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
    let mut new_peer = PeerCall::new("conf=sales", "c4");
    new_peer.asserted = Some("5552002".into());
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
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("the transfer's INVITE to the trunk")
        .clone();
    assert!(invite.uri.to_string().contains("7002"));
    // The target answers.
    let mut ok = crate::sip::message::Response::for_request(&invite, 200, "OK");
    ok.headers.set(
        "To",
        format!("{};tag=target", invite.headers.get("To").unwrap()),
    );
    ok.headers
        .push("Contact", "<sip:7002@127.0.0.3:5080>".to_string());
    ok.headers
        .set("Content-Type", "application/sdp".to_string());
    ok.body = pcmu_sdp(31_000).into_bytes();
    h.sip_from(TRUNK, SipMessage::Response(ok));
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
    let byes: Vec<_> = h
        .take_wire()
        .into_iter()
        .filter_map(|m| match m {
            SipMessage::Request(r) if r.method == Method::Bye => Some(r),
            _ => None,
        })
        .collect();
    for bye in byes {
        if bye.uri.to_string().contains("7002") {
            h.sip_from(
                TRUNK,
                SipMessage::Response(crate::sip::message::Response::for_request(&bye, 200, "OK")),
            );
        }
    }
    h.assert_no_leaks();
}

#[test]
fn conferee_attributes_and_joins_by_the_api_are_party_changes_by_the_client() {
    let mut h = Harness::new();
    let (_p1, a) = answered(&mut h, "echo", "api1");
    let (_p2, b) = answered(&mut h, "echo", "api2");
    let call_b = h.core.model.conn_id_of(b).unwrap();
    let created = h
        .action(MediaAction::CreateConference {
            connection: a,
            completion: Completion::default(),
            conferee: ConfereeSpec::default(),
            hairpin: false,
            join_tone: false,
        })
        .expect("created");
    let conference = id(&created["ConferenceId"]);
    h.action(MediaAction::JoinConference {
        connection: b,
        conference,
        completion: Completion::default(),
        conferee: ConfereeSpec::default(),
    })
    .expect("joined");
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
    let placed = h
        .call_action(CallAction::MakeCall(super::MakeCall {
            to: "7002".into(),
            from: None,
            display_name: None,
            trunk: None,
            conference: None,
        }))
        .expect("placed");
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
    let mut ringing = crate::sip::message::Response::for_request(&invite, 180, "Ringing");
    let to = invite.headers.get("To").unwrap().to_string();
    ringing.headers.set("To", format!("{to};tag=far"));
    h.sip_from(TRUNK, SipMessage::Response(ringing));
    assert_eq!(party(&h).state, super::party::PartyState::Ringing);
    // Nobody answers: at the ring timeout the call is cancelled.
    h.advance(Duration::from_secs(60));
    let wire = h.take_wire();
    let cancel = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Cancel)
        .expect("CANCEL at ringout")
        .clone();
    h.sip_from(
        TRUNK,
        SipMessage::Response(crate::sip::message::Response::for_request(
            &cancel, 200, "OK",
        )),
    );
    let mut terminated =
        crate::sip::message::Response::for_request(&invite, 487, "Request Terminated");
    terminated.headers.set("To", format!("{to};tag=far"));
    h.sip_from(TRUNK, SipMessage::Response(terminated));
    let failed = h.one_event("MakeCall_Failed", |_| true);
    assert_eq!(failed["EndReason"], "Ringout");
    let event = released(&h, connection);
    assert_eq!(event["DN"], "7002");
    assert_eq!(event["ReleasedBy"]["Kind"], "system");
    h.assert_no_leaks();
}
