//! Adaptive receive jitter buffer for one RTP audio stream, with loss-concealment signalling.
//!
//! Owns: reordering received frames back into sequence, deciding once per ptime tick whether to
//! play a frame, ask for concealment (PLC) or ask for comfort silence, choosing the playout delay
//! from measured network jitter, and the counters that describe all of that.
//! Must not: read the clock (time is the `now` argument), allocate except on the first push
//! (the ring is allocated then, so a stream that never sends holds none) and to grow the
//! payload areas for a packet longer than any before (a few times in a stream's life at most),
//! decode audio, or know about SSRCs and sockets. An SSRC change is the caller's business (call
//! [`JitterBuffer::reset`]); anything that arrives is classified, never a panic.
//!
//! # Algorithm
//!
//! Storage is a ring of `2^k` slots (enough for twice `max_delay` of frames plus margin), indexed
//! by `seq mod 2^k`, allocated by the first push (an idle call that never receives RTP holds no
//! slots), each with a payload area of `slot_bytes` bytes: the negotiated frame's size
//! at first (`expected_payload`), doubled — up to `max_payload` — when a longer packet comes. A played slot keeps
//! its sequence number, so a duplicate of a frame already played is still recognised.
//!
//! Playout is driven by a playout point: the RTP timestamp `head_ts` of the frame due at the next
//! tick, plus `last_seq`, the last sequence number played. Each [`JitterBuffer::pop`] moves
//! `head_ts` by one frame (ptime × clock rate), except when the delay is being adapted:
//! - the first stored packet after `last_seq` that is due (timestamp less than a frame ahead of
//!   `head_ts`) is played: [`Playout::Frame`];
//! - nothing due, and sequence numbers are missing before the next stored packet (or nothing is
//!   stored at all): a packet is missing, [`Playout::Conceal`]. At most `max_delay / ptime`
//!   consecutive concealments; after that the buffer emits [`Playout::Silence`] while the
//!   playout clock keeps running, so a stopped sender never produces a flood of PLC frames;
//! - nothing due, and the next stored packet follows `last_seq` directly (its timestamp jumped:
//!   the sender stopped sending in a silence period, the next packet usually carries the marker
//!   bit of a talkspurt start): [`Playout::Silence`].
//!
//! Before the first frame (and after a reset) the buffer is prebuffering and answers `Silence`
//! until starting playout with the oldest stored packet would hold the packet that crossed the
//! network fastest (smallest arrival − timestamp) for `target`: time since it arrived plus its
//! timestamp distance from the oldest. With one packet, that is simply `target` of wall time.
//!
//! A packet whose timestamp is behind `head_ts` (its tick has passed, it was concealed) or whose
//! sequence number is at or before `last_seq` is [`PushOutcome::TooLate`], unless its slot still
//! holds the same sequence number ([`PushOutcome::Duplicate`]). A packet that does not fit the
//! stream at all (timestamp more than `max_delay` + 2 frames ahead or `max_delay` behind with a
//! newer sequence number) restarts the buffer on that packet: [`PushOutcome::Reset`]. A sequence
//! number beyond the ring with a plausible timestamp follows a long loss burst: the sequence
//! numbers in between are given up and the packet is stored. Packets far behind in sequence only restart it when two of
//! them arrive in sequence (the RFC 3550 A.1 rule), so one stray packet cannot; late leftovers
//! of the stream the buffer just left are dropped as too late.
//!
//! Delay adaptation. The target delay is
//! `clamp(max(3 × jitter + ptime, late_floor), min_delay, max_delay)`, where `jitter` is the
//! RFC 3550 A.8 interarrival jitter (arrival clock vs RTP timestamp, gain 1/16) and `late_floor`
//! jumps on every late packet to what that packet would have needed (current delay + lateness +
//! one frame) and then decays with a half-life of about 1.4 seconds; when late packets come
//! back (after a gap of half a second, within ten seconds) it holds for ten seconds before it
//! decays, so a sender that stalls every few seconds — an overloaded PBX, a radio link — finds
//! the delay still grown at its next stall (WebRTC's NetEq keeps recurring delay peaks the same
//! way), while the delay one stall asked for goes as it came. The delay actually applied
//! (`delay_est`) is the largest arrival depth (timestamp minus `head_ts` when a packet arrives)
//! seen in the last measurement window of one second of packets, plus the time left until the
//! next tick: the wait of the packets that crossed the network fastest. Prebuffering sets its
//! first value. It moves one frame at a time:
//! - grow quickly: when a packet is missing at its tick and `delay_est + frame <= target`, the
//!   buffer conceals *without* advancing `head_ts` (counted as `stretched`, not `concealed`), so
//!   the missing packet, if merely late, is still played. In a silence period it holds the
//!   silence instead, which is inaudible. No packet missing means no growth is needed yet;
//! - shrink slowly: in a silence period, whenever `delay_est >= target + frame`, the playout
//!   point skips one silence frame per tick (inaudible). During speech, only when a whole window
//!   ends with `delay_est >= target + 2 frames` is one frame dropped, and only a due frame whose
//!   successor is already buffered, so no gap follows. Both count as `shrunk`.
//!
//! The marker bit is not needed to recognise a talkspurt start (sequence continuous, timestamp
//! jumped); it is handed back with the frame for the decoder.

use std::time::{Duration, Instant};

use super::prefetch::prefetch;
use super::rtp::{seq_distance, seq_newer, ts_diff};

/// Largest ring, in slots; caps memory for absurd `max_delay / ptime` ratios.
const MAX_SLOTS: usize = 4096;
/// Clock rates above this are taken as configuration errors and capped.
const MAX_CLOCK_RATE: u32 = 1_000_000;
/// Longest playout delay accepted in a configuration.
const MAX_DELAY_LIMIT_MS: u32 = 10_000;
/// Target = `JITTER_MULTIPLIER` × jitter + ptime.
const JITTER_MULTIPLIER: i64 = 3;
/// The late floor loses `ptime / LATE_FLOOR_DECAY_MS` of itself per tick: ~1.4 s half-life.
const LATE_FLOOR_DECAY_MS: i64 = 2000;
/// How long the late floor holds at its peak, once late packets have come back, before it
/// starts to decay: a stall that recurs within it costs no more frames (the delay a late packet
/// asked for, given back after each stall, was lost again at the next: 2 of every 100 frames
/// with a 60 ms stall every two seconds, `a_sender_that_stalls_every_two_seconds_…`). One
/// stall alone does not hold it: its delay goes as it came.
const LATE_FLOOR_HOLD_MS: u32 = 10_000;
/// Late packets closer together than this belong to one stall (one peak), not a recurrence.
const LATE_PEAK_GAP_MS: u32 = 500;
/// No RTP payload can be longer than a UDP datagram.
const MAX_PAYLOAD_LIMIT: usize = 65_535;
/// Length of a delay-measurement window in milliseconds of packets.
const WINDOW_MS: u32 = 1000;

/// Stream parameters fixed at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate in Hz (8000 for G.711).
    pub clock_rate: u32,
    /// Frame duration; `pop` is called once per ptime.
    pub ptime_ms: u32,
    /// Smallest playout delay, also the initial one.
    pub min_delay_ms: u32,
    /// Largest playout delay; also bounds concealment runs and what counts as a stream jump.
    pub max_delay_ms: u32,
    /// Largest payload stored; longer ones are refused. Capped at 65535 (a UDP datagram).
    pub max_payload: usize,
    /// The payload a frame usually takes (160 bytes for G.711 at 20 ms): each slot starts
    /// with room for this much and all grow together, doubling up to `max_payload`, when a
    /// longer packet comes — a few times in a stream's life at most, never on the steady path.
    pub expected_payload: usize,
}

impl Default for JitterConfig {
    fn default() -> JitterConfig {
        JitterConfig {
            clock_rate: 8000,
            ptime_ms: 20,
            min_delay_ms: 20,
            max_delay_ms: 200,
            max_payload: 1500,
            expected_payload: 160,
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered for playout.
    Stored,
    /// Same sequence number already buffered or played; dropped.
    Duplicate,
    /// Its tick has passed (it was concealed) or it predates the playout point; dropped.
    TooLate,
    /// Payload longer than `max_payload`; dropped.
    TooLarge,
    /// The ring cannot hold it together with the frames already waiting (sequence numbers
    /// spread wider than the ring); dropped.
    Overflow,
    /// The packet does not fit the stream (timestamp/sequence jump beyond `max_delay`): the
    /// buffer was cleared and restarted with this packet, which is stored.
    Reset,
}

/// A frame handed over before its playout ([`JitterBuffer::hand_over`]): its header's
/// sequence number, timestamp and marker, and its payload's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub len: usize,
}

/// What the playout clock should do for this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout {
    /// `out[..len]` holds the payload of the frame with this sequence number and timestamp.
    Frame {
        /// Payload length copied into `out`.
        len: usize,
        /// RTP timestamp of the frame.
        timestamp: u32,
        /// RTP sequence number of the frame.
        seq: u16,
        /// Marker bit as received (talkspurt start for audio).
        marker: bool,
    },
    /// The frame for `timestamp` is missing: run packet loss concealment.
    Conceal {
        /// RTP timestamp of the frame being concealed.
        timestamp: u32,
    },
    /// Nothing to play: not started yet, a silence period, or a long gap; emit comfort noise.
    Silence,
}

/// Counters since construction (a reset does not clear them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Calls to `push`.
    pub pushed: u64,
    /// Frames returned by `pop`.
    pub played: u64,
    /// `Conceal` ticks standing in for missing packets.
    pub concealed: u64,
    /// Packets dropped because their tick had passed.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Packets dropped for lack of a slot.
    pub overflows: u64,
    /// Restarts on a stream jump.
    pub resets: u64,
    /// Packets refused as larger than `max_payload`.
    pub oversized: u64,
    /// Ticks held (a `Conceal` or `Silence` without moving the playout point) to grow the delay.
    pub stretched: u64,
    /// Frames skipped (silence or speech) to shrink the delay.
    pub shrunk: u64,
    /// RFC 3550 interarrival jitter estimate, milliseconds.
    pub jitter_ms: u32,
    /// Current target playout delay, milliseconds.
    pub target_delay_ms: u32,
}

