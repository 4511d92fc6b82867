//! The agent gateway's listener (`[agent_gateway] listen`, HTTPS): the Huawei CC-Gateway's
//! `onlineagent` (sign-in, forced sign-in, sign-out, updateGuid) and `agentevent` (the long
//! poll) interfaces at their vendor paths (docs/AGENT-GATEWAY.md).
//!
//! Owns: routing, throttling failed sign-ins per address, checking agents' passwords against the store (off the
//! store thread and off the async workers), the `Guid` / `Set-GUID` headers, the long poll's
//! wait, and the timer that signs out agents whose polls stopped.
//! Must not: decide who is signed in or which Guid is valid (`agent_gateway::AgentSessions`
//! does), or read request bodies by hand (`agent_gateway::requests` does).
//!
//! The `agentconf` family goes to the control plane (`control::agent_conf`) as
//! [`ControlRequest::AgentConf`] after the Guid is checked; the control plane's agent events
//! come back through [`deliver_events`] into the agents' queues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Router;
use rand::SeedableRng;
use tokio::sync::Notify;

use super::throttle::AuthThrottle;
use crate::agent_gateway::requests::{parse_agent_path, SignIn};
use crate::agent_gateway::{
    AgentEvent, AgentId, AgentSessions, GatewayError, Guid, PollResponse, Response as Envelope,
    Retcode, SessionSettings, SignedOut,
};
use crate::control::{AgentConfRequest, ControlHandle, ControlRequest};
use crate::store::{Store, StoredPassword};

/// Largest request body the gateway reads.
const MAX_BODY: usize = 64 * 1024;

/// What the gateway's handlers share.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: Mutex<AgentSessions>,
    /// Agents allowed `queryvdnconfid` (from the store, at sign-in).
    inspectors: Mutex<HashMap<AgentId, bool>>,
    control: ControlHandle,
    /// Wakes an agent's waiting long poll when an event is queued for it.
    wakers: Mutex<HashMap<AgentId, Arc<Notify>>>,
    store: Store,
    poll_wait: Duration,
    /// The gateway is stopping: waiting polls answer at once.
    stopping: std::sync::atomic::AtomicBool,
    /// Failed sign-ins per client address.
    throttle: Arc<AuthThrottle>,
}

impl GatewayState {
    pub fn new(
        settings: SessionSettings,
        poll_wait: Duration,
        store: Store,
        control: ControlHandle,
        throttle: Arc<AuthThrottle>,
    ) -> GatewayState {
        let sessions = AgentSessions::new(settings, rand::rngs::StdRng::from_os_rng())
            .expect("config check: the session settings are valid");
        GatewayState {
            inner: Arc::new(Inner {
                sessions: Mutex::new(sessions),
                inspectors: Mutex::new(HashMap::new()),
                control,
                wakers: Mutex::new(HashMap::new()),
                store,
                poll_wait,
                stopping: std::sync::atomic::AtomicBool::new(false),
                throttle,
            }),
        }
    }

    /// Queues an event for a signed-in agent and wakes its poll.
    pub fn push_event(&self, agent: AgentId, event: AgentEvent) {
        lock(&self.inner.sessions).push_event(agent, event);
        if let Some(waker) = lock(&self.inner.wakers).get(&agent) {
            waker.notify_one();
        }
    }

    fn waker(&self, agent: AgentId) -> Arc<Notify> {
        lock(&self.inner.wakers)
            .entry(agent)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }
}

/// The gateway's routes.
pub fn router(state: GatewayState) -> Router {
    const ONLINE: &str = "/agentgateway/resource/onlineagent/{agentid}";
    Router::new()
        .route(ONLINE, put(sign_in))
        .route(&format!("{ONLINE}/forcelogin"), put(force_sign_in))
        .route(&format!("{ONLINE}/logout"), delete(sign_out))
        .route(&format!("{ONLINE}/updateGuid"), put(update_guid))
        .route(
            "/agentgateway/resource/agentevent/{agentid}",
            get(poll_events),
        )
        .route(
            "/agentgateway/resource/agentconf/{agentid}/{operation}",
            axum::routing::any(agent_conference),
        )
        .fallback(unknown_interface)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Signs out, every second, the agents whose polls stopped.
pub async fn expire_silent_agents(state: GatewayState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let gone = lock(&state.inner.sessions).expire(Instant::now());
        for signed_out in gone {
            tracing::info!(agent = %signed_out.agent, "agent signed out: its event polls stopped");
            forget(&state, &signed_out).await;
        }
    }
}

