//! The RTP streaming engine shared by both modes: paced senders (absolute deadlines), epoll
//! receivers (recvmmsg with kernel receive timestamps), per-packet loss and delay accounting.
//!
//! Packets are identified by a tag at the start of the G.711 payload (flow id + packet index,
//! written with µ-law codes that survive decode→encode), not by the RTP header: callbridge's
//! echo plays the audio back through its jitter buffer and codec with its own SSRC, sequence
//! numbers and timestamps, and conceals lost frames, so only the audio identifies a packet.
//!
//! Flow `f` of `n` sends packet `k` at `t0 + (k·n + f) / rate`: every flow sends at exactly
//! `rate / n` packets per second and the flows are evenly interleaved (no bursts).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::hist::Histogram;
use crate::sys;

/// RTP header + 20 ms of G.711 µ-law at 8 kHz.
pub const PAYLOAD: usize = 160;
pub const PACKET: usize = 12 + PAYLOAD;
const RECV_BATCH: usize = 16;

/// One media flow: an RTP socket connected to its target, and optionally the RTCP socket
/// (port + 1) announced with it, only read and counted. With `dest`, the socket is one
/// unconnected socket shared by every flow (`--shared-media`): packets go to `dest` in
/// `sendmmsg` batches and echoes are told apart by their payload tag.
pub struct Flow {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub dest: Option<std::net::SocketAddrV4>,
}

/// Datagrams per `sendmmsg` of a shared-socket sender.
const SEND_BATCH: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Stamp {
    /// Receive time = SO_TIMESTAMPNS (kernel, when the echo was queued to our socket).
    Kernel,
    /// Receive time = clock read after recvmmsg returned (includes our own wake-up latency).
    User,
}

pub struct StreamConfig {
    /// Total packets per second over all flows.
    pub rate: f64,
    pub seconds: f64,
    /// How long to keep receiving after the last send.
    pub drain: Duration,
    pub senders: usize,
    pub receivers: usize,
    pub stamp: Stamp,
    /// Sender wake-up granularity, ns: a sender sleeps at least this long, then sends
    /// everything due (0 = wake for every deadline).
    pub tick_ns: u64,
    /// Receiver pause after each pass over the ready sockets, ns (only with kernel stamps,
    /// which do not depend on when we read).
    pub rx_pause_ns: u64,
}

/// The system under test's counters: its CPU sampled at the start and the end of the sending
/// window, its packets before the first send and after the drain.
#[derive(Clone, Copy, Default)]
pub struct Probe {
    pub target_cpu_ns: Option<u64>,
    pub target_packets: Option<u64>,
}

#[derive(Default)]
pub struct StreamReport {
    pub flows: usize,
    pub target_pps: f64,
    /// Packets handed to the kernel successfully.
    pub sent: u64,
    /// send() failures (full buffer, ICMP-induced errors); not counted in `sent`.
    pub send_errors: u64,
    /// Distinct packets echoed back (by flow and sequence number).
    pub echoed: u64,
    pub duplicates: u64,
    /// RTP datagrams carrying no tag of ours for that flow: the server's concealment or
    /// comfort frames, or echoes too old to match.
    pub unmatched: u64,
    pub rtcp_received: u64,
    /// Flows that lost at least one packet.
    pub flows_with_loss: u64,
    /// First scheduled send to the last actual send, seconds.
    pub window_s: f64,
    /// Echo delay: receive stamp − send stamp, ns.
    pub delay: Histogram,
    /// Added jitter: |delay − median delay of the same flow|, ns, one value per echoed packet.
    pub jitter: Histogram,
    /// Stream jitter: the same with the delay taken from each packet's scheduled send time
    /// instead of its actual one (see [`Schedule`]), ns.
    pub stream_jitter: Histogram,
    /// How late the sender was against its schedule, ns.
    pub lateness: Histogram,
    pub sender_cpu_ns: u64,
    pub receiver_cpu_ns: u64,
    pub process_cpu_ns: u64,
    pub target_cpu_ns: Option<u64>,
    /// The packets the target handled for this run (every one sent, counted after the drain).
    pub target_packets: Option<u64>,
    pub udp_drops: Option<u64>,
    /// Machine-wide CPU over the window (all processes, softirq, steal).
    pub machine: Option<sys::MachineCpu>,
}

