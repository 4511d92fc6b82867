//! One deadline per call, in deadline order: the user agent's answer (ring time), session
//! (RFC 4028) and PRACK (RFC 3262) timers.
//!
//! Owns: the ordered deadlines and each call's current one, so that re-arming a call's timer
//! or ending the call finds its entry in O(log n): with every call of a trunk carrying a
//! session timer, a scan of all of them on each answer and hang-up grew with the calls up.
//! Must not: know what a timer does; the user agent acts on what `pop_due` gives.

use std::collections::BTreeSet;
use std::time::Instant;

use super::CallId;

#[derive(Debug, Default)]
pub(super) struct CallTimers {
    /// (deadline, call), earliest first.
    order: BTreeSet<(Instant, CallId)>,
    /// Each armed call's deadline: its key in `order`.
    due: crate::idmap::IdMap<CallId, Instant>,
}

impl CallTimers {
    /// Arms (or re-arms) `call`'s timer for `at`.
    pub(super) fn arm(&mut self, call: CallId, at: Instant) {
        if let Some(old) = self.due.insert(call, at) {
            self.order.remove(&(old, call));
        }
        self.order.insert((at, call));
    }

    /// Disarms `call`'s timer, if armed.
    pub(super) fn disarm(&mut self, call: CallId) {
        if let Some(at) = self.due.remove(&call) {
            self.order.remove(&(at, call));
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// The call whose deadline has come by `now` (earliest first), disarmed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<CallId> {
        let &(at, call) = self.order.first()?;
        if at > now {
            return None;
        }
        self.order.pop_first();
        self.due.remove(&call);
        Some(call)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.order.len(), self.due.len());
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_deadline_per_call_popped_in_order_and_rearmed_in_place() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut timers = CallTimers::default();
        timers.arm(1, at(300));
        timers.arm(2, at(100));
        timers.arm(3, at(200));
        // Re-arming moves the call's one deadline; it is not added a second time.
        timers.arm(1, at(50));
        assert_eq!(timers.len(), 3);
        assert_eq!(timers.next(), Some(at(50)));
        timers.disarm(3);
        timers.disarm(3);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.pop_due(at(10)), None);
        assert_eq!(timers.pop_due(at(150)), Some(1));
        assert_eq!(timers.pop_due(at(150)), Some(2));
        assert_eq!(timers.pop_due(at(1000)), None);
        assert_eq!((timers.len(), timers.next()), (0, None));
    }
}
