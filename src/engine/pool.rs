//! The RTP port pool: pairs of an even RTP port and the odd RTCP port above it, handed out FIFO,
//! and the bound sockets of pairs whose connection has just ended, kept for the next one.
//!
//! Owns: which pairs are free or allocated, the idle bound socket pairs, and the channel on which
//! workers give pairs back.
//! Must not: bind sockets or sit on the packet path. Only the control plane calls it, under the
//! engine's mutex; workers only send on the return channel, which never blocks.
//!
//! Released pairs go to the back of the queue so a port is not reused right away: late packets
//! from the previous call would otherwise land in the next one.
//!
//! Idle sockets: creating, tuning and binding two sockets, and closing them when the call ends,
//! is about a tenth of a call's setup (`socket()`'s inode and security hooks, the close's
//! release). So a worker gives back the sockets of a connection it has closed (deregistered, its
//! io_uring receives ended) and the pool keeps them bound, oldest first, while there is room
//! ([`IdleSockets`]: idle and in-use pairs together within three quarters of the process's file
//! limit; idle pairs give way to new connections). An idle pair is
//! handed out again once it has been idle for [`IDLE_MIN`] — the engine then reads away what
//! arrived on it since, and closes it instead if its old peer is still sending — and is closed
//! when it has been idle for [`IDLE_MAX`], so the descriptors of a burst go back within
//! seconds. A port is thus reused after half a second at the soonest while calls keep coming,
//! about when the FIFO would reuse it at a few thousand calls a second.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::socket::MediaSockets;
use super::EngineError;

/// How long a pair's sockets stay idle before another connection may have them: longer than
/// any late packet of the previous call takes to arrive.
pub(super) const IDLE_MIN: Duration = Duration::from_millis(500);

/// How long a pair's sockets stay bound, unused, before they are closed.
pub(super) const IDLE_MAX: Duration = Duration::from_secs(2);

/// Free and allocated RTP port pairs.
pub(super) struct PortPool {
    /// Free RTP ports (even) without sockets, next to hand out at the front.
    free: VecDeque<u16>,
    /// Free pairs whose sockets are still bound, the longest idle at the front.
    idle: VecDeque<IdlePair>,
    /// Whether each pair is allocated, indexed by `(rtp_port - first_port) / 2`.
    allocated: Vec<bool>,
    /// RTP port of the first pair.
    first_port: u16,
    /// Pairs that workers have closed, not yet put back in `free` or `idle`.
    returned: Receiver<Returned>,
    /// Cloned into every worker as a [`PortReturn`].
    return_sender: Sender<Returned>,
    /// How many idle pairs may be kept, shared with the workers.
    room: IdleSockets,
}

/// A free pair whose sockets stayed bound.
struct IdlePair {
    rtp_port: u16,
    sockets: MediaSockets,
    since: Instant,
}

/// A pair a worker gives back: its RTP port and, when there was room, its sockets.
struct Returned {
    rtp_port: u16,
    sockets: Option<(MediaSockets, Instant)>,
}

/// A pair handed out by [`PortPool::allocate`].
pub(super) enum Pair {
    /// A free port pair to bind.
    Unbound(u16),
    /// A pair with its sockets still bound from an earlier connection.
    Bound(u16, MediaSockets),
}

/// The count of idle socket pairs (kept or on their way back) and of pairs in use, against
/// one limit on both: a worker takes a place before it sends its sockets back, and closes them
/// itself when there is none; a new connection's unbound pair closes idle ones to stay within it
/// ([`PortPool::allocate`]). Idle sockets thus use only descriptors the calls do not need: at
/// a few thousand short calls a second, the half second of rest alone holds thousands of pairs.
#[derive(Clone)]
pub(super) struct IdleSockets {
    held: Arc<AtomicUsize>,
    /// Pairs allocated and not yet given back (by a worker, or released).
    in_use: Arc<AtomicUsize>,
    limit: usize,
}

