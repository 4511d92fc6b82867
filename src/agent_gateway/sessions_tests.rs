//! `sessions` in virtual time: sign-in and its conflicts, static and dynamic Guids, the poll
//! heartbeat, and the bounded queues. Time is `t0 + ms`; Guids come from a seeded generator.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::address::{AgentId, PhoneNumber};
use super::events::AgentEvent;
use super::retcode::{GatewayError, Retcode};
use super::sessions::*;

/// Virtual time: a fixed origin and milliseconds after it.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Clock(Instant::now())
    }

    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

const SECOND: u64 = 1000;

fn settings(auth_mode: AuthMode) -> SessionSettings {
    SessionSettings {
        auth_mode,
        guid_interval: Duration::from_secs(60),
        guid_timeout: Duration::from_secs(120),
        poll_timeout: Duration::from_secs(120),
        queue_capacity: 8,
    }
}

fn gateway(settings: SessionSettings) -> AgentSessions {
    AgentSessions::new(settings, StdRng::seed_from_u64(18)).expect("valid test settings")
}

fn agent(id: &str) -> AgentId {
    AgentId::parse(id).expect("a test agent id")
}

fn phone(number: &str) -> PhoneNumber {
    PhoneNumber::parse(number).expect("a test phone number")
}

/// Signs `id` in on phone 6001 at `now` and returns its Guid.
fn sign_in(gateway: &mut AgentSessions, id: &str, now: Instant) -> Guid {
    gateway
        .sign_in(agent(id), phone("6001"), false, now)
        .expect("the agent is not signed in yet")
        .guid
}

fn retcode(error: SessionError) -> Retcode {
    GatewayError::from(error).retcode
}

#[test]
fn guids_look_like_the_vendors() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let guid = sign_in(&mut g, "101", clock.at(0));
    let text = guid.as_str();
    let (hex, suffix) = text.split_at(36);
    assert_eq!(suffix, ".AgentGateway1");
    let groups: Vec<usize> = hex.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12]);
    assert!(hex
        .chars()
        .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(guid.set_guid_header(), format!("JSESSIONID={text}"));
    assert_eq!(guid.to_string(), text);
    assert!(
        !format!("{guid:?}").contains(&text[9..]),
        "Debug hides the Guid"
    );
    let other = sign_in(&mut g, "102", clock.at(0));
    assert_ne!(guid, other);
}

#[test]
fn a_second_sign_in_needs_force() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let guid = sign_in(&mut g, "101", clock.at(0));
    let error = g
        .sign_in(agent("101"), phone("6002"), false, clock.at(SECOND))
        .expect_err("already signed in");
    assert_eq!(
        error,
        SessionError::AlreadySignedIn {
            agent: agent("101")
        }
    );
    let wire = GatewayError::from(error);
    assert_eq!(wire.retcode, Retcode::AlreadySignedIn);
    assert_eq!(
        wire.message,
        "agent 101 is already signed in; use forcelogin to replace that session"
    );
    // The first session is untouched.
    let session = g
        .authenticate(agent("101"), guid.as_str(), clock.at(SECOND))
        .expect("valid");
    assert_eq!(session.phone(), &phone("6001"));
}

#[test]
fn forced_sign_in_replaces_the_session_and_drops_its_queue() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let old = g
        .sign_in(a, phone("6001"), true, clock.at(0))
        .expect("force when signed out");
    assert!(old.replaced.is_none());
    g.push_event(a, AgentEvent::ready(a, 1));
    g.push_event(a, AgentEvent::busy(a, 2));

    let new = g
        .sign_in(a, phone("6002"), true, clock.at(SECOND))
        .expect("forced");
    let replaced = new.replaced.expect("the old session comes back");
    assert_eq!(replaced.session, old.session);
    assert_eq!(replaced.reason, SignOutReason::Replaced);
    assert_eq!(replaced.phone, phone("6001"));
    assert_eq!(replaced.undelivered_events, 2);
    assert_ne!(new.session, old.session);

    let error = g
        .authenticate(a, old.guid.as_str(), clock.at(SECOND))
        .expect_err("old Guid");
    assert_eq!(retcode(error), Retcode::NotSignedIn);
    assert_eq!(
        g.take_event(a, old.session),
        Err(SessionError::NotSignedIn { agent: a })
    );
    let polled = g
        .poll(a, new.guid.as_str(), clock.at(SECOND))
        .expect("new Guid");
    assert!(
        polled.event.is_none(),
        "the new session starts with an empty queue"
    );
    assert_eq!(g.session(a).map(|s| s.phone().clone()), Some(phone("6002")));
    assert_eq!(g.len(), 1);
}