impl StreamReport {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.echoed)
    }

    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.lost() as f64 * 100.0 / self.sent as f64
    }

    pub fn sent_pps(&self) -> f64 {
        per_second(self.sent, self.window_s)
    }

    pub fn echoed_pps(&self) -> f64 {
        per_second(self.echoed, self.window_s)
    }

    pub fn pct_of_core(&self, ns: u64) -> f64 {
        if self.window_s <= 0.0 {
            return 0.0;
        }
        ns as f64 / 1e9 / self.window_s * 100.0
    }

    /// CPU (% of one core) spent by processes other than loadgen and the system under test
    /// (`target_in_process`: the target's CPU is already inside loadgen's process time).
    pub fn other_cpu_pct(&self, target_in_process: bool) -> Option<f64> {
        let m = self.machine?;
        let mut ours = self.process_cpu_ns;
        if !target_in_process {
            ours += self.target_cpu_ns.unwrap_or(0);
        }
        Some(self.pct_of_core(m.tasks_ns.saturating_sub(ours)))
    }

    pub fn softirq_cpu_pct(&self) -> Option<f64> {
        Some(self.pct_of_core(self.machine?.softirq_ns))
    }

    pub fn steal_cpu_pct(&self) -> Option<f64> {
        Some(self.pct_of_core(self.machine?.steal_ns))
    }
}

/// Reads and drops every datagram waiting in `socket`, until the monotonic time `until_ns`
/// should they keep coming faster than they are read.
fn discard_queued(socket: &UdpSocket, until_ns: u64) {
    let mut buf = [0u8; 2048];
    while sys::monotonic_ns() < until_ns {
        // SAFETY: `buf` is writable for its length; MSG_DONTWAIT never blocks.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if got < 0 {
            return;
        }
    }
}

fn per_second(n: u64, s: f64) -> f64 {
    if s <= 0.0 {
        0.0
    } else {
        n as f64 / s
    }
}

/// Shared between the sender that owns a flow and the receiver that reads its echoes.
struct FlowState {
    /// Random per flow and run; carried in the payload tag.
    tag: u32,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    /// Packets scheduled so far (index of the next one); stored after the ring slot.
    next: AtomicU64,
    /// CLOCK_REALTIME send stamp of packet k at k & mask (0 = the send failed).
    ring: Box<[AtomicU64]>,
    mask: u64,
}

