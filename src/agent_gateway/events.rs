//! Agent events as the desktops receive them from the long poll.
//!
//! Owns: the event vocabulary the agent-conference feature emits — `eventType` names, each
//! event's `content` with the vendor's field names and codes — and the poll envelope
//! `{"message":"","retcode":"0","event":{...}}`.
//! Must not: read the clock (the shell stamps `eventGenTime` from its wall clock and passes it
//! in), queue or route events (`sessions` does), or decide when an event is due (the
//! conference logic does).
//!
//! `content` keys are written in alphabetical order: serde_json's map is sorted unless its
//! `preserve_order` feature is on, and sorted insertion makes the text the same either way.
//! Events without content carry `"content":null`, as the vendor's gateway sends them.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::address::{AgentId, Participant};
use super::retcode::{GatewayError, Retcode};

/// The `eventType` names this module produces.
pub mod event_type {
    /// The agent is idle.
    pub const AGENT_STATE_READY: &str = "AgentState_Ready";
    /// The agent is in a call.
    pub const AGENT_STATE_BUSY: &str = "AgentState_Busy";
    /// The agent's phone rings (a call we placed to it).
    pub const PHONE_ALERTING: &str = "AgentOther_PhoneAlerting";
    /// The agent's phone went off-hook (answered).
    pub const PHONE_OFFHOOK: &str = "AgentOther_PhoneOffhook";
    /// The agent's phone went on-hook.
    pub const PHONE_RELEASE: &str = "AgentOther_PhoneRelease";
    /// The conference exists and the chair is in it.
    pub const CONF_REQUEST_SUCCESS: &str = "AgentConf_RequestSuccess";
    /// The conference could not be created.
    pub const CONF_REQUEST_FAILED: &str = "AgentConf_RequestFailed";
    /// This agent joined the conference.
    pub const CONF_SELF_JOIN_RESULT: &str = "AgentConf_SelfJoinResult";
    /// This agent left the conference.
    pub const CONF_SELF_LEAVE_RESULT: &str = "AgentConf_SelfLeaveResult";
    /// This agent is invited; it answers or rejects.
    pub const CONF_RINGING: &str = "AgentConf_Ringing";
    /// The conference reached `promptTime` before its end.
    pub const CONF_TIMEOUT: &str = "AgentConf_Timeout";
    /// This agent became the chairperson.
    pub const CONF_PRESIDENT_CHANGED: &str = "AgentConf_PresidentChanged";
    /// Another participant joined, left, or changed state.
    pub const CONF_PARTICIPANT_CHANGED: &str = "AgentConf_ParticipantChanged";
    /// A recording of the agent's call stopped.
    pub const STOP_RECORD_DONE: &str = "AgentMediaEvent_StopRecordDone";
}

/// One event for one agent, as it goes into `event` of a poll answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentEvent {
    /// `eventType`: one of [`event_type`].
    #[serde(rename = "eventType")]
    pub event_type: &'static str,
    /// `workNo`: the agent the event is for.
    #[serde(rename = "workNo")]
    pub work_no: String,
    /// `eventGenTime`: wall-clock milliseconds since the Unix epoch, from the shell.
    #[serde(rename = "eventGenTime")]
    pub gen_time_ms: u64,
    /// `content`: the event's fields, or null.
    pub content: Value,
}

impl AgentEvent {
    fn new(event_type: &'static str, agent: AgentId, gen_time_ms: u64, content: Value) -> Self {
        AgentEvent {
            event_type,
            work_no: agent.to_string(),
            gen_time_ms,
            content,
        }
    }

    /// `AgentState_Ready`: the agent is idle again (after a conference, on release).
    pub fn ready(agent: AgentId, gen_time_ms: u64) -> Self {
        AgentEvent::new(
            event_type::AGENT_STATE_READY,
            agent,
            gen_time_ms,
            Value::Null,
        )
    }