/// The control plane's agent events into the agents' queues (until the control plane stops).
pub async fn deliver_events(
    state: GatewayState,
    mut events: tokio::sync::mpsc::UnboundedReceiver<(AgentId, AgentEvent)>,
) {
    while let Some((agent, event)) = events.recv().await {
        state.push_event(agent, event);
    }
}

async fn sign_in(
    State(state): State<GatewayState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(agent): Path<String>,
    body: Bytes,
) -> Response {
    throttled_sign_in(&state, client, &agent, &body, false).await
}

async fn force_sign_in(
    State(state): State<GatewayState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(agent): Path<String>,
    body: Bytes,
) -> Response {
    throttled_sign_in(&state, client, &agent, &body, true).await
}

/// A sign-in, unless its address has failed too many (`[http] auth_failures_per_minute`):
/// then 429 without the password being checked.
async fn throttled_sign_in(
    state: &GatewayState,
    client: SocketAddr,
    agent: &str,
    body: &[u8],
    force: bool,
) -> Response {
    let now = Instant::now();
    if let Some(wait) = state.inner.throttle.refused(client.ip(), now) {
        return super::too_many_failures(wait);
    }
    let entered = enter(state, agent, body, force).await;
    if matches!(&entered, Err(e) if e.retcode == Retcode::NoPermission) {
        state.inner.throttle.failed(client.ip(), now);
        tracing::info!(%client, agent, "agent sign-in refused: wrong agent id or password");
    }
    answer(entered)
}

/// Sign-in: the password against the store, then a session with its Guid (in `Set-GUID`),
/// then `AgentState_Ready` (the vendor's `autoenteridle`, default on).
async fn enter(
    state: &GatewayState,
    agent: &str,
    body: &[u8],
    force: bool,
) -> Result<(Envelope, Option<Guid>), GatewayError> {
    let agent = parse_agent_path(agent)?;
    let request = SignIn::from_json(body)?;
    let id = agent.get();
    let stored = state
        .inner
        .store
        .ask(move |db| db.agent_credentials(id))
        .await
        .map_err(|e| GatewayError::internal(format!("the agent store cannot answer: {e}")))?;
    let password = request.password.expose().to_string();
    let inspector = stored.as_ref().is_some_and(|(_, inspector)| *inspector);
    let valid = tokio::task::spawn_blocking(move || {
        let hash = stored.as_ref().map(|(hash, _)| hash);
        StoredPassword::check(hash, &password)
    })
    .await
    .map_err(|_| GatewayError::internal("the password check failed"))?;
    if !valid {
        return Err(GatewayError::new(
            Retcode::NoPermission,
            "wrong agent id or password",
        ));
    }
    let signed_in =
        lock(&state.inner.sessions).sign_in(agent, request.phone.clone(), force, Instant::now())?;
    lock(&state.inner.inspectors).insert(agent, inspector);
    if let Some(replaced) = &signed_in.replaced {
        tracing::info!(agent = %agent, "agent signed in again (forced): the old session ended");
        forget(state, replaced).await;
    }
    tracing::info!(agent = %agent, "agent signed in");
    if request.auto_enter_idle {
        state.push_event(agent, AgentEvent::ready(agent, unix_ms()));
    }
    Ok((Envelope::signed_in(agent), Some(signed_in.guid)))
}

async fn sign_out(
    State(state): State<GatewayState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Response {
    let signed_out = parse_agent_path(&agent)
        .map_err(GatewayError::from)
        .and_then(|agent| {
            lock(&state.inner.sessions)
                .sign_out(agent, guid_of(&headers), Instant::now())
                .map_err(GatewayError::from)
        });
    match signed_out {
        Ok(signed_out) => {
            tracing::info!(agent = %signed_out.agent, "agent signed out");
            forget(&state, &signed_out).await;
            answer(Ok((Envelope::success(), None)))
        }
        Err(e) => answer(Err(e)),
    }
}

async fn update_guid(
    State(state): State<GatewayState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let agent = parse_agent_path(&agent)?;
        let guid =
            lock(&state.inner.sessions).update_guid(agent, guid_of(&headers), Instant::now())?;
        Ok((Envelope::guid_updated(&guid), Some(guid)))
    })();
    answer(result)
}

