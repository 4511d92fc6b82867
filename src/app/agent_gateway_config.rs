//! `[agent_gateway]`: the Huawei-compatible agent gateway's own listener (HTTPS, as the
//! vendor's CC-Gateway on port 8043) and its Guid and polling settings.
//!
//! Owns: the section as written, its checks, and [`GatewaySettings`] built from it.
//! Must not: bind the listener (the app does, at start).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::config::{invalid, tls_server_config, ConfigError};
use crate::agent_gateway::{AuthMode, SessionSettings};

/// `[agent_gateway]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentGatewayConfig {
    /// Where the gateway listens, e.g. "0.0.0.0:8043"; unset: no gateway.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and key of the HTTPS listener.
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    #[serde(default)]
    pub tls_private_key: Option<PathBuf>,
    /// Plain HTTP (tests, or a TLS-terminating proxy in front): agent passwords and Guids
    /// would cross the network in the clear otherwise.
    #[serde(default)]
    pub insecure_http: bool,
    /// 1: static Guids (the sign-in's until sign-out); 2 (default): rotated every
    /// `guid_interval_ms`, the new one on the event poll's `Set-GUID`.
    #[serde(default)]
    pub auth_mode: Option<u8>,
    #[serde(default)]
    pub guid_interval_ms: Option<u64>,
    #[serde(default)]
    pub guid_timeout_ms: Option<u64>,
    /// An agent whose event polls stop for this long is signed out.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// How long an event poll waits for an event before it answers empty.
    #[serde(default)]
    pub poll_wait_ms: Option<u64>,
}

/// The gateway's settings, checked.
#[derive(Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// None: plain HTTP (`insecure_http`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub sessions: SessionSettings,
    pub poll_wait: Duration,
}

impl AgentGatewayConfig {
    /// The settings, or None when no gateway is configured.
    pub fn settings(&self) -> Result<Option<GatewaySettings>, ConfigError> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let tls = match (
            &self.tls_certificate,
            &self.tls_private_key,
            self.insecure_http,
        ) {
            (Some(cert), Some(key), _) => Some(tls_server_config(cert, key, "agent_gateway")?),
            (None, None, true) => None,
            (None, None, false) => {
                return Err(invalid(
                    "agent_gateway: the gateway serves HTTPS: set tls_certificate and \
                     tls_private_key, or insecure_http = true (tests, or behind a \
                     TLS-terminating proxy)"
                        .into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "agent_gateway.tls_certificate and tls_private_key go together".into(),
                ))
            }
        };
        let defaults = SessionSettings::default();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let sessions = SessionSettings {
            auth_mode: match self.auth_mode {
                None => defaults.auth_mode,
                Some(m) => AuthMode::from_vendor(m).ok_or_else(|| {
                    invalid(format!(
                        "agent_gateway.auth_mode {m}: 1 (static) or 2 (dynamic)"
                    ))
                })?,
            },
            guid_interval: ms(self.guid_interval_ms, defaults.guid_interval),
            guid_timeout: ms(self.guid_timeout_ms, defaults.guid_timeout),
            poll_timeout: ms(self.heartbeat_timeout_ms, defaults.poll_timeout),
            queue_capacity: defaults.queue_capacity,
        };
        sessions
            .check()
            .map_err(|e| invalid(format!("agent_gateway: {e}")))?;
        let poll_wait = ms(self.poll_wait_ms, Duration::from_secs(10));
        if poll_wait.is_zero() || poll_wait >= sessions.poll_timeout {
            return Err(invalid(
                "agent_gateway.poll_wait_ms must be above 0 and below heartbeat_timeout_ms".into(),
            ));
        }
        Ok(Some(GatewaySettings {
            listen,
            tls,
            sessions,
            poll_wait,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AgentGatewayConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn no_listen_no_gateway_and_https_unless_insecure_is_said() {
        assert!(config("").settings().unwrap().is_none());
        let err = config("listen = \"127.0.0.1:8043\"")
            .settings()
            .err()
            .unwrap();
        assert!(err.to_string().contains("insecure_http"), "{err}");
        let s = config("listen = \"127.0.0.1:8043\"\ninsecure_http = true")
            .settings()
            .unwrap()
            .expect("a gateway");
        assert!(s.tls.is_none());
        assert_eq!(s.sessions.auth_mode, AuthMode::Dynamic);
        assert_eq!(s.poll_wait, Duration::from_secs(10));
        let err = config("listen = \"127.0.0.1:8043\"\ntls_certificate = \"/x\"")
            .settings()
            .err()
            .unwrap();
        assert!(err.to_string().contains("go together"), "{err}");
    }

    #[test]
    fn guid_settings_are_checked() {
        let base = "listen = \"127.0.0.1:8043\"\ninsecure_http = true\n";
        let s = config(&format!("{base}auth_mode = 1\nguid_interval_ms = 1000\nguid_timeout_ms = 3000\npoll_wait_ms = 500\nheartbeat_timeout_ms = 5000"))
            .settings()
            .unwrap()
            .unwrap();
        assert_eq!(s.sessions.auth_mode, AuthMode::Static);
        assert_eq!(s.sessions.guid_interval, Duration::from_secs(1));
        for bad in [
            "auth_mode = 3",
            "guid_interval_ms = 5000\nguid_timeout_ms = 1000",
            "poll_wait_ms = 200000",
        ] {
            assert!(config(&format!("{base}{bad}")).settings().is_err(), "{bad}");
        }
    }
}