/// splitmix64: per-flow SSRC and initial sequence/timestamp values.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        Rng(sys::realtime_ns() ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// 20 ms of a 1 kHz tone at about −10 dBm0 in µ-law (the period is 8 samples, so every frame
/// is identical).
fn tone_frame() -> [u8; PAYLOAD] {
    let mut out = [0u8; PAYLOAD];
    for (i, b) in out.iter_mut().enumerate() {
        let x = (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin();
        *b = linear_to_ulaw((x * 8000.0) as i16);
    }
    out
}

/// G.711 µ-law encoder (ITU-T G.711, with the usual bias of 0x84).
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Runs one streaming window over `flows` and returns what was measured. `probe` is sampled
/// when the first packet is due and after the last one was sent.
/// Most packets one run may plan (each echoed one keeps a 4-byte delay until the end).
const MAX_PLANNED: u64 = 60_000_000;

pub fn run(
    flows: &[Flow],
    cfg: &StreamConfig,
    probe: &dyn Fn() -> Probe,
) -> Result<StreamReport, String> {
    let n = flows.len();
    let mut report = StreamReport {
        flows: n,
        target_pps: cfg.rate,
        ..StreamReport::default()
    };
    if n == 0 || cfg.rate <= 0.0 {
        return Ok(report);
    }
    let per_flow_rate = cfg.rate / n as f64;
    let per_flow_total = ((per_flow_rate * cfg.seconds).floor() as u64).max(1);
    if per_flow_total * n as u64 > MAX_PLANNED {
        return Err(format!(
            "{} packets planned in one run; the limit is {MAX_PLANNED} (shorten --seconds)",
            per_flow_total * n as u64
        ));
    }
    // Ring of send stamps: ≥ 4 s of history per flow, so any echo younger than that matches.
    let ring_len = ((per_flow_rate * 4.0) as u64).max(256).next_power_of_two();
    let mut rng = Rng::seeded();
    let states: Vec<FlowState> = (0..n)
        .map(|_| {
            let r = rng.next_u64();
            FlowState {
                tag: (r >> 24) as u32,
                ssrc: r as u32,
                seq0: (r >> 32) as u16,
                ts0: (r >> 16) as u32 & 0x7fff_ffff,
                next: AtomicU64::new(0),
                ring: (0..ring_len).map(|_| AtomicU64::new(0)).collect(),
                mask: ring_len - 1,
            }
        })
        .collect();
    let ns_per_packet = 1e9 / cfg.rate;
    let senders = cfg.senders.clamp(1, n);
    // One shared socket is read by one receiver.
    let shared = flows[0].dest.is_some();
    let receivers = if shared { 1 } else { cfg.receivers.clamp(1, n) };
    let stop = AtomicBool::new(false);
    // What reached the sockets before the run is nobody's echo: a bridged call sends each member
    // silence until the other member speaks (at 2,000 relays, 200,000 datagrams a second for
    // the seconds the calls take to set up), and queued unread it fills the socket, which then
    // drops the run's first packets behind it — counted as the server's loss.
    let readers: Vec<&UdpSocket> = if shared {
        vec![&flows[0].rtp]
    } else {
        flows.iter().map(|flow| &flow.rtp).collect()
    };
    let until_ns = sys::monotonic_ns() + 1_000_000_000;
    for socket in readers {
        discard_queued(socket, until_ns);
    }
    let t0 = sys::monotonic_ns() + 100_000_000;
    let schedule = Schedule {
        t0,
        flows: n as u64,
        ns_per_packet,
    };

    std::thread::scope(|scope| {
        let mut rx_handles = Vec::new();
        for r in 0..receivers {
            let mine: Vec<usize> = (r..n).step_by(receivers).collect();
            let (states, stop) = (&states, &stop);
            let stamp = cfg.stamp;
            let rx_pause = if stamp == Stamp::Kernel {
                cfg.rx_pause_ns
            } else {
                0
            };
            rx_handles.push(
                std::thread::Builder::new()
                    .name(format!("lg-rx-{r}"))
                    .spawn_scoped(scope, move || {
                        receive(
                            flows,
                            states,
                            &mine,
                            per_flow_total,
                            schedule.on_realtime(),
                            stamp,
                            rx_pause,
                            stop,
                        )
                    })
                    .expect("spawn receiver"),
            );
        }
        // The target's packet count from before anything is sent to after the drain: every
        // datagram of the run, however the senders' first and last ones fall around the
        // window's edges (its CPU is measured over the window itself).
        let packets_before = probe().target_packets;
        let mut tx_handles = Vec::new();
        for s in 0..senders {
            let mine: Vec<usize> = (s..n).step_by(senders).collect();
            let (states, stop) = (&states, &stop);
            tx_handles.push(
                std::thread::Builder::new()
                    .name(format!("lg-tx-{s}"))
                    .spawn_scoped(scope, move || {
                        let plan = Plan {
                            per_flow_total,
                            schedule,
                            tick_ns: cfg.tick_ns,
                        };
                        send(flows, states, &mine, &plan, stop)
                    })
                    .expect("spawn sender"),
            );
        }

        sys::sleep_until(t0);
        let before = probe();
        let cpu0 = sys::process_cpu_ns();
        let udp0 = sys::udp_counters();
        let machine0 = sys::machine_cpu();
        for h in tx_handles {
            let s = h.join().expect("sender panicked");
            report.sent += s.sent;
            report.send_errors += s.errors;
            report.lateness.merge(&s.lateness);
            report.sender_cpu_ns += s.cpu_ns;
        }
        let t1 = sys::monotonic_ns();
        let after = probe();
        report.process_cpu_ns = sys::process_cpu_ns().saturating_sub(cpu0);
        if let (Some(a), Some(b)) = (machine0, sys::machine_cpu()) {
            report.machine = Some(b.since(&a));
        }
        report.window_s = t1.saturating_sub(t0) as f64 / 1e9;
        report.target_cpu_ns = match (before.target_cpu_ns, after.target_cpu_ns) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };

        std::thread::sleep(cfg.drain);
        report.target_packets = match (packets_before, probe().target_packets) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        stop.store(true, Ordering::Relaxed);
        for h in rx_handles {
            let r = h.join().expect("receiver panicked");
            report.echoed += r.echoed;
            report.duplicates += r.duplicates;
            report.unmatched += r.unmatched;
            report.rtcp_received += r.rtcp;
            report.flows_with_loss += r.flows_with_loss;
            report.delay.merge(&r.delay);
            report.jitter.merge(&r.jitter);
            report.stream_jitter.merge(&r.stream_jitter);
            report.receiver_cpu_ns += r.cpu_ns;
        }
        if let (Some(a), Some(b)) = (udp0, sys::udp_counters()) {
            report.udp_drops = Some(b.drops_since(&a));
        }
    });
    Ok(report)
}