/// Adaptive jitter buffer for one stream; see the module documentation for the algorithm.
#[derive(Debug)]
pub struct JitterBuffer {
    /// RTP clock rate, Hz.
    clock_rate: u32,
    /// Frame duration, ms.
    ptime_ms: u32,
    /// Lower bound of the target, in timestamp units.
    min_delay: i64,
    /// Upper bound of the target, in timestamp units.
    max_delay: i64,
    /// Timestamp units per frame (never 0).
    frame: i64,
    /// Longest payload a slot holds.
    max_payload: usize,
    /// Longest run of `Conceal` ticks before switching to `Silence`.
    max_conceal: u32,
    /// Arrivals per delay-measurement window.
    window_len: u32,

    /// Per-slot metadata: empty until the first push, then `mask + 1` (a power of two) slots.
    slots: Box<[Slot]>,
    /// Payload areas, `slot_bytes` bytes per slot (empty until the first push).
    payloads: Box<[u8]>,
    /// Room per slot now: `expected_payload`, doubled (up to `max_payload`) by a longer packet.
    slot_bytes: usize,
    /// Slot count − 1, for `seq & mask`.
    mask: usize,
    /// Slots in state `Stored`.
    stored: usize,

    /// Prebuffering, playing, or empty.
    mode: Mode,
    /// Last sequence number played (or the anchor − 1 while prebuffering).
    last_seq: u16,
    /// Timestamp due at the next tick.
    head_ts: u32,
    /// Highest stored sequence number; meaningful while `stored > 0`.
    newest_seq: u16,
    /// Ticks given up (concealed or silent) since the last frame played.
    consumed: u32,
    /// Smallest transit (arrival − timestamp) among packets stored while prebuffering: the
    /// packet that crossed the network fastest decides when playout starts.
    fastest_transit: Option<u32>,
    /// When `pop` last ran: the frame at `head_ts` plays one ptime later.
    last_tick: Option<Instant>,
    /// Highest sequence number of the stream abandoned at the last reset, to drop its leftovers.
    previous_newest: Option<u16>,
    /// Successor of the last far-behind packet; a match confirms a restart.
    far_next: Option<u16>,

    /// Reference instant for arrival times (first push).
    epoch: Option<Instant>,
    /// Previous relative transit time (RFC 3550 A.8), timestamp units.
    last_transit: Option<u32>,
    /// Interarrival jitter × 16, timestamp units (the RFC's integer form).
    jitter_q4: i64,
    /// Delay late packets asked for, decaying; timestamp units.
    late_floor: i64,
    /// Ticks the late floor still holds at its peak before it decays.
    late_floor_hold: u32,
    /// Ticks since the last late packet (saturating).
    since_late: u32,
    /// Target playout delay, timestamp units.
    target: i64,
    /// Playout delay in force: largest arrival depth of the last window, timestamp units.
    delay_est: i64,
    /// Largest arrival depth in the current window (`i64::MIN` when empty).
    window_max: i64,
    /// Arrivals in the current window.
    window_count: u32,
    /// A window ended two frames above target: drop one speech frame at the next chance.
    shrink_due: bool,

    /// Counters (jitter and target filled in by `stats`).
    stats: JitterStats,
}

/// Buffer life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing received since construction or `reset`.
    Idle,
    /// Collecting `target` worth of packets before the first frame.
    Buffering,
    /// Ticking.
    Playing,
}

/// State of one ring slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Never used since the last reset.
    Empty,
    /// Holds a frame waiting for playout.
    Stored,
    /// Frame played or dropped; the sequence number is kept for duplicate detection.
    Played,
}

/// Metadata of one ring slot; the payload lives in `JitterBuffer::payloads`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Empty, waiting or played.
    state: SlotState,
    /// Sequence number of the frame.
    seq: u16,
    /// RTP timestamp of the frame.
    timestamp: u32,
    /// Marker bit.
    marker: bool,
    /// Payload length.
    len: usize,
}

const EMPTY_SLOT: Slot = Slot {
    state: SlotState::Empty,
    seq: 0,
    timestamp: 0,
    marker: false,
    len: 0,
};

/// How a pushed packet relates to the stream position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Goes into the ring.
    Store,
    /// Goes into the ring and becomes the new prebuffering anchor (earlier than the old one).
    StoreAsAnchor,
    /// Timestamp fits but the sequence number is beyond the ring after a long loss burst: give
    /// up the unreachable sequence numbers before it, then store.
    StoreAfterBurst,
    /// Already buffered or played.
    Duplicate,
    /// Tick passed; `lateness` in timestamp units (0 when unknown).
    Late { lateness: i64 },
    /// Ring cannot hold it.
    Overflow,
    /// Does not fit the stream: restart unless it is a leftover of the previous stream.
    Jump,
    /// Far behind the stream: restart only if the previous far packet was its predecessor.
    FarBehind,
}

impl JitterBuffer {
    /// A buffer for one stream (its ring comes with the first push). Configuration is normalised rather than refused: clock rate and ptime
    /// at least 1 (clock rate at most 1 MHz, ptime at most 1 s), `max_delay` between ptime and
    /// 10 s, `min_delay` at most `max_delay`, `max_payload` at most 65535. The target never goes
    /// below one ptime, whatever `min_delay` says.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let clock_rate = config.clock_rate.clamp(1, MAX_CLOCK_RATE);
        let ptime_ms = config.ptime_ms.clamp(1, 1000);
        let max_delay_ms = config.max_delay_ms.clamp(ptime_ms, MAX_DELAY_LIMIT_MS);
        let min_delay_ms = config.min_delay_ms.min(max_delay_ms);
        let max_frames = max_delay_ms.div_ceil(ptime_ms);
        let slot_count = (2 * max_frames as usize + 4)
            .next_power_of_two()
            .min(MAX_SLOTS);
        let min_delay = ms_to_units(min_delay_ms, clock_rate);
        let max_payload = config.max_payload.min(MAX_PAYLOAD_LIMIT);
        let slot_bytes = config.expected_payload.min(max_payload);

