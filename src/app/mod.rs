//! Life cycle of the server: start every part in order, run, drain on a signal, stop.
//!
//! Owns: wiring the engine, SIP transport, user agent, control plane and HTTP API together,
//! systemd readiness (`sd_notify`) and signal handling.
//! Must not: contain call logic — it only connects the parts and shuts them down in order.

pub mod agent_gateway_config;
pub mod config;
pub mod http_config;
pub mod recording_config;
pub mod route_config;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::api::{self, ApiState};
use crate::control::{
    self, ControlHandle, ControlRequest, Controller, Host, MediaSettings, Now, ResourceLimits,
    Status,
};
use crate::engine::tuning::ThreadTuning;
use crate::engine::{Engine, EngineConfig, SessionDefaults};
use crate::sip::transport::SipTransport;
use crate::sip::ua::UserAgent;
use crate::store::{Store, StoreSettings};
use config::{Config, Loaded};

/// Why the server could not start or stopped abnormally.
#[derive(Debug)]
pub enum AppError {
    Config(config::ConfigError),
    Engine(String),
    SipBind(std::io::Error),
    ApiBind(std::net::SocketAddr, std::io::Error),
    Api(std::io::Error),
    Store(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Config(e) => write!(f, "{e}"),
            AppError::Engine(e) => write!(f, "media engine: {e}"),
            AppError::SipBind(e) => write!(f, "cannot bind SIP listeners: {e}"),
            AppError::ApiBind(a, e) => write!(f, "cannot bind API listener {a}: {e}"),
            AppError::Api(e) => write!(f, "API server failed: {e}"),
            AppError::Store(e) => write!(f, "recording store: {e}"),
        }
    }
}

impl std::error::Error for AppError {}

/// Where the configuration came from, so that a reload reads it the same way.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: std::path::PathBuf,
    pub overrides: Vec<String>,
}

