//! The control core's deadlines: one table, a reason per entry.
//!
//! Owns: when each of the core's timers is due — a reservation's expiry, a connection's
//! media-operation timeout, an offered call's decision deadline, a placed call's ring
//! deadline, a release waiting for its final statistics, the hourly recording sweep. Setting a
//! timer replaces its earlier deadline; the next deadline is the first of an ordered set, so
//! no list is rescanned on every turn.
//! Must not: read the clock or act on a timer; the core asks for the due ones and acts.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::sip::ua::CallId;

/// Why the core wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A ReserveConnection not completed by CreateConnection in time.
    Reservation(u32),
    /// The earliest timer of a connection's media operations (MaxTime, inter-digit, ...).
    Operations(u32),
    /// An `application` call the application has not decided on.
    Offer(CallId),
    /// A call we placed that has rung too long (Ringout).
    Placed(CallId),
    /// A released connection whose final statistics have not come from its worker.
    ReleaseStats(u32),
    /// Look for expired recordings.
    Sweep,
    /// Close the media sockets that ended connections left bound longer than their time.
    IdleSockets,
    /// An agent conference's warning (`AgentConf_Timeout`) or end.
    AgentConf(u64),
}

/// Every armed timer, by deadline.
#[derive(Debug, Default)]
pub struct TimerTable {
    by_deadline: BTreeSet<(Instant, Timer)>,
    deadline_of: crate::idmap::IdMap<Timer, Instant>,
}

impl TimerTable {
    /// Arms `timer` at `at`, replacing its earlier deadline.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(old) = self.deadline_of.insert(timer, at) {
            self.by_deadline.remove(&(old, timer));
        }
        self.by_deadline.insert((at, timer));
    }

    /// Arms `timer` at `at` unless it is armed already (its deadline stays).
    pub fn set_unless_armed(&mut self, timer: Timer, at: Instant) {
        if !self.deadline_of.contains_key(&timer) {
            self.set(timer, at);
        }
    }

    /// Arms `timer` at `at`, or disarms it when `at` is None.
    pub fn set_or_cancel(&mut self, timer: Timer, at: Option<Instant>) {
        match at {
            Some(at) => self.set(timer, at),
            None => self.cancel(timer),
        }
    }

    /// Disarms `timer` (no-op when it is not armed).
    pub fn cancel(&mut self, timer: Timer) {
        if let Some(at) = self.deadline_of.remove(&timer) {
            self.by_deadline.remove(&(at, timer));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Takes the next timer due at `now`, disarming it; call until None.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &(at, timer) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.remove(&(at, timer));
        self.deadline_of.remove(&timer);
        Some(timer)
    }

    /// The armed timers, earliest first (for leak checks and diagnostics).
    pub fn armed(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        self.by_deadline.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_come_due_in_deadline_order_and_a_reset_replaces_the_deadline() {
        let t0 = crate::control::shell::virtual_epoch();
        let s = Duration::from_secs(1);
        let mut table = TimerTable::default();
        table.set(Timer::Sweep, t0 + 10 * s);
        table.set(Timer::Reservation(4), t0 + 3 * s);
        table.set(Timer::Offer(9), t0 + 5 * s);
        table.set(Timer::Reservation(4), t0 + 7 * s);
        assert_eq!(table.armed().count(), 3);
        assert_eq!(table.next(), Some(t0 + 5 * s));
        assert_eq!(table.pop_due(t0 + 4 * s), None);
        assert_eq!(table.pop_due(t0 + 8 * s), Some(Timer::Offer(9)));
        assert_eq!(table.pop_due(t0 + 8 * s), Some(Timer::Reservation(4)));
        assert_eq!(table.pop_due(t0 + 8 * s), None);
        table.set_unless_armed(Timer::Sweep, t0 + 20 * s);
        assert_eq!(table.next(), Some(t0 + 10 * s), "armed: the deadline stays");
        table.cancel(Timer::Sweep);
        table.set_unless_armed(Timer::IdleSockets, t0 + 2 * s);
        assert_eq!(table.pop_due(t0 + 2 * s), Some(Timer::IdleSockets));
        table.set_or_cancel(Timer::Operations(2), None);
        assert_eq!(table.next(), None);
        assert_eq!(table.armed().count(), 0);
    }
}
