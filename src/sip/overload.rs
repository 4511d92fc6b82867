//! SIP overload control: the intake between the transport and the control plane.
//!
//! Owns: the two queues SIP messages wait in — one for what belongs to work already accepted
//! (responses, in-dialog requests, ACK, CANCEL), served first; one for requests that would
//! start new work (an INVITE without a To tag, an out-of-dialog OPTIONS, ...) — and the
//! decision to refuse new work when the control plane falls behind: a stateless
//! `503 Service Unavailable` with `Retry-After`, built before any state exists (RFC 3261
//! §21.5.4; RFC 7339's "reject new work first").
//! Must not: parse beyond what the transport parsed, or keep per-call state.
//!
//! "Behind" is measured, not guessed: the control loop reports how long each SIP message
//! waited in its queue (its sojourn, receive to processing). Shedding starts when a message
//! waited longer than the target delay and stops when one waits under half of it, or when the
//! queues are empty. A full queue refuses too (503 for new work; what belongs to accepted
//! work is dropped and retransmitted by its sender, counted).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::message::{Method, Response, SipMessage};
use super::transport::{Inbound, Received};
use crate::idmap::IdMap;

/// Messages of accepted work that may wait; past it they are dropped (and retransmitted).
const DIALOG_QUEUE: usize = 16_384;
/// Requests for new work that may wait; past it they are refused with 503.
const NEW_WORK_QUEUE: usize = 4_096;
/// New-work requests remembered with what was decided for them, so that a retransmission gets
/// the same decision: a 503 to the retransmission of an INVITE the control plane is about to
/// answer, or an answer to the retransmission of one already refused, would leave a call
/// established with a caller who has given up on it.
const DECISIONS_REMEMBERED: usize = 65_536;
/// `Overload::above_since_us` when the last sojourn was not over the target.
const NOT_ABOVE: u64 = u64::MAX;

/// `[sip]`'s overload settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadSettings {
    /// When the SIP messages the control plane reads have waited longer than this for at least
    /// as long again (a standing queue, not a burst it is draining), shedding starts; None:
    /// never shed (only a full queue refuses).
    pub target_delay: Option<Duration>,
    /// The `Retry-After` of the 503s, seconds.
    pub retry_after_s: u32,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        OverloadSettings {
            target_delay: Some(Duration::from_millis(100)),
            retry_after_s: 2,
        }
    }
}

/// The state both sides share: the last sojourn, whether new work is refused, the counts.
#[derive(Debug)]
pub struct Overload {
    settings: OverloadSettings,
    shedding: AtomicBool,
    /// The last reported sojourn, µs.
    delay_us: AtomicU64,
    /// Since when every sojourn has been over the target, µs after `epoch`; `NOT_ABOVE` when
    /// the last one was not.
    above_since_us: AtomicU64,
    epoch: Instant,
    /// New-work requests answered 503 (a retransmission answered again counts again).
    pub refused: AtomicU64,
    /// Messages of accepted work dropped for a full queue.
    pub dropped: AtomicU64,
}

