//! Inbound routing and outbound trunks as the SIP layer uses them: `[[route]]` entries with
//! their compiled patterns, the service a routed call is connected to, and the trunks calls are
//! placed through.
//!
//! Owns: these settings types and the small rules that belong to them (which route a
//! Request-URI user matches, the route's `conference` group, what a directory number is).
//! Must not: read or parse the configuration file — `app::config` turns the TOML into these
//! values, checked, and hands them down; nothing here re-validates them.

use regex::Regex;

use super::transaction::Peer;
use super::ua::Credentials;
use crate::sdp;

/// What a routed call is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Answer and send every received RTP packet back to its source.
    Echo,
    /// Answer and join the conference named by the route's `conference` group (RFC 4240
    /// style, `^conf=(?P<conference>[^@;]+)$`), creating it on first join.
    Conference,
    /// Answer, play the Request-URI's `play=` prompt (RFC 4240) or the route's `prompt`, and
    /// hang up when it has played.
    Announcement,
    /// Offer the call to applications (`IncomingCall` event); they answer, accept, reject or
    /// redirect it through `/callcontrol`.
    Application,
}

/// A `[[route]]` with its compiled pattern. First match on the Request-URI user part wins.
#[derive(Debug, Clone)]
pub struct Route {
    pub user: Regex,
    pub service: Service,
    pub answer_delay_ms: u64,
    /// `announcement` service: the default prompt.
    pub prompt: Option<String>,
    /// This route's SRTP policy, when it overrides `[media] srtp`.
    pub srtp: Option<sdp::SrtpPolicy>,
    /// The directory number calls on this route are for (see [`is_directory_number`]); None:
    /// the Request-URI's user part.
    pub dn: Option<String>,
    /// Whether its calls are recorded; None: as the trunk they came from says (else off).
    pub record: Option<crate::store::RecordPolicy>,
    /// Where its calls' RTP is accepted from; None: the engine's default (`[media]`).
    pub rtp_source: Option<crate::engine::RtpSource>,
    /// `conference` service: a room it creates starts as a two-party hairpin (no mix; a third
    /// caller, a prompt or a recording promotes it), as BridgeCalls joins two calls.
    pub hairpin: bool,
}

/// The room a `conference` route's caller joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRoom {
    /// The route's `conference` group.
    pub name: String,
    /// Created as a two-party hairpin ([`Route::hairpin`]); an existing room keeps its kind.
    pub hairpin: bool,
}

impl Route {
    /// Whether a Request-URI user part is for this route.
    pub fn matches(&self, user: &str) -> bool {
        self.user.is_match(user)
    }

    /// The pattern's `conference` group in `user`, for a `conference` route.
    pub fn conference(&self, user: &str) -> Option<RouteRoom> {
        self.user
            .captures(user)
            .and_then(|c| c.name("conference"))
            .map(|m| RouteRoom {
                name: m.as_str().to_string(),
                hairpin: self.hairpin,
            })
    }
}

/// Whether `text` is a directory number a route may name: digits, `*`, `#` and `+`, at least
/// one character.
pub fn is_directory_number(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | '+'))
}

/// A trunk that calls can be placed through (it has an `address`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundTrunk {
    pub name: String,
    pub destination: Peer,
    pub domain: String,
    pub from_user: String,
    pub credentials: Option<Credentials>,
    pub srtp: Option<sdp::SrtpPolicy>,
    pub codecs: Option<Vec<sdp::Codec>>,
    /// Whether calls placed through it are recorded.
    pub record: crate::store::RecordPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_numbers_are_digits_star_hash_plus() {
        for ok in ["7000", "+4930123", "*21#", "#"] {
            assert!(is_directory_number(ok), "{ok}");
        }
        for bad in ["", "70a0", "7000 ", "sip:7000", "-1"] {
            assert!(!is_directory_number(bad), "{bad}");
        }
    }
}
