//! RFC 4733 telephone-event (DTMF relay) for one RTP stream, in both directions.
//!
//! Owns: the 4-byte event block wire format, the receive state machine that turns
//! event packets into digits (each key press reported exactly once), and the send
//! state machine that turns queued digits into the packet sequence a media session
//! sends in place of audio.
//!
//! Must not: read the clock, touch sockets, allocate per packet, log, or parse RTP
//! headers. The caller hands over (or writes) marker bit, sequence number, timestamp
//! and payload; all time comes in as a `now: Instant` parameter.
//!
//! Decisions where RFC 4733 leaves room:
//! - A digit is reported when its event ends: on the first end (E bit) packet, when a
//!   newer event starts while it is open ([`EndedBy::NewEvent`]), or when no update
//!   arrived for [`DEFAULT_END_TIMEOUT`] (250 ms, [`EndedBy::Timeout`]). The reported
//!   duration is therefore final (longest duration seen for the event).
//! - Only the first 4-byte block of a payload is read; extra blocks (payloads of 8 or
//!   12 bytes, RFC 4733 §2.5.1.5) and RFC 2198 redundancy are ignored.
//! - Event 16 (hook flash) is the character `'!'`, as in SIP INFO `dtmf-relay`.
//!   Events 17..=255 are counted in [`DtmfReceiverStats::unknown_events`] and
//!   otherwise ignored: they neither start nor end a digit.
//! - Long events (RFC 4733 §2.5.1.3 / §2.5.2.3) are split into segments of 0xFFFF
//!   timestamp units; a packet with the same event code whose timestamp is exactly
//!   the open segment's timestamp + 0xFFFF (and no marker bit) continues the event.
//! - Packets whose timestamp is older (serial arithmetic) than the newest event are
//!   late and ignored, for [`HISTORY_TTL`] after the last accepted packet. After that
//!   the history is forgotten, so a sender that re-bases its timestamps (or a new SSRC
//!   the caller did not [`DtmfReceiver::reset`] for) loses digits for at most 2 s.
//! - The sender counts time in ptime ticks (one `poll_packet` call per tick); the
//!   stream timestamp is only used as the event start timestamp. The inter-digit gap
//!   is measured from the end of the tone on the RTP timeline (start + duration) and
//!   never cuts the three end packets short.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Tone length used when `queue` is given a duration of 0 ms.
pub const DEFAULT_DURATION_MS: u32 = 100;
/// Shortest tone the sender emits; shorter requests are lengthened to this.
pub const MIN_DURATION_MS: u32 = 40;
/// Inter-digit silence used when `queue` is given a gap of 0 ms.
pub const DEFAULT_GAP_MS: u32 = 50;
/// Volume field of sent events, in -dBm0 (i.e. -10 dBm0).
pub const SEND_VOLUME: u8 = 10;
/// How many times the final packet of an event (and of a long-event segment) is sent.
pub const END_PACKET_COUNT: u8 = 3;
/// Silence after which an open event whose end packets were all lost is reported.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(250);
/// How long late-packet detection remembers the newest event timestamp.
pub const HISTORY_TTL: Duration = Duration::from_secs(2);
/// Capacity of the sender's digit queue (preallocated, never grown).
pub const MAX_QUEUED_DIGITS: usize = 64;

/// Longest duration one segment can express (16-bit duration field).
const MAX_SEGMENT_DURATION: u16 = 0xFFFF;
/// Event code of hook flash; 0..=15 are the DTMF keys.
const EVENT_FLASH: u8 = 16;
/// Character used for hook flash in digit strings.
const FLASH_DIGIT: char = '!';
/// Reports that can wait for the caller when one packet ends two events.
const REPORT_QUEUE_LEN: usize = 4;
/// Length of one event block on the wire.
const EVENT_BLOCK_LEN: usize = 4;

/// One detected key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitEvent {
    /// '0'-'9', '*', '#', 'A'-'D', or '!' for hook flash.
    pub digit: char,
    /// Final tone length in milliseconds, across all segments of a long event.
    pub duration_ms: u32,
    /// Power level of the last accepted packet, in dBm0 (0 down to -63).
    pub volume_dbm0: i8,
    /// What closed the event.
    pub ended_by: EndedBy,
}

/// Why a received event was considered finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// A packet with the E bit arrived.
    EndBit,
    /// No update arrived within the end timeout (all end packets lost).
    Timeout,
    /// A newer event started while this one was still open.
    NewEvent,
}

/// Errors of the telephone-event module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfError {
    /// Payload shorter than one 4-byte event block.
    TruncatedPayload {
        /// Payload length received.
        len: usize,
    },
    /// A character in a digit string has no telephone-event code.
    InvalidDigit {
        /// The offending character.
        digit: char,
        /// Its position (in characters) in the string.
        index: usize,
    },
    /// Queueing would exceed [`MAX_QUEUED_DIGITS`].
    QueueFull {
        /// Digits already waiting.
        queued: usize,
        /// Digits in the refused request.
        requested: usize,
    },
}

impl fmt::Display for DtmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtmfError::TruncatedPayload { len } => write!(
                f,
                "telephone-event payload of {len} bytes, need at least {EVENT_BLOCK_LEN}"
            ),
            DtmfError::InvalidDigit { digit, index } => {
                write!(f, "invalid DTMF digit {digit:?} at position {index}")
            }
            DtmfError::QueueFull { queued, requested } => write!(
                f,
                "DTMF queue full: {queued} queued + {requested} requested > {MAX_QUEUED_DIGITS}"
            ),
        }
    }
}

impl std::error::Error for DtmfError {}

/// Counters of the receive side, for call statistics and troubleshooting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtmfReceiverStats {
    /// Telephone-event packets handed to `on_packet`.
    pub packets: u64,
    /// Digits reported (by any end reason).
    pub digits: u64,
    /// Digits reported because their end packets never arrived.
    pub timeouts: u64,
    /// Payloads shorter than 4 bytes.
    pub malformed: u64,
    /// Packets with an event code outside 0..=16.
    pub unknown_events: u64,
    /// Retransmissions and duplicates of an event already seen (incl. the 2nd/3rd end packet).
    pub duplicates: u64,
    /// Packets of an event older than the newest one.
    pub late: u64,
    /// Packets whose event code contradicts the open event with the same timestamp.
    pub inconsistent: u64,
    /// Reports dropped because the caller did not drain them (`poll`) in time.
    pub dropped_reports: u64,
}

/// Receive side: one per incoming RTP stream (SSRC) with a telephone-event payload type.
#[derive(Debug)]
pub struct DtmfReceiver {
    /// Telephone-event clock rate (RTP timestamp units per second).
    clock_rate: u32,
    /// Silence after which an open event is reported as ended.
    end_timeout: Duration,
    /// The event currently sounding, if any.
    open: Option<OpenEvent>,
    /// Newest event timestamp, to recognise duplicates and late packets.
    history: Option<History>,
    /// Digits ready for the caller, oldest first.
    reports: ReportQueue,
    /// Counters.
    stats: DtmfReceiverStats,
}

impl DtmfReceiver {
    /// A receiver for a telephone-event stream with the given clock rate
    /// (the `rate` of the SDP `telephone-event/<rate>`; 0 is taken as 8000).
    pub fn new(clock_rate: u32) -> DtmfReceiver {
        DtmfReceiver {
            clock_rate: effective_clock_rate(clock_rate),
            end_timeout: DEFAULT_END_TIMEOUT,
            open: None,
            history: None,
            reports: ReportQueue::new(),
            stats: DtmfReceiverStats::default(),
        }
    }

