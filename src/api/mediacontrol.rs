//! Media Control actions on the wire: JSON parameters → [`MediaAction`].
//!
//! Owns: parameter names, types and per-action allowed sets exactly as the CUAE reference
//! (§3.1–3.4) spells them, and the ResultCodes for malformed input (22, 26, 27, 8).
//! Must not: look at the registry — whether an id exists is the control plane's answer.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use crate::control::result::{ActionError, ResultCode};
use crate::control::{AttributeChange, CodecChoice, Completion, MediaAction};
use crate::engine::ConfereeSpec;
use crate::sdp::Codec;

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
            let connection = p.connection_id()?.ok_or_else(|| {
                ActionError::new(ResultCode::InvalidParameters, "ConnectionId is required")
            })?;
            Ok(MediaAction::Modify {
                connection,
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
            p.allow(&[
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
                "Hairpin",
                "Monitor",
                "TariffTone",
                "Coach",
                "Pupil",
                "ReceiveOnly",
                "SoundToneOnJoin",
                "CallId",
                "Timeout",
            ])?;
            p.check_mms_id()?;
            p.refuse_join_tone()?;
            Ok(MediaAction::CreateConference {
                connection: p.required_connection_id()?,
                completion: p.completion()?,
                conferee: p.conferee()?,
                hairpin: p.boolean("Hairpin")?.unwrap_or(false),
            })
        }
        "JoinConference" => {
            p.allow(&[
                "ConnectionId",
                "ConferenceId",
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
            ])?;
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
                },
            })
        }
        other => Err(ActionError::new(
            ResultCode::UnknownCommand,
            format!("unknown Media Control action {other:?}"),
        )),
    }
}

struct Params<'a>(&'a Map<String, Value>);

impl Params<'_> {
    /// Unknown parameter names are refused: a misspelt `ConnectionID` must not silently
    /// turn a targeted delete into "neither id given".
    fn allow(&self, names: &[&str]) -> Result<(), ActionError> {
        match self.0.keys().find(|k| !names.contains(&k.as_str())) {
            Some(k) => Err(invalid(format!(
                "unknown parameter {k:?} (allowed: {})",
                names.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// Present, non-null parameter as text (numbers accepted as their decimal text).
    fn text(&self, name: &str) -> Result<Option<String>, ActionError> {
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
    fn boolean(&self, name: &str) -> Result<Option<bool>, ActionError> {
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

    /// SoundToneOnJoin: a join tone is not produced by this server, so asking for one is a
    /// clear failure rather than a silent omission.
    fn refuse_join_tone(&self) -> Result<(), ActionError> {
        if self.boolean("SoundToneOnJoin")? == Some(true) {
            return Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                "SoundToneOnJoin is not available on this server; omit it or pass false",
            ));
        }
        Ok(())
    }

    fn check_mms_id(&self) -> Result<(), ActionError> {
        match self.text("MmsId")?.as_deref() {
            None | Some("0") => Ok(()),
            Some(other) => Err(ActionError::new(
                ResultCode::ResourceUnavailable,
                format!("media server {other} is not this server (MmsId 0)"),
            )),
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

fn invalid(message: String) -> ActionError {
    ActionError::new(ResultCode::InvalidParameter, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