struct Plan {
    per_flow_total: u64,
    /// On CLOCK_MONOTONIC.
    schedule: Schedule,
    tick_ns: u64,
}

struct SenderStats {
    sent: u64,
    errors: u64,
    lateness: Histogram,
    cpu_ns: u64,
}

fn send(
    flows: &[Flow],
    states: &[FlowState],
    mine: &[usize],
    plan: &Plan,
    stop: &AtomicBool,
) -> SenderStats {
    let Plan {
        per_flow_total,
        schedule,
        tick_ns,
    } = *plan;
    sys::set_timer_slack_ns(1_000);
    let cpu0 = sys::thread_cpu_ns();
    let n = flows.len() as u64;
    let mut stats = SenderStats {
        sent: 0,
        errors: 0,
        lateness: Histogram::default(),
        cpu_ns: 0,
    };
    let mut packet = [0u8; PACKET];
    packet[12..].copy_from_slice(&tone_frame());
    let mut batch = sys::SendBatch::new(SEND_BATCH);
    let shared_fd = flows[mine[0]].dest.map(|_| flows[mine[0]].rtp.as_raw_fd());
    let flush = |batch: &mut sys::SendBatch, stats: &mut SenderStats| {
        let Some(fd) = shared_fd else { return };
        let queued = batch.ids.len() as u64;
        let failed = batch.flush(fd);
        for (f, k) in &failed {
            states[*f].ring[(*k & states[*f].mask) as usize].store(0, Ordering::Relaxed);
        }
        stats.errors += failed.len() as u64;
        stats.sent += queued - failed.len() as u64;
    };
    // Hard stop: a sender that cannot keep up gives up at 3× the planned window + 10 s.
    let planned = (per_flow_total * n) as f64 * schedule.ns_per_packet;
    let give_up = schedule.t0 + (3.0 * planned) as u64 + 10_000_000_000;
    'outer: for k in 0..per_flow_total {
        for &f in mine {
            let deadline = schedule.due(f, k);
            let mut now = sys::monotonic_ns();
            if now > give_up {
                break 'outer;
            }
            if deadline > now + 2_000 {
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
                // Everything due so far goes out before we sleep.
                flush(&mut batch, &mut stats);
                sys::sleep_until(deadline.max(now + tick_ns));
                now = sys::monotonic_ns();
            }
            stats.lateness.record(now.saturating_sub(deadline));
            let st = &states[f];
            packet[0] = 0x80;
            packet[1] = if k == 0 { 0x80 } else { 0x00 }; // marker on the first packet, PT 0
            packet[2..4].copy_from_slice(&st.seq0.wrapping_add(k as u16).to_be_bytes());
            packet[4..8].copy_from_slice(&st.ts0.wrapping_add((k * 160) as u32).to_be_bytes());
            packet[8..12].copy_from_slice(&st.ssrc.to_be_bytes());
            write_tag(&mut packet[12..12 + TAG], st.tag, k as u32);
            let slot = &st.ring[(k & st.mask) as usize];
            slot.store(sys::realtime_ns(), Ordering::Relaxed);
            st.next.store(k + 1, Ordering::Release);
            if let Some(dest) = flows[f].dest {
                batch.push(&packet, dest, (f, k));
                if batch.is_full() {
                    flush(&mut batch, &mut stats);
                }
                continue;
            }
            match flows[f].rtp.send(&packet) {
                Ok(_) => stats.sent += 1,
                Err(_) => {
                    slot.store(0, Ordering::Relaxed);
                    stats.errors += 1;
                }
            }
        }
    }
    flush(&mut batch, &mut stats);
    stats.cpu_ns = sys::thread_cpu_ns().saturating_sub(cpu0);
    stats
}

