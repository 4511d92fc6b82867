//! The HTTP surface: Media Control and Call Control actions, listings, the event stream, the
//! CTI surface (`/cti`, see [`cti`]), the recording API (`/verba/api`, see [`verba`]), health
//! and metrics.
//!
//! Owns: routing, bearer-token authentication, JSON in and out, and the mapping of
//! `ResultCode`s to HTTP statuses. Every action goes to the control plane as a message.
//! Must not: hold any call or connection state of its own.
//!
//! HTTP status mapping (the body always carries `ResultCode`): 200 success; 400 malformed
//! input (22, 26, 27); 404 unknown action, id or operation (21, 23, 24, 25); 409 state
//! conflicts (14, 15, 16); 422 prompt files that cannot be used (30, 31, 35);
//! 503 no resources or shutting down (4, 5, 8); 500 internal (6); 401 without a valid token.

pub mod agent_gateway;
pub mod callcontrol;
pub mod cti;
pub mod listener;
pub mod mediacontrol;
pub mod process;
pub mod throttle;
pub mod verba;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::control::result::{ActionError, ResultCode};
use crate::control::{ControlHandle, ControlRequest, Status};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    pub control: ControlHandle,
    /// Accepted bearer tokens; replaced on configuration reload.
    pub tokens: Arc<RwLock<Vec<String>>>,
    /// Asks the application to reload its configuration (as SIGHUP does); the reply says
    /// whether the new configuration was valid and applied.
    pub reload: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    /// Flips to true when the server stops, ending the open event streams (otherwise a
    /// graceful shutdown would wait for them forever).
    pub stopping: watch::Receiver<bool>,
    /// The recording API (`/verba/api`, its own apiKey/token authentication).
    pub verba: verba::VerbaState,
    /// Failed bearer tokens and recording API credentials per client address.
    pub auth_throttle: Arc<throttle::AuthThrottle>,
    /// Every HTTP listener's counters (this one's and the agent gateway's), for `/metrics`.
    pub listeners: Arc<[(&'static str, Arc<listener::ListenerStats>)]>,
    /// The SIP intake's overload state and counts.
    pub sip_overload: Arc<crate::sip::overload::Overload>,
    /// This node's id (`[app] node_id`, the MmsId).
    pub node_id: u8,
}

/// The router; `/health` is open (for probes), everything else needs a bearer token.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/mediacontrol/connections", get(list_connections))
        .route("/mediacontrol/conferences", get(list_conferences))
        .route("/mediacontrol/resources", get(list_resources))
        .route("/mediacontrol/{action}", post(media_action))
        .route("/callcontrol/calls", get(list_calls))
        .route("/mediacontrol/calls", get(list_calls))
        .route("/callcontrol/{action}", post(call_action))
        .route("/admin/reload", post(reload))
        .route("/events", get(events))
        .route("/cti", get(cti::upgrade))
        .route("/cti/{request}", post(cti::post_request))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/verba/api", get(verba::handle).post(verba::handle))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

/// Serves until `shutdown` resolves, with the listener's limits (`[http]`) and send buffer
/// (`[api] client_send_buffer`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    listening: listener::Listening,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener::serve(listener, router(state), listening, shutdown).await
}

async fn require_token(
    State(state): State<ApiState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let now = std::time::Instant::now();
    if let Some(wait) = state.auth_throttle.refused(client.ip(), now) {
        return too_many_failures(wait);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let authorized = presented.is_some_and(|p| {
        state
            .tokens
            .read()
            .map(|tokens| tokens.iter().any(|t| same_secret(t, p)))
            .unwrap_or(false)
    });
    if !authorized {
        state.auth_throttle.failed(client.ip(), now);
        tracing::debug!(%client, "API request with a missing or invalid bearer token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "Error": "missing or invalid bearer token" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// 429 for an address that presented too many failed credentials: its credentials are not
/// even checked until `wait` has passed.
pub(crate) fn too_many_failures(wait: Duration) -> Response {
    let seconds = throttle::retry_after_seconds(wait);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, seconds.to_string())],
        Json(json!({
            "Error": format!("too many failed credentials from this address; try again in {seconds} s")
        })),
    )
        .into_response()
}

/// Compares without an early exit, so response time does not reveal a token's prefix.
pub(crate) fn same_secret(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

async fn media_action(
    State(state): State<ApiState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(action): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body).and_then(|params| {
        mediacontrol::on_this_node(&params, state.node_id)?;
        mediacontrol::parse_action(&action, &params, client.ip())
    });
    match parsed {
        Ok(action) => forward(&state, |tx| ControlRequest::Action(Box::new(action), tx)).await,
        Err(e) => action_error(e),
    }
}

async fn call_action(
    State(state): State<ApiState>,
    Path(action): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body).and_then(|params| {
        mediacontrol::on_this_node(&params, state.node_id)?;
        callcontrol::parse_action(&action, &params)
    });
    match parsed {
        Ok(action) => forward(&state, |tx| ControlRequest::Call(action, tx)).await,
        Err(e) => action_error(e),
    }
}