    /// Changes the silence after which an open event is reported (default 250 ms).
    pub fn set_end_timeout(&mut self, timeout: Duration) {
        self.end_timeout = timeout;
    }

    /// One RTP packet with the telephone-event payload type: its marker bit, RTP timestamp, sequence number and payload.
    ///
    /// Returns the oldest digit ready for the caller; when one packet finishes two
    /// events the second one is returned by the next `on_packet` or `poll`.
    pub fn on_packet(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<DigitEvent>, DtmfError> {
        self.stats.packets += 1;
        let block = match EventBlock::parse(payload) {
            Ok(block) => block,
            Err(err) => {
                self.stats.malformed += 1;
                return Err(err);
            }
        };
        let Some(digit) = event_to_digit(block.code) else {
            self.stats.unknown_events += 1;
            return Ok(self.reports.pop());
        };
        self.accept(now, seq, timestamp, marker, digit, block);
        Ok(self.reports.pop())
    }

    /// For events whose end packets were all lost: reports the digit once no update
    /// arrived for the end timeout (250 ms by default). Also hands out digits queued
    /// when one packet finished two events.
    pub fn poll(&mut self, now: Instant) -> Option<DigitEvent> {
        if let Some(report) = self.reports.pop() {
            return Some(report);
        }
        let deadline = self.open_deadline()?;
        if now < deadline {
            return None;
        }
        self.close_open(now, EndedBy::Timeout);
        self.reports.pop()
    }

    /// When `poll` has something to do: a queued report (an instant in the past) or
    /// the end timeout of the open event. `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(queued_at) = self.reports.oldest_time() {
            return Some(queued_at);
        }
        self.open_deadline()
    }

    /// Counters since construction.
    pub fn stats(&self) -> DtmfReceiverStats {
        self.stats
    }

    /// Forgets the open event (unreported), pending reports and timestamp history;
    /// call when the stream's SSRC changes. Counters are kept.
    pub fn reset(&mut self) {
        self.open = None;
        self.history = None;
        self.reports = ReportQueue::new();
    }

    /// Routes a valid DTMF block to the open event, a new event, or the bin.
    fn accept(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        digit: char,
        block: EventBlock,
    ) {
        if let Some(open) = &self.open {
            if timestamp == open.segment_ts {
                self.update_open(now, seq, block);
                return;
            }
            let next_segment_ts = open
                .segment_ts
                .wrapping_add(u32::from(MAX_SEGMENT_DURATION));
            if !marker && block.code == open.code && timestamp == next_segment_ts {
                self.continue_open(now, seq, timestamp, block);
                return;
            }
        }
        if self.is_old_news(now, timestamp) {
            return;
        }
        self.close_open(now, EndedBy::NewEvent);
        self.open = Some(OpenEvent {
            code: block.code,
            digit,
            segment_ts: timestamp,
            completed_units: 0,
            segment_duration: block.duration,
            volume: block.volume,
            last_seq: seq,
            last_update: now,
        });
        self.history = Some(History {
            newest_ts: timestamp,
            last_activity: now,
        });
        if block.end {
            self.close_open(now, EndedBy::EndBit);
        }
    }

    /// A packet with the open segment's timestamp: an update, a repeat, or the end.
    fn update_open(&mut self, now: Instant, seq: u16, block: EventBlock) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if !seq_is_newer(seq, open.last_seq) {
            self.stats.duplicates += 1;
            return;
        }
        if block.code != open.code {
            self.stats.inconsistent += 1;
            return;
        }
        open.last_seq = seq;
        open.last_update = now;
        open.volume = block.volume;
        // Durations only grow within a segment; max() shrugs off a sender that restarts it.
        open.segment_duration = open.segment_duration.max(block.duration);
        self.touch_history(now);
        if block.end {
            self.close_open(now, EndedBy::EndBit);
        }
    }

    /// First packet of the next 0xFFFF-unit segment of a long event.
    fn continue_open(&mut self, now: Instant, seq: u16, timestamp: u32, block: EventBlock) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        // The previous segment spans its full length even if its last packets were lost.
        open.completed_units += u64::from(MAX_SEGMENT_DURATION);
        open.segment_ts = timestamp;
        open.segment_duration = block.duration;
        open.volume = block.volume;
        open.last_seq = seq;
        open.last_update = now;
        self.history = Some(History {
            newest_ts: timestamp,
            last_activity: now,
        });
        if block.end {
            self.close_open(now, EndedBy::EndBit);
        }
    }

    /// True (and counted) for packets of an already reported or older event.
    fn is_old_news(&mut self, now: Instant, timestamp: u32) -> bool {
        let Some(history) = self.history.as_mut() else {
            return false;
        };
        let forgotten = now.saturating_duration_since(history.last_activity) >= HISTORY_TTL;
        if self.open.is_none() && forgotten {
            self.history = None;
            return false;
        }
        if timestamp == history.newest_ts {
            // Typically the 2nd and 3rd end packet of the event just reported.
            history.last_activity = now;
            self.stats.duplicates += 1;
            return true;
        }
        if ts_is_older(timestamp, history.newest_ts) {
            self.stats.late += 1;
            return true;
        }
        false
    }

    /// Reports the open event (if any) with its final duration.
    fn close_open(&mut self, now: Instant, ended_by: EndedBy) {
        let Some(open) = self.open.take() else {
            return;
        };
        let units = open.completed_units + u64::from(open.segment_duration);
        let report = DigitEvent {
            digit: open.digit,
            duration_ms: units_to_ms(units, self.clock_rate),
            // The volume field is 6 bits, so it always fits an i8.
            volume_dbm0: -((open.volume & 0x3F) as i8),
            ended_by,
        };
        self.stats.digits += 1;
        if ended_by == EndedBy::Timeout {
            self.stats.timeouts += 1;
        }
        if self.reports.push(report, now) {
            self.stats.dropped_reports += 1;
        }
        self.touch_history(now);
    }

    fn touch_history(&mut self, now: Instant) {
        if let Some(history) = self.history.as_mut() {
            history.last_activity = now;
        }
    }

    fn open_deadline(&self) -> Option<Instant> {
        let open = self.open.as_ref()?;
        // An end timeout too large to add to an Instant means "never time out".
        open.last_update.checked_add(self.end_timeout)
    }
}

/// Send side: one per outgoing RTP stream that negotiated telephone-event.
#[derive(Debug)]
pub struct DtmfSender {
    /// Telephone-event clock rate (RTP timestamp units per second).
    clock_rate: u32,
    /// Timestamp units per tick (ptime).
    ptime_units: u64,
    /// Digits not started yet; capacity reserved up front, never grown.
    pending: VecDeque<QueuedDigit>,
    /// What the next tick does.
    state: SendState,
}

/// Header fields for an event packet produced by [`DtmfSender::poll_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP marker bit: set only on the first packet of an event.
    pub marker: bool,
    /// RTP timestamp for the header: the event (segment) start, not the current tick.
    pub timestamp: u32,
    /// Whether the payload carries the E bit (one of the final packets).
    pub end: bool,
}

impl DtmfSender {
    /// A sender for the given telephone-event clock rate (0 is taken as 8000) and
    /// packetisation time (0 is taken as 20 ms).
    pub fn new(clock_rate: u32, ptime_ms: u32) -> DtmfSender {
        let clock_rate = effective_clock_rate(clock_rate);
        let ptime_ms = if ptime_ms == 0 { 20 } else { ptime_ms };
        DtmfSender {
            clock_rate,
            ptime_units: ms_to_units(ptime_ms, clock_rate).max(1),
            pending: VecDeque::with_capacity(MAX_QUEUED_DIGITS),
            state: SendState::Idle,
        }
    }

