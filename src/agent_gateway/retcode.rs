//! The CC-Gateway's answer vocabulary: retcodes and the `{message, retcode, result}` envelope.
//!
//! Owns: the retcode table of vendor-apis.md §1.3 as [`Retcode`], the wire error
//! [`GatewayError`] every other module's error enum maps into, and the [`Response`] envelope
//! with the result shapes the onlineagent and agentconf operations answer with.
//! Must not: decide which retcode an operation returns — the module that owns a rule owns its
//! error enum and maps it here — nor know about HTTP. The vendor answers HTTP 200 with the
//! outcome in `retcode` (agent desktops only parse 200 bodies), so the listener always sends
//! 200 and this body.
//!
//! Every answer has a `message`: "success" on success, otherwise what went wrong, in words an
//! integrator can act on. Messages never repeat phone numbers or passwords from the request.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use super::address::{AgentId, Participant};
use super::sessions::Guid;

/// A CC-Gateway result code, sent as the string in `retcode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retcode {
    /// `0`: the request was accepted.
    Success,
    /// `000-002`: a URL or body parameter is invalid (malformed JSON, wrong type, out of range).
    BadParameter,
    /// `000-003`: no permission to invoke the interface.
    NoPermission,
    /// `100-002`: the agent is already signed in (the desktop then calls `forcelogin`).
    AlreadySignedIn,
    /// `100-006`: the agent is not signed in, or the Guid is wrong or expired.
    NotSignedIn,
    /// `100-007`: an internal failure; never for a bad request.
    Internal,
    /// `100-008`: the agent has signed out.
    SignedOut,
    /// `101-001`: the agent has no phone conference.
    NoConference,
    /// `101-002`: the agent is not the chairperson of its conference.
    NotChair,
    /// `101-003`: the agent is already in a conference.
    AlreadyInConference,
    /// `101-004`: only an inspector may query the VDN's conferences.
    NotInspector,
    /// `101-005`: the chairperson cannot hand the chair to itself.
    ChairToSelf,
    /// `101-006`: the chairperson cannot remove itself.
    ChairDeletesSelf,
    /// `101-007`: the chairperson cannot leave; it must release the conference.
    ChairCannotLeave,
}

impl Retcode {
    /// Every retcode, in table order.
    pub const ALL: [Retcode; 14] = [
        Retcode::Success,
        Retcode::BadParameter,
        Retcode::NoPermission,
        Retcode::AlreadySignedIn,
        Retcode::NotSignedIn,
        Retcode::Internal,
        Retcode::SignedOut,
        Retcode::NoConference,
        Retcode::NotChair,
        Retcode::AlreadyInConference,
        Retcode::NotInspector,
        Retcode::ChairToSelf,
        Retcode::ChairDeletesSelf,
        Retcode::ChairCannotLeave,
    ];

    /// The wire form: `"0"`, `"000-002"`, ...
    pub fn code(self) -> &'static str {
        match self {
            Retcode::Success => "0",
            Retcode::BadParameter => "000-002",
            Retcode::NoPermission => "000-003",
            Retcode::AlreadySignedIn => "100-002",
            Retcode::NotSignedIn => "100-006",
            Retcode::Internal => "100-007",
            Retcode::SignedOut => "100-008",
            Retcode::NoConference => "101-001",
            Retcode::NotChair => "101-002",
            Retcode::AlreadyInConference => "101-003",
            Retcode::NotInspector => "101-004",
            Retcode::ChairToSelf => "101-005",
            Retcode::ChairDeletesSelf => "101-006",
            Retcode::ChairCannotLeave => "101-007",
        }
    }

    /// The vendor's meaning of the code, for a message when nothing more specific is known.
    pub fn meaning(self) -> &'static str {
        match self {
            Retcode::Success => "success",
            Retcode::BadParameter => "a parameter in the URL or the body is invalid",
            Retcode::NoPermission => "no permission to invoke the interface",
            Retcode::AlreadySignedIn => "the agent has signed in",
            Retcode::NotSignedIn => "the agent is not signed in",
            Retcode::Internal => "an internal error occurred",
            Retcode::SignedOut => "the agent has signed out",
            Retcode::NoConference => "the agent has no phone conference",
            Retcode::NotChair => "the agent is not the chairperson of the conference",
            Retcode::AlreadyInConference => "the agent is already in a conference",
            Retcode::NotInspector => "only an inspector may query the VDN's conferences",
            Retcode::ChairToSelf => "the chairperson cannot transfer the chair to itself",
            Retcode::ChairDeletesSelf => "the chairperson cannot remove itself",
            Retcode::ChairCannotLeave => {
                "the chairperson cannot leave the conference; release it instead"
            }
        }
    }
}

impl fmt::Display for Retcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Retcode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// A failed request as the wire sees it: a retcode and a message that says what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// Never [`Retcode::Success`].
    pub retcode: Retcode,
    /// What went wrong, for the integrator reading the answer.
    pub message: String,
}

