//! Entry points for the fuzz targets of `fuzz/` (docs/RELIABILITY.md, "Fuzzing"): the request
//! parsers that are private to their HTTP handlers, taking the bytes the handler takes.
//!
//! Owns nothing: each function forwards to the code the server runs, unchanged. Not an API
//! (hidden from the docs); the parsers that are public already (SIP, SDP, RTP, RTCP, SRTP, WAV,
//! the Verba and agent gateway requests) are called by the targets directly.

use std::net::IpAddr;

use serde_json::Value;

use crate::api::cti;
use crate::control::result::ActionError;
use crate::control::{CallAction, MediaAction};

/// `POST /mediacontrol/{action}`: the body's parameters, then the action.
pub fn media_action(
    action: &str,
    body: &[u8],
    requester: IpAddr,
) -> Result<MediaAction, ActionError> {
    crate::api::parse_body(body)
        .and_then(|params| crate::api::mediacontrol::parse_action(action, &params, requester))
}

/// `POST /callcontrol/{action}`: the body's parameters, then the action.
pub fn call_action(action: &str, body: &[u8]) -> Result<CallAction, ActionError> {
    crate::api::parse_body(body)
        .and_then(|params| crate::api::callcontrol::parse_action(action, &params))
}

/// A CTI WebSocket text frame: the request it parses to (as its `Debug` text), or the
/// `EventError` the client is sent.
pub fn cti_frame(text: &str) -> Result<String, Value> {
    cti_answer(cti::text_fields(text))
}

/// `POST /cti/{name}`: the request it parses to (as its `Debug` text), or the `EventError` in
/// the response body.
pub fn cti_post(name: &str, body: &[u8]) -> Result<String, Value> {
    cti_answer(cti::post_fields(name.to_string(), body))
}

fn cti_answer(
    fields: Result<serde_json::Map<String, Value>, crate::control::CtiError>,
) -> Result<String, Value> {
    let fields = fields.map_err(|e| cti::error_event(None, &e))?;
    let reference = cti::reference_of(&fields);
    cti::parse(&fields)
        .map(|parsed| format!("{parsed:?}"))
        .map_err(|e| cti::error_event(reference, &e))
}
