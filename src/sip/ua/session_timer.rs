//! Session timers (RFC 4028): the interval a peer asks for, the one a 2xx to our INVITE
//! names, and the expiry that ends a session nobody refreshed.
//!
//! Owns: the `session_timers` deadlines and the Session-Expires/Min-SE rules. We never refresh
//! a session ourselves; the peer does.
//! Must not: end a call other than through `UserAgent::end_call`.

use std::time::{Duration, Instant};

use super::{CallId, CallState, EndReason, UserAgent};
use crate::sip::message::{Request, Response};

/// RFC 4028 Min-SE we ask for, s (the RFC's own minimum).
pub(super) const MIN_SE_S: u64 = 90;

impl UserAgent {
    /// (Re)starts the call's session timer: expiry is the interval less min(32 s, 1/3) after
    /// now (RFC 4028 §10, the side that does not refresh).
    pub(super) fn arm_session_timer(&mut self, now: Instant, call_id: CallId) {
        self.session_timers.disarm(call_id);
        let Some(call) = self.calls.get(&call_id) else {
            return;
        };
        if let Some((interval, _)) = call.session_expires {
            let margin = Duration::from_secs(32).min(interval / 3);
            self.session_timers.arm(call_id, now + interval - margin);
        }
    }

    /// Sessions not refreshed in time end with BYE (RFC 4028 §10).
    pub(super) fn expire_sessions(&mut self, now: Instant) {
        while let Some(call_id) = self.session_timers.pop_due(now) {
            let Some(call) = self.calls.get(&call_id) else {
                continue;
            };
            if call.state != CallState::Confirmed {
                continue;
            }
            tracing::info!(call = call_id, "session timer expired without a refresh");
            self.send_bye(now, call_id, "SIP;cause=408;text=\"Session Timer Expired\"");
            self.end_call(call_id, Some(EndReason::SessionExpired));
        }
    }

    /// RFC 4028 §9: the 2xx names the interval and that the peer (the UAC) refreshes.
    pub(super) fn add_session_timer(&self, call_id: CallId, response: &mut Response) {
        if let Some((interval, _)) = self.calls[&call_id].session_expires {
            response.headers.push(
                "Session-Expires",
                format!("{};refresher=uac", interval.as_secs()),
            );
            response.headers.push("Require", "timer");
        }
    }
}

/// The session interval a request asks for, when the peer will refresh it: its
/// Session-Expires with `Supported: timer` and no `refresher=uas`. We never refresh sessions
/// ourselves, so an interval the peer would not refresh is not used at all (RFC 4028 §9 leaves
/// it to the UAS). Err: below Min-SE (422).
pub(super) fn requested_session_timer(request: &Request) -> Result<Option<Duration>, ()> {
    let Some(value) = request.headers.get("Session-Expires") else {
        return Ok(None);
    };
    let mut parts = value.split(';').map(str::trim);
    let Some(seconds) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
        return Ok(None);
    };
    if seconds < MIN_SE_S {
        return Err(());
    }
    let uas_refreshes = parts.any(|p| p.eq_ignore_ascii_case("refresher=uas"));
    let peer_supports = request
        .headers
        .get_all("Supported")
        .chain(request.headers.get_all("Require"))
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("timer"));
    if uas_refreshes || !peer_supports {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs(seconds)))
}

/// The session timer in a 2xx to our INVITE: kept when the peer (`refresher=uas`) refreshes.
pub(super) fn session_timer_of_answer(response: &Response) -> Option<(Duration, bool)> {
    let value = response.headers.get("Session-Expires")?;
    let mut parts = value.split(';').map(str::trim);
    let seconds = parts.next()?.parse::<u64>().ok()?;
    parts
        .any(|p| p.eq_ignore_ascii_case("refresher=uas"))
        .then(|| (Duration::from_secs(seconds.max(MIN_SE_S)), false))
}
