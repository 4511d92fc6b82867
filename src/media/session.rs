//! One connection's media session: what arrives on its RTP/RTCP sockets, what it plays out
//! every ptime, and what it sends — sans-IO.
//!
//! Owns, per connection: RTP source security (negotiated address, or a one-time NAT latch, never
//! re-latched), SRTP unprotect/protect, sequence tracking, the adaptive jitter buffer, decoding
//! with loss concealment, RFC 4733 digits (received, and sent in place of the audio of their
//! ptimes), RTCP statistics and reports, RTP inactivity, and the session's mode (`Idle`: receive
//! and count; `Echo`: play the caller's audio back to it through the full decode/encode path).
//! Must not: touch sockets, read the clock or allocate after [`MediaSession::new`]. The worker
//! feeds datagrams and time, and drains [`MediaSession::poll_transmit`] and
//! [`MediaSession::poll_event`].

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::codec::{pcm_rate, AudioDecoder, AudioEncoder, CodecError, MAX_FRAME_SAMPLES};
use super::dtmf::{DigitEvent, DtmfError, DtmfReceiver, DtmfSender};
use super::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use super::player::{PlaySource, Player};
use super::resample::Resampler;
use super::rtcp::{RtcpConfig, RtcpSession, RtcpStats};
use super::rtp::{self, RtpHeader};
use super::srtp::{SrtpContext, SrtpProfile};
use super::tone::DtmfDetector;
use crate::sdp::Codec;

/// Largest datagram we build (an MTU's worth): payload + RTP header + SRTP tag.
pub const MAX_PACKET: usize = 1500;

/// Outgoing packets a session can hold between two drains (one audio frame + RTCP + margin).
const TRANSMIT_SLOTS: usize = 4;

/// Events a session queues between two drains before it drops the oldest.
const EVENT_SLOTS: usize = 16;

/// How a session treats the audio it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// Receive, account and report; send no audio.
    Idle,
    /// Play the received audio back to its sender, through jitter buffer, decoder and encoder.
    Echo,
}

/// The negotiated format of the audio stream: what we receive, and what we send when it
/// differs (transcoding through linear PCM, resampled when the rates differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    pub codec: Codec,
    pub payload_type: u8,
    pub ptime_ms: u32,
    pub telephone_event_pt: Option<u8>,
    /// The codec and payload type we send; None = the same as received.
    pub send: Option<(Codec, u8)>,
}

impl StreamFormat {
    /// The codec and payload type of what we send.
    pub fn sending(&self) -> (Codec, u8) {
        self.send.unwrap_or((self.codec, self.payload_type))
    }
}

/// SRTP master keys for both directions (SDES: theirs decrypts, ours encrypts).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub profile: SrtpProfile,
    pub inbound_key: Vec<u8>,
    pub inbound_salt: Vec<u8>,
    pub outbound_key: Vec<u8>,
    pub outbound_salt: Vec<u8>,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Everything a session is created with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub local_ssrc: u32,
    /// RTCP CNAME.
    pub cname: String,
    /// NTP time (RFC 3550 64-bit) at the `now` given to [`MediaSession::new`].
    pub ntp_at_start: u64,
    /// None until media is negotiated: packets are counted but not decoded.
    pub format: Option<StreamFormat>,
    pub mode: SessionMode,
    /// Where the peer said it receives RTP (SDP / MediaTxIP).
    pub remote_rtp: Option<SocketAddr>,
    /// Where the peer receives RTCP (a=rtcp, else RTP port + 1; the RTP address with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// Latch once to the first source sending the negotiated payload types (peers behind NAT).
    pub latching: bool,
    pub srtp: Option<SrtpKeys>,
    /// No RTP for this long → [`SessionEvent::RtpTimeout`]; None disables.
    pub rtp_timeout: Option<Duration>,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
    pub rtcp_interval: Duration,
    /// Seed for RTCP interval randomization (deterministic in tests).
    pub seed: u64,
    /// Also detect DTMF tones in the decoded audio (callers that send tones, not RFC 4733);
    /// G.711 and G.722 streams (8/16 kHz).
    pub inband_dtmf: bool,
    /// Playout ticks fall on `tick_epoch + k * ptime`: every session of a worker ticks at the
    /// same instants, so one wake-up serves them all (instead of one per session).
    pub tick_epoch: Instant,
}

/// Which socket a packet leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Rtp,
    Rtcp,
}

/// A packet to send: `out[..len]` of the buffer given to `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub channel: Channel,
    pub destination: SocketAddr,
    pub len: usize,
}

/// Something the control plane should hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The first accepted RTP packet, from this source.
    FirstPacket { source: SocketAddr },
    /// NAT latching chose this source for the rest of the session.
    Latched { source: SocketAddr },
    /// A complete RFC 4733 digit.
    Digit(DigitEvent),
    /// No RTP for the configured time.
    RtpTimeout { silent_for: Duration },
    /// The playout started with [`MediaSession::start_playout`] played to its end.
    PlayoutDone { operation: u64 },
}

/// Counters since the session started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionStats {
    pub rtp_packets_received: u64,
    pub rtp_bytes_received: u64,
    pub rtp_packets_sent: u64,
    pub rtp_bytes_sent: u64,
    pub rtcp_packets_received: u64,
    pub rtcp_packets_sent: u64,
    /// Not RTP/RTCP, or a payload type that was not negotiated.
    pub malformed_packets: u64,
    /// From a source other than the negotiated/latched one ("RTP bleed" attempts included).
    pub foreign_source_dropped: u64,
    /// SRTP authentication or replay failures.
    pub srtp_rejected: u64,
    pub decode_errors: u64,
    /// Lost Opus frames decoded with the following packet at hand (from its in-band FEC when
    /// the sender put one there, else libopus's PLC).
    pub fec_recovered: u64,
    pub digits_received: u64,
    /// RFC 4733 digits sent (telephone-events started; each is one key press).
    pub digits_sent: u64,
    pub jitter: JitterStats,
    pub rtcp: RtcpSummary,
}

/// The RTCP view of the stream (what RFC 3550 reports say).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpSummary {
    pub cumulative_lost: i32,
    pub fraction_lost_percent: f32,
    pub jitter_ms: f32,
    pub rtt_ms: Option<f32>,
    pub remote_fraction_lost_percent: Option<f32>,
    pub remote_jitter_ms: Option<f32>,
}

