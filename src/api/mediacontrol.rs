//! Media Control actions on the wire: JSON parameters → [`MediaAction`].
//!
//! Owns: parameter names, types and per-action allowed sets exactly as the CUAE reference
//! (§3.1–3.4) spells them, and the ResultCodes for malformed input (22, 26, 27, 8).
//! Must not: look at the registry — whether an id exists is the control plane's answer.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use crate::control::result::{ActionError, ResultCode};
use std::time::Duration;

use crate::control::operations::TermConds;
use crate::control::{
    Adjustment, AttributeChange, CodecChoice, Completion, Level, MediaAction, PlayRequest,
    RecordRequest, Target, ToneRequest, MAX_PROMPTS,
};
use crate::engine::ConfereeSpec;
use crate::media::wav::Encoding;
use crate::sdp::Codec;

/// Parameters CreateConference and JoinConference share (reference §3.13–3.14).
const JOIN_PARAMS: &[&str] = &[
    "ConnectionId",
    "MediaRxCodec",
    "MediaRxFramesize",
    "MediaTxIP",
    "MediaTxPort",
    "MmsId",
    "MediaTxControlIP",
    "MediaTxControlPort",
    "MediaTxCodec",
    "MediaTxFramesize",
    "CallId",
    "Hairpin",
    "Monitor",
    "TariffTone",
    "Coach",
    "Pupil",
    "ReceiveOnly",
    "Timeout",
];

/// Whether an action is for this node (`node`, its MmsId): `MmsId` when given, and the media
/// server a `ConnectionId` or `ConferenceId` names in its top byte (reference §2), must be
/// this one. An action for another node is refused with ResourceUnavailable, as a CUAE media
/// server refused work for another (the application then goes to that node). Values that are
/// not ids are left to the action's own parsing, which names them.
pub fn on_this_node(params: &Map<String, Value>, node: u8) -> Result<(), ActionError> {
    let p = Params(params);
    if let Some(mms) = p.text("MmsId")?.and_then(|t| t.parse::<u32>().ok()) {
        if mms != u32::from(node) {
            return Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                format!("media server {mms} is not this server (MmsId {node})"),
            ));
        }
    }
    for name in ["ConnectionId", "ConferenceId"] {
        let Some(id) = p.text(name)?.and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let owner = crate::control::node_of(id);
        if id != 0 && owner != node {
            return Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                format!("{name} {id} is on media server {owner}, not this one (MmsId {node})"),
            ));
        }
    }
    Ok(())
}

