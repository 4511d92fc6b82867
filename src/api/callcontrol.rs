//! Call Control actions on the wire: JSON parameters → [`CallAction`].
//!
//! Owns: the CUAE Call Control parameter names (call-control-api.md §2) and their checks.
//! Must not: look at calls — whether a call exists is the control plane's answer.

use serde_json::{Map, Value};

use super::mediacontrol::{invalid, Params};
use crate::control::result::{ActionError, ResultCode};
use crate::control::{CallAction, ConferenceChoice, MakeCall};

/// Parses one Call Control action's parameters.
pub fn parse_action(action: &str, params: &Map<String, Value>) -> Result<CallAction, ActionError> {
    let p = Params(params);
    let allow = |names: &[&str]| p.allow(names);
    match action {
        "AcceptCall" => {
            allow(&["CallId", "EarlyMedia", "Timeout"])?;
            Ok(CallAction::Accept {
                call: call_id(&p)?,
                early_media: p.boolean("EarlyMedia")?.unwrap_or(false),
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
            if p.text("ProxyDTMFCallId")?
                .is_some_and(|p| !p.is_empty() && p != "0")
            {
                return Err(ActionError::new(
                    ResultCode::ResourceUnavailable,
                    "ProxyDTMFCallId (DTMF relay between calls) is not available on this server",
                ));
            }
            p.check_mms_id()?;
            check_wait_for_media(&p)?;
            Ok(CallAction::Answer {
                call: call_id(&p)?,
                conference: conference_choice(&p)?,
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
            let to = required_text(&p, "To")?;
            check_uri_or_user(&to)?;
            Ok(CallAction::Redirect {
                call: call_id(&p)?,
                to,
            })
        }
        "Hangup" => {
            allow(&["CallId", "Timeout"])?;
            Ok(CallAction::Hangup { call: call_id(&p)? })
        }
        "MakeCall" => {
            allow(&[
                "To",
                "From",
                "DisplayName",
                "MmsId",
                "PeerCallId",
                "ProxyDTMFCallId",
                "WaitForMedia",
                "Conference",
                "ConferenceId",
                "Hairpin",
                "Trunk",
                "Timeout",
            ])?;
            for p2p in ["PeerCallId", "ProxyDTMFCallId"] {
                if p.text(p2p)?.is_some_and(|p| !p.is_empty() && p != "0") {
                    return Err(ActionError::new(
                        ResultCode::ResourceUnavailable,
                        format!("{p2p} (peer-to-peer calls) is not available on this server: calls always have a media connection"),
                    ));
                }
            }
            p.check_mms_id()?;
            check_wait_for_media(&p)?;
            let to = required_text(&p, "To")?;
            let from = p.text("From")?.filter(|f| !f.is_empty());
            if let Some(f) = &from {
                if !crate::sip::message::is_token(f) {
                    return Err(invalid(format!("From {f:?} is not a SIP user")));
                }
            }
            let display_name = p.text("DisplayName")?.filter(|d| !d.is_empty());
            if let Some(d) = &display_name {
                if d.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                    return Err(invalid(format!(
                        "DisplayName {d:?} has quotes or control characters"
                    )));
                }
            }
            Ok(CallAction::MakeCall(MakeCall {
                to,
                from,
                display_name,
                trunk: p.text("Trunk")?.filter(|t| !t.is_empty()),
                conference: conference_choice(&p)?,
            }))
        }
        "BlindTransfer" => {
            allow(&["CallId", "To", "Timeout"])?;
            let to = required_text(&p, "To")?;
            check_uri_or_user(&to)?;
            Ok(CallAction::BlindTransfer {
                call: call_id(&p)?,
                to,
            })
        }
        "SendUserInput" => {
            allow(&["CallId", "Digits", "Timeout"])?;
            let digits = required_text(&p, "Digits")?;
            if let Some(bad) = digits
                .chars()
                .find(|c| !"0123456789*#ABCDabcd".contains(*c))
            {
                return Err(invalid(format!(
                    "Digits {digits:?}: {bad:?} is not a DTMF digit (0-9, *, #, A-D)"
                )));
            }
            Ok(CallAction::SendUserInput {
                call: call_id(&p)?,
                digits,
            })
        }
        "BridgeCalls" | "UnbridgeCalls" => {
            allow(&["CallId", "PeerCallId", "Timeout"])?;
            let call = call_id(&p)?;
            let peer = match p.text("PeerCallId")?.filter(|t| !t.is_empty() && t != "0") {
                None => None,
                Some(t) => Some(
                    t.parse()
                        .map_err(|_| invalid(format!("PeerCallId {t:?} is not a call id")))?,
                ),
            };
            Ok(if action == "BridgeCalls" {
                CallAction::Bridge { call, peer }
            } else {
                CallAction::Unbridge { call, peer }
            })
        }
        "Barge" => Err(ActionError::new(
            ResultCode::ResourceUnavailable,
            "Barge joins a call on an SCCP shared line; this server speaks SIP only",
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

fn required_text(p: &Params, name: &str) -> Result<String, ActionError> {
    p.text(name)?.filter(|t| !t.is_empty()).ok_or_else(|| {
        ActionError::new(ResultCode::InvalidParameters, format!("{name} is required"))
    })
}

fn check_uri_or_user(to: &str) -> Result<(), ActionError> {
    if to
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
    {
        return Err(invalid(format!("To {to:?} is not a SIP URI or user")));
    }
    Ok(())
}

/// WaitForMedia: None, Tx, Rx or TxRx (all but None behave as TxRx, reference §10.2).
fn check_wait_for_media(p: &Params) -> Result<(), ActionError> {
    if let Some(wait) = p.text("WaitForMedia")? {
        if !["none", "tx", "rx", "txrx"].contains(&wait.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!(
                "WaitForMedia {wait:?} is not None, Tx, Rx or TxRx"
            )));
        }
    }
    Ok(())
}

/// `Conference`, `ConferenceId` (absent or 0: a new one) and `Hairpin` of AnswerCall/MakeCall.
fn conference_choice(p: &Params) -> Result<Option<ConferenceChoice>, ActionError> {
    if !p.boolean("Conference")?.unwrap_or(false) {
        return Ok(None);
    }
    let id = match p.text("ConferenceId")? {
        None => None,
        Some(t) => {
            let id: u32 = t
                .parse()
                .map_err(|_| invalid(format!("ConferenceId {t:?} is not an id")))?;
            (id != 0).then_some(id)
        }
    };
    Ok(Some(ConferenceChoice {
        conference: id,
        hairpin: p.boolean("Hairpin")?.unwrap_or(false),
    }))
}
