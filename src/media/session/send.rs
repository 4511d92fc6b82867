//! The send path of a session: the playout tick (one ptime of echo, prompt or digits) and a
//! frame at the sent codec's rate to an RTP packet in a spare buffer.
//!
//! Owns: what a tick sends, encoding, the RTP header of our stream (sequence, timestamp,
//! talkspurt marker), SRTP protect, where RTP and RTCP go, and when the session needs ticks of
//! its own.
//! Must not: allocate or copy beyond the one encode into a spare packet buffer; a full transmit
//! queue drops the frame rather than grow.

use std::net::SocketAddr;
use std::time::Instant;

use super::{aligned_tick, Channel, MediaSession, RtpSource, SessionMode, SRTP_ROOM};
use crate::media::codec::pcm_rate;
use crate::media::rtp::{self, RtpHeader};

impl MediaSession {
    /// One ptime of playout: a prompt or tone when one plays, else (Echo mode) the caller's
    /// audio, decoded, re-encoded, sent back. While digits are sent, their telephone-event
    /// packets take the place of that audio (see [`MediaSession::send_digits`]).
    pub(super) fn tick(&mut self, now: Instant) {
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

    /// Encodes one frame (held in one of the audio path's buffers, at the sent codec's rate)
    /// and queues it as an RTP packet to the peer — unless a telephone-event takes this ptime.
    pub(super) fn send_audio(&mut self, now: Instant, frame: Outgoing) {
        if self.send_event_slot(now) {
            // RFC 4733 §2.5.1: the audio of the event's time is not sent.
            return;
        }
        let Some(destination) = self.rtp_destination() else {
            self.keep_sent_silence();
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

/// Which of the audio path's buffers holds a frame to send, and its length.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outgoing {
    /// `pcm`: the decoded frame, already at the sent codec's rate.
    Decoded(usize),
    /// `resampled`: converted to the sent codec's rate.
    Resampled(usize),
}