    /// Queue digits to send (SendDigits): each for `duration_ms` (0 → 100, shorter
    /// than 40 → 40) with `gap_ms` (0 → 50) silence between, volume -10 dBm0.
    /// Accepts '0'-'9', '*', '#', 'A'-'D' (or 'a'-'d') and '!' (hook flash); any other
    /// character refuses the whole string and nothing is queued.
    pub fn queue(&mut self, digits: &str, duration_ms: u32, gap_ms: u32) -> Result<(), DtmfError> {
        let requested = check_digits(digits)?;
        let queued = self.pending.len();
        if queued + requested > MAX_QUEUED_DIGITS {
            return Err(DtmfError::QueueFull { queued, requested });
        }
        let duration_ms = match duration_ms {
            0 => DEFAULT_DURATION_MS,
            ms => ms.max(MIN_DURATION_MS),
        };
        let gap_ms = if gap_ms == 0 { DEFAULT_GAP_MS } else { gap_ms };
        let duration_units = ms_to_units(duration_ms, self.clock_rate).max(1);
        let gap_units = ms_to_units(gap_ms, self.clock_rate);
        for code in digits.chars().filter_map(digit_to_event) {
            self.pending.push_back(QueuedDigit {
                code,
                duration_units,
                gap_units,
            });
        }
        Ok(())
    }

    /// Called every ptime tick by the media session with the stream's current RTP
    /// timestamp for this tick. Returns the event packet to send this tick (payload
    /// written to `out`, header fields returned), or `None` (send audio or nothing).
    ///
    /// Time is counted in calls, one per ptime; `now` is not needed for that and is
    /// accepted for the uniform sans-IO call shape.
    pub fn poll_packet(
        &mut self,
        _now: Instant,
        stream_timestamp: u32,
        out: &mut [u8; 4],
    ) -> Option<EventPacket> {
        if let SendState::Gap { ticks_left } = &mut self.state {
            *ticks_left = ticks_left.saturating_sub(1);
            if *ticks_left == 0 {
                self.state = SendState::Idle;
            }
            return None;
        }
        if matches!(self.state, SendState::Idle) {
            let next = self.pending.pop_front()?;
            self.state = SendState::Sending(ActiveEvent::start(next, stream_timestamp));
        }
        let SendState::Sending(event) = &mut self.state else {
            return None;
        };
        let packet = event.next_packet(self.ptime_units, out);
        match event.gap_ticks_if_done(self.ptime_units) {
            None => {}
            Some(0) => self.state = SendState::Idle,
            Some(ticks_left) => self.state = SendState::Gap { ticks_left },
        }
        Some(packet)
    }

    /// True when nothing is queued, no event is being sent and no gap is running:
    /// `poll_packet` returns `None` until the next `queue`.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && matches!(self.state, SendState::Idle)
    }
}

/// The event block of a telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventBlock {
    /// Event code (0..=15 DTMF, 16 flash, others unknown here).
    code: u8,
    /// E bit.
    end: bool,
    /// Volume in -dBm0 (6 bits).
    volume: u8,
    /// Duration since the segment start, in timestamp units.
    duration: u16,
}

impl EventBlock {
    /// Reads the first block; extra blocks are ignored (see module doc).
    fn parse(payload: &[u8]) -> Result<EventBlock, DtmfError> {
        let Some(block) = payload.get(..EVENT_BLOCK_LEN) else {
            return Err(DtmfError::TruncatedPayload { len: payload.len() });
        };
        // The R bit (0x40) is reserved: ignored on receipt.
        Ok(EventBlock {
            code: block[0],
            end: block[1] & 0x80 != 0,
            volume: block[1] & 0x3F,
            duration: u16::from_be_bytes([block[2], block[3]]),
        })
    }

    fn write(&self, out: &mut [u8; 4]) {
        let [hi, lo] = self.duration.to_be_bytes();
        let end_bit = if self.end { 0x80 } else { 0 };
        *out = [self.code, end_bit | (self.volume & 0x3F), hi, lo];
    }
}

/// Receive-side state of the event currently sounding.
#[derive(Debug, Clone, Copy)]
struct OpenEvent {
    /// Event code.
    code: u8,
    /// Its character (validated when the event opened).
    digit: char,
    /// RTP timestamp of the current segment (the event start for short events).
    segment_ts: u32,
    /// Units covered by earlier, completed segments.
    completed_units: u64,
    /// Longest duration seen in the current segment.
    segment_duration: u16,
    /// Volume of the last accepted packet, -dBm0.
    volume: u8,
    /// Sequence number of the last accepted packet.
    last_seq: u16,
    /// When the last accepted packet arrived.
    last_update: Instant,
}

/// What the receiver remembers about the newest event after it is reported.
#[derive(Debug, Clone, Copy)]
struct History {
    /// Timestamp of the newest event (segment) accepted.
    newest_ts: u32,
    /// Last packet that belonged to it (accepted or duplicate).
    last_activity: Instant,
}

/// Fixed-size FIFO of reports waiting for the caller.
#[derive(Debug)]
struct ReportQueue {
    /// Ring storage.
    slots: [Option<(DigitEvent, Instant)>; REPORT_QUEUE_LEN],
    /// Index of the oldest report.
    head: usize,
    /// Reports stored.
    len: usize,
}

impl ReportQueue {
    fn new() -> ReportQueue {
        ReportQueue {
            slots: [None; REPORT_QUEUE_LEN],
            head: 0,
            len: 0,
        }
    }

    /// Appends; when full, drops the oldest report and returns true.
    fn push(&mut self, report: DigitEvent, at: Instant) -> bool {
        let dropped = self.len == REPORT_QUEUE_LEN;
        if dropped {
            self.head = (self.head + 1) % REPORT_QUEUE_LEN;
            self.len -= 1;
        }
        self.slots[(self.head + self.len) % REPORT_QUEUE_LEN] = Some((report, at));
        self.len += 1;
        dropped
    }

    fn pop(&mut self) -> Option<DigitEvent> {
        if self.len == 0 {
            return None;
        }
        let (report, _) = self.slots[self.head].take()?;
        self.head = (self.head + 1) % REPORT_QUEUE_LEN;
        self.len -= 1;
        Some(report)
    }

    fn oldest_time(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        self.slots[self.head].map(|(_, at)| at)
    }
}

/// A digit waiting to be sent.
#[derive(Debug, Clone, Copy)]
struct QueuedDigit {
    /// Event code.
    code: u8,
    /// Tone length in timestamp units.
    duration_units: u64,
    /// Silence after the tone in timestamp units.
    gap_units: u64,
}

/// Sender state between ticks.
#[derive(Debug)]
enum SendState {
    /// Nothing in flight; the next queued digit starts on the next tick.
    Idle,
    /// An event is being sent.
    Sending(ActiveEvent),
    /// Inter-digit silence: this many more ticks (at least one) return `None`.
    Gap { ticks_left: u64 },
}