    /// `AgentState_Busy`: the agent is in a call (the conference is being set up).
    pub fn busy(agent: AgentId, gen_time_ms: u64) -> Self {
        AgentEvent::new(
            event_type::AGENT_STATE_BUSY,
            agent,
            gen_time_ms,
            Value::Null,
        )
    }

    /// `AgentOther_PhoneAlerting`: the phone we are calling rings. No content: desktops read
    /// an empty content as "a call the platform placed", and a content as an incoming call
    /// whose `callid`/`caller` they then expect.
    pub fn phone_alerting(agent: AgentId, gen_time_ms: u64) -> Self {
        AgentEvent::new(event_type::PHONE_ALERTING, agent, gen_time_ms, Value::Null)
    }

    /// `AgentOther_PhoneOffhook` `{"type":"main"}`: the agent answered the phone.
    pub fn phone_offhook(agent: AgentId, gen_time_ms: u64) -> Self {
        let content = json!({ "type": "main" });
        AgentEvent::new(event_type::PHONE_OFFHOOK, agent, gen_time_ms, content)
    }

    /// `AgentOther_PhoneRelease` `{"phoneState":3|2}`: the phone's call ended.
    pub fn phone_release(agent: AgentId, gen_time_ms: u64, by: PhoneReleasedBy) -> Self {
        let content = json!({ "phoneState": by.code() });
        AgentEvent::new(event_type::PHONE_RELEASE, agent, gen_time_ms, content)
    }

    /// `AgentConf_RequestSuccess` `{"confId":..}`: the conference exists, the chair is in it.
    pub fn conf_request_success(agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::conf(
            event_type::CONF_REQUEST_SUCCESS,
            agent,
            gen_time_ms,
            conf_id,
        )
    }

    /// `AgentConf_RequestFailed` `{"cause":..}`: the conference was not created (the chair's
    /// phone did not answer, ...).
    pub fn conf_request_failed(agent: AgentId, gen_time_ms: u64, cause: u32) -> Self {
        let content = json!({ "cause": cause });
        AgentEvent::new(event_type::CONF_REQUEST_FAILED, agent, gen_time_ms, content)
    }

    /// `AgentConf_SelfJoinResult` `{"confId":..}`: this agent is in the conference.
    pub fn conf_self_join(agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::conf(
            event_type::CONF_SELF_JOIN_RESULT,
            agent,
            gen_time_ms,
            conf_id,
        )
    }

    /// `AgentConf_SelfLeaveResult` `{"confId":..}`: this agent is out of the conference.
    pub fn conf_self_leave(agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::conf(
            event_type::CONF_SELF_LEAVE_RESULT,
            agent,
            gen_time_ms,
            conf_id,
        )
    }

    /// `AgentConf_Ringing` `{"confId":..}`: this agent is invited (answeragentconf /
    /// rejectagentconf).
    pub fn conf_ringing(agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::conf(event_type::CONF_RINGING, agent, gen_time_ms, conf_id)
    }

    /// `AgentConf_Timeout` `{"confId":..}`: `promptTime` minutes are left.
    pub fn conf_timeout(agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::conf(event_type::CONF_TIMEOUT, agent, gen_time_ms, conf_id)
    }

    /// `AgentConf_PresidentChanged` `{"confId":..}`: this agent is now the chairperson.
    pub fn conf_president_changed(agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::conf(
            event_type::CONF_PRESIDENT_CHANGED,
            agent,
            gen_time_ms,
            conf_id,
        )
    }

