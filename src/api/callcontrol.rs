//! Call Control actions on the wire: JSON parameters → [`CallAction`].
//!
//! Owns: the CUAE Call Control parameter names (call-control-api.md §2) and their checks.
//! Must not: look at calls — whether a call exists is the control plane's answer.

use serde_json::{Map, Value};

use super::mediacontrol::{invalid, Params};
use crate::control::result::{ActionError, ResultCode};
use crate::control::{CallAction, ConferenceChoice};

/// Parses one Call Control action's parameters.
pub fn parse_action(action: &str, params: &Map<String, Value>) -> Result<CallAction, ActionError> {
    let p = Params(params);
    let allow = |names: &[&str]| p.allow(names);
    match action {
        "AcceptCall" => {
            allow(&["CallId", "Timeout"])?;
            Ok(CallAction::Accept { call: call_id(&p)? })
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
            if p.text("ProxyDTMFCallId")?
                .is_some_and(|p| !p.is_empty() && p != "0")
            {
                return Err(ActionError::new(
                    ResultCode::ResourceUnavailable,
                    "ProxyDTMFCallId (DTMF relay between calls) is not available on this server",
                ));
            }
            p.check_mms_id()?;
            if let Some(wait) = p.text("WaitForMedia")? {
                if !["none", "tx", "rx", "txrx"].contains(&wait.to_ascii_lowercase().as_str()) {
                    return Err(invalid(format!(
                        "WaitForMedia {wait:?} is not None, Tx, Rx or TxRx"
                    )));
                }
            }
            let conference = if p.boolean("Conference")?.unwrap_or(false) {
                let id = match p.text("ConferenceId")? {
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
                    hairpin: p.boolean("Hairpin")?.unwrap_or(false),
                })
            } else {
                None
            };
            Ok(CallAction::Answer {
                call: call_id(&p)?,
                conference,
            })
        }
        "RejectCall" => {
            allow(&["CallId", "Status", "Timeout"])?;
            let status = match p.text("Status")? {
                None => 480,
                Some(t) => match t.parse::<u16>() {
                    Ok(s) if (400..=699).contains(&s) => s,
                    _ => return Err(invalid(format!("Status {t:?} is not a SIP error status"))),
                },
            };
            Ok(CallAction::Reject {
                call: call_id(&p)?,
                status,
            })
        }
        "Redirect" => {
            allow(&["CallId", "To", "Timeout"])?;
            let to = p
                .text("To")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ActionError::new(ResultCode::InvalidParameters, "To is required"))?;
            if to.chars().any(|c| c.is_whitespace() || "<>\"".contains(c)) {
                return Err(invalid(format!("To {to:?} is not a SIP URI or user")));
            }
            Ok(CallAction::Redirect {
                call: call_id(&p)?,
                to,
            })
        }
        "Hangup" => {
            allow(&["CallId", "Timeout"])?;
            Ok(CallAction::Hangup { call: call_id(&p)? })
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

fn call_id(p: &Params) -> Result<u64, ActionError> {
    let t = p
        .text("CallId")?
        .ok_or_else(|| ActionError::new(ResultCode::InvalidParameters, "CallId is required"))?;
    t.parse()
        .map_err(|_| invalid(format!("CallId {t:?} is not a call id")))
}
