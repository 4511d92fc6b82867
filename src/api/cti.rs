//! The CTI surface: T-Library requests and events as JSON, over a WebSocket (`GET /cti`) or
//! one request per `POST /cti/{Request}`.
//!
//! Owns: each client's registrations (`RequestRegisterAddress` with a DN, or `"*"` for every
//! DN) and its `EventSequenceNumber`s, parsing requests into [`CtiRequest`] (or `EventError`
//! with the codes of docs/CTI.md), and a slow client's disconnection.
//! Must not: keep call state; requests go to the control plane, events come from it.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

use super::ApiState;
use crate::control::cti::CtiEvent;
use crate::control::party::ConnId;
use crate::control::{cti_codes as codes, ControlRequest, CtiError, CtiRequest};

/// How long one event may take to reach a client before it counts as stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code for a client that cannot keep up (RFC 6455 §7.4.1: 1008 policy violation).
const CLOSE_TOO_SLOW: u16 = 1008;

/// `GET /cti`: the WebSocket.
pub async fn upgrade(State(state): State<ApiState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_client(state, socket))
}

/// `POST /cti/{Request}`: one request, its answer as JSON (EventError with a 4xx/5xx status).
pub async fn post_request(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let fields = match post_fields(name, &body) {
        Ok(fields) => fields,
        Err(e) => return error_response(None, &e),
    };
    let reference = reference_of(&fields);
    match parse(&fields) {
        Ok(Parsed::Register(_) | Parsed::Unregister(_)) => error_response(
            reference,
            &CtiError::new(
                codes::NOT_SUPPORTED,
                "registration needs the WebSocket (GET /cti): a POST has no event stream",
            ),
        ),
        Ok(Parsed::Control(request)) => match ask(&state, request, reference.unwrap_or(0)).await {
            Ok(answer) => Json(with_reference(answer, reference)).into_response(),
            Err(e) => error_response(reference, &e),
        },
        Err(e) => error_response(reference, &e),
    }
}

/// One WebSocket client: its requests in, its registered DNs' events out.
async fn serve_client(state: ApiState, mut socket: WebSocket) {
    let mut events = state.control.subscribe_cti();
    let mut stopping = state.stopping.clone();
    let mut client = Client::default();
    loop {
        tokio::select! {
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                let answer = match message {
                    Message::Text(text) => client.handle(&state, text.as_str()).await,
                    Message::Binary(_) => error_event(None, &malformed("requests are JSON text frames")),
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if !send(&mut socket, &answer).await {
                    return;
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    let Some(out) = client.deliver(&event) else { continue };
                    if !send(&mut socket, &out).await {
                        return close(socket, "too slow: events could not be delivered").await;
                    }
                }
                Err(RecvError::Lagged(lost)) => {
                    tracing::warn!(lost, "CTI client too slow: disconnected");
                    return close(socket, "too slow: events were lost").await;
                }
                Err(RecvError::Closed) => return,
            },
            _ = stopping.changed() => return close(socket, "server stopping").await,
        }
    }
}

/// One client's registrations and event numbering.
#[derive(Default)]
struct Client {
    /// Registered DNs; `"*"` is every DN.
    dns: HashSet<String>,
    /// The last EventSequenceNumber sent to this client.
    seq: u64,
}

impl Client {
    /// A request's answer (registrations are answered here, the rest by the control plane).
    async fn handle(&mut self, state: &ApiState, text: &str) -> Value {
        let fields = match text_fields(text) {
            Ok(fields) => fields,
            Err(e) => return error_event(None, &e),
        };
        let reference = reference_of(&fields);
        let answer = match parse(&fields) {
            Ok(Parsed::Register(dn)) => {
                self.dns.insert(dn.clone());
                Ok(json!({"Event": "EventRegistered", "ThisDN": dn}))
            }
            Ok(Parsed::Unregister(dn)) => {
                self.dns.remove(&dn);
                Ok(json!({"Event": "EventUnregistered", "ThisDN": dn}))
            }
            Ok(Parsed::Control(request)) => ask(state, request, reference.unwrap_or(0)).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => with_reference(answer, reference),
            Err(e) => error_event(reference, &e),
        }
    }

    /// The event as this client gets it, if it registered the event's DN.
    fn deliver(&mut self, event: &CtiEvent) -> Option<Value> {
        if !self.dns.contains("*") && !self.dns.contains(&event.this_dn) {
            return None;
        }
        self.seq += 1;
        let mut value = serde_json::to_value(event).ok()?;
        value["EventSequenceNumber"] = json!(self.seq);
        Some(value)
    }
}

/// A `POST /cti/{Request}` body's attributes, with `Request` set from the path: an empty body
/// is a request without attributes.
pub(crate) fn post_fields(name: String, body: &[u8]) -> Result<Map<String, Value>, CtiError> {
    let mut fields = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(malformed("the body must be a JSON object")),
            Err(e) => return Err(malformed(format!("the body is not JSON: {e}"))),
        }
    };
    fields.insert("Request".into(), Value::String(name));
    Ok(fields)
}

