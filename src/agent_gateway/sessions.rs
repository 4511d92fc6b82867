//! Who is signed in to the agent gateway, which Guid each agent may use, and what each agent's
//! event queue holds.
//!
//! Owns: sign-in, forced sign-in and sign-out; issuing Guids and, in dynamic mode, rotating them
//! on the event poll; the poll heartbeat with one ordered deadline per session; the bounded
//! per-agent event queues.
//! Must not: read the clock (every call takes `now`), check passwords (the store does, before
//! [`AgentSessions::sign_in`]), wait (the long poll's wait is the shell's), or touch calls and
//! conferences — a session that ends is *returned* as [`SignedOut`], and the caller releases
//! what the agent held (the conference logic: `changeReason` 4).
//!
//! Guids ([`AuthMode`]):
//! - Static (`AUTHMODE` 1): the sign-in Guid is valid until the session ends.
//! - Dynamic (`AUTHMODE` 2, the vendor default): the current Guid is valid for `guid_timeout`
//!   after it was issued. A poll made `guid_interval` or more after issue rotates it: the answer
//!   carries the new one for the `Set-GUID` header ([`PollOutcome::set_guid`]) and the old one
//!   stays valid for `guid_timeout` after the rotation, so requests already in flight pass. A
//!   poll made with that previous Guid gets the current one again, in case the answer that
//!   carried it was lost. `updateGuid` rotates at once. Anything else is `100-006`.
//!
//! The poll is the heartbeat: a session whose last poll is `poll_timeout` old is over. The
//! shell calls [`AgentSessions::expire`] at [`AgentSessions::poll_timeout`]; until then an
//! overdue session is already refused.
//!
//! A forced sign-in ends the old session like a sign-out: its Guids stop working at once (the
//! old desktop's next request gets `100-006`, which vendor desktops read as "signed out") and
//! its undelivered events are dropped — they describe the old desktop's view, and the new
//! desktop starts from a clean queue. The old session comes back in [`SignedIn::replaced`].
//!
//! A full queue drops its oldest event (counted per session and in total): an agent that stops
//! polling costs a bounded amount of memory until its heartbeat deadline signs it out.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;

use super::address::{AgentId, PhoneNumber};
use super::events::AgentEvent;
use super::retcode::{GatewayError, Retcode};

/// The gateway's sessions, Guids and event queues.
#[derive(Debug)]
pub struct AgentSessions {
    settings: SessionSettings,
    /// The signed-in agents.
    sessions: HashMap<AgentId, Session>,
    /// Every session's heartbeat deadline, first due first.
    deadlines: BTreeSet<(Instant, AgentId)>,
    /// The id the next session gets.
    next_session: u64,
    /// Source of Guids.
    rng: StdRng,
    /// Events dropped from full queues since start.
    dropped_events: u64,
}

