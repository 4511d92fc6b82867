//! RTCP for one two-party RTP session (RFC 3550 §6, Appendix A.1/A.3/A.7/A.8).
//!
//! Owns: reception statistics for the single remote RTP source (extended
//! sequence numbers, loss, interarrival jitter), sender statistics for our own
//! stream, the report schedule, writing compound SR/RR + SDES CNAME (+ BYE)
//! packets, and parsing received compound packets into round-trip time and the
//! peer's view of our stream.
//!
//! Must not: read the clock (wall-clock NTP time is derived from an anchor given
//! at construction), touch sockets, allocate per packet, or demultiplex RTP from
//! RTCP. With rtcp-mux (RFC 5761) the caller routes packets whose second octet
//! is 192..=223 here. SRTCP protection is also the caller's job.

use std::fmt;
use std::time::{Duration, Instant};

/// Largest compound packet `poll_transmit` / `write_bye` can produce: SR with
/// one report block (52), SDES with a 255-byte CNAME (268) and BYE (8).
pub const MAX_COMPOUND_LEN: usize =
    SR_FIXED_LEN + REPORT_BLOCK_LEN + sdes_len(MAX_CNAME_LEN) + BYE_LEN;

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// The caller's settings for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpConfig {
    /// SSRC of the RTP stream we send; also the SSRC our RTCP packets carry.
    pub local_ssrc: u32,
    /// Canonical name sent in every SDES; truncated to 255 bytes (at a char boundary).
    pub cname: String,
    /// RTP clock rate of the negotiated payload (8000 for G.711), for jitter and SR timestamps.
    pub clock_rate: u32,
    /// Deterministic reporting interval before randomization; RFC 3550 recommends 5 s.
    /// Clamped to 10 ms..=1 h so the timer stays well defined.
    pub min_interval: Duration,
    /// Seed of the generator that randomizes the report interval.
    pub seed: u64,
    /// NTP 64-bit timestamp of the wall clock at the `now` passed to [`RtcpSession::new`]
    /// (see [`ntp_timestamp_from_unix`]); all later NTP times are derived from it.
    pub ntp_at_start: u64,
}

/// RTCP state of one RTP session with a single remote party.
#[derive(Debug)]
pub struct RtcpSession {
    /// SSRC of our stream.
    local_ssrc: u32,
    /// Our CNAME, at most 255 bytes.
    cname: String,
    /// RTP clock rate, never zero.
    clock_rate: u32,
    /// Deterministic report interval (already clamped).
    min_interval: Duration,
    /// Randomizes report intervals (RFC 3550 §6.3.1 "[0.5, 1.5] × T").
    rng: SplitMix64,
    /// Origin of the session's virtual clocks.
    start: Instant,
    /// NTP wall-clock time at `start`.
    ntp_at_start: u64,
    /// When the next regular report is due.
    next_report_at: Instant,
    /// Once our BYE is written the session sends nothing more.
    bye_sent: bool,
    /// Counters and timestamp mapping for our SR sender info.
    sender: SenderState,
    /// Reception statistics of the remote RTP source we report on.
    source: Option<RemoteSource>,
    /// A different SSRC on probation before it replaces `source` (A.1 MIN_SEQUENTIAL).
    candidate: Option<Candidate>,
    /// The peer's most recent SR, echoed back as LSR/DLSR so it can measure RTT.
    last_sr: Option<LastSr>,
    /// SSRC of the peer's most recent SR/RR.
    remote_rtcp_ssrc: Option<u32>,
    /// The peer's CNAME; its capacity (`MAX_CNAME_LEN`) is reserved by the first one, so later
    /// updates never allocate.
    remote_cname: String,
    /// The peer's latest report block about our stream.
    remote_report: Option<ReportBlock>,
    /// Latest round-trip time measured from a report block about us.
    rtt: Option<Duration>,
    /// Fraction lost carried in the last report block we sent.
    last_fraction_lost: u8,
    /// Number of SR packets we wrote.
    sr_sent: u64,
    /// Number of RR packets we wrote.
    rr_sent: u64,
    /// Number of compound packets accepted by `on_rtcp`.
    rtcp_received: u64,
    /// The peer said BYE.
    bye_received: bool,
}

impl RtcpSession {
    /// Starts a session at `now`; the first report is due after about half the interval.
    pub fn new(config: RtcpConfig, now: Instant) -> RtcpSession {
        let min_interval = config
            .min_interval
            .clamp(MIN_INTERVAL_FLOOR, MIN_INTERVAL_CEILING);
        let mut session = RtcpSession {
            local_ssrc: config.local_ssrc,
            cname: truncate_to_char_boundary(config.cname, MAX_CNAME_LEN),
            clock_rate: config.clock_rate.max(1),
            min_interval,
            rng: SplitMix64(config.seed),
            start: now,
            ntp_at_start: config.ntp_at_start,
            next_report_at: now,
            bye_sent: false,
            sender: SenderState::default(),
            source: None,
            candidate: None,
            last_sr: None,
            remote_rtcp_ssrc: None,
            remote_cname: String::new(),
            remote_report: None,
            rtt: None,
            last_fraction_lost: 0,
            sr_sent: 0,
            rr_sent: 0,
            rtcp_received: 0,
            bye_received: false,
        };
        // RFC 3550 §6.3.2: the initial interval is halved so a new party is heard quickly.
        session.next_report_at = session.after_random_interval(now, min_interval / 2);
        session
    }

    /// An RTP packet we received (after SRTP and RTP header validation):
    /// updates the A.1 sequence statistics and the A.8 jitter estimate.
    pub fn on_rtp_received(&mut self, now: Instant, ssrc: u32, seq: u16, rtp_timestamp: u32) {
        if ssrc == self.local_ssrc {
            // Our own stream looped back (or an SSRC collision): not the remote party.
            return;
        }
        let arrival = self.rtp_clock(now);
        match &mut self.source {
            None => self.source = Some(RemoteSource::start(ssrc, seq, arrival, rtp_timestamp)),
            Some(source) if source.ssrc == ssrc => source.on_packet(seq, arrival, rtp_timestamp),
            Some(source) if source.bye => {
                // The old source left; the next stream is the peer's new one.
                self.source = Some(RemoteSource::start(ssrc, seq, arrival, rtp_timestamp));
                self.candidate = None;
            }
            Some(_) => self.probe_new_source(ssrc, seq, arrival, rtp_timestamp),
        }
    }

    /// An RTP packet we sent: feeds the SR packet/octet counts and the RTP/NTP mapping.
    pub fn on_rtp_sent(&mut self, now: Instant, rtp_timestamp: u32, payload_len: usize) {
        let octets = u32::try_from(payload_len).unwrap_or(u32::MAX);
        let sender = &mut self.sender;
        sender.packets = sender.packets.wrapping_add(1);
        sender.octets = sender.octets.wrapping_add(octets);
        sender.last_rtp_timestamp = rtp_timestamp;
        sender.last_sent_at = Some(now);
        sender.sent_since_report = true;
    }