/// The long poll: an event at once when one is queued, else the first within the wait, else
/// an empty answer. The poll is the heartbeat, and where a dynamic Guid rotates (`Set-GUID`).
async fn poll_events(
    State(state): State<GatewayState>,
    Path(agent): Path<String>,
    headers: HeaderMap,
) -> Response {
    let agent = match parse_agent_path(&agent) {
        Ok(agent) => agent,
        Err(e) => return poll_answer(PollResponse::error(&e.into()), None),
    };
    let waker = state.waker(agent);
    let polled = lock(&state.inner.sessions).poll(agent, guid_of(&headers), Instant::now());
    let outcome = match polled {
        Ok(outcome) => outcome,
        Err(e) => return poll_answer(PollResponse::error(&e.into()), None),
    };
    if let Some(event) = outcome.event {
        return poll_answer(PollResponse::event(event), outcome.set_guid);
    }
    let deadline = tokio::time::Instant::now() + state.inner.poll_wait;
    loop {
        let notified = waker.notified();
        let taken = lock(&state.inner.sessions).take_event(agent, outcome.session);
        match taken {
            Ok(Some(event)) => return poll_answer(PollResponse::event(event), outcome.set_guid),
            Ok(None) => {}
            Err(e) => return poll_answer(PollResponse::error(&e.into()), None),
        }
        let stopping = || {
            state
                .inner
                .stopping
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        if stopping() || tokio::time::timeout_at(deadline, notified).await.is_err() || stopping() {
            return poll_answer(PollResponse::empty(), outcome.set_guid);
        }
    }
}

/// The `agentconf` family: the Guid checked, the body parsed, then the control plane.
async fn agent_conference(
    State(state): State<GatewayState>,
    Path((agent, operation)): Path<(String, String)>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(conference_request(&state, &agent, &operation, &method, &headers, &body).await)
}

async fn conference_request(
    state: &GatewayState,
    agent: &str,
    operation: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Envelope, Option<Guid>), GatewayError> {
    use crate::agent_gateway::requests as r;
    use crate::agent_gateway::Participant;
    let agent = parse_agent_path(agent)?;
    let phone = lock(&state.inner.sessions)
        .authenticate(agent, guid_of(headers), Instant::now())?
        .phone()
        .clone();
    let expected = if operation == "queryvdnconfid" {
        axum::http::Method::GET
    } else {
        axum::http::Method::POST
    };
    if *method != expected {
        return Err(GatewayError::new(
            Retcode::BadParameter,
            format!("agentconf/{operation} takes {expected} only"),
        ));
    }
    let request = match operation {
        "requestagentconf" => AgentConfRequest::Request(r::RequestAgentConf::from_json(body)?),
        "batchaddparticipant" => {
            let add = r::BatchAddParticipant::from_json(body)?;
            // Invited agents' phones, from their sessions (absent: not signed in).
            let sessions = lock(&state.inner.sessions);
            let phones = add
                .participants
                .iter()
                .filter_map(|p| match p {
                    Participant::Agent(a) => sessions.session(*a).map(|s| (*a, s.phone().clone())),
                    Participant::Phone(_) => None,
                })
                .collect();
            drop(sessions);
            AgentConfRequest::AddParticipants(add, phones)
        }
        "batchremoveparticipant" => {
            AgentConfRequest::RemoveParticipants(r::BatchRemoveParticipant::from_json(body)?)
        }
        "changeparticipantmode" => {
            AgentConfRequest::ChangeMode(r::ChangeParticipantMode::from_json(body)?)
        }
        "prolongtime" => AgentConfRequest::Prolong(r::ProlongTime::from_json(body)?),
        "holdparticipant" => AgentConfRequest::Hold(r::ParticipantTarget::from_json(body)?, true),
        "unholdparticipant" => {
            AgentConfRequest::Hold(r::ParticipantTarget::from_json(body)?, false)
        }
        "applytoshiftpresident" => {
            AgentConfRequest::ShiftPresident(r::ApplyToShiftPresident::from_json(body)?)
        }
        "answeragentconf" => AgentConfRequest::Answer,
        "rejectagentconf" => AgentConfRequest::Reject,
        "requestleaveagentconf" => AgentConfRequest::Leave,
        "releaseagentconf" => AgentConfRequest::Release,
        "queryconfinfos" => AgentConfRequest::QueryConfInfos,
        "queryvdnconfid" => AgentConfRequest::QueryAllConfIds {
            inspector: lock(&state.inner.inspectors)
                .get(&agent)
                .copied()
                .unwrap_or(false),
        },
        other => {
            return Err(GatewayError::new(
                Retcode::BadParameter,
                format!("agentconf/{other} is not an agent conference interface"),
            ))
        }
    };
    let result = ask_control(state, agent, phone, request).await?;
    Ok((Envelope::success_with(result), None))
}

/// One agent conference request to the control plane.
async fn ask_control(
    state: &GatewayState,
    agent: AgentId,
    phone: crate::agent_gateway::PhoneNumber,
    request: AgentConfRequest,
) -> Result<serde_json::Value, GatewayError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    state
        .inner
        .control
        .request(ControlRequest::AgentConf {
            agent,
            phone,
            request,
            reply,
        })
        .await
        .map_err(|e| GatewayError::internal(e.message))?;
    answer
        .await
        .map_err(|_| GatewayError::internal("the control plane stopped"))?
}