/// Changes the log filter at run time (configuration reload).
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Runs until SIGTERM/SIGINT, then drains (new calls refused, calls in progress continue for up
/// to `[app] drain_timeout_s`), releases everything (BYE) and stops. SIGHUP reloads.
pub async fn run(loaded: Loaded, source: ConfigSource, log: LogControl) -> Result<(), AppError> {
    let Loaded { config, sip } = loaded;
    if config.media.lock_memory {
        match crate::engine::tuning::lock_memory() {
            Ok(()) => tracing::info!("memory locked (mlockall)"),
            Err(error) => tracing::warn!(%error, "mlockall refused, continuing without it"),
        }
    }
    let (engine_tx, engine_rx) = mpsc::channel(4096);
    let engine = Engine::start(
        EngineConfig {
            workers: config.media.workers,
            bind_ip: config.media.bind_ip,
            rtp_port_min: config.media.rtp_port_min,
            rtp_port_max: config.media.rtp_port_max,
            dscp_tos: config.media.tos,
            recv_buffer: config.media.socket_recv_buffer,
            send_buffer: config.media.socket_send_buffer,
            session: SessionDefaults {
                rtp_source: config.rtp_source().map_err(AppError::Config)?,
                rtp_timeout: (config.media.rtp_timeout_s > 0)
                    .then(|| Duration::from_secs(config.media.rtp_timeout_s)),
                jitter_min_ms: config.media.jitter_min_ms,
                jitter_max_ms: config.media.jitter_max_ms,
                rtcp_interval: Duration::from_secs(5),
                inband_dtmf: config.media.inband_dtmf,
                silence_threshold_dbfs: config.media.silence_threshold_dbfs,
            },
            socket_priority: config.media.socket_priority,
            threads: ThreadTuning {
                pin_to_core: config.media.pin_workers,
                realtime_priority: config.media.realtime_priority,
                busy_poll_us: config.media.busy_poll_us,
                busy_poll_budget: config.media.busy_poll_budget,
                receive_at_tick: config.media.receive_at_tick,
                io_uring_send: config.media.io_uring_send,
                io_uring_receive: config.media.io_uring_receive,
            },
        },
        engine_tx,
    )
    .map_err(|e| AppError::Engine(e.to_string()))?;

    let media = media_settings(&config, &sip);
    let (intake, inbound) =
        crate::sip::overload::intake(config.sip.overload(), &config.sip.user_agent);
    let sip_overload = intake.overload().clone();
    let transport = SipTransport::start(
        &sip.listeners,
        sip.tls,
        config.sip.advertised_address,
        intake,
    )
    .await
    .map_err(AppError::SipBind)?;
    for (t, addr) in transport.local_addresses() {
        tracing::info!(transport = ?t, %addr, "SIP listening");
    }

    let ua = UserAgent::new(sip.ua, rand::random());
    if let Err(e) = std::fs::create_dir_all(&media.recording_dir) {
        tracing::warn!(dir = %media.recording_dir.display(), error = %e, "recording directory unavailable");
    }
    let (store, store_thread) = Store::open(
        StoreSettings {
            location: config.store.location(),
            node: config.app.node_id,
            retention_days: config.recording.retention_days,
        },
        Arc::new(control::RecordingFileRecovery),
    )
    .map_err(|e| AppError::Store(e.to_string()))?;
    tracing::info!(store = %config.store.location().describe(), "recording store open");
    let controller = Controller::new(
        Now::read(),
        media,
        Host {
            engine,
            sip: transport.clone(),
        },
        ua,
    );
    let (control, requests) = control::handle_for(&controller);
    let (agent_events_tx, agent_events_rx) = mpsc::unbounded_channel();
    let control_task = tokio::spawn(control::run(
        controller,
        transport,
        store.clone(),
        agent_events_tx,
        requests,
        inbound,
        engine_rx,
    ));

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| AppError::ApiBind(config.api.listen, e))?;
    tracing::info!(addr = %config.api.listen, "API listening");
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let tokens = Arc::new(RwLock::new(config.api_tokens().map_err(AppError::Config)?));
    let api_keys = Arc::new(RwLock::new(config.recording.api_keys.clone()));
    let limits = config.http.limits().map_err(AppError::Config)?;
    let auth_failures = config.http.auth_failures_per_minute();
    let throttle = || {
        Arc::new(api::throttle::AuthThrottle::new(
            auth_failures,
            http_config::AUTH_FAILURE_WINDOW,
        ))
    };
    let (api_stats, gateway_stats) = (Arc::default(), Arc::default());
    let gateway_settings = config.agent_gateway.settings().map_err(AppError::Config)?;
    let mut listeners = vec![("api", Arc::clone(&api_stats))];
    if gateway_settings.is_some() {
        listeners.push(("agent_gateway", Arc::clone(&gateway_stats)));
    }
    let state = ApiState {
        control: control.clone(),
        tokens: tokens.clone(),
        reload: reload_tx,
        stopping: stopping_rx,
        verba: api::verba::VerbaState {
            node: config.app.node_id,
            store: store.clone(),
            control: control.clone(),
            keys: api_keys.clone(),
            tokens: Arc::new(std::sync::Mutex::new(
                api::verba::tokens::TokenRegistry::default(),
            )),
        },
        auth_throttle: throttle(),
        listeners: listeners.into(),
        sip_overload,
        node_id: config.app.node_id,
    };
    let gateway = match gateway_settings {
        Some(settings) => {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|e| AppError::ApiBind(settings.listen, e))?;
            tracing::info!(addr = %settings.listen, tls = settings.tls.is_some(), "agent gateway listening");
            let state = api::agent_gateway::GatewayState::new(
                settings.sessions,
                settings.poll_wait,
                store.clone(),
                control.clone(),
                throttle(),
            );
            tokio::spawn(api::agent_gateway::deliver_events(
                state.clone(),
                agent_events_rx,
            ));
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let listening = api::listener::Listening {
                name: "agent_gateway",
                tls: settings.tls,
                send_buffer: None,
                limits: limits.clone(),
                stats: gateway_stats,
            };
            let task = tokio::spawn(api::agent_gateway::serve(
                listener,
                listening,
                state,
                async {
                    let _ = stop_rx.await;
                },
            ));
            Some((stop_tx, task))
        }
        None => None,
    };
    let (stop_api_tx, stop_api_rx) = oneshot::channel::<()>();
    let listening = api::listener::Listening {
        name: "api",
        tls: None,
        send_buffer: config.api.client_send_buffer,
        limits,
        stats: api_stats,
    };
    let api_task = tokio::spawn(api::serve(listener, state, listening, async {
        let _ = stop_api_rx.await;
    }));

    // Every listener and media worker is up: tell systemd, then keep telling it we are alive.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let health_task = tokio::spawn(report_health(control.clone(), store));
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "callbridge running");

    let mut current = config;
    let mut signals = StopSignals::new();
    let mut hangup = install_signal(tokio::signal::unix::SignalKind::hangup());
    loop {
        tokio::select! {
            _ = signals.terminate() => break,
            _ = hangup.recv() => {
                if let Err(e) = reload(&source, &mut current, &control, &tokens, &api_keys, &log).await {
                    tracing::error!(error = %e, "reload refused; the running configuration stays");
                }
            }
            Some(reply) = reload_rx.recv() => {
                let result = reload(&source, &mut current, &control, &tokens, &api_keys, &log).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "reload refused; the running configuration stays");
                }
                let _ = reply.send(result);
            }
        }
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    drain(
        &control,
        Duration::from_secs(current.app.drain_timeout_s),
        &mut signals,
    )
    .await;
    tracing::info!("stopping: releasing every connection");
    let (done_tx, done_rx) = oneshot::channel();
    if control
        .request(ControlRequest::Shutdown(done_tx))
        .await
        .is_ok()
    {
        let _ = done_rx.await;
    }
    health_task.abort();
    // Its store handle must be gone before the store is joined.
    let _ = health_task.await;
    // Give the BYEs just queued a moment to leave the sockets.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stopping_tx.send(true);
    let _ = stop_api_tx.send(());
    if let Some((stop, task)) = gateway {
        let _ = stop.send(());
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "agent gateway failed"),
            Err(e) => tracing::error!(error = %e, "agent gateway task failed"),
            Ok(Ok(())) => {}
        }
    }
    let engine: Engine = match control_task.await {
        Ok(engine) => engine,
        Err(e) => return Err(AppError::Engine(format!("control task failed: {e}"))),
    };
    engine.shutdown();
    let api = api_task.await;
    // Every handle is gone with the control and API tasks: the store finishes its queue.
    if let Err(e) = store_thread.join() {
        tracing::error!(error = %e, "the recording store did not stop cleanly");
    }
    match api {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Api(e)),
        Err(e) => Err(AppError::Engine(format!("API task failed: {e}"))),
    }
}