/// Payload tag: 2 magic bytes, the flow tag and the packet index as 8 nibbles each, and an
/// 8-bit checksum as 2 nibbles. Every byte is 0x10..=0x1F or a magic byte: µ-law codes that
/// decode→encode maps to themselves (only 0x7F, "negative zero", does not survive).
pub const TAG: usize = 20;
const MAGIC: [u8; 2] = [0x2C, 0x3C];

fn write_tag(out: &mut [u8], flow: u32, k: u32) {
    out[..2].copy_from_slice(&MAGIC);
    let mut sum = 0u8;
    for (i, word) in [flow, k].into_iter().enumerate() {
        for j in 0..8 {
            let nibble = ((word >> (28 - 4 * j)) & 0xF) as u8;
            sum = sum.wrapping_add(nibble);
            out[2 + i * 8 + j] = 0x10 | nibble;
        }
    }
    out[18] = 0x10 | (sum >> 4);
    out[19] = 0x10 | (sum & 0xF);
}

/// (flow tag, packet index) from a payload, if it carries a valid tag.
fn read_tag(payload: &[u8]) -> Option<(u32, u32)> {
    if payload.len() < TAG || payload[..2] != MAGIC {
        return None;
    }
    let mut words = [0u32; 2];
    let mut sum = 0u8;
    for (i, word) in words.iter_mut().enumerate() {
        for j in 0..8 {
            let b = payload[2 + i * 8 + j];
            if b & 0xF0 != 0x10 {
                return None;
            }
            sum = sum.wrapping_add(b & 0xF);
            *word = (*word << 4) | u32::from(b & 0xF);
        }
    }
    if payload[18] & 0xF0 != 0x10 || payload[19] & 0xF0 != 0x10 {
        return None;
    }
    if ((payload[18] & 0xF) << 4) | (payload[19] & 0xF) != sum {
        return None;
    }
    Some((words[0], words[1]))
}

/// The payload of an RTP packet (after CSRCs and a header extension; padding removed).
fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(p[0] & 0x0F);
    if p[0] & 0x10 != 0 {
        let ext = p.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    p.get(start..end)
}

/// Whether a datagram on an RTP port is RTCP multiplexed onto it (RFC 5761: PT 64–95).
fn is_rtcp(p: &[u8]) -> bool {
    p.len() >= 2 && (192..=223).contains(&p[1])
}

struct ReceiverStats {
    echoed: u64,
    duplicates: u64,
    unmatched: u64,
    rtcp: u64,
    flows_with_loss: u64,
    delay: Histogram,
    jitter: Histogram,
    stream_jitter: Histogram,
    cpu_ns: u64,
}

/// When each packet is due: the sender's deadlines (on CLOCK_MONOTONIC) and, shifted to the
/// receive stamps' CLOCK_REALTIME, the origin of the stream-jitter delay: the echo's arrival
/// measured from it is what a far-end RTP receiver sees of the echoed stream (its jitter against
/// the 20 ms cadence), which our own sender's lateness does not enter as long as the server's
/// jitter buffer absorbs it.
#[derive(Clone, Copy)]
struct Schedule {
    /// When the first packet is due, ns on the schedule's clock.
    t0: u64,
    flows: u64,
    ns_per_packet: f64,
}

impl Schedule {
    /// When packet `k` of flow `f` is due (packets of all flows are spread evenly).
    fn due(&self, f: usize, k: u64) -> u64 {
        self.t0 + (((k * self.flows + f as u64) as f64) * self.ns_per_packet) as u64
    }

    /// The same schedule on CLOCK_REALTIME (from one on CLOCK_MONOTONIC).
    fn on_realtime(self) -> Schedule {
        Schedule {
            t0: self
                .t0
                .wrapping_add(sys::realtime_ns().wrapping_sub(sys::monotonic_ns())),
            ..self
        }
    }
}

/// Per-flow |value − the flow's median| of every value, into `histogram`.
fn record_deviations(values: &mut [u32], histogram: &mut Histogram) {
    if values.is_empty() {
        return;
    }
    let mid = values.len() / 2;
    let median = u64::from(*values.select_nth_unstable(mid).1);
    for &v in values.iter() {
        histogram.record(u64::from(v).abs_diff(median));
    }
}