    /// `AgentConf_ParticipantChanged`: `participant` joined, left (with `changeReason`), or
    /// changed state.
    pub fn conf_participant_changed(
        agent: AgentId,
        gen_time_ms: u64,
        conf_id: u64,
        change: ParticipantChange,
        participant: &Participant,
    ) -> Self {
        // Inserted in key order (see the module docs); `changeReason` sorts first.
        let mut content = Map::new();
        if let Some(reason) = change.change_reason() {
            content.insert("changeReason".into(), json!(reason.code()));
        }
        content.insert("changeType".into(), json!(change.change_type()));
        content.insert("confId".into(), json!(conf_id));
        content.insert("participant".into(), json!(participant.address()));
        let participant_type = participant.address_type().code();
        content.insert("participantType".into(), json!(participant_type));
        content.insert("result".into(), json!(0));
        let content = Value::Object(content);
        AgentEvent::new(
            event_type::CONF_PARTICIPANT_CHANGED,
            agent,
            gen_time_ms,
            content,
        )
    }

    /// `AgentMediaEvent_StopRecordDone`: the recording of the agent's call stopped.
    pub fn stop_record_done(agent: AgentId, gen_time_ms: u64, record: &RecordingStopped) -> Self {
        let content = json!({
            "beginTime": record.begin_ms,
            "callId": record.call_id,
            "endTime": record.end_ms,
            "fileMediaType": 1,
            "recordFormat": 0,
            "taskId": record.task_id,
        });
        AgentEvent::new(event_type::STOP_RECORD_DONE, agent, gen_time_ms, content)
    }

    fn conf(event_type: &'static str, agent: AgentId, gen_time_ms: u64, conf_id: u64) -> Self {
        AgentEvent::new(event_type, agent, gen_time_ms, json!({ "confId": conf_id }))
    }
}

/// Who hung up the agent's phone (`phoneState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneReleasedBy {
    /// 2: the agent hung up.
    Agent,
    /// 3: the platform released the call (conference released, participant removed).
    Platform,
}

impl PhoneReleasedBy {
    /// The vendor's `phoneState`.
    pub fn code(self) -> u8 {
        match self {
            PhoneReleasedBy::Agent => 2,
            PhoneReleasedBy::Platform => 3,
        }
    }
}

/// What happened to a participant (`changeType`, and `changeReason` for a leave).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantChange {
    /// 0: joined.
    Joined,
    /// 1: left, for a reason.
    Left(LeaveReason),
    /// 2: the chair moved.
    ChairChanged,
    /// 3: may no longer speak (listen-only).
    Muted,
    /// 4: may speak again.
    Unmuted,
    /// 5: held.
    Held,
    /// 6: no longer held.
    Unheld,
}

impl ParticipantChange {
    /// `changeType`.
    pub fn change_type(self) -> u8 {
        match self {
            ParticipantChange::Joined => 0,
            ParticipantChange::Left(_) => 1,
            ParticipantChange::ChairChanged => 2,
            ParticipantChange::Muted => 3,
            ParticipantChange::Unmuted => 4,
            ParticipantChange::Held => 5,
            ParticipantChange::Unheld => 6,
        }
    }

    /// `changeReason`: only a leave has one.
    pub fn change_reason(self) -> Option<LeaveReason> {
        match self {
            ParticipantChange::Left(reason) => Some(reason),
            _ => None,
        }
    }
}

/// Why a participant left (`changeReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// 0: left on its own (`requestleaveagentconf`, `rejectagentconf`).
    Left,
    /// 1: removed by the chair (`batchremoveparticipant`).
    RemovedByChair,
    /// 2: hung up its phone.
    HungUp,
    /// 3: the conference ended (released or timed out).
    ConferenceEnded,
    /// 4: the agent signed out (or was signed out).
    SignedOut,
    /// 6: another forced leave.
    OtherForced,
}

impl LeaveReason {
    /// The vendor's code.
    pub fn code(self) -> u8 {
        match self {
            LeaveReason::Left => 0,
            LeaveReason::RemovedByChair => 1,
            LeaveReason::HungUp => 2,
            LeaveReason::ConferenceEnded => 3,
            LeaveReason::SignedOut => 4,
            LeaveReason::OtherForced => 6,
        }
    }
}