/// Sends an action to the control plane and turns its answer into the HTTP response.
async fn forward(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<Result<Map<String, Value>, ActionError>>) -> ControlRequest,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if let Err(e) = state.control.request(make(tx)).await {
        return action_error(e);
    }
    match rx.await {
        Ok(Ok(result)) => (StatusCode::OK, Json(Value::Object(result))).into_response(),
        Ok(Err(e)) => action_error(e),
        Err(_) => action_error(ActionError::new(
            ResultCode::ServerInactive,
            "server is shutting down",
        )),
    }
}

/// A Media Control or Call Control action's body as a JSON object: blank is no parameters.
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ActionError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ActionError::new(
            ResultCode::InvalidParameter,
            "request body must be a JSON object",
        )),
        Err(e) => Err(ActionError::new(
            ResultCode::InvalidParameter,
            format!("malformed JSON: {e}"),
        )),
    }
}

fn action_error(e: ActionError) -> Response {
    let status = match e.code {
        ResultCode::InvalidConnectionId
        | ResultCode::InvalidParameters
        | ResultCode::InvalidParameter => StatusCode::BAD_REQUEST,
        ResultCode::UnknownCommand
        | ResultCode::UnknownConnectionId
        | ResultCode::UnknownConferenceId => StatusCode::NOT_FOUND,
        ResultCode::NotConnected | ResultCode::AlreadyConnected | ResultCode::ConnectionBusy => {
            StatusCode::CONFLICT
        }
        ResultCode::NoOperation => StatusCode::NOT_FOUND,
        ResultCode::FileOpen
        | ResultCode::FileIo
        | ResultCode::MalformedRequest
        | ResultCode::TermCondition => StatusCode::UNPROCESSABLE_ENTITY,
        ResultCode::ServerBusy | ResultCode::ServerInactive | ResultCode::ResourceUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ResultCode::ServerInternal | ResultCode::Success => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        Json(json!({ "ResultCode": e.code.as_wire(), "Error": e.message })),
    )
        .into_response()
}

async fn list_connections(State(state): State<ApiState>) -> Response {
    query(&state, ControlRequest::ListConnections).await
}

async fn list_conferences(State(state): State<ApiState>) -> Response {
    query(&state, ControlRequest::ListConferences).await
}

async fn list_resources(State(state): State<ApiState>) -> Response {
    query(&state, ControlRequest::ListResources).await
}

async fn list_calls(State(state): State<ApiState>) -> Response {
    query(&state, ControlRequest::ListCalls).await
}

/// Reloads the configuration like SIGHUP: routes, tokens and log level; calls continue.
async fn reload(State(state): State<ApiState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return action_error(ActionError::new(
            ResultCode::ServerInactive,
            "server is shutting down",
        ));
    }
    match rx.await {
        Ok(Ok(())) => Json(json!({ "ResultCode": "0" })).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "ResultCode": ResultCode::InvalidParameter.as_wire(), "Error": e })),
        )
            .into_response(),
        Err(_) => action_error(ActionError::new(
            ResultCode::ServerInactive,
            "server is shutting down",
        )),
    }
}

