//! The recording API: a Verint Verba compatible HTTP Business API at
//! `GET|POST /verba/api?action=...` (seed 04; docs/RECORDING.md).
//!
//! Owns: the axum handler — collecting the query and form parameters, the `apiKey` / `token`
//! / Basic authentication of `RequestToken`, finding the call (with the `next` status's
//! waiting and retrying), asking the store and the control plane, and answering in XML, HTML
//! or TEXT (or with the recording's bytes for GetMediaEncoded).
//! Must not: hold call state or touch the database itself (the store thread does, through
//! [`Store::ask`]); parse or render by hand what `request` and `response` do.
//!
//! Its pure half does no I/O and reads no clock:
//! - [`request`]: parameters → [`VerbaRequest`] (an [`Action`] with its typed selectors), or a
//!   [`VerbaError`];
//! - [`response`]: [`VerbaResponse`] → an XML, HTML or TEXT body with its content type;
//! - [`codes`]: the result-code table and the error messages;
//! - [`tokens`]: the session tokens `RequestToken` issues ([`TokenRegistry`], one hour each).
//!
//! Wrong or missing keys and tokens are answered before any lookup, so the answer is the same
//! whether or not a call exists.

pub mod codes;
pub mod request;
pub mod response;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::app::recording_config::ApiKeyConfig;
use crate::control::{ControlHandle, ControlRequest};
use crate::store::{
    CallQuery, CallRecord, CallStatus, FindError, KeepOutcome, RecordingState, Store, StoreError,
    UnixMs,
};
pub use codes::VerbaError;
pub use request::{parse, Action, ResponseType, VerbaRequest};
pub use response::VerbaResponse;
pub use tokens::TokenRegistry;

/// How long `next` keeps looking for the call (seed 04: "the upcoming 1 minute").
const NEXT_WINDOW: Duration = Duration::from_secs(60);
/// How long `next` sleeps between tries (the seed's "sleep time 1000").
const NEXT_SLEEP: Duration = Duration::from_millis(1000);

/// What the recording API's handler shares.
#[derive(Clone)]
pub struct VerbaState {
    pub store: Store,
    pub control: ControlHandle,
    /// `[[recording.api_key]]`; replaced on configuration reload.
    pub keys: Arc<RwLock<Vec<ApiKeyConfig>>>,
    pub tokens: Arc<Mutex<TokenRegistry>>,
    /// This node (`[app] node_id`): a shared store holds other nodes' calls too.
    pub node: u8,
}

/// `GET|POST /verba/api`.
pub async fn handle(
    State(api): State<crate::api::ApiState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let state = &api.verba;
    let now = std::time::Instant::now();
    if let Some(wait) = api.auth_throttle.refused(client.ip(), now) {
        return crate::api::too_many_failures(wait);
    }
    let mut params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    if !body.is_empty() {
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
            Ok(form) => params.extend(form),
            Err(_) => {
                let error = VerbaError::invalid_parameter(
                    "body",
                    "the request body is not form-encoded parameters",
                );
                return error_response(&params, error);
            }
        }
    }
    let request = match request::parse(&params) {
        Ok(r) => r,
        Err(e) => return error_response(&params, e),
    };

    let action = request.action.name();
    let response_type = request.response_type;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    match answer(state, request, &headers, &host).await {
        Ok(Answer::Document(response)) => document(response, response_type),
        Ok(Answer::Media {
            file,
            len,
            media_type,
            sha256,
            name,
        }) => media_response(file, len, media_type, sha256, &name),
        Err(e) => {
            if matches!(
                e.code,
                codes::INVALID_API_KEY | codes::INVALID_TOKEN | codes::WRONG_CREDENTIALS
            ) {
                api.auth_throttle.failed(client.ip(), now);
            }
            if e.code != codes::CALL_NOT_FOUND && e.code != codes::AMBIGUOUS_CALL {
                tracing::info!(%client, action, code = e.code, error = %e.message, "recording API request refused");
            }
            document(VerbaResponse::error(action, e), response_type)
        }
    }
}

/// What an action answers with.
enum Answer {
    Document(VerbaResponse),
    Media {
        file: tokio::fs::File,
        len: u64,
        media_type: &'static str,
        sha256: Option<String>,
        name: String,
    },
}

