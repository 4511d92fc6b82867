//! Request bodies of the agent gateway, turned into typed requests at the edge.
//!
//! Owns: the body rules of sign-in / forced sign-in and of the agentconf family — field names
//! as the vendor spells them, mandatory fields, ranges, lengths, defaults — and the mapping of
//! every broken body to `000-002` with a message that names the field.
//! Must not: authenticate, look at sessions or conferences, or check rules that need state (a
//! prolonged conference's total ≤ 1440 minutes, whether an address is in the conference): the
//! conference logic owns those. Operations without a body (`logout`, `answeragentconf`,
//! `releaseagentconf`, ...) have no type here; the listener ignores their body.
//!
//! Leniency, on purpose: the vendor's Java gateway coerces scalars, and desktops built for it
//! send `"status":"4"`, `"releasephone":"false"`, `"addressType":"6"`. So an integer field takes a
//! JSON integer or a string of one, a boolean field takes a boolean or `"true"`/`"false"`, a
//! text field takes a string or an integer. A number without a fraction (`4.0`) is an integer.
//! `null` counts as absent. Unknown fields are ignored. Anything else — malformed JSON, a
//! non-object body, arrays or objects where scalars belong, fractions, out-of-range values — is
//! refused. The tests are in `requests_tests.rs`.

use std::fmt;

use serde_json::{Map, Number, Value};

use super::address::{AddressError, AddressType, AgentId, Participant, PhoneNumber};
use super::retcode::{GatewayError, Retcode};

/// Longest sign-in password the vendor accepts.
pub const PASSWORD_MAX_CHARS: usize = 32;
/// Longest `voicePath`.
pub const VOICE_PATH_MAX_CHARS: usize = 127;
/// Most seats a conference may ask for (`memberNum`) and most invitees in one batch.
pub const MAX_MEMBERS: usize = 120;
/// Most addresses one `batchremoveparticipant` may name.
pub const MAX_REMOVED: usize = 30;
/// Shortest conference (`time`), minutes.
pub const MIN_CONF_MINUTES: u16 = 4;
/// Longest conference (`time`, `prolongTime`), minutes.
pub const MAX_CONF_MINUTES: u16 = 1440;
/// `time` when the body has none, minutes.
pub const DEFAULT_CONF_MINUTES: u16 = 60;
/// `promptTime` when the body has none, minutes (less when the conference is shorter).
pub const DEFAULT_PROMPT_MINUTES: u16 = 5;
/// `playMode` when the body has none (2: play the given file).
pub const DEFAULT_PLAY_MODE: u8 = 2;

/// Parses the `{agentid}` segment of a URL.
pub fn parse_agent_path(segment: &str) -> Result<AgentId, RequestError> {
    AgentId::parse(segment).map_err(|error| RequestError::BadAddress {
        field: "agentid".to_owned(),
        error,
    })
}

/// Sign-in and forced sign-in: `PUT .../onlineagent/{agentid}` and `.../forcelogin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// `password`, mandatory, ≤ 32 characters, may be empty. The store checks it.
    pub password: Password,
    /// `phonenum`, mandatory: the agent's phone, called through the trunk.
    pub phone: PhoneNumber,
    /// `autoanswer`, default true.
    pub auto_answer: bool,
    /// `autoenteridle`, default true.
    pub auto_enter_idle: bool,
    /// `releasephone`, default true: hang the phone up when a call ends (false: keep the
    /// phone's call up between conferences, "always off-hook").
    pub release_phone: bool,
    /// `agenttype`, default 4.
    pub agent_type: AgentType,
    /// `status`, default idle.
    pub status: InitialStatus,
}

impl SignIn {
    /// Parses a sign-in body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let fields = Fields::top(&map);
        // Push delivery needs both; with one or none the vendor polls (and so do we).
        if fields.value("callBackUri").is_some() && fields.value("serviceToken").is_some() {
            return Err(RequestError::PushNotSupported);
        }
        let password = fields.required_text("password", PASSWORD_MAX_CHARS)?;
        let phone = fields.required_phone("phonenum")?;
        let agent_type = match fields.one_of("agenttype", &[4, 11], AgentType::ALLOWED)? {
            Some(11) => AgentType::PcPhoneVideo,
            _ => AgentType::PcPhone,
        };
        let status = match fields.one_of("status", &[4, 5], InitialStatus::ALLOWED)? {
            Some(5) => InitialStatus::Work,
            _ => InitialStatus::Idle,
        };
        Ok(SignIn {
            password: Password(password),
            phone,
            auto_answer: fields.bool("autoanswer")?.unwrap_or(true),
            auto_enter_idle: fields.bool("autoenteridle")?.unwrap_or(true),
            release_phone: fields.bool("releasephone")?.unwrap_or(true),
            agent_type,
            status,
        })
    }
}