impl AgentSessions {
    /// Empty sessions. `rng` makes the Guids: the shell seeds it from the OS
    /// (`StdRng::from_os_rng()`), tests with a fixed seed.
    pub fn new(settings: SessionSettings, rng: StdRng) -> Result<Self, SessionError> {
        settings.check()?;
        Ok(AgentSessions {
            settings,
            sessions: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_session: 1,
            rng,
            dropped_events: 0,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Signs `agent` in on `phone` (its password already checked) and issues its first Guid.
    ///
    /// When the agent is already signed in: `100-002`, unless `force` (`forcelogin`), which
    /// ends the old session and returns it in [`SignedIn::replaced`]. The sign-in counts as
    /// the first heartbeat.
    pub fn sign_in(
        &mut self,
        agent: AgentId,
        phone: PhoneNumber,
        force: bool,
        now: Instant,
    ) -> Result<SignedIn, SessionError> {
        if self.sessions.contains_key(&agent) && !force {
            return Err(SessionError::AlreadySignedIn { agent });
        }
        let replaced = self.end(agent, SignOutReason::Replaced);
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let guid = Guid::random(&mut self.rng);
        let deadline = now + self.settings.poll_timeout;
        self.deadlines.insert((deadline, agent));
        self.sessions.insert(
            agent,
            Session {
                agent,
                id,
                phone,
                signed_in_at: now,
                guid: guid.clone(),
                guid_issued_at: now,
                retired: None,
                last_poll: now,
                deadline,
                queue: VecDeque::new(),
                dropped_events: 0,
            },
        );
        Ok(SignedIn {
            guid,
            session: id,
            replaced,
        })
    }

    /// Signs `agent` out (`logout`), if `guid` is valid for it.
    pub fn sign_out(
        &mut self,
        agent: AgentId,
        guid: &str,
        now: Instant,
    ) -> Result<SignedOut, SessionError> {
        self.authenticate(agent, guid, now)?;
        let signed_out = self.end(agent, SignOutReason::Requested);
        Ok(signed_out.expect("authenticated above, so signed in"))
    }

    /// The session of `agent` if `guid` (the request's `Guid` header) is valid for it now;
    /// `100-006` otherwise. Not a heartbeat.
    pub fn authenticate(
        &self,
        agent: AgentId,
        guid: &str,
        now: Instant,
    ) -> Result<&Session, SessionError> {
        let session = self.live_session(agent, now)?;
        check_guid(&self.settings, session, guid, now)?;
        Ok(session)
    }

    /// The event poll (`GET .../agentevent/{agentid}`): authenticates, records the heartbeat,
    /// rotates the Guid when due (dynamic mode), and takes the oldest queued event.
    ///
    /// Without an event the shell waits (the long poll) and then calls
    /// [`AgentSessions::take_event`] with [`PollOutcome::session`]; `set_guid` must still go
    /// into that answer's `Set-GUID` header.
    pub fn poll(
        &mut self,
        agent: AgentId,
        guid: &str,
        now: Instant,
    ) -> Result<PollOutcome, SessionError> {
        let matched = {
            let session = self.live_session(agent, now)?;
            check_guid(&self.settings, session, guid, now)?
        };
        let poll_timeout = self.settings.poll_timeout;
        let session = self
            .sessions
            .get_mut(&agent)
            .expect("authenticated above, so signed in");
        self.deadlines.remove(&(session.deadline, agent));
        session.last_poll = now;
        session.deadline = now + poll_timeout;
        self.deadlines.insert((session.deadline, agent));

        let rotation_due = self.settings.auth_mode == AuthMode::Dynamic
            && now >= session.guid_issued_at + self.settings.guid_interval;
        if rotation_due {
            session.rotate(&mut self.rng, now);
        }
        let set_guid =
            (rotation_due || matched == GuidMatch::Previous).then(|| session.guid.clone());
        Ok(PollOutcome {
            set_guid,
            event: session.queue.pop_front(),
            session: session.id,
        })
    }

    /// The next queued event for a long poll waiting on `session` (from [`PollOutcome`]);
    /// `100-006` when that session has ended meanwhile (sign-out, forced sign-in, expiry).
    pub fn take_event(
        &mut self,
        agent: AgentId,
        session: SessionId,
    ) -> Result<Option<AgentEvent>, SessionError> {
        match self.sessions.get_mut(&agent) {
            Some(current) if current.id == session => Ok(current.queue.pop_front()),
            _ => Err(SessionError::NotSignedIn { agent }),
        }
    }

    /// `updateGuid`: in dynamic mode a new Guid at once (the presented one stays valid for
    /// `guid_timeout`, like after a rotation); in static mode the sign-in Guid unchanged.
    /// Not a heartbeat. The shell answers with `result.guid` and a `Set-GUID` header.
    pub fn update_guid(
        &mut self,
        agent: AgentId,
        guid: &str,
        now: Instant,
    ) -> Result<Guid, SessionError> {
        self.authenticate(agent, guid, now)?;
        let dynamic = self.settings.auth_mode == AuthMode::Dynamic;
        let session = self
            .sessions
            .get_mut(&agent)
            .expect("authenticated above, so signed in");
        if dynamic {
            session.rotate(&mut self.rng, now);
        }
        Ok(session.guid.clone())
    }

    /// Queues `event` for `agent`, dropping the oldest queued event when the queue is full.
    pub fn push_event(&mut self, agent: AgentId, event: AgentEvent) -> Delivery {
        debug_assert_eq!(
            event.work_no,
            agent.to_string(),
            "an event goes to its workNo"
        );
        let Some(session) = self.sessions.get_mut(&agent) else {
            return Delivery::NotSignedIn;
        };
        let full = session.queue.len() >= self.settings.queue_capacity;
        if full {
            session.queue.pop_front();
            session.dropped_events += 1;
            self.dropped_events += 1;
        }
        session.queue.push_back(event);
        if full {
            Delivery::QueuedDroppingOldest
        } else {
            Delivery::Queued
        }
    }

    /// Ends every session whose heartbeat deadline is at or before `now`, first due first.
    /// The caller releases each one's calls and conference membership.
    pub fn expire(&mut self, now: Instant) -> Vec<SignedOut> {
        let mut signed_out = Vec::new();
        while let Some(&(deadline, agent)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let ended = self.end(agent, SignOutReason::PollTimeout);
            signed_out.push(ended.expect("every deadline belongs to a session"));
        }
        signed_out
    }

    /// When [`AgentSessions::expire`] next has work: the first heartbeat deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// The session of `agent`, without authentication (for the conference logic: an invited
    /// agent's phone, whether it is signed in).
    pub fn session(&self, agent: AgentId) -> Option<&Session> {
        self.sessions.get(&agent)
    }

    /// Every session, in no particular order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// How many agents are signed in.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no agent is signed in.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Events dropped from full queues since start (a metric).
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// The session of `agent` unless it has none or its heartbeat deadline has passed.
    fn live_session(&self, agent: AgentId, now: Instant) -> Result<&Session, SessionError> {
        match self.sessions.get(&agent) {
            Some(session) if now < session.deadline => Ok(session),
            _ => Err(SessionError::NotSignedIn { agent }),
        }
    }

    /// Removes the session of `agent`, if any, with its deadline.
    fn end(&mut self, agent: AgentId, reason: SignOutReason) -> Option<SignedOut> {
        let session = self.sessions.remove(&agent)?;
        self.deadlines.remove(&(session.deadline, agent));
        Some(SignedOut {
            agent,
            session: session.id,
            phone: session.phone,
            reason,
            undelivered_events: session.queue.len(),
            dropped_events: session.dropped_events,
        })
    }
}

/// How Guids work (the vendor's `AUTHMODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `AUTHMODE` 1: one Guid per session.
    Static,
    /// `AUTHMODE` 2: Guids rotate on the poll.
    Dynamic,
}

impl AuthMode {
    /// The mode for the vendor's `AUTHMODE` value.
    pub fn from_vendor(authmode: u8) -> Option<Self> {
        match authmode {
            1 => Some(AuthMode::Static),
            2 => Some(AuthMode::Dynamic),
            _ => None,
        }
    }
}

/// The settings of [`AgentSessions`], built by `app` from `[agent_gateway]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Static or dynamic Guids.
    pub auth_mode: AuthMode,
    /// Dynamic mode: a poll this long after a Guid's issue rotates it (`GUIDINTERVAL`).
    pub guid_interval: Duration,
    /// Dynamic mode: how long a Guid stays valid after its issue if not rotated, and after its
    /// rotation (`GUIDTIMEOUT`). Longer than `guid_interval`.
    pub guid_timeout: Duration,
    /// A session whose last poll is this old is signed out. Well above the long poll's wait.
    pub poll_timeout: Duration,
    /// Most events queued per agent.
    pub queue_capacity: usize,
}

impl SessionSettings {
    /// Longest duration a setting may have (keeps deadline arithmetic far from overflow).
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