/// Re-reads the configuration and applies what can change without a restart: routes, trunks,
/// API tokens and the log filter. Listener addresses and media settings need a restart (logged).
async fn reload(
    source: &ConfigSource,
    current: &mut Config,
    control: &ControlHandle,
    tokens: &RwLock<Vec<String>>,
    api_keys: &RwLock<Vec<recording_config::ApiKeyConfig>>,
    log: &LogControl,
) -> Result<(), String> {
    let Loaded { config: new, sip } =
        Config::load(&source.path, &source.overrides).map_err(|e| e.to_string())?;
    let (routes, trust, trunks) = (sip.ua.routes, sip.ua.trust, sip.trunks);
    let new_tokens = new.api_tokens().map_err(|e| e.to_string())?;
    log(&new.log.level)?;
    let (tx, rx) = oneshot::channel();
    control
        .request(ControlRequest::ReloadRoutes(routes, trust, trunks, tx))
        .await
        .map_err(|e| e.to_string())?;
    let _ = rx.await;
    *tokens
        .write()
        .map_err(|_| "token store poisoned".to_string())? = new_tokens;
    *api_keys
        .write()
        .map_err(|_| "API key store poisoned".to_string())? = new.recording.api_keys.clone();
    for (what, changed) in [
        ("sip.listen", new.sip.listen != current.sip.listen),
        ("api.listen", new.api.listen != current.api.listen),
        ("media", new.media != current.media),
        ("store.path", new.store.path != current.store.path),
        ("store.url", new.store.url != current.store.url),
        ("recording.dir", new.recording.dir != current.recording.dir),
        (
            "recording.format",
            new.recording.format != current.recording.format,
        ),
    ] {
        if changed {
            tracing::warn!(
                setting = what,
                "changed in the file; takes effect after a restart"
            );
        }
    }
    *current = new;
    tracing::info!("configuration reloaded");
    Ok(())
}

