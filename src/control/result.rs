//! Media Control result codes (CUAE "Media Control Error Codes", reference §6).
//!
//! Owns: the numeric vocabulary of `ResultCode` and the error type every action returns.
//! Must not: decide HTTP status codes — the API edge maps them.

use std::fmt;

/// `ResultCode` values we produce. Numbers are the CUAE/MMS table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    Success = 0,
    /// All sessions are in use (no RTP ports left).
    ServerBusy = 4,
    /// Server shutting down.
    ServerInactive = 5,
    /// Our own logic or an OS call failed.
    ServerInternal = 6,
    /// A media resource (codec, ...) is not available.
    ResourceUnavailable = 8,
    /// The connection is busy with a prior request (a second Play while one plays).
    ConnectionBusy = 14,
    /// The connection is in another conference already.
    AlreadyConnected = 15,
    /// The connection exists but is not fully connected (ModifyConnection on a reservation).
    NotConnected = 16,
    /// No such action.
    UnknownCommand = 21,
    /// ConnectionId is not a number.
    InvalidConnectionId = 22,
    /// ConnectionId is not registered.
    UnknownConnectionId = 23,
    /// ConferenceId is not registered / the connection is not in that conference.
    UnknownConferenceId = 24,
    /// A required parameter is missing.
    InvalidParameters = 26,
    /// No such operation is running on the connection (StopMediaOperation, AdjustPlay).
    NoOperation = 25,
    /// A parameter has a bad value.
    InvalidParameter = 27,
    /// A prompt file could not be opened (not found, or outside the allowed directories).
    FileOpen = 30,
    /// A prompt or recording file could not be read or written (bad format, I/O error).
    FileIo = 31,
    /// A prompt is free text and text-to-speech is not available.
    MalformedRequest = 35,
    /// A termination condition this server cannot evaluate.
    TermCondition = 36,
}

impl ResultCode {
    /// The wire form: the number as a string ("0" = success).
    pub fn as_wire(self) -> String {
        (self as u8).to_string()
    }
}

/// A failed action: its code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    pub code: ResultCode,
    pub message: String,
}

impl ActionError {
    pub fn new(code: ResultCode, message: impl Into<String>) -> ActionError {
        ActionError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResultCode {}: {}", self.code as u8, self.message)
    }
}

impl std::error::Error for ActionError {}