impl IdleSockets {
    /// Room for `limit` pairs, idle and in use together (0: every pair's sockets are closed
    /// with its connection).
    pub(super) fn new(limit: usize) -> IdleSockets {
        IdleSockets {
            held: Arc::new(AtomicUsize::new(0)),
            in_use: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Three quarters of the soft limit on open files (two per pair): the rest stays for SIP,
    /// the API, recordings and the store.
    pub(super) fn from_file_limit() -> IdleSockets {
        let files =
            super::soft_file_limit().map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        IdleSockets::new(files / 8 * 3)
    }

    /// A place for one more idle pair, if the idle and in-use pairs leave one.
    fn take_place(&self) -> bool {
        let held = self.held.fetch_add(1, Ordering::AcqRel);
        if held + 1 + self.in_use.load(Ordering::Acquire) <= self.limit {
            true
        } else {
            self.leave_place();
            false
        }
    }

    fn leave_place(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    /// Idle and in-use pairs beyond the limit.
    fn excess(&self) -> usize {
        (self.held.load(Ordering::Acquire) + self.in_use.load(Ordering::Acquire))
            .saturating_sub(self.limit)
    }

    fn pair_taken(&self) {
        self.in_use.fetch_add(1, Ordering::AcqRel);
    }

    /// Saturating: a pair that was never counted (a test's own port) cannot wrap the count.
    fn pair_given_back(&self) {
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// A worker's way to give a pair back once its sockets are no longer watched.
#[derive(Clone)]
pub(super) struct PortReturn {
    sender: Sender<Returned>,
    room: IdleSockets,
}

impl PortReturn {
    /// Puts the pair of `rtp_port` back with its sockets, which stay bound when the pool has
    /// room for them and are closed here otherwise; the pool reclaims the pair on its next call.
    /// `reusable` is false when the sockets may still be in use by the kernel (a receive that
    /// did not end): they are closed.
    pub(super) fn give_back(&self, rtp_port: u16, sockets: MediaSockets, reusable: bool) {
        self.room.pair_given_back();
        let sockets = if reusable && self.room.take_place() {
            Some((sockets, Instant::now()))
        } else {
            drop(sockets);
            None
        };
        // Fails only when the engine (and so the pool) is gone, when nothing is left to return to.
        if let Err(mpsc::SendError(returned)) = self.sender.send(Returned { rtp_port, sockets }) {
            if returned.sockets.is_some() {
                self.room.leave_place();
            }
        }
    }
}

impl PortPool {
    /// The pairs from `min` (rounded up to even) whose RTCP port is at most `max`; at most
    /// `room`'s limit of them keep their sockets between connections.
    pub(super) fn new(min: u16, max: u16, room: IdleSockets) -> Result<PortPool, EngineError> {
        if min == 0 {
            return Err(EngineError::InvalidConfig(
                "rtp_port_min must not be 0".to_string(),
            ));
        }
        if min >= max {
            return Err(EngineError::InvalidConfig(format!(
                "rtp_port_min ({min}) must be below rtp_port_max ({max})"
            )));
        }
        let first = u32::from(min) + u32::from(min) % 2;
        let free: VecDeque<u16> = (first..u32::from(max))
            .step_by(2)
            .filter_map(|port| u16::try_from(port).ok())
            .collect();
        let Some(&first_port) = free.front() else {
            return Err(EngineError::InvalidConfig(format!(
                "port range {min}-{max} holds no even/odd RTP/RTCP pair"
            )));
        };
        let (return_sender, returned) = mpsc::channel();
        Ok(PortPool {
            allocated: vec![false; free.len()],
            free,
            idle: VecDeque::new(),
            first_port,
            returned,
            return_sender,
            room,
        })
    }

    /// A handle for workers to give pairs back.
    pub(super) fn port_return(&self) -> PortReturn {
        PortReturn {
            sender: self.return_sender.clone(),
            room: self.room.clone(),
        }
    }

    /// Takes the idle pair that has rested [`IDLE_MIN`], else the unbound pair that has been
    /// free the longest, else an idle pair that has rested less (rather than none).
    pub(super) fn allocate(&mut self) -> Option<Pair> {
        self.allocate_at(Instant::now())
    }

    pub(super) fn allocate_at(&mut self, now: Instant) -> Option<Pair> {
        self.reclaim_at(now);
        let rested = self
            .idle
            .front()
            .is_some_and(|pair| now.duration_since(pair.since) >= IDLE_MIN);
        let pair = if rested || self.free.is_empty() {
            let IdlePair {
                rtp_port, sockets, ..
            } = self.idle.pop_front()?;
            self.room.leave_place();
            Pair::Bound(rtp_port, sockets)
        } else {
            Pair::Unbound(self.free.pop_front()?)
        };
        self.room.pair_taken();
        // A new pair's sockets beyond the limit: the newest idle pairs (the furthest from
        // rested) close for them.
        while self.room.excess() > 0 {
            let Some(newest) = self.idle.pop_back() else {
                break;
            };
            self.room.leave_place();
            self.free.push_back(newest.rtp_port);
        }
        let (Pair::Bound(rtp_port, _) | Pair::Unbound(rtp_port)) = &pair;
        let index = self.index(*rtp_port);
        self.allocated[index] = true;
        Some(pair)
    }

    /// Puts an allocated pair, its sockets closed, at the back of the queue; unknown or free
    /// ports are ignored.
    pub(super) fn release(&mut self, rtp_port: u16) {
        if self.put_back_unbound(rtp_port) {
            self.room.pair_given_back();
        }
    }

    /// Frees an allocated pair whose sockets are closed, to the back of the unbound queue;
    /// false for a port not allocated from here.
    fn put_back_unbound(&mut self, rtp_port: u16) -> bool {
        let freed = self.mark_free(rtp_port);
        if freed {
            self.free.push_back(rtp_port);
        }
        freed
    }

    /// Clears the pair's allocated flag; false (and logged) for a port not allocated from here.
    fn mark_free(&mut self, rtp_port: u16) -> bool {
        let Some(allocated) = self.pair_index(rtp_port).map(|i| &mut self.allocated[i]) else {
            tracing::error!(rtp_port, "released port is not in the media port pool");
            return false;
        };
        if !*allocated {
            tracing::error!(rtp_port, "media port pair released twice");
            return false;
        }
        *allocated = false;
        true
    }

    /// Pairs free now, counting those the workers have given back.
    pub(super) fn free_pairs(&mut self) -> usize {
        self.reclaim_at(Instant::now());
        self.free.len() + self.idle.len()
    }

    /// Allocated UDP ports (two per pair).
    pub(super) fn ports_in_use(&mut self) -> usize {
        self.reclaim_at(Instant::now());
        (self.allocated.len() - self.free.len() - self.idle.len()) * 2
    }

    /// UDP ports of free pairs whose sockets are kept bound (two per pair).
    pub(super) fn ports_idle(&mut self) -> usize {
        self.reclaim_at(Instant::now());
        self.idle.len() * 2
    }

    /// All UDP ports of the pool (two per pair).
    pub(super) fn ports_total(&self) -> usize {
        self.allocated.len() * 2
    }

    /// Moves pairs the workers gave back into the free queues, and closes the sockets of idle
    /// pairs that have rested [`IDLE_MAX`] (their ports go to the back of the unbound queue).
    pub(super) fn reclaim_at(&mut self, now: Instant) {
        while let Ok(Returned { rtp_port, sockets }) = self.returned.try_recv() {
            match sockets {
                Some((sockets, since)) => {
                    if self.mark_free(rtp_port) {
                        self.idle.push_back(IdlePair {
                            rtp_port,
                            sockets,
                            since,
                        });
                    } else {
                        self.room.leave_place();
                    }
                }
                // The worker counted it given back already.
                None => {
                    self.put_back_unbound(rtp_port);
                }
            }
        }
        while self
            .idle
            .front()
            .is_some_and(|pair| now.saturating_duration_since(pair.since) >= IDLE_MAX)
        {
            if let Some(pair) = self.idle.pop_front() {
                self.room.leave_place();
                self.free.push_back(pair.rtp_port);
            }
        }
    }

    /// [`PortPool::reclaim_at`], then how long until the next idle pair is due to close.
    pub(super) fn close_idle_sockets(&mut self, now: Instant) -> Option<Duration> {
        self.reclaim_at(now);
        let oldest = self.idle.front()?;
        Some((oldest.since + IDLE_MAX).saturating_duration_since(now))
    }

    /// Index of the pair whose RTP port is `rtp_port`, if it is one of ours.
    fn pair_index(&self, rtp_port: u16) -> Option<usize> {
        let offset = rtp_port.checked_sub(self.first_port)?;
        let index = usize::from(offset / 2);
        (offset % 2 == 0 && index < self.allocated.len()).then_some(index)
    }

    /// Index of a port taken from `free` or `idle`, which only ever hold our own pairs.
    fn index(&self, rtp_port: u16) -> usize {
        self.pair_index(rtp_port)
            .expect("free queues hold only RTP ports of this pool")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::socket::{bind_pair, SocketTuning};
    use std::net::{IpAddr, Ipv4Addr};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn pool(min: u16, max: u16) -> PortPool {
        PortPool::new(min, max, IdleSockets::new(0)).expect("valid range")
    }

    /// The RTP port of what `allocate` handed out.
    fn port(pair: Option<Pair>) -> Option<u16> {
        pair.map(|pair| match pair {
            Pair::Unbound(port) | Pair::Bound(port, _) => port,
        })
    }

    /// Allocates a pair, binds its sockets and gives them back as a worker does at close;
    /// returns its RTP port.
    fn returned_pair(pool: &mut PortPool) -> u16 {
        let port = port(pool.allocate()).expect("pair free");
        let sockets = bind_pair(LOCALHOST, port, &SocketTuning::default()).expect("bind");
        pool.port_return().give_back(port, sockets, true);
        port
    }

    #[test]
    fn pairs_start_at_even_port_and_fit_below_max() {
        let mut pool = pool(10_001, 10_007);
        assert_eq!(pool.ports_total(), 6);
        assert_eq!(port(pool.allocate()), Some(10_002));
        assert_eq!(port(pool.allocate()), Some(10_004));
        assert_eq!(port(pool.allocate()), Some(10_006));
        assert_eq!(port(pool.allocate()), None);
    }

    #[test]
    fn top_of_port_space_does_not_overflow() {
        let mut pool = pool(65_532, 65_535);
        assert_eq!(pool.ports_total(), 4);
        assert_eq!(port(pool.allocate()), Some(65_532));
        assert_eq!(port(pool.allocate()), Some(65_534));
        assert_eq!(port(pool.allocate()), None);
    }

    #[test]
    fn invalid_ranges_are_rejected() {
        for (min, max) in [(0, 100), (2000, 2000), (3000, 2000), (2001, 2002)] {
            assert!(
                matches!(
                    PortPool::new(min, max, IdleSockets::new(0)),
                    Err(EngineError::InvalidConfig(_))
                ),
                "{min}-{max} accepted"
            );
        }
    }

    #[test]
    fn released_pair_goes_to_the_back() {
        let mut pool = pool(20_000, 20_005);
        let first = port(pool.allocate()).expect("pair free");
        pool.release(first);
        assert_eq!(port(pool.allocate()), Some(20_002));
        assert_eq!(port(pool.allocate()), Some(20_004));
        assert_eq!(port(pool.allocate()), Some(first));
    }

    #[test]
    fn double_and_foreign_release_are_ignored() {
        let mut pool = pool(20_000, 20_003);
        let port = port(pool.allocate()).expect("pair free");
        pool.release(port);
        pool.release(port);
        pool.release(20_001);
        pool.release(30_000);
        assert_eq!(pool.free_pairs(), 2);
        assert_eq!(pool.ports_in_use(), 0);
    }

    #[test]
    fn worker_returns_are_reclaimed_and_closed_without_room() {
        let mut pool = pool(41_000, 41_003);
        let port = returned_pair(&mut pool);
        assert_eq!(pool.ports_in_use(), 0);
        assert_eq!(pool.ports_idle(), 0, "no room: the sockets were closed");
        std::net::UdpSocket::bind((LOCALHOST, port)).expect("the port is free again");
    }

    #[test]
    fn a_returned_pair_keeps_its_sockets_rests_then_serves_the_next_connection() {
        let mut pool = PortPool::new(41_010, 41_015, IdleSockets::new(8)).expect("valid range");
        let first = returned_pair(&mut pool);
        // The pair's rest began at or before this.
        let start = Instant::now();
        assert_eq!((pool.ports_in_use(), pool.ports_idle()), (0, 2));
        assert!(
            std::net::UdpSocket::bind((LOCALHOST, first)).is_err(),
            "an idle pair stays bound"
        );
        // Not rested yet: the unbound pairs go first.
        let rest = start + IDLE_MIN / 2;
        assert!(matches!(
            pool.allocate_at(rest),
            Some(Pair::Unbound(41_012))
        ));
        // Rested: the bound pair, before the unbound one left.
        let rested = start + IDLE_MIN;
        match pool.allocate_at(rested) {
            Some(Pair::Bound(port, sockets)) => {
                assert_eq!(port, first);
                assert_eq!(sockets.local_rtp.port(), first);
            }
            _ => panic!("the rested idle pair is handed out"),
        }
        assert_eq!(pool.ports_idle(), 0);
        assert_eq!(pool.room.held.load(Ordering::Acquire), 0);
    }

    #[test]
    fn idle_sockets_close_after_their_time_and_their_port_goes_unbound_to_the_back() {
        let mut pool = PortPool::new(41_020, 41_023, IdleSockets::new(8)).expect("valid range");
        let before = Instant::now();
        let first = returned_pair(&mut pool);
        let start = Instant::now();
        let due = pool.close_idle_sockets(start).expect("one idle pair");
        assert!(due <= IDLE_MAX, "due in {due:?}");
        pool.reclaim_at(before + IDLE_MAX - Duration::from_millis(1));
        assert_eq!(pool.ports_idle(), 2);
        assert_eq!(pool.close_idle_sockets(start + IDLE_MAX), None);
        assert_eq!(pool.ports_idle(), 0);
        assert_eq!(pool.room.held.load(Ordering::Acquire), 0);
        std::net::UdpSocket::bind((LOCALHOST, first)).expect("closed: the port is free");
        assert_eq!(port(pool.allocate_at(start + IDLE_MAX)), Some(41_022));
        assert!(matches!(
            pool.allocate_at(start + IDLE_MAX),
            Some(Pair::Unbound(port)) if port == first
        ));
    }

    #[test]
    fn with_no_unbound_pair_left_a_pair_that_has_not_rested_is_handed_out() {
        let mut pool = PortPool::new(41_030, 41_031, IdleSockets::new(8)).expect("valid range");
        let only = returned_pair(&mut pool);
        assert!(matches!(pool.allocate(), Some(Pair::Bound(port, _)) if port == only));
        assert!(pool.allocate().is_none());
    }

    #[test]
    fn sockets_beyond_the_room_or_not_reusable_are_closed_by_the_worker() {
        // Room for two pairs, idle and in use together.
        let mut pool = PortPool::new(41_040, 41_047, IdleSockets::new(2)).expect("valid range");
        let ports: Vec<u16> = (0..4)
            .map(|_| port(pool.allocate()).expect("pair free"))
            .collect();
        let back = pool.port_return();
        for (i, &port) in ports.iter().enumerate() {
            let sockets = bind_pair(LOCALHOST, port, &SocketTuning::default()).expect("bind");
            back.give_back(port, sockets, i != 0);
        }
        // The first was not reusable; the second came back while two others were in use, which
        // left no place; the third and fourth took the two places.
        assert_eq!((pool.ports_in_use(), pool.ports_idle()), (0, 4));
        std::net::UdpSocket::bind((LOCALHOST, ports[0])).expect("not reusable: closed");
        std::net::UdpSocket::bind((LOCALHOST, ports[1])).expect("no room: closed");
        for &kept in &ports[2..] {
            assert!(std::net::UdpSocket::bind((LOCALHOST, kept)).is_err());
        }
    }

    #[test]
    fn idle_pairs_give_way_to_a_new_connections_sockets_newest_first() {
        let mut pool = PortPool::new(41_050, 41_057, IdleSockets::new(2)).expect("valid range");
        let older = returned_pair(&mut pool);
        let newer = returned_pair(&mut pool);
        assert_eq!(pool.ports_idle(), 4);
        // Neither has rested: a new connection binds an unbound pair, which makes three.
        assert!(matches!(pool.allocate(), Some(Pair::Unbound(_))));
        assert_eq!((pool.ports_in_use(), pool.ports_idle()), (2, 2));
        std::net::UdpSocket::bind((LOCALHOST, newer)).expect("the newest idle pair closed");
        assert!(std::net::UdpSocket::bind((LOCALHOST, older)).is_err());
        assert_eq!(pool.room.held.load(Ordering::Acquire), 1);
        assert_eq!(pool.room.in_use.load(Ordering::Acquire), 1);
    }

    #[test]
    fn in_use_counts_every_way_a_pair_comes_back() {
        let mut pool = PortPool::new(41_060, 41_067, IdleSockets::new(8)).expect("valid range");
        let released = port(pool.allocate()).expect("pair free");
        let _closed = returned_pair(&mut pool);
        let unreusable = port(pool.allocate()).expect("pair free");
        assert_eq!(pool.room.in_use.load(Ordering::Acquire), 2);
        pool.release(released);
        pool.release(released);
        let sockets = bind_pair(LOCALHOST, unreusable, &SocketTuning::default()).expect("bind");
        pool.port_return().give_back(unreusable, sockets, false);
        assert_eq!(pool.ports_in_use(), 0);
        assert_eq!(pool.room.in_use.load(Ordering::Acquire), 0);
        assert_eq!(pool.room.held.load(Ordering::Acquire), 1);
    }

    #[test]
    fn the_room_is_three_quarters_of_the_file_limit_in_pairs() {
        let files = crate::engine::soft_file_limit().expect("RLIMIT_NOFILE");
        assert_eq!(IdleSockets::from_file_limit().limit as u64, files / 8 * 3);
    }
}
