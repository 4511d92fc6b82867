//! The configuration file: its schema, defaults, `--set` overrides and semantic checks.
//!
//! Owns: turning TOML text into a validated [`Config`], and building from it, once, the
//! settings types the lower layers own ([`SipSettings`]: listeners, routes, trunks, trust and
//! the UA's settings) — [`Loaded`] carries both. Unknown keys are errors (serde
//! `deny_unknown_fields`), reported with the key name and line by the TOML parser.
//! Must not: open sockets or touch anything outside the file it is given (and the certificate,
//! key and token files it names); define types the lower layers import — they own their
//! settings types, this module converts into them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::sdp::LocalCapabilities;
use crate::sip::routing::OutboundTrunk;

pub use super::route_config::{RouteConfig, ServiceConfig};
use crate::sip::transaction::TimerValues;
use crate::sip::transport::{ListenTransport, SipListen};
use crate::sip::trust::Trust;
use crate::sip::ua::UaSettings;

/// A checked configuration: the file as written, and the SIP layer's settings built from it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sip: SipSettings,
}

/// What the SIP layer is started (and, on reload, updated) with, built once when the file is
/// checked: nothing downstream parses these again.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// `[sip] listen`.
    pub listeners: Vec<SipListen>,
    /// Certificate and key for `tls://` listeners; None without one.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The user agent's settings: routes, trust, timers, codecs and SRTP policies.
    pub ua: UaSettings,
    /// The trunks calls are placed through, in file order (the first is MakeCall's default).
    pub trunks: Vec<OutboundTrunk>,
}

/// The whole configuration, as in `/etc/callbridge/callbridge.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub app: AppConfig,
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub resources: ResourcesConfig,
    #[serde(default)]
    pub store: super::recording_config::StoreConfig,
    #[serde(default)]
    pub recording: super::recording_config::RecordingConfig,
    #[serde(default)]
    pub agent_gateway: super::agent_gateway_config::AgentGatewayConfig,
    #[serde(default)]
    pub http: super::http_config::HttpConfig,
    /// Inbound call routing, first match wins on the Request-URI user part.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The PBXs and SIP trunks that may send calls. With none configured, anyone may.
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<TrunkConfig>,
}

/// A trunk: who it is and the source addresses its requests come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// A name for logs and operators.
    pub name: String,
    /// Source addresses or blocks (`10.0.0.5`, `192.0.2.0/24`, `2001:db8::/32`) that may send
    /// INVITEs and other out-of-dialog requests. Default: the `address`'s IP.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Where calls we place go (MakeCall, transfers): `ip:port` (`[v6]:port`). A trunk without
    /// one only sends calls.
    #[serde(default)]
    pub address: Option<String>,
    /// "udp" or "tcp" towards `address`.
    #[serde(default = "default_trunk_transport")]
    pub transport: String,
    /// Host part of the Request-URI and To for a bare number (`sip:<number>@<domain>`);
    /// default: the address's IP.
    #[serde(default)]
    pub domain: Option<String>,
    /// User part of our From (the calling number the trunk sees).
    #[serde(default = "default_from_user")]
    pub from_user: String,
    /// Digest credentials for the trunk's 401/407 challenges.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// This trunk's SRTP policy for calls we place ("offer", "require", "refuse"); default
    /// `[media] srtp`.
    #[serde(default)]
    pub srtp: Option<String>,
    /// Codecs offered on calls placed through this trunk, in preference order; default
    /// `[media] codecs`.
    #[serde(default)]
    pub codecs: Option<Vec<String>>,
    /// Whether its calls are recorded ("off", "always", "on-demand"); a route's own `record`
    /// wins for calls in.
    #[serde(default)]
    pub record: Option<String>,
}

fn default_trunk_transport() -> String {
    "udp".into()
}

fn default_from_user() -> String {
    "callbridge".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// This node's id when several callbridge nodes serve as one (docs/CLUSTER.md): 0–255, the
    /// CUAE MmsId of its results and events and the top byte of its connection and conference
    /// ids. 0 (the default) is a single server.
    #[serde(default, deserialize_with = "node_id")]
    pub node_id: u8,
    /// On SIGTERM, calls in progress may continue this long (new INVITEs get 503) before
    /// they are ended with BYE, s.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_s: u64,
    /// An `application` route's call that the application neither answers, rejects nor
    /// redirects within this many seconds is rejected (480), as CUAE's 90 s rule.
    #[serde(default = "default_decision_timeout")]
    pub call_decision_timeout_s: u64,
    /// A call we place (MakeCall, a transfer) that is not answered within this many seconds
    /// is cancelled (MakeCall_Failed with EndReason Ringout).
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_s: u64,
}

/// `[app] node_id`: a number 0-255 (the top byte of CUAE ids), said so when it is not.
fn node_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(deserializer)?;
    u8::try_from(n).map_err(|_| {
        serde::de::Error::custom(format!(
            "node_id {n} is out of range: a node is numbered 0-255 (0 for a single server)"
        ))
    })
}

fn default_ring_timeout() -> u64 {
    60
}

fn default_decision_timeout() -> u64 {
    90
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Listeners as `udp://ip:port` / `tcp://ip:port`; IPv6 as `udp://[::]:5060`.
    #[serde(default = "default_sip_listen")]
    pub listen: Vec<String>,
    /// Address put in Via/Contact/SDP when the listener is bound to a wildcard address and the
    /// host sits behind a fixed public address. Unset: the address the kernel routes to the peer.
    #[serde(default)]
    pub advertised_address: Option<IpAddr>,
    /// Value of User-Agent / Server headers.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// RFC 3261 T1 (RTT estimate), ms.
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    /// RFC 3261 T2 (max non-INVITE retransmit interval), ms.
    #[serde(default = "default_t2")]
    pub t2_ms: u64,
    /// RFC 3261 T4 (max time a message stays in the network), ms.
    #[serde(default = "default_t4")]
    pub t4_ms: u64,
    /// Out-of-dialog requests from outside every `[[trunk]]`: "reject" (403) or "ignore" (no
    /// answer: scanners learn nothing).
    #[serde(default = "default_untrusted")]
    pub untrusted: String,
    /// PEM certificate chain (leaf first) for `tls://` listeners.
    #[serde(default)]
    pub tls_certificate: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    #[serde(default)]
    pub tls_private_key: Option<std::path::PathBuf>,
    /// SRTP policy of calls that arrive over TLS, unless their route sets one: "require"
    /// (default: signalling secured, media too), "offer" or "refuse".
    #[serde(default = "default_tls_srtp")]
    pub tls_srtp: String,
    /// Overload control: a SIP message that waited longer than this for the control plane
    /// turns on 503 for new requests, ms (default 100; 0 = off).
    #[serde(default)]
    pub overload_queue_delay_ms: Option<u64>,
    /// The `Retry-After` of those 503s, s (default 2).
    #[serde(default)]
    pub overload_retry_after_s: Option<u32>,
}

