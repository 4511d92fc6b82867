//! The recording API's result codes (the `code` attribute of `<Response>`) and its one error
//! type, [`VerbaError`], with a constructor per failure so the same failure always reads the
//! same.
//!
//! Owns: the code table (stable: clients switch on these numbers; never renumber, only add)
//! and the wording of the messages, including the seed's "not found" sentence.
//! Must not: choose a response format or an HTTP status; the handler maps and `response`
//! renders.
//!
//! Verba documents only `0` = success and, in the DeleteCall sample, `-50` for a call that was
//! not found; the other numbers are callbridge's, negative like Verba's.

use std::fmt;

use crate::store::model::{CallQuery, CallStatus, MATCHES_COUNTED};

/// Success.
pub const OK: i32 = 0;
/// Internal error: the store is unavailable or failed; retrying later may succeed.
pub const INTERNAL: i32 = -1;
/// The `action` parameter is missing or names no action callbridge knows.
pub const UNKNOWN_ACTION: i32 = -2;
/// A parameter has a value that cannot be used: empty, too long, malformed, out of range, or
/// in a combination the action does not allow (`status` without `extension`).
pub const INVALID_PARAMETER: i32 = -3;
/// A mandatory parameter is missing (`mute`, `start`, `end`, `status` with `extension`, or
/// every call selector).
pub const MISSING_PARAMETER: i32 = -4;
/// `apiKey` is missing, empty or not configured.
pub const INVALID_API_KEY: i32 = -10;
/// The API key requires authentication and `token` is missing, unknown, issued to another
/// key, or older than one hour.
pub const INVALID_TOKEN: i32 = -11;
/// `RequestToken`: wrong user name or password (or none given).
pub const WRONG_CREDENTIALS: i32 = -12;
/// No call matches the selectors (seed 04's code).
pub const CALL_NOT_FOUND: i32 = -50;
/// More than one call matches the selectors (Verba: "it will respond with error").
pub const AMBIGUOUS_CALL: i32 = -51;
/// The call has no recording, or its recording was deleted.
pub const NO_RECORDING: i32 = -52;
/// Not possible in the call's state: `MuteRecording` on a finished call, `KeepCall` after the
/// on-demand recording was discarded, ...
pub const WRONG_CALL_STATE: i32 = -53;
/// `GetMediaEncoded`: the requested media format is not the one the recording is stored in.
pub const FORMAT_NOT_AVAILABLE: i32 = -54;

/// A request that failed: its code (one of the constants above) and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbaError {
    /// One of this module's constants.
    pub code: i32,
    /// Shown as `<ErrorMessage>` (XML), a paragraph (HTML) or `error=` (TEXT).
    pub message: String,
}

impl VerbaError {
    /// Any code with any message; prefer the named constructors below.
    pub fn new(code: i32, message: impl Into<String>) -> VerbaError {
        VerbaError {
            code,
            message: message.into(),
        }
    }

    /// -1: the store (or another internal part) failed; `what` says which, for the operator.
    pub fn internal(what: impl fmt::Display) -> VerbaError {
        VerbaError::new(INTERNAL, format!("Internal error: {what}."))
    }

    /// -2: no `action` parameter.
    pub fn missing_action() -> VerbaError {
        VerbaError::new(UNKNOWN_ACTION, "Missing parameter action.")
    }

    /// -2: an `action` callbridge does not implement.
    pub fn unknown_action(action: &str) -> VerbaError {
        VerbaError::new(UNKNOWN_ACTION, format!("Unknown action {action}."))
    }

    /// -3: `name` has a value that cannot be used; `why` completes the sentence.
    pub fn invalid_parameter(name: &str, why: impl fmt::Display) -> VerbaError {
        VerbaError::new(
            INVALID_PARAMETER,
            format!("Invalid value of parameter {name}: {why}."),
        )
    }

    /// -4: the mandatory parameter `name` is missing.
    pub fn missing_parameter(name: &str) -> VerbaError {
        VerbaError::new(MISSING_PARAMETER, format!("Missing parameter {name}."))
    }

    /// -10: `apiKey` missing, empty or unknown (the same words for all three: a caller probing
    /// for keys learns nothing).
    pub fn invalid_api_key() -> VerbaError {
        VerbaError::new(INVALID_API_KEY, "Invalid or missing apiKey.")
    }