    /// A received compound RTCP packet. Validates all of it before touching any
    /// state, then records the peer's SR (for LSR/DLSR), its report about our
    /// stream (and the RTT derived from it), its CNAME and BYE. A BYE ends our
    /// report blocks about the remote source (two parties: any remote BYE is the peer's).
    pub fn on_rtcp<'a>(
        &mut self,
        now: Instant,
        packet: &'a [u8],
    ) -> Result<RtcpInfo<'a>, RtcpError> {
        let mut info = parse_compound(packet, self.local_ssrc)?;
        self.rtcp_received += 1;
        if let Some(ssrc) = info.sender_ssrc.filter(|&ssrc| ssrc != self.local_ssrc) {
            self.remote_rtcp_ssrc = Some(ssrc);
        }
        if let Some(sr) = info.sr {
            self.last_sr = Some(LastSr {
                ssrc: sr.ssrc,
                lsr: ntp_middle(sr.ntp_timestamp),
                arrived: now,
            });
        }
        if let Some(block) = info.report_about_us {
            self.remote_report = Some(block);
            info.rtt = self.rtt_from_block(now, &block);
            if info.rtt.is_some() {
                self.rtt = info.rtt;
            }
        }
        if let Some(cname) = info.cname {
            // Reserved by the first CNAME (a session whose peer sends no RTCP holds none);
            // an SDES item is at most 255 bytes, so no reallocation after that.
            if self.remote_cname.capacity() == 0 {
                self.remote_cname.reserve_exact(MAX_CNAME_LEN);
            }
            self.remote_cname.clear();
            self.remote_cname.push_str(cname);
        }
        if info.bye {
            self.bye_received = true;
            if let Some(source) = &mut self.source {
                source.bye = true;
            }
        }
        Ok(info)
    }

    /// If a report is due, writes a compound packet into `out` and returns its length:
    /// SR if we sent RTP since the last report, else RR; a report block for the remote
    /// source if we received from it; always SDES CNAME. A buffer shorter than the
    /// packet (at most [`MAX_COMPOUND_LEN`]) loses this report like a dropped packet.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if self.bye_sent || now < self.next_report_at {
            return None;
        }
        self.next_report_at = self.after_random_interval(now, self.min_interval);
        self.write_report(now, out, false)
    }

    /// The final compound packet (report, SDES CNAME, BYE) on hang-up. Written once;
    /// afterwards the session produces no more packets.
    pub fn write_bye(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if self.bye_sent {
            return None;
        }
        let len = self.write_report(now, out, true)?;
        self.bye_sent = true;
        self.next_report_at = now.checked_add(AFTER_BYE).unwrap_or(self.next_report_at);
        Some(len)
    }

    /// When `poll_transmit` next has something to send.
    pub fn poll_timeout(&self) -> Instant {
        self.next_report_at
    }

    /// Reception, transmission and peer-reported statistics.
    pub fn stats(&self) -> RtcpStats {
        let (packets_received, expected, cumulative_lost, jitter) = match &self.source {
            Some(source) => (
                source.received,
                source.expected(),
                source.cumulative_lost(),
                source.jitter(),
            ),
            None => (0, 0, 0, 0),
        };
        let remote = self.remote_report;
        RtcpStats {
            packets_received,
            expected,
            cumulative_lost,
            fraction_lost: self.last_fraction_lost,
            fraction_lost_percent: fraction_to_percent(self.last_fraction_lost),
            jitter,
            jitter_ms: self.timestamp_units_to_ms(jitter),
            rtt: self.rtt,
            remote_fraction_lost: remote.map(|r| r.fraction_lost),
            remote_cumulative_lost: remote.map(|r| r.cumulative_lost),
            remote_jitter: remote.map(|r| r.jitter),
            remote_jitter_ms: remote.map(|r| self.timestamp_units_to_ms(r.jitter)),
            packets_sent: self.sender.packets,
            octets_sent: self.sender.octets,
            sr_sent: self.sr_sent,
            rr_sent: self.rr_sent,
            rtcp_received: self.rtcp_received,
            bye_received: self.bye_received,
        }
    }

    /// SSRC of the remote party: its RTP source, else the sender of its RTCP.
    pub fn remote_ssrc(&self) -> Option<u32> {
        self.source
            .as_ref()
            .map(|s| s.ssrc)
            .or(self.remote_rtcp_ssrc)
    }

    /// The peer's CNAME, once an SDES carried it.
    pub fn remote_cname(&self) -> Option<&str> {
        if self.remote_cname.is_empty() {
            return None;
        }
        Some(&self.remote_cname)
    }

    /// A different SSRC must arrive with two consecutive sequence numbers before it
    /// replaces the tracked source, so a stray packet cannot reset the statistics.
    fn probe_new_source(&mut self, ssrc: u32, seq: u16, arrival: u32, rtp_timestamp: u32) {
        let Some(candidate) = self.candidate else {
            self.candidate = Some(Candidate::new(ssrc, seq, arrival, rtp_timestamp));
            return;
        };
        if candidate.ssrc != ssrc || seq != candidate.first_seq.wrapping_add(1) {
            self.candidate = Some(Candidate::new(ssrc, seq, arrival, rtp_timestamp));
            return;
        }
        let mut source = RemoteSource::start(
            ssrc,
            candidate.first_seq,
            candidate.first_arrival,
            candidate.first_rtp_timestamp,
        );
        source.on_packet(seq, arrival, rtp_timestamp);
        self.source = Some(source);
        self.candidate = None;
    }

    /// Writes the compound packet and, only if it fit, commits what reporting changes.
    fn write_report(&mut self, now: Instant, out: &mut [u8], with_bye: bool) -> Option<usize> {
        let sender_info = self.sender.sent_since_report.then(|| self.sender_info(now));
        let block = self.report_block(now);
        let len = encode_compound(
            out,
            self.local_ssrc,
            sender_info.as_ref(),
            block.as_ref(),
            &self.cname,
            with_bye,
        )?;
        if sender_info.is_some() {
            self.sr_sent += 1;
        } else {
            self.rr_sent += 1;
        }
        self.sender.sent_since_report = false;
        if let (Some(block), Some(source)) = (block, &mut self.source) {
            source.expected_prior = source.expected();
            source.received_prior = source.received;
            self.last_fraction_lost = block.fraction_lost;
        }
        Some(len)
    }

    /// Sender info for an SR at `now`, extrapolating the RTP timestamp of the last sent packet.
    fn sender_info(&self, now: Instant) -> SenderInfo {
        let since_last = match self.sender.last_sent_at {
            Some(at) => now.saturating_duration_since(at),
            None => Duration::ZERO,
        };
        SenderInfo {
            ssrc: self.local_ssrc,
            ntp_timestamp: self.ntp(now),
            rtp_timestamp: self
                .sender
                .last_rtp_timestamp
                .wrapping_add(duration_to_ticks(since_last, self.clock_rate)),
            packet_count: self.sender.packets,
            octet_count: self.sender.octets,
        }
    }

    /// The A.3 report block about the remote source, without committing the interval priors.
    fn report_block(&self, now: Instant) -> Option<ReportBlock> {
        let source = self.source.as_ref().filter(|s| !s.bye)?;
        let expected = source.expected();
        let expected_interval = i64::from(expected.wrapping_sub(source.expected_prior));
        let received_interval = i64::from(source.received.wrapping_sub(source.received_prior));
        let lost_interval = expected_interval - received_interval;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some(sr) if sr.ssrc == source.ssrc => (
                sr.lsr,
                duration_to_ntp_short(now.saturating_duration_since(sr.arrived)),
            ),
            _ => (0, 0),
        };
        Some(ReportBlock {
            ssrc: source.ssrc,
            fraction_lost,
            cumulative_lost: source.cumulative_lost(),
            extended_highest_seq: source.extended_max(),
            jitter: source.jitter(),
            last_sr,
            delay_since_last_sr,
        })
    }

    /// RFC 3550 §6.4.1: RTT = A - LSR - DLSR in 1/65536 s, A being our arrival time.
    fn rtt_from_block(&self, now: Instant, block: &ReportBlock) -> Option<Duration> {
        if block.last_sr == 0 {
            return None;
        }
        let arrival = ntp_middle(self.ntp(now));
        let rtt = arrival
            .wrapping_sub(block.last_sr)
            .wrapping_sub(block.delay_since_last_sr);
        // A "negative" result means a bogus LSR/DLSR; an RTT above 9 hours is no measurement.
        if rtt > i32::MAX as u32 {
            return None;
        }
        Some(ntp_short_to_duration(rtt))
    }

    /// `now` + `base` × a uniform factor in [0.5, 1.5) (RFC 3550 §6.3.1).
    fn after_random_interval(&mut self, now: Instant, base: Duration) -> Instant {
        let factor = 0.5 + self.rng.next_unit();
        let interval = Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base);
        // The interval is at most 1.5 h, so only a clock at the end of time fails here.
        now.checked_add(interval).unwrap_or(now)
    }

    /// Arrival time in RTP timestamp units (A.8), wrapping like an RTP clock.
    fn rtp_clock(&self, now: Instant) -> u32 {
        duration_to_ticks(now.saturating_duration_since(self.start), self.clock_rate)
    }

    /// Wall-clock NTP time at `now`.
    fn ntp(&self, now: Instant) -> u64 {
        self.ntp_at_start
            .wrapping_add(duration_to_ntp(now.saturating_duration_since(self.start)))
    }

    fn timestamp_units_to_ms(&self, units: u32) -> f32 {
        (f64::from(units) * 1000.0 / f64::from(self.clock_rate)) as f32
    }
}

/// What a received compound packet contained. Text fields borrow from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RtcpInfo<'a> {
    /// SSRC of the first SR/RR (the reporting party).
    pub sender_ssrc: Option<u32>,
    /// Sender info of the first SR from another party.
    pub sr: Option<SenderInfo>,
    /// The report block about our SSRC (the last one, if several packets carried one).
    pub report_about_us: Option<ReportBlock>,
    /// Round-trip time measured from `report_about_us` (set by `on_rtcp`).
    pub rtt: Option<Duration>,
    /// First CNAME of another party; `None` if absent or not UTF-8.
    pub cname: Option<&'a str>,
    /// A BYE named a source other than ours.
    pub bye: bool,
    /// The BYE's reason for leaving, if given and UTF-8.
    pub bye_reason: Option<&'a str>,
}

/// Sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// Wall clock, NTP 64-bit format.
    pub ntp_timestamp: u64,
    /// RTP timestamp corresponding to `ntp_timestamp`.
    pub rtp_timestamp: u32,
    /// RTP packets sent since the stream started (wrapping).
    pub packet_count: u32,
    /// RTP payload octets sent since the stream started (wrapping).
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Lost fraction since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start, 24-bit signed (duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Cycles (high 16 bits) and highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR from the source, or 0.
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s, or 0.
    pub delay_since_last_sr: u32,
}

/// Statistics of the session, ours and as reported by the peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtcpStats {
    /// RTP packets received from the remote source (duplicates included, as in A.1).
    pub packets_received: u32,
    /// Packets expected from the remote source: extended highest − base + 1.
    pub expected: u32,
    /// `expected − packets_received`, clamped to 24-bit signed.
    pub cumulative_lost: i32,
    /// Fraction lost in the interval covered by our last report block, in 1/256.
    pub fraction_lost: u8,
    /// `fraction_lost` in percent.
    pub fraction_lost_percent: f32,
    /// Interarrival jitter of the remote stream in timestamp units.
    pub jitter: u32,
    /// `jitter` in milliseconds.
    pub jitter_ms: f32,
    /// Latest round-trip time measured via LSR/DLSR.
    pub rtt: Option<Duration>,
    /// Fraction of our packets the peer lost (1/256), from its latest report.
    pub remote_fraction_lost: Option<u8>,
    /// Our packets the peer lost in total, from its latest report.
    pub remote_cumulative_lost: Option<i32>,
    /// Jitter of our stream seen by the peer, in timestamp units.
    pub remote_jitter: Option<u32>,
    /// `remote_jitter` in milliseconds.
    pub remote_jitter_ms: Option<f32>,
    /// RTP packets we sent (wrapping).
    pub packets_sent: u32,
    /// RTP payload octets we sent (wrapping).
    pub octets_sent: u32,
    /// Sender reports we wrote.
    pub sr_sent: u64,
    /// Receiver reports we wrote.
    pub rr_sent: u64,
    /// Compound packets we accepted.
    pub rtcp_received: u64,
    /// The peer said BYE.
    pub bye_received: bool,
}