fn default_tls_srtp() -> String {
    "require".into()
}

fn default_untrusted() -> String {
    "reject".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Lowest RTP port (rounded up to even); RTCP uses RTP+1.
    #[serde(default = "default_rtp_min")]
    pub rtp_port_min: u16,
    #[serde(default = "default_rtp_max")]
    pub rtp_port_max: u16,
    /// Address RTP sockets bind to.
    #[serde(default = "default_bind_ip")]
    pub bind_ip: IpAddr,
    /// Address announced in SDP and `MediaRxIP`; unset: the bind address if specific, else the
    /// address the kernel routes to the peer (SIP peer, MediaTxIP or the HTTP client).
    #[serde(default)]
    pub advertised_ip: Option<IpAddr>,
    /// Media worker threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Audio codecs offered/accepted, in preference order: "PCMU", "PCMA".
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// Packetization time we use when the peer does not ask for one, ms.
    #[serde(default = "default_ptime")]
    pub ptime_ms: u32,
    /// Offer/accept RFC 4733 telephone-event.
    #[serde(default = "default_true")]
    pub telephone_event: bool,
    /// IP TOS byte on RTP sockets (0xB8 = DSCP EF).
    #[serde(default = "default_tos")]
    pub tos: u8,
    /// SO_RCVBUF / SO_SNDBUF for RTP sockets, bytes; 0 = kernel default.
    #[serde(default)]
    pub socket_recv_buffer: usize,
    #[serde(default)]
    pub socket_send_buffer: usize,
    /// A connection made by ReserveConnection and never completed is released after this, s.
    #[serde(default = "default_reserve_timeout")]
    pub reserve_timeout_s: u64,
    /// Where RTP is accepted from: "learn" (the SDP address, or a source behind NAT learned
    /// once from its first packets; never re-learned) or "strict" (the SDP address only). A
    /// route may say otherwise.
    #[serde(default)]
    pub rtp_source: Option<String>,
    /// Deprecated spelling of `rtp_source`: true = "learn", false = "strict".
    #[serde(default)]
    pub nat_latching: Option<bool>,
    /// A call whose RTP stops for this long is released (reason `rtp-timeout`); 0 = never.
    #[serde(default = "default_rtp_timeout")]
    pub rtp_timeout_s: u64,
    /// Adaptive jitter buffer bounds, ms.
    #[serde(default = "default_jitter_min")]
    pub jitter_min_ms: u32,
    #[serde(default = "default_jitter_max")]
    pub jitter_max_ms: u32,
    /// SDES-SRTP: "offer" (accept RTP and SRTP offers, offer RTP), "require", or "refuse".
    #[serde(default = "default_srtp")]
    pub srtp: String,
    /// SRTP suites in preference order.
    #[serde(default = "default_srtp_suites")]
    pub srtp_suites: Vec<String>,
    /// SO_PRIORITY on media sockets (0–6; higher needs CAP_NET_ADMIN); unset = default.
    #[serde(default)]
    pub socket_priority: Option<u32>,
    /// Busy polling, µs: SO_BUSY_POLL + SO_PREFER_BUSY_POLL on sockets, per-epoll busy poll
    /// (EPIOCSPARAMS) and the worker spinning this long after traffic before it sleeps. 0 = off.
    #[serde(default)]
    pub busy_poll_us: u32,
    /// Packets per busy-poll pass (SO_BUSY_POLL_BUDGET); 0 = kernel default.
    #[serde(default)]
    pub busy_poll_budget: u32,
    /// Pin media worker n to core n.
    #[serde(default)]
    pub pin_workers: bool,
    /// SCHED_FIFO priority for media workers (1–99, needs CAP_SYS_NICE); 0 = normal scheduling.
    #[serde(default)]
    pub realtime_priority: u8,
    /// mlockall(MCL_CURRENT | MCL_FUTURE) at start (needs CAP_IPC_LOCK or LimitMEMLOCK).
    #[serde(default)]
    pub lock_memory: bool,
    /// Detect DTMF tones in the audio of G.711/G.722 calls as well as RFC 4733 events.
    #[serde(default)]
    pub inband_dtmf: bool,
    /// Workers read sockets once per 20 ms tick instead of waking for every packet (fewer
    /// context switches under load; up to one tick more delay).
    #[serde(default)]
    pub receive_at_tick: bool,
    /// Workers queue their sends in an io_uring and submit them once per turn instead of one
    /// `sendto` per packet; without io_uring (seccomp, old kernel) they warn once and use
    /// `sendto`.
    #[serde(default)]
    pub io_uring_send: bool,
    /// With `receive_at_tick`: workers read their sockets through one io_uring each (a
    /// multishot receive per socket, all run by one system call per tick) instead of epoll and
    /// one `recvmmsg` per socket; without io_uring (seccomp, kernel before 6.1) they warn once and
    /// use `recvmmsg`.
    #[serde(default)]
    pub io_uring_receive: bool,
    /// Where Play finds prompts (relative names; `<app>/<locale>/<name>` first when the
    /// request gives Application and Locale).
    #[serde(default = "default_prompt_dir")]
    pub prompt_dir: std::path::PathBuf,
    /// Where Record writes recordings (relative names).
    #[serde(default = "default_recording_dir")]
    pub recording_dir: std::path::PathBuf,
    /// Accept absolute paths in Play prompts and Record filenames (otherwise only names inside
    /// prompt_dir/recording_dir, without `..`).
    #[serde(default)]
    pub allow_absolute_paths: bool,
    /// Silence/speech threshold of DetectSilence and TermCondSilence: mean power per 10 ms,
    /// dBFS (−40: telephone line noise sits near −60, speech at −30 to −15).
    #[serde(default = "default_silence_threshold")]
    pub silence_threshold_dbfs: f64,
}