/// A stopped recording, for `AgentMediaEvent_StopRecordDone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingStopped {
    /// `beginTime`: wall-clock ms when recording began.
    pub begin_ms: u64,
    /// `endTime`: wall-clock ms when it stopped.
    pub end_ms: u64,
    /// `taskId`: the recording's id (the recording store's id).
    pub task_id: String,
    /// `callId`: the recorded call's id.
    pub call_id: String,
}

/// The answer to `GET .../agentevent/{agentid}`: `{"message":"","retcode":"0","event":..}`.
///
/// One event per answer, as the vendor's single-agent poll. An answer without an event (the
/// long poll's wait ran out) carries `"event":null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollResponse {
    /// Empty on success; what went wrong otherwise.
    pub message: String,
    /// The outcome.
    pub retcode: Retcode,
    /// The event, or null.
    pub event: Option<AgentEvent>,
}

impl PollResponse {
    /// An answer carrying `event`.
    pub fn event(event: AgentEvent) -> Self {
        PollResponse {
            message: String::new(),
            retcode: Retcode::Success,
            event: Some(event),
        }
    }

    /// An answer with no event.
    pub fn empty() -> Self {
        PollResponse {
            message: String::new(),
            retcode: Retcode::Success,
            event: None,
        }
    }

    /// An answer for a refused poll (wrong Guid, not signed in).
    pub fn error(error: &GatewayError) -> Self {
        PollResponse {
            message: error.message.clone(),
            retcode: error.retcode,
            event: None,
        }
    }