impl GatewayError {
    /// An error with `retcode` and `message`.
    pub fn new(retcode: Retcode, message: impl Into<String>) -> Self {
        debug_assert!(
            retcode != Retcode::Success,
            "an error needs a failure retcode"
        );
        GatewayError {
            retcode,
            message: message.into(),
        }
    }

    /// A `100-007`: something on our side failed; `message` says what.
    pub fn internal(message: impl Into<String>) -> Self {
        GatewayError::new(Retcode::Internal, message)
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.retcode, self.message)
    }
}

impl std::error::Error for GatewayError {}

/// The body of every non-polling answer: `{"message": ..., "retcode": ..., "result": {...}}`.
///
/// `result` is always an object (`{}` when the vendor calls it "reserved", and on errors), so a
/// desktop reading `result.x` never meets a string or null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    /// "success", or what went wrong.
    pub message: String,
    /// The outcome.
    pub retcode: Retcode,
    /// Operation-specific result; `{}` when there is none.
    pub result: Value,
}

impl Response {
    /// `{"message":"success","retcode":"0","result":{}}`.
    pub fn success() -> Self {
        Response::success_with(json!({}))
    }

    /// A success carrying `result`.
    pub fn success_with(result: Value) -> Self {
        Response {
            message: Retcode::Success.meaning().to_owned(),
            retcode: Retcode::Success,
            result,
        }
    }

    /// The answer to a failed request.
    pub fn error(error: &GatewayError) -> Self {
        Response {
            message: error.message.clone(),
            retcode: error.retcode,
            result: json!({}),
        }
    }

    /// The answer to a sign-in or forced sign-in: `result` is `{"mediatype":"TFF","workno":..}`.
    ///
    /// `mediatype` says per channel (CTI voice, WebM text chat, MailM) whether the sign-in
    /// succeeded; callbridge only carries voice. The Guid goes in the `Set-GUID` header
    /// ([`Guid::set_guid_header`]), not in the body.
    pub fn signed_in(agent: AgentId) -> Self {
        Response::success_with(json!({ "mediatype": "TFF", "workno": agent.to_string() }))
    }

    /// The answer to `updateGuid`: `result` is `{"guid": ...}`.
    pub fn guid_updated(guid: &Guid) -> Self {
        Response::success_with(json!({ "guid": guid.as_str() }))
    }

    /// The answer to `batchremoveparticipant`: `result.noExistParticipants` lists the addresses
    /// that were not in the conference, as `{"address": .., "addressType": ..}` objects.
    pub fn participants_not_found(missing: &[Participant]) -> Self {
        let missing: Vec<Value> = missing
            .iter()
            .map(|p| json!({ "address": p.address(), "addressType": p.address_type().code() }))
            .collect();
        Response::success_with(json!({ "noExistParticipants": missing }))
    }

    /// The JSON text of the body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Response is strings, a code and a JSON value")
    }
}

impl From<GatewayError> for Response {
    fn from(error: GatewayError) -> Self {
        Response::error(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_vendor_table() {
        let codes: Vec<&str> = Retcode::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "0", "000-002", "000-003", "100-002", "100-006", "100-007", "100-008", "101-001",
                "101-002", "101-003", "101-004", "101-005", "101-006", "101-007"
            ]
        );
        assert!(Retcode::ALL.iter().all(|r| !r.meaning().is_empty()));
    }

    #[test]
    fn success_envelope_is_exact() {
        assert_eq!(
            Response::success().to_json(),
            r#"{"message":"success","retcode":"0","result":{}}"#
        );
    }

    #[test]
    fn error_envelope_carries_the_message() {
        let error = GatewayError::new(Retcode::NotChair, "agent 101 is not the chairperson");
        assert_eq!(
            Response::from(error.clone()).to_json(),
            r#"{"message":"agent 101 is not the chairperson","retcode":"101-002","result":{}}"#
        );
        assert_eq!(
            error.to_string(),
            "101-002: agent 101 is not the chairperson"
        );
        assert_eq!(
            GatewayError::internal("store unavailable").retcode,
            Retcode::Internal
        );
    }

    #[test]
    fn signed_in_result_names_the_agent() {
        let agent = AgentId::parse("6001").expect("6001 is an agent id");
        assert_eq!(
            Response::signed_in(agent).to_json(),
            r#"{"message":"success","retcode":"0","result":{"mediatype":"TFF","workno":"6001"}}"#
        );
    }

    #[test]
    fn no_exist_participants_lists_addresses() {
        let missing = [
            Participant::parse(6, "88887946").expect("a phone participant"),
            Participant::parse(9, "2001").expect("an agent participant"),
        ];
        assert_eq!(
            Response::participants_not_found(&missing).to_json(),
            concat!(
                r#"{"message":"success","retcode":"0","result":{"noExistParticipants":["#,
                r#"{"address":"88887946","addressType":6},{"address":"2001","addressType":9}]}}"#
            )
        );
    }
}
