//! How a worker sends: `sendto` from one reused buffer, or (with `io_uring_send`) packets
//! queued in the slots of a [`SendRing`] and submitted once per turn.
//!
//! Owns: the send buffer, the worker's ring, and the ring's count already published.
//! Must not: allocate per packet or wait for completions (they are reaped at the end of a turn).

use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::send_ring::SendRing;
use crate::media::session::MAX_PACKET;

/// How a worker sends: `sendto` from one reused buffer, or (with `io_uring_send`) queued in the
/// slots of a [`SendRing`] and submitted once per turn.
pub(super) struct Transmitter {
    /// The one send buffer for `sendto`, reused for every packet.
    pub(super) buffer: Box<[u8; MAX_PACKET]>,
    /// The worker's ring; `None` when `io_uring_send` is off or the kernel refused the ring.
    pub(super) ring: Option<SendRing>,
    /// Ring sends already added to the engine-wide count.
    published: u64,
}

impl Transmitter {
    /// A transmitter for worker `worker`; with `io_uring` it tries to set up a ring of `entries`
    /// (falling back to `sendto`, warned once, when the kernel refuses).
    pub(super) fn new(io_uring: bool, entries: u32, worker: usize) -> Transmitter {
        Transmitter {
            buffer: Box::new([0; MAX_PACKET]),
            ring: if io_uring {
                SendRing::start(entries, worker)
            } else {
                None
            },
            published: 0,
        }
    }

    /// Hands queued sends to the kernel (before a socket they may name closes or moves away).
    pub(super) fn submit(&mut self) {
        if let Some(ring) = self.ring.as_mut() {
            ring.submit();
        }
    }

    /// End of a turn: submits the turn's sends, reaps completions and adds what was sent to
    /// `sent_total`.
    pub(super) fn complete(&mut self, sent_total: &AtomicU64) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        ring.complete();
        let sent = ring.counts().sent;
        add_new(sent_total, sent, mem::replace(&mut self.published, sent));
    }
}

/// Adds to an engine-wide `total` what a worker's own running count gained since it was last
/// `published` (no shared write when nothing changed).
pub(super) fn add_new(total: &AtomicU64, count: u64, published: u64) {
    if count != published {
        total.fetch_add(count - published, Ordering::Relaxed);
    }
}
