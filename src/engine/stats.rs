//! Per-connection statistics shared read-only with the control plane.
//!
//! Owns: the atomics a worker publishes its connection counters into, and the snapshot the
//! control plane reads from them.
//! Must not: lock, or let a reader slow the worker down. There is exactly one writer (the worker
//! that owns the connection), so plain `Relaxed` stores suffice for the counters; the source
//! address, too wide for one atomic, uses a sequence lock that only the reader ever retries.

use std::hint;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::MediaStats;

/// Published counters of one connection.
#[derive(Default)]
pub(super) struct SharedStats {
    /// See [`MediaStats::rtp_packets_received`].
    rtp_packets_received: AtomicU64,
    /// See [`MediaStats::rtp_bytes_received`].
    rtp_bytes_received: AtomicU64,
    /// See [`MediaStats::rtp_packets_sent`].
    rtp_packets_sent: AtomicU64,
    /// See [`MediaStats::rtp_bytes_sent`].
    rtp_bytes_sent: AtomicU64,
    /// See [`MediaStats::rtcp_packets_received`].
    rtcp_packets_received: AtomicU64,
    /// See [`MediaStats::malformed_packets`].
    malformed_packets: AtomicU64,
    rtcp_packets_sent: AtomicU64,
    foreign_source_dropped: AtomicU64,
    srtp_rejected: AtomicU64,
    /// i64 stored as its bits.
    packets_lost: AtomicU64,
    concealed_frames: AtomicU64,
    late_packets: AtomicU64,
    shrunk_frames: AtomicU64,
    playout_delay_ms: AtomicU64,
    /// f64 stored as its bits.
    jitter_ms: AtomicU64,
    /// f64 stored as its bits.
    rtt_ms: AtomicU64,
    digits_received: AtomicU64,
    digits_sent: AtomicU64,
    /// See [`MediaStats::last_source`].
    last_source: SharedAddress,
}

impl SharedStats {
    /// Publishes the worker's counters (not the source address: see `publish_last_source`).
    pub(super) fn publish(&self, stats: &MediaStats) {
        self.publish_traffic(stats);
        let relaxed = Ordering::Relaxed;
        self.rtcp_packets_received
            .store(stats.rtcp_packets_received, relaxed);
        self.malformed_packets
            .store(stats.malformed_packets, relaxed);
        self.rtcp_packets_sent
            .store(stats.rtcp_packets_sent, relaxed);
        self.foreign_source_dropped
            .store(stats.foreign_source_dropped, relaxed);
        self.srtp_rejected.store(stats.srtp_rejected, relaxed);
        self.packets_lost.store(stats.packets_lost as u64, relaxed);
        self.concealed_frames.store(stats.concealed_frames, relaxed);
        self.late_packets.store(stats.late_packets, relaxed);
        self.shrunk_frames.store(stats.shrunk_frames, relaxed);
        self.playout_delay_ms
            .store(u64::from(stats.playout_delay_ms), relaxed);
        self.jitter_ms.store(stats.jitter_ms.to_bits(), relaxed);
        self.rtt_ms.store(stats.rtt_ms.to_bits(), relaxed);
        self.digits_received.store(stats.digits_received, relaxed);
        self.digits_sent.store(stats.digits_sent, relaxed);
    }

    /// Publishes the RTP packet and byte counts only (the worker does after every packet; the
    /// rest goes out with [`SharedStats::publish`] every 100 ms and at close).
    pub(super) fn publish_traffic(&self, stats: &MediaStats) {
        let relaxed = Ordering::Relaxed;
        self.rtp_packets_received
            .store(stats.rtp_packets_received, relaxed);
        self.rtp_bytes_received
            .store(stats.rtp_bytes_received, relaxed);
        self.rtp_packets_sent.store(stats.rtp_packets_sent, relaxed);
        self.rtp_bytes_sent.store(stats.rtp_bytes_sent, relaxed);
    }

    /// Publishes a new RTP source; called only when it changes, so not per packet.
    pub(super) fn publish_last_source(&self, source: SocketAddr) {
        self.last_source.store(source);
    }