async fn answer(
    state: &VerbaState,
    request: VerbaRequest,
    headers: &HeaderMap,
    host: &str,
) -> Result<Answer, VerbaError> {
    let now = std::time::Instant::now();
    let key = authorize_key(state, &request.api_key)?;
    let action = request.action.name();
    if let Action::RequestToken { user, password } = &request.action {
        let (user, password) = credentials(headers, user.as_deref(), password.as_deref())?;
        let u = user.clone();
        let stored = ask(&state.store, move |db| db.stored_password(&u)).await?;
        // The hash is slow by design: off the store thread and off the async workers.
        let valid = tokio::task::spawn_blocking(move || {
            crate::store::StoredPassword::check(stored.as_ref(), &password)
        })
        .await
        .map_err(|_| VerbaError::internal("the password check failed"))?;
        if !valid {
            return Err(VerbaError::wrong_credentials());
        }
        let token = lock(&state.tokens).issue(&key.key, &user, now);
        return Ok(Answer::Document(
            VerbaResponse::ok(action).with("token", token),
        ));
    }
    let by = if key.authentication {
        let user = lock(&state.tokens).check(&key.key, request.token.as_deref(), now)?;
        format!("user:{user}")
    } else {
        format!("api-key:{}", key.key.chars().take(8).collect::<String>())
    };
    match request.action {
        Action::RequestToken { .. } => unreachable!("answered above"),
        Action::DeleteCall(query) => {
            let call = find(state, &query).await?;
            let id = call.call_id.clone();
            let outcome = ask(&state.store, move |db| db.delete_call(&id, &by, unix_ms())).await?;
            tracing::info!(call = %call.call_id, deleted = outcome.deleted_now, marked = outcome.marked, "DeleteCall");
            // The seed's document exactly: code and type.
            Ok(Answer::Document(VerbaResponse::ok(action)))
        }
        Action::KeepCall(query) => {
            let call = find(state, &query).await?;
            let id = call.call_id.clone();
            let outcome = ask(&state.store, move |db| db.keep_call(&id, unix_ms())).await?;
            let why = match outcome {
                KeepOutcome::Kept { .. } => None,
                KeepOutcome::AlreadyDiscarded => Some("the on-demand recording was discarded"),
                KeepOutcome::DeleteRequested => Some("DeleteCall was asked for it"),
            };
            if let Some(why) = why {
                return Err(VerbaError::wrong_call_state(action, &call.call_id, why));
            }
            Ok(Answer::Document(VerbaResponse::ok(action)))
        }
        Action::GetCallID(query) => {
            let call = find(state, &query).await?;
            Ok(Answer::Document(
                VerbaResponse::ok(action).with("callID", call.call_id),
            ))
        }
        Action::GetCallURL(query) => {
            let call = find(state, &query).await?;
            kept_recording(&call)?;
            let url = format!(
                "http://{host}/verba/api?action=GetMediaEncoded&callID={}",
                call.call_id
            );
            Ok(Answer::Document(
                VerbaResponse::ok(action)
                    .with("callID", call.call_id)
                    .with("url", url),
            ))
        }
        Action::MuteRecording { query, mute } => {
            let call = find(state, &query).await?;
            if !call.ongoing() {
                return Err(VerbaError::wrong_call_state(
                    action,
                    &call.call_id,
                    "the call has ended",
                ));
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            state
                .control
                .request(ControlRequest::MuteRecording {
                    call_id: call.call_id.clone(),
                    channels: mute,
                    reply,
                })
                .await
                .map_err(|e| VerbaError::internal(e.message))?;
            answer
                .await
                .map_err(|_| VerbaError::internal("the control plane stopped"))?
                .map_err(|e| VerbaError::new(codes::NO_RECORDING, e))?;
            Ok(Answer::Document(
                VerbaResponse::ok(action)
                    .with("callID", call.call_id)
                    .with("mute", mute.0.to_string()),
            ))
        }
        Action::SearchCalls(search) => {
            let query = search.clone();
            // On the store's reader: a busy number's hour is a hundred thousand calls.
            let (calls, total) = read(&state.store, move |db| db.search(&query)).await?;
            Ok(Answer::Document(VerbaResponse::search_results(
                calls, total, &search,
            )))
        }
        Action::GetMediaEncoded { query, format } => {
            let call = find(state, &query).await?;
            let recording = kept_recording(&call)?;
            if let Some(format) = format.as_deref() {
                if !request::media_format_matches(format, recording.format) {
                    return Err(VerbaError::format_not_available(
                        format,
                        recording.format.extension(),
                    ));
                }
            }
            let node = state.node;
            let unreadable = |e: std::io::Error| {
                // Another node's recording: readable here only on storage every node mounts
                // at the same path (docs/CLUSTER.md); say which node holds it.
                let message = if call.node_id != node && e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "the recording was made on node {} and its file is not reachable from \
                         node {node}: the nodes' [recording] dir must be shared storage",
                        call.node_id
                    )
                } else {
                    format!("the recording's file cannot be read: {e}")
                };
                VerbaError::new(codes::NO_RECORDING, message)
            };
            let file = tokio::fs::File::open(&recording.path)
                .await
                .map_err(unreadable)?;
            let len = file.metadata().await.map_err(unreadable)?.len();
            Ok(Answer::Media {
                file,
                len,
                media_type: recording.format.media_type(),
                sha256: recording.sha256.clone(),
                name: format!("{}.{}", call.call_id, recording.format.extension()),
            })
        }
    }
}