/// A sign-in password; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password, for the store to check against its hash.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The vendor's `agenttype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentType {
    /// 4: PC + phone agent.
    PcPhone,
    /// 11: PC + phone video agent (callbridge carries its audio only).
    PcPhoneVideo,
}

impl AgentType {
    const ALLOWED: &'static str = "4 (PC+phone agent) or 11 (PC+phone video agent)";
}

/// The vendor's `status`: the agent's state right after sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialStatus {
    /// 4: idle, ready for work.
    Idle,
    /// 5: work (wrap-up).
    Work,
}

impl InitialStatus {
    const ALLOWED: &'static str = "4 (idle) or 5 (work)";
}

/// `requestagentconf`: apply for a conference chaired by the requesting agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAgentConf {
    /// `memberNum`, mandatory, 1..=120: seats in the conference.
    pub member_num: u8,
    /// `confCallerNo`: caller number shown on the legs we place; absent → the configured one.
    pub conf_caller_no: Option<PhoneNumber>,
    /// `time`, 4..=1440, default 60: the conference's length in minutes.
    pub minutes: u16,
    /// `promptTime`, 1..time, default 5 (or `time - 1` when shorter): `AgentConf_Timeout` comes
    /// this many minutes before the end.
    pub prompt_minutes: u16,
    /// `beepTone`, default false.
    pub beep_tone: bool,
    /// `playMode`, default 2.
    pub play_mode: u8,
    /// `voicePath`, ≤ 127 characters: a vendor media path, opaque here and never opened as a
    /// file by this module.
    pub voice_path: Option<String>,
}

impl RequestAgentConf {
    /// Parses a `requestagentconf` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let fields = Fields::top(&map);
        let member_num = fields.required_int("memberNum", 1, MAX_MEMBERS as i64)?;
        let minutes = fields
            .int("time", MIN_CONF_MINUTES.into(), MAX_CONF_MINUTES.into())?
            .map_or(DEFAULT_CONF_MINUTES, to_u16);
        let last_prompt = minutes - 1;
        let prompt_minutes = fields
            .int("promptTime", 1, last_prompt.into())?
            .map_or(DEFAULT_PROMPT_MINUTES.min(last_prompt), to_u16);
        Ok(RequestAgentConf {
            member_num: u8::try_from(member_num).expect("range-checked to 1..=120"),
            conf_caller_no: fields.phone("confCallerNo")?,
            minutes,
            prompt_minutes,
            beep_tone: fields.bool("beepTone")?.unwrap_or(false),
            play_mode: fields.play_mode()?,
            voice_path: fields.text("voicePath", VOICE_PATH_MAX_CHARS)?,
        })
    }
}

/// `batchaddparticipant`: invite phones (type 6) and agents (type 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAddParticipant {
    /// `addresses`, mandatory, 1..=120 entries of `{addressType, address}`.
    pub participants: Vec<Participant>,
    /// `beepTone`, default false.
    pub beep_tone: bool,
    /// `playMode`, default 2.
    pub play_mode: u8,
    /// `voicePath`, ≤ 127 characters, opaque.
    pub voice_path: Option<String>,
    /// `caller`: caller number shown to the invitees.
    pub caller: Option<PhoneNumber>,
}

impl BatchAddParticipant {
    /// Parses a `batchaddparticipant` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let fields = Fields::top(&map);
        Ok(BatchAddParticipant {
            participants: fields.participants("addresses", MAX_MEMBERS)?,
            beep_tone: fields.bool("beepTone")?.unwrap_or(false),
            play_mode: fields.play_mode()?,
            voice_path: fields.text("voicePath", VOICE_PATH_MAX_CHARS)?,
            caller: fields.phone("caller")?,
        })
    }
}