#[test]
fn sign_out_needs_the_guid() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let guid = sign_in(&mut g, "101", clock.at(0));
    let error = g
        .sign_out(a, "not-the-guid", clock.at(SECOND))
        .expect_err("wrong Guid");
    assert_eq!(error, SessionError::WrongGuid { agent: a });
    assert_eq!(retcode(error), Retcode::NotSignedIn);
    assert!(g.session(a).is_some(), "a wrong Guid signs nobody out");

    let signed_out = g
        .sign_out(a, guid.as_str(), clock.at(SECOND))
        .expect("signed out");
    assert_eq!(signed_out.reason, SignOutReason::Requested);
    assert_eq!(signed_out.agent, a);
    assert!(g.is_empty());
    assert_eq!(g.poll_timeout(), None);
    let error = g
        .authenticate(a, guid.as_str(), clock.at(SECOND))
        .expect_err("gone");
    assert_eq!(
        GatewayError::from(error).message,
        "agent 101 is not signed in"
    );
    sign_in(&mut g, "101", clock.at(2 * SECOND));
}

#[test]
fn a_jsessionid_prefix_is_tolerated() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Static));
    let guid = sign_in(&mut g, "101", clock.at(0));
    let header = format!(" {} ", guid.set_guid_header());
    assert!(g.authenticate(agent("101"), &header, clock.at(1)).is_ok());
    let other = g.authenticate(agent("102"), guid.as_str(), clock.at(1));
    assert!(other.is_err(), "a Guid is only good for its own agent");
}

#[test]
fn static_guid_lasts_until_sign_out() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Static));
    let a = agent("101");
    let guid = sign_in(&mut g, "101", clock.at(0));
    // An hour of polls every ten seconds: never a Set-GUID, always the same Guid.
    for tick in 1..=360 {
        let outcome = g
            .poll(a, guid.as_str(), clock.at(tick * 10 * SECOND))
            .expect("static");
        assert!(outcome.set_guid.is_none());
    }
    let refreshed = g
        .update_guid(a, guid.as_str(), clock.at(3601 * SECOND))
        .expect("update");
    assert_eq!(refreshed, guid);
    g.sign_out(a, guid.as_str(), clock.at(3602 * SECOND))
        .expect("signed out");
}

#[test]
fn dynamic_guid_rotates_on_the_poll_and_the_old_one_lingers() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let first = sign_in(&mut g, "101", clock.at(0));

    let early = g
        .poll(a, first.as_str(), clock.at(60 * SECOND - 1))
        .expect("valid");
    assert!(early.set_guid.is_none(), "no rotation before guid_interval");
    let rotated = g
        .poll(a, first.as_str(), clock.at(60 * SECOND))
        .expect("valid");
    let second = rotated.set_guid.expect("rotated at guid_interval");
    assert_ne!(second, first);

    let polled = g
        .poll(a, second.as_str(), clock.at(110 * SECOND))
        .expect("new Guid");
    assert!(
        polled.set_guid.is_none(),
        "the new Guid is 50 s old: no rotation"
    );
    // The old Guid works until guid_timeout after its rotation, then it is 100-006.
    assert!(g
        .authenticate(a, first.as_str(), clock.at(180 * SECOND - 1))
        .is_ok());
    let error = g
        .authenticate(a, first.as_str(), clock.at(180 * SECOND))
        .expect_err("expired");
    assert_eq!(error, SessionError::GuidExpired { agent: a });
    assert_eq!(retcode(error), Retcode::NotSignedIn);
    assert!(g
        .authenticate(a, second.as_str(), clock.at(180 * SECOND - 1))
        .is_ok());
}

#[test]
fn a_poll_with_the_previous_guid_gets_the_current_one_again() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let first = sign_in(&mut g, "101", clock.at(0));
    let second = g
        .poll(a, first.as_str(), clock.at(60 * SECOND))
        .expect("valid")
        .set_guid
        .expect("rotated");
    // The answer carrying `second` was lost: the desktop polls with `first` again.
    let again = g
        .poll(a, first.as_str(), clock.at(61 * SECOND))
        .expect("still valid");
    assert_eq!(again.set_guid, Some(second.clone()));
    // The next rotation retires `second`; `first` is then no Guid of the session at all.
    let third = g
        .poll(a, second.as_str(), clock.at(121 * SECOND))
        .expect("valid")
        .set_guid
        .expect("rotated again");
    assert_ne!(third, second);
    let error = g
        .authenticate(a, first.as_str(), clock.at(122 * SECOND))
        .expect_err("gone");
    assert_eq!(error, SessionError::WrongGuid { agent: a });
    assert!(g
        .authenticate(a, second.as_str(), clock.at(122 * SECOND))
        .is_ok());
}

