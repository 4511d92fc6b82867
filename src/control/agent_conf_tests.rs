//! Agent conferences (seed 03) in virtual time: the chair's phone and the participants'
//! phones are calls through the trunk; the conference's warning and end are timers; every way
//! out is the one release path.

use std::time::Duration;

use serde_json::json;

use super::harness::*;
use super::tests::{
    answer_trunk_byes, answer_trunk_invite, trunk_accepts_cancel, trunk_bye, trunk_response,
    trunk_rings,
};
use super::{AgentConfRequest, ControlRequest};
use crate::agent_gateway::requests::{BatchAddParticipant, ProlongTime, RequestAgentConf};
use crate::agent_gateway::{AgentId, Participant, PhoneNumber};
use crate::sip::message::{Method, Request, SipMessage};

fn agent(id: u32) -> AgentId {
    AgentId::new(i64::from(id)).expect("an agent id")
}

fn phone(number: &str) -> PhoneNumber {
    PhoneNumber::parse(number).expect("a number")
}

/// A gateway request of agent 1001 (on phone 6001).
fn ask(h: &mut Harness, request: AgentConfRequest) -> Result<serde_json::Value, String> {
    ask_as(h, 1001, "6001", request)
}

/// A gateway request of `id` (on phone `number`).
fn ask_as(
    h: &mut Harness,
    id: u32,
    number: &str,
    request: AgentConfRequest,
) -> Result<serde_json::Value, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.input(super::Input::Request(ControlRequest::AgentConf {
        agent: agent(id),
        phone: phone(number),
        request,
        reply,
    }));
    answer
        .blocking_recv()
        .expect("answered")
        .map_err(|e| format!("{}: {}", e.retcode.code(), e.message))
}

/// The events agent 1001 got, by type, since the last call.
fn chair_events(h: &mut Harness) -> Vec<(String, serde_json::Value)> {
    h.core
        .take_agent_events()
        .into_iter()
        .filter(|(a, _)| *a == agent(1001))
        .map(|(_, e)| (e.event_type.to_string(), e.content))
        .collect()
}