/// Parses one action's parameters. `requester` is the HTTP client's address (used to pick the
/// media address we announce when nothing else tells us).
pub fn parse_action(
    action: &str,
    params: &Map<String, Value>,
    requester: IpAddr,
) -> Result<MediaAction, ActionError> {
    let p = Params(params);
    match action {
        "ReserveConnection" => {
            p.allow(&["MmsId", "MediaRxCodec", "MediaTxCodec", "Timeout"])?;
            p.check_mms_id()?;
            Ok(MediaAction::Reserve {
                rx_codec: p.codec("MediaRxCodec")?,
                tx_codec: p.codec("MediaTxCodec")?,
                requester,
            })
        }
        "CreateConnection" => {
            p.allow(&[
                "MediaTxIP",
                "MediaTxPort",
                "MmsId",
                "ConnectionId",
                "MediaTxControlIP",
                "MediaTxControlPort",
                "MediaRxCodec",
                "MediaRxFramesize",
                "MediaTxCodec",
                "MediaTxFramesize",
                "CallId",
                "Timeout",
            ])?;
            p.check_mms_id()?;
            Ok(MediaAction::Create {
                connection: p.connection_id()?,
                tx: p.tx_address()?,
                codecs: p.codecs()?,
                requester,
            })
        }
        "ModifyConnection" => {
            p.allow(&[
                "MediaTxIP",
                "MediaTxPort",
                "ConnectionId",
                "MediaTxControlIP",
                "MediaTxControlPort",
                "MediaRxCodec",
                "MediaRxFramesize",
                "MediaTxCodec",
                "MediaTxFramesize",
                "CallId",
                "Timeout",
            ])?;
            Ok(MediaAction::Modify {
                connection: p.required_connection_id()?,
                tx: p.tx_address()?,
                codecs: p.codecs()?,
            })
        }
        "DeleteConnection" => {
            p.allow(&["ConnectionId", "ConferenceId", "Timeout"])?;
            Ok(MediaAction::Delete {
                connection: p.connection_id()?,
                conference: p.conference_id()?,
            })
        }
        "CreateConference" => {
            p.allow(&[JOIN_PARAMS, &["SoundToneOnJoin"]].concat())?;
            p.check_mms_id()?;
            Ok(MediaAction::CreateConference {
                connection: p.required_connection_id()?,
                completion: p.completion()?,
                conferee: p.conferee()?,
                hairpin: p.boolean("Hairpin")?.unwrap_or(false),
                join_tone: p.boolean("SoundToneOnJoin")?.unwrap_or(false),
            })
        }
        "JoinConference" => {
            p.allow(&[JOIN_PARAMS, &["ConferenceId"]].concat())?;
            p.check_mms_id()?;
            // Hairpin shapes a new conference only; on a join it is accepted and has no effect.
            p.boolean("Hairpin")?;
            Ok(MediaAction::JoinConference {
                connection: p.required_connection_id()?,
                conference: p.required_conference_id()?,
                completion: p.completion()?,
                conferee: p.conferee()?,
            })
        }
        "LeaveConference" => {
            p.allow(&["ConnectionId", "ConferenceId", "Timeout"])?;
            Ok(MediaAction::LeaveConference {
                connection: p.required_connection_id()?,
                conference: p.required_conference_id()?,
            })
        }
        "SetConfereeAttribute" => {
            p.allow(&[
                "ConnectionId",
                "ConferenceId",
                "Mute",
                "TariffTone",
                "Coach",
                "Pupil",
                "Timeout",
            ])?;
            Ok(MediaAction::SetConfereeAttribute {
                connection: p.required_connection_id()?,
                conference: p.required_conference_id()?,
                change: AttributeChange {
                    mute: p.boolean("Mute")?,
                    tariff_tone: p.boolean("TariffTone")?,
                    coach: p.boolean("Coach")?,
                    pupil: p.boolean("Pupil")?,
                    deaf: None,
                },
            })
        }
        "Play" => {
            p.allow(&[
                "ConnectionId",
                "ConferenceId",
                "TermCondMaxTime",
                "TermCondMaxDigits",
                "TermCondDigit",
                "TermCondDigitList",
                "TermCondSilence",
                "TermCondNonSilence",
                "AudioFileSampleRate",
                "AudioFileSampleSize",
                "AudioFileEncoding",
                "Prompt1",
                "Prompt2",
                "Prompt3",
                "CommandTimeout",
                "Volume",
                "Speed",
                "State",
                "Application",
                "Locale",
                "Timeout",
            ])?;
            let target = p.operation_target()?;
            let prompts: Vec<String> = (1..=MAX_PROMPTS)
                .map(|i| p.text(&format!("Prompt{i}")))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect();
            if p.text("Prompt1")?.is_none_or(|s| s.is_empty()) {
                return Err(ActionError::new(
                    ResultCode::InvalidParameters,
                    "Prompt1 is required",
                ));
            }
            let volume = p.level("Volume")?.unwrap_or(0);
            let speed = p.level("Speed")?.unwrap_or(0);
            if volume != 0 && speed != 0 {
                return Err(invalid(
                    "Volume and Speed cannot both be changed in one Play".into(),
                ));
            }
            Ok(MediaAction::Play(PlayRequest {
                target,
                prompts,
                application: p.text("Application")?,
                locale: p.text("Locale")?,
                conds: p.term_conds(true)?,
                volume,
                speed,
                state: p.text("State")?,
            }))
        }
        "PlayTone" => {
            p.allow(&[
                "ConnectionId",
                "ConferenceId",
                "TermCondMaxTime",
                "TermCondDigit",
                "TermCondSilence",
                "TermCondNonSilence",
                "Frequency1",
                "Frequency2",
                "Amplitude1",
                "Amplitude2",
                "Duration",
                "State",
                "Timeout",
            ])?;
            let target = p.operation_target()?;
            let frequency = |name: &str| -> Result<Option<u32>, ActionError> {
                match p.number(name)? {
                    None => Ok(None),
                    Some(f) if (200..=3000).contains(&f) => Ok(Some(f as u32)),
                    Some(f) => Err(invalid(format!("{name} {f} is outside 200-3000 Hz"))),
                }
            };
            let amplitude = |name: &str| -> Result<i32, ActionError> {
                match p.number(name)? {
                    None => Ok(-10),
                    Some(a) if (-40..=0).contains(&a) => Ok(a as i32),
                    Some(a) => Err(invalid(format!("{name} {a} is outside -40..0 dB"))),
                }
            };
            let duration = match p.number("Duration")? {
                None => Some(1000),
                Some(d) if d < 0 => return Err(invalid(format!("Duration {d} is negative"))),
                Some(0) => None,
                Some(d) => {
                    Some(u32::try_from(d).map_err(|_| invalid("Duration too large".into()))?)
                }
            };
            Ok(MediaAction::PlayTone {
                target,
                tone: ToneRequest {
                    frequency1: frequency("Frequency1")?.unwrap_or(1000),
                    frequency2: frequency("Frequency2")?,
                    amplitude1: amplitude("Amplitude1")?,
                    amplitude2: amplitude("Amplitude2")?,
                    duration_ms: duration,
                },
                conds: p.term_conds(false)?,
                state: p.text("State")?,
            })
        }
        "GatherDigits" => {
            p.allow(&[
                "ConnectionId",
                "TermCondMaxTime",
                "TermCondMaxDigits",
                "TermCondDigit",
                "TermCondDigitList",
                "TermCondDigitPattern",
                "TermCondInterDigitDelay",
                "CommandTimeout",
                "State",
                "Timeout",
            ])?;
            Ok(MediaAction::GatherDigits {
                connection: p.required_connection_id()?,
                conds: p.term_conds(true)?,
                state: p.text("State")?,
            })
        }
        "SendDigits" => {
            p.allow(&["ConnectionId", "Digits", "Timeout"])?;
            let digits = p.text("Digits")?.ok_or_else(|| {
                ActionError::new(ResultCode::InvalidParameters, "Digits is required")
            })?;
            let digits = digit_string("Digits", &digits, 64)?;
            Ok(MediaAction::SendDigits {
                connection: p.required_connection_id()?,
                digits,
            })
        }
        "StopMediaOperation" => {
            p.allow(&["ConnectionId", "OperationId", "Block", "Timeout"])?;
            // Block defaults to true (the documented package default).
            let block = p.boolean("Block")?.unwrap_or(true);
            let operation = match p.text("OperationId")? {
                None => None,
                Some(text) => Some(
                    text.parse::<u32>()
                        .map_err(|_| invalid(format!("OperationId {text:?} is not a valid id")))?,
                ),
            };
            Ok(MediaAction::StopMediaOperation {
                connection: p.required_connection_id()?,
                operation: operation.filter(|&op| op != 0),
                block,
            })
        }
        "AdjustPlay" => {
            p.allow(&[
                "ConnectionId",
                "Volume",
                "Speed",
                "AdjustmentType",
                "ToggleType",
                "Timeout",
            ])?;
            let volume = p.number("Volume")?;
            let speed = p.number("Speed")?;
            let adjustment = match p
                .text("AdjustmentType")?
                .as_deref()
                .map(str::to_ascii_lowercase)
            {
                None => Adjustment::Absolute,
                Some(t) if t.is_empty() || t == "absolute" || t == "abs" => Adjustment::Absolute,
                Some(t) if t == "relative" || t == "rel" => Adjustment::Relative,
                Some(t) if t == "toggle" || t == "tog" => Adjustment::Toggle,
                Some(t) => {
                    return Err(invalid(format!(
                        "AdjustmentType {t:?} is not absolute, relative or toggle"
                    )))
                }
            };
            let level = match (volume, speed) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ActionError::new(
                        ResultCode::InvalidParameters,
                        "AdjustPlay changes exactly one of Volume or Speed",
                    ))
                }
                (None, Some(s)) if (-20..=20).contains(&s) => Level::Speed(s as i32),
                (Some(v), None) if (-20..=20).contains(&v) => Level::Volume(v as i32),
                (_, Some(s)) => return Err(invalid(format!("Speed {s} is outside -20..20"))),
                (Some(v), _) => return Err(invalid(format!("Volume {v} is outside -20..20"))),
            };
            Ok(MediaAction::AdjustPlay {
                connection: p.required_connection_id()?,
                level,
                adjustment,
            })
        }
        "VoiceRecognition" => Err(ActionError::new(
            ResultCode::ResourceUnavailable,
            "VoiceRecognition: no speech recognition resources on this server",
        )),
        "Record" => {
            p.allow(&[
                "Filename",
                "ConnectionId",
                "ConferenceId",
                "TermCondMaxTime",
                "TermCondDigit",
                "TermCondSilence",
                "TermCondNonSilence",
                "AudioFileSampleRate",
                "AudioFileSampleSize",
                "AudioFileEncoding",
                "AudioFileFormat",
                "CommandTimeout",
                "Expires",
                "State",
                "Timeout",
            ])?;
            let target = p.operation_target()?;
            if let Some(format) = p.text("AudioFileFormat")? {
                if !format.eq_ignore_ascii_case("wav") {
                    return Err(ActionError::new(
                        ResultCode::ResourceUnavailable,
                        format!("AudioFileFormat {format:?} is not available; recordings are wav"),
                    ));
                }
            }
            let encoding = match p.text("AudioFileEncoding")?.map(|e| e.to_ascii_lowercase()) {
                None => Encoding::Pcm16,
                Some(e) if e == "pcm" => Encoding::Pcm16,
                Some(e) if e == "ulaw" => Encoding::Ulaw,
                Some(e) if e == "alaw" => Encoding::Alaw,
                Some(e) if e == "adpcm" => {
                    return Err(ActionError::new(
                        ResultCode::ResourceUnavailable,
                        "AudioFileEncoding adpcm is not available; use pcm, ulaw or alaw",
                    ))
                }
                Some(e) => {
                    return Err(invalid(format!(
                        "AudioFileEncoding {e:?} is not ulaw, alaw, pcm or adpcm"
                    )))
                }
            };
            let file_rate = match p.number("AudioFileSampleRate")? {
                None | Some(8) => 8000,
                Some(16) if encoding == Encoding::Pcm16 => 16000,
                Some(r @ (6 | 11 | 16)) => {
                    return Err(ActionError::new(
                        ResultCode::ResourceUnavailable,
                        format!("AudioFileSampleRate {r} kHz is not available for this encoding; use 8 (or 16 with pcm)"),
                    ))
                }
                Some(r) => return Err(invalid(format!("AudioFileSampleRate {r} is not 6, 8 or 11 (kHz)"))),
            };
            match (p.number("AudioFileSampleSize")?, encoding) {
                (None, _) | (Some(16), Encoding::Pcm16) | (Some(8), Encoding::Ulaw | Encoding::Alaw) => {}
                (Some(size), _) => {
                    return Err(invalid(format!(
                        "AudioFileSampleSize {size} does not fit the encoding (16 for pcm, 8 for ulaw/alaw)"
                    )))
                }
            }
            let expires_days = match p.number("Expires")? {
                None => 1,
                Some(d) if (0..=36_500).contains(&d) => d as u32,
                Some(d) => return Err(invalid(format!("Expires {d} is not a number of days"))),
            };
            Ok(MediaAction::Record(RecordRequest {
                target,
                filename: p.text("Filename")?.filter(|f| !f.is_empty()),
                conds: p.term_conds(true)?,
                encoding,
                file_rate,
                expires_days,
                state: p.text("State")?,
            }))
        }
        "DetectSilence" | "DetectNonSilence" => {
            let silence = action == "DetectSilence";
            let time_name = if silence {
                "SilenceTime"
            } else {
                "NonSilenceTime"
            };
            p.allow(&["ConnectionId", time_name, "CommandTimeout", "Timeout"])?;
            let needed = p.millis(time_name)?.ok_or_else(|| {
                ActionError::new(
                    ResultCode::InvalidParameters,
                    format!("{time_name} is required"),
                )
            })?;
            Ok(MediaAction::DetectEnergy {
                connection: p.required_connection_id()?,
                silence,
                needed,
                command_timeout: p.millis("CommandTimeout")?,
                state: None,
            })
        }
        other => Err(ActionError::new(
            ResultCode::UnknownCommand,
            format!("unknown Media Control action {other:?}"),
        )),
    }
}

