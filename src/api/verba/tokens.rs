//! The session tokens `RequestToken` hands out: [`TokenRegistry`], in memory.
//!
//! Owns: issuing (random, UUID-shaped), checking (a token is good only with the API key that
//! asked for it, for exactly [`TOKEN_LIFETIME`] from its issue), purging expired tokens, and
//! the bound on how many are held (the oldest goes first).
//! Must not: read a clock (every method takes `now`), check passwords or API keys (the handler
//! does before [`TokenRegistry::issue`]), or persist anything: tokens die with the process,
//! and clients ask again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;

use super::codes::VerbaError;

/// How long a token is good for (Verba: "Each security token's lifetime is 1 hour").
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How many tokens [`TokenRegistry::default`] holds before it evicts the oldest.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The tokens issued and still good, each bound to its API key and user.
#[derive(Debug)]
pub struct TokenRegistry {
    /// Token → who holds it.
    tokens: HashMap<String, Grant>,
    /// Tokens in issue order, oldest first, for purging and eviction; always the same set as
    /// `tokens`.
    order: VecDeque<String>,
    /// The most tokens held at once.
    capacity: usize,
}

/// What a token stands for.
#[derive(Debug)]
struct Grant {
    /// The API key that asked for the token; it is good with this key only.
    api_key: String,
    /// The authenticated user.
    user: String,
    issued: Instant,
}

impl Default for TokenRegistry {
    fn default() -> TokenRegistry {
        TokenRegistry::new(DEFAULT_CAPACITY)
    }
}

impl TokenRegistry {
    /// An empty registry holding at most `capacity` tokens (at least 1).
    pub fn new(capacity: usize) -> TokenRegistry {
        TokenRegistry {
            tokens: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// A new token for `user`, good with `api_key` until `now` + [`TOKEN_LIFETIME`]. Expired
    /// tokens are purged first; if the registry is still full, the oldest token is evicted.
    pub fn issue(&mut self, api_key: &str, user: &str, now: Instant) -> String {
        self.purge(now);
        while self.tokens.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.tokens.remove(&oldest);
        }
        let token = loop {
            let candidate = random_token();
            // 122 random bits: a repeat is practically impossible, but costs nothing to rule out.
            if !self.tokens.contains_key(&candidate) {
                break candidate;
            }
        };
        self.tokens.insert(
            token.clone(),
            Grant {
                api_key: api_key.to_string(),
                user: user.to_string(),
                issued: now,
            },
        );
        self.order.push_back(token.clone());
        token
    }

    /// The user a request's `token` stands for, if it was issued to `api_key` and is younger
    /// than [`TOKEN_LIFETIME`] at `now`; otherwise -11 (required, invalid or expired).
    pub fn check(
        &mut self,
        api_key: &str,
        token: Option<&str>,
        now: Instant,
    ) -> Result<String, VerbaError> {
        let Some(token) = token else {
            return Err(VerbaError::token_required());
        };
        let Some(grant) = self.tokens.get(token) else {
            self.purge(now);
            return Err(VerbaError::invalid_token());
        };
        if expired(grant, now) {
            // Removed by name: behind a younger token (a `now` that went backwards) it is not
            // at the front the purge looks at.
            self.remove(token);
            self.purge(now);
            return Err(VerbaError::expired_token());
        }
        let verdict = if grant.api_key == api_key {
            Ok(grant.user.clone())
        } else {
            Err(VerbaError::invalid_token())
        };
        self.purge(now);
        verdict
    }

    /// How many tokens are held (expired ones until the next purge).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Drops the expired tokens at the front of the issue order.
    fn purge(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let gone = self.tokens.get(oldest).is_none_or(|g| expired(g, now));
            if !gone {
                break;
            }
            if let Some(oldest) = self.order.pop_front() {
                self.tokens.remove(&oldest);
            }
        }
    }

    fn remove(&mut self, token: &str) {
        self.tokens.remove(token);
        self.order.retain(|t| t != token);
    }
}

/// Good for less than [`TOKEN_LIFETIME`]: valid at 59:59.999, expired at 60:00.
fn expired(grant: &Grant, now: Instant) -> bool {
    now.saturating_duration_since(grant.issued) >= TOKEN_LIFETIME
}