fn types(events: &[(String, serde_json::Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

/// Agent 1001 requests a conference (`minutes`, warned `prompt` minutes before the end) and
/// its phone answers.
fn chaired(h: &mut Harness, minutes: u16, prompt: u16) {
    let body = json!({"memberNum": 4, "time": minutes, "promptTime": prompt}).to_string();
    let request = RequestAgentConf::from_json(body.as_bytes()).expect("a request");
    ask(h, AgentConfRequest::Request(request)).expect("accepted");
    answer_phone(h, "6001");
    let events = chair_events(h);
    assert_eq!(
        types(&events),
        [
            "AgentState_Busy",
            "AgentOther_PhoneAlerting",
            "AgentOther_PhoneOffhook",
            "AgentConf_SelfJoinResult",
            "AgentConf_RequestSuccess"
        ]
    );
}

/// The chair adds the number `number`, whose phone answers.
fn add_phone(h: &mut Harness, number: &str) {
    let body = json!({"addresses": [{"addressType": 6, "address": number}]}).to_string();
    let add = BatchAddParticipant::from_json(body.as_bytes()).expect("a request");
    ask(
        h,
        AgentConfRequest::AddParticipants(add, Default::default()),
    )
    .expect("accepted");
    answer_phone(h, number);
}

/// The phone `number` answers the INVITE the core sent it; returns that INVITE.
fn answer_phone(h: &mut Harness, number: &str) -> Request {
    let wire = h.take_wire();
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite && r.uri.to_string().contains(number))
        .unwrap_or_else(|| panic!("an INVITE to {number}"))
        .clone();
    answer_trunk_invite(h, &wire, number);
    h.take_wire(); // the ACK
    invite
}

/// The phone of `invite`'s call hangs up: its BYE, answered 200.
fn hang_up(h: &mut Harness, invite: &Request, n: u32) {
    h.sip_from(TRUNK, trunk_bye(invite, n));
    let answered = statuses(&h.take_wire());
    assert_eq!(answered, [(200, "BYE".to_string())], "the BYE is answered");
}

/// Answers the BYEs in `wire`.
fn answer_byes(h: &mut Harness, wire: &[SipMessage]) {
    for bye in requests(wire)
        .into_iter()
        .filter(|r| r.method == Method::Bye)
    {
        h.sip_from(
            TRUNK,
            SipMessage::Response(crate::sip::message::Response::for_request(bye, 200, "OK")),
        );
    }
}

#[test]
fn the_conference_warns_before_its_end_can_be_prolonged_and_ends_on_time() {
    let mut h = Harness::new();
    chaired(&mut h, 4, 1);
    h.advance(Duration::from_secs(3 * 60));
    assert_eq!(types(&chair_events(&mut h)), ["AgentConf_Timeout"]);
    // Two more minutes: the warning comes again a minute before the new end.
    ask(
        &mut h,
        AgentConfRequest::Prolong(ProlongTime { minutes: 2 }),
    )
    .expect("prolonged");
    h.advance(Duration::from_secs(60));
    assert!(chair_events(&mut h).is_empty(), "not at the old end");
    h.advance(Duration::from_secs(61));
    assert_eq!(types(&chair_events(&mut h)), ["AgentConf_Timeout"]);
    h.advance(Duration::from_secs(60));
    assert_eq!(
        types(&chair_events(&mut h)),
        [
            "AgentOther_PhoneRelease",
            "AgentConf_SelfLeaveResult",
            "AgentState_Ready"
        ]
    );
    let wire = h.take_wire();
    // One dialog hung up (its BYE may have been sent again while time went on).
    let mut dialogs: Vec<String> = requests(&wire)
        .iter()
        .filter(|r| r.method == Method::Bye)
        .map(|r| r.headers.get("Call-ID").unwrap_or_default().to_string())
        .collect();
    dialogs.dedup();
    assert_eq!(dialogs.len(), 1, "the chair's phone gets BYE");
    answer_byes(&mut h, &wire);
    assert!(ask(&mut h, AgentConfRequest::Release)
        .unwrap_err()
        .starts_with("101-001"));
    h.assert_no_leaks();
}

#[test]
fn a_participant_hanging_up_leaves_and_the_chairs_phone_hanging_up_ends_the_conference() {
    let mut h = Harness::new();
    let body = json!({"memberNum": 4, "time": 60, "promptTime": 5}).to_string();
    let request = RequestAgentConf::from_json(body.as_bytes()).expect("a request");
    ask(&mut h, AgentConfRequest::Request(request)).expect("accepted");
    let chair_invite = answer_phone(&mut h, "6001");
    chair_events(&mut h);
    let add = |h: &mut Harness, number: &str| {
        let body = json!({"addresses": [{"addressType": 6, "address": number}]}).to_string();
        let add = BatchAddParticipant::from_json(body.as_bytes()).expect("a request");
        ask(
            h,
            AgentConfRequest::AddParticipants(add, Default::default()),
        )
        .expect("accepted");
        answer_phone(h, number)
    };
    let first = add(&mut h, "7001");
    add(&mut h, "7002");
    assert_eq!(
        types(&chair_events(&mut h)),
        [
            "AgentConf_ParticipantChanged",
            "AgentConf_ParticipantChanged"
        ]
    );
    // 7001 hangs up: the chair hears "left, hung up".
    hang_up(&mut h, &first, 1);
    let events = chair_events(&mut h);
    assert_eq!(types(&events), ["AgentConf_ParticipantChanged"]);
    assert_eq!(events[0].1["changeType"], 1);
    assert_eq!(events[0].1["changeReason"], 2);
    assert_eq!(events[0].1["participant"], "7001");
    // The chair's phone hangs up: the conference ends, 7002 gets BYE.
    hang_up_expecting_bye(&mut h, &chair_invite);
    let events = chair_events(&mut h);
    assert_eq!(
        types(&events),
        [
            "AgentOther_PhoneRelease",
            "AgentConf_SelfLeaveResult",
            "AgentState_Ready"
        ]
    );
    assert_eq!(events[0].1["phoneState"], 2, "the agent hung up");
    answer_trunk_byes(&mut h);
    assert!(h.core.conferences.is_empty());
    h.assert_no_leaks();
}

#[test]
fn a_chair_that_signs_out_ends_its_conference() {
    let mut h = Harness::new();
    chaired(&mut h, 60, 5);
    add_phone(&mut h, "7001");
    chair_events(&mut h);
    ask(&mut h, AgentConfRequest::SignedOut).expect("handled");
    answer_trunk_byes(&mut h);
    assert!(h.core.agent_confs.is_empty() && h.core.conferences.is_empty());
    assert!(ask(&mut h, AgentConfRequest::QueryConfInfos)
        .unwrap_err()
        .starts_with("101-001"));
    let _ = Participant::Agent(agent(1001));
    h.assert_no_leaks();
}

/// The chair's phone hangs up: its BYE is answered, and the others' phones get BYE.
fn hang_up_expecting_bye(h: &mut Harness, invite: &Request) {
    h.sip_from(TRUNK, trunk_bye(invite, 99));
    let wire = h.take_wire();
    assert!(statuses(&wire).contains(&(200, "BYE".to_string())));
    assert_eq!(
        requests(&wire)
            .iter()
            .filter(|r| r.method == Method::Bye)
            .count(),
        1,
        "the remaining participant's phone gets BYE"
    );
    answer_byes(h, &wire);
}

#[test]
fn the_chair_hands_over_the_chair_holds_a_phone_and_may_then_leave() {
    use crate::agent_gateway::requests::{ApplyToShiftPresident, ParticipantTarget};
    let mut h = Harness::new();
    chaired(&mut h, 60, 5);
    // Agent 1002 (signed in on 6002) is invited, answers, and its phone answers.
    let body = json!({"addresses": [{"addressType": 9, "address": "1002"}]}).to_string();
    let add = BatchAddParticipant::from_json(body.as_bytes()).expect("a request");
    let phones = [(agent(1002), phone("6002"))].into_iter().collect();
    ask(&mut h, AgentConfRequest::AddParticipants(add, phones)).expect("invited");
    let ringing: Vec<_> = h.core.take_agent_events();
    assert!(ringing
        .iter()
        .any(|(a, e)| *a == agent(1002) && e.event_type == "AgentConf_Ringing"));
    ask_as(&mut h, 1002, "6002", AgentConfRequest::Answer).expect("answered");
    answer_phone(&mut h, "6002");
    add_phone(&mut h, "7001");
    h.core.take_agent_events();
    // Hold 7001: a re-INVITE with sendonly to its phone, and the members hear of it.
    let target = ParticipantTarget {
        participant: Participant::Phone(phone("7001")),
    };
    ask(&mut h, AgentConfRequest::Hold(target, true)).expect("held");
    let wire = h.take_wire();
    let reinvite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("a re-INVITE")
        .clone();
    assert!(String::from_utf8_lossy(&reinvite.body).contains("a=sendonly"));
    let held: Vec<_> = h.core.take_agent_events();
    assert!(held.iter().any(|(a, e)| *a == agent(1002)
        && e.content["changeType"] == 5
        && e.content["participant"] == "7001"));
    // The chair cannot hand the chair to itself; it hands it to 1002, then may leave.
    let to_self = ApplyToShiftPresident {
        dest_agent: agent(1001),
    };
    assert!(ask(&mut h, AgentConfRequest::ShiftPresident(to_self))
        .unwrap_err()
        .starts_with("101-005"));
    let to_1002 = ApplyToShiftPresident {
        dest_agent: agent(1002),
    };
    ask(&mut h, AgentConfRequest::ShiftPresident(to_1002)).expect("handed over");
    let events = h.core.take_agent_events();
    assert!(events
        .iter()
        .any(|(a, e)| *a == agent(1002) && e.event_type == "AgentConf_PresidentChanged"));
    assert!(ask_as(&mut h, 1002, "6002", AgentConfRequest::Leave)
        .unwrap_err()
        .starts_with("101-007"));
    ask(&mut h, AgentConfRequest::Leave).expect("the old chair leaves");
    let events = chair_events(&mut h);
    assert_eq!(
        types(&events),
        [
            "AgentOther_PhoneRelease",
            "AgentConf_SelfLeaveResult",
            "AgentState_Ready"
        ]
    );
    // The new chair releases the rest.
    ask_as(&mut h, 1002, "6002", AgentConfRequest::Release).expect("released");
    answer_trunk_byes(&mut h);
    h.assert_no_leaks();
}

#[test]
fn speak_only_and_neither_take_the_conference_away_from_the_participants_ears() {
    use crate::agent_gateway::requests::ChangeParticipantMode;
    let mut h = Harness::new();
    chaired(&mut h, 60, 5);
    add_phone(&mut h, "7001");
    chair_events(&mut h);
    let spec = |h: &Harness| {
        let (&connection, _) = h
            .core
            .agent_connection
            .iter()
            .find(|(_, (_, member))| *member == 1)
            .expect("7001 joined");
        let room = h.core.connections[&connection]
            .conference
            .expect("in the room");
        h.core.conferences[&room].members[&connection].spec
    };
    for (attribute, muted, deaf, told) in [
        (2, false, true, None),
        (4, true, true, None),
        (1, true, false, Some(3)),
        (3, false, false, Some(4)),
    ] {
        let body = json!({"attribute": attribute, "addressType": 6, "address": "7001"}).to_string();
        let mode = ChangeParticipantMode::from_json(body.as_bytes()).expect("a request");
        ask(&mut h, AgentConfRequest::ChangeMode(mode)).expect("changed");
        let s = spec(&h);
        assert_eq!((s.muted, s.deaf), (muted, deaf), "attribute {attribute}");
        let told_now: Vec<u64> = h
            .core
            .take_agent_events()
            .into_iter()
            .filter_map(|(_, e)| e.content["changeType"].as_u64())
            .collect();
        // The chair hears of 1 and 3 only, as the vendor's gateway tells.
        assert_eq!(
            told_now,
            told.into_iter().collect::<Vec<u64>>(),
            "attribute {attribute}"
        );
    }
    ask(&mut h, AgentConfRequest::Release).expect("released");
    answer_trunk_byes(&mut h);
    h.assert_no_leaks();
}

#[test]
fn releasing_while_a_participants_phone_rings_cancels_its_call() {
    let mut h = Harness::new();
    chaired(&mut h, 60, 5);
    let body = json!({"addresses": [{"addressType": 6, "address": "7001"}]}).to_string();
    let add = BatchAddParticipant::from_json(body.as_bytes()).expect("a request");
    ask(
        &mut h,
        AgentConfRequest::AddParticipants(add, Default::default()),
    )
    .expect("accepted");
    let wire = h.take_wire();
    let invite = requests(&wire)
        .into_iter()
        .find(|r| r.method == Method::Invite && r.uri.to_string().contains("7001"))
        .expect("7001 is called")
        .clone();
    // 7001 rings; the chair releases before it answers.
    trunk_rings(&mut h, &invite);
    ask(&mut h, AgentConfRequest::Release).expect("released");
    let wire = h.take_wire();
    trunk_accepts_cancel(&mut h, &wire, &invite);
    answer_byes(&mut h, &wire);
    h.assert_no_leaks();
}

#[test]
fn an_agent_conference_beeps_on_joins_when_asked_and_is_no_room_to_dial_into() {
    let mut h = Harness::new();
    let body = json!({"memberNum": 4, "beepTone": true}).to_string();
    let request = RequestAgentConf::from_json(body.as_bytes()).expect("a request");
    ask(&mut h, AgentConfRequest::Request(request)).expect("accepted");
    answer_phone(&mut h, "6001");
    let (&id, room) = h.core.conferences.iter().next().expect("the conference");
    assert_eq!(room.name.as_deref(), Some("agentconf-1"));
    assert!(
        h.core.rooms.is_empty(),
        "not a room a conference route could join"
    );
    assert!(
        h.core
            .engine
            .conferences_with_join_tone
            .contains(&u64::from(id)),
        "beepTone: the join tone"
    );
    ask(&mut h, AgentConfRequest::Release).expect("released");
    answer_trunk_byes(&mut h);
    h.assert_no_leaks();
}

/// Agent 1001 asks for a conference; returns the INVITE its phone 6001 is called with, after
/// the events so far (busy, the phone alerting).
fn request_ringing(h: &mut Harness) -> Request {
    let body = json!({"memberNum": 4, "time": 60, "promptTime": 5}).to_string();
    let request = RequestAgentConf::from_json(body.as_bytes()).expect("a request");
    ask(h, AgentConfRequest::Request(request)).expect("accepted");
    let invite = requests(&h.take_wire())
        .into_iter()
        .find(|r| r.method == Method::Invite)
        .expect("6001 is called")
        .clone();
    assert_eq!(
        types(&chair_events(h)),
        ["AgentState_Busy", "AgentOther_PhoneAlerting"]
    );
    trunk_rings(h, &invite);
    invite
}

/// What a chair's desktop is told when its phone never answers, whichever way: the phone it
/// was told is alerting is released by the platform (`phoneState` 3), the request fails with
/// a cause, and the agent is ready again — the phone refuses (486), an application deletes
/// the phone's connection (487), the agent signs out while it rings (487).
#[test]
fn a_chairs_phone_that_never_answers_is_released_on_the_desktop_before_the_request_fails() {
    let failed = |events: &[(String, serde_json::Value)], cause: u64| {
        assert_eq!(
            types(events),
            [
                "AgentOther_PhoneRelease",
                "AgentConf_RequestFailed",
                "AgentState_Ready"
            ]
        );
        assert_eq!(events[0].1["phoneState"], 3);
        assert_eq!(events[1].1["cause"], cause);
    };

    // Busy.
    let mut h = Harness::new();
    let invite = request_ringing(&mut h);
    let busy = trunk_response(&invite, 486, "Busy Here", "far");
    h.sip_from(TRUNK, SipMessage::Response(busy));
    failed(&chair_events(&mut h), 486);
    assert!(h.core.agent_confs.is_empty());
    h.assert_no_leaks();

    // An application deletes the ringing phone's connection.
    let mut h = Harness::new();
    let invite = request_ringing(&mut h);
    let id = *h
        .core
        .agent_dialing
        .keys()
        .next()
        .expect("the phone's connection");
    h.action(super::MediaAction::Delete {
        connection: Some(id),
        conference: None,
    })
    .expect("deleted");
    failed(&chair_events(&mut h), 487);
    let wire = h.take_wire();
    trunk_accepts_cancel(&mut h, &wire, &invite);
    assert!(h.core.agent_confs.is_empty());
    h.assert_no_leaks();

    // The chair signs out while it rings.
    let mut h = Harness::new();
    let invite = request_ringing(&mut h);
    ask(&mut h, AgentConfRequest::SignedOut).expect("handled");
    failed(&chair_events(&mut h), 487);
    let wire = h.take_wire();
    trunk_accepts_cancel(&mut h, &wire, &invite);
    h.assert_no_leaks();
}
