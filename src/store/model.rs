//! What the store holds and how it is asked: the rows as Rust values, the writes the control
//! plane hands it ([`StoreEvent`]) and the call lookups of the recording API ([`CallQuery`]).
//!
//! Owns: these types and their text forms (the words stored in the database and shown by the
//! API).
//! Must not: hold SQL or do I/O — `store::db` does; these types are shared by the control plane
//! (which writes), the recording API (which asks) and `ctl` (which manages users).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Unix time in milliseconds (the store's one time unit; GMT by construction).
pub type UnixMs = i64;

/// Whether the calls of a route or trunk are recorded (`record = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordPolicy {
    /// Not recorded (unless an application asks with Record).
    #[default]
    Off,
    /// Recorded, kept until deleted or too old.
    Always,
    /// Recorded, but the recording is discarded when the call ends unless `KeepCall` was
    /// called during the call (Verba semantics).
    OnDemand,
}

/// The file a recording is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordingFormat {
    /// WAV, signed 16-bit linear PCM.
    #[default]
    WavPcm16,
    /// WAV, G.711 μ-law.
    WavUlaw,
    /// WAV, G.711 A-law.
    WavAlaw,
    /// Ogg Opus (RFC 7845).
    OggOpus,
}

/// Where a recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Written and kept (an `always` recording, or a Record media operation's file).
    Finished,
    /// An on-demand recording `KeepCall` asked to keep (while or after recording).
    Kept,
    /// `DeleteCall` asked while it was being written: the file goes when it is finished.
    MarkedForDeletion,
    /// The file is gone (DeleteCall, an on-demand call nobody kept, retention); the row stays
    /// as the record of what was deleted until retention removes the call.
    Deleted,
}

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A PBX or trunk called us.
    Inbound,
    /// We placed the call (MakeCall, transfers, Call Control).
    Outbound,
    /// A connection an application created over Media Control, without SIP.
    Api,
}

/// Which recording started a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingOrigin {
    /// The route's or trunk's `record` policy: two channels.
    Policy,
    /// A Media Control `Record` operation: the caller's audio (or a conference mix).
    RecordOperation,
}

/// Channels of a two-channel recording, as `MuteRecording`'s `mute` names them: bit 0 the
/// party (left), bit 1 what callbridge sends it (right). 0 unmutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MuteChannels(pub u8);

impl MuteChannels {
    pub const NONE: MuteChannels = MuteChannels(0);
    pub const LEFT: MuteChannels = MuteChannels(1);
    pub const RIGHT: MuteChannels = MuteChannels(2);
    pub const BOTH: MuteChannels = MuteChannels(3);

    pub fn left(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn right(self) -> bool {
        self.0 & 2 != 0
    }
}

/// A write the control plane hands the store. Fire and forget: the store thread applies them
/// in order, in batches, off the control task.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// A call (one leg: one media connection, with its SIP dialog when it has one) begins.
    CallStarted {
        call_id: String,
        /// The media connection's id (local to this process; for logs).
        connection: u32,
        direction: Direction,
        /// The SIP Call-ID of the leg; None for a connection without SIP.
        platform_call_id: Option<String>,
        /// The party model's ConnID, when the leg has a party.
        native_id: Option<String>,
        calling: String,
        called: String,
        trunk: Option<String>,
        policy: RecordPolicy,
        started_ms: UnixMs,
    },
    /// The call was answered.
    CallAnswered { call_id: String, at_ms: UnixMs },
    /// The leg joined a conference (its meeting ID), or left one (None).
    MeetingChanged {
        call_id: String,
        meeting_id: Option<String>,
    },
    /// A party joined the call (its number and role), e.g. a transfer target.
    PartyAdded {
        call_id: String,
        dn: String,
        role: String,
        at_ms: UnixMs,
    },
    /// The call ended.
    CallEnded {
        call_id: String,
        at_ms: UnixMs,
        /// Why, in the release vocabulary (`remote-bye`, `api`, `rtp-timeout`, ...).
        cause: String,
    },
    /// A recording file was created and is being written.
    RecordingStarted {
        recording_id: String,
        call_id: String,
        path: PathBuf,
        format: RecordingFormat,
        channels: u16,
        sample_rate: u32,
        origin: RecordingOrigin,
        started_ms: UnixMs,
    },
    /// Writing failed (a full disk): the recording stopped, the call goes on. The file holds
    /// what was written before.
    RecordingFailed {
        recording_id: String,
        at_ms: UnixMs,
        error: String,
    },
    /// The recording's file is finished (closed and synced): `samples` per channel at
    /// `sample_rate`. The store computes its size and SHA-256 and applies the deletion and
    /// on-demand rules.
    RecordingFinished {
        recording_id: String,
        ended_ms: UnixMs,
        samples: u64,
        error: Option<String>,
    },
    /// The muted channels changed (`NONE` ends a muted span).
    MuteChanged {
        recording_id: String,
        at_ms: UnixMs,
        channels: MuteChannels,
    },
}

