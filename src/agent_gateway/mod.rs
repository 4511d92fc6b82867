//! The Huawei-compatible agent gateway's pure core: who is signed in, which Guid is valid, what
//! each agent's event queue holds, and the request / response / event vocabulary of the
//! CC-Gateway's `onlineagent`, `agentevent` and `agentconf` interfaces
//! (`/agentgateway/resource/...`, vendor-apis.md §1).
//!
//! Owns:
//! - [`address`]: agent ids (101..=999999), dialable phone numbers, participants (type 6 / 9).
//! - [`requests`]: JSON bodies → typed requests; every bad body → `000-002` naming the field.
//! - [`sessions`]: sign-in / forced sign-in / sign-out, static and dynamic Guids, the poll
//!   heartbeat, bounded event queues.
//! - [`events`]: agent events with the vendor's names and codes, and the poll envelope.
//! - [`retcode`]: the retcode table, the wire error [`GatewayError`], the `{message, retcode,
//!   result}` envelope.
//!
//! Must not: read the clock (every call takes `now: Instant`, events take wall-clock ms), open
//! sockets or wait, check passwords, or touch calls, conferences and the store. Those are the
//! shell's: the HTTPS listener, the agents table, the conference logic that calls phones.
//!
//! The path of a request, e.g. `POST .../agentconf/{agentid}/batchaddparticipant`:
//! listener → [`requests::parse_agent_path`] → [`AgentSessions::authenticate`] with the `Guid`
//! header → `BatchAddParticipant::from_json(body)` → conference logic → [`Response`] (HTTP 200;
//! the outcome is in `retcode`). Every module's error enum converts into [`GatewayError`], so
//! the handler's `?` yields the vendor's retcode and a message saying what went wrong.
//!
//! The path of an event: conference logic → `AgentEvent::conf_self_leave(agent, wall_ms, id)`
//! → [`AgentSessions::push_event`] → a waiting long poll's [`AgentSessions::take_event`], or
//! the next [`AgentSessions::poll`] → [`PollResponse`], with `Set-GUID` when the poll rotated
//! the Guid.
//!
//! The path of a lost desktop: its polls stop → the shell's timer at
//! [`AgentSessions::poll_timeout`] calls [`AgentSessions::expire`] → each [`SignedOut`] goes
//! to the conference logic, which releases the agent's phone and membership (`changeReason`
//! 4). A forced sign-in returns the replaced session the same way.

pub mod address;
pub mod events;
pub mod requests;
pub mod retcode;
pub mod sessions;

#[cfg(test)]
mod requests_tests;
#[cfg(test)]
mod sessions_tests;

pub use address::{AddressError, AddressType, AgentId, Participant, PhoneNumber};
pub use events::{
    AgentEvent, LeaveReason, ParticipantChange, PhoneReleasedBy, PollResponse, RecordingStopped,
};
pub use requests::RequestError;
pub use retcode::{GatewayError, Response, Retcode};
pub use sessions::{
    AgentSessions, AuthMode, Delivery, Guid, PollOutcome, Session, SessionError, SessionId,
    SessionSettings, SignOutReason, SignedIn, SignedOut,
};