#[test]
fn an_unrefreshed_dynamic_guid_expires() {
    let clock = Clock::new();
    let mut long_heartbeat = settings(AuthMode::Dynamic);
    long_heartbeat.poll_timeout = Duration::from_secs(300);
    let mut g = gateway(long_heartbeat);
    let a = agent("101");
    let guid = sign_in(&mut g, "101", clock.at(0));
    assert!(g
        .authenticate(a, guid.as_str(), clock.at(120 * SECOND - 1))
        .is_ok());
    let error = g
        .poll(a, guid.as_str(), clock.at(120 * SECOND))
        .expect_err("not rotated");
    assert_eq!(error, SessionError::GuidExpired { agent: a });
}

#[test]
fn update_guid_rotates_at_once_in_dynamic_mode() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let first = sign_in(&mut g, "101", clock.at(0));
    let second = g
        .update_guid(a, first.as_str(), clock.at(5 * SECOND))
        .expect("refreshed");
    assert_ne!(second, first);
    assert!(g
        .authenticate(a, second.as_str(), clock.at(6 * SECOND))
        .is_ok());
    g.poll(a, second.as_str(), clock.at(60 * SECOND))
        .expect("heartbeat");
    // The presented Guid lives on for guid_timeout after the update, as after a rotation.
    assert!(g
        .authenticate(a, first.as_str(), clock.at(125 * SECOND - 1))
        .is_ok());
    assert!(g
        .authenticate(a, first.as_str(), clock.at(125 * SECOND))
        .is_err());
    let error = g
        .update_guid(a, "forged", clock.at(6 * SECOND))
        .expect_err("wrong Guid");
    assert_eq!(retcode(error), Retcode::NotSignedIn);
}

#[test]
fn the_interval_counts_from_the_last_update() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let first = sign_in(&mut g, "101", clock.at(0));
    let second = g
        .update_guid(a, first.as_str(), clock.at(5 * SECOND))
        .expect("refreshed");
    let outcome = g
        .poll(a, second.as_str(), clock.at(65 * SECOND - 1))
        .expect("valid");
    assert!(outcome.set_guid.is_none());
    let outcome = g
        .poll(a, second.as_str(), clock.at(65 * SECOND))
        .expect("valid");
    assert!(outcome.set_guid.is_some_and(|third| third != second));
}

#[test]
fn the_poll_is_the_heartbeat() {
    let clock = Clock::new();
    let mut short = settings(AuthMode::Static);
    short.poll_timeout = Duration::from_secs(30);
    let mut g = gateway(short);
    let (a, b) = (agent("101"), agent("102"));
    let guid_a = sign_in(&mut g, "101", clock.at(0));
    sign_in(&mut g, "102", clock.at(5 * SECOND));
    assert_eq!(g.poll_timeout(), Some(clock.at(30 * SECOND)));

    g.poll(a, guid_a.as_str(), clock.at(20 * SECOND))
        .expect("heartbeat");
    assert_eq!(
        g.poll_timeout(),
        Some(clock.at(35 * SECOND)),
        "now b is first due"
    );
    assert!(g.expire(clock.at(35 * SECOND - 1)).is_empty());
    let expired = g.expire(clock.at(35 * SECOND));
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].agent, expired[0].reason),
        (b, SignOutReason::PollTimeout)
    );
    assert_eq!(expired[0].phone, phone("6001"));
    assert_eq!(g.poll_timeout(), Some(clock.at(50 * SECOND)));

    // Overdue is refused even before the shell's timer runs expire().
    let error = g
        .poll(a, guid_a.as_str(), clock.at(50 * SECOND))
        .expect_err("overdue");
    assert_eq!(error, SessionError::NotSignedIn { agent: a });
    let expired = g.expire(clock.at(60 * SECOND));
    assert_eq!(expired.iter().map(|s| s.agent).collect::<Vec<_>>(), [a]);
    assert!(g.is_empty());
    assert_eq!(g.poll_timeout(), None);
}

