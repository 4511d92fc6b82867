//! One connection's media session: what arrives on its RTP/RTCP sockets, what it plays out
//! every ptime, and what it sends — sans-IO.
//!
//! Owns, per connection: RTP source security (negotiated address, or a one-time NAT latch, never
//! re-latched), SRTP unprotect/protect, sequence tracking, the adaptive jitter buffer, decoding
//! with loss concealment, RFC 4733 digits (received, and sent in place of the audio of their
//! ptimes), RTCP statistics and reports, RTP inactivity, and the session's mode (`Idle`: receive
//! and count; `Echo`: play the caller's audio back to it through the full decode/encode path).
//! Must not: touch sockets, read the clock or allocate after [`MediaSession::new`] (but for the
//! receive buffers the first packet brings, and their rare growth: see `audio`). The worker
//! feeds datagrams and time, and drains [`MediaSession::poll_transmit`] and
//! [`MediaSession::poll_event`].
//!
//! This file holds the public session type, its construction, its deadlines and its output
//! queues. The rest of it lives next door, one `impl MediaSession` per concern:
//! - `config`: what a session is built from ([`SessionConfig`], [`StreamFormat`], keys, errors);
//! - `receive`: the receive path, datagram to decoded frame, and the caller's audio kept for
//!   listeners;
//! - `send`: the playout tick and the send path, frame to RTP packet;
//! - `audio`: the codec state both ways (`AudioPath`);
//! - `digits`: RFC 4733 digits sent in place of audio, and digits received;
//! - `playout`: prompts and tones played instead of the usual audio;
//! - `conference`: the 20 ms conference ticks ([`MediaSession::capture`], [`MediaSession::play`]);
//! - `shared`: a conference's common mix encoded once per format for the members that hear it
//!   ([`SharedEncodes`]), each session sending the payload in its own RTP stream;
//! - `stats`: counters, the RTCP summary and RTCP reports.

mod audio;
mod conference;
mod config;
mod digits;
mod forward;
mod playout;
mod receive;
mod send;
mod shared;
mod stats;

pub use conference::{Relayed, MAX_RELAYED, ROOM_TICK};
pub use config::{
    RtpSource, SessionConfig, SessionError, SessionMode, SrtpKeys, StreamFormat, LEARN_PACKETS,
};
pub use forward::{Forward, ForwardedPacket};
pub use shared::{SharedEncodes, SharedFormat};
pub use stats::{RtcpSummary, SessionStats};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dtmf::{DigitEvent, DtmfReceiver};
use super::player::Player;
use super::prefetch::prefetch;
use super::rtcp::{RtcpConfig, RtcpSession, MAX_COMPOUND_LEN};
use super::srtp::SrtpContext;
use crate::sdp::Codec;
use audio::AudioPath;
use conference::RoomMembership;
use forward::ForwardSource;
use receive::Heard;

/// Largest datagram we build (an MTU's worth): payload + RTP header + SRTP tag.
pub const MAX_PACKET: usize = 1500;

/// Outgoing packets a session can hold between two drains (one audio frame + RTCP + margin).
const TRANSMIT_SLOTS: usize = 4;

/// Transmit slots made with the session: an audio frame and an RTCP report in one turn, the
/// steady state. The others come the first time more are in flight (telephone-events, a
/// worker that drains late) and are kept: an idle call holds two, not four.
const FIRST_SLOTS: usize = 2;

/// Room left after an RTP packet for the SRTP authentication tag (at most 16 bytes: GCM).
const SRTP_ROOM: usize = 16;

/// Room left after an RTCP compound packet for SRTCP's index and tag (4 + at most 16).
const SRTCP_ROOM: usize = 32;

/// An RTP header of our stream (no CSRCs, no extension).
const RTP_HEADER_LEN: usize = 12;