/// The configured key the request names; the same error for a missing and a wrong one.
fn authorize_key(state: &VerbaState, presented: &str) -> Result<ApiKeyConfig, VerbaError> {
    let refused = VerbaError::invalid_api_key;
    let keys = state.keys.read().map_err(|_| refused())?;
    keys.iter()
        .find(|k| crate::api::same_secret(&k.key, presented))
        .cloned()
        .ok_or_else(refused)
}

/// RequestToken's user and password: the Basic authorization header, else the `userName` and
/// `password` parameters.
fn credentials(
    headers: &HeaderMap,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(String, String), VerbaError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|text| {
            text.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    if let Some(pair) = basic {
        return Ok(pair);
    }
    match (user, password) {
        (Some(u), Some(p)) => Ok((u.to_string(), p.to_string())),
        _ => Err(VerbaError::new(
            codes::WRONG_CREDENTIALS,
            "RequestToken needs Basic credentials (or userName and password)",
        )),
    }
}

/// The one call a query names; `next` waits for it, trying once a second for a minute.
async fn find(state: &VerbaState, query: &CallQuery) -> Result<CallRecord, VerbaError> {
    let request_ms = unix_ms();
    let waits = query.statuses.contains(&CallStatus::Next);
    let deadline = tokio::time::Instant::now() + NEXT_WINDOW;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let q = query.clone();
        let found = ask(&state.store, move |db| db.find_call(&q, request_ms)).await?;
        match found {
            Ok(call) => return Ok(call),
            Err(FindError::Ambiguous { matches }) => {
                return Err(VerbaError::ambiguous_call(query, matches))
            }
            Err(FindError::NotFound) => {}
        }
        if !waits || tokio::time::Instant::now() + NEXT_SLEEP > deadline {
            return Err(VerbaError::call_not_found(
                query,
                tries,
                NEXT_SLEEP.as_millis() as u64,
            ));
        }
        tokio::time::sleep(NEXT_SLEEP).await;
    }
}

/// The call's recording whose file is kept (finished or kept; not deleted or still written).
fn kept_recording(call: &CallRecord) -> Result<&crate::store::RecordingRecord, VerbaError> {
    call.recordings
        .iter()
        .rev()
        .find(|r| matches!(r.state, RecordingState::Finished | RecordingState::Kept))
        .ok_or_else(|| {
            let why = match call.recordings.last().map(|r| r.state) {
                None => "has no recording",
                Some(RecordingState::Recording) => "is still being recorded",
                Some(_) => "has no recording left (it was deleted)",
            };
            VerbaError::new(codes::NO_RECORDING, format!("call {} {why}", call.call_id))
        })
}

/// Runs `f` on the store thread; a store that cannot answer is an internal error.
async fn ask<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&mut crate::store::Db) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, VerbaError> {
    store.ask(f).await.map_err(unanswered)
}

/// Runs the read `f` on the store's reader ([`Store::read`]); a store that cannot answer is an
/// internal error.
async fn read<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&crate::store::Db) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, VerbaError> {
    store.read(f).await.map_err(unanswered)
}

fn unanswered(error: StoreError) -> VerbaError {
    tracing::warn!(%error, "recording store request failed");
    VerbaError::internal("the recording store cannot answer")
}

/// An error before the request could be parsed: the response type as asked when readable.
fn error_response(params: &[(String, String)], error: VerbaError) -> Response {
    let response_type = request::response_type_or_xml(params);
    let action = request::action_name(params);
    document(VerbaResponse::error(action, error), response_type)
}

fn document(response: VerbaResponse, response_type: ResponseType) -> Response {
    let (content_type, body) = response.render(response_type);
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The recording's bytes, streamed in 64 KiB reads (an hour of 16 kHz WAV is 230 MB: never
/// held in memory whole).
fn media_response(
    file: tokio::fs::File,
    len: u64,
    media_type: &'static str,
    sha256: Option<String>,
    name: &str,
) -> Response {
    use tokio::io::AsyncReadExt;
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(media_type),
    );
    if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(Ok(v)) = sha256.map(|s| s.parse()) {
        h.insert("x-recording-sha256", v);
    }
    response
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_ms() -> UnixMs {
    i64::try_from(crate::control::unix_ms()).unwrap_or(i64::MAX)
}
