//! The receive path of a session: a datagram from the RTP or RTCP socket to a decoded frame,
//! and the caller's audio kept for listeners (recording, silence detection).
//!
//! Owns: source security (negotiated address or one-time latch), SRTP unprotect, parsing,
//! telephone-event routing to the DTMF receiver, the jitter buffer push (or, for a forwarding
//! hairpin member, the packet handed back as a [`super::Forward`]; a forwarding echo's goes
//! back to `forward`), decoding with loss concealment and Opus FEC, in-band DTMF detection,
//! and the `Heard` buffer.
//! Must not: send anything itself, or allocate per packet (the `Heard` buffer is allocated
//! once, when listening is switched on). Bad input is counted (`malformed_packets`,
//! `srtp_rejected`, `foreign_source_dropped`), never a panic.

use std::net::SocketAddr;
use std::time::Instant;

use super::config::{RtpSource, LEARN_PACKETS};
use super::send::Outgoing;
use super::{canonical, Forward, ForwardedPacket, MediaSession, SessionEvent, SessionMode};
use crate::media::codec::{self, pcm_rate, AudioDecoder};
use crate::media::dtmf::DigitEvent;
use crate::media::jitter::Playout;
use crate::media::opus;
use crate::media::rtp::{self};

impl MediaSession {
    /// A datagram that arrived on the RTP socket (RTCP too, when multiplexed).
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<Forward> {
        let len = len.min(buf.len());
        if rtp::is_rtcp(&buf[..len]) {
            self.handle_rtcp(now, source, buf, len);
            return None;
        }
        let source = canonical(source);
        // Before SRTP authentication only the fixed header is trusted enough to read the
        // payload type; the packet is parsed once, after unprotect.
        if len < rtp::RTP_FIXED_HEADER_LEN || buf[0] >> 6 != rtp::RTP_VERSION {
            self.stats.malformed_packets += 1;
            return None;
        }
        let payload_type = buf[1] & 0x7f;
        if !self.source_allowed(source, payload_type) {
            self.stats.foreign_source_dropped += 1;
            return None;
        }
        let len = match self.srtp_in.as_mut() {
            Some(ctx) => match ctx.unprotect_rtp(buf, len) {
                Ok(n) => n,
                Err(_) => {
                    self.stats.srtp_rejected += 1;
                    return None;
                }
            },
            None => len,
        };
        let Ok(packet) = rtp::parse(&buf[..len]) else {
            self.stats.malformed_packets += 1;
            return None;
        };
        // Authenticated (or no SRTP) and well formed: only now may the source be learned.
        if !self.settle_source(source, packet.ssrc(), packet.sequence()) {
            return None;
        }
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
        // Forwarding stops when the session can no longer pass the caller's packets on.
        let forwarding = if self.is_forwarding() {
            let codec = self.forward_source();
            if codec.is_none() {
                self.stop_forwarding();
            }
            codec
        } else {
            None
        };
        let audio = self.audio.as_mut()?;
        if Some(packet.payload_type()) == audio.format.telephone_event_pt {
            let rate = audio.format.codec.clock_rate();
            let dtmf = self
                .dtmf
                .get_or_insert_with(|| Box::new(crate::media::dtmf::DtmfReceiver::new(rate)));
            match dtmf.on_packet(
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
            return None;
        }
        if packet.payload_type() != audio.format.payload_type {
            self.stats.malformed_packets += 1;
            return None;
        }
        if let Some(codec) = forwarding {
            self.forward.handed_on(now);
            if self.room.is_none() {
                // An echo: back to the caller now.
                let forwarded = ForwardedPacket::of(&packet);
                self.echo_arrived(now, codec, forwarded);
                return None;
            }
            return Some(Forward::of(codec, &packet, false));
        }
        if self.config.mode == SessionMode::Idle && self.room.is_none() && self.heard.is_none() {
            // Nobody plays or listens to this audio: counted above, not buffered.
            return None;
        }
        match self.buffer(now, ForwardedPacket::of(&packet)) {
            // Too late for its tick, but the stream is behind, not reordered: forwarded.
            Some(true) => self.forward_late(now, &packet),
            _ => None,
        }
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
            Ok(info) => {
                self.stats.rtcp_packets_received += 1;
                if let (Some(block), Some(audio)) = (info.report_about_us, self.audio.as_mut()) {
                    // The far end's loss of our stream, rounded up: any loss plans for some.
                    let percent = (u16::from(block.fraction_lost) * 100).div_ceil(256);
                    audio.expected_loss = Some(percent as u8);
                    if let Some(encoder) = audio.encoder.as_mut() {
                        encoder.set_expected_loss(percent as u8);
                    }
                }
            }
            Err(_) => self.stats.malformed_packets += 1,
        }
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

    /// Keeps (or stops keeping) what the session sends, for [`MediaSession::take_spoken`]: the
    /// other channel of a two-channel recording. One frame per ptime of our stream: the audio
    /// encoded, or silence where nothing (or a telephone-event) took the ptime. Allocates the
    /// buffer (200 ms) when switched on.
    pub fn set_keeping_sent(&mut self, on: bool) {
        match (on, self.spoken.is_some()) {
            (true, false) => {
                let rate = self.sent_rate();
                self.spoken = Some(Heard {
                    samples: vec![0; (rate / 5) as usize].into_boxed_slice(),
                    len: 0,
                    dropped: 0,
                });
            }
            (false, true) => self.spoken = None,
            _ => {}
        }
    }

    /// Hands what the session sent since the last call to `consume` (samples at `rate`), then
    /// forgets it. Nothing when not keeping it or nothing new.
    pub fn take_spoken(&mut self, mut consume: impl FnMut(&[i16], u32)) {
        let rate = self.sent_rate();
        if let Some(spoken) = self.spoken.as_mut() {
            if spoken.len > 0 {
                consume(&spoken.samples[..spoken.len], rate);
                spoken.len = 0;
            }
        }
    }

    /// The PCM rate of the codec we send.
    fn sent_rate(&self) -> u32 {
        self.audio
            .as_ref()
            .map_or(8000, |a| pcm_rate(a.format.sending().0))
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

    /// Source security, before the packet is authenticated or parsed: the accepted source
    /// once there is one; until then the SDP address, and — when learning — any address that
    /// sends a negotiated payload type.
    pub(super) fn source_allowed(&self, source: SocketAddr, payload_type: u8) -> bool {
        if let Some(accepted) = self.accepted_source {
            return accepted == source;
        }
        if self.config.remote_rtp.map(canonical) == Some(source) {
            return true;
        }
        if self.config.source == RtpSource::Strict {
            return false;
        }
        match &self.audio {
            Some(a) => {
                payload_type == a.format.payload_type
                    || Some(payload_type) == a.format.telephone_event_pt
            }
            // Nothing negotiated yet: nothing to learn from.
            None => false,
        }
    }

    /// Whether a packet that passed [`Self::source_allowed`] (and SRTP) may be used: always
    /// once a source is accepted. Otherwise this decides: the SDP address, or an
    /// authenticated SRTP packet, is accepted at once; another address is learned after
    /// [`LEARN_PACKETS`] packets in sequence from one SSRC, and its packets until then are
    /// dropped (uncounted: 40 ms of a NAT'd caller's first audio).
    pub(super) fn settle_source(&mut self, source: SocketAddr, ssrc: u32, sequence: u16) -> bool {
        if self.accepted_source.is_some() {
            return true;
        }
        let announced = self.config.remote_rtp.map(canonical) == Some(source);
        if announced || self.srtp_in.is_some() {
            self.accept_source(source);
            return true;
        }
        if self.learning.heard(source, ssrc, sequence) >= LEARN_PACKETS {
            self.learning = Learning::default();
            self.accept_source(source);
            return true;
        }
        false
    }

    fn accept_source(&mut self, source: SocketAddr) {
        self.accepted_source = Some(source);
        if self.config.remote_rtp.map(canonical) != Some(source) {
            self.push_event(SessionEvent::Latched { source });
        }
    }

    /// Takes one ptime of the caller's audio out of the jitter buffer and decodes it (or
    /// conceals a loss) into `audio.pcm`, at the received codec's rate. None when nothing is
    /// playing (before the first packet, between talkspurts) or no format is negotiated.
    /// Reports a digit when in-band detection hears one. `listener`: see
    /// [`MediaSession::capture_listener`].
    pub(super) fn pull_frame(&mut self, now: Instant, listener: bool) -> Option<usize> {
        let pulled = self.decode_next(now, listener);
        self.keep_heard(pulled);
        pulled
    }

    /// [`MediaSession::pull_frame`] for a frame already out of the jitter buffer.
    pub(super) fn pull_popped(&mut self, playout: Playout, listener: bool) -> Option<usize> {
        let pulled = self.decode_popped(playout, listener);
        self.keep_heard(pulled);
        pulled
    }

    /// What was pulled (`audio.pcm[..n]`, or a ptime of silence) to what is kept of the
    /// caller's audio, when something keeps it.
    fn keep_heard(&mut self, pulled: Option<usize>) {
        if let (Some(heard), Some(audio)) = (self.heard.as_mut(), self.audio.as_ref()) {
            match pulled {
                Some(n) => heard.push(Some(&audio.pcm[..n]), n),
                None => heard.push(None, audio.frame_samples),
            }
        }
    }

    /// The jitter buffer's next frame, decoded (or concealed) into `audio.pcm`.
    pub(super) fn decode_next(&mut self, now: Instant, listener: bool) -> Option<usize> {
        let audio = self.audio.as_mut()?;
        audio.fit_receive();
        let playout = audio.jitter.pop(now, &mut audio.payload[..]);
        self.decode_popped(playout, listener)
    }

    /// Echo's next frame: as it arrived (`Outgoing::Payload`, in `audio.payload`) when nothing
    /// needs it decoded — a stateless codec (G.711) received and sent in the same format, a
    /// whole frame, no in-band digit detection and no recording of either direction — else
    /// decoded as [`MediaSession::pull_frame`] does. A lost frame is always concealed in PCM.
    pub(super) fn next_echo_frame(&mut self, now: Instant) -> Option<Outgoing> {
        let passes = self.heard.is_none()
            && self.spoken.is_none()
            && self.audio.as_ref().is_some_and(|a| a.passes_through());
        if passes {
            let audio = self.audio.as_mut()?;
            audio.fit_receive();
            let playout = audio.jitter.pop(now, &mut audio.payload[..]);
            if let Playout::Frame { len, .. } = playout {
                if len == audio.frame_samples {
                    return Some(Outgoing::Payload(len));
                }
            }
            // Same codec both ways: no resampling.
            return self.decode_popped(playout, false).map(Outgoing::Decoded);
        }
        let samples = self.pull_frame(now, false)?;
        let audio = self.audio.as_mut()?;
        if audio.resampler.is_none() {
            return Some(Outgoing::Decoded(samples));
        }
        // Transcoding between rates: the frame is resampled to the sent codec's rate.
        audio.fit_send();
        let r = audio.resampler.as_mut()?;
        Some(Outgoing::Resampled {
            len: r.process(&audio.pcm[..samples], &mut audio.resampled[..]),
            audio_rate: audio.widest_decoded,
        })
    }

    /// A frame the jitter buffer gave (or the lack of one), decoded or concealed into
    /// `audio.pcm`; None when it played silence. A `listener`'s Opus frame its sender marked
    /// inactive is left undecoded, unless the session records or detects in-band digits.
    fn decode_popped(&mut self, playout: Playout, listener: bool) -> Option<usize> {
        let audio = self.audio.as_mut()?;
        let Some(decoder) = audio.decoder.as_mut() else {
            // Only when the decoder could not be made (`fit_receive`): nothing to play.
            if matches!(playout, Playout::Frame { .. }) {
                self.stats.decode_errors += 1;
            }
            return None;
        };
        let mut inband_digit = None;
        let skip_inactive = listener && audio.inband.is_none() && self.heard.is_none();
        if let AudioDecoder::Opus(opus) = decoder {
            match playout {
                Playout::Frame { len, .. }
                    if skip_inactive && opus::packet_is_inactive(&audio.payload[..len]) =>
                {
                    // A listener's frame its own sender called inactive: nothing the room
                    // would mix, and talker detection needs no level to tell (see
                    // `capture_listener`). Silence, and the decoder starts afresh later.
                    audio.decoder_stale = true;
                    self.stats.inactive_skipped += 1;
                    return None;
                }
                // No concealment from a state that skipped frames: silence.
                Playout::Conceal { .. } if audio.decoder_stale => return None,
                Playout::Frame { .. } if audio.decoder_stale => {
                    audio.decoder_stale = false;
                    if opus.reset().is_err() {
                        self.stats.decode_errors += 1;
                    }
                }
                _ => {}
            }
        }
        let samples = match playout {
            Playout::Frame { len, .. } => {
                match decoder.decode(&audio.payload[..len], &mut audio.pcm[..]) {
                    Ok(n) => {
                        // RFC 7587 §6.1: what the peer said it captures bounds what it sends
                        // (a 16 kHz microphone behind a fullband encoder).
                        let band = codec::audio_rate(audio.format.codec, &audio.payload[..len])
                            .min(audio.format.peer_opus.sprop_max_capture_rate);
                        audio.widest_decoded = audio.widest_decoded.max(band);
                        if let Some(detector) = audio.inband.as_mut() {
                            inband_digit = detector.push(&audio.pcm[..n]);
                        }
                        n
                    }
                    Err(_) => {
                        self.stats.decode_errors += 1;
                        decoder.conceal(audio.frame_samples, &mut audio.pcm[..])
                    }
                }
            }
            Playout::Conceal { timestamp } => {
                // Opus carries the lost frame's FEC in the next packet: use it when it is here.
                let next = if decoder.has_fec() {
                    audio
                        .jitter
                        .peek_after(timestamp, &mut audio.fec_payload[..])
                } else {
                    None
                };
                match next {
                    Some(len) => {
                        self.stats.fec_recovered += 1;
                        decoder.recover(
                            &audio.fec_payload[..len],
                            audio.frame_samples,
                            &mut audio.pcm[..],
                        )
                    }
                    None => decoder.conceal(audio.frame_samples, &mut audio.pcm[..]),
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
                ended_by: crate::media::dtmf::EndedBy::EndBit,
            });
        }
        Some(samples)
    }
}

/// Audio since the worker last took it: the caller's, decoded, at the received codec's PCM
/// rate; or what we sent, at the sent codec's.
pub(super) struct Heard {
    pub(super) samples: Box<[i16]>,
    pub(super) len: usize,
    /// Samples dropped because the worker did not take them in time.
    pub(super) dropped: u64,
}

impl Heard {
    /// Appends `n` samples: `pcm` (its first `n`), or silence; what does not fit is dropped
    /// and counted.
    pub(super) fn push(&mut self, pcm: Option<&[i16]>, n: usize) {
        let take = n.min(self.samples.len() - self.len);
        let room = &mut self.samples[self.len..self.len + take];
        match pcm {
            Some(pcm) => room.copy_from_slice(&pcm[..take.min(pcm.len())]),
            None => room.fill(0),
        }
        self.len += take;
        self.dropped += (n - take) as u64;
    }
}

/// The addresses being learned, each with the packets in sequence it has sent so far. Several
/// are followed at once, so packets sprayed from elsewhere cannot keep resetting the real
/// peer's count; when all slots are taken, the one with the fewest packets gives way.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Learning {
    candidates: [Option<Candidate>; 4],
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    source: SocketAddr,
    ssrc: u32,
    next_sequence: u16,
    count: u8,
}

impl Learning {
    /// Notes a packet; returns how many packets in sequence its source has now sent.
    fn heard(&mut self, source: SocketAddr, ssrc: u32, sequence: u16) -> u8 {
        let slot = match self
            .candidates
            .iter()
            .position(|c| c.is_some_and(|c| c.source == source))
        {
            Some(i) => i,
            None => self
                .candidates
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.map_or(0, |c| c.count))
                .map_or(0, |(i, _)| i),
        };
        let count = match self.candidates[slot] {
            Some(c) if c.source == source && c.ssrc == ssrc && c.next_sequence == sequence => {
                c.count.saturating_add(1)
            }
            _ => 1,
        };
        self.candidates[slot] = Some(Candidate {
            source,
            ssrc,
            next_sequence: sequence.wrapping_add(1),
            count,
        });
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::session::test_support::*;

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

