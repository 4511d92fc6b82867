//! The audio path of a negotiated stream: jitter buffer, decoder, encoder, the conversion
//! between the received and the sent codec's rates, our stream's RTP counters, and the DTMF
//! detector and sender.
//!
//! Owns: the buffers of one stream, sized by its codec: the sent frame at construction; the
//! receive side's (jitter ring, payload, decoded frame) with the first packet, so an idle
//! call that never receives RTP holds none (issue 19, docs/PERFORMANCE.md).
//! Must not: allocate after [`AudioPath::new`] except for those receive buffers at the first
//! packet and their growth for a packet longer than the negotiated frame (once or twice in a
//! stream's life at most), or decide what is sent when (that is the send path's and the
//! tick's business).

use std::time::{Duration, Instant};

use super::{SessionConfig, SessionError, StreamFormat, MAX_PACKET};
use crate::media::codec::{
    frame_capacity, pcm_rate, AudioDecoder, AudioEncoder, MAX_FRAME_SAMPLES,
};
use crate::media::dtmf::DtmfSender;
use crate::media::jitter::{JitterBuffer, JitterConfig};
use crate::media::resample::Resampler;
use crate::media::tone::DtmfDetector;
use crate::sdp::Codec;

/// How the packets of another stream, forwarded as they arrive, map into ours.
#[derive(Debug, Clone, Copy)]
pub(super) struct Forwarded {
    /// The forwarded stream's SSRC: another one is mapped afresh.
    pub(super) source_ssrc: u32,
    /// Added to a forwarded packet's sequence number and timestamp.
    pub(super) sequence_offset: u16,
    pub(super) timestamp_offset: u32,
    /// What our stream continues with after the newest packet forwarded.
    pub(super) next_sequence: u16,
    pub(super) next_timestamp: u32,
    /// When the last packet was forwarded.
    pub(super) last_at: Instant,
}

/// The audio path of a negotiated stream.
pub(super) struct AudioPath {
    pub(super) format: StreamFormat,
    pub(super) jitter: JitterBuffer,
    /// The received codec's decoder: made with the session, except Opus's (libopus's state,
    /// tens of KB), which comes with the first packet ([`AudioPath::fit_receive`]).
    pub(super) decoder: Option<AudioDecoder>,
    /// The sent codec's encoder: made with the session, except Opus's, which comes with the
    /// first frame this session encodes itself ([`AudioPath::fit_encoder`]) — never for a
    /// conference listener that only sends the room's shared encode.
    pub(super) encoder: Option<AudioEncoder>,
    /// Samples per frame at the received codec's PCM rate.
    pub(super) frame_samples: usize,
    /// RTP timestamp units per frame at the sent codec's RTP clock.
    pub(super) frame_ticks: u32,
    /// From the received codec's PCM rate to the sent codec's, when they differ.
    pub(super) resampler: Option<Resampler>,
    /// The frame at the sent codec's rate (resampled, a prompt, a conference's mix): room for
    /// 60 ms at that rate.
    pub(super) resampled: Box<[i16]>,
    /// The frame decoded at the received codec's PCM rate: room for 60 ms at that rate (a
    /// longer packet is cut there); empty until the first packet ([`AudioPath::fit_receive`]).
    pub(super) pcm: Box<[i16]>,
    /// The payload of the frame played: as long as the jitter buffer's slots (the negotiated
    /// frame, 160 bytes for G.711 at 20 ms; growing with them); empty until the first packet.
    pub(super) payload: Box<[u8]>,
    /// The packet after a lost one, peeked for its in-band FEC: sized like `payload` for a
    /// codec with FEC (Opus), else empty.
    pub(super) fec_payload: Box<[u8]>,
    pub(super) tx_sequence: u16,
    pub(super) tx_timestamp: u32,
    /// The next packet we send starts a talkspurt (marker bit).
    pub(super) tx_talkspurt: bool,
    /// The other hairpin member's packets are being sent in our stream as they arrive
    /// ([`MediaSession::send_forwarded`]): how their headers map into it.
    ///
    /// [`MediaSession::send_forwarded`]: super::MediaSession::send_forwarded
    pub(super) forwarded: Option<Forwarded>,
    /// The widest band decoded in this stream so far, as a sample rate ([`audio_rate`]:
    /// an Opus packet's coded band, no wider than the peer's `sprop-maxcapturerate`): what an
    /// encode of the caller's audio needs at most; 0 before the first frame. Only grows: an
    /// Opus encoder narrows its band over seconds, so it follows how wide the caller can be,
    /// not each packet.
    ///
    /// [`audio_rate`]: crate::media::codec::audio_rate
    pub(super) widest_decoded: u32,
    /// The loss the far end last reported of our stream (RTCP), in percent: what the encoder
    /// plans FEC for (also when it is made later, [`AudioPath::fit_encoder`]); `None` before
    /// the first report (the encoder's own default).
    pub(super) expected_loss: Option<u8>,
    /// The Opus decoder skipped frames its sender marked inactive (a silent conference
    /// listener, [`MediaSession::capture_listener`]): reset before it decodes again.
    pub(super) decoder_stale: bool,
    /// In-band DTMF detector on the decoded audio, when enabled and the rate allows.
    /// Boxed: about 1 KB, and off by default.
    pub(super) inband: Option<Box<DtmfDetector>>,
    /// Digits to send as RFC 4733 telephone-events on our stream; present when the peer
    /// negotiated telephone-event (`format.telephone_event_pt`).
    pub(super) dtmf_out: Option<DtmfSender>,
}