    /// -11: the key requires authentication and no `token` was given.
    pub fn token_required() -> VerbaError {
        VerbaError::new(
            INVALID_TOKEN,
            "Token required: request one with action=RequestToken.",
        )
    }

    /// -11: the token is unknown or was issued to another API key.
    pub fn invalid_token() -> VerbaError {
        VerbaError::new(INVALID_TOKEN, "Invalid token.")
    }

    /// -11: the token is older than its one-hour lifetime.
    pub fn expired_token() -> VerbaError {
        VerbaError::new(
            INVALID_TOKEN,
            "Token expired (a token lives 1 hour): request a new one.",
        )
    }

    /// -12: `RequestToken` with a wrong (or no) user name or password.
    pub fn wrong_credentials() -> VerbaError {
        VerbaError::new(WRONG_CREDENTIALS, "Wrong user name or password.")
    }

    /// -50 for an `extension` lookup, in the seed's words: "Call for extension 3123212312
    /// with status ongoing not found after 2 tries, with sleep time 1000." `status` is the
    /// status list as the client gave it (or [`status_text`]); `sleep_ms` the wait between
    /// tries.
    pub fn call_not_found_for_extension(
        extension: &str,
        status: &str,
        tries: u32,
        sleep_ms: u64,
    ) -> VerbaError {
        VerbaError::new(
            CALL_NOT_FOUND,
            format!(
                "Call for extension {extension} with status {status} not found after {tries} \
                 tries, with sleep time {sleep_ms}."
            ),
        )
    }

    /// -50 for a query: the extension form ([`Self::call_not_found_for_extension`]) when it
    /// has an `extension`, otherwise "Call with callID X not found." naming every id
    /// selector given (joined with "and").
    pub fn call_not_found(query: &CallQuery, tries: u32, sleep_ms: u64) -> VerbaError {
        match &query.extension {
            Some(extension) => VerbaError::call_not_found_for_extension(
                extension,
                &status_text(&query.statuses),
                tries,
                sleep_ms,
            ),
            None => VerbaError::new(
                CALL_NOT_FOUND,
                format!("Call with {} not found.", describe(query)),
            ),
        }
    }

    /// -51: `matches` calls match where one was expected (counted up to
    /// [`MATCHES_COUNTED`]).
    pub fn ambiguous_call(query: &CallQuery, matches: usize) -> VerbaError {
        let matches = if matches > MATCHES_COUNTED {
            format!("More than {MATCHES_COUNTED}")
        } else {
            matches.to_string()
        };
        VerbaError::new(
            AMBIGUOUS_CALL,
            format!(
                "{matches} calls match {}; give a selector that matches one call.",
                describe(query)
            ),
        )
    }

    /// -52: the call has no recording, or it was deleted.
    pub fn no_recording(call_id: &str) -> VerbaError {
        VerbaError::new(
            NO_RECORDING,
            format!("Call {call_id} has no recording (or it was deleted)."),
        )
    }

    /// -53: the action is not possible in the call's state; `why` says which state, e.g.
    /// "the call has ended" or "the on-demand recording was discarded".
    pub fn wrong_call_state(action: &str, call_id: &str, why: &str) -> VerbaError {
        VerbaError::new(
            WRONG_CALL_STATE,
            format!("{action} is not possible for call {call_id}: {why}."),
        )
    }

    /// -54: `requested` (a `format` value) is not how the recording is stored (`stored`, a
    /// file name extension such as `wav`).
    pub fn format_not_available(requested: &str, stored: &str) -> VerbaError {
        VerbaError::new(
            FORMAT_NOT_AVAILABLE,
            format!("Media format {requested} is not available: the recording is {stored}."),
        )
    }
}

impl fmt::Display for VerbaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for VerbaError {}

/// A status list as a client writes it: `ongoing,next`.
pub fn status_text(statuses: &[CallStatus]) -> String {
    let words: Vec<&str> = statuses.iter().map(|s| s.word()).collect();
    words.join(",")
}