        JitterBuffer {
            clock_rate,
            ptime_ms,
            min_delay,
            max_delay: ms_to_units(max_delay_ms, clock_rate),
            frame: ms_to_units(ptime_ms, clock_rate).max(1),
            max_payload,
            max_conceal: max_frames,
            window_len: (WINDOW_MS / ptime_ms).max(1),
            // Allocated by the first push (`allocate`): most of an idle call's memory otherwise.
            slots: Box::default(),
            payloads: Box::default(),
            slot_bytes,
            mask: slot_count - 1,
            stored: 0,
            mode: Mode::Idle,
            last_seq: 0,
            head_ts: 0,
            newest_seq: 0,
            consumed: 0,
            fastest_transit: None,
            last_tick: None,
            previous_newest: None,
            far_next: None,
            epoch: None,
            last_transit: None,
            jitter_q4: 0,
            late_floor: 0,
            late_floor_hold: 0,
            since_late: u32::MAX,
            target: min_delay,
            delay_est: 0,
            window_max: i64::MIN,
            window_count: 0,
            shrink_due: false,
            stats: JitterStats::default(),
        }
    }

    /// Offers a received (already parsed) packet: arrival time, sequence number, RTP timestamp,
    /// marker bit and payload.
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> PushOutcome {
        self.stats.pushed += 1;
        if payload.len() > self.max_payload {
            self.stats.oversized += 1;
            return PushOutcome::TooLarge;
        }
        if self.slots.is_empty() {
            self.allocate();
        }
        if payload.len() > self.slot_bytes {
            self.grow(payload.len());
        }
        let verdict = match self.mode {
            Mode::Idle => {
                self.anchor(seq, timestamp);
                Verdict::Store
            }
            Mode::Buffering => self.classify_buffering(seq, timestamp),
            Mode::Playing => self.classify_playing(seq, timestamp),
        };

        match verdict {
            Verdict::Store => self.accept(now, seq, timestamp, marker, payload),
            Verdict::StoreAsAnchor => {
                self.last_seq = seq.wrapping_sub(1);
                self.head_ts = timestamp;
                self.accept(now, seq, timestamp, marker, payload)
            }
            Verdict::Duplicate => {
                self.stats.duplicates += 1;
                PushOutcome::Duplicate
            }
            Verdict::Late { lateness } => {
                self.stats.late += 1;
                self.observe_arrival(now, timestamp);
                self.raise_late_floor(lateness);
                PushOutcome::TooLate
            }
            Verdict::StoreAfterBurst if self.skip_lost_burst(seq) => {
                self.accept(now, seq, timestamp, marker, payload)
            }
            Verdict::StoreAfterBurst | Verdict::Overflow => {
                self.stats.overflows += 1;
                PushOutcome::Overflow
            }
            Verdict::Jump if self.is_previous_stream_leftover(seq) => {
                self.stats.late += 1;
                PushOutcome::TooLate
            }
            Verdict::FarBehind if self.far_next != Some(seq) => {
                self.far_next = Some(seq.wrapping_add(1));
                self.stats.late += 1;
                PushOutcome::TooLate
            }
            Verdict::Jump | Verdict::FarBehind => {
                self.restart(seq, timestamp);
                self.accept(now, seq, timestamp, marker, payload);
                PushOutcome::Reset
            }
        }
    }

    /// Called once per ptime by the playout clock: the next frame (copied into `out`, which
    /// should hold `max_payload` bytes; a frame that does not fit is concealed), or what to emit
    /// instead.
    pub fn pop(&mut self, now: Instant, out: &mut [u8]) -> Playout {
        self.last_tick = Some(now);
        self.decay_late_floor();
        match self.mode {
            Mode::Idle => return Playout::Silence,
            Mode::Buffering => {
                if !self.prebuffered(now) {
                    return Playout::Silence;
                }
                self.start_playing(now);
            }
            Mode::Playing => {}
        }
        self.play_tick(out)
    }

    /// After a `Conceal { timestamp }`: the payload of the frame that follows the missing one,
    /// if it is already buffered (without consuming it). Codecs with in-band FEC (Opus)
    /// rebuild the lost frame from it.
    pub fn peek_after(&self, timestamp: u32, out: &mut [u8]) -> Option<usize> {
        let seq = self.next_stored_seq()?;
        let index = usize::from(seq) & self.mask;
        let slot = self.slots[index];
        if slot.timestamp != timestamp.wrapping_add(self.frame as u32) {
            return None;
        }
        let dest = out.get_mut(..slot.len)?;
        let start = index * self.slot_bytes;
        dest.copy_from_slice(&self.payloads[start..start + slot.len]);
        Some(slot.len)
    }

    /// Current target playout delay.
    pub fn target_delay_ms(&self) -> u32 {
        self.units_to_ms(self.target)
    }

    /// How long the newest buffered packet will wait before it is played (0 when empty).
    pub fn depth_ms(&self) -> u32 {
        self.units_to_ms(self.depth())
    }

    /// The longest payload [`JitterBuffer::pop`] can hand out now: 0 before the first push
    /// (nothing to play), then the slots' room, which grows with a longer packet.
    pub fn payload_room(&self) -> usize {
        if self.slots.is_empty() {
            0
        } else {
            self.slot_bytes
        }
    }

    /// Frames waiting in the ring.
    pub fn buffered_frames(&self) -> usize {
        self.stored
    }

    /// Counters, with the current jitter estimate and target.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            jitter_ms: self.units_to_ms(self.jitter_q4 / 16),
            target_delay_ms: self.target_delay_ms(),
            ..self.stats
        }
    }

    /// Whether `seq` is newer than every frame played so far, while playing: a packet of it
    /// dropped as late came after its tick, not after frames that follow it — the sender's
    /// stream is behind our playout, not reordered.
    pub fn after_played(&self, seq: u16) -> bool {
        self.mode == Mode::Playing && seq_distance(seq, self.last_seq) > 0
    }

    /// Hands over the oldest frame waiting for playout, in sequence order: copied into `out`
    /// (its length returned with the sequence number, timestamp and marker), counted as
    /// played. Once none is left — the call that returns `None` — the stream is forgotten as
    /// [`JitterBuffer::reset`] does: for a stream no longer played out here (its packets
    /// forwarded as they arrive from now on). Call it until `None`. A frame longer than `out`
    /// is cut to its length.
    pub fn hand_over(&mut self, out: &mut [u8]) -> Option<Waiting> {
        let Some(seq) = self.next_stored_seq() else {
            self.reset();
            return None;
        };
        let index = usize::from(seq) & self.mask;
        let slot = self.slots[index];
        let start = index * self.slot_bytes;
        let len = slot.len.min(out.len());
        out[..len].copy_from_slice(&self.payloads[start..start + len]);
        self.slots[index].state = SlotState::Played;
        self.stored -= 1;
        self.last_seq = seq;
        self.stats.played += 1;
        Some(Waiting {
            seq: slot.seq,
            timestamp: slot.timestamp,
            marker: slot.marker,
            len,
        })
    }

    /// Forgets the stream (e.g. on an SSRC change) but keeps the counters; the next packet
    /// starts prebuffering.
    pub fn reset(&mut self) {
        self.clear();
        self.mode = Mode::Idle;
        self.previous_newest = None;
        self.last_transit = None;
        self.jitter_q4 = 0;
        self.late_floor = 0;
        self.late_floor_hold = 0;
        self.since_late = u32::MAX;
        self.target = self.min_delay;
    }

    /// Measures and stores a packet that fits the stream.
    fn accept(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> PushOutcome {
        self.observe_arrival(now, timestamp);
        self.store(seq, timestamp, marker, payload);
        PushOutcome::Stored
    }

    /// Position of a packet while prebuffering (nothing played yet: earlier packets may still
    /// move the anchor back).
    fn classify_buffering(&self, seq: u16, timestamp: u32) -> Verdict {
        let d_seq = seq_distance(seq, self.last_seq);
        let d_ts = i64::from(ts_diff(timestamp, self.head_ts));
        if d_ts > self.ahead_limit() || d_ts < -self.max_delay {
            return Verdict::Jump;
        }
        if d_seq > self.ring_len() {
            return Verdict::Jump;
        }
        if d_seq >= 1 {
            if self.slot_holds(seq) {
                return Verdict::Duplicate;
            }
            return Verdict::Store;
        }
        if d_seq <= -self.ring_len() {
            return Verdict::FarBehind;
        }
        // Earlier than the anchor: becomes the anchor if the ring can span it.
        if seq_distance(self.newest_seq, seq) >= self.ring_len() {
            return Verdict::Overflow;
        }
        Verdict::StoreAsAnchor
    }

    /// Position of a packet while playing.
    fn classify_playing(&self, seq: u16, timestamp: u32) -> Verdict {
        let d_seq = seq_distance(seq, self.last_seq);
        let d_ts = i64::from(ts_diff(timestamp, self.head_ts));
        if d_seq <= 0 {
            if d_seq <= -self.ring_len() {
                return Verdict::FarBehind;
            }
            if self.slot_holds(seq) {
                return Verdict::Duplicate;
            }
            return Verdict::Late {
                lateness: self.plausible_lateness(d_ts),
            };
        }
        if d_ts > self.ahead_limit() || d_ts < -self.max_delay {
            return Verdict::Jump;
        }
        if d_seq > self.ring_len() {
            return Verdict::StoreAfterBurst;
        }
        if d_ts < 0 {
            return Verdict::Late { lateness: -d_ts };
        }
        if self.slot_holds(seq) {
            return Verdict::Duplicate;
        }
        Verdict::Store
    }

    /// One tick of playout.
    fn play_tick(&mut self, out: &mut [u8]) -> Playout {
        loop {
            let Some(seq) = self.next_stored_seq() else {
                return self.missing_tick();
            };
            let slot = self.slots[usize::from(seq) & self.mask];
            let ahead = i64::from(ts_diff(slot.timestamp, self.head_ts));
            if ahead <= -self.frame {
                // Only odd senders (timestamps going backwards within a sequence) get here.
                self.discard(seq);
                self.stats.late += 1;
                continue;
            }
            if ahead >= self.frame {
                let missing = (seq_distance(seq, self.last_seq) - 1).max(0) as u32;
                if missing > self.consumed {
                    return self.missing_tick();
                }
                return self.silence_tick(ahead);
            }
            if self.shrink_due && self.successor_buffered(seq, slot.timestamp) {
                // Dropping a frame whose successor is here shortens the delay without a gap.
                self.discard(seq);
                self.head_ts = slot.timestamp.wrapping_add(self.frame as u32);
                self.adjust_delay(-self.frame);
                self.stats.shrunk += 1;
                continue;
            }
            return self.play(seq, out);
        }
    }

    /// Nothing due and a packet is (or may be) missing.
    fn missing_tick(&mut self) -> Playout {
        let timestamp = self.head_ts;
        let stalled = self.consumed >= self.max_conceal;
        if self.delay_est + self.frame <= self.target {
            // Below target: wait for the missing packet instead of giving its tick up.
            self.adjust_delay(self.frame);
            self.stats.stretched += 1;
            if stalled {
                return Playout::Silence;
            }
            return Playout::Conceal { timestamp };
        }
        self.advance_head(self.frame);
        self.consumed = self.consumed.saturating_add(1);
        if self.consumed > self.max_conceal {
            return Playout::Silence;
        }
        self.stats.concealed += 1;
        Playout::Conceal { timestamp }
    }

    /// The sender is in a silence period: the next packet follows the last one played but its
    /// timestamp is `ahead` of the playout point. Adapting the delay here is inaudible.
    fn silence_tick(&mut self, ahead: i64) -> Playout {
        if self.delay_est + self.frame <= self.target {
            self.adjust_delay(self.frame);
            self.stats.stretched += 1;
            return Playout::Silence;
        }
        self.consumed = self.consumed.saturating_add(1);
        if self.delay_est >= self.target + self.frame && ahead >= 2 * self.frame {
            self.advance_head(2 * self.frame);
            self.adjust_delay(-self.frame);
            self.stats.shrunk += 1;
            return Playout::Silence;
        }
        self.advance_head(self.frame);
        Playout::Silence
    }

    /// Copies the frame out and moves the playout point past it.
    /// The ring, on the first push: `mask + 1` slots of `slot_bytes` (the expected frame).
    #[cold]
    fn allocate(&mut self) {
        let slot_count = self.mask + 1;
        self.slots = vec![EMPTY_SLOT; slot_count].into_boxed_slice();
        self.payloads = vec![0; slot_count * self.slot_bytes].into_boxed_slice();
    }

    /// Makes every slot hold `len` bytes: doubles the room (at least to `len`, at most
    /// `max_payload`), keeping what is stored. A peer sending longer frames than negotiated
    /// (30 ms packets on a 20 ms stream, a higher Opus bitrate) costs this once or twice.
    #[cold]
    fn grow(&mut self, len: usize) {
        let bytes = (self.slot_bytes * 2).max(len).min(self.max_payload);
        let mut payloads = vec![0u8; self.slots.len() * bytes].into_boxed_slice();
        for index in 0..self.slots.len() {
            let from = index * self.slot_bytes;
            let to = index * bytes;
            payloads[to..to + self.slot_bytes]
                .copy_from_slice(&self.payloads[from..from + self.slot_bytes]);
        }
        self.payloads = payloads;
        self.slot_bytes = bytes;
    }

    fn play(&mut self, seq: u16, out: &mut [u8]) -> Playout {
        let index = usize::from(seq) & self.mask;
        let slot = self.slots[index];
        self.discard(seq);
        self.head_ts = slot.timestamp.wrapping_add(self.frame as u32);
        self.consumed = 0;
        let Some(dest) = out.get_mut(..slot.len) else {
            self.stats.concealed += 1;
            return Playout::Conceal {
                timestamp: slot.timestamp,
            };
        };
        let start = index * self.slot_bytes;
        dest.copy_from_slice(&self.payloads[start..start + slot.len]);
        self.stats.played += 1;
        Playout::Frame {
            len: slot.len,
            timestamp: slot.timestamp,
            seq,
            marker: slot.marker,
        }
    }

    /// Marks a stored frame as consumed and makes it the last one played.
    fn discard(&mut self, seq: u16) {
        let slot = &mut self.slots[usize::from(seq) & self.mask];
        if slot.state == SlotState::Stored && slot.seq == seq {
            slot.state = SlotState::Played;
            self.stored -= 1;
        }
        self.last_seq = seq;
    }

    /// Moves `last_seq` forward so that `seq` fits the ring, as if the sequence numbers skipped
    /// had been played; refuses (false) when a stored frame would be skipped.
    fn skip_lost_burst(&mut self, seq: u16) -> bool {
        let base = seq.wrapping_sub((self.mask + 1) as u16);
        let blocked = self
            .slots
            .iter()
            .any(|slot| slot.state == SlotState::Stored && !seq_newer(slot.seq, base));
        if blocked {
            return false;
        }
        let skipped = seq_distance(base, self.last_seq).max(0) as u32;
        self.last_seq = base;
        // Keeps `missing = gap − consumed` unchanged for the next stored frame.
        self.consumed = self.consumed.saturating_sub(skipped);
        true
    }

    /// Asks the CPU to fetch the slot (and its payload) the next [`JitterBuffer::pop`] reads
    /// first: the one after the last played.
    pub fn prefetch_next(&self) {
        let index = usize::from(self.last_seq.wrapping_add(1)) & self.mask;
        if let Some(slot) = self.slots.get(index) {
            prefetch(slot);
        }
        let start = index * self.slot_bytes;
        if let Some(payload) = self.payloads.get(start..start + self.slot_bytes) {
            prefetch(payload);
        }
    }

    /// Lowest stored sequence number after `last_seq`.
    fn next_stored_seq(&self) -> Option<u16> {
        if self.stored == 0 {
            return None;
        }
        let span = seq_distance(self.newest_seq, self.last_seq);
        (1..=span)
            .map(|step| self.last_seq.wrapping_add(step as u16))
            .find(|&seq| self.is_stored(seq))
    }

    /// Whether the frame after `seq` is stored and due right after it.
    fn successor_buffered(&self, seq: u16, timestamp: u32) -> bool {
        let next = seq.wrapping_add(1);
        if !self.is_stored(next) {
            return false;
        }
        let slot = &self.slots[usize::from(next) & self.mask];
        i64::from(ts_diff(slot.timestamp, timestamp)) <= self.frame
    }

    /// Copies a packet into its slot.
    fn store(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        let index = usize::from(seq) & self.mask;
        if self.slots[index].state == SlotState::Stored {
            // Only reachable if the sequence window was violated; the newer packet wins.
            self.stored -= 1;
            self.stats.overflows += 1;
        }
        self.slots[index] = Slot {
            state: SlotState::Stored,
            seq,
            timestamp,
            marker,
            len: payload.len(),
        };
        let start = index * self.slot_bytes;
        self.payloads[start..start + payload.len()].copy_from_slice(payload);
        if self.stored == 0 || seq_newer(seq, self.newest_seq) {
            self.newest_seq = seq;
        }
        self.stored += 1;
    }

    /// Whether starting playout now would hold the fastest packet seen for `target`.
    fn prebuffered(&self, now: Instant) -> bool {
        self.prebuffer_wait(now) >= self.target
    }

    /// Leaves prebuffering; the delay in force is what the fastest packet will have waited.
    fn start_playing(&mut self, now: Instant) {
        self.mode = Mode::Playing;
        self.delay_est = self.prebuffer_wait(now);
        self.window_max = i64::MIN;
        self.window_count = 0;
        self.shrink_due = false;
        self.consumed = 0;
    }

    /// How long the fastest prebuffered packet will have waited if the anchor plays now: time
    /// since it arrived plus its timestamp distance from the anchor, in timestamp units.
    fn prebuffer_wait(&self, now: Instant) -> i64 {
        let Some(fastest) = self.fastest_transit else {
            return 0;
        };
        let playout_of_fastest = self.clock_units(now).wrapping_sub(fastest);
        i64::from(ts_diff(playout_of_fastest, self.head_ts))
    }

    /// `now` on the RTP clock, counted from the first push, modulo 2^32 like a timestamp.
    fn clock_units(&self, now: Instant) -> u32 {
        let Some(epoch) = self.epoch else {
            return 0;
        };
        // Truncation is the modulo 2^32 of RTP timestamp arithmetic.
        self.duration_to_units(now.saturating_duration_since(epoch)) as u32
    }

    /// Time left before the next tick (the frame at `head_ts` plays then), in timestamp units;
    /// makes arrival depths exact to the microsecond rather than to the frame.
    fn until_next_tick(&self, now: Instant) -> i64 {
        let Some(last_tick) = self.last_tick else {
            return 0;
        };
        let ptime = Duration::from_millis(u64::from(self.ptime_ms));
        let Some(next_tick) = last_tick.checked_add(ptime) else {
            return 0;
        };
        self.duration_to_units(next_tick.saturating_duration_since(now))
    }

    /// Wall time to timestamp units.
    fn duration_to_units(&self, elapsed: Duration) -> i64 {
        let units = elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000;
        units.min(i64::MAX as u128) as i64
    }

    /// Timestamp distance from the playout point to the newest stored packet.
    fn depth(&self) -> i64 {
        if self.stored == 0 {
            return 0;
        }
        let newest = &self.slots[usize::from(self.newest_seq) & self.mask];
        i64::from(ts_diff(newest.timestamp, self.head_ts)).max(0)
    }

    /// First packet of a stream (or after a restart): start prebuffering on it.
    fn anchor(&mut self, seq: u16, timestamp: u32) {
        self.mode = Mode::Buffering;
        self.last_seq = seq.wrapping_sub(1);
        self.head_ts = timestamp;
        self.newest_seq = seq;
        self.fastest_transit = None;
        self.consumed = 0;
        self.far_next = None;
    }

    /// Stream jump: drop everything buffered and prebuffer again from this packet.
    fn restart(&mut self, seq: u16, timestamp: u32) {
        let mut newest = self.last_seq;
        if self.stored > 0 && seq_newer(self.newest_seq, newest) {
            newest = self.newest_seq;
        }
        self.previous_newest = Some(newest);
        self.clear();
        self.anchor(seq, timestamp);
        // The transit reference belongs to the old stream; the jitter estimate carries over.
        self.last_transit = None;
        self.stats.resets += 1;
    }

    /// Empties the ring and the delay measurement.
    fn clear(&mut self) {
        self.slots.fill(EMPTY_SLOT);
        self.stored = 0;
        self.consumed = 0;
        self.fastest_transit = None;
        self.far_next = None;
        self.delay_est = 0;
        self.window_max = i64::MIN;
        self.window_count = 0;
        self.shrink_due = false;
    }

    /// A packet of the stream abandoned at the last reset, arriving late.
    fn is_previous_stream_leftover(&self, seq: u16) -> bool {
        let Some(previous) = self.previous_newest else {
            return false;
        };
        let behind = seq_distance(previous, seq);
        (0..self.ring_len()).contains(&behind)
    }

    /// RFC 3550 A.8 jitter update, plus the arrival depth for the delay measurement.
    fn observe_arrival(&mut self, now: Instant, timestamp: u32) {
        self.epoch.get_or_insert(now);
        let transit = self.clock_units(now).wrapping_sub(timestamp);
        if self.mode == Mode::Buffering {
            let faster = self
                .fastest_transit
                .is_none_or(|fastest| ts_diff(transit, fastest) < 0);
            if faster {
                self.fastest_transit = Some(transit);
            }
        }
        if let Some(last) = self.last_transit {
            // Capped so a timestamp discontinuity cannot blow the estimate up.
            let d = i64::from(ts_diff(transit, last)).abs().min(self.max_delay);
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);

        if self.mode == Mode::Playing {
            let depth = i64::from(ts_diff(timestamp, self.head_ts)) + self.until_next_tick(now);
            self.record_depth(depth);
        }
        self.refresh_target();
    }

    /// Feeds one arrival depth into the measurement window; a full window updates `delay_est`.
    fn record_depth(&mut self, depth: i64) {
        self.window_max = self.window_max.max(depth);
        self.window_count += 1;
        if self.window_count < self.window_len {
            return;
        }
        self.delay_est = self.window_max;
        // Dropping speech is audible: keep a surplus of one frame (silence periods shed it).
        self.shrink_due = self.delay_est >= self.target + 2 * self.frame;
        self.window_max = i64::MIN;
        self.window_count = 0;
    }

    /// Moves the delay in force (and the window being measured) by `delta`.
    fn adjust_delay(&mut self, delta: i64) {
        self.delay_est += delta;
        if self.window_max != i64::MIN {
            self.window_max += delta;
        }
        if delta < 0 {
            self.shrink_due = false;
        }
    }

    /// Raises the late floor to what a packet `lateness` late would have needed.
    fn raise_late_floor(&mut self, lateness: i64) {
        if lateness <= 0 {
            return;
        }
        let needed = (self.delay_est + lateness + self.frame).min(self.max_delay);
        self.late_floor = self.late_floor.max(needed);
        // A stall that comes back (late packets again after a gap, within the hold) holds the
        // floor; so does a late packet while it holds.
        let ptime = self.ptime_ms.max(1);
        let hold = LATE_FLOOR_HOLD_MS / ptime;
        if self.late_floor_hold > 0 || (LATE_PEAK_GAP_MS / ptime..=hold).contains(&self.since_late)
        {
            self.late_floor_hold = hold;
        }
        self.since_late = 0;
        self.refresh_target();
    }

    /// Per-tick decay of the late floor.
    fn decay_late_floor(&mut self) {
        self.since_late = self.since_late.saturating_add(1);
        if self.late_floor == 0 {
            return;
        }
        if self.late_floor_hold > 0 {
            self.late_floor_hold -= 1;
            return;
        }
        let step = (self.late_floor * i64::from(self.ptime_ms) / LATE_FLOOR_DECAY_MS).max(1);
        self.late_floor = (self.late_floor - step).max(0);
        self.refresh_target();
    }

    /// target = clamp(max(3 × jitter + ptime, late floor), min, max).
    fn refresh_target(&mut self) {
        let from_jitter = JITTER_MULTIPLIER * (self.jitter_q4 >> 4) + self.frame;
        self.target = from_jitter
            .max(self.late_floor)
            .clamp(self.min_delay, self.max_delay);
    }

    /// Lateness of a packet behind `last_seq`, if its timestamp makes it believable.
    fn plausible_lateness(&self, d_ts: i64) -> i64 {
        if d_ts < 0 && -d_ts <= self.max_delay {
            -d_ts
        } else {
            0
        }
    }

    /// Moves the playout point forward.
    fn advance_head(&mut self, units: i64) {
        self.head_ts = self.head_ts.wrapping_add(units as u32);
    }

    /// Whether the slot for `seq` holds that very sequence number (waiting or played).
    fn slot_holds(&self, seq: u16) -> bool {
        let slot = &self.slots[usize::from(seq) & self.mask];
        slot.state != SlotState::Empty && slot.seq == seq
    }

    /// Whether `seq` is waiting in the ring.
    fn is_stored(&self, seq: u16) -> bool {
        let slot = &self.slots[usize::from(seq) & self.mask];
        slot.state == SlotState::Stored && slot.seq == seq
    }

    /// Slot count as a sequence distance (the ring's, allocated or not).
    fn ring_len(&self) -> i32 {
        // At most MAX_SLOTS (4096), so the cast is exact.
        (self.mask + 1) as i32
    }

    /// Furthest ahead of the playout point a packet of this stream can plausibly land.
    fn ahead_limit(&self) -> i64 {
        self.max_delay + 2 * self.frame
    }

    /// Timestamp units to whole milliseconds (negative values read as 0).
    fn units_to_ms(&self, units: i64) -> u32 {
        (units.max(0) * 1000 / i64::from(self.clock_rate)).min(i64::from(u32::MAX)) as u32
    }
}