/// `batchremoveparticipant`: remove participants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRemoveParticipant {
    /// `addresses`, mandatory, 1..=30 entries.
    pub participants: Vec<Participant>,
}

impl BatchRemoveParticipant {
    /// Parses a `batchremoveparticipant` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let participants = Fields::top(&map).participants("addresses", MAX_REMOVED)?;
        Ok(BatchRemoveParticipant { participants })
    }
}

/// `changeparticipantmode`: what a participant may hear and say (mute is listen-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeParticipantMode {
    /// `attribute`, mandatory, 1..=4.
    pub mode: ParticipantMode,
    /// `addressType` + `address`.
    pub participant: Participant,
}

impl ChangeParticipantMode {
    /// Parses a `changeparticipantmode` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let fields = Fields::top(&map);
        let mode = match fields.required_int("attribute", 1, 4)? {
            1 => ParticipantMode::ListenOnly,
            2 => ParticipantMode::SpeakOnly,
            3 => ParticipantMode::ListenAndSpeak,
            _ => ParticipantMode::Neither,
        };
        Ok(ChangeParticipantMode {
            mode,
            participant: fields.participant()?,
        })
    }
}

/// The vendor's `attribute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantMode {
    /// 1: hears the conference, is not heard (muted).
    ListenOnly,
    /// 2: is heard, hears nothing.
    SpeakOnly,
    /// 3: hears and is heard.
    ListenAndSpeak,
    /// 4: neither.
    Neither,
}

impl ParticipantMode {
    /// Whether the participant hears the conference.
    pub fn hears(self) -> bool {
        matches!(
            self,
            ParticipantMode::ListenOnly | ParticipantMode::ListenAndSpeak
        )
    }

    /// Whether the conference hears the participant.
    pub fn speaks(self) -> bool {
        matches!(
            self,
            ParticipantMode::SpeakOnly | ParticipantMode::ListenAndSpeak
        )
    }
}

/// `holdparticipant` / `unholdparticipant`: the participant named by `addressType` + `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantTarget {
    /// The participant.
    pub participant: Participant,
}

impl ParticipantTarget {
    /// Parses a `holdparticipant` or `unholdparticipant` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let participant = Fields::top(&map).participant()?;
        Ok(ParticipantTarget { participant })
    }
}

/// `prolongtime`: extend the conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProlongTime {
    /// `prolongTime`, mandatory, 1..=1440 minutes. (That the total stays ≤ 1440 is the
    /// conference's rule.)
    pub minutes: u16,
}

impl ProlongTime {
    /// Parses a `prolongtime` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let minutes = Fields::top(&map).required_int("prolongTime", 1, MAX_CONF_MINUTES.into())?;
        Ok(ProlongTime {
            minutes: to_u16(minutes),
        })
    }
}

/// `applytoshiftpresident`: hand the chair to another agent in the conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyToShiftPresident {
    /// `destAgentNo`, mandatory.
    pub dest_agent: AgentId,
}

impl ApplyToShiftPresident {
    /// Parses an `applytoshiftpresident` body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let map = parse_object(body)?;
        let dest_agent = Fields::top(&map).required_agent("destAgentNo")?;
        Ok(ApplyToShiftPresident { dest_agent })
    }
}

/// Why a request body (or the URL's agent id) was refused; always `000-002` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not JSON.
    MalformedJson {
        /// The parser's complaint (position and kind, never content).
        detail: String,
    },
    /// The body is JSON but not an object.
    NotAnObject,
    /// A mandatory field is absent or null.
    Missing {
        /// The field, e.g. `addresses[2].address`.
        field: String,
    },
    /// A field has the wrong JSON type.
    WrongType {
        /// The field.
        field: String,
        /// What it must be, e.g. "an integer".
        expected: &'static str,
    },
    /// An integer outside its range.
    OutOfRange {
        /// The field.
        field: String,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// An integer that is not one of a few codes.
    NotOneOf {
        /// The field.
        field: String,
        /// The codes allowed, in words.
        allowed: &'static str,
    },
    /// A string longer than allowed.
    TooLong {
        /// The field.
        field: String,
        /// Most characters allowed.
        max: usize,
    },
    /// An empty array where at least one entry is needed.
    Empty {
        /// The field.
        field: String,
    },
    /// An array with more entries than allowed.
    TooMany {
        /// The field.
        field: String,
        /// Most entries allowed.
        max: usize,
    },
    /// An address, number or agent id that is not what the field needs.
    BadAddress {
        /// The field.
        field: String,
        /// What is wrong with it.
        error: AddressError,
    },
    /// A sign-in that asks for push event delivery, which callbridge does not offer.
    PushNotSupported,
}

