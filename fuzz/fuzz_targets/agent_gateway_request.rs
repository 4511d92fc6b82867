//! Agent gateway requests: every body parser (sign-in, the agentconf family) and the
//! `{agentid}` path segment, as the listener calls them. Oracle: no panic; every refusal names
//! a field or says why the body as a whole is wrong, in a non-empty message.
//!
//! Input: one body, given to every parser (and, as text, to the agent id parser).
#![no_main]

use callbridge::agent_gateway::requests::{
    parse_agent_path, ApplyToShiftPresident, BatchAddParticipant, BatchRemoveParticipant,
    ChangeParticipantMode, ParticipantTarget, ProlongTime, RequestAgentConf, RequestError, SignIn,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(SignIn::from_json(data).map(|r| format!("{r:?}")));
    check(RequestAgentConf::from_json(data).map(|r| format!("{r:?}")));
    check(BatchAddParticipant::from_json(data).map(|r| format!("{r:?}")));
    check(BatchRemoveParticipant::from_json(data).map(|r| format!("{r:?}")));
    check(ChangeParticipantMode::from_json(data).map(|r| format!("{r:?}")));
    check(ParticipantTarget::from_json(data).map(|r| format!("{r:?}")));
    check(ProlongTime::from_json(data).map(|r| format!("{r:?}")));
    check(ApplyToShiftPresident::from_json(data).map(|r| format!("{r:?}")));
    if let Ok(segment) = std::str::from_utf8(data) {
        check(parse_agent_path(segment).map(|id| format!("{id:?}")));
    }
});

fn check(result: Result<String, RequestError>) {
    if let Err(error) = result {
        let message = error.to_string();
        assert!(!message.is_empty());
        if let Some(field) = error.field() {
            assert!(!field.is_empty(), "empty field name: {message}");
        }
    }
}