    /// The JSON text of the body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a PollResponse is strings, a code and JSON values")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentId {
        AgentId::parse(id).expect("a test agent id")
    }

    const T: u64 = 1_700_000_000_123;

    fn json_of(event: AgentEvent) -> String {
        PollResponse::event(event).to_json()
    }

    #[test]
    fn poll_envelope_is_exact() {
        assert_eq!(
            json_of(AgentEvent::ready(agent("8052"), T)),
            concat!(
                r#"{"message":"","retcode":"0","event":{"eventType":"AgentState_Ready","#,
                r#""workNo":"8052","eventGenTime":1700000000123,"content":null}}"#
            )
        );
    }

    #[test]
    fn empty_poll_has_a_null_event() {
        assert_eq!(
            PollResponse::empty().to_json(),
            r#"{"message":"","retcode":"0","event":null}"#
        );
    }

    #[test]
    fn refused_poll_says_why() {
        let error = GatewayError::new(Retcode::NotSignedIn, "agent 101 is not signed in");
        assert_eq!(
            PollResponse::error(&error).to_json(),
            r#"{"message":"agent 101 is not signed in","retcode":"100-006","event":null}"#
        );
    }

    /// The `eventType` and `content` of an event, as JSON text.
    fn body(event: AgentEvent) -> (String, String) {
        assert_eq!(event.gen_time_ms, T);
        let content = serde_json::to_string(&event.content).expect("content serializes");
        (event.event_type.to_owned(), content)
    }

    #[test]
    fn state_and_phone_events() {
        let a = agent("101");
        assert_eq!(
            body(AgentEvent::busy(a, T)),
            ("AgentState_Busy".into(), "null".into())
        );
        assert_eq!(
            body(AgentEvent::phone_alerting(a, T)),
            ("AgentOther_PhoneAlerting".into(), "null".into())
        );
        assert_eq!(
            body(AgentEvent::phone_offhook(a, T)),
            (
                "AgentOther_PhoneOffhook".into(),
                r#"{"type":"main"}"#.into()
            )
        );
        assert_eq!(
            body(AgentEvent::phone_release(a, T, PhoneReleasedBy::Platform)),
            (
                "AgentOther_PhoneRelease".into(),
                r#"{"phoneState":3}"#.into()
            )
        );
        assert_eq!(
            body(AgentEvent::phone_release(a, T, PhoneReleasedBy::Agent)).1,
            r#"{"phoneState":2}"#
        );
    }

    #[test]
    fn conference_events_carry_the_conf_id() {
        let a = agent("101");
        let cases = [
            (
                AgentEvent::conf_request_success(a, T, 42),
                "AgentConf_RequestSuccess",
            ),
            (
                AgentEvent::conf_self_join(a, T, 42),
                "AgentConf_SelfJoinResult",
            ),
            (
                AgentEvent::conf_self_leave(a, T, 42),
                "AgentConf_SelfLeaveResult",
            ),
            (AgentEvent::conf_ringing(a, T, 42), "AgentConf_Ringing"),
            (AgentEvent::conf_timeout(a, T, 42), "AgentConf_Timeout"),
            (
                AgentEvent::conf_president_changed(a, T, 42),
                "AgentConf_PresidentChanged",
            ),
        ];
        for (event, name) in cases {
            assert_eq!(
                body(event),
                (name.to_owned(), r#"{"confId":42}"#.to_owned())
            );
        }
        assert_eq!(
            body(AgentEvent::conf_request_failed(a, T, 21234)),
            (
                "AgentConf_RequestFailed".into(),
                r#"{"cause":21234}"#.into()
            )
        );
    }

    #[test]
    fn participant_changed_has_a_reason_only_on_leave() {
        let a = agent("101");
        let phone = Participant::parse(6, "5551234").expect("a phone participant");
        let other = Participant::parse(9, "2001").expect("an agent participant");
        assert_eq!(
            body(AgentEvent::conf_participant_changed(
                a,
                T,
                7,
                ParticipantChange::Joined,
                &phone
            )),
            (
                "AgentConf_ParticipantChanged".into(),
                concat!(
                    r#"{"changeType":0,"confId":7,"participant":"5551234","#,
                    r#""participantType":6,"result":0}"#
                )
                .into()
            )
        );
        let ended = ParticipantChange::Left(LeaveReason::ConferenceEnded);
        assert_eq!(
            body(AgentEvent::conf_participant_changed(a, T, 7, ended, &other)).1,
            concat!(
                r#"{"changeReason":3,"changeType":1,"confId":7,"participant":"2001","#,
                r#""participantType":9,"result":0}"#
            )
        );
        let codes: Vec<(u8, Option<u8>)> = [
            ParticipantChange::Joined,
            ParticipantChange::Left(LeaveReason::Left),
            ParticipantChange::ChairChanged,
            ParticipantChange::Muted,
            ParticipantChange::Unmuted,
            ParticipantChange::Held,
            ParticipantChange::Unheld,
        ]
        .iter()
        .map(|c| (c.change_type(), c.change_reason().map(LeaveReason::code)))
        .collect();
        assert_eq!(
            codes,
            [
                (0, None),
                (1, Some(0)),
                (2, None),
                (3, None),
                (4, None),
                (5, None),
                (6, None)
            ]
        );
        let reasons: Vec<u8> = [
            LeaveReason::Left,
            LeaveReason::RemovedByChair,
            LeaveReason::HungUp,
            LeaveReason::ConferenceEnded,
            LeaveReason::SignedOut,
            LeaveReason::OtherForced,
        ]
        .iter()
        .map(|r| r.code())
        .collect();
        assert_eq!(reasons, [0, 1, 2, 3, 4, 6]);
    }

    #[test]
    fn stop_record_done_carries_the_times() {
        let record = RecordingStopped {
            begin_ms: 1_700_000_000_000,
            end_ms: 1_700_000_060_000,
            task_id: "rec-1".into(),
            call_id: "call-1".into(),
        };
        assert_eq!(
            body(AgentEvent::stop_record_done(agent("101"), T, &record)),
            (
                "AgentMediaEvent_StopRecordDone".into(),
                concat!(
                    r#"{"beginTime":1700000000000,"callId":"call-1","endTime":1700000060000,"#,
                    r#""fileMediaType":1,"recordFormat":0,"taskId":"rec-1"}"#
                )
                .into()
            )
        );
    }
}