    /// Whether the settings make sense together.
    pub fn check(&self) -> Result<(), SessionError> {
        let invalid = |reason| Err(SessionError::InvalidSettings { reason });
        let durations = [self.guid_interval, self.guid_timeout, self.poll_timeout];
        if durations
            .iter()
            .any(|d| d.is_zero() || *d > Self::MAX_DURATION)
        {
            return invalid(
                "guid_interval, guid_timeout and poll_timeout must be from 1 ms to 24 h",
            );
        }
        if self.guid_interval >= self.guid_timeout {
            return invalid("guid_interval must be shorter than guid_timeout");
        }
        if self.queue_capacity == 0 {
            return invalid("queue_capacity must be at least 1");
        }
        Ok(())
    }
}

impl Default for SessionSettings {
    /// The vendor's defaults: dynamic Guids, 60 s rotation, 120 s expiry; a two-minute
    /// heartbeat (the vendor's push-mode figure); 128 queued events.
    fn default() -> Self {
        SessionSettings {
            auth_mode: AuthMode::Dynamic,
            guid_interval: Duration::from_secs(60),
            guid_timeout: Duration::from_secs(120),
            poll_timeout: Duration::from_secs(120),
            queue_capacity: 128,
        }
    }
}

/// A session's credential: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.AgentGateway1`, 128 random
/// bits in hex. `Debug` shows only its start; `Display` and [`Guid::as_str`] the whole.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Guid(String);

impl Guid {
    /// What follows the hex part, as on the vendor's gateway node 1.
    pub const SUFFIX: &'static str = ".AgentGateway1";