/// Milliseconds to timestamp units at `clock_rate`.
fn ms_to_units(ms: u32, clock_rate: u32) -> i64 {
    i64::from(ms) * i64::from(clock_rate) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTIME: u64 = 20;
    const FRAME: u32 = 160;

    /// Deterministic splitmix64 generator for the network model.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `0..=max`.
        fn upto(&mut self, max: u64) -> u64 {
            self.next() % (max + 1)
        }

        /// True with probability `permille / 1000`.
        fn chance(&mut self, permille: u64) -> bool {
            self.next() % 1000 < permille
        }
    }

    /// Network between sender and jitter buffer: delay = base + uniform jitter, plus loss,
    /// duplication and occasional extra delay that reorders packets.
    #[derive(Clone, Copy, Default)]
    struct Network {
        base_ms: u64,
        jitter_ms: u64,
        loss_permille: u64,
        dup_permille: u64,
        reorder_permille: u64,
        reorder_max_ms: u64,
    }

    /// One packet on the wire.
    #[derive(Clone, Copy)]
    struct InFlight {
        at_ms: u64,
        order: u64,
        index: u64,
        seq: u16,
        timestamp: u32,
        marker: bool,
    }

    /// What one `pop` returned.
    #[derive(Clone, Copy, Debug)]
    struct Tick {
        at_ms: u64,
        playout: Playout,
        /// Sender index read back from the played payload.
        index: Option<u64>,
    }

    /// Virtual-time call: a sender, the network, the jitter buffer and a 20 ms playout clock.
    struct Sim {
        jb: JitterBuffer,
        origin: Instant,
        rng: Rng,
        net: Network,
        in_flight: Vec<InFlight>,
        now_ms: u64,
        order: u64,
        pop_phase_ms: u64,
        ticks: Vec<Tick>,
        outcomes: Vec<(u64, PushOutcome)>,
        arrivals: Vec<(u64, u64)>,
        lost: u64,
        duplicated: u64,
        sent: u64,
    }

    impl Sim {
        fn new(config: JitterConfig, net: Network, seed: u64) -> Sim {
            Sim {
                jb: JitterBuffer::new(config),
                origin: Instant::now(),
                rng: Rng(seed),
                net,
                in_flight: Vec::new(),
                now_ms: 0,
                order: 0,
                pop_phase_ms: 0,
                ticks: Vec::new(),
                outcomes: Vec::new(),
                arrivals: Vec::new(),
                lost: 0,
                duplicated: 0,
                sent: 0,
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.origin + Duration::from_millis(ms)
        }

        /// Sends packet `index` now; `lossless` exempts it from the loss model.
        fn send(&mut self, index: u64, seq: u16, timestamp: u32, marker: bool, lossless: bool) {
            self.sent += 1;
            if !lossless && self.rng.chance(self.net.loss_permille) {
                self.lost += 1;
                return;
            }
            let copies = if self.rng.chance(self.net.dup_permille) {
                self.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut delay = self.net.base_ms + self.rng.upto(self.net.jitter_ms);
                if self.rng.chance(self.net.reorder_permille) {
                    delay += 1 + self.rng.upto(self.net.reorder_max_ms - 1);
                }
                self.order += 1;
                self.in_flight.push(InFlight {
                    at_ms: self.now_ms + delay,
                    order: self.order,
                    index,
                    seq,
                    timestamp,
                    marker,
                });
            }
        }

        /// Runs the clock up to and including `ms`: deliveries first, then the tick.
        fn advance_to(&mut self, ms: u64) {
            while self.now_ms < ms {
                self.now_ms += 1;
                self.deliver();
                if self.now_ms % PTIME == self.pop_phase_ms {
                    self.tick();
                }
            }
        }

        fn deliver(&mut self) {
            let now = self.now_ms;
            let mut due: Vec<InFlight> = self
                .in_flight
                .iter()
                .copied()
                .filter(|p| p.at_ms <= now)
                .collect();
            self.in_flight.retain(|p| p.at_ms > now);
            due.sort_by_key(|p| (p.at_ms, p.order));
            for packet in due {
                let mut payload = [0u8; 160];
                payload[..8].copy_from_slice(&packet.index.to_le_bytes());
                let outcome = self.jb.push(
                    self.at(now),
                    packet.seq,
                    packet.timestamp,
                    packet.marker,
                    &payload,
                );
                self.outcomes.push((packet.index, outcome));
                self.arrivals.push((packet.index, now));
            }
        }

        fn tick(&mut self) {
            let mut out = [0u8; 1500];
            let playout = self.jb.pop(self.at(self.now_ms), &mut out);
            let index = match playout {
                Playout::Frame { len, .. } => {
                    assert_eq!(len, 160);
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&out[..8]);
                    Some(u64::from_le_bytes(bytes))
                }
                _ => None,
            };
            self.ticks.push(Tick {
                at_ms: self.now_ms,
                playout,
                index,
            });
        }

        /// Sends `count` packets every ptime starting now, with sequence numbers and timestamps
        /// continuing from `first`.
        fn talk(&mut self, first: u64, count: u64, seq0: u16, ts0: u32) {
            for index in first..first + count {
                let step = index - first;
                self.send(
                    index,
                    seq0.wrapping_add(step as u16),
                    ts0.wrapping_add(step as u32 * FRAME),
                    step == 0,
                    index == 0,
                );
                self.advance_to(self.now_ms + PTIME);
            }
        }

        fn played(&self) -> Vec<u64> {
            self.ticks.iter().filter_map(|t| t.index).collect()
        }

        fn conceals(&self) -> usize {
            self.ticks
                .iter()
                .filter(|t| matches!(t.playout, Playout::Conceal { .. }))
                .count()
        }

        fn outcome_count(&self, wanted: PushOutcome) -> usize {
            self.outcomes.iter().filter(|(_, o)| *o == wanted).count()
        }

        /// Tick at which sender packet `index` was played.
        fn played_at(&self, index: u64) -> Option<u64> {
            self.ticks
                .iter()
                .find(|t| t.index == Some(index))
                .map(|t| t.at_ms)
        }

        fn first_arrival(&self, index: u64) -> Option<u64> {
            self.arrivals
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, at)| *at)
        }
    }

    fn config(min_delay_ms: u32) -> JitterConfig {
        JitterConfig {
            min_delay_ms,
            ..JitterConfig::default()
        }
    }

    #[test]
    fn in_order_stream_plays_every_frame_at_min_delay() {
        let net = Network {
            base_ms: 30,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), net, 1);
        sim.pop_phase_ms = 10; // ticks at 30, 50, ...: the same instants packets land
        sim.talk(0, 500, 1000, 123_456);
        sim.advance_to(sim.now_ms + 400);

        let played = sim.played();
        assert_eq!(played, (0..500).collect::<Vec<_>>());
        for index in 0..500 {
            let arrival = sim.first_arrival(index).expect("every packet arrives");
            let playout = sim.played_at(index).expect("every packet plays");
            assert_eq!(playout - arrival, 20, "packet {index} waited min_delay");
        }
        let stats = sim.jb.stats();
        assert_eq!(stats.played, 500);
        assert_eq!(stats.late, 0);
        assert_eq!(stats.stretched + stats.shrunk, 0);
        assert_eq!(stats.target_delay_ms, 20);
        assert_eq!(stats.jitter_ms, 0);
        // Before the stream ends nothing is concealed; afterwards the PLC tail is bounded.
        let last_frame_tick = sim.played_at(499).expect("played");
        assert!(sim
            .ticks
            .iter()
            .filter(|t| t.at_ms <= last_frame_tick)
            .all(|t| !matches!(t.playout, Playout::Conceal { .. })));
        assert_eq!(
            stats.concealed, 10,
            "max_delay / ptime concealment, then silence"
        );
        assert!(matches!(
            sim.ticks.last().map(|t| t.playout),
            Some(Playout::Silence)
        ));
    }

    #[test]
    fn delay_is_constant_whatever_the_tick_phase() {
        let net = Network {
            base_ms: 37,
            ..Network::default()
        };
        let mut sim = Sim::new(config(40), net, 2);
        sim.pop_phase_ms = 3;
        sim.talk(0, 200, 7, 0);
        sim.advance_to(sim.now_ms + 100);
        assert_eq!(sim.played(), (0..200).collect::<Vec<_>>());
        let waits: Vec<u64> = (0..200)
            .map(|i| sim.played_at(i).unwrap_or(0) - sim.first_arrival(i).unwrap_or(0))
            .collect();
        assert!(waits.iter().all(|&w| w == waits[0]), "constant wait");
        assert!(
            (40..60).contains(&waits[0]),
            "wait {} = target + phase",
            waits[0]
        );
    }

    #[test]
    fn random_loss_is_concealed_frame_for_frame() {
        let net = Network {
            base_ms: 25,
            loss_permille: 50,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), net, 7);
        sim.pop_phase_ms = 5;
        sim.talk(0, 2999, 0, 0);
        sim.send(2999, 2999, 2999 * FRAME, false, true);
        sim.advance_to(sim.now_ms + 200);

        let end = sim.played_at(2999).expect("last packet is lossless");
        let concealed_before_end = sim
            .ticks
            .iter()
            .filter(|t| t.at_ms <= end && matches!(t.playout, Playout::Conceal { .. }))
            .count() as u64;
        let played = sim.played();
        assert!(sim.lost > 100, "5% of 3000: {}", sim.lost);
        assert_eq!(concealed_before_end, sim.lost);
        assert_eq!(played.len() as u64 + concealed_before_end, sim.sent);
        assert!(played.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(sim.jb.stats().late, 0);
    }

    #[test]
    fn reordering_within_40_ms_is_undone() {
        let net = Network {
            base_ms: 20,
            reorder_permille: 150,
            reorder_max_ms: 40,
            ..Network::default()
        };
        let mut sim = Sim::new(config(40), net, 11);
        sim.talk(0, 1500, 60000, 99);
        sim.advance_to(sim.now_ms + 300);

        let reordered = sim.arrivals.windows(2).filter(|w| w[1].0 < w[0].0).count();
        assert!(reordered > 50, "the network did reorder: {reordered}");
        assert_eq!(sim.played(), (0..1500).collect::<Vec<_>>());
        let end = sim.played_at(1499).expect("played");
        assert!(sim
            .ticks
            .iter()
            .filter(|t| t.at_ms <= end)
            .all(|t| !matches!(t.playout, Playout::Conceal { .. })));
        assert_eq!(sim.jb.stats().late, 0);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let net = Network {
            base_ms: 20,
            jitter_ms: 10,
            dup_permille: 80,
            ..Network::default()
        };
        let mut sim = Sim::new(config(40), net, 5);
        sim.talk(0, 1000, 1, 1);
        sim.advance_to(sim.now_ms + 300);

        assert!(sim.duplicated > 40);
        assert_eq!(
            sim.outcome_count(PushOutcome::Duplicate) as u64,
            sim.duplicated
        );
        let stats = sim.jb.stats();
        assert_eq!(stats.duplicates, sim.duplicated);
        // Each frame once, in order; the start-up overshoot of one tick may be trimmed by
        // dropping a frame (counted as shrunk), never by playing one twice.
        let played = sim.played();
        assert!(played.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(played.len() as u64 + stats.shrunk, 1000);
        assert!(stats.shrunk <= 1);
        assert_eq!(
            stats.concealed, 10,
            "only the PLC tail after the last frame"
        );
        assert_eq!(sim.conceals(), 10);
    }

    /// Fraction of packets sent in `from..to` that were dropped as late.
    fn late_fraction(sim: &Sim, from: u64, to: u64) -> f64 {
        let late = sim
            .outcomes
            .iter()
            .filter(|(i, o)| (from..to).contains(i) && *o == PushOutcome::TooLate)
            .count();
        late as f64 / (to - from) as f64
    }

    #[test]
    fn uniform_jitter_raises_the_target_and_late_packets_become_rare() {
        let net = Network {
            base_ms: 20,
            jitter_ms: 60,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), net, 3);
        sim.talk(0, 1500, 0, 0); // 30 s

        let stats = sim.jb.stats();
        assert!(
            stats.target_delay_ms > 40,
            "target {}",
            stats.target_delay_ms
        );
        assert!(stats.target_delay_ms <= 200);
        assert!(
            (12..=30).contains(&stats.jitter_ms),
            "uniform 0..60 has mean |difference| 20 ms: {}",
            stats.jitter_ms
        );
        let converged = late_fraction(&sim, 250, 1500);
        assert!(converged < 0.01, "late after convergence: {converged}");
        let longest_wait = (1000..1400)
            .filter_map(|i| Some(sim.played_at(i)? - sim.first_arrival(i)?))
            .max();
        assert!(
            longest_wait >= Some(50),
            "the fastest packets are held ~60 ms, not min_delay: {longest_wait:?}"
        );
    }

    #[test]
    fn calm_after_jitter_brings_the_delay_back_down() {
        let jittery = Network {
            base_ms: 20,
            jitter_ms: 60,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), jittery, 9);
        sim.talk(0, 500, 0, 0); // 10 s of jitter
        let high = sim.jb.target_delay_ms();
        assert!(high > 40);

        sim.net = Network {
            base_ms: 20,
            ..Network::default()
        };
        sim.talk(500, 250, 500, 500 * FRAME); // 5 s calm
        let stats = sim.jb.stats();
        assert!(
            stats.target_delay_ms <= 25,
            "target back near min after 5 s: {} (was {high})",
            stats.target_delay_ms
        );
        sim.talk(750, 250, 750, 750 * FRAME); // 5 s more
        sim.advance_to(sim.now_ms + 300);
        let waits: Vec<u64> = (950..1000)
            .map(|i| sim.played_at(i).unwrap_or(u64::MAX) - sim.first_arrival(i).unwrap_or(0))
            .collect();
        assert!(
            waits.iter().all(|&w| w <= 40),
            "buffering delay shrank: {waits:?}"
        );
        assert!(sim.jb.stats().shrunk > 0);
        assert_eq!(late_fraction(&sim, 500, 1000), 0.0);
    }

    #[test]
    fn sequence_and_timestamp_wraparound_play_through() {
        let net = Network {
            base_ms: 20,
            jitter_ms: 15,
            ..Network::default()
        };
        let mut sim = Sim::new(config(40), net, 4);
        let ts0 = u32::MAX - 100 * FRAME + 1;
        sim.talk(0, 300, 65436, ts0);
        sim.advance_to(sim.now_ms + 300);

        assert_eq!(sim.played(), (0..300).collect::<Vec<_>>());
        let frames: Vec<(u16, u32)> = sim
            .ticks
            .iter()
            .filter_map(|t| match t.playout {
                Playout::Frame { seq, timestamp, .. } => Some((seq, timestamp)),
                _ => None,
            })
            .collect();
        for pair in frames.windows(2) {
            assert_eq!(pair[1].0, pair[0].0.wrapping_add(1));
            assert_eq!(pair[1].1, pair[0].1.wrapping_add(FRAME));
        }
        assert!(frames.iter().any(|&(seq, _)| seq == 65535));
        assert!(frames.iter().any(|&(seq, _)| seq == 0));
        assert!(frames.iter().any(|&(_, ts)| ts == 0));
        let stats = sim.jb.stats();
        assert_eq!(stats.resets, 0);
        assert_eq!(stats.late, 0);
    }

    /// Runs 2 s of talk, a 2 s hold, then 2 s more starting with the given sequence number and
    /// timestamp; returns the sim and the tick of the last frame before the hold.
    fn hold_and_resume(resume_seq: u16, resume_ts: u32) -> (Sim, u64) {
        let net = Network {
            base_ms: 30,
            jitter_ms: 5,
            ..Network::default()
        };
        let mut sim = Sim::new(config(40), net, 6);
        sim.talk(0, 100, 5000, 80_000);
        sim.advance_to(sim.now_ms + 2000);
        let before = sim.played_at(99).expect("played before the hold");
        sim.talk(100, 100, resume_seq, resume_ts);
        sim.advance_to(sim.now_ms + 300);
        (sim, before)
    }

    fn assert_clean_resume(sim: &Sim, before: u64) {
        assert_eq!(sim.played(), (0..200).collect::<Vec<_>>());
        let gap_conceals = sim
            .ticks
            .iter()
            .filter(|t| t.at_ms > before && matches!(t.playout, Playout::Conceal { .. }))
            .filter(|t| t.at_ms < sim.played_at(199).unwrap_or(0))
            .count();
        assert!(gap_conceals <= 10, "PLC tail bounded: {gap_conceals}");
        let resumed = sim.played_at(100).expect("resumed");
        assert!(sim
            .ticks
            .iter()
            .filter(|t| t.at_ms > resumed && t.at_ms <= sim.played_at(199).unwrap_or(0))
            .all(|t| matches!(t.playout, Playout::Frame { .. })));
        let wait = resumed - sim.first_arrival(100).unwrap_or(0);
        assert!(wait <= 80, "resumed with a normal delay: {wait}");
    }

    #[test]
    fn hold_with_frozen_timestamps_resets_cleanly() {
        // Sequence continues, timestamp continues as if no time had passed: a 2 s jump back.
        let (sim, before) = hold_and_resume(5100, 80_000 + 100 * FRAME);
        assert_eq!(sim.jb.stats().resets, 1);
        let first_resumed = sim.outcomes.iter().find(|(index, _)| *index == 100);
        assert_eq!(first_resumed.map(|(_, o)| *o), Some(PushOutcome::Reset));
        assert_clean_resume(&sim, before);
    }

    #[test]
    fn hold_with_wall_clock_timestamps_resumes_without_reset() {
        // Timestamp advanced with the 2 s of hold (200 frames = 100 sent + 100 skipped).
        let (sim, before) = hold_and_resume(5100, 80_000 + 200 * FRAME);
        assert_eq!(sim.jb.stats().resets, 0);
        assert_clean_resume(&sim, before);
    }

    #[test]
    fn hold_then_new_stream_position_resets() {
        let (sim, before) = hold_and_resume(31_000, 3_000_000_000);
        assert_eq!(sim.jb.stats().resets, 1);
        assert_clean_resume(&sim, before);
    }

    #[test]
    fn silence_periods_play_as_silence_without_reset() {
        let net = Network {
            base_ms: 20,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), net, 8);
        let mut seq = 0u16;
        let mut ts = 0u32;
        for spurt in 0..5u64 {
            sim.talk(spurt * 50, 50, seq, ts);
            seq = seq.wrapping_add(50);
            // 1 s of DTX: no packets, timestamp keeps running.
            sim.advance_to(sim.now_ms + 1000);
            ts = ts.wrapping_add(50 * FRAME + 50 * FRAME);
        }
        assert_eq!(sim.played(), (0..250).collect::<Vec<_>>());
        let stats = sim.jb.stats();
        assert_eq!(stats.resets, 0);
        assert_eq!(stats.late, 0);
        let marked = sim
            .ticks
            .iter()
            .filter(|t| matches!(t.playout, Playout::Frame { marker: true, .. }))
            .count();
        assert_eq!(marked, 5, "talkspurt starts keep their marker");
        assert!(stats.concealed <= 5 * 10, "PLC tail per talkspurt end");
    }

    #[test]
    fn late_packet_is_refused_and_raises_the_target() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut jb = JitterBuffer::new(config(20));
        let mut out = [0u8; 1500];
        let payload = [1u8; 160];
        assert_eq!(
            jb.push(at(0), 10, 1600, false, &payload),
            PushOutcome::Stored
        );
        assert_eq!(
            jb.push(at(20), 11, 1760, false, &payload),
            PushOutcome::Stored
        );
        assert!(matches!(
            jb.pop(at(20), &mut out),
            Playout::Frame { seq: 10, .. }
        ));
        assert!(matches!(
            jb.pop(at(40), &mut out),
            Playout::Frame { seq: 11, .. }
        ));
        // Packet 12 missing at its tick: concealed; then it arrives.
        assert_eq!(
            jb.pop(at(60), &mut out),
            Playout::Conceal { timestamp: 1920 }
        );
        assert_eq!(
            jb.push(at(75), 12, 1920, false, &payload),
            PushOutcome::TooLate
        );
        assert_eq!(
            jb.push(at(76), 10, 1600, false, &payload),
            PushOutcome::Duplicate
        );
        let stats = jb.stats();
        assert_eq!(stats.late, 1);
        assert_eq!(stats.duplicates, 1);
        assert!(
            stats.target_delay_ms >= 40,
            "target {}",
            stats.target_delay_ms
        );
    }

    #[test]
    fn stray_far_packets_do_not_reset_but_a_sequence_of_them_does() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut jb = JitterBuffer::new(config(20));
        let mut out = [0u8; 1500];
        let payload = [0u8; 160];
        for i in 0..10u16 {
            jb.push(
                at(u64::from(i) * 20),
                1000 + i,
                u32::from(i) * FRAME,
                false,
                &payload,
            );
            jb.pop(at(u64::from(i) * 20), &mut out);
        }
        assert_eq!(
            jb.push(at(200), 500, 0, false, &payload),
            PushOutcome::TooLate
        );
        assert_eq!(
            jb.push(at(201), 700, 0, false, &payload),
            PushOutcome::TooLate
        );
        assert_eq!(jb.stats().resets, 0);
        assert_eq!(
            jb.push(at(202), 701, 160, false, &payload),
            PushOutcome::Reset
        );
        assert_eq!(jb.stats().resets, 1);
        // A leftover of the abandoned stream is dropped, not a reason to jump back.
        assert_eq!(
            jb.push(at(203), 1009, 9 * FRAME, false, &payload),
            PushOutcome::TooLate
        );
        assert_eq!(jb.stats().resets, 1);
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let now = Instant::now();
        assert_eq!(jb.push(now, 1, 0, false, &[0; 1501]), PushOutcome::TooLarge);
        assert_eq!(jb.push(now, 1, 0, false, &[0; 1500]), PushOutcome::Stored);
        let stats = jb.stats();
        assert_eq!((stats.pushed, stats.oversized), (2, 1));
        assert_eq!(jb.buffered_frames(), 1);
    }

    #[test]
    fn short_output_buffer_conceals_instead_of_truncating() {
        let mut jb = JitterBuffer::new(config(0));
        let now = Instant::now();
        let later = now + Duration::from_millis(20);
        jb.push(now, 1, 0, false, &[7; 100]);
        jb.push(later, 2, FRAME, false, &[7; 40]);
        let mut small = [0u8; 50];
        assert_eq!(jb.pop(later, &mut small), Playout::Conceal { timestamp: 0 });
        assert_eq!(small, [0; 50]);
        assert!(matches!(
            jb.pop(later + Duration::from_millis(20), &mut small),
            Playout::Frame {
                len: 40,
                seq: 2,
                ..
            }
        ));
        assert_eq!(small[..40], [7; 40]);
    }

    #[test]
    fn storage_starts_at_the_expected_frame_and_grows_only_for_longer_packets() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        let mut out = [0u8; 1500];
        jb.push(t0, 0, 0, false, &[1u8; 160]);
        assert_eq!(
            (jb.slots.len(), jb.payloads.len()),
            (32, 32 * 160),
            "G.711 at 20 ms: 160 bytes a slot"
        );
        for (k, len) in [(1u16, 240usize), (2, 100), (3, 700)] {
            let payload = vec![k as u8 + 1; len];
            let now = t0 + Duration::from_millis(u64::from(k) * 20);
            jb.push(now, k, u32::from(k) * FRAME, false, &payload);
        }
        assert_eq!(
            jb.slot_bytes, 700,
            "160 → 320 (for 240) → 700 (twice 320 is short)"
        );
        assert_eq!(jb.payloads.len(), 32 * 700);
        // What was stored before each growth is still there.
        let mut played = Vec::new();
        for k in 0..40u64 {
            if let Playout::Frame { len, .. } = jb.pop(t0 + Duration::from_millis(k * 20), &mut out)
            {
                played.push((out[0], len));
            }
        }
        assert_eq!(played, [(1, 160), (2, 240), (3, 100), (4, 700)]);
        let refused = jb.push(t0, 9, 9 * FRAME, false, &[0u8; 1501]);
        assert_eq!(
            refused,
            PushOutcome::TooLarge,
            "max_payload still bounds it"
        );
        assert_eq!(jb.slot_bytes, 700);
    }

    #[test]
    fn a_stream_holds_no_ring_until_its_first_packet() {
        // An idle established call that never received RTP (issue 19: memory per idle call).
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        let mut out = [0u8; 1500];
        for k in 0..10u64 {
            assert_eq!(
                jb.pop(t0 + Duration::from_millis(k * 20), &mut out),
                Playout::Silence
            );
        }
        assert!(jb.peek_after(0, &mut out).is_none());
        jb.reset();
        assert_eq!((jb.slots.len(), jb.payloads.len()), (0, 0));
        assert_eq!(jb.buffered_frames(), 0);
        jb.push(t0, 7, 7 * FRAME, false, &[1u8; 160]);
        assert_eq!((jb.slots.len(), jb.payloads.len()), (32, 32 * 160));
    }

    #[test]
    fn storage_is_never_reallocated_by_push_or_pop() {
        // Slots sized for the largest packet first: after the first push nothing moves.
        let mut jb = JitterBuffer::new(JitterConfig {
            expected_payload: 1500,
            ..JitterConfig::default()
        });
        let t0 = Instant::now();
        jb.push(t0, u16::MAX, 0u32.wrapping_sub(FRAME), false, &[0u8; 160]);
        let slots = (jb.slots.as_ptr(), jb.slots.len());
        let payloads = (jb.payloads.as_ptr(), jb.payloads.len());
        assert_eq!(slots.1, 32, "2 × 200/20 + 4 rounded up to a power of two");
        assert_eq!(payloads.1, 32 * 1500);

        let mut rng = Rng(42);
        let mut out = [0u8; 1500];
        let payload = [3u8; 1500];
        for k in 0..20_000u64 {
            let now = t0 + Duration::from_millis(k * 20 + rng.upto(60));
            let len = rng.upto(1500) as usize;
            // 5% loss, 5% duplicates, jitter, and a garbage position now and then.
            for _ in 0..usize::from(!rng.chance(50)) + usize::from(rng.chance(50)) {
                jb.push(
                    now,
                    k as u16,
                    (k as u32).wrapping_mul(FRAME),
                    false,
                    &payload[..len],
                );
            }
            if k % 1000 == 999 {
                jb.push(
                    now,
                    rng.next() as u16,
                    rng.next() as u32,
                    false,
                    &payload[..10],
                );
            }
            jb.pop(t0 + Duration::from_millis(k * 20), &mut out);
        }
        assert_eq!((jb.slots.as_ptr(), jb.slots.len()), slots);
        assert_eq!((jb.payloads.as_ptr(), jb.payloads.len()), payloads);
        assert!(jb.buffered_frames() <= 32);
        assert!(jb.stats().played > 15_000, "{:?}", jb.stats());
    }

    #[test]
    fn push_and_pop_allocate_nothing() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        let mut rng = Rng(7);
        let mut out = [0u8; 1500];
        let payload = [5u8; 160];
        let mut frames = 0;
        // The first packet allocates the ring (an idle stream holds none); nothing after it.
        jb.push(t0, u16::MAX, 0u32.wrapping_sub(FRAME), false, &payload);
        let allocations = crate::media::alloc_counter::allocations_during(|| {
            for k in 0..5000u64 {
                let now = t0 + Duration::from_millis(k * 20 + rng.upto(50));
                if !rng.chance(30) {
                    let seq = k as u16;
                    jb.push(now, seq, (k as u32).wrapping_mul(FRAME), false, &payload);
                }
                if k % 700 == 699 {
                    jb.push(now, rng.next() as u16, rng.next() as u32, true, &payload);
                }
                if matches!(
                    jb.pop(t0 + Duration::from_millis(k * 20), &mut out),
                    Playout::Frame { .. }
                ) {
                    frames += 1;
                }
                let _ = jb.stats();
            }
        });
        assert_eq!(allocations, 0, "the packet path never touches the heap");
        assert!(frames > 4000, "{frames} frames played");
    }

    #[test]
    fn random_pushes_and_pops_never_panic_or_corrupt_counts() {
        let t0 = Instant::now();
        let mut rng = Rng(0xdead);
        let configs = [
            JitterConfig::default(),
            JitterConfig {
                clock_rate: 48000,
                ptime_ms: 10,
                min_delay_ms: 0,
                max_delay_ms: 60,
                max_payload: 200,
                expected_payload: 40,
            },
            JitterConfig {
                clock_rate: 0,
                ptime_ms: 0,
                min_delay_ms: 500,
                max_delay_ms: 0,
                max_payload: 0,
                expected_payload: 160,
            },
        ];
        for config in configs {
            let mut jb = JitterBuffer::new(config);
            let mut out = [0u8; 1500];
            let mut now = t0;
            let payload = [9u8; 300];
            for _ in 0..20_000 {
                now += Duration::from_millis(rng.upto(30));
                if rng.chance(600) {
                    let seq = rng.next() as u16 & 0x3f;
                    let ts = (rng.next() as u32 & 0x3fff).wrapping_mul(7);
                    jb.push(
                        now,
                        seq,
                        ts,
                        rng.chance(100),
                        &payload[..rng.upto(300) as usize],
                    );
                } else {
                    jb.pop(now, &mut out);
                }
                assert!(jb.buffered_frames() <= jb.slots.len());
                let counted = jb
                    .slots
                    .iter()
                    .filter(|s| s.state == SlotState::Stored)
                    .count();
                assert_eq!(counted, jb.buffered_frames());
                if jb.buffered_frames() > 0 {
                    assert!(jb.next_stored_seq().is_some(), "buffered frames reachable");
                }
            }
        }
    }

    #[test]
    fn reset_forgets_the_stream_but_keeps_counters() {
        let now = Instant::now();
        let mut jb = JitterBuffer::new(config(20));
        jb.push(now, 1, 0, false, &[0; 10]);
        jb.reset();
        assert_eq!(jb.buffered_frames(), 0);
        assert_eq!(jb.pop(now, &mut [0; 1500]), Playout::Silence);
        assert_eq!(jb.push(now, 9000, 5, false, &[0; 10]), PushOutcome::Stored);
        assert_eq!(jb.stats().pushed, 2);
        assert_eq!(jb.stats().resets, 0);
    }

    #[test]
    fn silence_periods_absorb_the_delay_shrink_so_no_speech_is_dropped() {
        let jittery = Network {
            base_ms: 20,
            jitter_ms: 60,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), jittery, 4);
        sim.talk(0, 500, 0, 0);
        assert!(sim.jb.depth_ms() >= 40 || sim.jb.target_delay_ms() > 40);
        sim.net = Network {
            base_ms: 20,
            ..Network::default()
        };
        // Calm talkspurts of 400 ms separated by 600 ms of DTX: sequence numbers continue,
        // timestamps follow the wall clock.
        let (mut index, mut seq) = (500u64, 500u16);
        let mut calm = Vec::new();
        for _ in 0..10 {
            sim.talk(index, 20, seq, index as u32 * FRAME);
            calm.extend(index..index + 20);
            index += 50;
            seq += 20;
            sim.advance_to(sim.now_ms + 600);
        }
        let stats = sim.jb.stats();
        assert!(stats.shrunk >= 2, "delay came down: {}", stats.shrunk);
        let played = sim.played();
        assert!(
            calm.iter().all(|i| played.contains(i)),
            "every calm frame played"
        );
        let last = calm[calm.len() - 1];
        let wait = sim.played_at(last).unwrap_or(0) - sim.first_arrival(last).unwrap_or(0);
        assert_eq!(wait, 20, "back at min_delay");
        assert_eq!(stats.resets, 0);
    }

    #[test]
    fn long_loss_burst_is_bridged_without_reset() {
        let net = Network {
            base_ms: 30,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), net, 12);
        sim.talk(0, 100, 40_000, 0);
        // 30 packets (600 ms) lost in a row: more than the ring spans.
        sim.advance_to(sim.now_ms + 600);
        sim.talk(130, 100, 40_130, 130 * FRAME);
        sim.advance_to(sim.now_ms + 100);

        let stats = sim.jb.stats();
        assert_eq!(stats.resets, 0);
        assert_eq!(stats.late, 0);
        assert_eq!(stats.overflows, 0);
        let played = sim.played();
        assert_eq!(played, (0..100).chain(130..230).collect::<Vec<_>>());
        let gap_conceals = sim
            .ticks
            .iter()
            .filter(|t| t.at_ms < sim.played_at(130).unwrap_or(0))
            .filter(|t| matches!(t.playout, Playout::Conceal { .. }))
            .count();
        assert_eq!(gap_conceals, 10, "PLC for max_delay, then silence");
    }

    #[test]
    fn delay_step_costs_a_few_late_packets_then_none() {
        let net = Network {
            base_ms: 20,
            jitter_ms: 5,
            ..Network::default()
        };
        let mut sim = Sim::new(config(20), net, 2);
        sim.talk(0, 500, 0, 0);
        sim.net.base_ms += 100; // route change
        sim.talk(500, 500, 500, 500 * FRAME);
        sim.advance_to(sim.now_ms + 300);
        let late = late_fraction(&sim, 500, 1000) * 500.0;
        assert!(late <= 6.0, "late packets around the step: {late}");
        assert!(sim.jb.stats().stretched > 0, "held ticks to grow the delay");
        assert_eq!(late_fraction(&sim, 600, 1000), 0.0);
        let played = sim.played();
        assert!(played.windows(2).all(|w| w[0] < w[1]));
        assert!(played.len() >= 990);
    }

    /// Sends frames `indices` 20 ms apart over a 20 ms network from a sender that stalls for
    /// 60 ms wherever `since_stall(index)` (frames since a stall began, wrapping) is below 3:
    /// those three frames arrive together with the next, 80 ms after the first was due.
    fn talk_with_stalls(
        sim: &mut Sim,
        indices: std::ops::Range<u64>,
        since_stall: impl Fn(u64) -> u64,
    ) {
        for index in indices {
            let phase = since_stall(index);
            sim.net.base_ms = if phase < 3 { 80 - 20 * phase } else { 20 };
            sim.send(index, index as u16, index as u32 * FRAME, index == 0, true);
            sim.advance_to(sim.now_ms + PTIME);
        }
    }

    #[test]
    fn a_sender_that_stalls_every_two_seconds_loses_frames_at_its_first_two_stalls_only() {
        // A sender (an overloaded PBX, a radio link) that stops for 60 ms every two seconds,
        // a second into each period, and then sends what it held at once: once the stall has
        // come back, the delay covers the next ones.
        let mut sim = Sim::new(config(20), Network::default(), 3);
        talk_with_stalls(&mut sim, 0..1500, |index| (index % 100).wrapping_sub(50));
        sim.advance_to(sim.now_ms + 300);
        let stats = sim.jb.stats();
        let first_stalls = late_fraction(&sim, 0, 300) * 300.0;
        assert!(
            first_stalls <= 6.0,
            "late at the first two stalls: {first_stalls}"
        );
        assert_eq!(
            late_fraction(&sim, 300, 1500),
            0.0,
            "later stalls found the delay grown"
        );
        assert_eq!(stats.shrunk, 0, "frames dropped between stalls");
        assert!(sim.played().len() >= 1494, "{stats:?}");
    }

    #[test]
    fn the_delay_one_stall_asked_for_goes_as_it_came() {
        let mut sim = Sim::new(config(20), Network::default(), 4);
        // One 60 ms stall, a second into the call.
        let one_stall = |index: u64| index.wrapping_sub(50);
        talk_with_stalls(&mut sim, 0..61, one_stall);
        assert!(
            sim.jb.target_delay_ms() >= 60,
            "the stall raised the target"
        );
        talk_with_stalls(&mut sim, 61..500, one_stall);
        assert!(
            sim.outcome_count(PushOutcome::TooLate) >= 1,
            "the stall made packets late"
        );
        assert!(
            sim.jb.target_delay_ms() <= 25,
            "eight seconds on, the target is back down: {}",
            sim.jb.target_delay_ms()
        );
    }

    #[test]
    fn peek_after_a_concealed_frame_shows_the_next_packet_without_consuming_it() {
        let start = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let frame = |i: u8| [i; 20];
        // Frames 0, 1, 3, 4: frame 2 is lost.
        for i in [0u8, 1, 3, 4] {
            let at = start + Duration::from_millis(20 * u64::from(i));
            assert_eq!(
                jb.push(at, u16::from(i), 160 * u32::from(i), false, &frame(i)),
                PushOutcome::Stored
            );
        }
        let mut out = [0u8; 64];
        let mut now = start + Duration::from_millis(100);
        let mut concealed = None;
        for _ in 0..6 {
            if let Playout::Conceal { timestamp } = jb.pop(now, &mut out) {
                concealed = Some(timestamp);
                break;
            }
            now += Duration::from_millis(20);
        }
        let timestamp = concealed.expect("frame 2 is concealed");
        assert_eq!(timestamp, 320);
        let mut peeked = [0u8; 64];
        assert_eq!(jb.peek_after(timestamp, &mut peeked), Some(20));
        assert_eq!(&peeked[..20], &frame(3));
        // Not consumed: frame 3 plays next.
        now += Duration::from_millis(20);
        assert!(matches!(
            jb.pop(now, &mut out),
            Playout::Frame { seq: 3, .. }
        ));
        // Nothing follows a frame that is not buffered.
        assert_eq!(jb.peek_after(9999, &mut peeked), None);
    }

    /// What waits for playout when a relay starts forwarding as packets arrive goes out at
    /// once, in sequence order with a gap kept a gap; then the stream is forgotten, so a later
    /// packet starts prebuffering again.
    #[test]
    fn hand_over_gives_the_waiting_frames_in_order_and_forgets_the_stream() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let start = Instant::now();
        let frame = |i: u8| [i; 160];
        // Frames 10, 12, 11, 14 (13 lost), arriving out of order.
        for seq in [10u16, 12, 11, 14] {
            let marker = seq == 10;
            let outcome = jb.push(start, seq, 160 * u32::from(seq), marker, &frame(seq as u8));
            assert_eq!(outcome, PushOutcome::Stored);
        }
        let mut drained = Vec::new();
        let mut out = [0u8; 160];
        while let Some(w) = jb.hand_over(&mut out) {
            assert_eq!(out[..w.len], frame(w.seq as u8)[..]);
            drained.push((w.seq, w.timestamp, w.marker));
        }
        assert_eq!(
            drained,
            [
                (10, 1600, true),
                (11, 1760, false),
                (12, 1920, false),
                (14, 2240, false)
            ]
        );
        assert_eq!(jb.buffered_frames(), 0);
        assert_eq!(jb.stats().played, 4);
        assert_eq!(jb.pop(start, &mut out), Playout::Silence, "nothing left");
        // A later packet is a new stream: it prebuffers, then plays.
        let later = start + Duration::from_millis(200);
        jb.push(later, 15, 2400, false, &frame(15));
        let mut played = None;
        for tick in 1..=5 {
            if let Playout::Frame { seq, .. } =
                jb.pop(later + Duration::from_millis(20 * tick), &mut out)
            {
                played = Some(seq);
                break;
            }
        }
        assert_eq!(played, Some(15));
    }
}
