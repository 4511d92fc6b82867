//! The transaction timers (RFC 3261 §17, RFC 6026's L and M): their base values and each
//! transaction's table of the ones its kind arms.
//!
//! Owns: nothing but definitions; the transactions in `super` arm and fire them.

use std::time::{Duration, Instant};

/// The RFC 3261 §17 timers (plus L and M from RFC 6026). Each transaction has a table with a
/// slot for each timer its kind can arm ([`TimerTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Client INVITE request retransmission (unreliable only).
    A,
    /// Client INVITE transaction timeout.
    B,
    /// Client INVITE: wait for final response retransmissions after a non-2xx.
    D,
    /// Client non-INVITE request retransmission (unreliable only).
    E,
    /// Client non-INVITE transaction timeout.
    F,
    /// Server INVITE final response retransmission (non-2xx in Completed, 2xx in Accepted).
    G,
    /// Server INVITE: wait for the ACK of a non-2xx.
    H,
    /// Server INVITE: absorb ACK retransmissions in Confirmed.
    I,
    /// Server non-INVITE: absorb request retransmissions in Completed.
    J,
    /// Client non-INVITE: absorb response retransmissions in Completed.
    K,
    /// Server INVITE (RFC 6026): stay in Accepted, absorbing INVITE retransmissions.
    L,
    /// Client INVITE (RFC 6026): stay in Accepted, passing 2xx retransmissions to the TU.
    M,
}

impl Timer {
    /// The timers of each kind of transaction by their slot in its [`TimerTable`]
    /// (indexed by [`Kind::index`]).
    pub(super) const BY_SLOT: [[Option<Timer>; TimerTable::SLOTS]; 4] = [
        [
            Some(Timer::A),
            Some(Timer::B),
            Some(Timer::D),
            Some(Timer::M),
        ],
        [Some(Timer::E), Some(Timer::F), Some(Timer::K), None],
        [
            Some(Timer::G),
            Some(Timer::H),
            Some(Timer::I),
            Some(Timer::L),
        ],
        [Some(Timer::J), None, None, None],
    ];

    /// Its slot in the [`TimerTable`] of a transaction of its kind: no two timers of one
    /// kind share one (`Timer::BY_SLOT`).
    pub(super) fn slot(self) -> usize {
        match self {
            Timer::A | Timer::E | Timer::G | Timer::J => 0,
            Timer::B | Timer::F | Timer::H => 1,
            Timer::D | Timer::K | Timer::I => 2,
            Timer::M | Timer::L => 3,
        }
    }
}

/// A transaction's kind, by which its timers share the slots of its [`TimerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

impl Kind {
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// RFC 3261 §17.1.1.1 / Table 4 base timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValues {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s by default.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s by default.
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerValues {
    /// 64*T1: the transaction timeout (Timers B, F, H, J and RFC 6026's L, M).
    pub(super) fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// One slot per timer a transaction of its kind can arm, like quinn's `TimerTable`: four,
/// not one for each of the twelve timers, since no kind has more (`Timer::BY_SLOT`). A
/// transaction outlives its call by Timer J or L (32 s): at 4,000 calls a second a quarter
/// of a million of them wait, and the eight slots no kind uses were 128 bytes of each.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    /// Deadline of each armed timer, indexed by `Timer::slot`.
    pub(super) slots: [Option<Instant>; TimerTable::SLOTS],
}

impl TimerTable {
    /// Timers of one kind of transaction at most.
    pub(super) const SLOTS: usize = 4;
}