async fn query(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<Value>) -> ControlRequest,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if let Err(e) = state.control.request(make(tx)).await {
        return action_error(e);
    }
    match rx.await {
        Ok(v) => Json(v).into_response(),
        Err(_) => action_error(ActionError::new(
            ResultCode::ServerInactive,
            "server is shutting down",
        )),
    }
}

async fn status(state: &ApiState) -> Option<Status> {
    let (tx, rx) = oneshot::channel();
    state
        .control
        .request(ControlRequest::Status(tx))
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(2), rx)
        .await
        .ok()?
        .ok()
}

/// 200 while the control plane answers (listeners are bound before the API starts).
async fn health(State(state): State<ApiState>) -> Response {
    match status(&state).await {
        Some(s) => Json(json!({
            "Status": "running",
            "Connections": s.connections,
            "Calls": s.calls,
            "Conferences": s.conferences,
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "Status": "unavailable" })),
        )
            .into_response(),
    }
}

/// Prometheus text exposition of the control plane's counters.
async fn metrics(State(state): State<ApiState>) -> Response {
    let Some(s) = status(&state).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    // Prometheus's info pattern: join on it (`* on(instance) group_left(node_id)`) to see every
    // series of a cluster by node.
    let mut out = format!(
        "# HELP callbridge_node_info This node of a callbridge cluster ([app] node_id, the MmsId).\n\
         # TYPE callbridge_node_info gauge\ncallbridge_node_info{{node_id=\"{}\"}} 1\n",
        state.node_id
    );
    let mut gauge = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "callbridge_connections",
        "Media connections that exist.",
        s.connections as u64,
    );
    gauge("callbridge_calls", "SIP calls in progress.", s.calls as u64);
    gauge(
        "callbridge_party_calls",
        "Calls of the party call model (a conference is one call).",
        s.call_model_calls as u64,
    );
    gauge(
        "callbridge_parties",
        "Parties of those calls.",
        s.call_model_parties as u64,
    );
    gauge(
        "callbridge_sip_transactions",
        "SIP transactions alive.",
        s.transactions as u64,
    );
    gauge(
        "callbridge_rtp_ports_in_use",
        "RTP and RTCP ports allocated (two per connection).",
        s.ports_in_use as u64,
    );
    gauge(
        "callbridge_rtp_ports_idle",
        "RTP and RTCP ports of ended connections whose sockets stay bound for the next ones \
         (two per pair; closed after 2 s unused).",
        s.ports_idle as u64,
    );
    gauge(
        "callbridge_rtp_ports_total",
        "RTP and RTCP ports in the configured range.",
        s.ports_total as u64,
    );
    gauge(
        "callbridge_conferences",
        "Conferences that exist.",
        s.conferences as u64,
    );
    gauge(
        "callbridge_conferees",
        "Connections in conferences (monitors included).",
        s.conferees as u64,
    );
    gauge(
        "callbridge_media_operations_running",
        "Media operations (Play, Record, GatherDigits, ...) in progress.",
        s.operations_running as u64,
    );
    gauge(
        "callbridge_recordings_in_progress",
        "Call recordings and Record files being written.",
        s.recordings_in_progress as u64,
    );
    let store = state.verba.store.stats();
    gauge(
        "callbridge_store_writes_queued",
        "Writes waiting for the recording store's thread.",
        store.queued,
    );
    gauge(
        "callbridge_media_workers_stalled",
        "Media workers whose loop has not turned for a second.",
        s.stalled_workers as u64,
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "callbridge_rtp_packets_received_total",
        "RTP packets received.",
        s.rtp_packets_received,
    );
    counter(
        "callbridge_rtp_packets_sent_total",
        "RTP packets sent.",
        s.rtp_packets_sent,
    );
    counter(
        "callbridge_recording_frames_dropped_total",
        "20 ms recording frames dropped because the recorder's queue was full (the recorder cannot keep up).",
        s.recorder_frames_dropped,
    );
    counter(
        "callbridge_recording_failures_total",
        "Recordings that stopped before their call ended (a full disk, a file not created).",
        s.recording_failures,
    );
    counter(
        "callbridge_store_writes_failed_total",
        "Writes the recording store could not apply (logged).",
        store.writes_failed,
    );
    counter(
        "callbridge_media_events_dropped_total",
        "Media worker events dropped because the control plane's queue was full.",
        s.engine_events_dropped,
    );
    counter(
        "callbridge_media_receive_buffers_exhausted_total",
        "io_uring media receives that found all of their worker's buffers in use; the worker read what waited in those sockets again in the same turn (up to eight rounds), or at its next.",
        s.receive_buffers_exhausted,
    );
    listener::render_metrics(&state.listeners, &mut out);
    render_overload(&state.sip_overload, &mut out);
    out.push_str(&format!(
        "# HELP callbridge_rtp_packets_lost Cumulative RTP loss (RFC 3550) over live connections.\n\
         # TYPE callbridge_rtp_packets_lost gauge\ncallbridge_rtp_packets_lost {}\n\
         # HELP callbridge_rtp_packets_late RTP packets dropped by the jitter buffers of live connections because their frame had already been played (concealed).\n\
         # TYPE callbridge_rtp_packets_late gauge\ncallbridge_rtp_packets_late {}\n\
         # HELP callbridge_rtp_frames_shrunk Frames the jitter buffers of live connections skipped to bring their delay back down after it grew.\n\
         # TYPE callbridge_rtp_frames_shrunk gauge\ncallbridge_rtp_frames_shrunk {}\n\
         # HELP callbridge_rtp_jitter_ms_max Worst interarrival jitter among live connections, ms.\n\
         # TYPE callbridge_rtp_jitter_ms_max gauge\ncallbridge_rtp_jitter_ms_max {}\n",
        s.rtp_packets_lost, s.rtp_packets_late, s.rtp_frames_shrunk, s.rtp_jitter_ms_max
    ));
    out.push_str("# HELP callbridge_media_tick_lateness_seconds How late media ticks (20 ms playout, RTCP, timeouts) ran after their deadline.\n# TYPE callbridge_media_tick_lateness_seconds histogram\n");
    let mut cumulative = 0;
    for (i, count) in s.tick_lateness.counts.iter().enumerate() {
        cumulative += count;
        let le = crate::engine::TICK_LATENESS_BOUNDS_US
            .get(i)
            .map(|us| format!("{}", *us as f64 / 1e6))
            .unwrap_or_else(|| "+Inf".into());
        out.push_str(&format!(
            "callbridge_media_tick_lateness_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
        ));
    }
    out.push_str(&format!(
        "callbridge_media_tick_lateness_seconds_sum {}\ncallbridge_media_tick_lateness_seconds_count {cumulative}\n",
        s.tick_lateness.sum_us as f64 / 1e6
    ));
    out.push_str("# HELP callbridge_media_worker_cpu_seconds_total CPU time (user and system) each media worker thread has used; one near a full core per second is saturated.\n# TYPE callbridge_media_worker_cpu_seconds_total counter\n");
    for (worker, time) in s.worker_cpu.iter().enumerate() {
        if let Some(time) = time {
            out.push_str(&format!(
                "callbridge_media_worker_cpu_seconds_total{{worker=\"{worker}\"}} {}\n",
                time.as_secs_f64()
            ));
        }
    }
    out.push_str("# HELP callbridge_sip_requests_received_total SIP requests received, by method.\n# TYPE callbridge_sip_requests_received_total counter\n");
    for (method, n) in &s.sip.requests_received {
        out.push_str(&format!(
            "callbridge_sip_requests_received_total{{method=\"{method}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP callbridge_sip_responses_sent_total SIP responses sent (not counting retransmissions), by status.\n# TYPE callbridge_sip_responses_sent_total counter\n");
    for (status, n) in &s.sip.responses_sent {
        out.push_str(&format!(
            "callbridge_sip_responses_sent_total{{status=\"{status}\"}} {n}\n"
        ));
    }
    if let Some(r) = &s.resources {
        let pools = [
            ("rtp", r.rtp),
            ("enhanced_rtp", r.enhanced_rtp),
            ("conference", r.conference),
        ];
        for (metric, help, value) in [
            (
                "used",
                "Media resources in use, by kind (rtp, enhanced_rtp, conference).",
                (|p: &crate::control::Pool| p.used) as fn(&crate::control::Pool) -> usize,
            ),
            ("limit", "Media resources configured, by kind.", |p| p.limit),
        ] {
            out.push_str(&format!(
                "# HELP callbridge_resources_{metric} {help}\n# TYPE callbridge_resources_{metric} gauge\n"
            ));
            for (kind, pool) in &pools {
                out.push_str(&format!(
                    "callbridge_resources_{metric}{{kind=\"{kind}\"}} {}\n",
                    value(pool)
                ));
            }
        }
    }
    out.push_str("# HELP callbridge_media_operations_completed_total Media operations completed, by action and termination condition.\n# TYPE callbridge_media_operations_completed_total counter\n");
    for ((action, termination), n) in &s.operations_completed {
        out.push_str(&format!(
            "callbridge_media_operations_completed_total{{action=\"{action}\",termination=\"{termination}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP callbridge_sip_untrusted_requests_total Out-of-dialog SIP requests from outside every trunk (refused or ignored).\n# TYPE callbridge_sip_untrusted_requests_total counter\ncallbridge_sip_untrusted_requests_total {}\n",
        s.sip.untrusted_requests
    ));
    out.push_str("# HELP callbridge_calls_total Inbound calls routed.\n# TYPE callbridge_calls_total counter\n");
    out.push_str(&format!("callbridge_calls_total {}\n", s.calls_total));
    out.push_str("# HELP callbridge_calls_answered_total Calls answered: a 2xx we sent to an INVITE, or one we received to an INVITE we placed.\n# TYPE callbridge_calls_answered_total counter\n");
    out.push_str(&format!(
        "callbridge_calls_answered_total {}\n",
        s.calls_answered_total
    ));
    out.push_str("# HELP callbridge_connections_released_total Connections released, by reason.\n# TYPE callbridge_connections_released_total counter\n");
    for (reason, n) in &s.releases_by_reason {
        out.push_str(&format!(
            "callbridge_connections_released_total{{reason=\"{reason}\"}} {n}\n"
        ));
    }
    // A few reads of /proc/self: small files the kernel writes on demand, never blocking.
    process::ProcessStats::read().render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Server-sent events: one JSON event per message, `event:` = the event name.
async fn events(
    State(state): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let stream = BroadcastStream::new(state.control.subscribe())
        .map(|item| {
            let event = match item {
                Ok(envelope) => SseEvent::default()
                    .event(envelope.event.name())
                    .id(envelope.seq.to_string())
                    .data(serde_json::to_string(&envelope).unwrap_or_default()),
                Err(BroadcastStreamRecvError::Lagged(missed)) => SseEvent::default()
                    .event("EventsLost")
                    .data(json!({ "Event": "EventsLost", "Missed": missed }).to_string()),
            };
            Ok(event)
        })
        .take_until(stopped);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The SIP intake's overload state (src/sip/overload.rs).
fn render_overload(overload: &crate::sip::overload::Overload, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    out.push_str(&format!(
        "# HELP callbridge_sip_overloaded 1 while new SIP requests are refused with 503 because the control plane is behind.\n\
         # TYPE callbridge_sip_overloaded gauge\ncallbridge_sip_overloaded {}\n\
         # HELP callbridge_sip_queue_delay_seconds How long the last SIP message waited for the control plane (0 when its queues are empty).\n\
         # TYPE callbridge_sip_queue_delay_seconds gauge\ncallbridge_sip_queue_delay_seconds {}\n\
         # HELP callbridge_sip_overload_refused_total New SIP requests answered 503 by overload control (retransmissions count again).\n\
         # TYPE callbridge_sip_overload_refused_total counter\ncallbridge_sip_overload_refused_total {}\n\
         # HELP callbridge_sip_dropped_total SIP messages of calls in progress dropped because their queue was full (their senders retransmit).\n\
         # TYPE callbridge_sip_dropped_total counter\ncallbridge_sip_dropped_total {}\n",
        u8::from(overload.shedding()),
        overload.delay().as_secs_f64(),
        overload.refused.load(Relaxed),
        overload.dropped.load(Relaxed),
    ));
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "ResultCode": ResultCode::UnknownCommand.as_wire(), "Error": "no such resource" })),
    )
        .into_response()
}