impl AudioPath {
    pub(super) fn new(
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
                // 8 bytes a millisecond: G.711 and G.722 exactly, Opus at 64 kbit/s; slots
                // grow for a peer that sends more.
                expected_payload: (8 * format.ptime_ms) as usize,
            }),
            decoder: if deferred(format.codec) {
                None
            } else {
                Some(AudioDecoder::new(format.codec).map_err(SessionError::Codec)?)
            },
            encoder: if deferred(send_codec) {
                None
            } else {
                Some(
                    AudioEncoder::for_receiver(send_codec, &format.peer_opus)
                        .map_err(SessionError::Codec)?,
                )
            },
            frame_samples,
            frame_ticks,
            resampler,
            // With the first prompt, conference tick or transcoded frame (`fit_send`): a G.711
            // echo never needs it.
            resampled: Box::default(),
            // The receive side's buffers come with the first packet (`fit_receive`).
            pcm: Box::default(),
            payload: Box::default(),
            fec_payload: Box::default(),
            // Random-ish initial values per RFC 3550 §5.1, derived from the SSRC (sans-IO).
            tx_sequence: (ssrc >> 16) as u16 ^ 0x5a5a,
            tx_timestamp: ssrc.rotate_left(7),
            tx_talkspurt: true,
            forwarded: None,
            widest_decoded: 0,
            expected_loss: None,
            decoder_stale: false,
            inband: if config.inband_dtmf {
                DtmfDetector::new(pcm_rate(format.codec)).ok().map(Box::new)
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

    pub(super) fn ptime(&self) -> Duration {
        Duration::from_millis(u64::from(self.format.ptime_ms))
    }

    /// Whether a received frame can go back out as it came: G.711 (stateless: no decoder or
    /// encoder state to keep in step) sent in the codec it arrives in, and no in-band digit
    /// detection reading the decoded audio.
    pub(super) fn passes_through(&self) -> bool {
        self.format.codec.is_g711()
            && self.format.sending().0 == self.format.codec
            && self.resampler.is_none()
            && self.inband.is_none()
    }

    /// Makes the encoder the first time this session encodes a frame itself (Opus: see
    /// `encoder`); one comparison afterwards.
    pub(super) fn fit_encoder(&mut self) {
        if self.encoder.is_none() {
            self.encoder =
                AudioEncoder::for_receiver(self.format.sending().0, &self.format.peer_opus).ok();
            if let (Some(encoder), Some(percent)) = (self.encoder.as_mut(), self.expected_loss) {
                encoder.set_expected_loss(percent);
            }
        }
    }

    /// Gives the sent frame (`resampled`) its room, 60 ms at the sent codec's rate, the first
    /// time something is sent through it: one comparison afterwards.
    pub(super) fn fit_send(&mut self) {
        if self.resampled.is_empty() {
            self.resampled =
                vec![0; frame_capacity(pcm_rate(self.format.sending().0))].into_boxed_slice();
        }
    }

    /// Sizes the receive buffers for what the jitter buffer can hand out: nothing before its
    /// first packet; then the payload buffers follow its slots (growing with them for a packet
    /// longer than the negotiated frame, rarely) and the decoded frame gets room for 60 ms.
    /// Nothing to do on the steady path: one comparison.
    pub(super) fn fit_receive(&mut self) {
        let room = self.jitter.payload_room();
        if self.payload.len() >= room {
            return;
        }
        if self.decoder.is_none() {
            // A decoder that cannot be made leaves the stream silent (counted where it is
            // played); libopus refuses only settings we never give it.
            self.decoder = AudioDecoder::new(self.format.codec).ok();
        }
        self.payload = vec![0; room].into_boxed_slice();
        if self.decoder.as_ref().is_some_and(AudioDecoder::has_fec) {
            self.fec_payload = vec![0; room].into_boxed_slice();
        }
        if self.pcm.is_empty() {
            self.pcm = vec![0; frame_capacity(pcm_rate(self.format.codec))].into_boxed_slice();
        }
    }
}

/// Codecs whose state a session makes only when it is needed: Opus (libopus's encoder and
/// decoder are ~55 KB of an idle call's memory); the others' cost nothing to keep.
fn deferred(codec: Codec) -> bool {
    codec == Codec::Opus
}