    fn random(rng: &mut StdRng) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Guid(format!(
            "{}-{}-{}-{}-{}{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32],
            Self::SUFFIX
        ))
    }

    /// The Guid, as requests send it in the `Guid` header and `updateGuid` in `result.guid`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Set-GUID` header's value: `JSESSIONID=<guid>` (desktops strip the prefix).
    pub fn set_guid_header(&self) -> String {
        format!("JSESSIONID={}", self.0)
    }

    /// Whether `presented` is this Guid, in time independent of where they differ.
    fn matches(&self, presented: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), presented.as_bytes());
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = self.0.get(..8).unwrap_or("");
        write!(f, "Guid({start}…)")
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One sign-in of one agent; a forced sign-in starts a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A signed-in agent.
#[derive(Debug)]
pub struct Session {
    agent: AgentId,
    id: SessionId,
    /// The phone given at sign-in.
    phone: PhoneNumber,
    signed_in_at: Instant,
    /// The Guid requests should send.
    guid: Guid,
    /// When `guid` was issued (sign-in, rotation, updateGuid).
    guid_issued_at: Instant,
    /// Dynamic mode: the Guid before `guid`, still valid for a while.
    retired: Option<RetiredGuid>,
    /// The last heartbeat (sign-in or poll).
    last_poll: Instant,
    /// `last_poll + poll_timeout`, as entered in the deadline set.
    deadline: Instant,
    /// Events not yet polled, oldest first.
    queue: VecDeque<AgentEvent>,
    /// Events dropped from this queue because it was full.
    dropped_events: u64,
}

impl Session {
    /// The agent.
    pub fn agent(&self) -> AgentId {
        self.agent
    }

    /// This sign-in.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The phone the agent signed in on.
    pub fn phone(&self) -> &PhoneNumber {
        &self.phone
    }

    /// When the agent signed in.
    pub fn signed_in_at(&self) -> Instant {
        self.signed_in_at
    }

    /// The last heartbeat.
    pub fn last_poll(&self) -> Instant {
        self.last_poll
    }

    /// Events waiting for a poll.
    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }

    /// Events dropped from this session's full queue.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Issues a new Guid; the current one stays valid for `guid_timeout` from now.
    fn rotate(&mut self, rng: &mut StdRng, now: Instant) {
        let old = std::mem::replace(&mut self.guid, Guid::random(rng));
        self.retired = Some(RetiredGuid {
            guid: old,
            retired_at: now,
        });
        self.guid_issued_at = now;
    }
}

/// A successful sign-in.
#[derive(Debug)]
pub struct SignedIn {
    /// The Guid for the `Set-GUID` header.
    pub guid: Guid,
    /// The new session.
    pub session: SessionId,
    /// A forced sign-in's ended session, for the caller to release what it held.
    pub replaced: Option<SignedOut>,
}

/// A session that ended; the caller releases the agent's calls and conference membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOut {
    /// The agent.
    pub agent: AgentId,
    /// The session that ended.
    pub session: SessionId,
    /// The phone it had signed in on.
    pub phone: PhoneNumber,
    /// Why it ended.
    pub reason: SignOutReason,
    /// Events still queued, now dropped.
    pub undelivered_events: usize,
    /// Events its full queue had dropped before.
    pub dropped_events: u64,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOutReason {
    /// `logout`.
    Requested,
    /// A forced sign-in replaced it.
    Replaced,
    /// Its polls stopped for `poll_timeout`.
    PollTimeout,
}