    /// A session learning its source, whose peer announced a private address in SDP.
    fn learning_session(start: Instant) -> MediaSession {
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.remote_rtp = Some(addr("10.0.0.5:4000"));
        cfg.source = RtpSource::Learn;
        MediaSession::new(cfg, start).unwrap()
    }

    fn latched(session: &mut MediaSession) -> Vec<SocketAddr> {
        std::iter::from_fn(|| session.poll_event())
            .filter_map(|e| match e {
                SessionEvent::Latched { source } => Some(source),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_source_behind_nat_is_learned_once_and_never_relearned() {
        let start = Instant::now();
        let mut session = learning_session(start);
        let (mut peer, mut attacker) = (Peer::new(Codec::Pcmu, 0), Peer::new(Codec::Pcmu, 0));
        attacker.seq = 40_000;
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        let nat = addr("203.0.113.9:31000");
        let intruder = addr("203.0.113.66:31000");
        let mut echoed = 0;
        for i in 0..50u32 {
            let now = start + PTIME * i;
            let len = peer.frame(&mut buf);
            session.handle_rtp(now, nat, &mut buf, len);
            let len = attacker.frame(&mut buf);
            session.handle_rtp(now, intruder, &mut buf, len);
            session.handle_timeout(now + Duration::from_millis(1));
            while let Some(t) = session.poll_transmit(&mut out) {
                assert_eq!(
                    t.destination.ip(),
                    nat.ip(),
                    "media goes to the learned source"
                );
                echoed += 1;
            }
        }
        assert_eq!(latched(&mut session), vec![nat]);
        // Both were candidates; the peer, first in every turn, reached LEARN_PACKETS first.
        // Learning packets are neither played nor counted; the intruder's after that are
        // foreign, however well formed and in sequence.
        let learning = u64::from(LEARN_PACKETS - 1);
        assert_eq!(session.stats().rtp_packets_received, 50 - learning);
        assert_eq!(session.stats().foreign_source_dropped, 50 - learning);
        assert!(echoed >= 45, "{echoed}");
    }

    #[test]
    fn the_sdp_address_is_accepted_at_its_first_packet() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.source = RtpSource::Learn;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let sent = run(&mut session, &mut peer, start, 20, |_| false);
        assert_eq!(session.stats().rtp_packets_received, 20);
        assert!(latched(&mut session).is_empty(), "nothing to learn");
        assert!(rtp_only(&sent)
            .iter()
            .all(|p| rtp::parse(p).unwrap().payload().len() == 160));
        assert!(sent
            .iter()
            .all(|(t, _)| t.destination.ip() == addr(PEER).ip()));
    }

    #[test]
    fn packets_out_of_sequence_or_of_other_payload_types_teach_nothing() {
        let start = Instant::now();
        let mut session = learning_session(start);
        let mut buf = [0u8; MAX_PACKET];
        let nat = addr("203.0.113.9:31000");
        let mut peer = Peer::new(Codec::Pcmu, 0);
        // A sprayer: every packet jumps in sequence.
        for i in 0..30u32 {
            peer.seq = peer.seq.wrapping_add(7);
            let len = peer.frame(&mut buf);
            session.handle_rtp(start + PTIME * i, nat, &mut buf, len);
        }
        // A payload type never negotiated: dropped before it is even a candidate.
        let mut pcma = Peer::new(Codec::Pcma, 8);
        for i in 0..10u32 {
            let len = pcma.frame(&mut buf);
            session.handle_rtp(start + PTIME * i, nat, &mut buf, len);
        }
        assert!(latched(&mut session).is_empty());
        assert_eq!(session.stats().rtp_packets_received, 0);
        assert_eq!(session.stats().foreign_source_dropped, 10);
    }

    #[test]
    fn strict_accepts_the_sdp_address_only() {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.remote_rtp = Some(addr("10.0.0.5:4000"));
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut peer = Peer::new(Codec::Pcmu, 0);
        let mut buf = [0u8; MAX_PACKET];
        let mut out = [0u8; MAX_PACKET];
        for i in 0..20u32 {
            let len = peer.frame(&mut buf);
            session.handle_rtp(start + PTIME * i, addr("203.0.113.9:31000"), &mut buf, len);
            session.handle_timeout(start + PTIME * i + Duration::from_millis(1));
            assert!(session.poll_transmit(&mut out).is_none());
        }
        assert_eq!(session.stats().foreign_source_dropped, 20);
        assert!(latched(&mut session).is_empty());
    }

    #[test]
    fn with_srtp_only_an_authenticated_packet_teaches_the_source_and_at_once() {
        let start = Instant::now();
        let profile = SrtpProfile::AesCm128HmacSha1_80;
        let (key, salt) = ([7u8; 16], vec![9u8; 14]);
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.remote_rtp = Some(addr("10.0.0.5:4000"));
        cfg.source = RtpSource::Learn;
        cfg.srtp = Some(SrtpKeys {
            profile,
            inbound_key: key.to_vec(),
            inbound_salt: salt.clone(),
            outbound_key: key.to_vec(),
            outbound_salt: salt.clone(),
        });
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut buf = [0u8; MAX_PACKET];
        // A forger without the key: plain RTP of the right payload type, in sequence.
        let mut forger = Peer::new(Codec::Pcmu, 0);
        let forged = addr("203.0.113.66:31000");
        for i in 0..10u32 {
            let len = forger.frame(&mut buf);
            session.handle_rtp(start + PTIME * i, forged, &mut buf, len);
        }
        assert!(latched(&mut session).is_empty());
        assert_eq!(session.stats().srtp_rejected, 10);
        let mut peer = Peer::new(Codec::Pcmu, 0);
        peer.srtp = Some(SrtpContext::new(profile, &key, &salt).unwrap());
        let nat = addr("203.0.113.9:31000");
        let len = peer.frame(&mut buf);
        session.handle_rtp(start + PTIME * 10, nat, &mut buf, len);
        assert_eq!(latched(&mut session), vec![nat]);
        assert_eq!(session.stats().rtp_packets_received, 1);
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