/// Why a received compound packet was rejected; `offset` is the byte offset of
/// the offending RTCP packet inside the compound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    /// Zero-length datagram.
    Empty,
    /// Fewer than 4 bytes left for a packet header.
    TruncatedHeader { offset: usize },
    /// Version field is not 2.
    BadVersion { offset: usize, version: u8 },
    /// Packet type outside 192..=223, so not RTCP (RFC 5761 §4).
    NotRtcp { offset: usize, packet_type: u8 },
    /// The length field runs past the end of the datagram.
    LengthExceedsPacket {
        offset: usize,
        declared: usize,
        available: usize,
    },
    /// Padding bit set on a packet that is not the last of the compound.
    PaddingNotLast { offset: usize },
    /// Padding count of zero or larger than the packet body.
    BadPadding { offset: usize, padding: usize },
    /// SR/RR shorter than its sender info and report count require.
    ReportTruncated {
        offset: usize,
        packet_type: u8,
        report_count: u8,
    },
    /// SDES chunk or item runs past the packet, or a chunk lacks its END item.
    SdesTruncated { offset: usize },
    /// BYE shorter than its source count and reason length require.
    ByeTruncated { offset: usize },
    /// APP packet without SSRC and name.
    AppTruncated { offset: usize },
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtcpError::Empty => write!(f, "empty RTCP datagram"),
            RtcpError::TruncatedHeader { offset } => {
                write!(f, "RTCP header truncated at byte {offset}")
            }
            RtcpError::BadVersion { offset, version } => {
                write!(
                    f,
                    "RTCP packet at byte {offset} has version {version}, expected 2"
                )
            }
            RtcpError::NotRtcp {
                offset,
                packet_type,
            } => {
                write!(f, "packet type {packet_type} at byte {offset} is not RTCP")
            }
            RtcpError::LengthExceedsPacket {
                offset,
                declared,
                available,
            } => write!(
                f,
                "RTCP packet at byte {offset} declares {declared} bytes but only {available} remain"
            ),
            RtcpError::PaddingNotLast { offset } => {
                write!(
                    f,
                    "RTCP packet at byte {offset} is padded but not last in the compound"
                )
            }
            RtcpError::BadPadding { offset, padding } => {
                write!(
                    f,
                    "RTCP packet at byte {offset} has invalid padding count {padding}"
                )
            }
            RtcpError::ReportTruncated {
                offset,
                packet_type,
                report_count,
            } => write!(
                f,
                "RTCP {} at byte {offset} too short for {report_count} report blocks",
                if packet_type == PT_SR { "SR" } else { "RR" }
            ),
            RtcpError::SdesTruncated { offset } => write!(f, "SDES at byte {offset} is truncated"),
            RtcpError::ByeTruncated { offset } => write!(f, "BYE at byte {offset} is truncated"),
            RtcpError::AppTruncated { offset } => write!(f, "APP at byte {offset} is truncated"),
        }
    }
}

impl std::error::Error for RtcpError {}

/// Converts a wall-clock time given as the duration since the Unix epoch (e.g. from
/// `SystemTime::now()`, read by the caller) to an NTP 64-bit timestamp.
pub fn ntp_timestamp_from_unix(since_unix_epoch: Duration) -> u64 {
    (NTP_UNIX_OFFSET_SECS << 32).wrapping_add(duration_to_ntp(since_unix_epoch))
}

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
const PT_APP: u8 = 204;
const SDES_END: u8 = 0;
const SDES_CNAME: u8 = 1;
const RTCP_VERSION: u8 = 2;

const SR_FIXED_LEN: usize = 28;
const RR_FIXED_LEN: usize = 8;
const REPORT_BLOCK_LEN: usize = 24;
const BYE_LEN: usize = 8;
const MAX_CNAME_LEN: usize = 255;

const MIN_INTERVAL_FLOOR: Duration = Duration::from_millis(10);
const MIN_INTERVAL_CEILING: Duration = Duration::from_secs(3600);
/// How far `poll_timeout` moves once BYE is sent, so pollers stop waking.
const AFTER_BYE: Duration = Duration::from_secs(365 * 24 * 3600);

/// RFC 3550 A.1 constants.
const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u32 = 100;

/// Our stream as a sender.
#[derive(Debug, Default)]
struct SenderState {
    /// RTP packets sent (wrapping, as carried in SR).
    packets: u32,
    /// RTP payload octets sent (wrapping, as carried in SR).
    octets: u32,
    /// RTP timestamp of the last packet sent.
    last_rtp_timestamp: u32,
    /// When the last packet was sent.
    last_sent_at: Option<Instant>,
    /// Decides SR versus RR.
    sent_since_report: bool,
}

/// The peer's last SR as needed for LSR/DLSR.
#[derive(Debug, Clone, Copy)]
struct LastSr {
    /// SSRC of the SR's sender.
    ssrc: u32,
    /// Middle 32 bits of its NTP timestamp.
    lsr: u32,
    /// When it arrived.
    arrived: Instant,
}

/// A new SSRC waiting for its second, consecutive packet.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// The new SSRC.
    ssrc: u32,
    /// Its first sequence number.
    first_seq: u16,
    /// Arrival of the first packet in timestamp units.
    first_arrival: u32,
    /// RTP timestamp of the first packet.
    first_rtp_timestamp: u32,
}

impl Candidate {
    fn new(ssrc: u32, seq: u16, arrival: u32, rtp_timestamp: u32) -> Candidate {
        Candidate {
            ssrc,
            first_seq: seq,
            first_arrival: arrival,
            first_rtp_timestamp: rtp_timestamp,
        }
    }
}

/// Per-source reception state of RFC 3550 A.1 (sequence), A.3 (loss) and A.8 (jitter).
#[derive(Debug)]
struct RemoteSource {
    /// SSRC of the remote stream.
    ssrc: u32,
    /// First sequence number counted, extended like `extended_max` (it may step back
    /// below zero, wrapping, when the stream's first packets arrive reordered).
    base_seq: u32,
    /// Highest sequence number seen.
    max_seq: u16,
    /// Sequence wraps, shifted by 16 bits.
    cycles: u32,
    /// After a large jump, the sequence number that would confirm a sender restart.
    bad_seq: u32,
    /// Packets received (duplicates included).
    received: u32,
    /// `expected()` at the last report.
    expected_prior: u32,
    /// `received` at the last report.
    received_prior: u32,
    /// Relative transit time of the previous packet; `None` until a packet set it.
    transit: Option<u32>,
    /// Jitter scaled by 16 (the A.8 integer form).
    jitter_q4: u64,
    /// The source said BYE: no more report blocks about it.
    bye: bool,
}

impl RemoteSource {
    /// A source whose first packet (`seq`) has just arrived; that packet is counted.
    fn start(ssrc: u32, seq: u16, arrival: u32, rtp_timestamp: u32) -> RemoteSource {
        let mut source = RemoteSource {
            ssrc,
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            bye: false,
        };
        source.update_jitter(arrival, rtp_timestamp);
        source
    }

    fn on_packet(&mut self, seq: u16, arrival: u32, rtp_timestamp: u32) {
        if self.update_seq(seq) {
            self.update_jitter(arrival, rtp_timestamp);
        }
    }

    /// A.1 `init_seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// A.1 `update_seq` for a validated source; false if the packet is not counted.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) != self.bad_seq {
                // A large jump: count it only if the next packet follows it.
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
            // Two sequential packets after a jump: the sender restarted its sequence.
            self.init_seq(seq);
            self.transit = None;
        } else {
            // A late packet, counted with max unchanged. If it precedes the first packet
            // we counted, the stream started reordered: move the base back so it is expected.
            let behind_max = u32::from(self.max_seq.wrapping_sub(seq));
            let span = self.extended_max().wrapping_sub(self.base_seq);
            if behind_max > span {
                self.base_seq = self.base_seq.wrapping_sub(behind_max - span);
            }
        }
        self.received = self.received.wrapping_add(1);
        true
    }

    /// A.8: J += (|D| - J) / 16, in the scaled integer form.
    fn update_jitter(&mut self, arrival: u32, rtp_timestamp: u32) {
        let transit = arrival.wrapping_sub(rtp_timestamp);
        let Some(previous) = self.transit.replace(transit) else {
            return;
        };
        let d = u64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
        self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u32 {
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    fn cumulative_lost(&self) -> i32 {
        clamp_lost(i64::from(self.expected()) - i64::from(self.received))
    }

    fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }
}

/// Cumulative loss is a 24-bit signed field.
fn clamp_lost(lost: i64) -> i32 {
    const MAX: i64 = 0x7f_ffff;
    const MIN: i64 = -0x80_0000;
    // The clamp makes the value fit in 24 bits, hence in i32.
    lost.clamp(MIN, MAX) as i32
}

