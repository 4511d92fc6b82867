//! The send path of a session: the playout tick (one ptime of echo, prompt or digits) and a
//! frame at the sent codec's rate to an RTP packet in a spare buffer.
//!
//! Owns: what a tick sends, encoding, the RTP header of our stream (sequence, timestamp,
//! talkspurt marker), SRTP protect, where RTP and RTCP go, and when the session needs ticks of
//! its own.
//! Must not: allocate on the steady path (the first frames may make the encoder, a transmit
//! slot or the sent frame, once) or copy beyond the one encode (or a conference's shared
//! payload, or an echoed G.711 frame) into a spare packet buffer; a full transmit queue drops
//! the frame rather than grow.

use std::net::SocketAddr;
use std::time::Instant;

use super::{aligned_tick, Channel, MediaSession, RtpSource, SessionMode, SRTP_ROOM};
use crate::media::codec::pcm_rate;
use crate::media::rtp::{self, RtpHeader};

impl MediaSession {
    /// One ptime of playout: a prompt or tone when one plays, else (Echo mode) the caller's
    /// audio sent back: decoded and re-encoded, or as it came for G.711 in the same format
    /// both ways (see [`MediaSession::next_echo_frame`]). While digits are sent, their
    /// telephone-event packets take the place of that audio (see
    /// [`MediaSession::send_digits`]).
    pub(super) fn tick(&mut self, now: Instant) {
        if self.player.is_some() {
            if self.config.mode == SessionMode::Echo || self.heard.is_some() {
                // Keep the jitter buffer (and in-band DTMF detection) moving: echo is not
                // heard meanwhile, a recording still is.
                let _ = self.pull_frame(now, false);
            }
            self.play_player_frame(now);
            return;
        }
        if self.config.mode != SessionMode::Echo {
            // Idle and listening (recording, silence detection): take the caller's audio.
            if self.heard.is_some() {
                let _ = self.pull_frame(now, false);
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
        if self.echo_forwards(now) {
            // The caller's packets go back as they arrive.
            return;
        }
        // The caller's frame: decoded (and resampled to the sent codec's rate when
        // transcoding), or untouched for G.711 in the same format both ways.
        let Some(frame) = self.next_echo_frame(now) else {
            if !self.send_event_slot(now) {
                self.skip_slot();
            }
            return;
        };
        self.send_audio(now, frame);
    }

    /// Encodes one frame (held in one of the audio path's buffers, at the sent codec's rate)
    /// and queues it as an RTP packet to the peer — unless a telephone-event takes this ptime.
    pub(super) fn send_audio(&mut self, now: Instant, frame: Outgoing) {
        self.send_frame(now, Frame::Own(frame));
    }

    /// Queues a payload encoded for several sessions (a conference's common mix, see
    /// `shared`) as our RTP packet, as [`MediaSession::send_audio`] does with its own encode;
    /// `pcm` is what it carries, at the sent codec's rate.
    pub(super) fn send_shared(&mut self, now: Instant, pcm: &[i16], payload: &[u8]) {
        self.send_frame(now, Frame::Shared { pcm, payload });
    }

    /// Sends the other hairpin member's frame, as it came, as one packet of our stream: what a
    /// [`MediaSession::relay_sink`] can be sent instead of [`MediaSession::play`] (no encode,
    /// and nothing keeps the sent audio).
    pub fn play_relayed(&mut self, now: Instant, payload: &[u8]) {
        self.send_frame(now, Frame::Relayed(payload));
    }

    fn send_frame(&mut self, now: Instant, frame: Frame<'_>) {
        if self.send_event_slot(now) {
            // RFC 4733 §2.5.1: the audio of the event's time is not sent.
            return;
        }
        let Some(destination) = self.rtp_destination() else {
            self.keep_sent_silence();
            return;
        };
        if self.audio.is_none() {
            return;
        }
        let Some(mut buf) = self.take_slot() else {
            return; // transmit queue full: the worker is not draining; drop this frame
        };
        let Some(audio) = self.audio.as_mut() else {
            self.spare.push(buf);
            return;
        };
        let audio_rate = match frame {
            Frame::Own(Outgoing::Decoded(_)) => Some(audio.widest_decoded),
            Frame::Own(Outgoing::Resampled { audio_rate, .. }) => Some(audio_rate),
            _ => None,
        };
        if let Frame::Own(Outgoing::Decoded(_) | Outgoing::Resampled { .. }) = frame {
            audio.fit_encoder();
        }
        if let (Some(rate), Some(encoder)) = (audio_rate, audio.encoder.as_mut()) {
            encoder.set_audio_rate(rate);
        }
        let pcm: &[i16] = match frame {
            Frame::Own(Outgoing::Decoded(n)) => &audio.pcm[..n],
            Frame::Own(Outgoing::Resampled { len, .. }) => &audio.resampled[..len],
            // Only when nothing keeps the sent audio (`next_echo_frame`, `relay_sink`).
            Frame::Own(Outgoing::Payload(_)) | Frame::Relayed(_) => &[],
            Frame::Shared { pcm, .. } => pcm,
        };
        if let Some(spoken) = self.spoken.as_mut() {
            spoken.push(Some(pcm), pcm.len());
        }
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
        let room = buf.len() - header_len - SRTP_ROOM;
        let encoded = match frame {
            Frame::Own(Outgoing::Payload(n)) if n <= room => {
                buf[header_len..header_len + n].copy_from_slice(&audio.payload[..n]);
                Ok(n)
            }
            Frame::Shared { payload, .. } | Frame::Relayed(payload) if payload.len() <= room => {
                buf[header_len..header_len + payload.len()].copy_from_slice(payload);
                Ok(payload.len())
            }
            Frame::Shared { .. } | Frame::Relayed(_) | Frame::Own(Outgoing::Payload(_)) => Err(()),
            Frame::Own(_) => match audio.encoder.as_mut() {
                Some(encoder) => encoder
                    .encode(pcm, &mut buf[header_len..header_len + room])
                    .map_err(|_| ()),
                None => Err(()),
            },
        };
        let encoded = match encoded {
            Ok(n) => n,
            Err(()) => {
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
        self.queue_rtp(
            now,
            destination,
            buf,
            header_len + encoded,
            rtp_timestamp,
            encoded,
        );
    }

    /// Queues the RTP packet `buf[..len]` of our stream (its header written, `payload_len`
    /// bytes of payload): SRTP-protected when the stream is, and counted.
    pub(super) fn queue_rtp(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        mut buf: Box<[u8]>,
        mut len: usize,
        rtp_timestamp: u32,
        payload_len: usize,
    ) {
        if let Some(ctx) = self.srtp_out.as_mut() {
            match ctx.protect_rtp(&mut buf[..], len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.spare.push(buf);
                    return;
                }
            }
        }
        self.rtcp.on_rtp_sent(now, rtp_timestamp, payload_len);
        self.stats.rtp_packets_sent += 1;
        self.stats.rtp_bytes_sent += len as u64;
        self.transmits
            .push_back((Channel::Rtp, destination, len, buf));
    }

    /// A ptime with nothing to send: the stream pauses, and the next packet starts a talkspurt.
    pub(super) fn skip_slot(&mut self) {
        if let Some(audio) = self.audio.as_mut() {
            audio.tx_talkspurt = true;
            audio.tx_timestamp = audio.tx_timestamp.wrapping_add(audio.frame_ticks);
        }
        self.keep_sent_silence();
    }

    /// A ptime of our stream that carried no audio (nothing, or a telephone-event): silence in
    /// what is kept of the sent audio.
    pub(super) fn keep_sent_silence(&mut self) {
        let (Some(spoken), Some(audio)) = (self.spoken.as_mut(), self.audio.as_ref()) else {
            return;
        };
        let n = pcm_rate(audio.format.sending().0) * audio.format.ptime_ms / 1000;
        spoken.push(None, n as usize);
    }

    /// Where our RTP goes: the accepted (possibly latched) source, else the negotiated address.
    pub(super) fn rtp_destination(&self) -> Option<SocketAddr> {
        self.accepted_source.or(self.config.remote_rtp)
    }

    pub(super) fn rtcp_destination(&self) -> Option<SocketAddr> {
        if let (RtpSource::Learn, Some(src)) = (self.config.source, self.accepted_source) {
            // A NATed peer's RTCP goes back the way its RTP came (RTP port + 1 at best).
            return Some(match self.config.remote_rtcp {
                Some(r) if r.port() == self.config.remote_rtp.map(|a| a.port()).unwrap_or(0) => src,
                _ => SocketAddr::new(src.ip(), src.port().wrapping_add(1)),
            });
        }
        self.config.remote_rtcp
    }

    /// The own tick only where something needs one outside a room: Echo, a playout,
    /// listening, or digits being sent.
    pub(super) fn restore_tick(&mut self, now: Instant) {
        let needed = self.needs_own_tick();
        self.next_tick = match (&self.audio, &self.room) {
            (Some(a), None) if needed => Some(aligned_tick(self.config.tick_epoch, now, a.ptime())),
            _ => None,
        };
    }

    /// Whether something outside a room needs a tick every ptime.
    pub(super) fn needs_own_tick(&self) -> bool {
        self.config.mode == SessionMode::Echo
            || self.player.is_some()
            || self.heard.is_some()
            || self.is_sending_digits()
    }
}

/// A frame to send: ours to encode, or a payload encoded for several sessions.
#[derive(Clone, Copy)]
enum Frame<'a> {
    Own(Outgoing),
    /// `payload` encodes `pcm` (at the sent codec's rate).
    Shared {
        pcm: &'a [i16],
        payload: &'a [u8],
    },
    /// Another session's frame as it came (G.711 in our sent format).
    Relayed(&'a [u8]),
}

/// Which of the audio path's buffers holds a frame to send, and its length.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outgoing {
    /// `pcm`: the decoded frame, already at the sent codec's rate.
    Decoded(usize),
    /// `resampled`: converted to the sent codec's rate; `audio_rate`: how wide its audio can
    /// be (its encoder codes no wider).
    Resampled { len: usize, audio_rate: u32 },
    /// `payload`: the caller's frame as it arrived, sent back without decode or encode
    /// (G.711 echo in the same format both ways).
    Payload(usize),
}

#[cfg(test)]
mod tests {
    use crate::media::session::test_support::*;

    /// Echoes 30 PCMU frames whose every byte is 0x7F (μ-law "negative zero", which a decode
    /// and re-encode turns into 0xFF); returns the echoed RTP packets.
    fn echo_negative_zero(inband_dtmf: bool) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut cfg = config(Codec::Pcmu, 0);
        cfg.inband_dtmf = inband_dtmf;
        let mut session = MediaSession::new(cfg, start).unwrap();
        let mut out = [0u8; MAX_PACKET];
        let mut sent = Vec::new();
        for i in 0..30u16 {
            let now = start + PTIME * u32::from(i);
            let mut packet = [0x7Fu8; 12 + 160];
            let header = RtpHeader {
                marker: i == 0,
                payload_type: 0,
                sequence: 100 + i,
                timestamp: 8000 + 160 * u32::from(i),
                ssrc: 0xabcd_0001,
                csrcs: &[],
            };
            rtp::write_header(&mut packet, &header).unwrap();
            session.handle_rtp(now, addr(PEER), &mut packet, 12 + 160);
            session.handle_timeout(now + Duration::from_millis(1));
            while let Some(t) = session.poll_transmit(&mut out) {
                sent.push((t, out[..t.len].to_vec()));
            }
        }
        rtp_only(&sent)
    }

    #[test]
    fn g711_echo_sends_the_frame_back_as_it_came_in_our_stream() {
        let echoed = echo_negative_zero(false);
        assert!(echoed.len() >= 25, "{} echoed", echoed.len());
        let mut last_seq = None;
        for packet in &echoed {
            let rtp = rtp::parse(packet).unwrap();
            assert_eq!(rtp.ssrc(), 0x1111_2222, "our own stream");
            assert_eq!(rtp.payload(), &[0x7F; 160][..], "byte for byte");
            if let Some(prev) = last_seq {
                assert_eq!(rtp.sequence(), u16::wrapping_add(prev, 1));
            }
            last_seq = Some(rtp.sequence());
        }
    }

    #[test]
    fn g711_echo_decodes_when_in_band_digits_are_detected() {
        let echoed = echo_negative_zero(true);
        assert!(echoed.len() >= 25, "{} echoed", echoed.len());
        for packet in &echoed {
            let rtp = rtp::parse(packet).unwrap();
            assert_eq!(rtp.payload(), &[0xFF; 160][..], "decoded and re-encoded");
        }
    }
}