/// Why a session could not be created, or refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    Codec(CodecError),
    Srtp(String),
    /// ptime outside 10..=60 ms or a codec whose frames we cannot hold.
    Format(String),
    /// Digits to send, but no RFC 4733 telephone-event payload type was negotiated with the
    /// peer (or no format at all): they cannot go out of band.
    NoTelephoneEvent,
    /// Digits the telephone-event sender refused (an invalid character, or more than its queue
    /// holds); nothing was queued.
    Digits(DtmfError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Codec(e) => write!(f, "{e}"),
            SessionError::Srtp(e) => write!(f, "SRTP: {e}"),
            SessionError::Format(e) => write!(f, "media format: {e}"),
            SessionError::NoTelephoneEvent => {
                write!(f, "the peer did not negotiate RFC 4733 telephone-event")
            }
            SessionError::Digits(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// One connection's media.
pub struct MediaSession {
    config: SessionConfig,
    /// Decoding/encoding state; present once a format is negotiated.
    audio: Option<AudioPath>,
    /// The source RTP is accepted from, once decided.
    accepted_source: Option<SocketAddr>,
    srtp_in: Option<SrtpContext>,
    srtp_out: Option<SrtpContext>,
    rtcp: RtcpSession,
    dtmf: DtmfReceiver,
    /// Next playout/send tick (Echo mode with a format).
    next_tick: Option<Instant>,
    last_rtp_at: Instant,
    timeout_reported: bool,
    first_packet_seen: bool,
    transmits: VecDeque<(Channel, SocketAddr, usize, Box<[u8; MAX_PACKET]>)>,
    /// Empty packet buffers, reused (preallocated at construction). Boxed so that moving a
    /// buffer between this list and `transmits` moves a pointer, not 1500 bytes.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<[u8; MAX_PACKET]>>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
    /// The conference this session is in; it then plays out only when the conference ticks.
    room: Option<RoomMembership>,
    /// A prompt or tone played instead of the session's usual audio (operation id, player).
    player: Option<(u64, Player)>,
    /// The caller's decoded audio, kept for the worker while something listens (recording,
    /// silence detection).
    heard: Option<Heard>,
}

/// The caller's decoded audio since the worker last took it, at the received codec's PCM rate.
struct Heard {
    samples: Box<[i16]>,
    len: usize,
    /// Samples dropped because the worker did not take them in time.
    dropped: u64,
}

/// Which of the audio path's buffers holds a frame to send, and its length.
#[derive(Debug, Clone, Copy)]
enum Outgoing {
    /// `pcm`: the decoded frame, already at the sent codec's rate.
    Decoded(usize),
    /// `resampled`: converted to the sent codec's rate.
    Resampled(usize),
}

/// A conference tick: every conference mixes 20 ms frames.
pub const ROOM_TICK: Duration = Duration::from_millis(20);

/// Conference membership of a session.
struct RoomMembership {
    room_rate: u32,
    /// The conversions to and from the room; None until a format is negotiated.
    port: Option<RoomPort>,
}

/// Converts between the session's stream (its codec rates and ptime) and the room's 20 ms
/// frames at the room rate, with two small FIFOs so any ptime of 10–60 ms fits 20 ms ticks.
/// Sized at construction; nothing allocates per tick.
struct RoomPort {
    /// Received codec's PCM rate → room rate.
    to_room: Resampler,
    /// Room rate → sent codec's PCM rate.
    from_room: Resampler,
    /// Room samples per ptime of the session (one packet's worth).
    ptime_room: usize,
    /// Room-rate audio decoded but not yet contributed.
    inbox: Box<[i16]>,
    inbox_len: usize,
    /// Room-rate mix not yet sent (less than one packet's worth between ticks).
    outbox: Box<[i16]>,
    outbox_len: usize,
    /// One room tick of a playout, played instead of the mix.
    playout: Box<[i16]>,
}

impl RoomPort {
    fn new(room_rate: u32, format: &StreamFormat) -> Result<RoomPort, SessionError> {
        let convert =
            |from, to| Resampler::new(from, to).map_err(|e| SessionError::Format(e.to_string()));
        let to_room = convert(pcm_rate(format.codec), room_rate)?;
        let from_room = convert(room_rate, pcm_rate(format.sending().0))?;
        let ptime_room = (room_rate * format.ptime_ms / 1000) as usize;
        // One tick plus the longest packet, with margin: 100 ms at the room rate.
        let capacity = (room_rate / 10) as usize;
        Ok(RoomPort {
            to_room,
            from_room,
            ptime_room,
            inbox: vec![0; capacity].into_boxed_slice(),
            inbox_len: 0,
            outbox: vec![0; capacity].into_boxed_slice(),
            outbox_len: 0,
            playout: vec![0; (room_rate / 50) as usize].into_boxed_slice(),
        })
    }

    /// Appends one decoded frame (at the received codec's rate), converted to the room rate.
    fn push_in(&mut self, pcm: &[i16]) {
        let n = self.to_room.process(pcm, &mut self.inbox[self.inbox_len..]);
        self.inbox_len += n;
    }

    /// Appends one ptime of silence (nothing to play this ptime).
    fn push_in_silence(&mut self) {
        let end = (self.inbox_len + self.ptime_room).min(self.inbox.len());
        self.inbox[self.inbox_len..end].fill(0);
        self.inbox_len = end;
    }

    /// Moves the oldest `out.len()` samples out (silence-padded if fewer are held).
    fn take_in(&mut self, out: &mut [i16]) {
        let n = out.len().min(self.inbox_len);
        out[..n].copy_from_slice(&self.inbox[..n]);
        out[n..].fill(0);
        self.inbox.copy_within(n..self.inbox_len, 0);
        self.inbox_len -= n;
    }

    /// Appends one tick of the mix; what does not fit (a stalled sender) is dropped.
    fn push_out(&mut self, pcm: &[i16]) {
        let n = pcm.len().min(self.outbox.len() - self.outbox_len);
        self.outbox[self.outbox_len..self.outbox_len + n].copy_from_slice(&pcm[..n]);
        self.outbox_len += n;
    }

    /// One packet's worth of the mix, converted to the sent codec's rate into `out`; None
    /// until a whole ptime is held.
    fn take_out(&mut self, out: &mut [i16]) -> Option<usize> {
        if self.outbox_len < self.ptime_room {
            return None;
        }
        let n = self.from_room.process(&self.outbox[..self.ptime_room], out);
        self.outbox.copy_within(self.ptime_room..self.outbox_len, 0);
        self.outbox_len -= self.ptime_room;
        Some(n)
    }
}

/// The audio path of a negotiated stream.
struct AudioPath {
    format: StreamFormat,
    jitter: JitterBuffer,
    decoder: AudioDecoder,
    encoder: AudioEncoder,
    /// Samples per frame at the received codec's PCM rate.
    frame_samples: usize,
    /// RTP timestamp units per frame at the sent codec's RTP clock.
    frame_ticks: u32,
    /// From the received codec's PCM rate to the sent codec's, when they differ.
    resampler: Option<Resampler>,
    /// The frame at the sent codec's rate (when resampling).
    resampled: Box<[i16; MAX_FRAME_SAMPLES]>,
    pcm: Box<[i16; MAX_FRAME_SAMPLES]>,
    payload: Box<[u8; MAX_PACKET]>,
    /// The packet after a lost one, peeked for its in-band FEC.
    fec_payload: Box<[u8; MAX_PACKET]>,
    tx_sequence: u16,
    tx_timestamp: u32,
    /// The next packet we send starts a talkspurt (marker bit).
    tx_talkspurt: bool,
    /// In-band DTMF detector on the decoded audio, when enabled and the rate allows.
    inband: Option<DtmfDetector>,
    /// Digits to send as RFC 4733 telephone-events on our stream; present when the peer
    /// negotiated telephone-event (`format.telephone_event_pt`).
    dtmf_out: Option<DtmfSender>,
}

impl MediaSession {
    pub fn new(config: SessionConfig, now: Instant) -> Result<MediaSession, SessionError> {
        let audio = match config.format {
            Some(format) => Some(AudioPath::new(format, &config, config.local_ssrc)?),
            None => None,
        };
        let (srtp_in, srtp_out) = match &config.srtp {
            Some(keys) => {
                let make = |key: &[u8], salt: &[u8]| {
                    SrtpContext::new(keys.profile, key, salt)
                        .map_err(|e| SessionError::Srtp(e.to_string()))
                };
                (
                    Some(make(&keys.inbound_key, &keys.inbound_salt)?),
                    Some(make(&keys.outbound_key, &keys.outbound_salt)?),
                )
            }
            None => (None, None),
        };
        let clock_rate = config.format.map(|f| f.codec.clock_rate()).unwrap_or(8000);
        let rtcp = RtcpSession::new(
            RtcpConfig {
                local_ssrc: config.local_ssrc,
                cname: config.cname.clone(),
                clock_rate,
                min_interval: config.rtcp_interval,
                seed: config.seed,
                ntp_at_start: config.ntp_at_start,
            },
            now,
        );
        let next_tick = match (&audio, config.mode) {
            (Some(a), SessionMode::Echo) => Some(aligned_tick(config.tick_epoch, now, a.ptime())),
            _ => None,
        };
        let spare = (0..TRANSMIT_SLOTS)
            .map(|_| Box::new([0u8; MAX_PACKET]))
            .collect();
        Ok(MediaSession {
            accepted_source: None,
            srtp_in,
            srtp_out,
            rtcp,
            dtmf: DtmfReceiver::new(clock_rate),
            next_tick,
            last_rtp_at: now,
            timeout_reported: false,
            first_packet_seen: false,
            transmits: VecDeque::with_capacity(TRANSMIT_SLOTS),
            spare,
            events: VecDeque::with_capacity(EVENT_SLOTS),
            stats: SessionStats::default(),
            room: None,
            player: None,
            heard: None,
            audio,
            config,
        })
    }

    /// A datagram that arrived on the RTP socket (RTCP too, when multiplexed).
    pub fn handle_rtp(&mut self, now: Instant, source: SocketAddr, buf: &mut [u8], len: usize) {
        let len = len.min(buf.len());
        if rtp::is_rtcp(&buf[..len]) {
            self.handle_rtcp(now, source, buf, len);
            return;
        }
        let source = canonical(source);
        // Before SRTP authentication only the fixed header is trusted enough to read the
        // payload type; the packet is parsed once, after unprotect.
        if len < rtp::RTP_FIXED_HEADER_LEN || buf[0] >> 6 != rtp::RTP_VERSION {
            self.stats.malformed_packets += 1;
            return;
        }
        let payload_type = buf[1] & 0x7f;
        if !self.source_allowed(source, payload_type) {
            self.stats.foreign_source_dropped += 1;
            return;
        }
        let len = match self.srtp_in.as_mut() {
            Some(ctx) => match ctx.unprotect_rtp(buf, len) {
                Ok(n) => n,
                Err(_) => {
                    self.stats.srtp_rejected += 1;
                    return;
                }
            },
            None => len,
        };
        // Authenticated (or no SRTP): only now may the source be latched.
        self.accept_source(source);
        let Ok(packet) = rtp::parse(&buf[..len]) else {
            self.stats.malformed_packets += 1;
            return;
        };
        self.stats.rtp_packets_received += 1;
        self.stats.rtp_bytes_received += len as u64;
        self.last_rtp_at = now;
        self.timeout_reported = false;
        if !self.first_packet_seen {
            self.first_packet_seen = true;
            self.push_event(SessionEvent::FirstPacket { source });
        }
        self.rtcp
            .on_rtp_received(now, packet.ssrc(), packet.sequence(), packet.timestamp());
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        if Some(packet.payload_type()) == audio.format.telephone_event_pt {
            match self.dtmf.on_packet(
                now,
                packet.sequence(),
                packet.timestamp(),
                packet.marker(),
                packet.payload(),
            ) {
                Ok(Some(digit)) => self.on_digit(digit),
                Ok(None) => {}
                Err(_) => self.stats.malformed_packets += 1,
            }
            return;
        }
        if packet.payload_type() != audio.format.payload_type {
            self.stats.malformed_packets += 1;
            return;
        }
        if self.config.mode == SessionMode::Idle && self.room.is_none() && self.heard.is_none() {
            // Nobody plays or listens to this audio: counted above, not buffered.
            return;
        }
        audio.jitter.push(
            now,
            packet.sequence(),
            packet.timestamp(),
            packet.marker(),
            packet.payload(),
        );
    }

    /// A datagram that arrived on the RTCP socket.
    pub fn handle_rtcp(&mut self, now: Instant, source: SocketAddr, buf: &mut [u8], len: usize) {
        let source = canonical(source);
        let len = len.min(buf.len());
        if let Some(accepted) = self.accepted_source {
            // RTCP comes from the accepted peer's address (its port may differ by +1).
            if accepted.ip() != source.ip() {
                self.stats.foreign_source_dropped += 1;
                return;
            }
        }
        let len = match self.srtp_in.as_mut() {
            Some(ctx) => match ctx.unprotect_rtcp(buf, len) {
                Ok(n) => n,
                Err(_) => {
                    self.stats.srtp_rejected += 1;
                    return;
                }
            },
            None => len,
        };
        match self.rtcp.on_rtcp(now, &buf[..len]) {
            Ok(_) => self.stats.rtcp_packets_received += 1,
            Err(_) => self.stats.malformed_packets += 1,
        }
    }

    /// Runs what is due: playout ticks, RTCP reports, DTMF timeouts, the RTP timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(due) = self.next_tick {
            if due > now {
                break;
            }
            self.tick(now);
            if self.next_tick != Some(due) {
                // The tick stopped the session's own ticks (a playout or digits ended on an
                // idle session) or re-aligned them.
                continue;
            }
            let ptime = self
                .audio
                .as_ref()
                .map(AudioPath::ptime)
                .unwrap_or(Duration::from_millis(20));
            // Keep the cadence; after a long stall, skip ahead rather than burst.
            let next = due + ptime;
            self.next_tick = Some(if next + ptime * 5 < now {
                now + ptime
            } else {
                next
            });
        }
        if let Some(digit) = self.dtmf.poll(now) {
            self.on_digit(digit);
        }
        if self.sends_media() && self.rtcp.poll_timeout() <= now {
            self.send_rtcp(now);
        }
        if let Some(limit) = self.config.rtp_timeout {
            let silent_for = now.saturating_duration_since(self.last_rtp_at);
            if silent_for >= limit && !self.timeout_reported {
                self.timeout_reported = true;
                self.push_event(SessionEvent::RtpTimeout { silent_for });
            }
        }
    }

    /// When `handle_timeout` must next run.
    pub fn poll_timeout(&self) -> Instant {
        let mut at =
            self.last_rtp_at + self.config.rtp_timeout.unwrap_or(Duration::from_secs(3600));
        if self.timeout_reported {
            at = self.last_rtp_at + Duration::from_secs(3600);
        }
        if let Some(t) = self.next_tick {
            at = at.min(t);
        }
        if self.sends_media() {
            at = at.min(self.rtcp.poll_timeout());
        }
        if let Some(t) = self.dtmf.poll_timeout() {
            at = at.min(t);
        }
        at
    }

    /// The next packet to send, copied into `out`.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<Transmit> {
        let (channel, destination, len, buf) = self.transmits.pop_front()?;
        let len = len.min(out.len());
        out[..len].copy_from_slice(&buf[..len]);
        self.spare.push(buf);
        Some(Transmit {
            channel,
            destination,
            len,
        })
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// RTP packets and bytes received and sent: plain counters, cheap enough to read after every
    /// packet (unlike [`MediaSession::stats`], which also summarizes RTCP).
    pub fn traffic(&self) -> [u64; 4] {
        let s = &self.stats;
        [
            s.rtp_packets_received,
            s.rtp_bytes_received,
            s.rtp_packets_sent,
            s.rtp_bytes_sent,
        ]
    }

    pub fn stats(&self) -> SessionStats {
        let mut stats = self.stats;
        if let Some(audio) = &self.audio {
            stats.jitter = audio.jitter.stats();
        }
        stats.rtcp = summarize(&self.rtcp.stats());
        stats
    }

    /// New peer address (re-INVITE, ModifyConnection). A changed address is a new peer: the
    /// latch is cleared so the new address is accepted.
    pub fn set_remote(&mut self, remote_rtp: Option<SocketAddr>, remote_rtcp: Option<SocketAddr>) {
        let remote_rtp = remote_rtp.map(canonical);
        if remote_rtp != self.config.remote_rtp.map(canonical) {
            self.accepted_source = None;
        }
        self.config.remote_rtp = remote_rtp;
        self.config.remote_rtcp = remote_rtcp.map(canonical);
    }

    /// A datagram the worker could not even hand over (longer than any audio packet).
    pub fn note_malformed(&mut self) {
        self.stats.malformed_packets += 1;
    }

    pub fn mode(&self) -> SessionMode {
        self.config.mode
    }

    /// Whether the session sends media (and so RTCP sender reports): echoing, in a room, or
    /// playing a prompt.
    fn sends_media(&self) -> bool {
        self.config.mode != SessionMode::Idle || self.room.is_some() || self.player.is_some()
    }

    /// Source security: the negotiated address only, or — with latching — the first source
    /// that sends a negotiated payload type, once, for the rest of the session.
    fn source_allowed(&self, source: SocketAddr, payload_type: u8) -> bool {
        if let Some(accepted) = self.accepted_source {
            return accepted == source;
        }
        if !self.config.latching {
            return self.config.remote_rtp.map(canonical) == Some(source);
        }
        match &self.audio {
            Some(a) => {
                payload_type == a.format.payload_type
                    || Some(payload_type) == a.format.telephone_event_pt
            }
            // Nothing negotiated yet: nothing to latch on.
            None => false,
        }
    }

    fn accept_source(&mut self, source: SocketAddr) {
        if self.accepted_source.is_some() {
            return;
        }
        self.accepted_source = Some(source);
        if self.config.latching && self.config.remote_rtp.map(canonical) != Some(source) {
            self.push_event(SessionEvent::Latched { source });
        }
    }

    /// Where our RTP goes: the accepted (possibly latched) source, else the negotiated address.
    fn rtp_destination(&self) -> Option<SocketAddr> {
        self.accepted_source.or(self.config.remote_rtp)
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        if let (true, Some(src)) = (self.config.latching, self.accepted_source) {
            // A NATed peer's RTCP goes back the way its RTP came (RTP port + 1 at best).
            return Some(match self.config.remote_rtcp {
                Some(r) if r.port() == self.config.remote_rtp.map(|a| a.port()).unwrap_or(0) => src,
                _ => SocketAddr::new(src.ip(), src.port().wrapping_add(1)),
            });
        }
        self.config.remote_rtcp
    }

    /// One ptime of playout: a prompt or tone when one plays, else (Echo mode) the caller's
    /// audio, decoded, re-encoded, sent back. While digits are sent, their telephone-event
    /// packets take the place of that audio (see [`MediaSession::send_digits`]).
    fn tick(&mut self, now: Instant) {
        if self.player.is_some() {
            if self.config.mode == SessionMode::Echo || self.heard.is_some() {
                // Keep the jitter buffer (and in-band DTMF detection) moving: echo is not
                // heard meanwhile, a recording still is.
                let _ = self.pull_frame(now);
            }
            self.play_player_frame(now);
            return;
        }
        if self.config.mode != SessionMode::Echo {
            // Idle and listening (recording, silence detection): take the caller's audio.
            if self.heard.is_some() {
                let _ = self.pull_frame(now);
            }
            // Idle sends no audio; its ticks carry telephone-events while digits are sent.
            if !self.send_event_slot(now) {
                self.skip_slot();
            }
            if !self.needs_own_tick() {
                // The last digit's time is over: an idle session goes quiet again.
                self.next_tick = None;
            }
            return;
        }
        if self.rtp_destination().is_none() {
            // Digits still run their course (nowhere to send them), as the playout does.
            self.send_event_slot(now);
            return;
        }
        let Some(samples) = self.pull_frame(now) else {
            if !self.send_event_slot(now) {
                self.skip_slot();
            }
            return;
        };
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        // Transcoding between rates: the frame is resampled to the sent codec's rate.
        let frame = match audio.resampler.as_mut() {
            Some(r) => {
                Outgoing::Resampled(r.process(&audio.pcm[..samples], &mut audio.resampled[..]))
            }
            None => Outgoing::Decoded(samples),
        };
        self.send_audio(now, frame);
    }

    /// Takes one ptime of the caller's audio out of the jitter buffer and decodes it (or
    /// conceals a loss) into `audio.pcm`, at the received codec's rate. None when nothing is
    /// playing (before the first packet, between talkspurts) or no format is negotiated.
    /// Reports a digit when in-band detection hears one.
    fn pull_frame(&mut self, now: Instant) -> Option<usize> {
        let pulled = self.decode_next(now);
        if let (Some(heard), Some(audio)) = (self.heard.as_mut(), self.audio.as_ref()) {
            let n = pulled.unwrap_or(audio.frame_samples);
            let room = heard.samples.len() - heard.len;
            let take = n.min(room);
            match pulled {
                Some(_) => {
                    heard.samples[heard.len..heard.len + take].copy_from_slice(&audio.pcm[..take])
                }
                None => heard.samples[heard.len..heard.len + take].fill(0),
            }
            heard.len += take;
            heard.dropped += (n - take) as u64;
        }
        pulled
    }

    /// The jitter buffer's next frame, decoded (or concealed) into `audio.pcm`.
    fn decode_next(&mut self, now: Instant) -> Option<usize> {
        let audio = self.audio.as_mut()?;
        let mut inband_digit = None;
        let samples = match audio.jitter.pop(now, &mut audio.payload[..]) {
            Playout::Frame { len, .. } => {
                match audio
                    .decoder
                    .decode(&audio.payload[..len], &mut audio.pcm[..])
                {
                    Ok(n) => {
                        if let Some(detector) = audio.inband.as_mut() {
                            inband_digit = detector.push(&audio.pcm[..n]);
                        }
                        n
                    }
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        audio
                            .decoder
                            .conceal(audio.frame_samples, &mut audio.pcm[..])
                    }
                }
            }
            Playout::Conceal { timestamp } => {
                // Opus carries the lost frame's FEC in the next packet: use it when it is here.
                let next = if audio.decoder.has_fec() {
                    audio
                        .jitter
                        .peek_after(timestamp, &mut audio.fec_payload[..])
                } else {
                    None
                };
                match next {
                    Some(len) => {
                        self.stats.fec_recovered += 1;
                        audio.decoder.recover(
                            &audio.fec_payload[..len],
                            audio.frame_samples,
                            &mut audio.pcm[..],
                        )
                    }
                    None => audio
                        .decoder
                        .conceal(audio.frame_samples, &mut audio.pcm[..]),
                }
            }
            Playout::Silence => return None,
        };
        let samples = samples.min(audio.frame_samples);
        if let Some(digit) = inband_digit {
            self.on_digit(DigitEvent {
                digit,
                duration_ms: 0,
                volume_dbm0: 0,
                ended_by: super::dtmf::EndedBy::EndBit,
            });
        }
        Some(samples)
    }

    /// One ptime of our stream while digits are sent: queues this ptime's telephone-event
    /// packet (the sender decides marker, event timestamp and the repeated end packets) and
    /// moves the stream on by one packet and one ptime. True when the event took the ptime,
    /// so its audio must not be sent; false between digits and when no digit is being sent.
    fn send_event_slot(&mut self, now: Instant) -> bool {
        let destination = self.rtp_destination();
        let Some(audio) = self.audio.as_mut() else {
            return false;
        };
        let (Some(sender), Some(payload_type)) =
            (audio.dtmf_out.as_mut(), audio.format.telephone_event_pt)
        else {
            return false;
        };
        if sender.is_idle() {
            return false;
        }
        let slot_timestamp = audio.tx_timestamp;
        let mut payload = [0u8; 4];
        let Some(event) = sender.poll_packet(now, slot_timestamp, &mut payload) else {
            return false;
        };
        // The event owns this ptime of the stream whether or not its packet can leave.
        let sequence = audio.tx_sequence;
        audio.tx_sequence = audio.tx_sequence.wrapping_add(1);
        audio.tx_timestamp = audio.tx_timestamp.wrapping_add(audio.frame_ticks);
        // Audio after the event resumes after a jump in time: it starts a talkspurt.
        audio.tx_talkspurt = true;
        if event.marker {
            self.stats.digits_sent += 1;
        }
        let Some(destination) = destination else {
            return true;
        };
        let Some(mut buf) = self.spare.pop() else {
            return true; // transmit queue full: the worker is not draining; drop this packet
        };
        let header = RtpHeader {
            marker: event.marker,
            payload_type,
            sequence,
            timestamp: event.timestamp,
            ssrc: self.config.local_ssrc,
            csrcs: &[],
        };
        let Ok(mut len) = rtp::write_packet(&mut buf[..], &header, &payload) else {
            self.spare.push(buf);
            return true;
        };
        if let Some(ctx) = self.srtp_out.as_mut() {
            match ctx.protect_rtp(&mut buf[..], len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.spare.push(buf);
                    return true;
                }
            }
        }
        // RTCP maps wall clock to the stream's timeline: this ptime's, not the event start's.
        self.rtcp.on_rtp_sent(now, slot_timestamp, payload.len());
        self.stats.rtp_packets_sent += 1;
        self.stats.rtp_bytes_sent += len as u64;
        self.transmits
            .push_back((Channel::Rtp, destination, len, buf));
        true
    }

    /// A ptime with nothing to send: the stream pauses, and the next packet starts a talkspurt.
    fn skip_slot(&mut self) {
        if let Some(audio) = self.audio.as_mut() {
            audio.tx_talkspurt = true;
            audio.tx_timestamp = audio.tx_timestamp.wrapping_add(audio.frame_ticks);
        }
    }

    /// Encodes one frame (held in one of the audio path's buffers, at the sent codec's rate)
    /// and queues it as an RTP packet to the peer — unless a telephone-event takes this ptime.
    fn send_audio(&mut self, now: Instant, frame: Outgoing) {
        if self.send_event_slot(now) {
            // RFC 4733 §2.5.1: the audio of the event's time is not sent.
            return;
        }
        let Some(destination) = self.rtp_destination() else {
            return;
        };
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        let Some(mut buf) = self.spare.pop() else {
            return; // transmit queue full: the worker is not draining; drop this frame
        };
        let pcm: &[i16] = match frame {
            Outgoing::Decoded(n) => &audio.pcm[..n],
            Outgoing::Resampled(n) => &audio.resampled[..n],
        };
        let header = RtpHeader {
            marker: audio.tx_talkspurt,
            payload_type: audio.format.sending().1,
            sequence: audio.tx_sequence,
            timestamp: audio.tx_timestamp,
            ssrc: self.config.local_ssrc,
            csrcs: &[],
        };
        let header_len = header.len();
        // Leave room for the SRTP tag at the end.
        let room = MAX_PACKET - header_len - 16;
        let encoded = match audio
            .encoder
            .encode(pcm, &mut buf[header_len..header_len + room])
        {
            Ok(n) => n,
            Err(_) => {
                self.stats.decode_errors += 1;
                self.spare.push(buf);
                return;
            }
        };
        if rtp::write_header(&mut buf[..header_len], &header).is_err() {
            self.spare.push(buf);
            return;
        }
        let rtp_timestamp = audio.tx_timestamp;
        audio.tx_sequence = audio.tx_sequence.wrapping_add(1);
        audio.tx_timestamp = audio.tx_timestamp.wrapping_add(audio.frame_ticks);
        audio.tx_talkspurt = false;
        let mut len = header_len + encoded;
        if let Some(ctx) = self.srtp_out.as_mut() {
            match ctx.protect_rtp(&mut buf[..], len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.spare.push(buf);
                    return;
                }
            }
        }
        self.rtcp.on_rtp_sent(now, rtp_timestamp, encoded);
        self.stats.rtp_packets_sent += 1;
        self.stats.rtp_bytes_sent += len as u64;
        self.transmits
            .push_back((Channel::Rtp, destination, len, buf));
    }

    /// Plays `source` to the peer instead of the session's usual audio (echo, conference mix,
    /// nothing) until it ends ([`SessionEvent::PlayoutDone`]) or [`MediaSession::stop_playout`];
    /// replaces a playout in progress. In a conference the session is also not heard meanwhile.
    pub fn start_playout(&mut self, now: Instant, operation: u64, source: PlaySource, gain: f32) {
        self.player = Some((operation, Player::new(source, gain)));
        if self.room.is_none() && self.next_tick.is_none() {
            let ptime = self
                .audio
                .as_ref()
                .map(AudioPath::ptime)
                .unwrap_or(Duration::from_millis(20));
            self.next_tick = Some(aligned_tick(self.config.tick_epoch, now, ptime));
        }
    }

    /// Stops the playout of `operation` (if it is the one playing); true if it was.
    pub fn stop_playout(&mut self, now: Instant, operation: u64) -> bool {
        if self.player.as_ref().map(|(op, _)| *op) != Some(operation) {
            return false;
        }
        self.player = None;
        self.restore_tick(now);
        true
    }

    /// Changes the volume of the playout in progress (AdjustPlay).
    pub fn set_playout_gain(&mut self, gain: f32) -> bool {
        match self.player.as_mut() {
            Some((_, player)) => {
                player.set_gain(gain);
                true
            }
            None => false,
        }
    }

    /// Changes the speed of the playout in progress (AdjustPlay, Play's `Speed`).
    pub fn set_playout_speed(&mut self, speed: i32) -> bool {
        match self.player.as_mut() {
            Some((_, player)) => {
                player.set_speed(speed);
                true
            }
            None => false,
        }
    }

    /// Hands the playout in progress over (to carry it into a session rebuilt for a new
    /// format); see [`MediaSession::resume_playout`].
    pub fn take_playout(&mut self) -> Option<(u64, Player)> {
        self.player.take()
    }

    /// Continues a playout taken from the session this one replaces.
    pub fn resume_playout(&mut self, now: Instant, playout: (u64, Player)) {
        self.player = Some(playout);
        if self.room.is_none() {
            self.restore_tick(now);
        }
    }

    /// Whether a prompt or tone is playing.
    pub fn is_playing(&self) -> bool {
        self.player.is_some()
    }

    /// Queues `digits` ('0'-'9', '*', '#', 'A'-'D', '!' for hook flash) to send to the peer as
    /// RFC 4733 telephone-events, each for `duration_ms` (0: 100 ms, at least 40 ms) with
    /// `gap_ms` (0: 50 ms) between them, after any digits still queued.
    ///
    /// Every ptime of a digit, its event packet goes out on our RTP stream (our SSRC, the
    /// next sequence number, the negotiated telephone-event payload type, SRTP as for audio)
    /// instead of that ptime's audio — echo, prompt or conference mix. An idle session, which
    /// sends no audio, ticks for as long as the digits take. Refused, with nothing queued,
    /// when no telephone-event was negotiated or a character is not a digit.
    pub fn send_digits(
        &mut self,
        now: Instant,
        digits: &str,
        duration_ms: u32,
        gap_ms: u32,
    ) -> Result<(), SessionError> {
        let sender = self
            .audio
            .as_mut()
            .and_then(|audio| audio.dtmf_out.as_mut())
            .ok_or(SessionError::NoTelephoneEvent)?;
        sender
            .queue(digits, duration_ms, gap_ms)
            .map_err(SessionError::Digits)?;
        if self.room.is_none() && self.next_tick.is_none() {
            self.restore_tick(now);
        }
        Ok(())
    }

    /// Whether digits are queued or being sent (the gap after the last one included).
    pub fn is_sending_digits(&self) -> bool {
        self.audio
            .as_ref()
            .and_then(|audio| audio.dtmf_out.as_ref())
            .is_some_and(|sender| !sender.is_idle())
    }

    /// Keeps (or stops keeping) the caller's decoded audio for [`MediaSession::take_heard`]:
    /// recording and silence detection. The session then decodes every ptime even when it
    /// neither echoes nor is in a conference. Allocates the buffer (200 ms) when switched on.
    pub fn set_listening(&mut self, now: Instant, on: bool) {
        match (on, self.heard.is_some()) {
            (true, false) => {
                let rate = self
                    .audio
                    .as_ref()
                    .map_or(8000, |a| pcm_rate(a.format.codec));
                self.heard = Some(Heard {
                    samples: vec![0; (rate / 5) as usize].into_boxed_slice(),
                    len: 0,
                    dropped: 0,
                });
                if self.room.is_none() && self.next_tick.is_none() {
                    self.restore_tick(now);
                }
            }
            (false, true) => {
                self.heard = None;
                if self.room.is_none() {
                    self.restore_tick(now);
                }
            }
            _ => {}
        }
    }

    /// Hands the caller's audio decoded since the last call to `consume` (samples at `rate`),
    /// then forgets it. Nothing when not listening or nothing new.
    pub fn take_heard(&mut self, mut consume: impl FnMut(&[i16], u32)) {
        let rate = self
            .audio
            .as_ref()
            .map_or(8000, |a| pcm_rate(a.format.codec));
        if let Some(heard) = self.heard.as_mut() {
            if heard.len > 0 {
                consume(&heard.samples[..heard.len], rate);
                heard.len = 0;
            }
        }
    }

    /// The own tick only where something needs one outside a room: Echo, a playout,
    /// listening, or digits being sent.
    fn restore_tick(&mut self, now: Instant) {
        let needed = self.needs_own_tick();
        self.next_tick = match (&self.audio, &self.room) {
            (Some(a), None) if needed => Some(aligned_tick(self.config.tick_epoch, now, a.ptime())),
            _ => None,
        };
    }

    /// Whether something outside a room needs a tick every ptime.
    fn needs_own_tick(&self) -> bool {
        self.config.mode == SessionMode::Echo
            || self.player.is_some()
            || self.heard.is_some()
            || self.is_sending_digits()
    }

    /// One ptime of the playout, encoded and sent (own tick, outside conferences).
    fn play_player_frame(&mut self, now: Instant) {
        let Some(audio) = self.audio.as_mut() else {
            // Nothing negotiated to encode with: the playout cannot be heard; it ends.
            if let Some((operation, _)) = self.player.take() {
                self.push_event(SessionEvent::PlayoutDone { operation });
                self.restore_tick(now);
            }
            return;
        };
        let Some((operation, player)) = self.player.as_mut() else {
            return;
        };
        let operation = *operation;
        let rate = pcm_rate(audio.format.sending().0);
        let n = ((rate * audio.format.ptime_ms / 1000) as usize).min(MAX_FRAME_SAMPLES);
        let ok = player.fill(&mut audio.resampled[..n], rate);
        let done = player.is_done() || !ok;
        self.send_audio(now, Outgoing::Resampled(n));
        if done {
            self.player = None;
            self.push_event(SessionEvent::PlayoutDone { operation });
            self.restore_tick(now);
        }
    }

    /// Joins a conference that mixes at `room_rate` Hz in ticks of [`ROOM_TICK`]: the session
    /// stops playing out on its own (no echo) and is driven by [`MediaSession::capture`] and
    /// [`MediaSession::play`] instead. Allocates the conversion buffers (not on the packet
    /// path). A session without a negotiated format joins too, contributing silence and
    /// sending nothing until it has one.
    pub fn enter_conference(&mut self, room_rate: u32) -> Result<(), SessionError> {
        let port = match &self.audio {
            Some(audio) => Some(RoomPort::new(room_rate, &audio.format)?),
            None => None,
        };
        self.room = Some(RoomMembership { room_rate, port });
        self.next_tick = None;
        Ok(())
    }

    /// Leaves the conference: back to the session's own mode (Echo plays out again).
    pub fn leave_conference(&mut self, now: Instant) {
        if self.room.take().is_none() {
            return;
        }
        self.restore_tick(now);
    }

    /// The rate of the conference the session is in, if any.
    pub fn conference_rate(&self) -> Option<u32> {
        self.room.as_ref().map(|r| r.room_rate)
    }

    /// One conference tick of the caller's audio at the conference rate, into `out` (sized
    /// to the tick: `room_rate / 50` samples). False when the caller contributed nothing this
    /// tick (no stream yet, between talkspurts, no format): `out` is then silence.
    pub fn capture(&mut self, now: Instant, out: &mut [i16]) -> bool {
        out.fill(0);
        let Some(mut port) = self.room.as_mut().and_then(|r| r.port.take()) else {
            return false;
        };
        let mut voiced = false;
        let mut guard = 0;
        while port.inbox_len < out.len() && guard < 8 {
            guard += 1;
            match self.pull_frame(now) {
                Some(samples) => {
                    voiced = true;
                    if let Some(audio) = self.audio.as_ref() {
                        port.push_in(&audio.pcm[..samples]);
                    }
                }
                None => port.push_in_silence(),
            }
        }
        port.take_in(out);
        if let Some(room) = self.room.as_mut() {
            room.port = Some(port);
        }
        if self.player.is_some() {
            // Taken out of the mix while something plays to it (reference §3.6).
            out.fill(0);
            return false;
        }
        voiced
    }

    /// Sends one conference tick of audio (the mix this participant hears, at the conference
    /// rate) to the peer, re-framed to the session's ptime and encoded in its codec.
    pub fn play(&mut self, now: Instant, pcm: &[i16]) {
        let Some(mut port) = self.room.as_mut().and_then(|r| r.port.take()) else {
            return;
        };
        let room_rate = self.room.as_ref().map_or(8000, |r| r.room_rate);
        if let Some((operation, player)) = self.player.as_mut() {
            // What plays replaces the mix for the duration.
            let operation = *operation;
            let ok = player.fill(&mut port.playout, room_rate);
            let done = player.is_done() || !ok;
            let RoomPort {
                outbox,
                outbox_len,
                playout,
                ..
            } = &mut port;
            let n = playout.len().min(outbox.len() - *outbox_len);
            outbox[*outbox_len..*outbox_len + n].copy_from_slice(&playout[..n]);
            *outbox_len += n;
            if done {
                self.player = None;
                self.push_event(SessionEvent::PlayoutDone { operation });
            }
        } else {
            port.push_out(pcm);
        }
        while let Some(audio) = self.audio.as_mut() {
            let Some(n) = port.take_out(&mut audio.resampled[..]) else {
                break;
            };
            self.send_audio(now, Outgoing::Resampled(n));
        }
        if let Some(room) = self.room.as_mut() {
            room.port = Some(port);
        }
    }

    fn send_rtcp(&mut self, now: Instant) {
        let Some(mut buf) = self.spare.pop() else {
            return;
        };
        let Some(len) = self.rtcp.poll_transmit(now, &mut buf[..MAX_PACKET - 32]) else {
            self.spare.push(buf);
            return;
        };
        let Some(destination) = self.rtcp_destination() else {
            self.spare.push(buf);
            return;
        };
        let len = match self.srtp_out.as_mut() {
            Some(ctx) => match ctx.protect_rtcp(&mut buf[..], len) {
                Ok(n) => n,
                Err(_) => {
                    self.spare.push(buf);
                    return;
                }
            },
            None => len,
        };
        let channel = if Some(destination) == self.rtp_destination() {
            Channel::Rtp
        } else {
            Channel::Rtcp
        };
        self.stats.rtcp_packets_sent += 1;
        self.transmits.push_back((channel, destination, len, buf));
    }

    fn on_digit(&mut self, digit: DigitEvent) {
        self.stats.digits_received += 1;
        self.push_event(SessionEvent::Digit(digit));
    }

    fn push_event(&mut self, event: SessionEvent) {
        if self.events.len() == EVENT_SLOTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

impl AudioPath {
    fn new(
        format: StreamFormat,
        config: &SessionConfig,
        ssrc: u32,
    ) -> Result<AudioPath, SessionError> {
        if !(10..=60).contains(&format.ptime_ms) {
            return Err(SessionError::Format(format!(
                "ptime {} ms is outside 10-60 ms",
                format.ptime_ms
            )));
        }
        let frame_samples = (pcm_rate(format.codec) * format.ptime_ms / 1000) as usize;
        if frame_samples > MAX_FRAME_SAMPLES {
            return Err(SessionError::Format(format!(
                "{} samples per frame exceed {MAX_FRAME_SAMPLES}",
                frame_samples
            )));
        }
        let (send_codec, _) = format.sending();
        let frame_ticks = send_codec.clock_rate() * format.ptime_ms / 1000;
        let (from, to) = (pcm_rate(format.codec), pcm_rate(send_codec));
        let resampler = if from == to {
            None
        } else {
            Some(Resampler::new(from, to).map_err(|e| SessionError::Format(e.to_string()))?)
        };
        Ok(AudioPath {
            jitter: JitterBuffer::new(JitterConfig {
                clock_rate: format.codec.clock_rate(),
                ptime_ms: format.ptime_ms,
                min_delay_ms: config.jitter_min_ms.max(format.ptime_ms),
                max_delay_ms: config.jitter_max_ms.max(config.jitter_min_ms),
                max_payload: MAX_PACKET,
            }),
            decoder: AudioDecoder::new(format.codec).map_err(SessionError::Codec)?,
            encoder: AudioEncoder::new(send_codec).map_err(SessionError::Codec)?,
            frame_samples,
            frame_ticks,
            resampler,
            resampled: Box::new([0; MAX_FRAME_SAMPLES]),
            pcm: Box::new([0; MAX_FRAME_SAMPLES]),
            payload: Box::new([0; MAX_PACKET]),
            fec_payload: Box::new([0; MAX_PACKET]),
            // Random-ish initial values per RFC 3550 §5.1, derived from the SSRC (sans-IO).
            tx_sequence: (ssrc >> 16) as u16 ^ 0x5a5a,
            tx_timestamp: ssrc.rotate_left(7),
            tx_talkspurt: true,
            inband: if config.inband_dtmf {
                DtmfDetector::new(pcm_rate(format.codec)).ok()
            } else {
                None
            },
            // Events share our stream's timestamps, so they count at the sent codec's clock.
            dtmf_out: format
                .telephone_event_pt
                .map(|_| DtmfSender::new(send_codec.clock_rate(), format.ptime_ms)),
            format,
        })
    }

    fn ptime(&self) -> Duration {
        Duration::from_millis(u64::from(self.format.ptime_ms))
    }
}

/// The first instant after `now` on the grid `epoch + k * ptime`.
fn aligned_tick(epoch: Instant, now: Instant, ptime: Duration) -> Instant {
    let ptime_ns = ptime.as_nanos().max(1);
    let since = now.saturating_duration_since(epoch).as_nanos();
    let k = since / ptime_ns + 1;
    let offset = u64::try_from(k * ptime_ns).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compared as the IPv4 they are.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn summarize(s: &RtcpStats) -> RtcpSummary {
    RtcpSummary {
        cumulative_lost: s.cumulative_lost,
        fraction_lost_percent: s.fraction_lost_percent,
        jitter_ms: s.jitter_ms,
        rtt_ms: s.rtt.map(|d| d.as_secs_f32() * 1000.0),
        remote_fraction_lost_percent: s.remote_fraction_lost.map(|f| f32::from(f) * 100.0 / 256.0),
        remote_jitter_ms: s.remote_jitter_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::DtmfSender;
    use crate::media::srtp::CryptoAttribute;
    use crate::media::tone::goertzel_power;

    const PEER: &str = "192.0.2.10:4000";
    const PTIME: Duration = Duration::from_millis(20);

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn config(codec: Codec, payload_type: u8) -> SessionConfig {
        SessionConfig {
            local_ssrc: 0x1111_2222,
            cname: "callbridge@test".into(),
            ntp_at_start: 0,
            format: Some(StreamFormat {
                codec,
                payload_type,
                ptime_ms: 20,
                telephone_event_pt: Some(101),
                send: None,
            }),
            mode: SessionMode::Echo,
            remote_rtp: Some(addr(PEER)),
            remote_rtcp: Some(addr("192.0.2.10:4001")),
            latching: false,
            srtp: None,
            rtp_timeout: Some(Duration::from_secs(5)),
            jitter_min_ms: 20,
            jitter_max_ms: 200,
            rtcp_interval: Duration::from_secs(5),
            seed: 7,
            inband_dtmf: false,
            tick_epoch: Instant::now(),
        }
    }

    /// A peer sending one codec's frames every 20 ms, encoded from a tone.
    struct Peer {
        encoder: AudioEncoder,
        codec: Codec,
        payload_type: u8,
        seq: u16,
        ts: u32,
        phase: usize,
        srtp: Option<SrtpContext>,
    }

    impl Peer {
        fn new(codec: Codec, payload_type: u8) -> Peer {
            Peer {
                encoder: AudioEncoder::new(codec).expect("codec"),
                codec,
                payload_type,
                seq: 1000,
                ts: 5000,
                phase: 0,
                srtp: None,
            }
        }

        fn frame(&mut self, out: &mut [u8]) -> usize {
            let rate = pcm_rate(self.codec);
            let n = (rate / 50) as usize;
            let hz = 1000.0;
            let pcm: Vec<i16> = (0..n)
                .map(|i| {
                    let t = (self.phase + i) as f64 / f64::from(rate);
                    (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            self.phase += n;
            let header = RtpHeader {
                marker: false,
                payload_type: self.payload_type,
                sequence: self.seq,
                timestamp: self.ts,
                ssrc: 0xabcd_0001,
                csrcs: &[],
            };
            let h = rtp::write_header(out, &header).expect("header fits");
            let len = h + self.encoder.encode(&pcm, &mut out[h..]).expect("encode");
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(self.codec.clock_rate() / 50);
            match self.srtp.as_mut() {
                Some(ctx) => ctx.protect_rtp(out, len).expect("protect"),
                None => len,
            }
        }
    }

    /// Runs `frames` ptimes: the peer sends a frame (unless `lose(i)`), the session ticks;
    /// returns everything the session transmitted.
    fn run(
        session: &mut MediaSession,
        peer: &mut Peer,
        start: Instant,
        frames: usize,
        lose: impl Fn(usize) -> bool,
    ) -> Vec<(Transmit, Vec<u8>)> {
        let mut sent = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        for i in 0..frames {
            let now = start + PTIME * i as u32;
            let len = peer.frame(&mut buf);
            if !lose(i) {
                session.handle_rtp(now, addr(PEER), &mut buf, len);
            }
            session.handle_timeout(now + Duration::from_millis(1));
            while let Some(t) = session.poll_transmit(&mut out) {
                sent.push((t, out[..t.len].to_vec()));
            }
        }
        sent
    }

    fn rtp_only(sent: &[(Transmit, Vec<u8>)]) -> Vec<Vec<u8>> {
        sent.iter()
            .filter(|(t, p)| t.channel == Channel::Rtp && !rtp::is_rtcp(p))
            .map(|(_, p)| p.clone())
            .collect()
    }

    #[test]
    fn echo_plays_the_callers_pcmu_back_with_our_own_rtp_stream() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let sent = run(&mut session, &mut peer, start, 100, |_| false);
        let packets = rtp_only(&sent);
        assert!(
            packets.len() >= 97,
            "one frame back per frame in ({})",
            packets.len()
        );
        let first = rtp::parse(&packets[0]).unwrap();
        assert!(first.marker(), "talkspurt starts with the marker bit");
        assert_eq!(first.ssrc(), 0x1111_2222);
        for pair in packets.windows(2) {
            let (a, b) = (rtp::parse(&pair[0]).unwrap(), rtp::parse(&pair[1]).unwrap());
            assert_eq!(b.sequence(), a.sequence().wrapping_add(1));
            assert_eq!(b.timestamp(), a.timestamp().wrapping_add(160));
            assert_eq!(b.payload_type(), 0);
        }
        // μ-law decode→encode is lossless: the payloads are the caller's, in order.
        let mut reference = Peer::new(Codec::Pcmu, 0);
        let mut buf = [0u8; MAX_PACKET];
        let sent_payloads: Vec<Vec<u8>> = (0..100)
            .map(|_| {
                let n = reference.frame(&mut buf);
                buf[12..n].to_vec()
            })
            .collect();
        let echoed: Vec<Vec<u8>> = packets
            .iter()
            .map(|p| rtp::parse(p).unwrap().payload().to_vec())
            .collect();
        let offset = sent_payloads
            .iter()
            .position(|p| *p == echoed[0])
            .expect("first echoed frame is one the caller sent");
        for (i, e) in echoed.iter().enumerate() {
            assert_eq!(Some(e), sent_payloads.get(offset + i), "frame {i}");
        }
        let stats = session.stats();
        assert_eq!(stats.rtp_packets_received, 100);
        assert_eq!(stats.foreign_source_dropped, 0);
    }

    /// A conference port carries the caller's tone into the room at the room rate, and the
    /// room's audio back out in the caller's codec and ptime, for narrowband, wideband and
    /// fullband rooms and packet times that are not the room's 20 ms.
    #[test]
    fn room_port_converts_codec_rate_and_ptime_both_ways() {
        use crate::media::tone::goertzel_power;
        for (codec, pt, room_rate, ptime) in [
            (Codec::Pcmu, 0, 8000, 20),
            (Codec::Pcmu, 0, 16000, 20),
            (Codec::G722, 9, 8000, 20),
            (Codec::Opus, 111, 48000, 20),
            (Codec::Pcma, 8, 48000, 20),
            (Codec::Pcmu, 0, 8000, 30),
            (Codec::Pcmu, 0, 16000, 10),
        ] {
            let start = Instant::now();
            let mut cfg = config(codec, pt);
            cfg.mode = SessionMode::Idle;
            if let Some(f) = cfg.format.as_mut() {
                f.ptime_ms = ptime;
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            session.enter_conference(room_rate).unwrap();
            assert_eq!(session.conference_rate(), Some(room_rate));
            let mut peer = Peer::new(codec, pt);
            let tick = (room_rate / 50) as usize;
            let mut room_in = Vec::new();
            let mut sent = Vec::new();
            let mut buf = [0u8; MAX_PACKET];
            let mut out = [0u8; MAX_PACKET];
            let mut frame = vec![0i16; tick];
            let mut voiced_ticks = 0;
            // The room plays its own 1 kHz tone to the caller.
            let room_tone: Vec<i16> = (0..tick * 100)
                .map(|i| {
                    let t = i as f64 / f64::from(room_rate);
                    (6000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                })
                .collect();
            for i in 0..100u32 {
                let now = start + PTIME * i;
                // The peer sends 20 ms frames; its ptime only shapes what we send back.
                let len = peer.frame(&mut buf);
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                if session.capture(now + Duration::from_millis(1), &mut frame) {
                    voiced_ticks += 1;
                }
                room_in.extend_from_slice(&frame);
                let i = i as usize;
                session.play(now, &room_tone[i * tick..(i + 1) * tick]);
                session.handle_timeout(now + Duration::from_millis(1));
                while let Some(t) = session.poll_transmit(&mut out) {
                    if t.channel == Channel::Rtp && !rtp::is_rtcp(&out[..t.len]) {
                        sent.push(out[..t.len].to_vec());
                    }
                }
            }
            assert!(
                voiced_ticks >= 90,
                "{codec:?} in {room_rate}: {voiced_ticks}"
            );
            let tail = &room_in[room_in.len() - tick * 50..];
            let on = goertzel_power(tail, room_rate, 1000.0);
            let off = goertzel_power(tail, room_rate, 2300.0);
            assert!(
                on > off * 50.0,
                "{codec:?} in {room_rate}: caller's tone in the room"
            );
            // Every packet carries one ptime, timestamps step by one ptime of the codec clock.
            let expected = 100 * 20 / ptime as usize;
            assert!(
                sent.len() + 1 >= expected && sent.len() <= expected,
                "{codec:?} ptime {ptime}: {} packets",
                sent.len()
            );
            let step = codec.clock_rate() * ptime / 1000;
            let mut decoder = AudioDecoder::new(codec).unwrap();
            let mut heard = Vec::new();
            let mut pcm = [0i16; MAX_FRAME_SAMPLES];
            for pair in sent.windows(2) {
                let (a, b) = (rtp::parse(&pair[0]).unwrap(), rtp::parse(&pair[1]).unwrap());
                assert_eq!(b.timestamp(), a.timestamp().wrapping_add(step));
                assert_eq!(b.payload_type(), pt);
            }
            for p in &sent {
                let n = decoder
                    .decode(rtp::parse(p).unwrap().payload(), &mut pcm)
                    .unwrap();
                heard.extend_from_slice(&pcm[..n]);
            }
            let rate = pcm_rate(codec);
            let tail = &heard[heard.len() / 2..];
            assert!(
                goertzel_power(tail, rate, 1000.0) > goertzel_power(tail, rate, 2300.0) * 50.0,
                "{codec:?}: the room's tone reaches the caller"
            );
            // Leaving the room: an Idle session sends no more audio.
            session.leave_conference(start + PTIME * 100);
            assert_eq!(session.conference_rate(), None);
            session.play(start + PTIME * 101, &room_tone[..tick]);
            assert!(session.poll_transmit(&mut out).is_none());
        }
    }

    #[test]
    fn a_playout_continues_in_a_rebuilt_session_and_ends_once() {
        use crate::media::player::PlaySource;
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut first = MediaSession::new(cfg.clone(), start).unwrap();
        let tone = PlaySource::Tone {
            frequencies: [440.0, 0.0],
            amplitudes: [3000.0, 0.0],
            duration: Some(Duration::from_millis(200)),
        };
        first.start_playout(start, 7, tone, 1.0);
        let mut out = [0u8; MAX_PACKET];
        let mut sent = 0;
        for i in 1..=5u32 {
            first.handle_timeout(start + PTIME * i);
            while first.poll_transmit(&mut out).is_some() {
                sent += 1;
            }
        }
        // A new format: the session is rebuilt, the playout goes with it.
        if let Some(f) = cfg.format.as_mut() {
            f.codec = Codec::Pcma;
            f.payload_type = 8;
        }
        let mut second = MediaSession::new(cfg, start + PTIME * 5).unwrap();
        let playout = first.take_playout().expect("playing");
        second.resume_playout(start + PTIME * 5, playout);
        let mut done = 0;
        for i in 6..=20u32 {
            second.handle_timeout(start + PTIME * i);
            while second.poll_transmit(&mut out).is_some() {
                sent += 1;
            }
            while let Some(e) = second.poll_event() {
                if e == (SessionEvent::PlayoutDone { operation: 7 }) {
                    done += 1;
                }
            }
        }
        assert_eq!(done, 1, "the playout ends once, in the new session");
        assert_eq!(
            sent, 10,
            "200 ms of tone in 20 ms packets, across both sessions"
        );
        assert!(!second.is_playing());
    }

    #[test]
    fn playout_ticks_of_all_sessions_fall_on_one_grid() {
        let epoch = Instant::now();
        let mut deadlines = Vec::new();
        for offset_ms in [0u64, 3, 7, 19] {
            let mut cfg = config(Codec::Pcmu, 0);
            cfg.tick_epoch = epoch;
            let session = MediaSession::new(cfg, epoch + Duration::from_millis(offset_ms)).unwrap();
            deadlines.push(session.next_tick.expect("echo ticks"));
        }
        assert!(
            deadlines.iter().all(|d| *d == epoch + PTIME),
            "{deadlines:?}"
        );
        assert_eq!(
            aligned_tick(epoch, epoch + Duration::from_millis(41), PTIME),
            epoch + PTIME * 3
        );
    }

    #[test]
    fn lost_opus_frames_are_rebuilt_from_the_next_packets_fec() {
        let start = Instant::now();
        let mut cfg = config(Codec::Opus, 111);
        cfg.jitter_min_ms = 60;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Opus, 111);
        // Loss every 10th frame, after the encoder's speech detector has settled.
        let sent = run(&mut session, &mut peer, start, 60, |i| i > 5 && i % 10 == 5);
        assert!(rtp_only(&sent).len() >= 55);
        let stats = session.stats();
        assert!(
            stats.fec_recovered >= 3,
            "FEC used for lost frames: {stats:?}"
        );
    }

    #[test]
    fn transcoding_sends_the_callers_tone_in_another_codec_and_rate() {
        for (rx, rx_pt, tx, tx_pt) in [
            (Codec::Pcmu, 0, Codec::Pcma, 8),
            (Codec::Pcmu, 0, Codec::G722, 9),
            (Codec::G722, 9, Codec::Opus, 111),
            (Codec::Opus, 111, Codec::Pcmu, 0),
        ] {
            let start = Instant::now();
            let mut cfg = config(rx, rx_pt);
            if let Some(f) = cfg.format.as_mut() {
                f.send = Some((tx, tx_pt));
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            let mut peer = Peer::new(rx, rx_pt);
            let sent = run(&mut session, &mut peer, start, 100, |_| false);
            let packets = rtp_only(&sent);
            assert!(packets.len() >= 95, "{rx:?}→{tx:?}: {}", packets.len());
            let ticks = tx.clock_rate() / 50;
            let mut decoder = AudioDecoder::new(tx).unwrap();
            let mut pcm = Vec::new();
            let mut frame = [0i16; MAX_FRAME_SAMPLES];
            for pair in packets.windows(2) {
                let (a, b) = (rtp::parse(&pair[0]).unwrap(), rtp::parse(&pair[1]).unwrap());
                assert_eq!(b.payload_type(), tx_pt);
                assert_eq!(b.timestamp(), a.timestamp().wrapping_add(ticks));
            }
            for p in &packets {
                let n = decoder
                    .decode(rtp::parse(p).unwrap().payload(), &mut frame)
                    .unwrap();
                pcm.extend_from_slice(&frame[..n]);
            }
            let rate = pcm_rate(tx);
            let tail = &pcm[pcm.len() / 2..];
            let tone = goertzel_power(tail, rate, 1000.0);
            let other = goertzel_power(tail, rate, 2500.0);
            assert!(
                tone > other * 100.0,
                "{rx:?}→{tx:?}: 1 kHz dominates ({tone} vs {other})"
            );
        }
    }

    #[test]
    fn lost_frames_are_concealed_so_the_echo_has_no_gaps() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcma, 8), start).unwrap();
        let mut peer = Peer::new(Codec::Pcma, 8);
        let sent = run(&mut session, &mut peer, start, 100, |i| i % 10 == 5);
        let packets = rtp_only(&sent);
        assert!(packets.len() >= 97, "{}", packets.len());
        assert!(session.stats().jitter.concealed >= 9);
    }

    #[test]
    fn packets_from_a_foreign_source_are_dropped_not_echoed() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        for i in 0..20u32 {
            let len = peer.frame(&mut buf);
            session.handle_rtp(start + PTIME * i, addr("198.51.100.7:4000"), &mut buf, len);
            session.handle_timeout(start + PTIME * i);
        }
        assert!(session.poll_transmit(&mut out).is_none());
        assert_eq!(session.stats().foreign_source_dropped, 20);
        assert_eq!(session.stats().rtp_packets_received, 0);
    }

    #[test]
    fn latching_takes_the_first_source_once_and_never_relatches() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.remote_rtp = Some(addr("10.0.0.5:4000")); // the peer's private address from SDP
        cfg.latching = true;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        let nat = addr("203.0.113.9:31000");
        let attacker = addr("203.0.113.66:31000");
        for i in 0..50u32 {
            let now = start + PTIME * i;
            let len = peer.frame(&mut buf);
            session.handle_rtp(now, nat, &mut buf, len);
            let len = peer.frame(&mut buf);
            session.handle_rtp(now, attacker, &mut buf, len);
            session.handle_timeout(now + Duration::from_millis(1));
            while let Some(t) = session.poll_transmit(&mut out) {
                assert_eq!(
                    t.destination.ip(),
                    nat.ip(),
                    "media goes to the latched source"
                );
            }
        }
        assert_eq!(
            std::iter::from_fn(|| session.poll_event())
                .filter(|e| matches!(e, SessionEvent::Latched { source } if *source == nat))
                .count(),
            1
        );
        assert_eq!(session.stats().foreign_source_dropped, 50);
    }

    #[test]
    fn srtp_echo_round_trips_and_tampered_packets_are_rejected() {
        let start = Instant::now();
        let mut random = {
            let mut n = 0u8;
            move |buf: &mut [u8]| {
                for b in buf {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    *b = n;
                }
            }
        };
        for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
            let theirs = CryptoAttribute::generate(1, profile, &mut random);
            let ours = CryptoAttribute::generate(1, profile, &mut random);
            let mut cfg = config(Codec::Pcmu, 0);
            cfg.srtp = Some(SrtpKeys {
                profile,
                inbound_key: theirs.key.to_vec(),
                inbound_salt: theirs.salt.clone(),
                outbound_key: ours.key.to_vec(),
                outbound_salt: ours.salt.clone(),
            });
            let mut session = MediaSession::new(cfg, start).unwrap();
            let mut peer = Peer::new(Codec::Pcmu, 0);
            peer.srtp = Some(SrtpContext::new(profile, &theirs.key, &theirs.salt).unwrap());
            let sent = run(&mut session, &mut peer, start, 50, |_| false);
            let mut decrypt = SrtpContext::new(profile, &ours.key, &ours.salt).unwrap();
            let mut clear = 0;
            for (t, mut p) in sent.into_iter().filter(|(t, _)| t.channel == Channel::Rtp) {
                let n = decrypt
                    .unprotect_rtp(&mut p, t.len)
                    .expect("our SRTP decrypts");
                assert_eq!(rtp::parse(&p[..n]).unwrap().payload().len(), 160);
                clear += 1;
            }
            assert!(clear >= 47, "{profile:?}: {clear}");
            let mut buf = [0u8; MAX_PACKET];
            let len = peer.frame(&mut buf);
            buf[20] ^= 0x01;
            session.handle_rtp(start + PTIME * 60, addr(PEER), &mut buf, len);
            assert_eq!(session.stats().srtp_rejected, 1, "{profile:?}");
        }
    }

    #[test]
    fn rfc4733_digits_become_events() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        let mut sender = DtmfSender::new(8000, 20);
        sender.queue("42#", 100, 50).unwrap();
        let mut buf = [0u8; 64];
        let mut seq = 7u16;
        for i in 0..60u32 {
            let now = start + PTIME * i;
            let mut payload = [0u8; 4];
            if let Some(p) = sender.poll_packet(now, 1000 + 160 * i, &mut payload) {
                let header = RtpHeader {
                    marker: p.marker,
                    payload_type: 101,
                    sequence: seq,
                    timestamp: p.timestamp,
                    ssrc: 9,
                    csrcs: &[],
                };
                let len = rtp::write_packet(&mut buf, &header, &payload).unwrap();
                seq = seq.wrapping_add(1);
                session.handle_rtp(now, addr(PEER), &mut buf, len);
            }
            session.handle_timeout(now);
        }
        let digits: String = std::iter::from_fn(|| session.poll_event())
            .filter_map(|e| match e {
                SessionEvent::Digit(d) => Some(d.digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "42#");
    }

    /// One RTP packet of our stream, as the peer reads it.
    #[derive(Debug, Clone)]
    struct SentPacket {
        marker: bool,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload: Vec<u8>,
    }

    /// Our RTP packets (SRTP-decrypted with `decrypt` when given), in the order sent.
    fn our_stream(
        sent: &[(Transmit, Vec<u8>)],
        mut decrypt: Option<&mut SrtpContext>,
    ) -> Vec<SentPacket> {
        let mut stream = Vec::new();
        for (t, packet) in sent {
            if t.channel != Channel::Rtp || rtp::is_rtcp(packet) {
                continue;
            }
            let mut packet = packet.clone();
            let len = match decrypt.as_deref_mut() {
                Some(ctx) => ctx
                    .unprotect_rtp(&mut packet, t.len)
                    .expect("our SRTP decrypts"),
                None => t.len,
            };
            let p = rtp::parse(&packet[..len]).expect("we send RTP");
            stream.push(SentPacket {
                marker: p.marker(),
                payload_type: p.payload_type(),
                sequence: p.sequence(),
                timestamp: p.timestamp(),
                ssrc: p.ssrc(),
                payload: p.payload().to_vec(),
            });
        }
        stream
    }

    /// An RFC 4733 event block read straight off the wire: (event code, E bit, volume,
    /// duration).
    fn event_block(payload: &[u8]) -> (u8, bool, u8, u16) {
        assert_eq!(payload.len(), 4, "one event block per packet");
        (
            payload[0],
            payload[1] & 0x80 != 0,
            payload[1] & 0x3F,
            u16::from_be_bytes([payload[2], payload[3]]),
        )
    }

    /// Checks that `stream` is one RTP stream carrying one packet per ptime: our SSRC,
    /// sequence numbers without a gap, and every packet at the stream time of its ptime
    /// (audio: its timestamp; an event packet: its event's start plus the ptimes since).
    /// Returns the telephone-event (PT 101) packets grouped per event, having checked that
    /// each event's packets are back to back in the stream (no audio among them) and that
    /// the audio after an event starts a talkspurt.
    fn events_in_stream(stream: &[SentPacket]) -> Vec<Vec<SentPacket>> {
        let mut events: Vec<Vec<SentPacket>> = Vec::new();
        let mut slot_timestamps = Vec::new();
        let mut in_event = false;
        for (i, p) in stream.iter().enumerate() {
            assert_eq!(p.ssrc, 0x1111_2222, "packet {i}: one stream");
            if i > 0 {
                let before = &stream[i - 1];
                assert_eq!(
                    p.sequence,
                    before.sequence.wrapping_add(1),
                    "packet {i}: sequence continues"
                );
            }
            if p.payload_type == 101 {
                if p.marker {
                    events.push(Vec::new());
                } else {
                    assert!(
                        in_event,
                        "packet {i}: event continues without audio between"
                    );
                }
                let event = events.last_mut().expect("an event starts with the marker");
                let since_start = event.len() as u32;
                assert_eq!(
                    p.timestamp,
                    event.first().map_or(p.timestamp, |f| f.timestamp)
                );
                slot_timestamps.push(p.timestamp.wrapping_add(160 * since_start));
                event.push(p.clone());
                in_event = true;
            } else {
                assert_eq!(p.payload_type, 0, "packet {i}: audio otherwise");
                if in_event {
                    assert!(
                        p.marker,
                        "packet {i}: audio after an event starts a talkspurt"
                    );
                }
                slot_timestamps.push(p.timestamp);
                in_event = false;
            }
        }
        for (i, pair) in slot_timestamps.windows(2).enumerate() {
            assert_eq!(
                pair[1],
                pair[0].wrapping_add(160),
                "packet {}: one packet per ptime",
                i + 1
            );
        }
        events
    }

    /// Checks one event's packets as RFC 4733 wants a 100 ms tone at 8 kHz in 20 ms packets:
    /// the marker on the first, the duration growing by a ptime, the E bit on the last
    /// three (repeats of one final duration), volume -10 dBm0.
    fn assert_event(packets: &[SentPacket], code: u8) {
        let fields: Vec<(bool, u8, bool, u8, u16)> = packets
            .iter()
            .map(|p| {
                let (c, end, volume, duration) = event_block(&p.payload);
                (p.marker, c, end, volume, duration)
            })
            .collect();
        assert_eq!(
            fields,
            [
                (true, code, false, 10, 160),
                (false, code, false, 10, 320),
                (false, code, false, 10, 480),
                (false, code, false, 10, 640),
                (false, code, true, 10, 800),
                (false, code, true, 10, 800),
                (false, code, true, 10, 800),
            ]
        );
    }

    /// The digits a peer's RFC 4733 receiver hears in `events`.
    fn heard_digits(start: Instant, events: &[Vec<SentPacket>]) -> Vec<(char, u32)> {
        let mut receiver = DtmfReceiver::new(8000);
        let mut digits = Vec::new();
        for (i, p) in events.iter().flatten().enumerate() {
            let now = start + PTIME * i as u32;
            if let Ok(Some(d)) =
                receiver.on_packet(now, p.sequence, p.timestamp, p.marker, &p.payload)
            {
                digits.push((d.digit, d.duration_ms));
            }
        }
        while let Some(d) = receiver.poll(start + Duration::from_secs(60)) {
            digits.push((d.digit, d.duration_ms));
        }
        digits
    }

    /// "12#" queued on an echoing session, with and without SRTP: every ptime of a digit
    /// carries its telephone-event packet on our stream instead of the echo, and the peer
    /// hears the three digits.
    #[test]
    fn sent_digits_take_the_place_of_the_audio_on_our_stream() {
        let mut random = {
            let mut n = 3u8;
            move |buf: &mut [u8]| {
                for b in buf {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    *b = n;
                }
            }
        };
        for profile in [None, Some(SrtpProfile::AesCm128HmacSha1_80)] {
            let start = Instant::now();
            let mut cfg = config(Codec::Pcmu, 0);
            let mut peer = Peer::new(Codec::Pcmu, 0);
            let mut decrypt = None;
            if let Some(profile) = profile {
                let theirs = CryptoAttribute::generate(1, profile, &mut random);
                let ours = CryptoAttribute::generate(1, profile, &mut random);
                cfg.srtp = Some(SrtpKeys {
                    profile,
                    inbound_key: theirs.key.to_vec(),
                    inbound_salt: theirs.salt.clone(),
                    outbound_key: ours.key.to_vec(),
                    outbound_salt: ours.salt.clone(),
                });
                peer.srtp = Some(SrtpContext::new(profile, &theirs.key, &theirs.salt).unwrap());
                decrypt = Some(SrtpContext::new(profile, &ours.key, &ours.salt).unwrap());
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            let mut sent = run(&mut session, &mut peer, start, 20, |_| false);
            let queued_at = start + PTIME * 20;
            session
                .send_digits(queued_at, "12#", 100, 50)
                .expect("telephone-event negotiated, valid digits");
            assert!(session.is_sending_digits());
            sent.extend(run(&mut session, &mut peer, queued_at, 40, |_| false));
            assert!(!session.is_sending_digits(), "{profile:?}: all digits sent");

            let stream = our_stream(&sent, decrypt.as_mut());
            let events = events_in_stream(&stream);
            assert_eq!(events.len(), 3, "{profile:?}");
            for (event, code) in events.iter().zip([1, 2, 11]) {
                assert_event(event, code);
            }
            // 100 ms tones, 50 ms gaps: one ptime of echo between two digits.
            let starts: Vec<u32> = events.iter().map(|e| e[0].timestamp).collect();
            assert_eq!(starts[1], starts[0].wrapping_add(8 * 160));
            assert_eq!(starts[2], starts[1].wrapping_add(8 * 160));
            let audio = stream.iter().filter(|p| p.payload_type == 0).count();
            assert!(
                audio >= 35,
                "{profile:?}: the echo goes on around the digits"
            );
            assert_eq!(
                heard_digits(start, &events),
                [('1', 100), ('2', 100), ('#', 100)]
            );
            assert_eq!(session.stats().digits_sent, 3);
        }
    }

    /// An idle session sends no audio and has no ticks; digits give it ticks for as long as
    /// they take, then it is quiet again.
    #[test]
    fn an_idle_session_ticks_only_while_it_sends_digits() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let quiet = start + Duration::from_secs(1);
        assert!(session.poll_timeout() > quiet, "no ticks before digits");

        session
            .send_digits(start, "5", 0, 0)
            .expect("default timing");
        let mut sent = Vec::new();
        let mut sent_at = Vec::new();
        let mut out = [0u8; MAX_PACKET];
        let mut turns = 0;
        while session.poll_timeout() < quiet {
            let now = session.poll_timeout();
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit(&mut out) {
                sent.push((t, out[..t.len].to_vec()));
                sent_at.push(now);
            }
            turns += 1;
            assert!(turns < 50, "the session never went quiet");
        }
        assert!(!session.is_sending_digits());
        let stream = our_stream(&sent, None);
        assert_eq!(stream.len(), sent.len(), "nothing but RTP");
        let events = events_in_stream(&stream);
        assert_eq!(events.len(), 1);
        assert_event(&events[0], 5);
        for pair in sent_at.windows(2) {
            assert_eq!(pair[1] - pair[0], PTIME, "one packet per ptime");
        }
        // 100 ms tone, three end packets, then the 50 ms gap: 8 ticks (160 ms) in all.
        assert_eq!(turns, 8);
        assert_eq!(heard_digits(start, &events), [('5', 100)]);
    }

    /// In a conference the digit replaces the mix the member would hear.
    #[test]
    fn a_conference_member_sends_digits_instead_of_its_mix() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        session
            .enter_conference(8000)
            .expect("PCMU joins an 8 kHz room");
        let mix: Vec<i16> = (0..160)
            .map(|i| (4000.0 * (f64::from(i) * 0.785).sin()) as i16)
            .collect();
        let mut captured = [0i16; 160];
        let mut sent = Vec::new();
        let mut out = [0u8; MAX_PACKET];
        for i in 0..30u32 {
            let now = start + PTIME * i;
            if i == 5 {
                session.send_digits(now, "7", 100, 50).expect("valid digit");
            }
            session.capture(now, &mut captured);
            session.play(now, &mix);
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit(&mut out) {
                sent.push((t, out[..t.len].to_vec()));
            }
        }
        let stream = our_stream(&sent, None);
        assert_eq!(stream.len(), 30, "one packet per room tick");
        let events = events_in_stream(&stream);
        assert_eq!(events.len(), 1);
        assert_event(&events[0], 7);
        assert_eq!(heard_digits(start, &events), [('7', 100)]);
    }

    #[test]
    fn digits_are_refused_without_telephone_event_or_with_a_bad_character() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        if let Some(format) = cfg.format.as_mut() {
            format.telephone_event_pt = None;
        }
        let mut session = MediaSession::new(cfg, start).unwrap();
        assert_eq!(
            session.send_digits(start, "1", 100, 50),
            Err(SessionError::NoTelephoneEvent)
        );
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.format = None;
        let mut session = MediaSession::new(cfg, start).unwrap();
        assert_eq!(
            session.send_digits(start, "1", 100, 50),
            Err(SessionError::NoTelephoneEvent)
        );

        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        assert_eq!(
            session.send_digits(start, "12x", 100, 50),
            Err(SessionError::Digits(DtmfError::InvalidDigit {
                digit: 'x',
                index: 2
            }))
        );
        assert!(!session.is_sending_digits());
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let stream = our_stream(&run(&mut session, &mut peer, start, 30, |_| false), None);
        assert!(stream.len() >= 27);
        assert!(
            stream.iter().all(|p| p.payload_type == 0),
            "nothing of a refused string is sent"
        );
        assert_eq!(session.stats().digits_sent, 0);
    }

    #[test]
    fn the_steady_state_echo_path_allocates_nothing() {
        use crate::media::alloc_counter::allocations_during;
        for (codec, pt, srtp) in [
            (Codec::Pcmu, 0, false),
            (Codec::Pcma, 8, true),
            (Codec::G722, 9, false),
        ] {
            let start = Instant::now();
            let mut cfg = config(codec, pt);
            let mut peer = Peer::new(codec, pt);
            if srtp {
                let key = [7u8; 16];
                let salt = [9u8; 14];
                cfg.srtp = Some(SrtpKeys {
                    profile: SrtpProfile::AesCm128HmacSha1_80,
                    inbound_key: key.to_vec(),
                    inbound_salt: salt.to_vec(),
                    outbound_key: key.to_vec(),
                    outbound_salt: salt.to_vec(),
                });
                peer.srtp =
                    Some(SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &key, &salt).unwrap());
            }
            let mut session = MediaSession::new(cfg, start).unwrap();
            // Warm up: the jitter buffer fills, RTCP state starts.
            run(&mut session, &mut peer, start, 50, |_| false);
            let mut packets = Vec::with_capacity(200);
            let mut buf = [0u8; MAX_PACKET];
            for _ in 0..200 {
                let len = peer.frame(&mut buf);
                packets.push((buf, len));
            }
            let mut out = [0u8; MAX_PACKET];
            let mut sent = 0;
            let allocations = allocations_during(|| {
                for (i, (packet, len)) in packets.iter_mut().enumerate() {
                    let now = start + PTIME * (50 + i as u32);
                    session.handle_rtp(now, addr(PEER), packet, *len);
                    session.handle_timeout(now + Duration::from_millis(1));
                    while session.poll_transmit(&mut out).is_some() {
                        sent += 1;
                    }
                    while session.poll_event().is_some() {}
                    let _ = session.stats();
                }
            });
            assert!(sent >= 195, "{codec:?}: {sent}");
            assert_eq!(
                allocations, 0,
                "{codec:?} (srtp: {srtp}) allocated on the packet path"
            );
        }
    }

    #[test]
    fn inband_dtmf_tones_become_digits_when_enabled() {
        use crate::media::tone::{ToneGenerator, ToneLevel};
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.inband_dtmf = true;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut encoder = AudioEncoder::new(Codec::Pcmu).unwrap();
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        let mut seq = 1u16;
        let mut frame_index = 0u32;
        for digit in ['7', '*'] {
            let mut tone =
                ToneGenerator::dtmf(8000, digit, ToneLevel::Dbm0(-10.0), ToneLevel::Dbm0(-10.0))
                    .unwrap();
            // 100 ms of tone, then 100 ms of silence.
            for i in 0..10 {
                let mut pcm = [0i16; 160];
                if i < 5 {
                    tone.fill(&mut pcm);
                }
                let header = RtpHeader {
                    marker: false,
                    payload_type: 0,
                    sequence: seq,
                    timestamp: 160 * frame_index,
                    ssrc: 3,
                    csrcs: &[],
                };
                let h = rtp::write_header(&mut buf, &header).unwrap();
                let len = h + encoder.encode(&pcm, &mut buf[h..]).unwrap();
                let now = start + PTIME * frame_index;
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                session.handle_timeout(now + Duration::from_millis(1));
                while session.poll_transmit(&mut out).is_some() {}
                seq += 1;
                frame_index += 1;
            }
        }
        let digits: String = std::iter::from_fn(|| session.poll_event())
            .filter_map(|e| match e {
                SessionEvent::Digit(d) => Some(d.digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "7*");
    }

    #[test]
    fn silence_on_the_wire_ends_in_one_rtp_timeout_event() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        let mut now = start;
        while now < start + Duration::from_secs(12) {
            now = session.poll_timeout().max(now + Duration::from_millis(1));
            session.handle_timeout(now);
        }
        let timeouts: Vec<SessionEvent> = std::iter::from_fn(|| session.poll_event())
            .filter(|e| matches!(e, SessionEvent::RtpTimeout { .. }))
            .collect();
        assert_eq!(timeouts.len(), 1);
    }

    #[test]
    fn rtcp_reports_go_to_the_rtcp_port_or_the_rtp_port_with_mux() {
        for (remote_rtcp, channel) in [("192.0.2.10:4001", Channel::Rtcp), (PEER, Channel::Rtp)] {
            let start = Instant::now();
            let mut cfg = config(Codec::Pcmu, 0);
            cfg.remote_rtcp = Some(addr(remote_rtcp));
            let mut session = MediaSession::new(cfg, start).unwrap();
            let mut peer = Peer::new(Codec::Pcmu, 0);
            let sent = run(&mut session, &mut peer, start, 500, |_| false);
            let reports: Vec<&(Transmit, Vec<u8>)> =
                sent.iter().filter(|(_, p)| rtp::is_rtcp(p)).collect();
            assert!(!reports.is_empty(), "an RTCP report within 10 s");
            for (t, _) in reports {
                assert_eq!(t.destination, addr(remote_rtcp));
                assert_eq!(t.channel, channel);
            }
        }
    }

    #[test]
    fn idle_sessions_count_but_send_nothing() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.mode = SessionMode::Idle;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let sent = run(&mut session, &mut peer, start, 400, |_| false);
        assert!(sent.is_empty());
        assert_eq!(session.stats().rtp_packets_received, 400);
    }

    #[test]
    fn g722_and_opus_echo_keep_the_tone() {
        for (codec, pt) in [(Codec::G722, 9), (Codec::Opus, 111)] {
            let start = Instant::now();
            let mut session = MediaSession::new(config(codec, pt), start).unwrap();
            let mut peer = Peer::new(codec, pt);
            let sent = run(&mut session, &mut peer, start, 100, |_| false);
            let packets = rtp_only(&sent);
            assert!(packets.len() >= 95, "{codec:?}: {}", packets.len());
            let mut decoder = AudioDecoder::new(codec).unwrap();
            let mut pcm = Vec::new();
            let mut frame = [0i16; MAX_FRAME_SAMPLES];
            for p in &packets {
                let n = decoder
                    .decode(rtp::parse(p).unwrap().payload(), &mut frame)
                    .unwrap();
                pcm.extend_from_slice(&frame[..n]);
            }
            let rate = pcm_rate(codec);
            let tail = &pcm[pcm.len() / 2..];
            let tone = goertzel_power(tail, rate, 1000.0);
            let other = goertzel_power(tail, rate, 2500.0);
            assert!(
                tone > other * 100.0,
                "{codec:?}: 1 kHz dominates ({tone} vs {other})"
            );
        }
    }

    /// Damages one packet of the caller's stream in one of the ways the wire does (or an
    /// attacker would): flipped bits anywhere, truncation, trailing junk, the extension and
    /// padding flags or the CSRC count set over bytes that do not hold them, a foreign payload
    /// type or SSRC, a sequence or timestamp jump. About a third of the packets stay intact.
    fn mangle(buf: &mut [u8], len: usize, random: &mut impl FnMut() -> u64) -> usize {
        let pick =
            |random: &mut dyn FnMut() -> u64, below: usize| (random() % below as u64) as usize;
        match random() % 12 {
            0 | 1 => {
                for _ in 0..=pick(random, 4) {
                    let at = pick(random, len);
                    buf[at] ^= 1 << pick(random, 8);
                }
                len
            }
            2 => pick(random, len),
            3 => {
                let longer = len + pick(random, MAX_PACKET - len);
                for byte in &mut buf[len..longer] {
                    *byte = random() as u8;
                }
                longer
            }
            4 => {
                buf[0] |= 0x10; // extension flag, the payload read as its header
                len
            }
            5 => {
                buf[0] |= 0x20; // padding flag, the last payload byte read as its count
                len
            }
            6 => {
                buf[0] = (buf[0] & 0xf0) | pick(random, 16) as u8; // CSRC count
                len
            }
            7 => {
                buf[1] = (buf[1] & 0x80) | pick(random, 128) as u8; // payload type
                len
            }
            8 => {
                buf[8..12].copy_from_slice(&(random() as u32).to_be_bytes()); // SSRC
                len
            }
            9 => {
                let field = if random() % 2 == 0 { 2..4 } else { 4..8 }; // sequence or timestamp
                for byte in &mut buf[field] {
                    *byte = random() as u8;
                }
                len
            }
            _ => len,
        }
    }

    /// A caller's stream damaged packet by packet for 40 s (the same bytes also arriving
    /// on the RTCP port), through a whole session of each codec, with in-band DTMF detection off
    /// and on: nothing panics, everything the session sends is a packet of its own stream, and
    /// once the caller's packets are whole again the echo comes back with the caller's tone.
    #[test]
    fn a_mangled_stream_never_panics_and_the_echo_recovers() {
        for (codec, pt) in [(Codec::Pcmu, 0), (Codec::G722, 9), (Codec::Opus, 111)] {
            for inband_dtmf in [false, true] {
                let start = Instant::now();
                let mut session = MediaSession::new(
                    SessionConfig {
                        inband_dtmf,
                        ..config(codec, pt)
                    },
                    start,
                )
                .unwrap();
                let mut peer = Peer::new(codec, pt);
                let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(pt);
                let mut random = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut buf = [0u8; MAX_PACKET];
                let mut out = [0u8; MAX_PACKET];
                let frames: u32 = 2000;
                for i in 0..frames {
                    let now = start + PTIME * i;
                    let len = peer.frame(&mut buf);
                    let len = mangle(&mut buf, len, &mut random);
                    let mut copy = buf;
                    session.handle_rtp(now, addr(PEER), &mut buf, len);
                    if i % 5 == 0 {
                        session.handle_rtcp(now, addr("192.0.2.10:4001"), &mut copy, len);
                    }
                    session.handle_timeout(now + Duration::from_millis(1));
                    while let Some(t) = session.poll_transmit(&mut out) {
                        let packet = &out[..t.len];
                        assert!(t.len >= 8 && packet[0] >> 6 == 2, "{codec:?}: {packet:?}");
                        if !rtp::is_rtcp(packet) {
                            let view = rtp::parse(packet).expect("our RTP parses");
                            assert!(
                                view.payload_type() == pt || view.payload_type() == 101,
                                "{codec:?}: sent payload type {}",
                                view.payload_type()
                            );
                        }
                    }
                    while session.poll_event().is_some() {}
                }
                let stats = session.stats();
                assert!(
                    stats.malformed_packets > 0
                        && stats.rtp_packets_received > u64::from(frames) / 2
                        && stats.rtp_packets_sent > u64::from(frames) / 2,
                    "{codec:?}: the damage reached the parser and the session kept working: \
                     {stats:?}"
                );
                let clean = run(&mut session, &mut peer, start + PTIME * frames, 100, |_| {
                    false
                });
                let packets = rtp_only(&clean);
                assert!(packets.len() >= 95, "{codec:?}: {} echoed", packets.len());
                let mut decoder = AudioDecoder::new(codec).unwrap();
                let mut pcm = Vec::new();
                let mut frame = [0i16; MAX_FRAME_SAMPLES];
                for p in &packets[packets.len() / 2..] {
                    let view = rtp::parse(p).unwrap();
                    if view.payload_type() == pt {
                        let n = decoder.decode(view.payload(), &mut frame).unwrap();
                        pcm.extend_from_slice(&frame[..n]);
                    }
                }
                let rate = pcm_rate(codec);
                let tone = goertzel_power(&pcm, rate, 1000.0);
                let other = goertzel_power(&pcm, rate, 2500.0);
                assert!(
                    tone > other * 100.0,
                    "{codec:?}, in-band DTMF {inband_dtmf}: the caller's tone is echoed again \
                     ({tone} vs {other})"
                );
            }
        }
    }
}
