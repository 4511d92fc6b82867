//! `[http]`: what every HTTP listener (the API, the agent gateway) allows each client —
//! timeouts, connection caps, body size, failed-credential throttling.
//!
//! Owns: the section as written, its checks, and the [`HttpLimits`] and throttle settings
//! built from it. Must not: bind or serve (the API's listener module does).

use std::time::Duration;

use serde::Deserialize;

use super::config::{invalid, ConfigError};
use crate::api::listener::HttpLimits;

/// `[http]`; every key optional, the defaults protect a production host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's header (and a TLS handshake) must arrive within this, ms (default 10,000);
    /// a kept-alive connection must send its next request within it.
    #[serde(default)]
    pub header_read_timeout_ms: Option<u64>,
    /// A connection with no request in progress and no traffic for this long is closed, s
    /// (default 60).
    #[serde(default)]
    pub idle_timeout_s: Option<u64>,
    /// Open connections per listener (default 1,024).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Open connections per client address (default 256: agents behind one NAT share one).
    #[serde(default)]
    pub max_connections_per_source: Option<usize>,
    /// Largest request body, bytes (default 1 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Failed credentials (bearer tokens, recording API keys and passwords, agent sign-ins)
    /// one address may present per minute before it is answered 429 without them being
    /// checked (default 20; 0 = no throttling).
    #[serde(default)]
    pub auth_failures_per_minute: Option<u32>,
}

/// The window of `auth_failures_per_minute`.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);

impl HttpConfig {
    /// The limits every listener serves with, checked.
    pub fn limits(&self) -> Result<HttpLimits, ConfigError> {
        let defaults = HttpLimits::default();
        let limits = HttpLimits {
            header_read_timeout: self
                .header_read_timeout_ms
                .map_or(defaults.header_read_timeout, Duration::from_millis),
            idle_timeout: self
                .idle_timeout_s
                .map_or(defaults.idle_timeout, Duration::from_secs),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_source: self
                .max_connections_per_source
                .unwrap_or(defaults.max_connections_per_source),
            max_body_bytes: self.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        };
        if !(100..=300_000).contains(&limits.header_read_timeout.as_millis()) {
            return Err(invalid(format!(
                "http.header_read_timeout_ms ({}) must be 100-300000",
                limits.header_read_timeout.as_millis()
            )));
        }
        if !(1..=86_400).contains(&limits.idle_timeout.as_secs()) {
            return Err(invalid(format!(
                "http.idle_timeout_s ({}) must be 1-86400",
                limits.idle_timeout.as_secs()
            )));
        }
        if limits.max_connections == 0
            || limits.max_connections_per_source == 0
            || limits.max_connections_per_source > limits.max_connections
        {
            return Err(invalid(format!(
                "http.max_connections ({}) and max_connections_per_source ({}) must satisfy 1 <= per source <= per listener",
                limits.max_connections, limits.max_connections_per_source
            )));
        }
        if limits.max_body_bytes < 4096 {
            return Err(invalid(format!(
                "http.max_body_bytes ({}) must be at least 4096",
                limits.max_body_bytes
            )));
        }
        Ok(limits)
    }

    /// Failed credentials allowed per address per [`AUTH_FAILURE_WINDOW`]; 0 = unlimited.
    pub fn auth_failures_per_minute(&self) -> u32 {
        self.auth_failures_per_minute.unwrap_or(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_protect_and_every_limit_is_checked() {
        let defaults = HttpConfig::default();
        assert_eq!(defaults.limits().unwrap(), HttpLimits::default());
        assert_eq!(defaults.auth_failures_per_minute(), 20);
        for (config, needle) in [
            (
                HttpConfig {
                    header_read_timeout_ms: Some(0),
                    ..HttpConfig::default()
                },
                "header_read_timeout_ms",
            ),
            (
                HttpConfig {
                    idle_timeout_s: Some(0),
                    ..HttpConfig::default()
                },
                "idle_timeout_s",
            ),
            (
                HttpConfig {
                    max_connections: Some(10),
                    max_connections_per_source: Some(11),
                    ..HttpConfig::default()
                },
                "max_connections",
            ),
            (
                HttpConfig {
                    max_body_bytes: Some(100),
                    ..HttpConfig::default()
                },
                "max_body_bytes",
            ),
        ] {
            let error = config.limits().unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
    }
}