fn default_silence_threshold() -> f64 {
    crate::media::energy::DEFAULT_THRESHOLD_DBFS
}

fn default_prompt_dir() -> std::path::PathBuf {
    "/usr/share/callbridge/prompts".into()
}

fn default_recording_dir() -> std::path::PathBuf {
    "/var/lib/callbridge/recordings".into()
}

/// Media resource limits (CUAE resource accounting, seed 01): each connection holds an RTP
/// resource, plus an enhanced RTP resource when its codec is not G.711; each conferee of a
/// mixed (not hairpinned) conference holds a conference resource. 0 = as many as the RTP port
/// range allows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Connections (RTP resources). Exhausted → ResultCode 4 (ServerBusy), SIP 503.
    #[serde(default)]
    pub rtp: usize,
    /// Connections whose codec is not G.711 (G.722, Opus). Exhausted → 8.
    #[serde(default)]
    pub enhanced_rtp: usize,
    /// Conferees in mixed conferences. Exhausted → 8.
    #[serde(default)]
    pub conference: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens accepted on every API request. Empty list (and no token file) = the API
    /// refuses everything.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file with more tokens, one per line (`#` comments allowed); the .deb generates a random
    /// one at install. Read at start and on reload; a missing file is an error.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// SO_SNDBUF of every API connection, bytes: bounds what a client that stops reading its
    /// event stream (`/events`, `/cti`) holds in the kernel before it counts as too slow and is
    /// disconnected. None: the kernel's autotuning (up to `net.ipv4.tcp_wmem`'s maximum).
    #[serde(default)]
    pub client_send_buffer: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter directive, e.g. "info" or "callbridge::sip=debug".
    #[serde(default = "default_log_level")]
    pub level: String,
    /// "text" or "json".
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A config file that cannot be used, with a message that names the key and, where the TOML
/// parser knows it, the line.
#[derive(Debug)]
pub enum ConfigError {
    Read(String, std::io::Error),
    Toml(String),
    Override(String),
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(path, e) => write!(f, "cannot read {path}: {e}"),
            ConfigError::Toml(msg) => write!(f, "{msg}"),
            ConfigError::Override(msg) => write!(f, "--set: {msg}"),
            ConfigError::Invalid(msg) => write!(f, "invalid configuration: {msg}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, overrides (`section.key=value`, value in TOML syntax or a bare string), checks,
    /// and builds the SIP settings.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        Config::from_str_with_overrides(&text, &path.display().to_string(), overrides)
    }