impl Overload {
    pub fn new(settings: OverloadSettings) -> Overload {
        Overload {
            settings,
            shedding: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            above_since_us: AtomicU64::new(NOT_ABOVE),
            epoch: Instant::now(),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The control loop read a message that waited `sojourn` at `now`; `drained`: both queues
    /// are empty now.
    ///
    /// CoDel's rule (RFC 8289), for requests instead of packets: one late message is a burst
    /// being drained — the control plane stalled for a moment (a page-cache flush, a busy
    /// neighbour) and catches up within milliseconds; shedding starts only when messages have
    /// waited over the target for as long as the target, which only a queue that does not
    /// drain does. Measured by the 10-minute soak at 70 % load with two fuzzers on the same
    /// cores: shedding on the first late message refused 73 of 120,000 calls after two such
    /// stalls (338 ms, 127 ms); with this rule none (docs/RELIABILITY.md, "Soak").
    pub fn observe(&self, sojourn: Duration, drained: bool, now: Instant) {
        let delay = if drained { Duration::ZERO } else { sojourn };
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        let Some(target) = self.settings.target_delay else {
            return;
        };
        if delay > target {
            let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
            let since = match self.above_since_us.load(Ordering::Relaxed) {
                NOT_ABOVE => {
                    self.above_since_us.store(now_us, Ordering::Relaxed);
                    now_us
                }
                since => since,
            };
            if now_us.saturating_sub(since) >= target.as_micros() as u64
                && !self.shedding.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    delay_ms = delay.as_millis() as u64,
                    "SIP overload: new requests are refused with 503 until the control plane catches up"
                );
            }
            return;
        }
        self.above_since_us.store(NOT_ABOVE, Ordering::Relaxed);
        if delay < target / 2 && self.shedding.swap(false, Ordering::Relaxed) {
            tracing::info!("SIP overload over: new requests are accepted again");
        }
    }

    /// Whether new work is being refused now.
    pub fn shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// The last reported queue delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }
}

/// The transport's side: where each message goes.
#[derive(Debug, Clone)]
pub struct SipIntake {
    dialog: mpsc::Sender<Inbound>,
    new_work: mpsc::Sender<Inbound>,
    overload: Arc<Overload>,
    /// The `Server` header of our 503s.
    server: Arc<str>,
    decisions: Arc<Mutex<Decisions>>,
    /// Keys [`Decisions`] by transaction, seeded once per process (a peer cannot aim two
    /// transactions at one key without the seed).
    key_hasher: foldhash::quality::RandomState,
}

/// The last [`DECISIONS_REMEMBERED`] new-work requests, by transaction: queued or refused.
#[derive(Debug, Default)]
struct Decisions {
    /// Keyed by seeded hashes, not by what a peer sent: the fast hasher of our own ids.
    queued: IdMap<u64, bool>,
    order: VecDeque<u64>,
}

impl Decisions {
    /// Whether the transaction was queued (Some(true)) or refused (Some(false)) before.
    fn get(&self, key: u64) -> Option<bool> {
        self.queued.get(&key).copied()
    }

    fn insert(&mut self, key: u64, queued: bool) {
        if self.queued.insert(key, queued).is_some() {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > DECISIONS_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.queued.remove(&old);
            }
        }
    }
}

/// The control plane's side: the two queues, accepted work first.
#[derive(Debug)]
pub struct IntakeQueues {
    pub dialog: mpsc::Receiver<Inbound>,
    pub new_work: mpsc::Receiver<Inbound>,
    pub overload: Arc<Overload>,
}

impl IntakeQueues {
    /// Reports how long `message` waited (now: `now`).
    pub fn observe(&self, message: &Inbound, now: Instant) {
        let drained = self.dialog.is_empty() && self.new_work.is_empty();
        self.overload
            .observe(now.saturating_duration_since(message.arrived), drained, now);
    }
}

/// What became of a message handed to the intake.
#[derive(Debug, PartialEq)]
pub enum Intake {
    /// Queued for the control plane.
    Queued,
    /// Refused: send these bytes (a 503) back where the request came from.
    Refused(Vec<u8>),
    /// Dropped: a full queue, or a request refused that gets no answer (an ACK).
    Dropped,
}

/// The intake's two ends.
pub fn intake(settings: OverloadSettings, server: &str) -> (SipIntake, IntakeQueues) {
    let (dialog_tx, dialog) = mpsc::channel(DIALOG_QUEUE);
    let (new_tx, new_work) = mpsc::channel(NEW_WORK_QUEUE);
    let overload = Arc::new(Overload::new(settings));
    (
        SipIntake {
            dialog: dialog_tx,
            new_work: new_tx,
            overload: overload.clone(),
            server: server.into(),
            decisions: Arc::default(),
            key_hasher: foldhash::quality::RandomState::default(),
        },
        IntakeQueues {
            dialog,
            new_work,
            overload,
        },
    )
}