/// A WebSocket text frame's attributes.
pub(crate) fn text_fields(text: &str) -> Result<Map<String, Value>, CtiError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(malformed("a request is a JSON object")),
        Err(e) => Err(malformed(format!("not JSON: {e}"))),
    }
}

/// What a request is, after parsing.
#[derive(Debug)]
pub(crate) enum Parsed {
    Register(String),
    Unregister(String),
    Control(CtiRequest),
}

/// Turns a request's attributes into a typed request, or the error to answer.
pub(crate) fn parse(fields: &Map<String, Value>) -> Result<Parsed, CtiError> {
    let name = text(fields, "Request")?;
    let parsed = match name.as_str() {
        "RequestRegisterAddress" => Parsed::Register(text(fields, "ThisDN")?),
        "RequestUnregisterAddress" => Parsed::Unregister(text(fields, "ThisDN")?),
        "RequestQueryCall" => Parsed::Control(CtiRequest::QueryCall {
            conn_id: conn_id(fields)?,
        }),
        "RequestQueryAddress" => Parsed::Control(CtiRequest::QueryAddress {
            this_dn: text(fields, "ThisDN")?,
        }),
        "RequestReleaseCall" => Parsed::Control(CtiRequest::ReleaseCall {
            this_dn: text(fields, "ThisDN")?,
            conn_id: conn_id(fields)?,
        }),
        "RequestDeleteFromConference" => Parsed::Control(CtiRequest::DeleteFromConference {
            this_dn: text(fields, "ThisDN")?,
            conn_id: conn_id(fields)?,
            other_dn: text(fields, "OtherDN")?,
        }),
        "RequestMakeCall" => Parsed::Control(CtiRequest::MakeCall {
            this_dn: text(fields, "ThisDN")?,
            destination: text(fields, "OtherDN")?,
            trunk: optional_text(fields, "Trunk")?,
        }),
        "RequestSingleStepConference" => Parsed::Control(CtiRequest::SingleStepConference {
            this_dn: text(fields, "ThisDN")?,
            conn_id: conn_id(fields)?,
            destination: text(fields, "OtherDN")?,
        }),
        "RequestSingleStepTransfer" => Parsed::Control(CtiRequest::SingleStepTransfer {
            this_dn: text(fields, "ThisDN")?,
            conn_id: conn_id(fields)?,
            destination: text(fields, "OtherDN")?,
        }),
        "RequestHoldCall" | "RequestRetrieveCall" => Parsed::Control(CtiRequest::Hold {
            this_dn: text(fields, "ThisDN")?,
            conn_id: conn_id(fields)?,
            hold: name == "RequestHoldCall",
        }),
        "RequestAnswerCall" => Parsed::Control(CtiRequest::AnswerCall {
            this_dn: text(fields, "ThisDN")?,
            conn_id: conn_id(fields)?,
        }),
        "RequestInitiateConference" | "RequestInitiateTransfer" => {
            Parsed::Control(CtiRequest::Initiate {
                this_dn: text(fields, "ThisDN")?,
                conn_id: conn_id(fields)?,
                destination: text(fields, "OtherDN")?,
            })
        }
        "RequestCompleteConference" | "RequestCompleteTransfer" => {
            Parsed::Control(CtiRequest::Complete {
                this_dn: text(fields, "ThisDN")?,
                conn_id: conn_id(fields)?,
                transfer: name == "RequestCompleteTransfer",
            })
        }
        other => {
            return Err(CtiError::new(
                codes::UNKNOWN_REQUEST,
                format!("unknown request {other:?}"),
            ))
        }
    };
    Ok(parsed)
}

fn text(fields: &Map<String, Value>, name: &str) -> Result<String, CtiError> {
    optional_text(fields, name)?
        .ok_or_else(|| CtiError::new(codes::MISSING_ATTRIBUTE, format!("{name} is required")))
}

fn optional_text(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, CtiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Ok(Some(s.clone())),
        Some(_) => Err(CtiError::new(
            codes::INVALID_ATTRIBUTE,
            format!("{name} must be a non-empty string of at most 128 characters"),
        )),
    }
}

fn conn_id(fields: &Map<String, Value>) -> Result<ConnId, CtiError> {
    let text = text(fields, "ConnID")?;
    ConnId::parse(&text).ok_or_else(|| {
        CtiError::new(
            codes::INVALID_ATTRIBUTE,
            format!("ConnID {text:?} is not 16 hexadecimal digits"),
        )
    })
}

/// The client's ReferenceID, when it gave a usable one.
pub(crate) fn reference_of(fields: &Map<String, Value>) -> Option<u64> {
    fields.get("ReferenceID").and_then(Value::as_u64)
}