    /// As [`Config::load`] for text already in memory; `origin` names it in messages.
    pub fn from_str_with_overrides(
        text: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Loaded, ConfigError> {
        // Deserializing straight from the text keeps line numbers in every error message.
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Toml(format!("{origin}: {e}")))?;
        if overrides.is_empty() {
            let sip = config.check()?;
            return Ok(Loaded { config, sip });
        }
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError::Override(e.to_string()))?;
        let sip = config.check()?;
        Ok(Loaded { config, sip })
    }

    /// Semantic checks serde cannot express; the SIP settings are built on the way (the one
    /// place they are parsed).
    pub fn check(&self) -> Result<SipSettings, ConfigError> {
        let listeners = self.sip_listeners()?;
        let tls = self.tls_server_config(&listeners)?;
        let tls_srtp = self.tls_srtp_policy()?;
        if self.app.ring_timeout_s == 0 {
            return Err(invalid("app.ring_timeout_s must be at least 1".into()));
        }
        if let Some(bytes) = self.api.client_send_buffer {
            if !(4096..=64 << 20).contains(&bytes) {
                return Err(invalid(format!(
                    "api.client_send_buffer ({bytes}) must be between 4096 and 67108864 bytes"
                )));
            }
        }
        self.recording.check()?;
        self.store.check()?;
        self.agent_gateway.settings()?;
        let routes = self.compiled_routes()?;
        let trunks = self.outbound_trunks()?;
        let trust = self.trust(&trunks)?;
        let codecs = self.audio_codecs()?;
        let m = &self.media;
        if m.rtp_port_min == 0 || m.rtp_port_min >= m.rtp_port_max {
            return Err(invalid(format!(
                "media.rtp_port_min ({}) must be non-zero and below media.rtp_port_max ({})",
                m.rtp_port_min, m.rtp_port_max
            )));
        }
        if !(10..=60).contains(&m.ptime_ms) || m.ptime_ms % 10 != 0 {
            return Err(invalid(format!(
                "media.ptime_ms ({}) must be 10, 20, ... 60",
                m.ptime_ms
            )));
        }
        let srtp = self.srtp_policy()?;
        for suite in &m.srtp_suites {
            if crate::media::srtp::SrtpProfile::from_sdes_name(suite).is_none() {
                return Err(invalid(format!(
                    "media.srtp_suites: unknown suite {suite:?} (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32)"
                )));
            }
        }
        if m.io_uring_receive && !m.receive_at_tick {
            return Err(invalid(
                "media.io_uring_receive needs media.receive_at_tick = true (the ring is read once per tick)"
                    .to_string(),
            ));
        }
        self.rtp_source()?;
        self.http.limits()?;
        if m.realtime_priority > 99 {
            return Err(invalid(format!(
                "media.realtime_priority ({}) must be 0 (off) or 1-99",
                m.realtime_priority
            )));
        }
        if m.jitter_min_ms < 10 || m.jitter_max_ms < m.jitter_min_ms || m.jitter_max_ms > 2000 {
            return Err(invalid(format!(
                "media.jitter_min_ms ({}) and jitter_max_ms ({}) must satisfy 10 <= min <= max <= 2000",
                m.jitter_min_ms, m.jitter_max_ms
            )));
        }
        if !(-90.0..=0.0).contains(&m.silence_threshold_dbfs) {
            return Err(invalid(format!(
                "media.silence_threshold_dbfs ({}) must be between -90 and 0",
                m.silence_threshold_dbfs
            )));
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(invalid("sip.t1_ms must be > 0 and <= sip.t2_ms".into()));
        }
        if self.api.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("api.tokens must not contain empty tokens".into()));
        }
        self.api_tokens()?;
        let ua = UaSettings {
            user_agent: self.sip.user_agent.clone(),
            timers: TimerValues {
                t1: Duration::from_millis(self.sip.t1_ms),
                t2: Duration::from_millis(self.sip.t2_ms),
                t4: Duration::from_millis(self.sip.t4_ms),
            },
            routes,
            trust,
            tls_srtp,
            capabilities: std::sync::Arc::new(LocalCapabilities {
                codecs,
                telephone_event: m.telephone_event,
                ptime_ms: m.ptime_ms,
                srtp,
                srtp_suites: m.srtp_suites.clone(),
            }),
        };
        Ok(SipSettings {
            listeners,
            tls,
            ua,
            trunks,
        })
    }

    /// Every accepted API token: `[api] tokens` plus the lines of `[api] token_file`.
    pub fn api_tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut tokens = self.api.tokens.clone();
        if let Some(path) = &self.api.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("api.token_file {}: {e}", path.display())))?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        Ok(tokens)
    }

    fn sip_listeners(&self) -> Result<Vec<SipListen>, ConfigError> {
        if self.sip.listen.is_empty() {
            return Err(invalid("sip.listen must name at least one listener".into()));
        }
        self.sip.listen.iter().map(|s| parse_listen(s)).collect()
    }

    /// The TLS server configuration for `tls://` listeners (certificate and key loaded and
    /// checked); None without such a listener.
    fn tls_server_config(
        &self,
        listeners: &[SipListen],
    ) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        let wants_tls = listeners
            .iter()
            .any(|l| l.transport == ListenTransport::Tls);
        let (cert, key) = match (&self.sip.tls_certificate, &self.sip.tls_private_key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) if !wants_tls => return Ok(None),
            _ if !wants_tls => {
                return Err(invalid(
                    "sip.tls_certificate and sip.tls_private_key go together".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "a tls:// listener needs sip.tls_certificate and sip.tls_private_key".into(),
                ))
            }
        };
        if !wants_tls {
            return Ok(None);
        }
        tls_server_config(cert, key, "sip").map(Some)
    }

    /// The SRTP policy for calls over TLS whose route sets none.
    fn tls_srtp_policy(&self) -> Result<crate::sdp::SrtpPolicy, ConfigError> {
        crate::sdp::SrtpPolicy::from_name(&self.sip.tls_srtp).ok_or_else(|| {
            invalid(format!(
                "sip.tls_srtp {:?}: expected \"offer\", \"require\" or \"refuse\"",
                self.sip.tls_srtp
            ))
        })
    }

    fn srtp_policy(&self) -> Result<crate::sdp::SrtpPolicy, ConfigError> {
        crate::sdp::SrtpPolicy::from_name(&self.media.srtp).ok_or_else(|| {
            invalid(format!(
                "media.srtp {:?}: expected \"offer\", \"require\" or \"refuse\"",
                self.media.srtp
            ))
        })
    }

    /// Who may start calls: the trunks' `allow` blocks, or the address of an `outbound` trunk
    /// without one (everyone when no trunk is configured).
    fn trust(&self, outbound: &[OutboundTrunk]) -> Result<Trust, ConfigError> {
        use crate::sip::trust::{IpBlock, Untrusted};
        let untrusted = match self.sip.untrusted.as_str() {
            "reject" => Untrusted::Reject,
            "ignore" => Untrusted::Ignore,
            other => {
                return Err(invalid(format!(
                    "sip.untrusted {other:?}: expected \"reject\" or \"ignore\""
                )))
            }
        };
        if self.trunks.is_empty() {
            return Ok(Trust {
                allowed: None,
                untrusted,
                trunks: Vec::new(),
            });
        }
        let mut blocks = Vec::new();
        let mut trunks = Vec::new();
        for (i, trunk) in self.trunks.iter().enumerate() {
            let record = super::recording_config::record_policy(
                trunk.record.as_deref(),
                &format!("trunk[{i}] ({}).record", trunk.name),
            )?
            .unwrap_or_default();
            let first = blocks.len();
            if trunk.allow.is_empty() {
                // A trunk we call may call us from its address.
                if let Some(t) = outbound.iter().find(|t| t.name == trunk.name) {
                    blocks.push(
                        IpBlock::parse(&t.destination.addr.ip().to_string()).map_err(|e| {
                            invalid(format!("trunk[{i}] ({}).address: {e}", trunk.name))
                        })?,
                    );
                    trunks.push(crate::sip::trust::TrunkSource {
                        name: trunk.name.clone(),
                        blocks: blocks[first..].to_vec(),
                        record,
                    });
                    continue;
                }
                return Err(invalid(format!(
                    "trunk[{i}] ({}): allow must name at least one address",
                    trunk.name
                )));
            }
            if self.trunks[..i].iter().any(|t| t.name == trunk.name) {
                return Err(invalid(format!(
                    "trunk[{i}]: name {:?} is used twice",
                    trunk.name
                )));
            }
            for block in &trunk.allow {
                blocks.push(
                    IpBlock::parse(block)
                        .map_err(|e| invalid(format!("trunk[{i}] ({}).allow: {e}", trunk.name)))?,
                );
            }
            trunks.push(crate::sip::trust::TrunkSource {
                name: trunk.name.clone(),
                blocks: blocks[first..].to_vec(),
                record,
            });
        }
        Ok(Trust {
            allowed: Some(blocks),
            untrusted,
            trunks,
        })
    }

    /// The trunks with an `address`, in file order (the first is MakeCall's default).
    fn outbound_trunks(&self) -> Result<Vec<OutboundTrunk>, ConfigError> {
        use crate::sip::transaction::{Peer, Transport};
        let mut out = Vec::new();
        for (i, t) in self.trunks.iter().enumerate() {
            let at = |what: &str| format!("trunk[{i}] ({}).{what}", t.name);
            let transport = match t.transport.as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "tls" => {
                    return Err(invalid(format!(
                        "{} \"tls\": calls are placed over udp or tcp (TLS is for listeners)",
                        at("transport")
                    )))
                }
                other => {
                    return Err(invalid(format!(
                        "{} {other:?}: expected \"udp\" or \"tcp\"",
                        at("transport")
                    )))
                }
            };
            let credentials = match (&t.username, &t.password) {
                (Some(username), Some(password)) => Some(crate::sip::ua::Credentials {
                    username: username.clone(),
                    password: password.clone(),
                }),
                (None, None) => None,
                _ => {
                    return Err(invalid(format!(
                        "trunk[{i}] ({}): username and password go together",
                        t.name
                    )))
                }
            };
            let srtp = match t.srtp.as_deref() {
                None => None,
                Some(p) => Some(crate::sdp::SrtpPolicy::from_name(p).ok_or_else(|| {
                    invalid(format!(
                        "{} {p:?}: expected \"offer\", \"require\" or \"refuse\"",
                        at("srtp")
                    ))
                })?),
            };
            let codecs = match &t.codecs {
                None => None,
                Some(names) => Some(parse_codecs(names, &at("codecs"))?),
            };
            let Some(address) = &t.address else {
                if credentials.is_some() || t.domain.is_some() || codecs.is_some() {
                    return Err(invalid(format!(
                        "trunk[{i}] ({}): domain, credentials and codecs need an address",
                        t.name
                    )));
                }
                continue;
            };
            let addr: SocketAddr = address.parse().map_err(|_| {
                invalid(format!(
                    "{} {address:?}: expected ip:port (e.g. 192.0.2.10:5060 or [2001:db8::1]:5060)",
                    at("address")
                ))
            })?;
            let domain = t.domain.clone().unwrap_or_else(|| match addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            });
            if domain.is_empty()
                || domain
                    .chars()
                    .any(|c| c.is_whitespace() || "<>\"@;?".contains(c))
            {
                return Err(invalid(format!(
                    "{} {domain:?} is not a host",
                    at("domain")
                )));
            }
            if !crate::sip::message::is_token(&t.from_user) {
                return Err(invalid(format!(
                    "{} {:?} is not a SIP user",
                    at("from_user"),
                    t.from_user
                )));
            }
            out.push(OutboundTrunk {
                name: t.name.clone(),
                destination: Peer { transport, addr },
                domain,
                from_user: t.from_user.clone(),
                credentials,
                srtp,
                codecs,
                record: super::recording_config::record_policy(t.record.as_deref(), &at("record"))?
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    fn audio_codecs(&self) -> Result<Vec<crate::sdp::Codec>, ConfigError> {
        parse_codecs(&self.media.codecs, "media.codecs")
    }
}

/// A codec list (`["PCMU", "OPUS"]`), in preference order; `what` names it in errors.
fn parse_codecs(names: &[String], what: &str) -> Result<Vec<crate::sdp::Codec>, ConfigError> {
    if names.is_empty() {
        return Err(invalid(format!("{what} must name at least one codec")));
    }
    names
        .iter()
        .map(|c| match c.to_ascii_uppercase().as_str() {
            "PCMU" => Ok(crate::sdp::Codec::Pcmu),
            "PCMA" => Ok(crate::sdp::Codec::Pcma),
            "G722" => Ok(crate::sdp::Codec::G722),
            "OPUS" => Ok(crate::sdp::Codec::Opus),
            _ => Err(invalid(format!(
                "{what}: unknown codec {c:?} (known: PCMU, PCMA, G722, OPUS)"
            ))),
        })
        .collect()
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            node_id: 0,
            drain_timeout_s: default_drain_timeout(),
            call_decision_timeout_s: default_decision_timeout(),
            ring_timeout_s: default_ring_timeout(),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: default_sip_listen(),
            advertised_address: None,
            user_agent: default_user_agent(),
            t1_ms: default_t1(),
            t2_ms: default_t2(),
            t4_ms: default_t4(),
            untrusted: default_untrusted(),
            tls_certificate: None,
            tls_private_key: None,
            tls_srtp: default_tls_srtp(),
            overload_queue_delay_ms: None,
            overload_retry_after_s: None,
        }
    }
}