impl SipIntake {
    /// Queues `inbound` for the control plane, or refuses it (new work while shedding or with
    /// its queue full). Never waits.
    pub fn offer(&self, inbound: Inbound) -> Intake {
        let Received::Message(message) = &inbound.received else {
            // A request that did not parse (answered 400 by the UA) or a stream's end (which
            // must follow that stream's requests): behind the new work, never refused.
            return match self.new_work.try_send(inbound) {
                Ok(()) => Intake::Queued,
                Err(_) => {
                    self.overload.dropped.fetch_add(1, Ordering::Relaxed);
                    Intake::Dropped
                }
            };
        };
        if !starts_new_work(message) {
            return match self.dialog.try_send(inbound) {
                Ok(()) => Intake::Queued,
                Err(_) => {
                    self.overload.dropped.fetch_add(1, Ordering::Relaxed);
                    Intake::Dropped
                }
            };
        }
        let key = transaction_key(&self.key_hasher, &inbound);
        let mut decisions = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A retransmission gets what its first transmission got; shedding refuses new work.
        let previous = decisions.get(key);
        let decided = match previous {
            Some(false) => self.refuse(&inbound.received),
            None if self.overload.shedding() => self.refuse(&inbound.received),
            Some(true) | None => match self.new_work.try_send(inbound) {
                Ok(()) => Intake::Queued,
                // A retransmission of queued work is dropped, never refused: the transaction
                // layer answers it.
                Err(_) if previous.is_some() => {
                    self.overload.dropped.fetch_add(1, Ordering::Relaxed);
                    Intake::Dropped
                }
                Err(mpsc::error::TrySendError::Full(inbound))
                | Err(mpsc::error::TrySendError::Closed(inbound)) => self.refuse(&inbound.received),
            },
        };
        decisions.insert(key, previous.unwrap_or(decided == Intake::Queued));
        decided
    }

    /// Queues `inbound`, waiting for room if it belongs to accepted work (a stream
    /// connection's back-pressure); new work is refused as by [`Self::offer`]. Err when the
    /// control plane is gone.
    pub async fn deliver(&self, inbound: Inbound) -> Result<Intake, ()> {
        match &inbound.received {
            Received::Message(message) if starts_new_work(message) => Ok(self.offer(inbound)),
            Received::Message(_) => {
                self.dialog.send(inbound).await.map_err(|_| ())?;
                Ok(Intake::Queued)
            }
            // Behind this stream's requests, waiting for room.
            Received::Unparsed(_) | Received::StreamEnd { .. } => {
                self.new_work.send(inbound).await.map_err(|_| ())?;
                Ok(Intake::Queued)
            }
        }
    }

    pub fn overload(&self) -> &Arc<Overload> {
        &self.overload
    }

    fn refuse(&self, received: &Received) -> Intake {
        let Received::Message(SipMessage::Request(request)) = received else {
            return Intake::Dropped;
        };
        self.overload.refused.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::for_request(request, 503, "Service Unavailable");
        // A stateless answer: the same To tag for every retransmission of the request.
        let branch = request
            .headers
            .top_via_ref()
            .ok()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let tag = format!("ovl{:08x}", fnv1a(branch.as_bytes()));
        if let Some(to) = response.headers.get("To").map(str::to_string) {
            response.headers.set("To", format!("{to};tag={tag}"));
        }
        response.headers.push("Server", self.server.as_ref());
        response.headers.push(
            "Retry-After",
            self.overload.settings.retry_after_s.to_string(),
        );
        Intake::Refused(response.to_bytes())
    }
}

/// Whether a message would start new work: a request outside any dialog and transaction we
/// know (no To tag), other than ACK and CANCEL (which belong to an INVITE transaction).
pub fn starts_new_work(message: &SipMessage) -> bool {
    let SipMessage::Request(request) = message else {
        return false;
    };
    if matches!(request.method, Method::Ack | Method::Cancel) {
        return false;
    }
    request.headers.to_tag().is_none()
}