/// An action's JSON parameters, read with the CUAE conventions (ids, Booleans, numbers as
/// text); shared by the Media Control and Call Control parsers.
pub(super) struct Params<'a>(pub(super) &'a Map<String, Value>);

impl Params<'_> {
    /// Unknown parameter names are refused: a misspelt `ConnectionID` must not silently
    /// turn a targeted delete into "neither id given".
    pub(super) fn allow(&self, names: &[&str]) -> Result<(), ActionError> {
        match self.0.keys().find(|k| !names.contains(&k.as_str())) {
            Some(k) => Err(invalid(format!(
                "unknown parameter {k:?} (allowed: {})",
                names.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// Present, non-null parameter as text (numbers accepted as their decimal text).
    pub(super) fn text(&self, name: &str) -> Result<Option<String>, ActionError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(invalid(format!(
                "{name} must be a string or number, not {other}"
            ))),
        }
    }

    /// A CUAE id: "0" / 0 / absent mean not specified (reference §2).
    fn id(&self, name: &str, bad_format: ResultCode) -> Result<Option<u32>, ActionError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        let id: u32 = text.parse().map_err(|_| {
            ActionError::new(bad_format, format!("{name} {text:?} is not a valid id"))
        })?;
        Ok((id != 0).then_some(id))
    }

    fn connection_id(&self) -> Result<Option<u32>, ActionError> {
        self.id("ConnectionId", ResultCode::InvalidConnectionId)
    }

    fn conference_id(&self) -> Result<Option<u32>, ActionError> {
        self.id("ConferenceId", ResultCode::InvalidParameter)
    }

    /// A signed whole number (JSON number or decimal text).
    fn number(&self, name: &str) -> Result<Option<i64>, ActionError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        text.parse::<i64>()
            .map(Some)
            .map_err(|_| invalid(format!("{name} {text:?} is not a whole number")))
    }

    /// Milliseconds (a positive whole number).
    fn millis(&self, name: &str) -> Result<Option<Duration>, ActionError> {
        match self.number(name)? {
            None => Ok(None),
            Some(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms as u64))),
            Some(ms) => Err(invalid(format!(
                "{name} {ms} must be a positive number of ms"
            ))),
        }
    }

    /// Volume/Speed: −10..=10.
    fn level(&self, name: &str) -> Result<Option<i32>, ActionError> {
        match self.number(name)? {
            None => Ok(None),
            Some(v) if (-10..=10).contains(&v) => Ok(Some(v as i32)),
            Some(v) => Err(invalid(format!("{name} {v} is outside -10..10"))),
        }
    }

    /// The `TermCond*` parameters and `CommandTimeout` (whichever the action allowed).
    fn term_conds(&self, with_timeout: bool) -> Result<TermConds, ActionError> {
        let digit = match self.text("TermCondDigit")? {
            None => None,
            Some(d) => {
                let d = digit_string("TermCondDigit", &d, 1)?;
                d.chars().next()
            }
        };
        let max_digits = match self.number("TermCondMaxDigits")? {
            None => None,
            Some(n) if (1..=128).contains(&n) => Some(n as u32),
            Some(n) => return Err(invalid(format!("TermCondMaxDigits {n} is outside 1..128"))),
        };
        Ok(TermConds {
            max_time: self.millis("TermCondMaxTime")?,
            max_digits,
            digit,
            digit_list: self
                .text("TermCondDigitList")?
                .map(|l| digit_string("TermCondDigitList", &l.replace(',', ""), 16))
                .transpose()?,
            digit_pattern: self
                .text("TermCondDigitPattern")?
                .map(|l| digit_string("TermCondDigitPattern", &l, 15))
                .transpose()?,
            inter_digit_delay: self.millis("TermCondInterDigitDelay")?,
            silence: self.millis("TermCondSilence")?,
            non_silence: self.millis("TermCondNonSilence")?,
            command_timeout: if with_timeout {
                self.millis("CommandTimeout")?
            } else {
                None
            },
        })
    }

    /// Play/PlayTone/Record target: a connection, or a conference (through a temporary
    /// conference connection).
    fn operation_target(&self) -> Result<Target, ActionError> {
        match (self.connection_id()?, self.conference_id()?) {
            (Some(_), Some(_)) => Err(invalid(
                "give ConnectionId or ConferenceId, not both".into(),
            )),
            (Some(c), None) => Ok(Target::Connection(c)),
            (None, Some(c)) => Ok(Target::Conference(c)),
            (None, None) => Err(ActionError::new(
                ResultCode::InvalidParameters,
                "ConnectionId (or ConferenceId) is required",
            )),
        }
    }

    fn required_connection_id(&self) -> Result<u32, ActionError> {
        self.connection_id()?.ok_or_else(|| {
            ActionError::new(ResultCode::InvalidParameters, "ConnectionId is required")
        })
    }

    fn required_conference_id(&self) -> Result<u32, ActionError> {
        self.conference_id()?.ok_or_else(|| {
            ActionError::new(ResultCode::InvalidParameters, "ConferenceId is required")
        })
    }

    /// A Boolean parameter: JSON true/false, "true"/"false" (any case), 1/0.
    pub(super) fn boolean(&self, name: &str) -> Result<Option<bool>, ActionError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(invalid(format!(
                    "{name} {s:?} is not a Boolean (true, false)"
                ))),
            },
            Some(other) => Err(invalid(format!(
                "{name} {other} is not a Boolean (true, false)"
            ))),
        }
    }

    /// The conferee attributes of CreateConference/JoinConference.
    fn conferee(&self) -> Result<ConfereeSpec, ActionError> {
        let flag = |name| self.boolean(name).map(|b| b.unwrap_or(false));
        Ok(ConfereeSpec {
            muted: false,
            deaf: false,
            receive_only: flag("ReceiveOnly")?,
            monitor: flag("Monitor")?,
            tariff_tone: flag("TariffTone")?,
            coach: flag("Coach")?,
            pupil: flag("Pupil")?,
        })
    }

    /// Tx address (both or neither of MediaTxIP/MediaTxPort) and codecs given with a join.
    fn completion(&self) -> Result<Completion, ActionError> {
        let tx = match (self.text("MediaTxIP")?, self.text("MediaTxPort")?) {
            (None, None) => None,
            _ => Some(self.tx_address()?),
        };
        Ok(Completion {
            tx,
            codecs: self.codecs()?,
        })
    }

    /// MmsId, when given, is a media server id (0–255); which server is `on_this_node`'s
    /// question.
    pub(super) fn check_mms_id(&self) -> Result<(), ActionError> {
        match self.text("MmsId")? {
            None => Ok(()),
            Some(text) => match text.parse::<u8>() {
                Ok(_) => Ok(()),
                Err(_) => Err(invalid(format!(
                    "MmsId {text:?} is not a media server id (0-255)"
                ))),
            },
        }
    }

    fn tx_address(&self) -> Result<SocketAddr, ActionError> {
        let ip = self.text("MediaTxIP")?.ok_or_else(|| {
            ActionError::new(ResultCode::InvalidParameters, "MediaTxIP is required")
        })?;
        let port = self.text("MediaTxPort")?.ok_or_else(|| {
            ActionError::new(ResultCode::InvalidParameters, "MediaTxPort is required")
        })?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| invalid(format!("MediaTxIP {ip:?} is not an IP address")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("MediaTxPort {port:?} is not a port (1-65535)")))?;
        Ok(SocketAddr::new(ip, port))
    }

    fn codecs(&self) -> Result<CodecChoice, ActionError> {
        Ok(CodecChoice {
            rx_codec: self.codec("MediaRxCodec")?,
            tx_codec: self.codec("MediaTxCodec")?,
            rx_framesize: self.framesize("MediaRxFramesize")?,
            tx_framesize: self.framesize("MediaTxFramesize")?,
        })
    }

    fn codec(&self, name: &str) -> Result<Option<Codec>, ActionError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        match text.to_ascii_lowercase().as_str() {
            "g711u" | "pcmu" => Ok(Some(Codec::Pcmu)),
            "g711a" | "pcma" => Ok(Some(Codec::Pcma)),
            // Real CUAE codecs we do not carry: the MMS answers "requested coder not available".
            "g723" | "g729" => Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                format!("{name} {text} is not available on this server"),
            )),
            _ => Err(invalid(format!(
                "{name} {text:?} is not a codec (G711u, G711a)"
            ))),
        }
    }

    fn framesize(&self, name: &str) -> Result<Option<u32>, ActionError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        match text.parse::<u32>() {
            Ok(ms) if (10..=60).contains(&ms) && ms % 10 == 0 => Ok(Some(ms)),
            _ => Err(invalid(format!(
                "{name} {text:?} must be 10, 20, 30, 40, 50 or 60 ms"
            ))),
        }
    }
}

