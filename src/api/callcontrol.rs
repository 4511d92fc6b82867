//! Call Control actions on the wire: JSON parameters → [`CallAction`].
//!
//! Owns: the CUAE Call Control parameter names (call-control-api.md §2) and their checks.
//! Must not: look at calls — whether a call exists is the control plane's answer.

use serde_json::{Map, Value};

use crate::control::result::{ActionError, ResultCode};
use crate::control::{CallAction, ConferenceChoice};

/// Parses one Call Control action's parameters.
pub fn parse_action(action: &str, params: &Map<String, Value>) -> Result<CallAction, ActionError> {
    let allow = |names: &[&str]| -> Result<(), ActionError> {
        match params.keys().find(|k| !names.contains(&k.as_str())) {
            Some(k) => Err(invalid(format!(
                "unknown parameter {k:?} (allowed: {})",
                names.join(", ")
            ))),
            None => Ok(()),
        }
    };
    match action {
        "AcceptCall" => {
            allow(&["CallId", "Timeout"])?;
            Ok(CallAction::Accept {
                call: call_id(params)?,
            })
        }
        "AnswerCall" => {
            allow(&[
                "CallId",
                "DisplayName",
                "MmsId",
                "ProxyDTMFCallId",
                "WaitForMedia",
                "Conference",
                "ConferenceId",
                "Hairpin",
                "Timeout",
            ])?;
            if text(params, "ProxyDTMFCallId")?.is_some_and(|p| !p.is_empty() && p != "0") {
                return Err(ActionError::new(
                    ResultCode::ResourceUnavailable,
                    "ProxyDTMFCallId (DTMF relay between calls) is not available on this server",
                ));
            }
            match text(params, "MmsId")?.as_deref() {
                None | Some("0") => {}
                Some(other) => {
                    return Err(ActionError::new(
                        ResultCode::ResourceUnavailable,
                        format!("media server {other} is not this server (MmsId 0)"),
                    ))
                }
            }
            if let Some(wait) = text(params, "WaitForMedia")? {
                if !["none", "tx", "rx", "txrx"].contains(&wait.to_ascii_lowercase().as_str()) {
                    return Err(invalid(format!(
                        "WaitForMedia {wait:?} is not None, Tx, Rx or TxRx"
                    )));
                }
            }
            let conference = if boolean(params, "Conference")?.unwrap_or(false) {
                let id = match text(params, "ConferenceId")? {
                    None => None,
                    Some(t) => {
                        let id: u32 = t
                            .parse()
                            .map_err(|_| invalid(format!("ConferenceId {t:?} is not an id")))?;
                        (id != 0).then_some(id)
                    }
                };
                Some(ConferenceChoice {
                    conference: id,
                    hairpin: boolean(params, "Hairpin")?.unwrap_or(false),
                })
            } else {
                None
            };
            Ok(CallAction::Answer {
                call: call_id(params)?,
                conference,
            })
        }
        "RejectCall" => {
            allow(&["CallId", "Status", "Timeout"])?;
            let status = match text(params, "Status")? {
                None => 480,
                Some(t) => match t.parse::<u16>() {
                    Ok(s) if (400..=699).contains(&s) => s,
                    _ => return Err(invalid(format!("Status {t:?} is not a SIP error status"))),
                },
            };
            Ok(CallAction::Reject {
                call: call_id(params)?,
                status,
            })
        }
        "Redirect" => {
            allow(&["CallId", "To", "Timeout"])?;
            let to = text(params, "To")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ActionError::new(ResultCode::InvalidParameters, "To is required"))?;
            if to.chars().any(|c| c.is_whitespace() || "<>\"".contains(c)) {
                return Err(invalid(format!("To {to:?} is not a SIP URI or user")));
            }
            Ok(CallAction::Redirect {
                call: call_id(params)?,
                to,
            })
        }
        "Hangup" => {
            allow(&["CallId", "Timeout"])?;
            Ok(CallAction::Hangup {
                call: call_id(params)?,
            })
        }
        "MakeCall" | "BlindTransfer" | "SendUserInput" | "BridgeCalls" | "UnbridgeCalls"
        | "Barge" => Err(ActionError::new(
            ResultCode::ResourceUnavailable,
            format!("{action} is not available on this server yet"),
        )),
        other => Err(ActionError::new(
            ResultCode::UnknownCommand,
            format!("unknown Call Control action {other:?}"),
        )),
    }
}

fn text(params: &Map<String, Value>, name: &str) -> Result<Option<String>, ActionError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(format!(
            "{name} must be a string or number, not {other}"
        ))),
    }
}

fn boolean(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, ActionError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(invalid(format!("{name} {other} is not a Boolean"))),
    }
}

fn call_id(params: &Map<String, Value>) -> Result<u64, ActionError> {
    let t = text(params, "CallId")?
        .ok_or_else(|| ActionError::new(ResultCode::InvalidParameters, "CallId is required"))?;
    t.parse()
        .map_err(|_| invalid(format!("CallId {t:?} is not a call id")))
}

fn invalid(message: String) -> ActionError {
    ActionError::new(ResultCode::InvalidParameter, message)
}
