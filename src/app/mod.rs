//! Life cycle of the server: start every part in order, run, drain on a signal, stop.
//!
//! Owns: wiring the engine, SIP transport, user agent, control plane and HTTP API together,
//! systemd readiness (`sd_notify`) and signal handling.
//! Must not: contain call logic — it only connects the parts and shuts them down in order.

pub mod config;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::api::{self, ApiState};
use crate::control::{ControlRequest, Controller, MediaSettings};
use crate::engine::{Engine, EngineConfig};
use crate::sdp::LocalCapabilities;
use crate::sip::transaction::TimerValues;
use crate::sip::transport::SipTransport;
use crate::sip::ua::{UaSettings, UserAgent};
use config::Config;

/// Why the server could not start or stopped abnormally.
#[derive(Debug)]
pub enum AppError {
    Config(config::ConfigError),
    Engine(String),
    SipBind(std::io::Error),
    ApiBind(std::net::SocketAddr, std::io::Error),
    Api(std::io::Error),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Config(e) => write!(f, "{e}"),
            AppError::Engine(e) => write!(f, "media engine: {e}"),
            AppError::SipBind(e) => write!(f, "cannot bind SIP listeners: {e}"),
            AppError::ApiBind(a, e) => write!(f, "cannot bind API listener {a}: {e}"),
            AppError::Api(e) => write!(f, "API server failed: {e}"),
        }
    }
}

impl std::error::Error for AppError {}

/// Runs until SIGTERM/SIGINT, then releases every call (BYE) and stops.
pub async fn run(config: Config) -> Result<(), AppError> {
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
        },
        engine_tx,
    )
    .map_err(|e| AppError::Engine(e.to_string()))?;

    let (inbound_tx, inbound_rx) = mpsc::channel(8192);
    let listeners = config.sip_listeners().map_err(AppError::Config)?;
    let transport = SipTransport::start(&listeners, config.sip.advertised_address, inbound_tx)
        .await
        .map_err(AppError::SipBind)?;
    for (t, addr) in transport.local_addresses() {
        tracing::info!(transport = ?t, %addr, "SIP listening");
    }

    let ua = UserAgent::new(
        UaSettings {
            user_agent: config.sip.user_agent.clone(),
            timers: TimerValues {
                t1: std::time::Duration::from_millis(config.sip.t1_ms),
                t2: std::time::Duration::from_millis(config.sip.t2_ms),
                t4: std::time::Duration::from_millis(config.sip.t4_ms),
            },
            routes: config.compiled_routes().map_err(AppError::Config)?,
            capabilities: LocalCapabilities {
                codecs: config.audio_codecs().map_err(AppError::Config)?,
                telephone_event: config.media.telephone_event,
                ptime_ms: config.media.ptime_ms,
            },
        },
        rand::random(),
    );
    let controller = Controller::new(MediaSettings::from_config(&config), engine, ua, transport);
    let (control, requests) = controller.handle();
    let control_task = tokio::spawn(controller.run(requests, inbound_rx, engine_rx));

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| AppError::ApiBind(config.api.listen, e))?;
    tracing::info!(addr = %config.api.listen, "API listening");
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let state = ApiState {
        control: control.clone(),
        tokens: Arc::new(config.api.tokens.clone()),
        stopping: stopping_rx,
    };
    let (stop_api_tx, stop_api_rx) = oneshot::channel::<()>();
    let api_task = tokio::spawn(api::serve(listener, state, async {
        let _ = stop_api_rx.await;
    }));

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "callbridge running");

    wait_for_signal().await;
    tracing::info!("stopping: releasing every connection");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let (done_tx, done_rx) = oneshot::channel();
    if control
        .request(ControlRequest::Shutdown(done_tx))
        .await
        .is_ok()
    {
        let _ = done_rx.await;
    }
    // Give the BYEs just queued a moment to leave the sockets.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = stopping_tx.send(true);
    let _ = stop_api_tx.send(());
    let engine: Engine = match control_task.await {
        Ok(engine) => engine,
        Err(e) => return Err(AppError::Engine(format!("control task failed: {e}"))),
    };
    engine.shutdown();
    match api_task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Api(e)),
        Err(e) => Err(AppError::Engine(format!("API task failed: {e}"))),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Linux");
    let mut int =
        signal(SignalKind::interrupt()).expect("installing a SIGINT handler cannot fail on Linux");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