async fn ask(state: &ApiState, request: CtiRequest, reference: u64) -> Result<Value, CtiError> {
    let (reply, answer) = oneshot::channel();
    let sent = state
        .control
        .request(ControlRequest::Cti {
            request,
            reference,
            reply,
        })
        .await;
    if sent.is_err() {
        return Err(CtiError::new(codes::REFUSED, "server is shutting down"));
    }
    answer
        .await
        .unwrap_or_else(|_| Err(CtiError::new(codes::REFUSED, "server is shutting down")))
}

fn malformed(message: impl Into<String>) -> CtiError {
    CtiError::new(codes::MALFORMED, message)
}

fn with_reference(mut answer: Value, reference: Option<u64>) -> Value {
    if let Some(reference) = reference {
        answer["ReferenceID"] = json!(reference);
    }
    answer
}

pub(crate) fn error_event(reference: Option<u64>, e: &CtiError) -> Value {
    with_reference(
        json!({"Event": "EventError", "ErrorCode": e.code, "ErrorMessage": e.message}),
        reference,
    )
}

fn error_response(reference: Option<u64>, e: &CtiError) -> Response {
    let status = match e.code {
        codes::UNKNOWN_CONN_ID | codes::DN_NOT_IN_CALL | codes::UNKNOWN_REQUEST => {
            StatusCode::NOT_FOUND
        }
        codes::INVALID_STATE => StatusCode::CONFLICT,
        codes::NOT_SUPPORTED => StatusCode::NOT_IMPLEMENTED,
        codes::REFUSED => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(error_event(reference, e))).into_response()
}

/// Sends one JSON message; false when the client is gone or stuck.
async fn send(socket: &mut WebSocket, value: &Value) -> bool {
    let message = Message::Text(value.to_string().into());
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn close(mut socket: WebSocket, reason: &'static str) {
    let frame = CloseFrame {
        code: CLOSE_TOO_SLOW,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn requests_parse_into_typed_requests_or_coded_errors() {
        let release = parse(&fields(json!({
            "Request": "RequestReleaseCall",
            "ThisDN": "5551001",
            "ConnID": "0001a2b3c4d5e6f7",
            "ReferenceID": 7
        })));
        assert!(matches!(
            release,
            Ok(Parsed::Control(CtiRequest::ReleaseCall { ref this_dn, .. })) if this_dn == "5551001"
        ));
        let code = |v: Value| match parse(&fields(v)) {
            Err(e) => e.code,
            Ok(_) => 0,
        };
        assert_eq!(code(json!({"ThisDN": "1"})), codes::MISSING_ATTRIBUTE);
        assert_eq!(
            code(json!({"Request": "RequestTeleport"})),
            codes::UNKNOWN_REQUEST
        );
        assert_eq!(
            code(json!({"Request": "RequestReleaseCall", "ThisDN": "1", "ConnID": "xyz"})),
            codes::INVALID_ATTRIBUTE
        );
        assert_eq!(
            code(
                json!({"Request": "RequestReleaseCall", "ThisDN": 5, "ConnID": "0001a2b3c4d5e6f7"})
            ),
            codes::INVALID_ATTRIBUTE
        );
        assert_eq!(
            code(
                json!({"Request": "RequestInitiateTransfer", "ThisDN": "1", "ConnID": "0001a2b3c4d5e6f7"})
            ),
            codes::MISSING_ATTRIBUTE
        );
        assert_eq!(reference_of(&fields(json!({"ReferenceID": 9}))), Some(9));
        assert_eq!(reference_of(&fields(json!({"ReferenceID": "9"}))), None);
    }

    #[test]
    fn a_client_gets_its_registered_dns_events_numbered_in_order() {
        let event = |dn: &str| CtiEvent {
            event: "EventRinging",
            conn_id: ConnId::parse("0001a2b3c4d5e6f7").unwrap(),
            previous: None,
            this_dn: dn.into(),
            this_role: None,
            other_dn: None,
            other_role: None,
            third_dn: None,
            third_role: None,
            call_state: crate::control::cti::TCallState::Ok,
            cause: None,
            time: "2026-12-04T18:00:00.000Z".into(),
            reference: None,
        };
        let mut client = Client::default();
        assert!(
            client.deliver(&event("7000")).is_none(),
            "nothing registered"
        );
        client.dns.insert("7000".into());
        assert!(client.deliver(&event("7001")).is_none());
        let first = client.deliver(&event("7000")).unwrap();
        assert_eq!(first["EventSequenceNumber"], 1);
        client.dns.insert("*".into());
        let second = client.deliver(&event("7001")).unwrap();
        assert_eq!(second["EventSequenceNumber"], 2);
        assert_eq!(second["ThisDN"], "7001");
    }
}