    /// The latest published figures; counters may be a batch apart from each other.
    pub(super) fn snapshot(&self) -> MediaStats {
        let relaxed = Ordering::Relaxed;
        MediaStats {
            rtp_packets_received: self.rtp_packets_received.load(relaxed),
            rtp_bytes_received: self.rtp_bytes_received.load(relaxed),
            rtp_packets_sent: self.rtp_packets_sent.load(relaxed),
            rtp_bytes_sent: self.rtp_bytes_sent.load(relaxed),
            rtcp_packets_received: self.rtcp_packets_received.load(relaxed),
            last_source: self.last_source.load(),
            malformed_packets: self.malformed_packets.load(relaxed),
            rtcp_packets_sent: self.rtcp_packets_sent.load(relaxed),
            foreign_source_dropped: self.foreign_source_dropped.load(relaxed),
            srtp_rejected: self.srtp_rejected.load(relaxed),
            packets_lost: self.packets_lost.load(relaxed) as i64,
            concealed_frames: self.concealed_frames.load(relaxed),
            late_packets: self.late_packets.load(relaxed),
            shrunk_frames: self.shrunk_frames.load(relaxed),
            playout_delay_ms: self.playout_delay_ms.load(relaxed) as u32,
            jitter_ms: f64::from_bits(self.jitter_ms.load(relaxed)),
            rtt_ms: f64::from_bits(self.rtt_ms.load(relaxed)),
            digits_received: self.digits_received.load(relaxed),
            digits_sent: self.digits_sent.load(relaxed),
        }
    }
}

/// `meta` bit: an address has been stored.
const PRESENT: u64 = 1 << 63;
/// `meta` bit: the address is IPv6.
const IPV6: u64 = 1 << 62;

/// An optional socket address behind a single-writer sequence lock.
#[derive(Default)]
struct SharedAddress {
    /// Odd while the writer is storing; changes on every store.
    sequence: AtomicU64,
    /// High 64 bits of an IPv6 address; 0 for IPv4.
    high: AtomicU64,
    /// Low 64 bits of an IPv6 address, or the IPv4 address.
    low: AtomicU64,
    /// `PRESENT`, `IPV6`, the IPv6 scope id (bits 16..48) and the port (bits 0..16).
    /// The IPv6 flow label is not kept: it is meaningless as a reply address.
    meta: AtomicU64,
}

impl SharedAddress {
    /// Stores `address`; must only be called by the one owning worker.
    fn store(&self, address: SocketAddr) {
        let (high, low, meta) = encode(address);
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before the data: a reader that sees new data sees it odd.
        fence(Ordering::Release);
        self.high.store(high, Ordering::Relaxed);
        self.low.store(low, Ordering::Relaxed);
        self.meta.store(meta, Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// The stored address, retried until read without a concurrent store.
    fn load(&self) -> Option<SocketAddr> {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before & 1 == 0 {
                let high = self.high.load(Ordering::Relaxed);
                let low = self.low.load(Ordering::Relaxed);
                let meta = self.meta.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.sequence.load(Ordering::Relaxed) == before {
                    return decode(high, low, meta);
                }
            }
            hint::spin_loop();
        }
    }
}

/// Packs an address into (high, low, meta) words.
fn encode(address: SocketAddr) -> (u64, u64, u64) {
    let port = u64::from(address.port());
    match address {
        SocketAddr::V4(v4) => (0, u64::from(u32::from(*v4.ip())), PRESENT | port),
        SocketAddr::V6(v6) => {
            let bits = u128::from(*v6.ip());
            let meta = PRESENT | IPV6 | (u64::from(v6.scope_id()) << 16) | port;
            // Truncating casts split the 128 bits into their two halves.
            ((bits >> 64) as u64, bits as u64, meta)
        }
    }
}

/// Inverse of [`encode`]; `None` when nothing was stored yet.
fn decode(high: u64, low: u64, meta: u64) -> Option<SocketAddr> {
    if meta & PRESENT == 0 {
        return None;
    }
    // Masks keep exactly the bits `encode` put there, so the casts cannot lose anything.
    let port = (meta & 0xFFFF) as u16;
    if meta & IPV6 == 0 {
        let ip = Ipv4Addr::from((low & 0xFFFF_FFFF) as u32);
        return Some(SocketAddr::new(IpAddr::V4(ip), port));
    }
    let ip = Ipv6Addr::from((u128::from(high) << 64) | u128::from(low));
    let scope_id = ((meta >> 16) & 0xFFFF_FFFF) as u32;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips() {
        let shared = SharedAddress::default();
        assert_eq!(shared.load(), None);
        let addresses: [SocketAddr; 3] = [
            "192.0.2.7:49170".parse().expect("literal address"),
            "[2001:db8::1]:5004".parse().expect("literal address"),
            SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse().expect("literal address"),
                65_535,
                0,
                7,
            )),
        ];
        for address in addresses {
            shared.store(address);
            assert_eq!(shared.load(), Some(address));
        }
    }

    #[test]
    fn snapshot_reflects_published_counters() {
        let shared = SharedStats::default();
        assert_eq!(shared.snapshot(), MediaStats::default());
        let stats = MediaStats {
            rtp_packets_received: 3,
            rtp_bytes_received: 516,
            rtp_packets_sent: 2,
            rtp_bytes_sent: 344,
            rtcp_packets_received: 1,
            last_source: Some("127.0.0.1:4000".parse().expect("literal address")),
            malformed_packets: 4,
            rtcp_packets_sent: 5,
            foreign_source_dropped: 6,
            srtp_rejected: 7,
            // RFC 3550 cumulative loss goes negative when duplicates outnumber losses.
            packets_lost: -8,
            concealed_frames: 9,
            late_packets: 10,
            shrunk_frames: 14,
            playout_delay_ms: 60,
            jitter_ms: 12.375,
            rtt_ms: 48.5,
            digits_received: 11,
            digits_sent: 13,
        };
        shared.publish(&stats);
        shared.publish_last_source(stats.last_source.expect("set above"));
        assert_eq!(shared.snapshot(), stats);

        // A later publication replaces every counter, the source address stays.
        let later = MediaStats {
            rtp_packets_received: 30,
            packets_lost: i64::MIN,
            jitter_ms: 0.1,
            rtt_ms: f64::MAX,
            ..stats.clone()
        };
        shared.publish(&later);
        assert_eq!(shared.snapshot(), later);
    }

    #[test]
    fn tick_lateness_counts_each_tick_in_its_bucket_and_sums_the_lateness() {
        let lateness = TickLateness::default();
        for late_us in [0, 100, 101, 1_999, 2_000, 20_000, 20_001, 1_000_000] {
            lateness.record(late_us);
        }
        let mut snapshot = TickLatenessSnapshot::default();
        lateness.add_to(&mut snapshot);
        // Bounds 100, 250, 500, 1,000, 2,000, 5,000, 10,000, 20,000, then +Inf.
        assert_eq!(snapshot.counts, [2, 1, 0, 0, 2, 0, 0, 1, 2]);
        assert_eq!(snapshot.sum_us, 1_044_201);
        // A second worker's histogram adds to the same snapshot.
        let other = TickLateness::default();
        other.record(300);
        other.add_to(&mut snapshot);
        assert_eq!(snapshot.counts[2], 1);
        assert_eq!(snapshot.sum_us, 1_044_501);
    }
}