#[test]
fn authenticate_and_update_guid_are_not_heartbeats() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Static));
    let a = agent("101");
    let guid = sign_in(&mut g, "101", clock.at(0));
    g.authenticate(a, guid.as_str(), clock.at(100 * SECOND))
        .expect("valid");
    g.update_guid(a, guid.as_str(), clock.at(110 * SECOND))
        .expect("valid");
    assert_eq!(g.expire(clock.at(120 * SECOND)).len(), 1);
}

#[test]
fn events_come_out_in_order_and_the_queue_is_bounded() {
    let clock = Clock::new();
    let mut small = settings(AuthMode::Static);
    small.queue_capacity = 3;
    let mut g = gateway(small);
    let a = agent("101");
    let guid = sign_in(&mut g, "101", clock.at(0));

    let deliveries: Vec<Delivery> = (1..=5)
        .map(|t| g.push_event(a, AgentEvent::ready(a, t)))
        .collect();
    assert_eq!(
        deliveries,
        [
            Delivery::Queued,
            Delivery::Queued,
            Delivery::Queued,
            Delivery::QueuedDroppingOldest,
            Delivery::QueuedDroppingOldest
        ]
    );
    assert_eq!(g.dropped_events(), 2);
    let session = g.session(a).expect("signed in");
    assert_eq!((session.queued_events(), session.dropped_events()), (3, 2));

    let mut times = Vec::new();
    for tick in 1..=4 {
        let outcome = g
            .poll(a, guid.as_str(), clock.at(tick * SECOND))
            .expect("valid");
        times.extend(outcome.event.map(|e| e.gen_time_ms));
    }
    assert_eq!(times, [3, 4, 5], "the two oldest were dropped");

    g.push_event(a, AgentEvent::busy(a, 6));
    let signed_out = g
        .sign_out(a, guid.as_str(), clock.at(5 * SECOND))
        .expect("signed out");
    assert_eq!(
        (signed_out.undelivered_events, signed_out.dropped_events),
        (1, 2)
    );
    assert_eq!(
        g.push_event(a, AgentEvent::busy(a, 7)),
        Delivery::NotSignedIn
    );
}

#[test]
fn a_waiting_long_poll_takes_events_of_its_session_only() {
    let clock = Clock::new();
    let mut g = gateway(settings(AuthMode::Dynamic));
    let a = agent("101");
    let guid = sign_in(&mut g, "101", clock.at(0));
    let outcome = g.poll(a, guid.as_str(), clock.at(SECOND)).expect("valid");
    assert!(outcome.event.is_none());
    assert_eq!(g.take_event(a, outcome.session), Ok(None));
    g.push_event(a, AgentEvent::conf_self_join(a, 9, 42));
    let event = g
        .take_event(a, outcome.session)
        .expect("same session")
        .expect("queued");
    assert_eq!(event.event_type, "AgentConf_SelfJoinResult");
    g.sign_out(a, guid.as_str(), clock.at(2 * SECOND))
        .expect("signed out");
    assert!(g.take_event(a, outcome.session).is_err());
}

#[test]
fn settings_are_checked() {
    let rng = || StdRng::seed_from_u64(1);
    let mut bad = settings(AuthMode::Dynamic);
    bad.guid_interval = bad.guid_timeout;
    let error = AgentSessions::new(bad, rng()).expect_err("interval not below timeout");
    assert_eq!(
        error.to_string(),
        "invalid agent gateway settings: guid_interval must be shorter than guid_timeout"
    );
    assert_eq!(error.retcode(), Retcode::Internal);
    let mut bad = settings(AuthMode::Static);
    bad.queue_capacity = 0;
    assert!(AgentSessions::new(bad, rng()).is_err());
    let mut bad = settings(AuthMode::Static);
    bad.poll_timeout = Duration::ZERO;
    assert!(AgentSessions::new(bad, rng()).is_err());
    let defaults = SessionSettings::default();
    assert_eq!(defaults.auth_mode, AuthMode::Dynamic);
    assert_eq!(
        (defaults.guid_interval, defaults.guid_timeout),
        (Duration::from_secs(60), Duration::from_secs(120))
    );
    assert!(AgentSessions::new(defaults, rng()).is_ok());
    assert_eq!(AuthMode::from_vendor(1), Some(AuthMode::Static));
    assert_eq!(AuthMode::from_vendor(2), Some(AuthMode::Dynamic));
    assert_eq!(AuthMode::from_vendor(3), None);
}