/// What a poll found.
#[derive(Debug)]
pub struct PollOutcome {
    /// A Guid for the answer's `Set-GUID` header: a rotation, or the current Guid again for a
    /// poll made with the previous one.
    pub set_guid: Option<Guid>,
    /// The oldest queued event; None → the shell's long poll waits.
    pub event: Option<AgentEvent>,
    /// The session polled, for [`AgentSessions::take_event`].
    pub session: SessionId,
}

/// What became of a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued; a waiting long poll can take it.
    Queued,
    /// Queued; the queue was full and lost its oldest event.
    QueuedDroppingOldest,
    /// The agent is not signed in; the event is gone.
    NotSignedIn,
}

/// Why a session operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// `100-002`: signed in already, and not forced.
    AlreadySignedIn {
        /// The agent.
        agent: AgentId,
    },
    /// `100-006`: no session, or its heartbeat deadline has passed.
    NotSignedIn {
        /// The agent.
        agent: AgentId,
    },
    /// `100-006`: the Guid is none of the session's.
    WrongGuid {
        /// The agent.
        agent: AgentId,
    },
    /// `100-006`: the Guid was the session's but has expired.
    GuidExpired {
        /// The agent.
        agent: AgentId,
    },
    /// `100-007` if it ever reached the wire: settings that do not fit together.
    InvalidSettings {
        /// What is wrong.
        reason: &'static str,
    },
}

impl SessionError {
    /// The wire code.
    pub fn retcode(&self) -> Retcode {
        match self {
            SessionError::AlreadySignedIn { .. } => Retcode::AlreadySignedIn,
            SessionError::NotSignedIn { .. }
            | SessionError::WrongGuid { .. }
            | SessionError::GuidExpired { .. } => Retcode::NotSignedIn,
            SessionError::InvalidSettings { .. } => Retcode::Internal,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::AlreadySignedIn { agent } => write!(
                f,
                "agent {agent} is already signed in; use forcelogin to replace that session"
            ),
            SessionError::NotSignedIn { agent } => write!(f, "agent {agent} is not signed in"),
            SessionError::WrongGuid { agent } => write!(
                f,
                "the Guid header is not valid for agent {agent}; send the Guid of the last \
                 Set-GUID header"
            ),
            SessionError::GuidExpired { agent } => write!(
                f,
                "the Guid of agent {agent} has expired; send the Guid of the last Set-GUID \
                 header"
            ),
            SessionError::InvalidSettings { reason } => {
                write!(f, "invalid agent gateway settings: {reason}")
            }
        }
    }
}

impl std::error::Error for SessionError {}

impl From<SessionError> for GatewayError {
    fn from(error: SessionError) -> Self {
        GatewayError::new(error.retcode(), error.to_string())
    }
}

/// A rotated-out Guid.
#[derive(Debug)]
struct RetiredGuid {
    guid: Guid,
    retired_at: Instant,
}

/// Which of a session's Guids a request sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuidMatch {
    Current,
    Previous,
}

/// Whether `presented` (a `Guid` header; a leading `JSESSIONID=` is tolerated) is valid for
/// `session` at `now`.
fn check_guid(
    settings: &SessionSettings,
    session: &Session,
    presented: &str,
    now: Instant,
) -> Result<GuidMatch, SessionError> {
    let presented = presented.trim();
    let presented = presented.strip_prefix("JSESSIONID=").unwrap_or(presented);
    let agent = session.agent;
    if session.guid.matches(presented) {
        let expired = settings.auth_mode == AuthMode::Dynamic
            && now >= session.guid_issued_at + settings.guid_timeout;
        if expired {
            return Err(SessionError::GuidExpired { agent });
        }
        return Ok(GuidMatch::Current);
    }
    match &session.retired {
        Some(retired) if retired.guid.matches(presented) => {
            if now >= retired.retired_at + settings.guid_timeout {
                return Err(SessionError::GuidExpired { agent });
            }
            Ok(GuidMatch::Previous)
        }
        _ => Err(SessionError::WrongGuid { agent }),
    }
}