/// Upper bounds (µs) of the tick-lateness histogram buckets; the last bucket is +Inf.
pub const TICK_LATENESS_BOUNDS_US: [u64; 8] = [100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000];

/// How late media ticks (playout, RTCP, timeouts) run after their deadline, per worker:
/// the worker is the only writer, the control plane reads.
#[derive(Default)]
pub(super) struct TickLateness {
    /// Cumulative-free counts per bucket (+1 for +Inf).
    buckets: [AtomicU64; TICK_LATENESS_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl TickLateness {
    /// Counts one tick. Only the worker that owns this histogram calls it, so each counter is
    /// a plain load and store, not a locked add: a locked instruction waits for every earlier
    /// load to finish, and a tick's loads are the cache misses of a connection last touched a
    /// tick ago (`perf annotate`: 9 % of the worker loop's samples on the add at 3,000 echo
    /// calls). Readers see each counter whole, as before.
    pub(super) fn record(&self, late_us: u64) {
        let index = TICK_LATENESS_BOUNDS_US
            .iter()
            .position(|&bound| late_us <= bound)
            .unwrap_or(TICK_LATENESS_BOUNDS_US.len());
        let bucket = &self.buckets[index];
        bucket.store(bucket.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed);
        self.sum_us.store(sum + late_us, Ordering::Relaxed);
    }

    /// Adds this worker's counts into `into` (per bucket, not cumulative) and the sum.
    pub(super) fn add_to(&self, into: &mut TickLatenessSnapshot) {
        for (total, bucket) in into.counts.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Ordering::Relaxed);
        }
        into.sum_us += self.sum_us.load(Ordering::Relaxed);
    }
}

/// Tick lateness over all workers: per-bucket counts (bounds in [`TICK_LATENESS_BOUNDS_US`],
/// then +Inf) and the sum, µs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickLatenessSnapshot {
    pub counts: [u64; TICK_LATENESS_BOUNDS_US.len() + 1],
    pub sum_us: u64,
}