/// DTMF digits (`0-9`, `*`, `#`, `A-D`), 1 to `max` of them.
fn digit_string(name: &str, text: &str, max: usize) -> Result<String, ActionError> {
    use crate::media::dtmf::{digit_to_event, event_to_digit};
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max {
        return Err(invalid(format!("{name} must be 1 to {max} DTMF digits")));
    }
    text.chars()
        .map(|c| {
            digit_to_event(c)
                .and_then(event_to_digit)
                .filter(|&d| d != '!')
                .ok_or_else(|| invalid(format!("{name}: {c:?} is not a DTMF digit")))
        })
        .collect()
}

pub(super) fn invalid(message: String) -> ActionError {
    ActionError::new(ResultCode::InvalidParameter, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_action_for_another_node_is_refused_by_name() {
        let map = |v: Value| v.as_object().cloned().expect("object");
        let mine = (3u32 << 24) | 17;
        let theirs = (4u32 << 24) | 17;
        for ok in [
            json!({}),
            json!({"MmsId": 3, "ConnectionId": mine.to_string()}),
            json!({"ConferenceId": mine}),
            json!({"ConnectionId": "0"}),
            json!({"ConnectionId": "not a number"}),
        ] {
            assert!(on_this_node(&map(ok.clone()), 3).is_ok(), "{ok}");
        }
        for (bad, owner) in [
            (json!({"MmsId": "4"}), "media server 4"),
            (
                json!({"ConnectionId": theirs.to_string()}),
                "media server 4",
            ),
            (json!({"ConferenceId": 17}), "media server 0"),
        ] {
            let e = on_this_node(&map(bad.clone()), 3).unwrap_err();
            assert_eq!(e.code, ResultCode::ResourceUnavailable, "{bad}");
            assert!(e.message.contains(owner), "{bad}: {}", e.message);
        }
        assert_eq!(
            code(parse("ReserveConnection", json!({"MmsId": 256}))),
            ResultCode::InvalidParameter
        );
    }

    fn parse(action: &str, body: Value) -> Result<MediaAction, ActionError> {
        let map = body.as_object().cloned().unwrap_or_default();
        parse_action(action, &map, IpAddr::from([127, 0, 0, 1]))
    }

    fn code(r: Result<MediaAction, ActionError>) -> ResultCode {
        r.expect_err("expected an error").code
    }

    #[test]
    fn ids_accept_strings_and_numbers_and_zero_means_absent() {
        let MediaAction::Delete { connection, .. } =
            parse("DeleteConnection", json!({"ConnectionId": "17"})).unwrap()
        else {
            panic!("wrong action")
        };
        assert_eq!(connection, Some(17));
        let MediaAction::Delete { connection, .. } =
            parse("DeleteConnection", json!({"ConnectionId": 0})).unwrap()
        else {
            panic!("wrong action")
        };
        assert_eq!(connection, None);
    }

    #[test]
    fn bad_input_gets_the_documented_codes() {
        assert_eq!(
            code(parse("DeleteConnection", json!({"ConnectionId": "abc"}))),
            ResultCode::InvalidConnectionId
        );
        assert_eq!(
            code(parse("DeleteConnection", json!({"ConnectionId": "-3"}))),
            ResultCode::InvalidConnectionId
        );
        assert_eq!(
            code(parse("CreateConnection", json!({"MediaTxIP": "127.0.0.1"}))),
            ResultCode::InvalidParameters
        );
        assert_eq!(
            code(parse(
                "CreateConnection",
                json!({"MediaTxIP": "nope", "MediaTxPort": 4000})
            )),
            ResultCode::InvalidParameter
        );
        assert_eq!(
            code(parse(
                "CreateConnection",
                json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 70000})
            )),
            ResultCode::InvalidParameter
        );
        assert_eq!(
            code(parse(
                "CreateConnection",
                json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000, "MediaTxCodec": "G729"})
            )),
            ResultCode::ResourceUnavailable
        );
        assert_eq!(
            code(parse(
                "CreateConnection",
                json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 4000, "MediaTxFramesize": 25})
            )),
            ResultCode::InvalidParameter
        );
        assert_eq!(
            code(parse("DeleteConnection", json!({"ConnectionID": "1"}))),
            ResultCode::InvalidParameter
        );
        assert_eq!(
            code(parse(
                "ModifyConnection",
                json!({"MediaTxIP": "127.0.0.1", "MediaTxPort": 1})
            )),
            ResultCode::InvalidParameters
        );
        assert_eq!(
            code(parse("Frobnicate", json!({}))),
            ResultCode::UnknownCommand
        );
    }

    #[test]
    fn digits_are_dtmf_digits_in_their_canonical_form() {
        assert_eq!(digit_string("Digits", " 12a*#D ", 16).unwrap(), "12A*#D");
        for bad in ["", "1x", "!", "12345"] {
            assert_eq!(
                digit_string("Digits", bad, 4).unwrap_err().code,
                ResultCode::InvalidParameter,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_parses_address_codecs_and_framesizes() {
        let MediaAction::Create {
            connection,
            tx,
            codecs,
            ..
        } = parse(
            "CreateConnection",
            json!({"ConnectionId": "5", "MediaTxIP": "::1", "MediaTxPort": "4002",
                   "MediaTxCodec": "G711a", "MediaRxFramesize": 30, "Timeout": 5000}),
        )
        .unwrap()
        else {
            panic!("wrong action")
        };
        assert_eq!(connection, Some(5));
        assert_eq!(tx, "[::1]:4002".parse().unwrap());
        assert_eq!(codecs.tx_codec, Some(Codec::Pcma));
        assert_eq!(codecs.rx_framesize, Some(30));
    }
}