/// Validates a whole compound packet and extracts what the session needs.
fn parse_compound(packet: &[u8], local_ssrc: u32) -> Result<RtcpInfo<'_>, RtcpError> {
    if packet.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut info = RtcpInfo::default();
    let mut offset = 0;
    while let Some(rest) = packet.get(offset..).filter(|r| !r.is_empty()) {
        let Some(&[first, packet_type, len_hi, len_lo]) = rest.first_chunk::<4>() else {
            return Err(RtcpError::TruncatedHeader { offset });
        };
        let version = first >> 6;
        if version != RTCP_VERSION {
            return Err(RtcpError::BadVersion { offset, version });
        }
        if !(192..=223).contains(&packet_type) {
            return Err(RtcpError::NotRtcp {
                offset,
                packet_type,
            });
        }
        let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let Some(whole) = rest.get(..len) else {
            return Err(RtcpError::LengthExceedsPacket {
                offset,
                declared: len,
                available: rest.len(),
            });
        };
        let padded = first & 0x20 != 0;
        let body_end = if padded {
            if len != rest.len() {
                return Err(RtcpError::PaddingNotLast { offset });
            }
            let padding = usize::from(whole.last().copied().unwrap_or(0));
            if padding == 0 || padding > len - 4 {
                return Err(RtcpError::BadPadding { offset, padding });
            }
            len - padding
        } else {
            len
        };
        let body = Reader::new(whole.get(4..body_end).unwrap_or_default());
        let count = first & 0x1f;
        match packet_type {
            PT_SR | PT_RR => parse_report(body, offset, packet_type, count, local_ssrc, &mut info)?,
            PT_SDES => parse_sdes(body, offset, count, local_ssrc, &mut info)?,
            PT_BYE => parse_bye(body, offset, count, local_ssrc, &mut info)?,
            PT_APP if body.remaining() < 8 => return Err(RtcpError::AppTruncated { offset }),
            // APP contents and feedback/XR types are not ours to interpret.
            _ => {}
        }
        offset += len;
    }
    Ok(info)
}

fn parse_report<'a>(
    mut body: Reader<'a>,
    offset: usize,
    packet_type: u8,
    report_count: u8,
    local_ssrc: u32,
    info: &mut RtcpInfo<'a>,
) -> Result<(), RtcpError> {
    let truncated = RtcpError::ReportTruncated {
        offset,
        packet_type,
        report_count,
    };
    let ssrc = body.u32().ok_or(truncated)?;
    if packet_type == PT_SR {
        let sender = SenderInfo {
            ssrc,
            ntp_timestamp: body.u64().ok_or(truncated)?,
            rtp_timestamp: body.u32().ok_or(truncated)?,
            packet_count: body.u32().ok_or(truncated)?,
            octet_count: body.u32().ok_or(truncated)?,
        };
        if info.sr.is_none() && ssrc != local_ssrc {
            info.sr = Some(sender);
        }
    }
    if info.sender_ssrc.is_none() {
        info.sender_ssrc = Some(ssrc);
    }
    for _ in 0..report_count {
        let block = read_report_block(&mut body).ok_or(truncated)?;
        if block.ssrc == local_ssrc && ssrc != local_ssrc {
            info.report_about_us = Some(block);
        }
    }
    // Anything after the blocks is a profile-specific extension: ignored.
    Ok(())
}

fn read_report_block(body: &mut Reader<'_>) -> Option<ReportBlock> {
    let ssrc = body.u32()?;
    let loss = body.u32()?;
    // The low 24 bits are a signed count: shift up and back down to sign-extend.
    let cumulative_lost = ((loss << 8) as i32) >> 8;
    Some(ReportBlock {
        ssrc,
        fraction_lost: (loss >> 24) as u8,
        cumulative_lost,
        extended_highest_seq: body.u32()?,
        jitter: body.u32()?,
        last_sr: body.u32()?,
        delay_since_last_sr: body.u32()?,
    })
}

fn parse_sdes<'a>(
    mut body: Reader<'a>,
    offset: usize,
    chunk_count: u8,
    local_ssrc: u32,
    info: &mut RtcpInfo<'a>,
) -> Result<(), RtcpError> {
    let truncated = RtcpError::SdesTruncated { offset };
    for _ in 0..chunk_count {
        let ssrc = body.u32().ok_or(truncated)?;
        loop {
            let item_type = body.u8().ok_or(truncated)?;
            if item_type == SDES_END {
                // The END item is followed by nulls up to the next 32-bit boundary.
                body.align4();
                break;
            }
            let len = body.u8().ok_or(truncated)?;
            let text = body.bytes(usize::from(len)).ok_or(truncated)?;
            if item_type == SDES_CNAME && ssrc != local_ssrc && info.cname.is_none() {
                info.cname = std::str::from_utf8(text).ok();
            }
        }
    }
    Ok(())
}

fn parse_bye<'a>(
    mut body: Reader<'a>,
    offset: usize,
    source_count: u8,
    local_ssrc: u32,
    info: &mut RtcpInfo<'a>,
) -> Result<(), RtcpError> {
    let truncated = RtcpError::ByeTruncated { offset };
    for _ in 0..source_count {
        if body.u32().ok_or(truncated)? != local_ssrc {
            info.bye = true;
        }
    }
    if body.remaining() == 0 {
        return Ok(());
    }
    let len = body.u8().ok_or(truncated)?;
    let reason = body.bytes(usize::from(len)).ok_or(truncated)?;
    if !reason.is_empty() {
        info.bye_reason = std::str::from_utf8(reason).ok();
    }
    Ok(())
}

/// Writes [SR|RR] + SDES CNAME [+ BYE]; `None` if `out` is too short.
fn encode_compound(
    out: &mut [u8],
    local_ssrc: u32,
    sender_info: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &str,
    with_bye: bool,
) -> Option<usize> {
    let mut w = Writer { buf: out, len: 0 };
    let block_count = u8::from(block.is_some());
    let blocks_len = usize::from(block_count) * REPORT_BLOCK_LEN;
    match sender_info {
        Some(sr) => {
            w.header(block_count, PT_SR, SR_FIXED_LEN + blocks_len)?;
            w.u32(local_ssrc)?;
            w.u64(sr.ntp_timestamp)?;
            w.u32(sr.rtp_timestamp)?;
            w.u32(sr.packet_count)?;
            w.u32(sr.octet_count)?;
        }
        None => {
            w.header(block_count, PT_RR, RR_FIXED_LEN + blocks_len)?;
            w.u32(local_ssrc)?;
        }
    }
    if let Some(block) = block {
        w.u32(block.ssrc)?;
        // Two's complement truncated to 24 bits is the field's encoding.
        w.u32(
            (u32::from(block.fraction_lost) << 24) | (block.cumulative_lost as u32 & 0x00ff_ffff),
        )?;
        w.u32(block.extended_highest_seq)?;
        w.u32(block.jitter)?;
        w.u32(block.last_sr)?;
        w.u32(block.delay_since_last_sr)?;
    }
    let sdes_total = sdes_len(cname.len());
    w.header(1, PT_SDES, sdes_total)?;
    w.u32(local_ssrc)?;
    w.u8(SDES_CNAME)?;
    // The config constructor truncated the CNAME to 255 bytes.
    w.u8(u8::try_from(cname.len()).unwrap_or(u8::MAX))?;
    w.bytes(cname.as_bytes())?;
    // END item plus nulls to the 32-bit boundary.
    w.zeros(sdes_total - 10 - cname.len())?;
    if with_bye {
        w.header(1, PT_BYE, BYE_LEN)?;
        w.u32(local_ssrc)?;
    }
    Some(w.len)
}

/// Total SDES packet length with one CNAME chunk: header, SSRC, item, END, padding.
const fn sdes_len(cname_len: usize) -> usize {
    4 + (4 + 2 + cname_len + 1).div_ceil(4) * 4
}

fn truncate_to_char_boundary(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn fraction_to_percent(fraction: u8) -> f32 {
    f32::from(fraction) * 100.0 / 256.0
}

/// Duration as RTP clock ticks, wrapping like an RTP timestamp.
fn duration_to_ticks(d: Duration, clock_rate: u32) -> u32 {
    let rate = u64::from(clock_rate);
    let whole = d.as_secs().wrapping_mul(rate);
    let part = u64::from(d.subsec_nanos()) * rate / 1_000_000_000;
    whole.wrapping_add(part) as u32
}

/// Duration as NTP 64-bit fixed point (32.32), wrapping.
fn duration_to_ntp(d: Duration) -> u64 {
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (d.as_secs() << 32).wrapping_add(frac)
}

/// Duration as the 16.16 fixed point of DLSR, saturating.
fn duration_to_ntp_short(d: Duration) -> u32 {
    let frac = (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
    let units = d.as_secs().saturating_mul(1 << 16).saturating_add(frac);
    u32::try_from(units).unwrap_or(u32::MAX)
}

fn ntp_short_to_duration(units: u32) -> Duration {
    let nanos = (u64::from(units & 0xffff) * 1_000_000_000) >> 16;
    // nanos < 1e9 because the fraction is below 65536.
    Duration::new(u64::from(units >> 16), nanos as u32)
}

/// The middle 32 bits of an NTP timestamp, as used in LSR.
fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Bounds-checked big-endian reads over one packet body.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1)?.first().copied()
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.bytes(4)?.first_chunk::<4>()?;
        Some(u32::from_be_bytes(*bytes))
    }

    fn u64(&mut self) -> Option<u64> {
        let bytes = self.bytes(8)?.first_chunk::<8>()?;
        Some(u64::from_be_bytes(*bytes))
    }

    /// Skips to the next 32-bit boundary; bodies start 4 bytes into an aligned packet.
    fn align4(&mut self) {
        self.pos = self.pos.next_multiple_of(4).min(self.data.len());
    }
}