/// Send-side state of the event being transmitted.
#[derive(Debug)]
struct ActiveEvent {
    /// What is being sent.
    digit: QueuedDigit,
    /// RTP timestamp of the current segment.
    segment_ts: u32,
    /// Units covered by completed segments.
    segment_offset: u64,
    /// Ticks used since the event start, including end-packet repeats.
    ticks: u64,
    /// Where in the packet sequence we are.
    phase: SendPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendPhase {
    /// Updates with growing duration.
    Tone,
    /// Repeating the full-length packet that closes a long-event segment.
    SegmentEnd { repeats_left: u8 },
    /// Repeating the E-bit packet.
    Ending { repeats_left: u8, duration: u16 },
    /// All end packets sent.
    Done,
}

impl ActiveEvent {
    fn start(digit: QueuedDigit, stream_timestamp: u32) -> ActiveEvent {
        ActiveEvent {
            digit,
            segment_ts: stream_timestamp,
            segment_offset: 0,
            ticks: 0,
            phase: SendPhase::Tone,
        }
    }

    /// Writes this tick's payload and advances the packet sequence.
    fn next_packet(&mut self, ptime_units: u64, out: &mut [u8; 4]) -> EventPacket {
        let marker = self.ticks == 0;
        self.ticks += 1;
        let timestamp = self.segment_ts;
        let (end, duration) = match self.phase {
            SendPhase::Tone => self.tone_packet(ptime_units),
            SendPhase::SegmentEnd { repeats_left } => {
                self.phase = self.after_segment_end_repeat(repeats_left);
                (false, MAX_SEGMENT_DURATION)
            }
            SendPhase::Ending {
                repeats_left,
                duration,
            } => {
                self.phase = ending_after_repeat(repeats_left, duration);
                (true, duration)
            }
            // Not reached: the sender leaves Sending once Done; repeat the end to stay valid.
            SendPhase::Done => (true, MAX_SEGMENT_DURATION),
        };
        EventBlock {
            code: self.digit.code,
            end,
            volume: SEND_VOLUME,
            duration,
        }
        .write(out);
        EventPacket {
            marker,
            timestamp,
            end,
        }
    }

    /// An update, the first packet closing a segment, or the first end packet.
    fn tone_packet(&mut self, ptime_units: u64) -> (bool, u16) {
        let total = self.digit.duration_units;
        let covered = self.ticks.saturating_mul(ptime_units).min(total);
        let in_segment = covered.saturating_sub(self.segment_offset);
        let segment_max = u64::from(MAX_SEGMENT_DURATION);
        if in_segment > segment_max || (in_segment == segment_max && covered < total) {
            self.phase = self.after_segment_end_repeat(END_PACKET_COUNT);
            return (false, MAX_SEGMENT_DURATION);
        }
        let duration = u16::try_from(in_segment).unwrap_or(MAX_SEGMENT_DURATION);
        if covered < total {
            return (false, duration);
        }
        self.phase = ending_after_repeat(END_PACKET_COUNT, duration);
        (true, duration)
    }

    /// Phase after sending one copy of the segment-closing packet.
    fn after_segment_end_repeat(&mut self, repeats_left: u8) -> SendPhase {
        let repeats_left = repeats_left.saturating_sub(1);
        if repeats_left > 0 {
            return SendPhase::SegmentEnd { repeats_left };
        }
        // RFC 4733 §2.5.1.3: the next segment starts where this one reached 0xFFFF.
        self.segment_ts = self
            .segment_ts
            .wrapping_add(u32::from(MAX_SEGMENT_DURATION));
        self.segment_offset += u64::from(MAX_SEGMENT_DURATION);
        SendPhase::Tone
    }

    /// Once all end packets are out: ticks of silence until the next digit may start.
    fn gap_ticks_if_done(&self, ptime_units: u64) -> Option<u64> {
        if self.phase != SendPhase::Done {
            return None;
        }
        let next_start_units = self
            .digit
            .duration_units
            .saturating_add(self.digit.gap_units);
        let next_start_tick = next_start_units.div_ceil(ptime_units);
        Some(next_start_tick.saturating_sub(self.ticks))
    }
}

/// Phase after sending one copy of the E-bit packet.
fn ending_after_repeat(repeats_left: u8, duration: u16) -> SendPhase {
    let repeats_left = repeats_left.saturating_sub(1);
    if repeats_left == 0 {
        return SendPhase::Done;
    }
    SendPhase::Ending {
        repeats_left,
        duration,
    }
}

/// Checks that every character of `digits` has a telephone-event code (what
/// [`DtmfSender::queue`] accepts) and returns how many there are; the first one that does
/// not is the error.
pub fn check_digits(digits: &str) -> Result<usize, DtmfError> {
    let mut count = 0;
    for (index, digit) in digits.chars().enumerate() {
        if digit_to_event(digit).is_none() {
            return Err(DtmfError::InvalidDigit { digit, index });
        }
        count += 1;
    }
    Ok(count)
}

/// RFC 4733 §3.2 event code → character.
pub fn event_to_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (code - 12))),
        EVENT_FLASH => Some(FLASH_DIGIT),
        _ => None,
    }
}

/// Character → RFC 4733 §3.2 event code (`'!'` is hook flash).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        FLASH_DIGIT => Some(EVENT_FLASH),
        _ => None,
    }
}

/// RFC 3550 sequence numbers: `a` was sent after `b` (within half the number space).
fn seq_is_newer(a: u16, b: u16) -> bool {
    let distance = a.wrapping_sub(b);
    distance != 0 && distance < 0x8000
}

/// `a` lies before `b` on the (wrapping) RTP timeline.
fn ts_is_older(a: u32, b: u32) -> bool {
    let distance = b.wrapping_sub(a);
    distance != 0 && distance < 0x8000_0000
}

fn effective_clock_rate(clock_rate: u32) -> u32 {
    if clock_rate == 0 {
        8000
    } else {
        clock_rate
    }
}

fn ms_to_units(ms: u32, clock_rate: u32) -> u64 {
    u64::from(ms) * u64::from(clock_rate) / 1000
}