/// A request's transaction as RFC 3261 §17.2.3 matches it (top Via branch and sent-by, the
/// method), with its source and Call-ID for requests from RFC 2543 peers without a branch,
/// hashed.
fn transaction_key(hasher: &impl BuildHasher, inbound: &Inbound) -> u64 {
    let mut hasher = hasher.build_hasher();
    if let Received::Message(SipMessage::Request(request)) = &inbound.received {
        request.method.as_str().hash(&mut hasher);
        request.headers.get("Via").hash(&mut hasher);
        request.headers.get("Call-ID").hash(&mut hasher);
        request.headers.get("CSeq").hash(&mut hasher);
    }
    inbound.source.addr.hash(&mut hasher);
    hasher.finish()
}

/// FNV-1a, 32 bits: a stable To tag from a branch.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;
    use crate::sip::transaction::{Peer, Transport};

    fn inbound(text: &str) -> Inbound {
        Inbound {
            received: Received::Message(parse(text.as_bytes()).expect("test message parses")),
            source: Peer {
                transport: Transport::Udp,
                addr: "192.0.2.1:5060".parse().unwrap(),
            },
            local: "192.0.2.2:5060".parse().unwrap(),
            arrived: Instant::now(),
        }
    }

    fn request(method: &str, to_tag: &str) -> Inbound {
        inbound(&format!(
            "{method} sip:echo@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-{method}\r\n\
             From: <sip:a@192.0.2.1>;tag=f\r\nTo: <sip:echo@192.0.2.2>{to_tag}\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    /// Puts `overload` in shedding: a second of queue delay, for a second.
    fn shed(overload: &Overload) {
        let t = Instant::now();
        overload.observe(Duration::from_secs(1), false, t);
        overload.observe(Duration::from_secs(1), false, t + Duration::from_secs(1));
        assert!(overload.shedding());
    }

    fn new_work(inbound: &Inbound) -> bool {
        matches!(&inbound.received, Received::Message(m) if starts_new_work(m))
    }

    #[test]
    fn new_work_is_what_has_no_dialog_yet_and_is_no_ack_or_cancel() {
        assert!(new_work(&request("INVITE", "")));
        assert!(new_work(&request("OPTIONS", "")));
        assert!(!new_work(&request("INVITE", ";tag=t")), "re-INVITE");
        assert!(!new_work(&request("BYE", ";tag=t")));
        assert!(!new_work(&request("ACK", "")));
        assert!(!new_work(&request("CANCEL", "")));
        let response = inbound(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!new_work(&response));
    }

    #[test]
    fn shedding_starts_when_messages_wait_past_the_target_for_as_long_and_stops_under_half_of_it_or_when_drained(
    ) {
        let overload = Overload::new(OverloadSettings::default());
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        overload.observe(Duration::from_millis(80), false, ms(0));
        assert!(!overload.shedding());
        // A stall: late messages, drained within the target's span.
        overload.observe(Duration::from_millis(340), false, ms(10));
        overload.observe(Duration::from_millis(200), false, ms(60));
        assert!(!overload.shedding(), "a burst being drained");
        overload.observe(Duration::from_millis(20), false, ms(90));
        overload.observe(Duration::from_millis(150), false, ms(200));
        assert!(!overload.shedding(), "the late span starts again");
        // A standing queue: over the target for 100 ms.
        overload.observe(Duration::from_millis(150), false, ms(300));
        assert!(overload.shedding());
        overload.observe(Duration::from_millis(60), false, ms(310));
        assert!(
            overload.shedding(),
            "hysteresis: 60 ms is not under half of 100"
        );
        overload.observe(Duration::from_millis(40), false, ms(320));
        assert!(!overload.shedding());
        overload.observe(Duration::from_millis(500), false, ms(400));
        overload.observe(Duration::from_millis(500), true, ms(600));
        assert!(!overload.shedding(), "empty queues are no overload");
        assert_eq!(overload.delay(), Duration::ZERO);
    }

    #[test]
    fn while_shedding_new_invites_get_a_stateless_503_and_dialogs_still_get_through() {
        let (intake, mut queues) = intake(OverloadSettings::default(), "callbridge");
        shed(&queues.overload);
        let Intake::Refused(bytes) = intake.offer(request("INVITE", "")) else {
            panic!("refused")
        };
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 2\r\n"), "{text}");
        assert!(text.contains("\r\nServer: callbridge\r\n"), "{text}");
        assert!(text.contains(";tag=ovl"), "{text}");
        // A retransmission gets the very same answer.
        assert_eq!(intake.offer(request("INVITE", "")), Intake::Refused(bytes));
        assert_eq!(intake.offer(request("BYE", ";tag=t")), Intake::Queued);
        assert_eq!(intake.offer(request("ACK", "")), Intake::Queued);
        assert!(
            queues.new_work.try_recv().is_err(),
            "nothing of the INVITE was queued"
        );
        let queued = queues.dialog.try_recv().unwrap().received;
        assert!(
            matches!(queued, Received::Message(SipMessage::Request(r)) if r.method == Method::Bye)
        );
        assert_eq!(queues.overload.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_retransmission_of_an_accepted_invite_is_never_refused() {
        let (intake, mut queues) = intake(OverloadSettings::default(), "callbridge");
        assert_eq!(intake.offer(request("INVITE", "")), Intake::Queued);
        shed(&queues.overload);
        // The same transaction again: to the queue, where the transaction layer absorbs it.
        assert_eq!(intake.offer(request("INVITE", "")), Intake::Queued);
        // Another INVITE is new work, refused.
        assert!(matches!(
            intake.offer(request("OPTIONS", "")),
            Intake::Refused(_)
        ));
        assert!(queues.new_work.try_recv().is_ok());
        assert!(queues.new_work.try_recv().is_ok());
        assert!(queues.new_work.try_recv().is_err());
    }

    #[test]
    fn a_retransmission_of_a_refused_invite_is_refused_again_after_the_overload() {
        let (intake, mut queues) = intake(OverloadSettings::default(), "callbridge");
        shed(&queues.overload);
        assert!(matches!(
            intake.offer(request("INVITE", "")),
            Intake::Refused(_)
        ));
        queues
            .overload
            .observe(Duration::ZERO, true, Instant::now());
        assert!(!queues.overload.shedding());
        // The caller already has its 503: the call it gave up on must not be answered now.
        assert!(matches!(
            intake.offer(request("INVITE", "")),
            Intake::Refused(_)
        ));
        assert_eq!(
            intake.offer(request("OPTIONS", "")),
            Intake::Queued,
            "new work again"
        );
        assert!(queues.new_work.try_recv().is_ok());
        assert!(queues.new_work.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_refuses_new_work_and_drops_nothing_silently() {
        let (intake, _queues) = intake(
            OverloadSettings {
                target_delay: None,
                retry_after_s: 5,
            },
            "callbridge",
        );
        let options = |n: usize| {
            inbound(&format!(
                "OPTIONS sip:echo@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-{n}\r\n\
                 From: <sip:a@192.0.2.1>;tag=f\r\nTo: <sip:echo@192.0.2.2>\r\nCall-ID: c{n}\r\n\
                 CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ))
        };
        for n in 0..NEW_WORK_QUEUE {
            assert_eq!(intake.offer(options(n)), Intake::Queued);
        }
        assert!(matches!(
            intake.offer(options(NEW_WORK_QUEUE)),
            Intake::Refused(_)
        ));
        assert_eq!(intake.overload().refused.load(Ordering::Relaxed), 1);
        // A retransmission of queued work is dropped (its transaction answers it), not refused.
        assert_eq!(intake.offer(options(0)), Intake::Dropped);
        assert_eq!(intake.overload().refused.load(Ordering::Relaxed), 1);
        assert_eq!(intake.overload().dropped.load(Ordering::Relaxed), 1);
    }
}