/// Bounds-checked big-endian writes into the caller's buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    /// Common header: V=2, no padding, `count`, type, length in words minus one.
    fn header(&mut self, count: u8, packet_type: u8, total_len: usize) -> Option<()> {
        let words = u16::try_from(total_len / 4 - 1).ok()?;
        self.u8((RTCP_VERSION << 6) | count)?;
        self.u8(packet_type)?;
        self.bytes(&words.to_be_bytes())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    fn zeros(&mut self, n: usize) -> Option<()> {
        let end = self.len.checked_add(n)?;
        self.buf.get_mut(self.len..end)?.fill(0);
        self.len = end;
        Some(())
    }

    fn u8(&mut self, value: u8) -> Option<()> {
        self.bytes(&[value])
    }

    fn u32(&mut self, value: u32) -> Option<()> {
        self.bytes(&value.to_be_bytes())
    }

    fn u64(&mut self, value: u64) -> Option<()> {
        self.bytes(&value.to_be_bytes())
    }
}

/// SplitMix64: small, seedable, good enough to de-synchronize report timers.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: u32 = 0xCAFE_BABE;
    const BOB: u32 = 0x1234_5678;
    const NTP_START: u64 = 0xE94B_2A00_0000_0000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(local_ssrc: u32, cname: &str, seed: u64) -> RtcpConfig {
        RtcpConfig {
            local_ssrc,
            cname: cname.to_string(),
            clock_rate: 8000,
            min_interval: Duration::from_secs(5),
            seed,
            ntp_at_start: NTP_START,
        }
    }

    /// Byte-exact SR (one block about ALICE) + SDES CNAME from BOB.
    fn bob_sr_sdes() -> Vec<u8> {
        let mut p = vec![
            0x81, 0xC8, 0x00, 0x0C, // V=2 RC=1 SR, 13 words
            0x12, 0x34, 0x56, 0x78, // sender SSRC
            0xE9, 0x4B, 0x2A, 0x10, 0x80, 0x00, 0x00, 0x00, // NTP
            0x00, 0x01, 0xE2, 0x40, // RTP timestamp 123456
            0x00, 0x00, 0x00, 0x64, // 100 packets
            0x00, 0x00, 0x3E, 0x80, // 16000 octets
            0xCA, 0xFE, 0xBA, 0xBE, // block about ALICE
            0x0C, 0x00, 0x00, 0x05, // fraction 12/256, 5 lost
            0x00, 0x01, 0x00, 0x63, // one wrap, seq 99
            0x00, 0x00, 0x00, 0x50, // jitter 80
            0x2A, 0x00, 0x00, 0x00, // LSR
            0x00, 0x00, 0x80, 0x00, // DLSR 0.5 s
            0x81, 0xCA, 0x00, 0x05, // SDES, 1 chunk, 6 words
            0x12, 0x34, 0x56, 0x78, 0x01, 13,
        ];
        p.extend_from_slice(b"bob@192.0.2.7");
        p.push(0x00);
        p
    }

    /// Byte-exact RR + SDES + BYE with a reason from BOB.
    fn bob_rr_sdes_bye() -> Vec<u8> {
        let mut p = vec![
            0x81, 0xC9, 0x00, 0x07, // RR RC=1, 8 words
            0x12, 0x34, 0x56, 0x78, // reporter
            0xCA, 0xFE, 0xBA, 0xBE, // about ALICE
            0x00, 0xFF, 0xFF, 0xFF, // fraction 0, cumulative -1 (a duplicate)
            0x00, 0x00, 0x12, 0x34, // highest seq
            0x00, 0x00, 0x00, 0x10, // jitter 16
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // no SR seen
            0x81, 0xCA, 0x00, 0x03, // SDES
            0x12, 0x34, 0x56, 0x78, 0x01, 0x03, b'b', b'o', b'b', 0x00, 0x00, 0x00, 0x81, 0xCB,
            0x00, 0x03, // BYE SC=1
            0x12, 0x34, 0x56, 0x78, 0x06,
        ];
        p.extend_from_slice(b"hangup");
        p.push(0x00);
        p
    }

    /// RR without blocks + SDES (two chunks, several items) + APP + XR + padded BYE.
    fn bob_mixed_padded() -> Vec<u8> {
        let mut p = vec![0x80, 0xC9, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78];
        // SDES: chunk BOB {NAME "Bob", CNAME "b@h", PRIV}, chunk 0x99 {CNAME "x"}.
        p.extend_from_slice(&[0x82, 0xCA, 0x00, 0x07, 0x12, 0x34, 0x56, 0x78]);
        p.extend_from_slice(&[0x02, 0x03, b'B', b'o', b'b']);
        p.extend_from_slice(&[0x01, 0x03, b'b', b'@', b'h']);
        p.extend_from_slice(&[0x08, 0x02, 0x01, b'p', 0x00, 0x00]); // PRIV, END, pad to 24
        p.extend_from_slice(&[0x00, 0x00, 0x00, 0x99, 0x01, 0x01, b'x', 0x00]);
        // APP "ABCD" with 4 bytes of data, then XR (207) with an opaque word.
        p.extend_from_slice(&[
            0x80, 0xCC, 0x00, 0x03, 0x12, 0x34, 0x56, 0x78, b'A', b'B', b'C', b'D', 1, 2, 3, 4,
        ]);
        p.extend_from_slice(&[0x80, 0xCF, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78]);
        // BYE with 4 bytes of padding.
        p.extend_from_slice(&[
            0xA1, 0xCB, 0x00, 0x02, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x04,
        ]);
        p
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Side {
        Alice,
        Bob,
    }

    enum Payload {
        Rtp { ssrc: u32, seq: u16, timestamp: u32 },
        Rtcp(Vec<u8>),
    }

    struct InFlight {
        at: Instant,
        to: Side,
        payload: Payload,
    }

    #[test]
    fn two_parties_over_30ms_link_see_exact_loss_and_60ms_rtt() {
        let t0 = Instant::now();
        let delay = ms(30);
        let mut alice = RtcpSession::new(config(ALICE, "alice@example.com", 1), t0);
        let mut bob = RtcpSession::new(config(BOB, "bob@example.com", 2), t0);
        let mut link: Vec<InFlight> = Vec::new();
        let dropped_alice_packets = [3u16, 17, 42, 66, 88];
        let mut blocks_at_alice: Vec<(ReportBlock, Option<Duration>)> = Vec::new();
        let mut blocks_at_bob: Vec<ReportBlock> = Vec::new();
        let mut buf = [0u8; MAX_COMPOUND_LEN];

        for tick in 0..30_000u64 {
            let now = t0 + ms(tick);
            let (due, later): (Vec<InFlight>, Vec<InFlight>) =
                link.drain(..).partition(|m| m.at <= now);
            link = later;
            for message in due {
                let session = if message.to == Side::Alice {
                    &mut alice
                } else {
                    &mut bob
                };
                match message.payload {
                    Payload::Rtp {
                        ssrc,
                        seq,
                        timestamp,
                    } => session.on_rtp_received(now, ssrc, seq, timestamp),
                    Payload::Rtcp(bytes) => {
                        let info = session
                            .on_rtcp(now, &bytes)
                            .expect("sessions write valid RTCP");
                        if let Some(block) = info.report_about_us {
                            match message.to {
                                Side::Alice => blocks_at_alice.push((block, info.rtt)),
                                Side::Bob => blocks_at_bob.push(block),
                            }
                        }
                    }
                }
            }
            // 100 packets each way, 10 ms apart (80 timestamp units at 8 kHz).
            if tick % 10 == 0 && tick < 1000 {
                let index = (tick / 10) as u16;
                let timestamp = 80 * u32::from(index);
                alice.on_rtp_sent(now, timestamp, 80);
                bob.on_rtp_sent(now, 5000 + timestamp, 80);
                if !dropped_alice_packets.contains(&index) {
                    let payload = Payload::Rtp {
                        ssrc: ALICE,
                        seq: 1000 + index,
                        timestamp,
                    };
                    link.push(InFlight {
                        at: now + delay,
                        to: Side::Bob,
                        payload,
                    });
                }
                let payload = Payload::Rtp {
                    ssrc: BOB,
                    seq: 60_000 + index,
                    timestamp: 5000 + timestamp,
                };
                link.push(InFlight {
                    at: now + delay,
                    to: Side::Alice,
                    payload,
                });
            }
            if let Some(n) = alice.poll_transmit(now, &mut buf) {
                link.push(InFlight {
                    at: now + delay,
                    to: Side::Bob,
                    payload: Payload::Rtcp(buf[..n].to_vec()),
                });
            }
            if let Some(n) = bob.poll_transmit(now, &mut buf) {
                link.push(InFlight {
                    at: now + delay,
                    to: Side::Alice,
                    payload: Payload::Rtcp(buf[..n].to_vec()),
                });
            }
        }

        // Bob's first report covers all 100 of Alice's packets (first report ≥ 1.25 s).
        let (first, _) = blocks_at_alice[0];
        assert_eq!(first.cumulative_lost, 5);
        assert_eq!(first.fraction_lost, (5 * 256 / 100) as u8);
        assert_eq!(first.fraction_lost, 12);
        assert_eq!(first.extended_highest_seq, 1099);
        assert_eq!(first.jitter, 0, "constant 30 ms transit");
        // Later intervals saw no packets, hence no fresh loss; the total stays.
        let (last, _) = *blocks_at_alice.last().expect("Bob reported several times");
        assert_eq!((last.fraction_lost, last.cumulative_lost), (0, 5));

        let rtts: Vec<Duration> = blocks_at_alice.iter().filter_map(|(_, rtt)| *rtt).collect();
        assert!(
            rtts.len() >= 3,
            "RTT measured from every block after Alice's SR: {rtts:?}"
        );
        for rtt in &rtts {
            assert!(rtt.abs_diff(ms(60)) <= ms(1), "Alice RTT {rtt:?}");
        }

        let a = alice.stats();
        assert!(a.rtt.expect("Alice measured RTT").abs_diff(ms(60)) <= ms(1));
        assert_eq!(a.remote_cumulative_lost, Some(5));
        assert_eq!(a.remote_fraction_lost, Some(0));
        assert_eq!(
            (a.packets_received, a.expected, a.cumulative_lost),
            (100, 100, 0)
        );
        assert_eq!((a.packets_sent, a.octets_sent), (100, 8000));
        assert_eq!(a.sr_sent, 1, "only the first report follows sent RTP");
        assert!(a.rr_sent >= 4);

        let b = bob.stats();
        assert_eq!(
            (b.packets_received, b.expected, b.cumulative_lost),
            (95, 100, 5)
        );
        assert!(b.rtt.expect("Bob measured RTT").abs_diff(ms(60)) <= ms(1));
        assert_eq!(b.remote_cumulative_lost, Some(0));
        assert_eq!(blocks_at_bob[0].cumulative_lost, 0);
        assert_eq!(blocks_at_bob[0].extended_highest_seq, 60_099);
        assert_eq!(
            b.rtcp_received,
            a.sr_sent + a.rr_sent - link_pending_to(&link, Side::Bob)
        );
        assert_eq!(alice.remote_cname(), Some("bob@example.com"));
        assert_eq!(bob.remote_cname(), Some("alice@example.com"));
        assert_eq!(alice.remote_ssrc(), Some(BOB));
    }

    fn link_pending_to(link: &[InFlight], side: Side) -> u64 {
        link.iter()
            .filter(|m| m.to == side && matches!(m.payload, Payload::Rtcp(_)))
            .count() as u64
    }

    /// Feeds packets 20 ms apart at 8 kHz, with `extra_delay(i)` added to a 30 ms transit.
    fn jitter_after(packets: u32, extra_delay: impl Fn(u32) -> u64) -> RtcpStats {
        let t0 = Instant::now();
        let mut session = RtcpSession::new(config(ALICE, "a", 7), t0);
        for i in 0..packets {
            let now = t0 + ms(20 * u64::from(i) + 30 + extra_delay(i));
            session.on_rtp_received(now, BOB, i as u16, 160 * i);
        }
        session.stats()
    }

    #[test]
    fn jitter_is_zero_for_constant_transit() {
        let stats = jitter_after(200, |_| 0);
        assert_eq!(stats.jitter, 0);
        assert_eq!(stats.jitter_ms, 0.0);
    }

    #[test]
    fn jitter_converges_to_80_units_for_alternating_10ms_transit() {
        let stats = jitter_after(300, |i| if i % 2 == 1 { 10 } else { 0 });
        // |D| = 10 ms = 80 units every packet; the A.8 integer filter settles within 1 unit.
        assert!((79..=80).contains(&stats.jitter), "jitter {}", stats.jitter);
        assert!(
            (stats.jitter_ms - 10.0).abs() <= 0.125,
            "jitter {} ms",
            stats.jitter_ms
        );
        // After 16 packets the filter is still well below the target: it really is smoothing.
        let early = jitter_after(16, |i| if i % 2 == 1 { 10 } else { 0 });
        assert!(
            (40..=60).contains(&early.jitter),
            "early jitter {}",
            early.jitter
        );
    }

    /// Receives `seqs` from BOB 20 ms apart and returns the session.
    fn receive(seqs: &[u16]) -> (RtcpSession, Instant) {
        let t0 = Instant::now();
        let mut session = RtcpSession::new(config(ALICE, "a", 3), t0);
        let mut now = t0;
        for &seq in seqs {
            now += ms(20);
            session.on_rtp_received(now, BOB, seq, u32::from(seq) * 160);
        }
        (session, now)
    }

    /// The report block the session would put on the wire about BOB.
    fn wire_block(session: &mut RtcpSession, now: Instant) -> ReportBlock {
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        let at = now.max(session.poll_timeout());
        let n = session.poll_transmit(at, &mut buf).expect("report due");
        let info = parse_compound(&buf[..n], BOB).expect("own report parses");
        info.report_about_us.expect("block about BOB")
    }

    #[test]
    fn sequence_wraparound_counts_expected_and_lost() {
        let seqs: Vec<u16> = (0..100u16)
            .map(|i| 65_500u16.wrapping_add(i))
            .filter(|&s| s != 65_530 && s != 4)
            .collect();
        let (mut session, now) = receive(&seqs);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (98, 100, 2)
        );
        let block = wire_block(&mut session, now);
        assert_eq!(block.extended_highest_seq, 65_536 + 63);
        assert_eq!(block.cumulative_lost, 2);
        assert_eq!(block.fraction_lost, (2 * 256 / 100) as u8);
        assert_eq!(session.stats().fraction_lost, 5);
        assert!((session.stats().fraction_lost_percent - 1.953).abs() < 0.01);
    }

    #[test]
    fn reordering_within_and_across_wrap_loses_nothing() {
        let mut seqs: Vec<u16> = (0..50).collect();
        for pair in seqs.chunks_mut(2) {
            pair.swap(0, 1);
        }
        // Packet 10 arrives 20 packets late.
        let late = seqs.remove(seqs.iter().position(|&s| s == 10).expect("10 present"));
        seqs.insert(30, late);
        let (session, _) = receive(&seqs);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (50, 50, 0)
        );

        let (mut session, now) = receive(&[65_533, 65_535, 65_534, 1, 0, 2, 3]);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (7, 7, 0)
        );
        assert_eq!(
            wire_block(&mut session, now).extended_highest_seq,
            65_536 + 3
        );

        // The very first packets reordered, across the wrap: 65534 and 65535 precede the base.
        let (mut session, now) = receive(&[0, 65_535, 1, 65_534, 2, 4]);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (6, 7, 1)
        );
        assert_eq!(wire_block(&mut session, now).extended_highest_seq, 4);
    }

    #[test]
    fn duplicates_make_cumulative_loss_negative_as_in_a1() {
        let (mut session, now) = receive(&[0, 1, 2, 2, 3]);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (5, 4, -1)
        );
        let block = wire_block(&mut session, now);
        assert_eq!((block.cumulative_lost, block.fraction_lost), (-1, 0));
    }

    #[test]
    fn stray_jump_is_ignored_and_sequence_restart_resyncs() {
        let mut seqs: Vec<u16> = (0..=10).collect();
        seqs.push(20_000); // one stray packet far ahead
        seqs.extend(11..=20);
        let (session, _) = receive(&seqs);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (21, 21, 0)
        );

        // A sender restart: two sequential packets at the new position resynchronize (A.1).
        let mut seqs: Vec<u16> = (0..=10).collect();
        seqs.extend(5000..=5010);
        let (session, _) = receive(&seqs);
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (10, 10, 0)
        );
    }

    #[test]
    fn new_ssrc_replaces_source_only_after_two_sequential_packets() {
        let t0 = Instant::now();
        let mut session = RtcpSession::new(config(ALICE, "a", 3), t0);
        for seq in 0..10u16 {
            session.on_rtp_received(t0 + ms(20 * u64::from(seq)), BOB, seq, 0);
        }
        session.on_rtp_received(t0 + ms(300), 0x0BAD, 777, 0);
        session.on_rtp_received(t0 + ms(301), ALICE, 5, 0); // our own stream looped back
        assert_eq!(session.remote_ssrc(), Some(BOB));
        assert_eq!(session.stats().expected, 10);

        session.on_rtp_received(t0 + ms(320), 0x0E00, 900, 0);
        session.on_rtp_received(t0 + ms(340), 0x0E00, 901, 160);
        assert_eq!(session.remote_ssrc(), Some(0x0E00));
        let stats = session.stats();
        assert_eq!(
            (
                stats.packets_received,
                stats.expected,
                stats.cumulative_lost
            ),
            (2, 2, 0)
        );
    }

    #[test]
    fn sr_after_sending_rr_otherwise_with_cname_and_block_when_receiving() {
        let t0 = Instant::now();
        let mut alice = RtcpSession::new(config(ALICE, "alice@example.com", 11), t0);
        let mut bob = RtcpSession::new(config(BOB, "bob", 12), t0);
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        for i in 0..50u32 {
            alice.on_rtp_sent(t0 + ms(20 * u64::from(i)), 1000 + 160 * i, 160);
        }
        let due = alice.poll_timeout();
        assert_eq!(
            alice.poll_transmit(due - ms(1), &mut buf),
            None,
            "not due yet"
        );
        let n = alice.poll_transmit(due, &mut buf).expect("report due");

        assert_eq!(&buf[..4], &[0x80, 200, 0x00, 0x06], "SR without blocks");
        assert_eq!(&buf[4..8], &ALICE.to_be_bytes());
        let elapsed = due - t0;
        assert_eq!(
            u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes")),
            NTP_START + duration_to_ntp(elapsed)
        );
        let since_last = due - (t0 + ms(20 * 49));
        let rtp = 1000 + 160 * 49 + duration_to_ticks(since_last, 8000);
        assert_eq!(
            u32::from_be_bytes(buf[16..20].try_into().expect("4 bytes")),
            rtp
        );
        assert_eq!(
            &buf[20..28],
            &[0, 0, 0, 50, 0, 0, 0x1F, 0x40],
            "50 packets, 8000 octets"
        );
        // SDES CNAME: 17 bytes of text, END, pad to 28 bytes.
        assert_eq!(&buf[28..32], &[0x81, 202, 0x00, 0x06]);
        assert_eq!(&buf[32..36], &ALICE.to_be_bytes());
        assert_eq!(&buf[36..38], &[1, 17]);
        assert_eq!(&buf[38..55], b"alice@example.com");
        assert_eq!(&buf[55..56], &[0]);
        assert_eq!(n, 56);

        let info = bob.on_rtcp(due, &buf[..n]).expect("valid");
        assert_eq!(info.cname, Some("alice@example.com"));
        assert_eq!(
            info.sr
                .map(|sr| (sr.packet_count, sr.octet_count, sr.rtp_timestamp)),
            Some((50, 8000, rtp))
        );
        assert_eq!(info.report_about_us, None);

        // Nothing sent since: RR. Then packets from BOB add a report block.
        let due = alice.poll_timeout();
        let n = alice.poll_transmit(due, &mut buf).expect("report due");
        assert_eq!(&buf[..8], &[0x80, 201, 0x00, 0x01, 0xCA, 0xFE, 0xBA, 0xBE]);
        assert_eq!(n, 8 + 28);
        alice.on_rtp_received(due + ms(1), BOB, 7, 0);
        let due = alice.poll_timeout();
        let n = alice.poll_transmit(due, &mut buf).expect("report due");
        assert_eq!(&buf[..4], &[0x81, 201, 0x00, 0x07], "RR with one block");
        assert_eq!(&buf[8..12], &BOB.to_be_bytes());
        assert_eq!(n, 32 + 28);
        let stats = alice.stats();
        assert_eq!((stats.sr_sent, stats.rr_sent), (1, 2));
    }

    #[test]
    fn bye_is_written_once_parsed_and_stops_reporting() {
        let t0 = Instant::now();
        let mut alice = RtcpSession::new(config(ALICE, "alice", 21), t0);
        let mut bob = RtcpSession::new(config(BOB, "bob", 22), t0);
        alice.on_rtp_sent(t0, 0, 160);
        bob.on_rtp_received(t0 + ms(30), ALICE, 1, 0);

        let mut small = [0u8; 40];
        assert_eq!(
            alice.write_bye(t0 + ms(100), &mut small),
            None,
            "buffer too small"
        );
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        let n = alice.write_bye(t0 + ms(100), &mut buf).expect("BYE fits");
        assert_eq!(n, 28 + 16 + 8);
        assert_eq!(
            &buf[44..52],
            &[0x81, 203, 0x00, 0x01, 0xCA, 0xFE, 0xBA, 0xBE]
        );
        assert_eq!(
            alice.write_bye(t0 + ms(200), &mut buf),
            None,
            "BYE only once"
        );
        assert_eq!(
            alice.poll_transmit(t0 + Duration::from_secs(3600), &mut buf),
            None
        );
        assert!(alice.poll_timeout() > t0 + Duration::from_secs(3600));
        assert_eq!(alice.stats().sr_sent, 1);

        let n = {
            let mut bye = [0u8; MAX_COMPOUND_LEN];
            let n = {
                let mut a2 = RtcpSession::new(config(ALICE, "alice", 21), t0);
                a2.write_bye(t0, &mut bye).expect("fits")
            };
            let info = bob.on_rtcp(t0 + ms(130), &bye[..n]).expect("valid");
            assert!(info.bye);
            assert_eq!(info.bye_reason, None);
            assert_eq!(info.cname, Some("alice"));
            n
        };
        assert_eq!(n, 8 + 16 + 8, "RR + SDES + BYE");
        assert!(bob.stats().bye_received);
        // Alice left: Bob's next report has no block about her.
        let due = bob.poll_timeout();
        bob.poll_transmit(due, &mut buf).expect("due");
        assert_eq!(&buf[..2], &[0x80, 201]);
    }

    #[test]
    fn parses_byte_exact_sr_with_sdes() {
        let t0 = Instant::now();
        let mut alice = RtcpSession::new(config(ALICE, "alice", 1), t0);
        let packet = bob_sr_sdes();
        assert_eq!(packet.len(), 76);
        let info = alice
            .on_rtcp(t0 + Duration::from_secs(1), &packet)
            .expect("valid SR+SDES");
        assert_eq!(info.sender_ssrc, Some(BOB));
        assert_eq!(
            info.sr,
            Some(SenderInfo {
                ssrc: BOB,
                ntp_timestamp: 0xE94B_2A10_8000_0000,
                rtp_timestamp: 123_456,
                packet_count: 100,
                octet_count: 16_000,
            })
        );
        let block = info.report_about_us.expect("block about ALICE");
        assert_eq!(
            block,
            ReportBlock {
                ssrc: ALICE,
                fraction_lost: 12,
                cumulative_lost: 5,
                extended_highest_seq: 65_536 + 99,
                jitter: 80,
                last_sr: 0x2A00_0000,
                delay_since_last_sr: 0x8000,
            }
        );
        // Our SR left at NTP_START, the reply came 1 s later after 0.5 s at BOB.
        assert_eq!(info.rtt, Some(ms(500)));
        assert_eq!(info.cname, Some("bob@192.0.2.7"));
        assert!(!info.bye);
        let stats = alice.stats();
        assert_eq!(stats.rtt, Some(ms(500)));
        assert_eq!(stats.remote_fraction_lost, Some(12));
        assert_eq!(stats.remote_cumulative_lost, Some(5));
        assert_eq!(stats.remote_jitter, Some(80));
        assert_eq!(stats.remote_jitter_ms, Some(10.0));
        assert_eq!(alice.remote_cname(), Some("bob@192.0.2.7"));

        // Alice now echoes Bob's SR: LSR = middle 32 bits, DLSR = 250 ms in 1/65536 s.
        alice.on_rtp_received(t0 + Duration::from_secs(1), BOB, 1, 0);
        let now = alice.poll_timeout().max(t0 + ms(1250));
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        let n = alice.poll_transmit(now, &mut buf).expect("due");
        let echoed = parse_compound(&buf[..n], BOB)
            .expect("valid")
            .report_about_us
            .expect("block");
        assert_eq!(echoed.last_sr, 0x2A10_8000);
        assert_eq!(
            echoed.delay_since_last_sr,
            duration_to_ntp_short(now - (t0 + Duration::from_secs(1)))
        );
    }

    #[test]
    fn parses_byte_exact_rr_sdes_bye_with_reason() {
        let t0 = Instant::now();
        let mut alice = RtcpSession::new(config(ALICE, "alice", 1), t0);
        let packet = bob_rr_sdes_bye();
        assert_eq!(packet.len(), 64);
        let info = alice.on_rtcp(t0, &packet).expect("valid RR+SDES+BYE");
        assert_eq!(info.sender_ssrc, Some(BOB));
        assert_eq!(info.sr, None);
        let block = info.report_about_us.expect("block about ALICE");
        assert_eq!(
            (
                block.cumulative_lost,
                block.extended_highest_seq,
                block.jitter
            ),
            (-1, 0x1234, 16)
        );
        assert_eq!(info.rtt, None, "LSR 0: no RTT");
        assert_eq!(info.cname, Some("bob"));
        assert!(info.bye);
        assert_eq!(info.bye_reason, Some("hangup"));
        let stats = alice.stats();
        assert!(stats.bye_received);
        assert_eq!(stats.remote_cumulative_lost, Some(-1));
        assert_eq!(stats.rtt, None);
    }

    #[test]
    fn parses_mixed_compound_with_items_app_xr_and_padding() {
        let packet = bob_mixed_padded();
        let info = parse_compound(&packet, ALICE).expect("valid");
        assert_eq!(info.sender_ssrc, Some(BOB));
        assert_eq!(
            info.cname,
            Some("b@h"),
            "first foreign CNAME, other items skipped"
        );
        assert!(info.bye);
        assert_eq!(info.bye_reason, None);
        assert_eq!(info.report_about_us, None);
    }

    #[test]
    fn rejects_malformed_packets_with_specific_errors() {
        let valid = bob_sr_sdes();
        assert_eq!(parse_compound(&[], ALICE), Err(RtcpError::Empty));
        assert_eq!(
            parse_compound(&valid[..3], ALICE),
            Err(RtcpError::TruncatedHeader { offset: 0 })
        );
        assert_eq!(
            parse_compound(&valid[..60], ALICE),
            Err(RtcpError::LengthExceedsPacket {
                offset: 52,
                declared: 24,
                available: 8
            })
        );
        assert_eq!(
            parse_compound(&valid[..54], ALICE),
            Err(RtcpError::TruncatedHeader { offset: 52 }),
            "2 stray bytes after a packet"
        );

        let mut bad_version = valid.clone();
        bad_version[52] = 0x41;
        assert_eq!(
            parse_compound(&bad_version, ALICE),
            Err(RtcpError::BadVersion {
                offset: 52,
                version: 1
            })
        );

        let mut padded_first = valid.clone();
        padded_first[0] |= 0x20;
        assert_eq!(
            parse_compound(&padded_first, ALICE),
            Err(RtcpError::PaddingNotLast { offset: 0 })
        );

        let mut zero_padding = bob_mixed_padded();
        let last = zero_padding.len() - 1;
        zero_padding[last] = 0;
        assert_eq!(
            parse_compound(&zero_padding, ALICE),
            Err(RtcpError::BadPadding {
                offset: 64,
                padding: 0
            })
        );
        zero_padding[last] = 13;
        assert_eq!(
            parse_compound(&zero_padding, ALICE),
            Err(RtcpError::BadPadding {
                offset: 64,
                padding: 13
            })
        );

        let rtp = [0x80, 0x00, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            parse_compound(&rtp, ALICE),
            Err(RtcpError::NotRtcp {
                offset: 0,
                packet_type: 0
            })
        );

        let mut short_sr = valid.clone();
        short_sr[3] = 0x06; // 7 words: room for sender info but not the announced block
        short_sr.truncate(28);
        assert_eq!(
            parse_compound(&short_sr, ALICE),
            Err(RtcpError::ReportTruncated {
                offset: 0,
                packet_type: PT_SR,
                report_count: 1
            })
        );

        let mut long_item = valid.clone();
        long_item[61] = 200; // CNAME length past the packet
        assert_eq!(
            parse_compound(&long_item, ALICE),
            Err(RtcpError::SdesTruncated { offset: 52 })
        );

        let mut no_end = valid.clone();
        no_end[61] = 14; // CNAME swallows the END item
        assert_eq!(
            parse_compound(&no_end, ALICE),
            Err(RtcpError::SdesTruncated { offset: 52 })
        );

        let mut long_reason = bob_rr_sdes_bye();
        long_reason[56] = 12;
        assert_eq!(
            parse_compound(&long_reason, ALICE),
            Err(RtcpError::ByeTruncated { offset: 48 })
        );

        let mut bye_count = bob_rr_sdes_bye();
        bye_count[48] = 0x84; // 4 sources announced, room for 3
        assert_eq!(
            parse_compound(&bye_count, ALICE),
            Err(RtcpError::ByeTruncated { offset: 48 })
        );

        let app = [0x80, 0xCC, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78];
        assert_eq!(
            parse_compound(&app, ALICE),
            Err(RtcpError::AppTruncated { offset: 0 })
        );

        assert_eq!(
            RtcpError::BadVersion {
                offset: 52,
                version: 1
            }
            .to_string(),
            "RTCP packet at byte 52 has version 1, expected 2"
        );
    }

    #[test]
    fn rejected_packets_leave_state_untouched() {
        let t0 = Instant::now();
        let mut alice = RtcpSession::new(config(ALICE, "alice", 1), t0);
        let mut packet = bob_sr_sdes();
        packet[52] = 0x41; // valid SR, broken SDES
        assert!(matches!(
            alice.on_rtcp(t0, &packet),
            Err(RtcpError::BadVersion { .. })
        ));
        let stats = alice.stats();
        assert_eq!(
            (stats.rtcp_received, stats.rtt, stats.remote_cumulative_lost),
            (0, None, None)
        );
        assert_eq!(alice.remote_cname(), None);
    }

    #[test]
    fn only_whole_packet_prefixes_parse() {
        for (packet, boundaries) in [
            (bob_sr_sdes(), vec![52, 76]),
            (bob_rr_sdes_bye(), vec![32, 48, 64]),
            (bob_mixed_padded(), vec![8, 40, 56, 64, 76]),
        ] {
            let ok: Vec<usize> = (0..=packet.len())
                .filter(|&n| parse_compound(&packet[..n], ALICE).is_ok())
                .collect();
            assert_eq!(ok, boundaries);
        }
    }

    #[test]
    fn mutated_and_random_inputs_never_panic() {
        let t0 = Instant::now();
        let mut session = RtcpSession::new(config(ALICE, "alice", 1), t0);
        let mut own = [0u8; MAX_COMPOUND_LEN];
        let own_len = {
            let mut writer = RtcpSession::new(config(BOB, "bob", 2), t0);
            writer.on_rtp_sent(t0, 0, 160);
            writer.on_rtp_received(t0, ALICE, 1, 0);
            writer.write_bye(t0, &mut own).expect("fits")
        };
        let corpus = [
            bob_sr_sdes(),
            bob_rr_sdes_bye(),
            bob_mixed_padded(),
            own[..own_len].to_vec(),
        ];
        let mut rng = SplitMix64(0xDEAD_BEEF);
        let (mut accepted, mut rejected) = (0u64, 0u64);
        for round in 0..30_000u32 {
            let mut input = if round % 10 == 9 {
                let len = (rng.next_u64() % 96) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                corpus[round as usize % corpus.len()].clone()
            };
            for _ in 0..=(rng.next_u64() % 4) {
                if input.is_empty() {
                    break;
                }
                let pos = (rng.next_u64() as usize) % input.len();
                match rng.next_u64() % 5 {
                    0 => input[pos] ^= 1 << (rng.next_u64() % 8),
                    1 => input[pos] = rng.next_u64() as u8,
                    2 => input.truncate(pos),
                    3 => input.extend((0..rng.next_u64() % 9).map(|_| rng.next_u64() as u8)),
                    // Keep the header plausible so deeper parsing runs.
                    _ => {
                        input[pos] = if pos % 4 == 0 {
                            0x80 | (rng.next_u64() as u8 & 0x3F)
                        } else {
                            0xC8
                        }
                    }
                }
            }
            match session.on_rtcp(t0 + ms(u64::from(round)), &input) {
                Ok(_) => accepted += 1,
                Err(_) => rejected += 1,
            }
            let _ = session.poll_transmit(t0 + ms(u64::from(round)), &mut own);
        }
        assert_eq!(session.stats().rtcp_received, accepted);
        assert!(
            accepted > 1000 && rejected > 1000,
            "accepted {accepted}, rejected {rejected}"
        );
    }

    #[test]
    fn reports_follow_randomized_interval_with_first_at_half() {
        let schedule = |seed: u64| -> Vec<Duration> {
            let t0 = Instant::now();
            let mut session = RtcpSession::new(config(ALICE, "a", seed), t0);
            let mut buf = [0u8; MAX_COMPOUND_LEN];
            let mut sent = Vec::new();
            let mut now = t0;
            while sent.len() < 400 {
                now += ms(1);
                if session.poll_transmit(now, &mut buf).is_some() {
                    sent.push(now - t0);
                    assert!(session.poll_timeout() > now);
                }
            }
            sent
        };
        let sent = schedule(42);
        let min = Duration::from_secs(5);
        assert!(
            sent[0] >= min / 4 && sent[0] <= min * 3 / 4 + ms(1),
            "first report at {:?}",
            sent[0]
        );
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        for gap in &gaps {
            assert!(
                *gap >= min / 2 && *gap <= min * 3 / 2 + ms(1),
                "gap {gap:?}"
            );
        }
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!(mean.abs_diff(min) < ms(250), "mean interval {mean:?}");
        assert!(
            gaps.iter().min().expect("gaps") < &ms(3000)
                && gaps.iter().max().expect("gaps") > &ms(7000)
        );
        assert_eq!(schedule(42), sent, "same seed, same schedule");
        assert_ne!(schedule(43), sent);
    }

    #[test]
    fn cname_is_truncated_and_largest_packet_fits_max_len() {
        let t0 = Instant::now();
        let mut session = RtcpSession::new(config(ALICE, &"x".repeat(300), 1), t0);
        session.on_rtp_sent(t0, 0, 160);
        session.on_rtp_received(t0, BOB, 1, 0);
        let mut buf = [0u8; MAX_COMPOUND_LEN];
        assert_eq!(session.write_bye(t0, &mut buf), Some(MAX_COMPOUND_LEN));
        assert_eq!(MAX_COMPOUND_LEN, 328);
        let info = parse_compound(&buf, BOB).expect("valid");
        assert_eq!(info.cname.map(str::len), Some(255));

        let multibyte = RtcpSession::new(config(ALICE, &"é".repeat(200), 1), t0);
        assert_eq!(multibyte.cname.len(), 254, "cut at a char boundary");
    }

    #[test]
    fn cumulative_loss_is_24_bit_signed_on_the_wire() {
        assert_eq!(clamp_lost(10_000_000), 0x7F_FFFF);
        assert_eq!(clamp_lost(-10_000_000), -0x80_0000);
        let block = ReportBlock {
            ssrc: BOB,
            fraction_lost: 255,
            cumulative_lost: -0x80_0000,
            extended_highest_seq: 1,
            jitter: 2,
            last_sr: 3,
            delay_since_last_sr: 4,
        };
        let mut buf = [0u8; 128];
        let n = encode_compound(&mut buf, ALICE, None, Some(&block), "a", false).expect("fits");
        assert_eq!(&buf[12..16], &[0xFF, 0x80, 0x00, 0x00]);
        assert_eq!(
            parse_compound(&buf[..n], BOB)
                .expect("valid")
                .report_about_us,
            Some(block)
        );
    }

    #[test]
    fn ntp_conversions() {
        assert_eq!(
            ntp_timestamp_from_unix(Duration::ZERO),
            2_208_988_800u64 << 32
        );
        assert_eq!(
            ntp_timestamp_from_unix(ms(500)),
            (2_208_988_800u64 << 32) | 0x8000_0000
        );
        assert_eq!(duration_to_ntp_short(ms(250)), 0x4000);
        assert_eq!(ntp_short_to_duration(0x0001_8000), ms(1500));
        assert_eq!(ntp_middle(0x1122_3344_5566_7788), 0x3344_5566);
    }
}