impl RequestError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            RequestError::Missing { field }
            | RequestError::WrongType { field, .. }
            | RequestError::OutOfRange { field, .. }
            | RequestError::NotOneOf { field, .. }
            | RequestError::TooLong { field, .. }
            | RequestError::Empty { field }
            | RequestError::TooMany { field, .. }
            | RequestError::BadAddress { field, .. } => Some(field),
            RequestError::MalformedJson { .. }
            | RequestError::NotAnObject
            | RequestError::PushNotSupported => None,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::MalformedJson { detail } => {
                write!(f, "the body is not valid JSON ({detail})")
            }
            RequestError::NotAnObject => f.write_str("the body must be a JSON object"),
            RequestError::Missing { field } => write!(f, "{field} is mandatory"),
            RequestError::WrongType { field, expected } => write!(f, "{field} must be {expected}"),
            RequestError::OutOfRange { field, min, max } => {
                write!(f, "{field} must be from {min} to {max}")
            }
            RequestError::NotOneOf { field, allowed } => write!(f, "{field} must be {allowed}"),
            RequestError::TooLong { field, max } => {
                write!(f, "{field} must be at most {max} characters")
            }
            RequestError::Empty { field } => write!(f, "{field} must not be empty"),
            RequestError::TooMany { field, max } => {
                write!(f, "{field} may hold at most {max} entries")
            }
            RequestError::BadAddress { field, error } => write!(f, "{field} {error}"),
            RequestError::PushNotSupported => f.write_str(
                "push event delivery (callBackUri with serviceToken) is not supported; \
                 sign in without them and poll agentevent",
            ),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<RequestError> for GatewayError {
    fn from(error: RequestError) -> Self {
        GatewayError::new(Retcode::BadParameter, error.to_string())
    }
}

/// The body as a JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::MalformedJson {
        detail: e.to_string(),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(RequestError::NotAnObject),
    }
}

/// The integer a JSON number stands for: any number without a fraction (`4`, `4.0`, `1e3`, as
/// the vendor's gateway reads them); beyond i64 it saturates, so a range check refuses it.
fn integer(n: &Number) -> Option<i64> {
    if let Some(n) = n.as_i64() {
        return Some(n);
    }
    let f = n.as_f64()?;
    // `as` saturates, which is what an out-of-range check wants.
    (f.is_finite() && f.fract() == 0.0).then_some(f as i64)
}

/// A range-checked minute count as `u16`.
fn to_u16(minutes: i64) -> u16 {
    u16::try_from(minutes).expect("minutes are range-checked to at most 1440")
}