#[allow(clippy::too_many_arguments)]
fn receive(
    flows: &[Flow],
    states: &[FlowState],
    mine: &[usize],
    per_flow_total: u64,
    schedule: Schedule,
    stamp: Stamp,
    rx_pause_ns: u64,
    stop: &AtomicBool,
) -> ReceiverStats {
    let cpu0 = sys::thread_cpu_ns();
    let mut stats = ReceiverStats {
        echoed: 0,
        duplicates: 0,
        unmatched: 0,
        rtcp: 0,
        flows_with_loss: 0,
        delay: Histogram::default(),
        jitter: Histogram::default(),
        stream_jitter: Histogram::default(),
        cpu_ns: 0,
    };
    let epoll = sys::Epoll::new().expect("epoll_create1");
    // A shared socket is registered once; its echoes find their flow by tag.
    let shared = flows[mine[0]].dest.is_some();
    let by_tag: std::collections::HashMap<u32, usize> = if shared {
        mine.iter()
            .enumerate()
            .map(|(local, &f)| (states[f].tag, local))
            .collect()
    } else {
        std::collections::HashMap::new()
    };
    for (local, &f) in mine.iter().enumerate() {
        let fd = flows[f].rtp.as_raw_fd();
        if stamp == Stamp::Kernel {
            sys::enable_rx_timestamps(fd).expect("SO_TIMESTAMPNS");
        }
        epoll.add(fd, (local as u64) << 1).expect("epoll add");
        if let Some(rtcp) = &flows[f].rtcp {
            epoll
                .add(rtcp.as_raw_fd(), ((local as u64) << 1) | 1)
                .expect("epoll add");
        }
        if shared {
            break;
        }
    }
    let words = per_flow_total.div_ceil(64) as usize;
    let mut seen: Vec<Vec<u64>> = mine.iter().map(|_| vec![0u64; words]).collect();
    // Per flow, the delay (ns, saturated to u32) of every echoed packet: for the per-flow
    // median behind the jitter figure.
    let mut delays: Vec<Vec<u32>> = mine
        .iter()
        .map(|_| Vec::with_capacity(per_flow_total.min(1 << 16) as usize))
        .collect();
    // The same from each packet's scheduled send time.
    let mut stream_delays: Vec<Vec<u32>> = mine
        .iter()
        .map(|_| Vec::with_capacity(per_flow_total.min(1 << 16) as usize))
        .collect();
    let recv_batch = if shared { 64 } else { RECV_BATCH };
    let mut batch = sys::Batch::new(recv_batch);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut scratch = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if rx_pause_ns > 0 {
            std::thread::sleep(Duration::from_nanos(rx_pause_ns));
        }
        let ready = epoll.wait(&mut events, 20);
        for ev in &events[..ready] {
            let data = ev.u64;
            let local = (data >> 1) as usize;
            let f = mine[local];
            if data & 1 == 1 {
                if let Some(rtcp) = &flows[f].rtcp {
                    for _ in 0..64 {
                        if rtcp.recv(&mut scratch).is_err() {
                            break;
                        }
                        stats.rtcp += 1;
                    }
                }
                continue;
            }
            let fd = flows[f].rtp.as_raw_fd();
            let passes = if shared { 64 } else { 8 };
            // Drain this socket (bounded: a few batches per wake-up, then the next socket).
            for _ in 0..passes {
                let kernel = stamp == Stamp::Kernel;
                let got = match batch.recv(fd, recv_batch, libc::MSG_DONTWAIT, kernel) {
                    Ok(g) => g,
                    Err(_) => break,
                };
                let user_now = if kernel { 0 } else { sys::realtime_ns() };
                for i in 0..got {
                    let p = batch.packet(i);
                    if is_rtcp(p) {
                        stats.rtcp += 1;
                        continue;
                    }
                    let local = if shared {
                        match rtp_payload(p)
                            .and_then(read_tag)
                            .and_then(|(tag, _)| by_tag.get(&tag))
                        {
                            Some(&local) => local,
                            None => {
                                stats.unmatched += 1;
                                continue;
                            }
                        }
                    } else {
                        local
                    };
                    let st = &states[mine[local]];
                    let Some(k) = match_echo(st, p) else {
                        stats.unmatched += 1;
                        continue;
                    };
                    if k >= per_flow_total {
                        stats.unmatched += 1;
                        continue;
                    }
                    let word = &mut seen[local][(k / 64) as usize];
                    let bit = 1u64 << (k % 64);
                    if *word & bit != 0 {
                        stats.duplicates += 1;
                        continue;
                    }
                    *word |= bit;
                    stats.echoed += 1;
                    let sent_at = st.ring[(k & st.mask) as usize].load(Ordering::Relaxed);
                    let rx = if kernel {
                        batch.rx_timestamp_ns(i).unwrap_or_else(sys::realtime_ns)
                    } else {
                        user_now
                    };
                    if sent_at != 0 {
                        let d = rx.saturating_sub(sent_at);
                        stats.delay.record(d);
                        delays[local].push(d.min(u64::from(u32::MAX)) as u32);
                    }
                    let due = schedule.due(mine[local], k);
                    stream_delays[local]
                        .push(rx.saturating_sub(due).min(u64::from(u32::MAX)) as u32);
                }
                if got < recv_batch {
                    break;
                }
            }
        }
    }
    for (local, &f) in mine.iter().enumerate() {
        let echoed = delays[local].len() as u64;
        if echoed < states[f].next.load(Ordering::Acquire).min(per_flow_total) {
            stats.flows_with_loss += 1;
        }
        record_deviations(&mut delays[local], &mut stats.jitter);
        record_deviations(&mut stream_delays[local], &mut stats.stream_jitter);
    }
    stats.cpu_ns = sys::thread_cpu_ns().saturating_sub(cpu0);
    stats
}