async fn unknown_interface() -> Response {
    let error = GatewayError::new(Retcode::BadParameter, "no such agent gateway interface");
    envelope(StatusCode::NOT_FOUND, Envelope::from(error), None)
}

/// An agent's session is over: its waiting poll, if any, answers, and it leaves its
/// conference (a chair's ends).
async fn forget(state: &GatewayState, signed_out: &SignedOut) {
    if let Some(waker) = lock(&state.inner.wakers).remove(&signed_out.agent) {
        waker.notify_waiters();
    }
    let left = ask_control(
        state,
        signed_out.agent,
        signed_out.phone.clone(),
        AgentConfRequest::SignedOut,
    )
    .await;
    if let Err(e) = left {
        tracing::warn!(agent = %signed_out.agent, error = %e, "signed-out agent's conference not left");
    }
}

fn answer(result: Result<(Envelope, Option<Guid>), GatewayError>) -> Response {
    match result {
        Ok((response, guid)) => envelope(StatusCode::OK, response, guid),
        Err(error) => envelope(StatusCode::OK, Envelope::from(error), None),
    }
}

fn envelope(status: StatusCode, response: Envelope, guid: Option<Guid>) -> Response {
    json_response(status, response.to_json(), guid)
}

fn poll_answer(response: PollResponse, guid: Option<Guid>) -> Response {
    json_response(StatusCode::OK, response.to_json(), guid)
}

fn json_response(status: StatusCode, body: String, guid: Option<Guid>) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )],
        body,
    )
        .into_response();
    if let Some(Ok(value)) = guid.map(|g| HeaderValue::from_str(&g.set_guid_header())) {
        response.headers_mut().insert("set-guid", value);
    }
    response
}

/// The request's `Guid` header ("" when absent: refused as a wrong Guid).
fn guid_of(headers: &HeaderMap) -> &str {
    headers
        .get("guid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    crate::control::unix_ms()
}

/// Serves the gateway over TLS (or plain HTTP with `insecure_http`) until `shutdown`, with
/// the limits every HTTP listener has (`[http]`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    listening: super::listener::Listening,
    state: GatewayState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let expiry = tokio::spawn(expire_silent_agents(state.clone()));
    // A graceful stop waits for requests in flight: the long polls answer at once instead of
    // holding it for their wait.
    let shutdown = async move {
        shutdown.await;
        state
            .inner
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for waker in lock(&state.inner.wakers).values() {
            waker.notify_waiters();
        }
    };
    let served = super::listener::serve(listener, app, listening, shutdown).await;
    expiry.abort();
    served
}