/// The fields of one JSON object, named for errors with a prefix (`addresses[2].`).
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn top(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            prefix: String::new(),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The field's value; null is absent.
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> RequestError {
        RequestError::Missing {
            field: self.name(key),
        }
    }

    /// An integer (or a string of one) within `min..=max`.
    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, RequestError> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => integer(n),
            Value::String(text) => text.parse::<i64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            return Err(RequestError::WrongType {
                field: self.name(key),
                expected: "an integer",
            });
        };
        if n < min || n > max {
            return Err(RequestError::OutOfRange {
                field: self.name(key),
                min,
                max,
            });
        }
        Ok(Some(n))
    }

    fn required_int(&self, key: &str, min: i64, max: i64) -> Result<i64, RequestError> {
        self.int(key, min, max)?.ok_or_else(|| self.missing(key))
    }

    /// An integer that must be one of `codes`.
    fn one_of(
        &self,
        key: &str,
        codes: &[i64],
        allowed: &'static str,
    ) -> Result<Option<i64>, RequestError> {
        let code = self.int(key, i64::MIN, i64::MAX)?;
        match code {
            Some(code) if !codes.contains(&code) => Err(RequestError::NotOneOf {
                field: self.name(key),
                allowed,
            }),
            _ => Ok(code),
        }
    }

    /// A boolean, or the string "true" / "false".
    fn bool(&self, key: &str) -> Result<Option<bool>, RequestError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(text)) if text == "true" => Ok(Some(true)),
            Some(Value::String(text)) if text == "false" => Ok(Some(false)),
            Some(_) => Err(RequestError::WrongType {
                field: self.name(key),
                expected: "a boolean",
            }),
        }
    }

    /// A string (or an integer, as its decimal text) of at most `max_chars` characters.
    fn text(&self, key: &str, max_chars: usize) -> Result<Option<String>, RequestError> {
        let text = match self.value(key) {
            None => return Ok(None),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => {
                return Err(RequestError::WrongType {
                    field: self.name(key),
                    expected: "a string",
                })
            }
        };
        if text.chars().count() > max_chars {
            return Err(RequestError::TooLong {
                field: self.name(key),
                max: max_chars,
            });
        }
        Ok(Some(text))
    }

    fn required_text(&self, key: &str, max_chars: usize) -> Result<String, RequestError> {
        self.text(key, max_chars)?.ok_or_else(|| self.missing(key))
    }

    fn bad_address(&self, key: &str, error: AddressError) -> RequestError {
        RequestError::BadAddress {
            field: self.name(key),
            error,
        }
    }

    fn phone(&self, key: &str) -> Result<Option<PhoneNumber>, RequestError> {
        let Some(text) = self.text(key, PhoneNumber::MAX_CHARS)? else {
            return Ok(None);
        };
        PhoneNumber::parse(&text)
            .map(Some)
            .map_err(|error| self.bad_address(key, error))
    }

    fn required_phone(&self, key: &str) -> Result<PhoneNumber, RequestError> {
        self.phone(key)?.ok_or_else(|| self.missing(key))
    }

    /// An agent id, as an integer or a string.
    fn required_agent(&self, key: &str) -> Result<AgentId, RequestError> {
        let value = self.value(key).ok_or_else(|| self.missing(key))?;
        let parsed = match value {
            Value::Number(n) => match integer(n) {
                Some(n) => AgentId::new(n),
                None => {
                    return Err(RequestError::WrongType {
                        field: self.name(key),
                        expected: "an agent id",
                    })
                }
            },
            Value::String(text) => AgentId::parse(text),
            _ => {
                return Err(RequestError::WrongType {
                    field: self.name(key),
                    expected: "an agent id",
                })
            }
        };
        parsed.map_err(|error| self.bad_address(key, error))
    }

    fn play_mode(&self) -> Result<u8, RequestError> {
        let mode = self.int("playMode", 0, u8::MAX.into())?;
        Ok(mode.map_or(DEFAULT_PLAY_MODE, |m| {
            u8::try_from(m).expect("range-checked to 0..=255")
        }))
    }

    /// `addressType` + `address` of this object.
    fn participant(&self) -> Result<Participant, RequestError> {
        let code = self
            .one_of("addressType", &[6, 9], "6 (phone number) or 9 (agent id)")?
            .ok_or_else(|| self.missing("addressType"))?;
        let address = self.required_text("address", PhoneNumber::MAX_CHARS)?;
        let address_type = AddressType::from_code(code).expect("checked to be 6 or 9");
        Participant::parse(address_type.code().into(), &address)
            .map_err(|error| self.bad_address("address", error))
    }

    /// A mandatory array of 1..=`max` participant objects.
    fn participants(&self, key: &str, max: usize) -> Result<Vec<Participant>, RequestError> {
        let entries = match self.value(key) {
            None => return Err(self.missing(key)),
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                return Err(RequestError::WrongType {
                    field: self.name(key),
                    expected: "an array",
                })
            }
        };
        if entries.is_empty() {
            return Err(RequestError::Empty {
                field: self.name(key),
            });
        }
        if entries.len() > max {
            return Err(RequestError::TooMany {
                field: self.name(key),
                max,
            });
        }
        let mut participants = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let Value::Object(map) = entry else {
                return Err(RequestError::WrongType {
                    field: format!("{}[{i}]", self.name(key)),
                    expected: "an object",
                });
            };
            let fields = Fields {
                map,
                prefix: format!("{}[{i}].", self.name(key)),
            };
            participants.push(fields.participant()?);
        }
        Ok(participants)
    }
}
