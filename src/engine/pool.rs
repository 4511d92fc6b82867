//! The RTP port pool: pairs of an even RTP port and the odd RTCP port above it, handed out FIFO.
//!
//! Owns: which pairs are free or allocated, and the channel on which workers give pairs back
//! after dropping their sockets.
//! Must not: bind sockets or sit on the packet path. Only the control plane calls it, under the
//! engine's mutex; workers only send on the return channel, which never blocks.
//!
//! Released pairs go to the back of the queue so a port is not reused right away: late packets
//! from the previous call would otherwise land in the next one.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};

use super::EngineError;

/// Free and allocated RTP port pairs.
pub(super) struct PortPool {
    /// Free RTP ports (even), next to hand out at the front.
    free: VecDeque<u16>,
    /// Whether each pair is allocated, indexed by `(rtp_port - first_port) / 2`.
    allocated: Vec<bool>,
    /// RTP port of the first pair.
    first_port: u16,
    /// RTP ports that workers have closed, not yet put back in `free`.
    returned: Receiver<u16>,
    /// Cloned into every worker as a [`PortReturn`].
    return_sender: Sender<u16>,
}

/// A worker's way to give a pair back once it has dropped the sockets.
#[derive(Clone)]
pub(super) struct PortReturn(Sender<u16>);

impl PortReturn {
    /// Puts the pair of `rtp_port` back; the pool reclaims it on its next call.
    pub(super) fn give_back(&self, rtp_port: u16) {
        // Fails only when the engine (and so the pool) is gone, when nothing is left to return to.
        let _ = self.0.send(rtp_port);
    }
}

impl PortPool {
    /// The pairs from `min` (rounded up to even) whose RTCP port is at most `max`.
    pub(super) fn new(min: u16, max: u16) -> Result<PortPool, EngineError> {
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
            first_port,
            returned,
            return_sender,
        })
    }

    /// A handle for workers to give pairs back.
    pub(super) fn port_return(&self) -> PortReturn {
        PortReturn(self.return_sender.clone())
    }

    /// Takes the pair that has been free the longest; returns its RTP port.
    pub(super) fn allocate(&mut self) -> Option<u16> {
        self.reclaim_returned();
        let rtp_port = self.free.pop_front()?;
        let index = self.index(rtp_port);
        self.allocated[index] = true;
        Some(rtp_port)
    }

    /// Puts an allocated pair at the back of the queue; unknown or free ports are ignored.
    pub(super) fn release(&mut self, rtp_port: u16) {
        let Some(allocated) = self.pair_index(rtp_port).map(|i| &mut self.allocated[i]) else {
            tracing::error!(rtp_port, "released port is not in the media port pool");
            return;
        };
        if !*allocated {
            tracing::error!(rtp_port, "media port pair released twice");
            return;
        }
        *allocated = false;
        self.free.push_back(rtp_port);
    }

    /// Pairs free now, counting those the workers have given back.
    pub(super) fn free_pairs(&mut self) -> usize {
        self.reclaim_returned();
        self.free.len()
    }

    /// Allocated UDP ports (two per pair).
    pub(super) fn ports_in_use(&mut self) -> usize {
        self.reclaim_returned();
        (self.allocated.len() - self.free.len()) * 2
    }

    /// All UDP ports of the pool (two per pair).
    pub(super) fn ports_total(&self) -> usize {
        self.allocated.len() * 2
    }

    /// Moves pairs the workers gave back into the free queue.
    fn reclaim_returned(&mut self) {
        while let Ok(rtp_port) = self.returned.try_recv() {
            self.release(rtp_port);
        }
    }

    /// Index of the pair whose RTP port is `rtp_port`, if it is one of ours.
    fn pair_index(&self, rtp_port: u16) -> Option<usize> {
        let offset = rtp_port.checked_sub(self.first_port)?;
        let index = usize::from(offset / 2);
        (offset % 2 == 0 && index < self.allocated.len()).then_some(index)
    }

    /// Index of a port taken from `free`, which only ever holds our own pairs.
    fn index(&self, rtp_port: u16) -> usize {
        self.pair_index(rtp_port)
            .expect("free queue holds only RTP ports of this pool")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_start_at_even_port_and_fit_below_max() {
        let mut pool = PortPool::new(10_001, 10_007).expect("valid range");
        assert_eq!(pool.ports_total(), 6);
        assert_eq!(pool.allocate(), Some(10_002));
        assert_eq!(pool.allocate(), Some(10_004));
        assert_eq!(pool.allocate(), Some(10_006));
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn top_of_port_space_does_not_overflow() {
        let mut pool = PortPool::new(65_532, 65_535).expect("valid range");
        assert_eq!(pool.ports_total(), 4);
        assert_eq!(pool.allocate(), Some(65_532));
        assert_eq!(pool.allocate(), Some(65_534));
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn invalid_ranges_are_rejected() {
        for (min, max) in [(0, 100), (2000, 2000), (3000, 2000), (2001, 2002)] {
            assert!(
                matches!(PortPool::new(min, max), Err(EngineError::InvalidConfig(_))),
                "{min}-{max} accepted"
            );
        }
    }

    #[test]
    fn released_pair_goes_to_the_back() {
        let mut pool = PortPool::new(20_000, 20_005).expect("valid range");
        let first = pool.allocate().expect("pair free");
        pool.release(first);
        assert_eq!(pool.allocate(), Some(20_002));
        assert_eq!(pool.allocate(), Some(20_004));
        assert_eq!(pool.allocate(), Some(first));
    }

    #[test]
    fn double_and_foreign_release_are_ignored() {
        let mut pool = PortPool::new(20_000, 20_003).expect("valid range");
        let port = pool.allocate().expect("pair free");
        pool.release(port);
        pool.release(port);
        pool.release(20_001);
        pool.release(30_000);
        assert_eq!(pool.free_pairs(), 2);
        assert_eq!(pool.ports_in_use(), 0);
    }

    #[test]
    fn worker_returns_are_reclaimed() {
        let mut pool = PortPool::new(20_000, 20_003).expect("valid range");
        let port = pool.allocate().expect("pair free");
        assert_eq!(pool.ports_in_use(), 2);
        pool.port_return().give_back(port);
        assert_eq!(pool.ports_in_use(), 0);
    }
}