/// Refuses new calls and waits until the calls in progress have ended, the timeout has passed,
/// or a second SIGTERM/SIGINT asks to stop at once.
async fn drain(control: &ControlHandle, timeout: Duration, signals: &mut StopSignals) {
    let (tx, rx) = oneshot::channel();
    if control.request(ControlRequest::Drain(tx)).await.is_err() {
        return;
    }
    let _ = rx.await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let calls = status(control).await.map(|s| s.calls).unwrap_or(0);
        if calls == 0 {
            return;
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
            "draining: {calls} calls in progress"
        ))]);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(calls, "drain timeout: ending the remaining calls");
                return;
            }
            _ = signals.terminate() => {
                tracing::info!(calls, "second stop signal: ending the remaining calls now");
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// systemd WATCHDOG=1 while the control plane answers and every media worker is turning, and
/// STATUS= with the live counts.
/// When to give memory a burst of calls freed back to the kernel: once the work alive — media
/// connections plus SIP transactions — has fallen to half its peak since the last time (and by
/// at least [`MemoryReturn::MIN_DROP`]), so a busy steady state never trims and an emptied
/// server always does. Transactions count because they outlive their calls: an answered
/// INVITE's stays 32 s (Timer L) with its request and response, so the calls of a burst are
/// gone a while before their memory is free (measured by scripts/bench-overload: trimming on
/// connections alone left 380 MB of a 710 MB peak).
#[derive(Debug, Default)]
struct MemoryReturn {
    peak: usize,
}

impl MemoryReturn {
    const MIN_DROP: usize = 256;

    /// Notes the connections now; true when it is time to trim.
    fn after(&mut self, connections: usize) -> bool {
        self.peak = self.peak.max(connections);
        let fallen = self.peak - connections;
        if fallen >= Self::MIN_DROP && connections <= self.peak / 2 {
            self.peak = connections;
            return true;
        }
        false
    }
}

async fn report_health(control: ControlHandle, store: Store) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    let mut memory = MemoryReturn::default();
    loop {
        tokio::time::sleep(period).await;
        let Some(s) = status(&control).await else {
            tracing::warn!("control plane did not answer; watchdog not fed");
            continue;
        };
        if memory.after(s.connections + s.transactions) {
            // glibc keeps what a burst freed for later; hand it back (off the async workers:
            // trimming walks every arena).
            let (shrunk, done) = oneshot::channel();
            if control
                .request(ControlRequest::ShrinkIdle(shrunk))
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
            }
            // Both connections' caches: the store thread's, and its reader's.
            let released = async {
                store.ask(|db| db.release_memory()).await?;
                store.read(|db| db.release_memory()).await
            };
            match tokio::time::timeout(Duration::from_secs(2), released).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the store kept its page cache"),
                Err(_) => tracing::warn!("the store did not release its page cache within 2 s"),
                Ok(Ok(())) => {}
            }
            tokio::task::spawn_blocking(|| {
                if let Err(error) = crate::heap::release_free_memory() {
                    tracing::warn!(%error, "free heap pages not given back");
                }
            });
        }
        let text = format!(
            "calls={} connections={} conferences=0",
            s.calls, s.connections
        );
        let mut states = vec![sd_notify::NotifyState::Status(&text)];
        if watchdog.is_some() {
            if s.stalled_workers == 0 {
                states.push(sd_notify::NotifyState::Watchdog);
            } else {
                tracing::error!(
                    stalled = s.stalled_workers,
                    "media workers stalled; watchdog not fed"
                );
            }
        }
        let _ = sd_notify::notify(&states);
    }
}

async fn status(control: &ControlHandle) -> Option<Status> {
    let (tx, rx) = oneshot::channel();
    control.request(ControlRequest::Status(tx)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(2), rx)
        .await
        .ok()?
        .ok()
}

/// SIGTERM and SIGINT: stop (the first drains, a second one during the drain stops at once).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> StopSignals {
        use tokio::signal::unix::SignalKind;
        StopSignals {
            term: install_signal(SignalKind::terminate()),
            int: install_signal(SignalKind::interrupt()),
        }
    }

    async fn terminate(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn install_signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    tokio::signal::unix::signal(kind).expect("installing a signal handler cannot fail on Linux")
}

/// The control plane's settings, from the checked configuration (codecs and trunks as the SIP
/// settings already hold them: nothing is parsed twice).
pub fn media_settings(config: &Config, sip: &config::SipSettings) -> MediaSettings {
    MediaSettings {
        advertised_ip: config.media.advertised_ip,
        bind_ip: config.media.bind_ip,
        default_codec: *sip
            .ua
            .capabilities
            .codecs
            .first()
            .expect("config check: [media] codecs names at least one codec"),
        default_framesize: config.media.ptime_ms,
        reserve_timeout: Duration::from_secs(config.media.reserve_timeout_s),
        resources: ResourceLimits {
            rtp: config.resources.rtp,
            enhanced_rtp: config.resources.enhanced_rtp,
            conference: config.resources.conference,
        },
        prompt_dir: config.media.prompt_dir.clone(),
        recording_dir: config.media.recording_dir.clone(),
        allow_absolute_paths: config.media.allow_absolute_paths,
        decision_timeout: Duration::from_secs(config.app.call_decision_timeout_s),
        ring_timeout: Duration::from_secs(config.app.ring_timeout_s),
        trunks: sip.trunks.clone(),
        node_id: config.app.node_id,
        recording: crate::control::RecordingSettings {
            dir: config.recording.dir.clone(),
            format: config
                .recording
                .format()
                .expect("config check: recording.format is known"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryReturn;

    #[test]
    fn memory_goes_back_after_a_burst_not_in_a_steady_state() {
        let mut memory = MemoryReturn::default();
        for connections in [0, 500, 2000, 1900, 1500, 1001] {
            assert!(!memory.after(connections), "{connections}: still busy");
        }
        assert!(memory.after(1000), "half the peak");
        assert!(!memory.after(900), "the peak starts again from there");
        assert!(memory.after(300), "and it halved again");
        assert!(!memory.after(100), "a fall of 200 is too small to bother");
    }
}