/// The packet index `k` of an echo of ours on flow `st`, or None. The index must be one
/// already sent and still in the send-stamp ring (≥ 4 s of history).
fn match_echo(st: &FlowState, p: &[u8]) -> Option<u64> {
    let (flow, k) = read_tag(rtp_payload(p)?)?;
    if flow != st.tag {
        return None;
    }
    let k = u64::from(k);
    let scheduled = st.next.load(Ordering::Acquire);
    if k >= scheduled || scheduled - k > st.mask + 1 {
        return None;
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
    }

    #[test]
    fn tags_round_trip_and_reject_damage() {
        let mut p = [0u8; PAYLOAD];
        for (flow, k) in [(0u32, 0u32), (0xDEAD_BEEF, 12345), (u32::MAX, u32::MAX)] {
            write_tag(&mut p, flow, k);
            assert!(p[..TAG].iter().all(|&b| b != 0x7F && b != 0xFF));
            assert_eq!(read_tag(&p), Some((flow, k)));
        }
        write_tag(&mut p, 7, 9);
        p[5] ^= 0x01;
        assert_eq!(read_tag(&p), None, "checksum");
        write_tag(&mut p, 7, 9);
        p[5] = 0x25;
        assert_eq!(read_tag(&p), None, "not a tag nibble");
    }

    #[test]
    fn echo_matching_uses_the_payload_not_the_header() {
        let st = FlowState {
            tag: 0xABCD,
            ssrc: 7,
            seq0: 65530,
            ts0: 0,
            next: AtomicU64::new(100),
            ring: (0..256).map(|_| AtomicU64::new(0)).collect(),
            mask: 255,
        };
        let mut p = [0u8; PACKET];
        p[0] = 0x80;
        p[8..12].copy_from_slice(&0x5555u32.to_be_bytes()); // the server's own SSRC
        for k in [0u32, 5, 99] {
            write_tag(&mut p[12..], 0xABCD, k);
            assert_eq!(match_echo(&st, &p), Some(u64::from(k)));
        }
        write_tag(&mut p[12..], 0xABCD, 100);
        assert_eq!(match_echo(&st, &p), None, "not sent yet");
        write_tag(&mut p[12..], 0xABCE, 5);
        assert_eq!(match_echo(&st, &p), None, "another flow's tag");
        // With a CSRC and a header extension in front of the payload.
        let mut q = vec![0x80 | 0x10 | 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[0, 0, 0, 0]); // CSRC
        q.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension, 1 word
        let mut payload = [0u8; PAYLOAD];
        write_tag(&mut payload, 0xABCD, 42);
        q.extend_from_slice(&payload);
        assert_eq!(match_echo(&st, &q), Some(42));
    }
}