impl SipConfig {
    /// The overload intake's settings.
    pub fn overload(&self) -> crate::sip::overload::OverloadSettings {
        let defaults = crate::sip::overload::OverloadSettings::default();
        crate::sip::overload::OverloadSettings {
            target_delay: match self.overload_queue_delay_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => defaults.target_delay,
            },
            retry_after_s: self
                .overload_retry_after_s
                .unwrap_or(defaults.retry_after_s),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_port_min: default_rtp_min(),
            rtp_port_max: default_rtp_max(),
            bind_ip: default_bind_ip(),
            advertised_ip: None,
            workers: 0,
            codecs: default_codecs(),
            ptime_ms: default_ptime(),
            telephone_event: true,
            tos: default_tos(),
            socket_recv_buffer: 0,
            socket_send_buffer: 0,
            reserve_timeout_s: default_reserve_timeout(),
            rtp_source: None,
            nat_latching: None,
            rtp_timeout_s: default_rtp_timeout(),
            jitter_min_ms: default_jitter_min(),
            jitter_max_ms: default_jitter_max(),
            srtp: default_srtp(),
            srtp_suites: default_srtp_suites(),
            socket_priority: None,
            busy_poll_us: 0,
            busy_poll_budget: 0,
            pin_workers: false,
            realtime_priority: 0,
            lock_memory: false,
            inband_dtmf: false,
            receive_at_tick: false,
            io_uring_send: false,
            io_uring_receive: false,
            prompt_dir: default_prompt_dir(),
            recording_dir: default_recording_dir(),
            allow_absolute_paths: false,
            silence_threshold_dbfs: default_silence_threshold(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            tokens: Vec::new(),
            token_file: None,
            client_send_buffer: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

fn parse_listen(s: &str) -> Result<SipListen, ConfigError> {
    let (scheme, rest) = s.split_once("://").ok_or_else(|| {
        invalid(format!(
            "sip.listen {s:?}: expected udp://ip:port, tcp://ip:port or tls://ip:port"
        ))
    })?;
    let transport = match scheme.to_ascii_lowercase().as_str() {
        "udp" => ListenTransport::Udp,
        "tcp" => ListenTransport::Tcp,
        "tls" => ListenTransport::Tls,
        other => {
            return Err(invalid(format!(
                "sip.listen {s:?}: unknown transport {other:?} (udp, tcp, tls)"
            )))
        }
    };
    let addr: SocketAddr = rest
        .parse()
        .map_err(|e| invalid(format!("sip.listen {s:?}: {e}")))?;
    Ok(SipListen { transport, addr })
}

fn apply_override(table: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let (path, raw) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::Override(format!("{spec:?}: expected section.key=value")))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(ConfigError::Override(format!("{spec:?}: empty key")));
    }
    // A TOML value if it parses as one, otherwise the bare text as a string, so that
    // `--set api.listen=127.0.0.1:9000` works without shell-quoting quotes.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = keys
        .split_last()
        .expect("split('.') yields at least one key");
    let mut cursor = table;
    for key in parents {
        let entry = cursor
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::Override(format!("{spec:?}: {key} is not a section")))?;
    }
    cursor.insert(last.to_string(), value);
    Ok(())
}