/// 122 random bits from the thread's CSPRNG, written as a version-4 UUID
/// (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`), the shape Verba's tokens have.
fn random_token() -> String {
    const VERSION: u128 = 0xF << 76;
    const VERSION_4: u128 = 0x4 << 76;
    const VARIANT: u128 = 0x3 << 62;
    const VARIANT_RFC_4122: u128 = 0x2 << 62;
    let bits: u128 = rand::rng().random();
    let bits = (bits & !VERSION & !VARIANT) | VERSION_4 | VARIANT_RFC_4122;
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::verba::codes::INVALID_TOKEN;

    #[test]
    fn a_token_lives_exactly_one_hour() {
        let mut registry = TokenRegistry::default();
        let t0 = Instant::now();
        let token = registry.issue("key-1", "ops", t0);
        let at =
            |secs: u64, millis: u64| t0 + Duration::from_secs(secs) + Duration::from_millis(millis);
        assert_eq!(registry.check("key-1", Some(&token), t0), Ok("ops".into()));
        assert_eq!(
            registry.check("key-1", Some(&token), at(59 * 60 + 59, 0)),
            Ok("ops".into())
        );
        assert_eq!(
            registry.check("key-1", Some(&token), at(59 * 60 + 59, 999)),
            Ok("ops".into())
        );
        let expired = registry.check("key-1", Some(&token), at(60 * 60, 0));
        assert_eq!(expired, Err(VerbaError::expired_token()));
        assert_eq!(VerbaError::expired_token().code, INVALID_TOKEN);
        assert!(registry.is_empty(), "the expired token was purged");
        // Gone for good, also if an earlier `now` comes along.
        let again = registry.check("key-1", Some(&token), at(10, 0));
        assert_eq!(again, Err(VerbaError::invalid_token()));
    }

    #[test]
    fn expiry_reads_as_expired_when_time_went_backwards() {
        let mut registry = TokenRegistry::default();
        let t0 = Instant::now();
        let later = registry.issue("k", "u", t0 + Duration::from_secs(10));
        let first = registry.issue("k", "u", t0);
        // `later` sits at the front and is not expired, so the purge stops there.
        let at = t0 + Duration::from_secs(3600);
        assert_eq!(
            registry.check("k", Some(&first), at),
            Err(VerbaError::expired_token())
        );
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.check("k", Some(&later), at), Ok("u".into()));
    }

    #[test]
    fn a_token_is_bound_to_its_api_key() {
        let mut registry = TokenRegistry::default();
        let now = Instant::now();
        let token = registry.issue("key-1", "ops", now);
        assert_eq!(
            registry.check("key-2", Some(&token), now),
            Err(VerbaError::invalid_token())
        );
        // Trying it with another key does not spend it.
        assert_eq!(registry.check("key-1", Some(&token), now), Ok("ops".into()));
    }

    #[test]
    fn missing_and_unknown_tokens() {
        let mut registry = TokenRegistry::default();
        let now = Instant::now();
        assert_eq!(
            registry.check("k", None, now),
            Err(VerbaError::token_required())
        );
        assert_eq!(
            registry.check("k", Some("09835e02-6c10-11e0-bb22-ba324924019b"), now),
            Err(VerbaError::invalid_token())
        );
    }

    #[test]
    fn the_oldest_token_is_evicted_when_full() {
        let mut registry = TokenRegistry::new(3);
        let t0 = Instant::now();
        let tokens: Vec<String> = (0..4)
            .map(|i| registry.issue("k", &format!("user{i}"), t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(registry.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(
            registry.check("k", Some(&tokens[0]), now),
            Err(VerbaError::invalid_token())
        );
        for (i, token) in tokens.iter().enumerate().skip(1) {
            assert_eq!(
                registry.check("k", Some(token), now),
                Ok(format!("user{i}"))
            );
        }
    }

    #[test]
    fn expired_tokens_make_room_before_eviction() {
        let mut registry = TokenRegistry::new(2);
        let t0 = Instant::now();
        registry.issue("k", "old", t0);
        let kept = registry.issue("k", "kept", t0 + Duration::from_secs(1800));
        let new = registry.issue("k", "new", t0 + Duration::from_secs(3600));
        assert_eq!(registry.len(), 2);
        let now = t0 + Duration::from_secs(3600);
        assert_eq!(registry.check("k", Some(&kept), now), Ok("kept".into()));
        assert_eq!(registry.check("k", Some(&new), now), Ok("new".into()));
    }

    #[test]
    fn tokens_are_uuid_shaped_and_distinct() {
        let mut registry = TokenRegistry::default();
        let now = Instant::now();
        let a = registry.issue("k", "u", now);
        let b = registry.issue("k", "u", now);
        assert_ne!(a, b);
        for token in [a, b] {
            let groups: Vec<usize> = token.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{token}");
            assert!(token.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert_eq!(&token[14..15], "4", "version 4: {token}");
            assert!("89ab".contains(&token[19..20]), "RFC 4122 variant: {token}");
        }
    }
}