impl StoreEvent {
    /// The event's name, for logs and tests (its fields may hold phone numbers).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CallStarted { .. } => "CallStarted",
            Self::CallAnswered { .. } => "CallAnswered",
            Self::MeetingChanged { .. } => "MeetingChanged",
            Self::PartyAdded { .. } => "PartyAdded",
            Self::CallEnded { .. } => "CallEnded",
            Self::RecordingStarted { .. } => "RecordingStarted",
            Self::RecordingFailed { .. } => "RecordingFailed",
            Self::RecordingFinished { .. } => "RecordingFinished",
            Self::MuteChanged { .. } => "MuteChanged",
        }
    }
}

/// A call as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub call_id: String,
    pub connection: u32,
    pub direction: Direction,
    pub platform_call_id: Option<String>,
    pub native_id: Option<String>,
    pub meeting_id: Option<String>,
    pub calling: String,
    pub called: String,
    pub trunk: Option<String>,
    pub policy: RecordPolicy,
    pub started_ms: UnixMs,
    pub answered_ms: Option<UnixMs>,
    pub ended_ms: Option<UnixMs>,
    pub end_cause: Option<String>,
    /// KeepCall was called.
    pub kept: bool,
    /// DeleteCall was called.
    pub delete_requested: bool,
    /// The node that had the call (`[app] node_id`; 0 for a single server).
    pub node_id: u8,
    pub parties: Vec<PartyRecord>,
    pub recordings: Vec<RecordingRecord>,
}

impl CallRecord {
    /// Still going (no end time).
    pub fn ongoing(&self) -> bool {
        self.ended_ms.is_none()
    }
}

/// A party of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct PartyRecord {
    pub dn: String,
    /// `calling`, `called`, or a party-model role (`transfer-target`, ...).
    pub role: String,
    pub at_ms: UnixMs,
}

/// A recording of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRecord {
    pub recording_id: String,
    pub call_id: String,
    pub path: PathBuf,
    pub format: RecordingFormat,
    pub channels: u16,
    pub sample_rate: u32,
    pub origin: RecordingOrigin,
    pub state: RecordingState,
    pub started_ms: UnixMs,
    pub ended_ms: Option<UnixMs>,
    pub duration_ms: Option<u64>,
    pub size_bytes: Option<u64>,
    /// Lower-case hex.
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub mutes: Vec<MuteSpan>,
}

/// A span during which channels were muted (silence in the file), in milliseconds from the
/// recording's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuteSpan {
    pub channels: MuteChannels,
    pub from_ms: u64,
    /// None while still muted.
    pub to_ms: Option<u64>,
}