/// The id selectors of a query for a message: "callID X and nativeID Y" (the extension too,
/// with its status, when there is one).
fn describe(query: &CallQuery) -> String {
    let ids = [
        ("callID", &query.call_id),
        ("platformCallID", &query.platform_call_id),
        ("nativeID", &query.native_id),
        ("meetingID", &query.meeting_id),
    ];
    let mut parts: Vec<String> = ids
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name} {v}")))
        .collect();
    if let Some(extension) = &query.extension {
        parts.push(format!(
            "extension {extension} with status {}",
            status_text(&query.statuses)
        ));
    }
    if parts.is_empty() {
        return "no selector".to_string();
    }
    parts.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_not_found_reads_as_the_seed() {
        let e = VerbaError::call_not_found_for_extension("3123212312", "ongoing", 2, 1000);
        assert_eq!(e.code, -50);
        assert_eq!(
            e.message,
            "Call for extension 3123212312 with status ongoing not found after 2 tries, \
             with sleep time 1000."
        );
    }

    #[test]
    fn query_not_found_picks_its_form() {
        let by_extension = CallQuery {
            extension: Some("8856".into()),
            statuses: vec![CallStatus::Ongoing, CallStatus::Next],
            ..CallQuery::default()
        };
        assert_eq!(
            VerbaError::call_not_found(&by_extension, 1, 0).message,
            "Call for extension 8856 with status ongoing,next not found after 1 tries, \
             with sleep time 0."
        );
        let by_id = CallQuery {
            call_id: Some("X".into()),
            ..CallQuery::default()
        };
        assert_eq!(
            VerbaError::call_not_found(&by_id, 1, 0),
            VerbaError::new(CALL_NOT_FOUND, "Call with callID X not found.")
        );
        let by_two = CallQuery {
            platform_call_id: Some("p1".into()),
            native_id: Some("n1".into()),
            ..CallQuery::default()
        };
        assert_eq!(
            VerbaError::call_not_found(&by_two, 1, 0).message,
            "Call with platformCallID p1 and nativeID n1 not found."
        );
    }

    #[test]
    fn constructors_carry_their_codes() {
        let q = CallQuery {
            meeting_id: Some("WHBFM6DD".into()),
            ..CallQuery::default()
        };
        let cases = [
            (VerbaError::internal("store unavailable"), INTERNAL),
            (VerbaError::missing_action(), UNKNOWN_ACTION),
            (VerbaError::unknown_action("Login"), UNKNOWN_ACTION),
            (
                VerbaError::invalid_parameter("mute", "x"),
                INVALID_PARAMETER,
            ),
            (VerbaError::missing_parameter("mute"), MISSING_PARAMETER),
            (VerbaError::invalid_api_key(), INVALID_API_KEY),
            (VerbaError::token_required(), INVALID_TOKEN),
            (VerbaError::invalid_token(), INVALID_TOKEN),
            (VerbaError::expired_token(), INVALID_TOKEN),
            (VerbaError::wrong_credentials(), WRONG_CREDENTIALS),
            (VerbaError::ambiguous_call(&q, 2), AMBIGUOUS_CALL),
            (VerbaError::no_recording("c1"), NO_RECORDING),
            (
                VerbaError::wrong_call_state("MuteRecording", "c1", "the call has ended"),
                WRONG_CALL_STATE,
            ),
            (
                VerbaError::format_not_available("mp3", "wav"),
                FORMAT_NOT_AVAILABLE,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code, code, "{error}");
        }
        assert_eq!(
            VerbaError::ambiguous_call(&q, 2).message,
            "2 calls match meetingID WHBFM6DD; give a selector that matches one call."
        );
        assert_eq!(
            VerbaError::ambiguous_call(&q, MATCHES_COUNTED + 1).message,
            "More than 100 calls match meetingID WHBFM6DD; give a selector that matches one call."
        );
    }

    #[test]
    fn codes_are_distinct() {
        let mut all = [
            OK,
            INTERNAL,
            UNKNOWN_ACTION,
            INVALID_PARAMETER,
            MISSING_PARAMETER,
            INVALID_API_KEY,
            INVALID_TOKEN,
            WRONG_CREDENTIALS,
            CALL_NOT_FOUND,
            AMBIGUOUS_CALL,
            NO_RECORDING,
            WRONG_CALL_STATE,
            FORMAT_NOT_AVAILABLE,
        ];
        all.sort_unstable();
        let before = all.len();
        let mut unique = all.to_vec();
        unique.dedup();
        assert_eq!(unique.len(), before);
    }
}