/// A TLS server configuration from a PEM certificate chain and key (`section` names the
/// keys in errors: `sip`, `agent_gateway`).
pub(super) fn tls_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    section: &str,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| invalid(format!("{section}.tls_certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "{section}.tls_certificate {}: no CERTIFICATE in the file",
            cert.display()
        )));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("{section}.tls_private_key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            invalid(format!(
                "{section}.tls_certificate/tls_private_key: {e} (does the key belong to the certificate?)"
            ))
        })?;
    Ok(Arc::new(config))
}

pub(super) fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

fn default_rtp_timeout() -> u64 {
    60
}
fn default_jitter_min() -> u32 {
    20
}
fn default_jitter_max() -> u32 {
    200
}
fn default_srtp() -> String {
    "offer".into()
}
fn default_srtp_suites() -> Vec<String> {
    crate::sdp::DEFAULT_SRTP_SUITES
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_drain_timeout() -> u64 {
    60
}
fn default_sip_listen() -> Vec<String> {
    vec![
        "udp://0.0.0.0:5060".into(),
        "tcp://0.0.0.0:5060".into(),
        "udp://[::]:5060".into(),
        "tcp://[::]:5060".into(),
    ]
}
/// Without the version: a scanner learns no release to match known weaknesses against
/// (`callbridge version` and the log say it to the operator).
fn default_user_agent() -> String {
    "callbridge".into()
}
fn default_t1() -> u64 {
    500
}
fn default_t2() -> u64 {
    4000
}
fn default_t4() -> u64 {
    5000
}
fn default_rtp_min() -> u16 {
    20000
}
fn default_rtp_max() -> u16 {
    29999
}
fn default_bind_ip() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}
fn default_codecs() -> Vec<String> {
    vec!["PCMU".into(), "PCMA".into(), "G722".into(), "OPUS".into()]
}
fn default_ptime() -> u32 {
    20
}
fn default_true() -> bool {
    true
}
fn default_tos() -> u8 {
    0xB8
}
fn default_reserve_timeout() -> u64 {
    300
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_log_level() -> String {
    "info".into()
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::routing::Service;

    const GOOD: &str = r#"
[sip]
listen = ["udp://127.0.0.1:5060", "tcp://127.0.0.1:5060"]
[media]
rtp_port_min = 20000
rtp_port_max = 29999
[api]
listen = "127.0.0.1:8080"
tokens = ["change-me"]
[[route]]
user = "^echo$"
service = "echo"
"#;

    #[test]
    fn good_file_loads() {
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).expect("valid config");
        assert_eq!(c.sip.listeners.len(), 2);
        assert_eq!(c.config.routes[0].service, ServiceConfig::Echo);
        assert_eq!(c.sip.ua.routes[0].service, Service::Echo);
        assert_eq!(c.config.api.tokens, vec!["change-me".to_string()]);
    }

    #[test]
    fn api_client_send_buffer_is_the_kernels_unless_set_within_bounds() {
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).expect("good config");
        assert_eq!(c.config.api.client_send_buffer, None);
        let set = ["api.client_send_buffer=16384".to_string()];
        let c = Config::from_str_with_overrides(GOOD, "t", &set).expect("within bounds");
        assert_eq!(c.config.api.client_send_buffer, Some(16384));
        let tiny = ["api.client_send_buffer=100".to_string()];
        let e = Config::from_str_with_overrides(GOOD, "t", &tiny).expect_err("too small");
        assert!(
            e.to_string().contains("api.client_send_buffer (100)"),
            "{e}"
        );
    }

    #[test]
    fn io_uring_receive_is_off_by_default_and_needs_receive_at_tick() {
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).expect("good config");
        assert!(!c.config.media.io_uring_receive);
        let alone =
            Config::from_str_with_overrides(GOOD, "t", &["media.io_uring_receive=true".into()])
                .expect_err("io_uring_receive without receive_at_tick is refused");
        assert!(
            alone
                .to_string()
                .contains("media.io_uring_receive needs media.receive_at_tick"),
            "{alone}"
        );
        let on = Config::from_str_with_overrides(
            GOOD,
            "t",
            &[
                "media.io_uring_receive=true".into(),
                "media.receive_at_tick=true".into(),
            ],
        )
        .expect("both keys are known");
        on.config
            .check()
            .expect("io_uring_receive with receive_at_tick is valid");
        assert!(on.config.media.io_uring_receive && on.config.media.receive_at_tick);
    }

    #[test]
    fn io_uring_send_is_off_by_default_and_can_be_turned_on() {
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).expect("valid config");
        assert!(!c.config.media.io_uring_send);
        let on = Config::from_str_with_overrides(GOOD, "t", &["media.io_uring_send=true".into()])
            .expect("io_uring_send is a known key");
        assert!(on.config.media.io_uring_send);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = GOOD.replace("rtp_port_max = 29999", "rtp_port_max = 29999\nrtp_prot = 1");
        let err = Config::from_str_with_overrides(&text, "f.toml", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("rtp_prot"), "{msg}");
        assert!(msg.contains("line 7"), "{msg}");
    }

    #[test]
    fn unknown_section_is_an_error() {
        let text = format!("{GOOD}\n[nonsense]\na = 1\n");
        let msg = Config::from_str_with_overrides(&text, "f", &[])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("nonsense"), "{msg}");
    }

    #[test]
    fn overrides_take_toml_or_bare_strings() {
        let c = Config::from_str_with_overrides(
            GOOD,
            "t",
            &[
                "api.listen=127.0.0.1:9999".into(),
                "media.rtp_port_min=30000".into(),
                "media.rtp_port_max=30100".into(),
                "api.tokens=[\"a\",\"b\"]".into(),
            ],
        )
        .expect("overrides apply");
        assert_eq!(c.config.api.listen.port(), 9999);
        assert_eq!(c.config.media.rtp_port_min, 30000);
        assert_eq!(c.config.api.tokens, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn node_id_is_0_to_255() {
        let c = Config::from_str_with_overrides(GOOD, "t", &["app.node_id=7".into()])
            .expect("node_id 7");
        assert_eq!(c.config.app.node_id, 7);
        for bad in ["256", "-1"] {
            let err = Config::from_str_with_overrides(GOOD, "t", &[format!("app.node_id={bad}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("0-255"), "{err}");
        }
    }

    #[test]
    fn override_of_unknown_key_is_an_error() {
        let err =
            Config::from_str_with_overrides(GOOD, "t", &["media.bogus=1".into()]).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn token_file_adds_tokens_and_must_exist() {
        let dir = std::env::temp_dir().join(format!("cb-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api.token");
        std::fs::write(&file, "# generated\nsecret-1\n\n").unwrap();
        let set = format!("api.token_file={:?}", file.display().to_string());
        let c = Config::from_str_with_overrides(GOOD, "t", &[set]).expect("token file read");
        assert_eq!(
            c.config.api_tokens().unwrap(),
            vec!["change-me", "secret-1"]
        );
        let err = Config::from_str_with_overrides(
            GOOD,
            "t",
            &["api.token_file=\"/nonexistent/api.token\"".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/api.token"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn semantic_errors_are_named() {
        for (o, needle) in [
            ("media.rtp_port_min=40000", "rtp_port_min"),
            ("sip.listen=[\"sctp://1.2.3.4:5\"]", "sctp"),
            ("media.codecs=[\"G729\"]", "G729"),
            ("media.ptime_ms=25", "ptime_ms"),
        ] {
            let err = Config::from_str_with_overrides(GOOD, "t", &[o.into()]).unwrap_err();
            assert!(err.to_string().contains(needle), "{o}: {err}");
        }
        let bad_route = GOOD.replace("^echo$", "(unclosed");
        let err = Config::from_str_with_overrides(&bad_route, "t", &[]).unwrap_err();
        assert!(err.to_string().contains("route[0]"), "{err}");
    }

    #[test]
    fn rtp_source_is_learned_by_default_and_strict_where_asked() {
        use crate::engine::RtpSource;
        let source = |overrides: &[&str]| {
            let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
            Config::from_str_with_overrides(GOOD, "t", &overrides)
                .and_then(|c| c.config.rtp_source())
        };
        assert_eq!(source(&[]).unwrap(), RtpSource::Learn);
        assert_eq!(
            source(&["media.rtp_source=strict"]).unwrap(),
            RtpSource::Strict
        );
        // The old spelling keeps meaning what it meant.
        assert_eq!(
            source(&["media.nat_latching=false"]).unwrap(),
            RtpSource::Strict
        );
        assert_eq!(
            source(&["media.nat_latching=true"]).unwrap(),
            RtpSource::Learn
        );
        let both = source(&["media.nat_latching=true", "media.rtp_source=learn"]).unwrap_err();
        assert!(both.to_string().contains("nat_latching"), "{both}");
        let bad = source(&["media.rtp_source=latch"]).unwrap_err();
        assert!(
            bad.to_string().contains("media.rtp_source \"latch\""),
            "{bad}"
        );

        let strict = GOOD.replace(
            "service = \"echo\"",
            "service = \"echo\"\nrtp_source = \"strict\"",
        );
        let c = Config::from_str_with_overrides(&strict, "t", &[]).unwrap();
        assert_eq!(c.sip.ua.routes[0].rtp_source, Some(RtpSource::Strict));
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).unwrap();
        assert_eq!(c.sip.ua.routes[0].rtp_source, None, "unset: [media]'s");
        let bad = GOOD.replace(
            "service = \"echo\"",
            "service = \"echo\"\nrtp_source = \"any\"",
        );
        let err = Config::from_str_with_overrides(&bad, "t", &[]).unwrap_err();
        assert!(err.to_string().contains("route[0].rtp_source"), "{err}");
    }

    #[test]
    fn route_dn_is_a_directory_number() {
        let with_dn = GOOD.replace(
            "service = \"echo\"",
            "service = \"echo\"\ndn = \"+49*7000#\"",
        );
        let c = Config::from_str_with_overrides(&with_dn, "t", &[]).expect("a good dn loads");
        assert_eq!(c.sip.ua.routes[0].dn.as_deref(), Some("+49*7000#"));
        let plain = Config::from_str_with_overrides(GOOD, "t", &[]).expect("dn is optional");
        assert_eq!(plain.sip.ua.routes[0].dn, None);
        for bad in ["\"70a0\"", "\"\"", "\"7000 \""] {
            let text = GOOD.replace(
                "service = \"echo\"",
                &format!("service = \"echo\"\ndn = {bad}"),
            );
            let err = Config::from_str_with_overrides(&text, "t", &[]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("route[0].dn"), "{bad}: {msg}");
            assert!(msg.contains("directory number"), "{bad}: {msg}");
        }
        let typo = GOOD.replace("service = \"echo\"", "service = \"echo\"\nDN = \"7000\"");
        let err = Config::from_str_with_overrides(&typo, "t", &[]).unwrap_err();
        assert!(
            err.to_string().contains("DN"),
            "unknown keys stay errors: {err}"
        );
    }

    #[test]
    fn only_a_conference_route_may_start_its_rooms_as_hairpins() {
        let bridge = GOOD.replace(
            "user = \"^echo$\"\nservice = \"echo\"",
            "user = \"^bridge=(?P<conference>.+)$\"\nservice = \"conference\"\nhairpin = true",
        );
        assert_ne!(bridge, GOOD, "the test edits the echo route");
        let c = Config::from_str_with_overrides(&bridge, "t", &[]).expect("a bridge route loads");
        let room = c.sip.ua.routes[0].conference("bridge=b1").expect("a room");
        assert_eq!((room.name.as_str(), room.hairpin), ("b1", true));
        let plain = Config::from_str_with_overrides(GOOD, "t", &[]).unwrap();
        assert!(!plain.sip.ua.routes[0].hairpin, "off unless set");
        let echo = GOOD.replace("service = \"echo\"", "service = \"echo\"\nhairpin = true");
        let err = Config::from_str_with_overrides(&echo, "t", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("route[0].hairpin is only for service \"conference\""),
            "{err}"
        );
    }

    #[test]
    fn the_default_user_agent_names_no_version() {
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).unwrap();
        assert_eq!(c.sip.ua.user_agent, "callbridge");
        let set = Config::from_str_with_overrides(
            GOOD,
            "t",
            &["sip.user_agent=\"pbx-media\"".to_string()],
        )
        .unwrap();
        assert_eq!(set.sip.ua.user_agent, "pbx-media");
    }

    #[test]
    fn trunks_name_who_may_call() {
        let c = Config::from_str_with_overrides(GOOD, "t", &[]).unwrap();
        assert_eq!(c.sip.ua.trust.allowed, None, "no trunks: anyone");
        let with = format!(
            "{GOOD}\n[[trunk]]\nname = \"pbx\"\nallow = [\"10.0.0.5\", \"192.0.2.0/24\"]\n"
        );
        let trust = Config::from_str_with_overrides(&with, "t", &[])
            .unwrap()
            .sip
            .ua
            .trust;
        assert!(trust.allows("192.0.2.9".parse().unwrap()));
        assert!(!trust.allows("198.51.100.1".parse().unwrap()));
        for (text, needle) in [
            ("[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/40\"]\n", "prefix"),
            ("[[trunk]]\nname = \"a\"\nallow = []\n", "at least one"),
            ("[[trunk]]\nname = \"a\"\nallow = [\"1.2.3.4\"]\n[[trunk]]\nname = \"a\"\nallow = [\"1.2.3.5\"]\n", "used twice"),
            ("[[trunk]]\nname = \"a\"\nallow = [\"1.2.3.4\"]\naddress = \"x\"\n", "address"),
        ] {
            let err = Config::from_str_with_overrides(&format!("{GOOD}\n{text}"), "t", &[]).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let err = Config::from_str_with_overrides(GOOD, "t", &["sip.untrusted=\"drop\"".into()])
            .unwrap_err();
        assert!(err.to_string().contains("untrusted"), "{err}");
    }

    #[test]
    fn trunks_with_an_address_place_calls_and_may_call_from_it() {
        let text = format!(
            "{GOOD}\n[[trunk]]\nname = \"carrier\"\naddress = \"192.0.2.20:5080\"\ntransport = \"tcp\"\n\
             username = \"cb\"\npassword = \"pw\"\nfrom_user = \"4000\"\nsrtp = \"require\"\ncodecs = [\"PCMA\"]\n\
             [[trunk]]\nname = \"pbx\"\nallow = [\"10.0.0.5\"]\n"
        );
        let c = Config::from_str_with_overrides(&text, "t", &[]).unwrap();
        let trunks = &c.sip.trunks;
        assert_eq!(trunks.len(), 1, "only trunks with an address place calls");
        let t = &trunks[0];
        assert_eq!(t.destination.addr, "192.0.2.20:5080".parse().unwrap());
        assert_eq!(
            t.destination.transport,
            crate::sip::transaction::Transport::Tcp
        );
        assert_eq!(t.domain, "192.0.2.20");
        assert_eq!(t.from_user, "4000");
        assert_eq!(
            t.credentials.as_ref().map(|c| c.username.as_str()),
            Some("cb")
        );
        assert_eq!(t.srtp, Some(crate::sdp::SrtpPolicy::Require));
        assert_eq!(t.codecs, Some(vec![crate::sdp::Codec::Pcma]));
        let trust = &c.sip.ua.trust;
        assert!(
            trust.allows("192.0.2.20".parse().unwrap()),
            "its address may call us"
        );
        assert!(trust.allows("10.0.0.5".parse().unwrap()));
        for (trunk, needle) in [
            ("address = \"pbx.example:5060\"", "expected ip:port"),
            (
                "address = \"192.0.2.1:5060\"\ntransport = \"tls\"",
                "udp or tcp",
            ),
            (
                "address = \"192.0.2.1:5060\"\nusername = \"u\"",
                "go together",
            ),
            (
                "allow = [\"192.0.2.1\"]\npassword = \"p\"\nusername = \"u\"",
                "need an address",
            ),
            (
                "address = \"192.0.2.1:5060\"\nfrom_user = \"a b\"",
                "not a SIP user",
            ),
            ("address = \"192.0.2.1:5060\"\nsrtp = \"maybe\"", "srtp"),
            (
                "address = \"192.0.2.1:5060\"\ncodecs = [\"G729\"]",
                "(t).codecs: unknown codec",
            ),
        ] {
            let text = format!("{GOOD}\n[[trunk]]\nname = \"t\"\n{trunk}\n");
            let err = Config::from_str_with_overrides(&text, "t", &[]).unwrap_err();
            assert!(err.to_string().contains(needle), "{trunk}: {err}");
        }
    }

    #[test]
    fn tls_settings_are_checked() {
        let err = Config::from_str_with_overrides(GOOD, "t", &["sip.tls_srtp=\"always\"".into()])
            .unwrap_err();
        assert!(err.to_string().contains("tls_srtp"), "{err}");
        let err = Config::from_str_with_overrides(
            GOOD,
            "t",
            &["sip.tls_certificate=\"/x/cert.pem\"".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let err = Config::from_str_with_overrides(
            GOOD,
            "t",
            &["sip.listen=[\"tls://127.0.0.1:5061\"]".into()],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("needs sip.tls_certificate"),
            "{err}"
        );
    }
}