/// A deletion, kept after the file is gone: who, when, why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletionRecord {
    pub call_id: String,
    pub recording_id: Option<String>,
    pub path: Option<PathBuf>,
    pub at_ms: UnixMs,
    /// `api-key:<first 8 chars>` or `user:<name>` for DeleteCall; `on-demand` for an on-demand
    /// call nobody kept; `retention` for the age limit.
    pub by: String,
    pub reason: String,
}

/// The `status` of a call looked up by `extension` (seed 04).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// A call in progress where the number is the calling or the called party.
    Ongoing,
    /// The next call of the number starting within one minute after the request.
    Next,
    /// The last finished call of the number.
    Last,
}

/// Which call a recording-API request is about. At least one selector is set (the API checks);
/// set selectors must all match. `statuses` is tried in order with `extension` (the comma
/// forms fall back), and is empty without it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallQuery {
    pub call_id: Option<String>,
    pub platform_call_id: Option<String>,
    pub native_id: Option<String>,
    pub meeting_id: Option<String>,
    pub extension: Option<String>,
    pub statuses: Vec<CallStatus>,
}

/// A time-window search (`SearchCalls`): calls that started in `[from, to)`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub from_ms: UnixMs,
    pub to_ms: UnixMs,
    /// Calling or called number.
    pub number: Option<String>,
    /// Page size (1..=1000) and 0-based page.
    pub page_len: u32,
    pub page: u32,
}

/// How many of the calls an ambiguous lookup matches are counted: a busy number — a trunk's,
/// a route's — may have most of the store's calls, and the answer is an error either way.
pub const MATCHES_COUNTED: usize = 100;

/// A lookup that did not give exactly one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindError {
    /// No call matches.
    NotFound,
    /// More than one call matches (seed 04: an error): how many, or [`MATCHES_COUNTED`] + 1
    /// for more than that.
    Ambiguous { matches: usize },
}

/// A word stored in the database that no variant spells (a newer schema, or a hand edit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord {
    pub what: &'static str,
    pub word: String,
}

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.word)
    }
}

impl std::error::Error for UnknownWord {}

/// The text forms: one table per enum, used both ways.
macro_rules! words {
    ($ty:ident, $what:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            /// The word stored and shown for this value.
            pub fn word(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(UnknownWord { what: $what, word: s.to_string() }),
                }
            }
        }
    };
}

words!(RecordPolicy, "record policy", { Off => "off", Always => "always", OnDemand => "on-demand" });
words!(RecordingFormat, "recording format", {
    WavPcm16 => "wav", WavUlaw => "wav-ulaw", WavAlaw => "wav-alaw", OggOpus => "opus",
});
words!(RecordingState, "recording state", {
    Recording => "recording", Finished => "finished", Kept => "kept",
    MarkedForDeletion => "marked-for-deletion", Deleted => "deleted",
});
words!(Direction, "direction", { Inbound => "inbound", Outbound => "outbound", Api => "api" });
words!(RecordingOrigin, "recording origin", { Policy => "policy", RecordOperation => "record" });
words!(CallStatus, "status", { Ongoing => "ongoing", Next => "next", Last => "last" });

impl RecordingFormat {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::OggOpus => "opus",
            _ => "wav",
        }
    }

    /// The media type GetMediaEncoded answers with.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::OggOpus => "audio/ogg",
            _ => "audio/wav",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for p in [
            RecordPolicy::Off,
            RecordPolicy::Always,
            RecordPolicy::OnDemand,
        ] {
            assert_eq!(p.word().parse::<RecordPolicy>(), Ok(p));
        }
        for s in [
            RecordingState::Recording,
            RecordingState::Finished,
            RecordingState::Kept,
            RecordingState::MarkedForDeletion,
            RecordingState::Deleted,
        ] {
            assert_eq!(s.word().parse::<RecordingState>(), Ok(s));
        }
        assert!("sometimes".parse::<RecordPolicy>().is_err());
        assert_eq!("last".parse::<CallStatus>(), Ok(CallStatus::Last));
    }
}
