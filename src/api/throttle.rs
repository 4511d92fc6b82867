//! Throttling of failed credentials per source address: after `limit` failures within a
//! window, that address is answered 429 (with `Retry-After`) without its credentials being
//! looked at, until the window that holds them has passed.
//!
//! Owns: the failure counts (bearer tokens of the API, the recording API's keys and
//! passwords, the agent gateway's logins each keep their own throttle). Must not: read the
//! clock (callers pass `now`) or know what a credential is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Sources followed at most; past it, those whose window has passed are forgotten first.
const MAX_SOURCES: usize = 65_536;

/// Failed credentials per source address, in fixed windows.
#[derive(Debug)]
pub struct AuthThrottle {
    /// Failures allowed per window; 0 turns throttling off.
    limit: u32,
    window: Duration,
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl AuthThrottle {
    /// `limit` failures per `window` from one address (0: never throttled).
    pub fn new(limit: u32, window: Duration) -> AuthThrottle {
        AuthThrottle {
            limit,
            window,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` is throttled now: Some(how long until it may try again).
    pub fn refused(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = sources.get(&source)?;
        let ends = failures.since + self.window;
        (failures.count >= self.limit && now < ends).then(|| ends - now)
    }

    /// Notes a failed credential from `source`.
    pub fn failed(&self, source: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            let window = self.window;
            sources.retain(|_, f| now.saturating_duration_since(f.since) < window);
            if sources.len() >= MAX_SOURCES {
                // A flood from more addresses than we follow: the newest goes uncounted
                // rather than the table growing without bound.
                return;
            }
        }
        let failures = sources.entry(source).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.saturating_duration_since(failures.since) >= self.window {
            *failures = Failures {
                since: now,
                count: 0,
            };
        }
        failures.count = failures.count.saturating_add(1);
    }
}

/// Seconds for a `Retry-After` header: whole seconds, rounded up, at least one.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_its_limit_until_its_window_passes() {
        let throttle = AuthThrottle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        let (attacker, other): (IpAddr, IpAddr) =
            ("192.0.2.66".parse().unwrap(), "192.0.2.7".parse().unwrap());
        for i in 0..3 {
            assert_eq!(throttle.refused(attacker, start), None, "attempt {i}");
            throttle.failed(attacker, start + Duration::from_secs(i));
        }
        let wait = throttle.refused(attacker, start + Duration::from_secs(10));
        assert_eq!(wait, Some(Duration::from_secs(50)));
        assert_eq!(throttle.refused(other, start), None, "per address");
        assert_eq!(
            throttle.refused(attacker, start + Duration::from_secs(60)),
            None
        );
        // A new window starts from nothing.
        throttle.failed(attacker, start + Duration::from_secs(61));
        assert_eq!(
            throttle.refused(attacker, start + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn a_zero_limit_never_throttles() {
        let throttle = AuthThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        let source: IpAddr = "192.0.2.66".parse().unwrap();
        for _ in 0..100 {
            throttle.failed(source, now);
        }
        assert_eq!(throttle.refused(source, now), None);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(50)), 50);
        assert_eq!(retry_after_seconds(Duration::from_millis(50_001)), 51);
    }
}
