//! `[[route]]` tables: what a call to a Request-URI user part gets (service, SRTP, where its
//! RTP is accepted from, recording), checked and compiled into [`Route`]s.
//!
//! Owns: the route's file form and its checks. Must not: decide anything per call; the UA
//! matches the compiled routes.

use regex::Regex;
use serde::Deserialize;

use super::config::{invalid, Config, ConfigError};
use crate::engine::RtpSource;
use crate::sip::routing::{is_directory_number, Route, Service};

fn rtp_source(name: &str, what: &str) -> Result<RtpSource, ConfigError> {
    RtpSource::from_name(name)
        .ok_or_else(|| invalid(format!("{what} {name:?}: expected \"learn\" or \"strict\"")))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Regular expression matched against the Request-URI user part.
    pub user: String,
    pub service: ServiceConfig,
    /// Send 180 Ringing and wait this long before answering (0 = answer at once).
    #[serde(default)]
    pub answer_delay_ms: u64,
    /// SDES-SRTP for calls on this route ("offer", "require", "refuse"); unset = `[media] srtp`.
    #[serde(default)]
    pub srtp: Option<String>,
    /// `announcement` service: the prompt played when the Request-URI has no `play=`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The directory number this route's calls are for (digits, `*`, `#`, `+`), told to the
    /// owner as the call's `route_dn`; unset: the Request-URI's user part.
    #[serde(default)]
    pub dn: Option<String>,
    /// Whether its calls are recorded ("off", "always", "on-demand"); unset: as the trunk the
    /// call came from says, else off.
    #[serde(default)]
    pub record: Option<String>,
    /// Where its calls' RTP is accepted from ("learn", "strict"); unset: `[media] rtp_source`.
    #[serde(default)]
    pub rtp_source: Option<String>,
    /// `conference` service: rooms start as a two-party hairpin (two callers joined without
    /// a mix, as BridgeCalls joins two calls; a third caller, a prompt or a recording
    /// promotes the room). Default false: a mixed room from the first caller.
    #[serde(default)]
    pub hairpin: bool,
}

/// A route's `service` as written in the file; see [`Service`] for what each one does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceConfig {
    Echo,
    Conference,
    Announcement,
    Application,
}

impl From<ServiceConfig> for Service {
    fn from(service: ServiceConfig) -> Service {
        match service {
            ServiceConfig::Echo => Service::Echo,
            ServiceConfig::Conference => Service::Conference,
            ServiceConfig::Announcement => Service::Announcement,
            ServiceConfig::Application => Service::Application,
        }
    }
}

impl Config {
    /// `[media] rtp_source`, or the deprecated `nat_latching`: learn unless told otherwise.
    pub fn rtp_source(&self) -> Result<RtpSource, ConfigError> {
        match (&self.media.rtp_source, self.media.nat_latching) {
            (Some(_), Some(_)) => Err(invalid(
                "media.nat_latching is the old spelling of media.rtp_source: set only rtp_source"
                    .into(),
            )),
            (Some(name), None) => rtp_source(name, "media.rtp_source"),
            (None, Some(true)) | (None, None) => Ok(RtpSource::Learn),
            (None, Some(false)) => Ok(RtpSource::Strict),
        }
    }

    pub(super) fn compiled_routes(&self) -> Result<Vec<Route>, ConfigError> {
        self.routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let service = Service::from(r.service);
                let user =
                    Regex::new(&r.user).map_err(|e| invalid(format!("route[{i}].user: {e}")))?;
                if service == Service::Conference
                    && !user.capture_names().any(|n| n == Some("conference"))
                {
                    return Err(invalid(format!(
                        "route[{i}]: service \"conference\" needs a (?P<conference>...) group in user, e.g. \"^conf=(?P<conference>[^@;]+)$\""
                    )));
                }
                let srtp = match &r.srtp {
                    Some(name) => Some(crate::sdp::SrtpPolicy::from_name(name).ok_or_else(|| {
                        invalid(format!(
                            "route[{i}].srtp {name:?}: expected \"offer\", \"require\" or \"refuse\""
                        ))
                    })?),
                    None => None,
                };
                if r.hairpin && service != Service::Conference {
                    return Err(invalid(format!(
                        "route[{i}].hairpin is only for service \"conference\""
                    )));
                }
                if r.prompt.is_some() && service != Service::Announcement {
                    return Err(invalid(format!(
                        "route[{i}].prompt is only for service \"announcement\""
                    )));
                }
                if let Some(dn) = r.dn.as_deref().filter(|dn| !is_directory_number(dn)) {
                    return Err(invalid(format!(
                        "route[{i}].dn {dn:?}: expected a directory number (digits, '*', '#' and '+', e.g. \"7000\")"
                    )));
                }
                let record = super::recording_config::record_policy(
                    r.record.as_deref(),
                    &format!("route[{i}].record"),
                )?;
                let rtp_source = match &r.rtp_source {
                    Some(name) => Some(rtp_source(name, &format!("route[{i}].rtp_source"))?),
                    None => None,
                };
                Ok(Route {
                    user,
                    service,
                    answer_delay_ms: r.answer_delay_ms,
                    prompt: r.prompt.clone(),
                    srtp,
                    dn: r.dn.clone(),
                    record,
                    rtp_source,
                    hairpin: r.hairpin,
                })
            })
            .collect()
    }
}