fn units_to_ms(units: u64, clock_rate: u32) -> u32 {
    let ms = units.saturating_mul(1000) / u64::from(clock_rate.max(1));
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    const PTIME_MS: u32 = 20;
    const PTIME_UNITS: u32 = 160;

    /// One packet as the session would put it on the wire.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct WirePacket {
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: [u8; 4],
    }

    impl WirePacket {
        fn block(&self) -> EventBlock {
            EventBlock::parse(&self.payload).expect("a 4-byte array is a whole block")
        }
    }

    /// Builds received packets by hand.
    fn packet(
        seq: u16,
        timestamp: u32,
        marker: bool,
        code: u8,
        end: bool,
        duration: u16,
    ) -> WirePacket {
        let mut payload = [0; 4];
        EventBlock {
            code,
            end,
            volume: 10,
            duration,
        }
        .write(&mut payload);
        WirePacket {
            seq,
            timestamp,
            marker,
            payload,
        }
    }

    /// Hands one wire packet to the receiver.
    fn deliver(
        rx: &mut DtmfReceiver,
        now: Instant,
        p: &WirePacket,
    ) -> Result<Option<DigitEvent>, DtmfError> {
        rx.on_packet(now, p.seq, p.timestamp, p.marker, &p.payload)
    }

    /// Runs a sender tick by tick in virtual time; `None` entries are audio ticks.
    struct Session {
        sender: DtmfSender,
        t0: Instant,
        tick: u64,
        ts_base: u32,
        seq: u16,
        ptime_ms: u32,
        ptime_units: u32,
    }

    impl Session {
        fn new(clock_rate: u32, ptime_ms: u32, ts_base: u32, seq: u16) -> Session {
            Session {
                sender: DtmfSender::new(clock_rate, ptime_ms),
                t0: Instant::now(),
                tick: 0,
                ts_base,
                seq,
                ptime_ms,
                ptime_units: ptime_ms * clock_rate / 1000,
            }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.tick * u64::from(self.ptime_ms))
        }

        fn stream_ts(&self) -> u32 {
            self.ts_base
                .wrapping_add((self.tick as u32).wrapping_mul(self.ptime_units))
        }

        /// One tick: the packet sent (if any) with the instant it was sent.
        fn step(&mut self) -> (Instant, Option<WirePacket>) {
            let now = self.now();
            let mut payload = [0; 4];
            let sent = self.sender.poll_packet(now, self.stream_ts(), &mut payload);
            self.tick += 1;
            let wire = sent.map(|p| {
                self.seq = self.seq.wrapping_add(1);
                WirePacket {
                    seq: self.seq,
                    timestamp: p.timestamp,
                    marker: p.marker,
                    payload,
                }
            });
            (now, wire)
        }

        /// Ticks until the sender is idle, collecting (tick time, packet).
        fn run_to_idle(&mut self) -> Vec<(Instant, Option<WirePacket>)> {
            let mut out = Vec::new();
            while !self.sender.is_idle() {
                out.push(self.step());
                assert!(out.len() < 100_000, "sender never went idle");
            }
            out
        }
    }

    /// Feeds packets (at their instants) to a receiver, polling every step, then
    /// polls well past the end timeout. Returns every digit reported.
    fn receive_all(
        receiver: &mut DtmfReceiver,
        packets: &[(Instant, WirePacket)],
    ) -> Vec<DigitEvent> {
        let mut digits = Vec::new();
        let mut last = None;
        for (now, p) in packets {
            if let Ok(Some(d)) = receiver.on_packet(*now, p.seq, p.timestamp, p.marker, &p.payload)
            {
                digits.push(d);
            }
            while let Some(d) = receiver.poll(*now) {
                digits.push(d);
            }
            last = Some(*now);
        }
        if let Some(last) = last {
            let later = last + Duration::from_secs(1);
            while let Some(d) = receiver.poll(later) {
                digits.push(d);
            }
        }
        digits
    }

    fn sent_packets(ticks: &[(Instant, Option<WirePacket>)]) -> Vec<(Instant, WirePacket)> {
        ticks
            .iter()
            .filter_map(|(t, p)| p.map(|p| (*t, p)))
            .collect()
    }

    fn digit_string(digits: &[DigitEvent]) -> String {
        digits.iter().map(|d| d.digit).collect()
    }

    /// Deterministic xorshift64* generator for the randomised tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn loopback_all_sixteen_keys_in_order_with_requested_durations() {
        // Timestamps and sequence numbers both wrap during the run.
        let mut session = Session::new(RATE, PTIME_MS, 0xFFFF_F000, 65_500);
        session
            .sender
            .queue("0123456789*#ABCD", 100, 50)
            .expect("valid digits");
        let ticks = session.run_to_idle();
        let mut receiver = DtmfReceiver::new(RATE);
        let digits = receive_all(&mut receiver, &sent_packets(&ticks));

        assert_eq!(digit_string(&digits), "0123456789*#ABCD");
        for d in &digits {
            assert!(d.duration_ms.abs_diff(100) <= PTIME_MS, "{d:?}");
            assert_eq!(d.volume_dbm0, -10);
            assert_eq!(d.ended_by, EndedBy::EndBit);
        }
        let stats = receiver.stats();
        assert_eq!(stats.digits, 16);
        assert_eq!(stats.duplicates, 32, "2nd and 3rd end packet of each digit");
        assert_eq!(stats.timeouts, 0);
        assert_eq!(stats.late, 0);
    }

    #[test]
    fn loopback_odd_duration_and_ptime_at_16khz() {
        let mut session = Session::new(16_000, 30, 1234, 1);
        session.sender.queue("9#", 130, 70).expect("valid digits");
        let ticks = session.run_to_idle();
        let mut receiver = DtmfReceiver::new(16_000);
        let digits = receive_all(&mut receiver, &sent_packets(&ticks));

        assert_eq!(digit_string(&digits), "9#");
        // 130 ms is not a multiple of 30 ms: the end packet carries the exact request.
        assert_eq!(digits[0].duration_ms, 130);
        assert_eq!(digits[1].duration_ms, 130);
    }

    #[test]
    fn three_end_packets_report_the_digit_once_with_final_duration() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = DtmfReceiver::new(RATE);
        let start = packet(10, 8000, true, 5, false, 160);
        let update = packet(11, 8000, false, 5, false, 320);
        let ends = [12, 13, 14].map(|seq| packet(seq, 8000, false, 5, true, 480));
        assert_eq!(deliver(&mut rx, ms(0), &start), Ok(None));
        assert_eq!(deliver(&mut rx, ms(20), &update), Ok(None));
        let five = DigitEvent {
            digit: '5',
            duration_ms: 60,
            volume_dbm0: -10,
            ended_by: EndedBy::EndBit,
        };
        assert_eq!(deliver(&mut rx, ms(40), &ends[0]), Ok(Some(five)));
        assert_eq!(deliver(&mut rx, ms(60), &ends[1]), Ok(None));
        assert_eq!(deliver(&mut rx, ms(80), &ends[2]), Ok(None));
        assert_eq!(rx.poll(ms(2000)), None);
        assert_eq!(rx.poll_timeout(), None);
        assert_eq!(rx.stats().digits, 1);
        assert_eq!(rx.stats().duplicates, 2);
    }

    #[test]
    fn lost_start_packets_still_give_one_digit_with_full_duration() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        // Packets with durations 160..480 lost; first seen is an update, no marker.
        let seen = [
            packet(4, 500, false, 7, false, 640),
            packet(5, 500, false, 7, true, 800),
            packet(6, 500, false, 7, true, 800),
            packet(7, 500, false, 7, true, 800),
        ];
        let timed: Vec<_> = seen
            .iter()
            .enumerate()
            .map(|(i, p)| (t0 + Duration::from_millis(20 * i as u64), *p))
            .collect();
        let digits = receive_all(&mut rx, &timed);
        assert_eq!(digits.len(), 1);
        assert_eq!(digits[0].digit, '7');
        assert_eq!(digits[0].duration_ms, 100);
        assert_eq!(digits[0].ended_by, EndedBy::EndBit);
    }

    #[test]
    fn all_end_packets_lost_reports_once_after_timeout() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = DtmfReceiver::new(RATE);
        for (i, duration) in [160u16, 320, 480, 640].iter().enumerate() {
            let p = packet(i as u16, 9000, i == 0, 11, false, *duration);
            assert_eq!(deliver(&mut rx, ms(20 * i as u64), &p), Ok(None));
        }
        let deadline = ms(60) + DEFAULT_END_TIMEOUT;
        assert_eq!(rx.poll_timeout(), Some(deadline));
        assert_eq!(rx.poll(deadline - Duration::from_millis(1)), None);
        assert_eq!(
            rx.poll(deadline),
            Some(DigitEvent {
                digit: '#',
                duration_ms: 80,
                volume_dbm0: -10,
                ended_by: EndedBy::Timeout
            })
        );
        assert_eq!(rx.poll(deadline + Duration::from_secs(5)), None);
        assert_eq!(rx.poll_timeout(), None);
        // A very late end packet of the same event must not report it again.
        let late_end = packet(9, 9000, false, 11, true, 800);
        let late = deadline + Duration::from_millis(10);
        assert_eq!(deliver(&mut rx, late, &late_end), Ok(None));
        assert_eq!(rx.stats().digits, 1);
        assert_eq!(rx.stats().timeouts, 1);
    }

    #[test]
    fn end_timeout_is_configurable() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        rx.set_end_timeout(Duration::from_millis(60));
        let p = packet(1, 0, true, 1, false, 160);
        assert_eq!(deliver(&mut rx, t0, &p), Ok(None));
        assert_eq!(rx.poll_timeout(), Some(t0 + Duration::from_millis(60)));
        assert_eq!(
            rx.poll(t0 + Duration::from_millis(60)).map(|d| d.digit),
            Some('1')
        );
    }

    #[test]
    fn duplicated_and_reordered_packets_within_an_event_give_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        let arrivals = [
            packet(100, 40_000, true, 3, false, 160),
            packet(102, 40_000, false, 3, false, 480),
            packet(101, 40_000, false, 3, false, 320), // reordered: older than 102
            packet(100, 40_000, true, 3, false, 160),  // duplicated start
            packet(103, 40_000, false, 3, false, 640),
            packet(103, 40_000, false, 3, false, 640), // duplicated update
            packet(105, 40_000, false, 3, true, 800),
            packet(104, 40_000, false, 3, true, 800), // end packets swapped
            packet(106, 40_000, false, 3, true, 800),
            packet(105, 40_000, false, 3, true, 800),
        ];
        let timed: Vec<_> = arrivals
            .iter()
            .enumerate()
            .map(|(i, p)| (t0 + Duration::from_millis(10 * i as u64), *p))
            .collect();
        let digits = receive_all(&mut rx, &timed);
        assert_eq!(digits.len(), 1);
        assert_eq!(digits[0].digit, '3');
        assert_eq!(digits[0].duration_ms, 100);
        assert_eq!(rx.stats().duplicates, 6);
    }

    #[test]
    fn same_digit_twice_is_reported_twice() {
        let mut session = Session::new(RATE, PTIME_MS, 77, 7);
        session.sender.queue("55", 100, 50).expect("valid digits");
        let ticks = session.run_to_idle();
        let packets = sent_packets(&ticks);
        let starts: Vec<u32> = packets
            .iter()
            .filter(|(_, p)| p.marker)
            .map(|(_, p)| p.timestamp)
            .collect();
        assert_eq!(starts.len(), 2);
        assert_ne!(starts[0], starts[1]);
        let mut rx = DtmfReceiver::new(RATE);
        let digits = receive_all(&mut rx, &packets);
        assert_eq!(digit_string(&digits), "55");
        assert!(digits
            .iter()
            .all(|d| d.duration_ms == 100 && d.ended_by == EndedBy::EndBit));
    }

    #[test]
    fn new_event_without_end_of_previous_reports_both() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = DtmfReceiver::new(RATE);
        let a1 = packet(1, 1000, true, 1, false, 160);
        let a2 = packet(2, 1000, false, 1, false, 320);
        let b1 = packet(3, 2000, true, 2, false, 160);
        let b2 = packet(4, 2000, false, 2, true, 320);
        assert_eq!(deliver(&mut rx, ms(0), &a1), Ok(None));
        assert_eq!(deliver(&mut rx, ms(20), &a2), Ok(None));
        let first = deliver(&mut rx, ms(40), &b1);
        assert_eq!(
            first,
            Ok(Some(DigitEvent {
                digit: '1',
                duration_ms: 40,
                volume_dbm0: -10,
                ended_by: EndedBy::NewEvent
            }))
        );
        let second = deliver(&mut rx, ms(60), &b2);
        assert_eq!(
            second.map(|d| d.map(|d| (d.digit, d.duration_ms, d.ended_by))),
            Ok(Some(('2', 40, EndedBy::EndBit)))
        );
    }

    #[test]
    fn one_packet_ending_two_events_queues_the_second_for_poll() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        let a = packet(1, 1000, true, 4, false, 160);
        // Everything of the next event lost except one end packet.
        let b_end = packet(9, 3000, false, 6, true, 800);
        assert_eq!(deliver(&mut rx, t0, &a), Ok(None));
        let later = t0 + Duration::from_millis(100);
        let first = deliver(&mut rx, later, &b_end);
        assert_eq!(
            first.map(|d| d.map(|d| (d.digit, d.ended_by))),
            Ok(Some(('4', EndedBy::NewEvent)))
        );
        assert_eq!(
            rx.poll_timeout(),
            Some(later),
            "queued report is due immediately"
        );
        assert_eq!(
            rx.poll(later).map(|d| (d.digit, d.duration_ms, d.ended_by)),
            Some(('6', 100, EndedBy::EndBit))
        );
        assert_eq!(rx.poll(later), None);
        assert_eq!(rx.stats().digits, 2);
    }

    #[test]
    fn late_packets_of_an_earlier_event_are_ignored() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = DtmfReceiver::new(RATE);
        let a_end = packet(5, 1000, false, 1, true, 800);
        let b_start = packet(6, 2600, true, 2, false, 160);
        let a_update = packet(3, 1000, false, 1, false, 480);
        let a_start = packet(1, 1000, true, 1, false, 160);
        let b_end = packet(8, 2600, false, 2, true, 800);
        let got: Vec<_> = [
            (0, a_end),
            (20, b_start),
            (30, a_update),
            (40, a_start),
            (60, b_end),
        ]
        .iter()
        .filter_map(|(t, p)| deliver(&mut rx, ms(*t), p).expect("valid payload"))
        .collect();
        assert_eq!(digit_string(&got), "12");
        assert_eq!(rx.stats().late, 2);
    }

    #[test]
    fn history_is_forgotten_so_a_rebased_stream_is_heard_again() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        let a = packet(1, 0x8000_0000, true, 1, true, 800);
        let got = deliver(&mut rx, t0, &a);
        assert_eq!(got.map(|d| d.map(|d| d.digit)), Ok(Some('1')));
        // Sender re-based its timestamps to something "older".
        let b = packet(2, 100, true, 2, true, 800);
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(deliver(&mut rx, soon, &b), Ok(None));
        assert_eq!(rx.stats().late, 1);
        let after_ttl = t0 + HISTORY_TTL;
        let got = deliver(&mut rx, after_ttl, &b);
        assert_eq!(got.map(|d| d.map(|d| d.digit)), Ok(Some('2')));
        // reset() forgets at once.
        rx.reset();
        let c = packet(3, 50, true, 3, true, 800);
        let got = deliver(&mut rx, after_ttl, &c);
        assert_eq!(got.map(|d| d.map(|d| d.digit)), Ok(Some('3')));
    }

    #[test]
    fn long_event_is_sent_in_segments_and_received_as_one_digit() {
        let mut session = Session::new(RATE, PTIME_MS, 0xFFF0_0000, 0);
        session.sender.queue("0", 20_000, 50).expect("valid digit");
        let ticks = session.run_to_idle();
        let packets = sent_packets(&ticks);

        // Segment structure on the wire: 160 000 units = 2 full segments + 28 930.
        let segment_ts: Vec<u32> = {
            let mut ts: Vec<u32> = packets.iter().map(|(_, p)| p.timestamp).collect();
            ts.dedup();
            ts
        };
        assert_eq!(
            segment_ts,
            vec![
                0xFFF0_0000,
                0xFFF0_0000u32.wrapping_add(0xFFFF),
                0xFFF0_0000u32.wrapping_add(2 * 0xFFFF)
            ]
        );
        let full_segment_packets = packets
            .iter()
            .filter(|(_, p)| p.block().duration == 0xFFFF)
            .count();
        assert_eq!(
            full_segment_packets, 6,
            "each full segment's last packet is sent 3 times"
        );
        assert!(packets
            .iter()
            .filter(|(_, p)| p.block().duration == 0xFFFF)
            .all(|(_, p)| !p.block().end));
        assert_eq!(
            packets.iter().filter(|(_, p)| p.marker).count(),
            1,
            "marker only on the very first packet"
        );
        let last = packets.last().expect("packets were sent").1.block();
        assert!(last.end);
        assert_eq!(last.duration, (160_000 - 2 * 0xFFFF) as u16);

        let mut rx = DtmfReceiver::new(RATE);
        let digits = receive_all(&mut rx, &packets);
        assert_eq!(digits.len(), 1);
        assert_eq!(digits[0].digit, '0');
        assert_eq!(digits[0].duration_ms, 20_000);
        assert_eq!(digits[0].ended_by, EndedBy::EndBit);
    }

    #[test]
    fn long_event_continues_even_if_segment_end_packets_are_lost() {
        let mut session = Session::new(RATE, PTIME_MS, 500, 0);
        session.sender.queue("*", 12_000, 50).expect("valid digit");
        let ticks = session.run_to_idle();
        let packets: Vec<_> = sent_packets(&ticks)
            .into_iter()
            .filter(|(_, p)| p.block().duration != 0xFFFF)
            .collect();
        let mut rx = DtmfReceiver::new(RATE);
        let digits = receive_all(&mut rx, &packets);
        assert_eq!(digits.len(), 1);
        assert_eq!((digits[0].digit, digits[0].duration_ms), ('*', 12_000));
    }

    #[test]
    fn malformed_and_unknown_payloads_are_counted_not_reported() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        for len in 0..4 {
            let payload = vec![0xFF; len];
            assert_eq!(
                rx.on_packet(t0, len as u16, 0, false, &payload),
                Err(DtmfError::TruncatedPayload { len })
            );
        }
        // Event 40 is a tone code this module does not handle.
        let unknown = packet(10, 5000, true, 40, true, 800);
        assert_eq!(rx.on_packet(t0, 10, 5000, true, &unknown.payload), Ok(None));
        // An 8-byte payload: only the first block counts.
        let mut double = [0u8; 8];
        double[..4].copy_from_slice(&packet(11, 6000, true, 12, true, 400).payload);
        double[4..].copy_from_slice(&packet(11, 6000, true, 1, true, 400).payload);
        let got = rx.on_packet(t0, 11, 6000, true, &double);
        assert_eq!(
            got.map(|d| d.map(|d| (d.digit, d.duration_ms))),
            Ok(Some(('A', 50)))
        );
        let stats = rx.stats();
        assert_eq!(stats.packets, 6);
        assert_eq!(stats.malformed, 4);
        assert_eq!(stats.unknown_events, 1);
        assert_eq!(stats.digits, 1);
    }

    #[test]
    fn flash_and_volume_are_decoded() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(RATE);
        // E and R bits set, volume 63.
        let payload = [16, 0x80 | 0x40 | 63, 0x0F, 0xA0];
        let got = rx.on_packet(t0, 1, 0, true, &payload);
        assert_eq!(
            got,
            Ok(Some(DigitEvent {
                digit: '!',
                duration_ms: 500,
                volume_dbm0: -63,
                ended_by: EndedBy::EndBit
            }))
        );
    }

    #[test]
    fn event_code_table_round_trips() {
        let digits = "0123456789*#ABCD!";
        for (code, digit) in digits.chars().enumerate() {
            assert_eq!(digit_to_event(digit), Some(code as u8));
            assert_eq!(event_to_digit(code as u8), Some(digit));
        }
        assert_eq!(digit_to_event('c'), Some(14));
        assert_eq!(event_to_digit(17), None);
        assert_eq!(event_to_digit(255), None);
    }

    #[test]
    fn random_payload_fuzz_never_panics_and_counts_exactly() {
        let t0 = Instant::now();
        let mut rng = Rng(0x5EED_D7F0_0000_0001);
        let mut rx = DtmfReceiver::new(RATE);
        let mut short = 0;
        let mut unknown = 0;
        let mut valid_events = std::collections::HashSet::new();
        let mut reported = 0;
        for i in 0..20_000u64 {
            let len = rng.below(13) as usize;
            let mut payload = [0u8; 12];
            for b in payload.iter_mut() {
                *b = rng.next() as u8;
            }
            // Keep codes mostly in the DTMF range so the state machine gets exercised.
            payload[0] %= 20;
            let ts = (rng.below(8) as u32)
                .wrapping_mul(0x1000)
                .wrapping_sub(0x2000);
            let seq = rng.next() as u16;
            let now = t0 + Duration::from_millis(i * 7);
            match rx.on_packet(now, seq, ts, rng.below(2) == 0, &payload[..len]) {
                Err(DtmfError::TruncatedPayload { len: got }) => {
                    assert!(len < 4);
                    assert_eq!(got, len);
                    short += 1;
                }
                Err(other) => panic!("unexpected error {other}"),
                Ok(report) => {
                    assert!(len >= 4);
                    if payload[0] > 16 {
                        unknown += 1;
                    } else {
                        valid_events.insert(ts);
                    }
                    reported += usize::from(report.is_some());
                }
            }
            while let Some(d) = rx.poll(now) {
                assert!("0123456789*#ABCD!".contains(d.digit));
                assert!(d.volume_dbm0 <= 0 && d.volume_dbm0 >= -63);
                reported += 1;
            }
        }
        let stats = rx.stats();
        assert_eq!(stats.packets, 20_000);
        assert_eq!(stats.malformed, short);
        assert_eq!(stats.unknown_events, unknown);
        assert_eq!(
            stats.digits as usize,
            reported + stats.dropped_reports as usize
        );
        assert!(!valid_events.is_empty() && reported > 0);
    }

    #[test]
    fn mutated_sender_stream_never_panics_and_reports_only_valid_digits() {
        let mut session = Session::new(RATE, PTIME_MS, 0xFFFF_FF00, 65_535);
        session
            .sender
            .queue("147*2580369#ABCD", 60, 40)
            .expect("valid digits");
        let clean = sent_packets(&session.run_to_idle());
        for round in 0..200u64 {
            let mut rng = Rng(0x1234_5678_9ABC_DEF1 ^ (round << 17));
            let mut rx = DtmfReceiver::new(RATE);
            let mut mutated = Vec::new();
            for (now, p) in &clean {
                let mut p = *p;
                match rng.below(10) {
                    0 => continue, // lost
                    1 => p.payload[rng.below(4) as usize] ^= 1 << rng.below(8),
                    2 => p.seq = p.seq.wrapping_add(rng.below(5) as u16).wrapping_sub(2),
                    3 => p.timestamp ^= 1 << rng.below(32),
                    _ => {}
                }
                mutated.push((*now, p));
                if rng.below(8) == 0 {
                    mutated.push((*now, p));
                }
            }
            let mut all = Vec::new();
            let mut truncated = 0;
            for (now, p) in &mutated {
                // Occasionally truncate the payload too.
                let payload = if rng.below(20) == 0 {
                    truncated += 1;
                    &p.payload[..rng.below(4) as usize]
                } else {
                    &p.payload[..]
                };
                match rx.on_packet(*now, p.seq, p.timestamp, p.marker, payload) {
                    Ok(report) => all.extend(report),
                    Err(err) => assert_eq!(err, DtmfError::TruncatedPayload { len: payload.len() }),
                }
                all.extend(std::iter::from_fn(|| rx.poll(*now)));
            }
            let end = clean.last().expect("the sender sent packets").0 + Duration::from_secs(10);
            all.extend(std::iter::from_fn(|| rx.poll(end)));
            for d in &all {
                assert!("0123456789*#ABCD!".contains(d.digit), "{d:?}");
                assert!(d.duration_ms <= 8_200, "one segment at most: {d:?}");
            }
            let stats = rx.stats();
            assert_eq!(stats.malformed, truncated);
            assert_eq!(stats.digits, all.len() as u64);
            assert!(stats.digits <= mutated.len() as u64);
        }
    }

    #[test]
    fn random_duplication_and_local_reordering_keep_the_digit_string() {
        let mut session = Session::new(RATE, PTIME_MS, 42, 65_000);
        session
            .sender
            .queue("31415926535*#", 80, 60)
            .expect("valid digits");
        let clean = sent_packets(&session.run_to_idle());
        for round in 0..100u64 {
            let mut rng = Rng(0xABCD_EF01_2345_6789 ^ (round << 9));
            let mut arrivals: Vec<(Instant, WirePacket)> = Vec::new();
            for item in &clean {
                arrivals.push(*item);
                if rng.below(4) == 0 {
                    arrivals.push(*item);
                }
            }
            // Swap disjoint neighbour pairs (packet contents only; arrival instants stay
            // ordered), so no packet moves by more than one place.
            for i in (0..arrivals.len() - 1).step_by(2) {
                if rng.below(3) == 0 {
                    let (a, b) = (arrivals[i].1, arrivals[i + 1].1);
                    arrivals[i].1 = b;
                    arrivals[i + 1].1 = a;
                }
            }
            let mut rx = DtmfReceiver::new(RATE);
            let digits = receive_all(&mut rx, &arrivals);
            assert_eq!(digit_string(&digits), "31415926535*#", "round {round}");
        }
    }

    #[test]
    fn sender_packet_fields_follow_rfc4733() {
        let mut session = Session::new(RATE, PTIME_MS, 1000, 0);
        session.sender.queue("1", 100, 50).expect("valid digit");
        session.sender.queue("#", 100, 50).expect("valid digit");
        let ticks = session.run_to_idle();
        // (marker, timestamp, event code, E bit, volume, duration) per tick.
        type Fields = (bool, u32, u8, bool, u8, u16);
        let fields: Vec<Option<Fields>> = ticks
            .iter()
            .map(|(_, p)| {
                p.map(|p| {
                    let b = p.block();
                    (p.marker, p.timestamp, b.code, b.end, b.volume, b.duration)
                })
            })
            .collect();
        let second_start = 1000 + 8 * PTIME_UNITS;
        let expected = vec![
            Some((true, 1000, 1, false, 10, 160)),
            Some((false, 1000, 1, false, 10, 320)),
            Some((false, 1000, 1, false, 10, 480)),
            Some((false, 1000, 1, false, 10, 640)),
            Some((false, 1000, 1, true, 10, 800)),
            Some((false, 1000, 1, true, 10, 800)),
            Some((false, 1000, 1, true, 10, 800)),
            // Tone ended at 1000 + 800; 50 ms gap (400 units) → next start at or after
            // 1000 + 1200, i.e. tick 8 (ticks are 160 units).
            None,
            Some((true, second_start, 11, false, 10, 160)),
            Some((false, second_start, 11, false, 10, 320)),
            Some((false, second_start, 11, false, 10, 480)),
            Some((false, second_start, 11, false, 10, 640)),
            Some((false, second_start, 11, true, 10, 800)),
            Some((false, second_start, 11, true, 10, 800)),
            Some((false, second_start, 11, true, 10, 800)),
            None,
        ];
        assert_eq!(fields, expected);
        let gap_units = second_start - (1000 + 800);
        assert!(gap_units >= 400);
        assert!(session.sender.is_idle());
        let mut out = [0; 4];
        assert_eq!(
            session.sender.poll_packet(session.now(), 99_999, &mut out),
            None
        );
    }

    #[test]
    fn sender_gap_is_respected_for_long_gaps() {
        let mut session = Session::new(RATE, PTIME_MS, 0, 0);
        session.sender.queue("12", 60, 300).expect("valid digits");
        let ticks = session.run_to_idle();
        let starts: Vec<u32> = sent_packets(&ticks)
            .iter()
            .filter(|(_, p)| p.marker)
            .map(|(_, p)| p.timestamp)
            .collect();
        // 60 ms tone = 480 units, 300 ms gap = 2400 units → second start at 2880.
        assert_eq!(starts, vec![0, 2880]);
    }

    #[test]
    fn sender_durations_default_and_minimum() {
        let mut session = Session::new(RATE, PTIME_MS, 0, 0);
        session.sender.queue("7", 0, 0).expect("valid digit");
        session.sender.queue("8", 10, 0).expect("valid digit");
        let packets = sent_packets(&session.run_to_idle());
        let finals: Vec<(u8, u16)> = packets
            .iter()
            .map(|(_, p)| p.block())
            .filter(|b| b.end)
            .map(|b| (b.code, b.duration))
            .collect();
        assert_eq!(
            finals,
            vec![(7, 800), (7, 800), (7, 800), (8, 320), (8, 320), (8, 320)]
        );
        let starts: Vec<u32> = packets
            .iter()
            .filter(|(_, p)| p.marker)
            .map(|(_, p)| p.timestamp)
            .collect();
        // Default gap 50 ms after the default 100 ms tone: (800 + 400) / 160 → tick 8.
        assert_eq!(starts, vec![0, 8 * PTIME_UNITS]);
    }

    #[test]
    fn sender_refuses_invalid_digits_and_queues_nothing() {
        let mut sender = DtmfSender::new(RATE, PTIME_MS);
        assert_eq!(
            sender.queue("12x3", 100, 50),
            Err(DtmfError::InvalidDigit {
                digit: 'x',
                index: 2
            })
        );
        assert_eq!(
            sender.queue("5 6", 100, 50),
            Err(DtmfError::InvalidDigit {
                digit: ' ',
                index: 1
            })
        );
        assert_eq!(
            sender.queue("E", 100, 50),
            Err(DtmfError::InvalidDigit {
                digit: 'E',
                index: 0
            })
        );
        assert!(sender.is_idle());
        let mut out = [0; 4];
        assert_eq!(sender.poll_packet(Instant::now(), 0, &mut out), None);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn sender_queue_is_bounded() {
        let mut sender = DtmfSender::new(RATE, PTIME_MS);
        let full = "1".repeat(MAX_QUEUED_DIGITS);
        assert_eq!(sender.queue(&full, 100, 50), Ok(()));
        assert_eq!(
            sender.queue("2", 100, 50),
            Err(DtmfError::QueueFull {
                queued: 64,
                requested: 1
            })
        );
        let mut out = [0; 4];
        let first = sender.poll_packet(Instant::now(), 0, &mut out);
        assert_eq!(
            first,
            Some(EventPacket {
                marker: true,
                timestamp: 0,
                end: false
            })
        );
        assert_eq!(out[0], 1);
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            DtmfError::TruncatedPayload { len: 3 }.to_string(),
            "telephone-event payload of 3 bytes, need at least 4"
        );
        assert_eq!(
            DtmfError::InvalidDigit {
                digit: 'x',
                index: 2
            }
            .to_string(),
            "invalid DTMF digit 'x' at position 2"
        );
        assert_eq!(
            DtmfError::QueueFull {
                queued: 60,
                requested: 5
            }
            .to_string(),
            "DTMF queue full: 60 queued + 5 requested > 64"
        );
    }
}