/// Bytes a transmit slot holds for a session sending `format`: the longest packet it builds —
/// an RTCP compound report, or an RTP packet of 60 ms (the longest frame any of its buffers
/// holds) of its codec, at 8 bytes a millisecond for G.711 and G.722 (508 bytes); an Opus
/// packet's size is the encoder's, so its slots keep [`MAX_PACKET`]. Sized by codec, not for
/// the worst case: the worst case was 6 KB of an idle G.711 call's memory (issue 19).
fn transmit_slot_len(format: Option<&StreamFormat>) -> usize {
    let rtcp = MAX_COMPOUND_LEN + SRTCP_ROOM;
    let rtp = match format.map(|f| f.sending().0) {
        Some(Codec::Pcmu | Codec::Pcma | Codec::G722) => RTP_HEADER_LEN + 8 * 60 + SRTP_ROOM,
        Some(_) => MAX_PACKET,
        None => 0,
    };
    rtp.max(rtcp).min(MAX_PACKET)
}

/// Events a session queues between two drains before it drops the oldest.
const EVENT_SLOTS: usize = 16;

/// Room for events the queue is made with (it grows, once, when more are pending at a drain).
const FIRST_EVENT_SLOTS: usize = 4;

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

/// One connection's media.
pub struct MediaSession {
    config: SessionConfig,
    /// Decoding/encoding state; present once a format is negotiated.
    audio: Option<AudioPath>,
    /// The source RTP is accepted from, once decided.
    accepted_source: Option<SocketAddr>,
    /// The address being learned (see [`RtpSource::Learn`]) until it is accepted.
    learning: receive::Learning,
    /// Boxed: 2 KB each inline, and most calls are plain RTP (an idle G.711 call's memory,
    /// scripts/bench-idle-memory).
    srtp_in: Option<Box<SrtpContext>>,
    srtp_out: Option<Box<SrtpContext>>,
    rtcp: RtcpSession,
    /// Made by the first telephone-event packet (300 bytes most calls never use).
    dtmf: Option<Box<DtmfReceiver>>,
    /// Next playout/send tick (Echo mode with a format).
    next_tick: Option<Instant>,
    last_rtp_at: Instant,
    timeout_reported: bool,
    first_packet_seen: bool,
    transmits: VecDeque<(Channel, SocketAddr, usize, Box<[u8]>)>,
    /// Empty packet buffers of [`transmit_slot_len`] bytes, reused ([`FIRST_SLOTS`] made at
    /// construction, up to [`TRANSMIT_SLOTS`] as needed: [`MediaSession::take_slot`]). Boxed so
    /// that moving a buffer between this list and `transmits` moves a pointer, not the packet.
    spare: Vec<Box<[u8]>>,
    /// Transmit slots made so far, and their length.
    slots_made: u8,
    slot_len: u16,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,
    /// The conference this session is in; it then plays out only when the conference ticks.
    /// Boxed, as `player`: few sessions have one, and every session's inline size is an idle
    /// call's memory.
    room: Option<Box<RoomMembership>>,
    /// Whether the caller's packets are forwarded as they arrive (a hairpin member, an echo),
    /// and those dropped as late.
    forward: ForwardSource,
    /// A prompt or tone played instead of the session's usual audio (operation id, player).
    player: Option<(u64, Box<Player>)>,
    /// The caller's decoded audio, kept for the worker while something listens (recording,
    /// silence detection).
    heard: Option<Heard>,
    /// What the session sent, one frame per ptime of our stream (silence where it sent nothing
    /// or a telephone-event), kept for a two-channel recording.
    spoken: Option<Heard>,
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
                        .map(Box::new)
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
        let slot_len = transmit_slot_len(config.format.as_ref());
        let mut spare = Vec::with_capacity(TRANSMIT_SLOTS);
        spare.extend((0..FIRST_SLOTS).map(|_| vec![0u8; slot_len].into_boxed_slice()));
        Ok(MediaSession {
            accepted_source: None,
            learning: receive::Learning::default(),
            srtp_in,
            srtp_out,
            rtcp,
            dtmf: None,
            next_tick,
            last_rtp_at: now,
            timeout_reported: false,
            first_packet_seen: false,
            transmits: VecDeque::with_capacity(TRANSMIT_SLOTS),
            spare,
            slots_made: FIRST_SLOTS as u8,
            slot_len: slot_len as u16,
            events: VecDeque::new(),
            stats: SessionStats::default(),
            room: None,
            forward: ForwardSource::default(),
            player: None,
            heard: None,
            spoken: None,
            audio,
            config,
        })
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
        if let Some(digit) = self.dtmf.as_mut().and_then(|dtmf| dtmf.poll(now)) {
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
    ///
    /// A session that ticks is due at its next tick only (or earlier for a digit's end): its
    /// RTCP report and its RTP timeout are served by the first tick at or after them, at most
    /// one ptime late — RFC 3550 §6.3 spreads the report interval over 0.5–1.5 of itself
    /// anyway. So its worker wakes only on its tick grids: a report due between ticks made a
    /// wake-up of its own, about one a second for every five calls (at 2,000 echo calls each
    /// worker woke 340 times a second where its four grids take 200).
    pub fn poll_timeout(&self) -> Instant {
        let digit_end = self.dtmf.as_ref().and_then(|dtmf| dtmf.poll_timeout());
        if let Some(tick) = self.next_tick {
            return digit_end.map_or(tick, |end| end.min(tick));
        }
        let mut at =
            self.last_rtp_at + self.config.rtp_timeout.unwrap_or(Duration::from_secs(3600));
        if self.timeout_reported {
            at = self.last_rtp_at + Duration::from_secs(3600);
        }
        if self.sends_media() {
            at = at.min(self.rtcp.poll_timeout());
        }
        if let Some(end) = digit_end {
            at = at.min(end);
        }
        at
    }

    /// Asks the CPU to fetch what the next tick reads outside the session itself (the jitter
    /// buffer's next frame, the packet buffer it will be sent from), for a worker that runs
    /// this session next and wants its memory cached by then ([`crate::media::prefetch`]).
    pub fn prefetch_tick(&self) {
        if let Some(audio) = &self.audio {
            audio.jitter.prefetch_next();
        }
        if let Some(buffer) = self.spare.last() {
            prefetch(&**buffer);
        }
    }

    /// An empty transmit slot: a spare one, or a new one while fewer than
    /// [`TRANSMIT_SLOTS`] exist; None when all are queued (the worker is not draining).
    pub(super) fn take_slot(&mut self) -> Option<Box<[u8]>> {
        if let Some(buf) = self.spare.pop() {
            return Some(buf);
        }
        if usize::from(self.slots_made) >= TRANSMIT_SLOTS {
            return None;
        }
        self.slots_made += 1;
        Some(vec![0u8; usize::from(self.slot_len)].into_boxed_slice())
    }

    /// Whether packets wait for [`MediaSession::poll_transmit`].
    pub fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next packet to send, copied into `out`.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<Transmit> {
        let (channel, destination, len, buf) = self.transmits.pop_front()?;
        let len = len.min(out.len());
        out[..len].copy_from_slice(&buf[..len]);
        // Buffers beyond the slots made (a drain's, `forward`) are given back.
        if self.spare.len() + self.transmits.len() < usize::from(self.slots_made) {
            self.spare.push(buf);
        }
        Some(Transmit {
            channel,
            destination,
            len,
        })
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// New peer address (re-INVITE, ModifyConnection). A changed address is a new peer: the
    /// latch is cleared so the new address is accepted.
    pub fn set_remote(&mut self, remote_rtp: Option<SocketAddr>, remote_rtcp: Option<SocketAddr>) {
        let remote_rtp = remote_rtp.map(canonical);
        if remote_rtp != self.config.remote_rtp.map(canonical) {
            self.accepted_source = None;
            self.learning = receive::Learning::default();
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

    fn push_event(&mut self, event: SessionEvent) {
        if self.events.len() == EVENT_SLOTS {
            self.events.pop_front();
        }
        if self.events.capacity() == 0 {
            // Made with the first event, for the few a worker turn sees (a first packet, a
            // digit): a session holds 160 bytes of queue, not 640 for the most it may keep.
            self.events.reserve_exact(FIRST_EVENT_SLOTS);
        }
        self.events.push_back(event);
    }
}

/// The first instant after `now` on the grid `epoch + k * ptime`.
pub(crate) fn aligned_tick(epoch: Instant, now: Instant, ptime: Duration) -> Instant {
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

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::*;

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

    /// The echo as its tick plays it out and, for G.711, as it sends each packet back as it
    /// arrives (`forward_on_arrival`).
    #[test]
    fn the_steady_state_echo_path_allocates_nothing() {
        use crate::media::alloc_counter::allocations_during;
        for (codec, pt, srtp, forward_on_arrival) in [
            (Codec::Pcmu, 0, false, false),
            (Codec::Pcma, 8, true, false),
            (Codec::G722, 9, false, false),
            (Codec::Pcmu, 0, false, true),
            (Codec::Pcma, 8, true, true),
        ] {
            let start = Instant::now();
            let mut cfg = config(codec, pt);
            cfg.forward_on_arrival = forward_on_arrival;
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
            assert_eq!(session.is_forwarding(), forward_on_arrival);
            assert_eq!(
                allocations, 0,
                "{codec:?} (srtp: {srtp}, forwarding: {forward_on_arrival}) allocated on the packet path"
            );
        }
    }

    /// Every heap buffer a session holds, by name and length in bytes.
    fn buffers(session: &MediaSession) -> Vec<(&'static str, usize)> {
        let mut held: Vec<(&'static str, usize)> = session
            .spare
            .iter()
            .map(|b| ("transmit slot", b.len()))
            .collect();
        held.push((
            "event queue",
            session.events.capacity() * std::mem::size_of::<SessionEvent>(),
        ));
        if let Some(audio) = &session.audio {
            held.extend([
                ("payload", audio.payload.len()),
                ("fec payload", audio.fec_payload.len()),
                ("decoded frame", audio.pcm.len() * 2),
                ("sent frame", audio.resampled.len() * 2),
                ("jitter payloads", audio.jitter.payload_room()),
            ]);
        }
        held
    }

    /// Runs a session that receives nothing for `length` from `start`; returns when it
    /// stopped and how many RTCP reports it sent (an idle echo sends nothing else).
    fn idle(session: &mut MediaSession, start: Instant, length: Duration) -> (Instant, usize) {
        let mut out = [0u8; MAX_PACKET];
        let mut now = start;
        let mut reports = 0;
        while now < start + length {
            now = session.poll_timeout().max(now + Duration::from_millis(1));
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit(&mut out) {
                assert!(rtp::is_rtcp(&out[..t.len]), "an idle echo sends only RTCP");
                reports += 1;
            }
        }
        (now, reports)
    }

    #[test]
    fn an_idle_g711_session_holds_no_receive_buffers_and_small_transmit_slots() {
        // Issue 19: an idle established G.711 call's memory (scripts/bench-idle-memory).
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), start).unwrap();
        // Idle: ticks and an RTCP report, no RTP received.
        let (now, reports) = idle(&mut session, start, Duration::from_secs(12));
        assert!(reports > 0, "RTCP reports go out of a transmit slot");
        let held = buffers(&session);
        assert_eq!(
            held.iter().filter(|(n, _)| *n == "transmit slot").count(),
            FIRST_SLOTS,
            "an idle session holds the slots made with it"
        );
        for (name, len) in &held {
            let most = match *name {
                // 12-byte header, 60 ms of G.711 (480), SRTP tag (16).
                "transmit slot" => 508,
                // Made by the first event (here the RTP timeout): four of 40 bytes.
                "event queue" => 160,
                // Prompts, conferences and transcoding bring it with their first frame.
                _ => 0,
            };
            assert!(*len <= most, "{name}: {len} bytes before the first packet");
        }
        // The first packet brings the receive side's buffers, sized by the codec and ptime.
        let mut peer = Peer::new(Codec::Pcmu, 0);
        run(&mut session, &mut peer, now, 10, |_| false);
        let held = buffers(&session);
        for (name, len) in [
            ("payload", 160),
            ("fec payload", 0),
            ("decoded frame", 960),
            ("sent frame", 0),
            ("jitter payloads", 160),
        ] {
            assert!(held.contains(&(name, len)), "{name}: {held:?}");
        }
        // A prompt needs the sent frame: 60 ms at 8 kHz.
        let tone = crate::media::player::PlaySource::Tone {
            frequencies: [440.0, 0.0],
            amplitudes: [3000.0, 0.0],
            duration: Some(Duration::from_millis(100)),
        };
        session.start_playout(now, 1, tone, 1.0);
        session.handle_timeout(session.poll_timeout());
        assert!(buffers(&session).contains(&("sent frame", 960)));
    }

    #[test]
    fn an_idle_opus_session_holds_no_codec_state_until_its_first_packet() {
        let start = Instant::now();
        let mut session = MediaSession::new(config(Codec::Opus, 111), start).unwrap();
        let (now, _) = idle(&mut session, start, Duration::from_secs(2));
        let audio = session.audio.as_ref().expect("a format");
        assert!(audio.decoder.is_none(), "no libopus decoder while idle");
        assert!(audio.encoder.is_none(), "no libopus encoder while idle");
        // The first packets bring both, and the echo is Opus of the caller's tone.
        let mut peer = Peer::new(Codec::Opus, 111);
        let sent = run(&mut session, &mut peer, now, 25, |_| false);
        let audio = session.audio.as_ref().expect("a format");
        assert!(audio.decoder.is_some() && audio.encoder.is_some());
        let echoed = rtp_only(&sent);
        assert!(echoed.len() >= 15, "{} echoed", echoed.len());
        let mut decoder = AudioDecoder::new(Codec::Opus).unwrap();
        let mut pcm = vec![0i16; 5760];
        let mut heard = Vec::new();
        for packet in &echoed {
            let rtp = rtp::parse(packet).unwrap();
            let n = decoder.decode(rtp.payload(), &mut pcm).unwrap();
            heard.extend_from_slice(&pcm[..n]);
        }
        let tail = &heard[heard.len() / 2..];
        assert!(
            goertzel_power(tail, 48_000, 1000.0) > goertzel_power(tail, 48_000, 2300.0) * 50.0,
            "the caller's 1 kHz tone comes back"
        );
    }

    #[test]
    fn opus_plans_its_fec_for_the_loss_the_far_end_reports() {
        let start = Instant::now();
        let mut cfg = config(Codec::Opus, 111);
        if let Some(format) = cfg.format.as_mut() {
            format.peer_opus.use_inband_fec = true;
        }
        let mut session = MediaSession::new(cfg, start).unwrap();
        // The caller: a tone rising and falling three times a second, which libopus's VAD
        // keeps calling speech (a steady tone stops looking like it within a second).
        let mut caller = AudioEncoder::new(Codec::Opus).unwrap();
        let mut frame = 0u32;
        // Echoes `n` frames; how many of the echoed packets' SILK layers carry the previous
        // frame again (the LBRR flag after the VAD flag, RFC 6716 §4.2.3), and of how many.
        let mut echo = |session: &mut MediaSession, n: u32| {
            let (mut fec, mut echoed) = (0, 0);
            let mut buf = [0u8; MAX_PACKET];
            let mut out = [0u8; MAX_PACKET];
            for _ in 0..n {
                let now = start + PTIME * frame;
                let pcm: Vec<i16> = (0..960u32)
                    .map(|i| {
                        let t = f64::from(frame * 960 + i) / 48_000.0;
                        let swell = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
                        (8000.0 * swell * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                    })
                    .collect();
                let header = RtpHeader {
                    marker: false,
                    payload_type: 111,
                    sequence: frame as u16,
                    timestamp: frame * 960,
                    ssrc: 0xabcd_0001,
                    csrcs: &[],
                };
                let h = rtp::write_header(&mut buf, &header).unwrap();
                let len = h + caller.encode(&pcm, &mut buf[h..]).unwrap();
                session.handle_rtp(now, addr(PEER), &mut buf, len);
                session.handle_timeout(now + Duration::from_millis(1));
                while let Some(t) = session.poll_transmit(&mut out) {
                    if t.channel == Channel::Rtp && !rtp::is_rtcp(&out[..t.len]) {
                        let payload = rtp::parse(&out[..t.len]).unwrap().payload();
                        echoed += 1;
                        if payload[0] >> 3 < 16 && payload.get(1).is_some_and(|b| b & 0x40 != 0) {
                            fec += 1;
                        }
                    }
                }
                frame += 1;
            }
            (fec, echoed)
        };
        // An RR about our SSRC (0x11112222) losing `fraction` / 256 of it.
        let report = |session: &mut MediaSession, fraction: u8, at: u32| {
            let mut rr = vec![0x81, 201, 0, 7];
            rr.extend_from_slice(&0xabcd_0001u32.to_be_bytes());
            rr.extend_from_slice(&0x1111_2222u32.to_be_bytes());
            rr.extend_from_slice(&[fraction, 0, 0, 10]);
            rr.extend_from_slice(&[0; 16]);
            let len = rr.len();
            session.handle_rtcp(start + PTIME * at, addr("192.0.2.10:4001"), &mut rr, len);
        };
        // Before any report: our plan of 5 %, which at 24 kb/s leaves fullband no room for FEC.
        let (fec, echoed) = echo(&mut session, 50);
        assert!(echoed >= 40 && fec == 0, "{fec} of {echoed}");
        // The far end reports losing a quarter of our stream: FEC on nearly every packet.
        report(&mut session, 64, 50);
        let (fec, echoed) = echo(&mut session, 50);
        assert!(
            fec >= echoed * 3 / 4,
            "25 % loss: {fec} of {echoed} carry FEC"
        );
        // The loss gone, so is the FEC.
        report(&mut session, 0, 100);
        let (fec, echoed) = echo(&mut session, 50);
        assert!(fec <= 2, "no loss: {fec} of {echoed}");
        assert_eq!(session.stats().rtcp_packets_received, 2);
    }

    #[test]
    fn transmit_slots_are_made_as_needed_up_to_the_limit_and_then_reused() {
        let mut session = MediaSession::new(config(Codec::Pcmu, 0), Instant::now()).unwrap();
        let taken: Vec<Box<[u8]>> = (0..TRANSMIT_SLOTS)
            .map(|_| {
                session
                    .take_slot()
                    .expect("a slot while fewer than the limit exist")
            })
            .collect();
        assert!(taken.iter().all(|b| b.len() == 508));
        assert!(session.take_slot().is_none(), "all queued: none more");
        session.spare.extend(taken);
        for _ in 0..3 {
            let slot = session.take_slot().expect("a spare one");
            session.spare.push(slot);
        }
        assert_eq!(usize::from(session.slots_made), TRANSMIT_SLOTS);
        assert_eq!(session.spare.len(), TRANSMIT_SLOTS);
    }

    #[test]
    fn transmit_slots_hold_the_longest_packet_of_their_codec_or_rtcp_report() {
        let format = |codec| {
            Some(StreamFormat {
                codec,
                payload_type: 0,
                ptime_ms: 20,
                telephone_event_pt: Some(101),
                send: None,
                peer_opus: crate::sdp::OpusParams::RFC_DEFAULTS,
            })
        };
        let rtcp = MAX_COMPOUND_LEN + SRTCP_ROOM;
        assert_eq!(transmit_slot_len(None), rtcp, "no format: RTCP only");
        assert_eq!(transmit_slot_len(format(Codec::Pcmu).as_ref()), 508);
        assert_eq!(transmit_slot_len(format(Codec::G722).as_ref()), 508);
        assert_eq!(transmit_slot_len(format(Codec::Opus).as_ref()), MAX_PACKET);
        // A G.711 stream with SRTP (GCM: the longest tag) and the longest CNAME still gets
        // its reports out.
        let start = Instant::now();
        let mut cfg = config(Codec::Pcma, 8);
        cfg.cname = "c".repeat(255);
        let key = [7u8; 16];
        let salt = [9u8; 14];
        cfg.srtp = Some(SrtpKeys {
            profile: SrtpProfile::AeadAes128Gcm,
            inbound_key: key.to_vec(),
            inbound_salt: salt[..12].to_vec(),
            outbound_key: key.to_vec(),
            outbound_salt: salt[..12].to_vec(),
        });
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut out = [0u8; MAX_PACKET];
        let mut now = start;
        let mut longest = 0;
        while now < start + Duration::from_secs(12) {
            now = session.poll_timeout().max(now + Duration::from_millis(1));
            session.handle_timeout(now);
            while let Some(t) = session.poll_transmit(&mut out) {
                longest = longest.max(t.len);
            }
        }
        assert!(
            longest > 255,
            "an SRTCP report with the CNAME went out ({longest})"
        );
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
}
