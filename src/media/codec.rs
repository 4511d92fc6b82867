//! Audio codecs behind one interface: decode a payload to linear PCM, encode PCM to a payload,
//! and conceal a lost frame.
//!
//! Owns: the choice of implementation per [`Codec`] (G.711 tables, our G.722, libopus) and the
//! packet-loss concealment of codecs that have none of their own.
//! Must not: allocate after construction (but for the concealer's copy of the last frame, made
//! by the first good frame so that a silent stream holds none), or know about RTP — payloads
//! in, samples out.

use std::fmt;

use super::g711;
use super::g722::{G722Decoder, G722Encoder};
use super::opus::{OpusConfig, OpusDecoder, OpusEncoder, OpusError};
use crate::sdp::{Codec, OpusParams};

/// The longest frame we handle: 60 ms at 48 kHz.
pub const MAX_FRAME_SAMPLES: usize = 2880;

/// The longest frame at PCM rate `rate`: 60 ms (the longest ptime a stream may have), so a
/// stream's buffers are sized by its codec — 480 samples for G.711, not 48 kHz's 2,880.
pub fn frame_capacity(rate: u32) -> usize {
    (rate as usize * 60 / 1000).clamp(1, MAX_FRAME_SAMPLES)
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// `telephone-event` and other non-audio formats have no audio codec.
    NotAudio(&'static str),
    /// libopus refused (corrupt packet, bad frame size). Copy, so a flood of garbage packets
    /// costs no allocation.
    Opus(OpusError),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::NotAudio(name) => write!(f, "{name} is not an audio codec"),
            CodecError::Opus(e) => write!(f, "opus: {e}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// PCM sample rate a codec's decoder produces and its encoder takes.
pub fn pcm_rate(codec: Codec) -> u32 {
    match codec {
        Codec::Pcmu | Codec::Pcma | Codec::TelephoneEvent => 8000,
        Codec::G722 => 16000,
        Codec::Opus => 48000,
    }
}

/// The band of audio a codec carries, as the sample rate whose Nyquist band holds it: what
/// its decoder makes of `payload` has nothing wider (G.711 8000, G.722 16000; Opus the
/// packet's coded band, [`super::opus::packet_audio_rate`], fullband for an empty payload).
pub fn audio_rate(codec: Codec, payload: &[u8]) -> u32 {
    match codec {
        Codec::Opus => super::opus::packet_audio_rate(payload).unwrap_or(48_000),
        other => pcm_rate(other),
    }
}

/// A decoder for one received stream.
pub enum AudioDecoder {
    Pcmu(Concealer),
    Pcma(Concealer),
    G722(Box<G722Decoder>, Concealer),
    Opus(Box<OpusDecoder>),
}

impl AudioDecoder {
    pub fn new(codec: Codec) -> Result<AudioDecoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => AudioDecoder::Pcmu(Concealer::new(pcm_rate(codec))),
            Codec::Pcma => AudioDecoder::Pcma(Concealer::new(pcm_rate(codec))),
            Codec::G722 => AudioDecoder::G722(Box::default(), Concealer::new(pcm_rate(codec))),
            Codec::Opus => AudioDecoder::Opus(Box::new(
                OpusDecoder::new(pcm_rate(Codec::Opus)).map_err(CodecError::Opus)?,
            )),
            Codec::TelephoneEvent => return Err(CodecError::NotAudio("telephone-event")),
        })
    }

    /// Decodes one payload into `out`; returns the samples written.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = match self {
            AudioDecoder::Pcmu(c) => {
                let n = g711::decode_ulaw(payload, out);
                c.remember(out, n)
            }
            AudioDecoder::Pcma(c) => {
                let n = g711::decode_alaw(payload, out);
                c.remember(out, n)
            }
            AudioDecoder::G722(d, c) => {
                let n = d.decode(payload, out);
                c.remember(out, n)
            }
            AudioDecoder::Opus(d) => d.decode(payload, out).map_err(CodecError::Opus)?,
        };
        Ok(n)
    }

    /// Rebuilds a lost frame from the in-band FEC of the packet that follows it (Opus); other
    /// codecs, or a next packet without FEC, fall back to [`AudioDecoder::conceal`].
    pub fn recover(&mut self, next_payload: &[u8], samples: usize, out: &mut [i16]) -> usize {
        match self {
            AudioDecoder::Opus(d) => d
                .recover_from_next(next_payload, samples, out)
                .unwrap_or_else(|_| self.conceal(samples, out)),
            _ => self.conceal(samples, out),
        }
    }

    /// Whether [`AudioDecoder::recover`] can do better than concealment.
    pub fn has_fec(&self) -> bool {
        matches!(self, AudioDecoder::Opus(_))
    }

    /// Stands in for a lost frame of `samples` samples (Opus: its own PLC; others: the last
    /// frame again, 6 dB quieter each time, fading to silence).
    pub fn conceal(&mut self, samples: usize, out: &mut [i16]) -> usize {
        let samples = samples.min(out.len());
        match self {
            AudioDecoder::Pcmu(c) | AudioDecoder::Pcma(c) | AudioDecoder::G722(_, c) => {
                c.conceal(&mut out[..samples])
            }
            AudioDecoder::Opus(d) => d.conceal(samples, out).unwrap_or_else(|_| {
                out[..samples].fill(0);
                samples
            }),
        }
    }
}

/// An encoder for one sent stream.
pub enum AudioEncoder {
    Pcmu,
    Pcma,
    G722(Box<G722Encoder>),
    Opus(Box<OpusEncoder>),
}

impl AudioEncoder {
    /// An encoder with our own defaults (Opus: in-band FEC on, no band limit).
    pub fn new(codec: Codec) -> Result<AudioEncoder, CodecError> {
        Self::for_receiver(
            codec,
            &OpusParams {
                use_inband_fec: true,
                ..OpusParams::default()
            },
        )
    }

    /// An encoder for a receiver whose decoder asked for `receiver` (RFC 7587 §6.1, its SDP
    /// fmtp): Opus codes no wider than its `maxplaybackrate`, at our bitrate or its
    /// `maxaveragebitrate` when that is lower, and adds in-band FEC only when its decoder uses
    /// it (`useinbandfec=1`). Other codecs have nothing to choose.
    pub fn for_receiver(codec: Codec, receiver: &OpusParams) -> Result<AudioEncoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => AudioEncoder::Pcmu,
            Codec::Pcma => AudioEncoder::Pcma,
            Codec::G722 => AudioEncoder::G722(Box::default()),
            Codec::Opus => {
                let ours = OpusConfig::default();
                AudioEncoder::Opus(Box::new(
                    OpusEncoder::new(&OpusConfig {
                        sample_rate: pcm_rate(Codec::Opus),
                        inband_fec: receiver.use_inband_fec,
                        max_playback_rate: receiver.max_playback_rate,
                        bitrate: receiver
                            .max_average_bitrate
                            .map_or(ours.bitrate, |most| most.min(ours.bitrate)),
                        ..ours
                    })
                    .map_err(CodecError::Opus)?,
                ))
            }
            Codec::TelephoneEvent => return Err(CodecError::NotAudio("telephone-event")),
        })
    }

    /// The loss the far end reports of our stream (RTCP, RFC 3550 §6.4.1's fraction lost, in
    /// whole percent): Opus plans its in-band FEC and its inter-frame prediction for it; the
    /// others have nothing to plan. A libopus refusal (never for 0..=100) keeps the old plan.
    pub fn set_expected_loss(&mut self, percent: u8) {
        if let AudioEncoder::Opus(e) = self {
            if let Err(error) = e.set_expected_loss(percent.min(100)) {
                tracing::debug!(%error, percent, "opus loss plan refused");
            }
        }
    }

    /// How wide the audio fed from now on is ([`audio_rate`]'s sense): Opus codes no wider
    /// band ([`OpusEncoder::set_audio_rate`]); the others' band is fixed. A libopus refusal
    /// (never for these values) leaves the band as it was: the audio is still sent.
    pub fn set_audio_rate(&mut self, rate: u32) {
        if let AudioEncoder::Opus(e) = self {
            if let Err(error) = e.set_audio_rate(rate) {
                tracing::debug!(%error, rate, "opus band limit refused");
            }
        }
    }

    /// Encodes one frame of PCM (at [`pcm_rate`]) into `out`; returns the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        Ok(match self {
            AudioEncoder::Pcmu => g711::encode_ulaw(pcm, out),
            AudioEncoder::Pcma => g711::encode_alaw(pcm, out),
            AudioEncoder::G722(e) => e.encode(pcm, out),
            AudioEncoder::Opus(e) => e.encode(pcm, out).map_err(CodecError::Opus)?,
        })
    }
}

/// Concealment for codecs without PLC: repeat the last good frame, each repeat 6 dB quieter.
pub struct Concealer {
    /// Room for the longest frame at the codec's rate ([`frame_capacity`]), allocated by the
    /// first good frame: a stream that never sends audio holds none.
    last: Box<[i16]>,
    /// The codec's PCM rate, to size `last`.
    rate: u32,
    last_len: usize,
    /// Right shift applied to the repeated frame (grows by one per consecutive loss).
    fade: u32,
}

impl Concealer {
    fn new(rate: u32) -> Concealer {
        Concealer {
            last: Box::default(),
            rate,
            last_len: 0,
            fade: 0,
        }
    }

    /// Keeps a copy of a good frame; returns its length unchanged.
    fn remember(&mut self, frame: &[i16], len: usize) -> usize {
        if self.last.is_empty() {
            self.last = vec![0; frame_capacity(self.rate)].into_boxed_slice();
        }
        let len = len.min(self.last.len()).min(frame.len());
        self.last[..len].copy_from_slice(&frame[..len]);
        self.last_len = len;
        self.fade = 0;
        len
    }

    fn conceal(&mut self, out: &mut [i16]) -> usize {
        self.fade = (self.fade + 1).min(15);
        for (i, s) in out.iter_mut().enumerate() {
            let source = if self.last_len == 0 {
                0
            } else {
                self.last[i % self.last_len]
            };
            *s = source >> self.fade;
        }
        out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, n: usize, start: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (start + i) as f64 / f64::from(rate);
                (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn g711_round_trip_is_transparent_for_its_own_codes() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = AudioEncoder::new(codec).unwrap();
            let mut dec = AudioDecoder::new(codec).unwrap();
            let pcm = tone(8000, 1000.0, 160, 0);
            let mut payload = [0u8; 160];
            assert_eq!(enc.encode(&pcm, &mut payload).unwrap(), 160);
            let mut out = [0i16; 160];
            assert_eq!(dec.decode(&payload, &mut out).unwrap(), 160);
            let mut again = [0u8; 160];
            enc.encode(&out, &mut again).unwrap();
            assert_eq!(payload, again, "{codec:?} decode→encode is lossless");
        }
    }

    #[test]
    fn concealment_repeats_the_last_frame_and_fades() {
        let mut dec = AudioDecoder::new(Codec::Pcmu).unwrap();
        let mut enc = AudioEncoder::new(Codec::Pcmu).unwrap();
        let pcm = tone(8000, 1000.0, 160, 0);
        let mut payload = [0u8; 160];
        enc.encode(&pcm, &mut payload).unwrap();
        let mut good = [0i16; 160];
        dec.decode(&payload, &mut good).unwrap();
        let energy = |s: &[i16]| s.iter().map(|&x| i64::from(x).pow(2)).sum::<i64>();
        let mut lost = [0i16; 160];
        dec.conceal(160, &mut lost);
        let first = energy(&lost);
        assert!(first > 0 && first < energy(&good));
        dec.conceal(160, &mut lost);
        assert!(energy(&lost) < first, "fades with each loss");
    }

    #[test]
    fn an_opus_encoder_sends_fec_only_to_a_decoder_that_uses_it_and_no_wider_band() {
        // Whether frame 14's loss is rebuilt from frame 15's FEC rather than concealed, and
        // the band of the packets sent.
        let run = |receiver: Option<OpusParams>| {
            let mut encoder = match receiver {
                Some(receiver) => AudioEncoder::for_receiver(Codec::Opus, &receiver).unwrap(),
                None => AudioEncoder::new(Codec::Opus).unwrap(),
            };
            let mut buf = [0u8; 1500];
            let packets: Vec<Vec<u8>> = (0..20)
                .map(|k| {
                    let len = encoder
                        .encode(&tone(48_000, 1000.0, 960, k * 960), &mut buf)
                        .unwrap();
                    buf[..len].to_vec()
                })
                .collect();
            let (mut fec, mut plc) = (
                AudioDecoder::new(Codec::Opus).unwrap(),
                AudioDecoder::new(Codec::Opus).unwrap(),
            );
            let mut out = [0i16; 960];
            for p in &packets[..14] {
                fec.decode(p, &mut out).unwrap();
                plc.decode(p, &mut out).unwrap();
            }
            let mut recovered = [0i16; 960];
            fec.recover(&packets[15], 960, &mut recovered);
            plc.conceal(960, &mut out);
            let bands: Vec<u32> = packets.iter().map(|p| audio_rate(Codec::Opus, p)).collect();
            (recovered != out, bands)
        };
        // A narrowband phone: at our 24 kb/s and 5 % planned loss libopus finds room for FEC
        // in narrowband packets only (its `decide_fec` thresholds).
        let phone = OpusParams {
            max_playback_rate: 8000,
            ..OpusParams::RFC_DEFAULTS
        };
        let (fec, bands) = run(Some(OpusParams {
            use_inband_fec: true,
            ..phone
        }));
        assert!(fec, "useinbandfec=1: the loss is rebuilt from FEC");
        assert!(bands.iter().all(|&b| b == 8000), "{bands:?}");
        let (fec, bands) = run(Some(phone));
        assert!(!fec, "no useinbandfec (RFC 7587: 0): no FEC, PLC only");
        assert!(bands.iter().all(|&b| b == 8000), "{bands:?}");
        // Our own default (API connections, no SDP): no band limit.
        assert_eq!(run(None).1, vec![48_000; 20]);
    }

    #[test]
    fn an_opus_encoder_stays_within_the_receivers_maxaveragebitrate() {
        // Bytes a second of 5 s of fullband audio (a tone and white noise).
        let audio = crate::media::opus::tests::fullband_audio(48_000 * 5);
        let bytes_per_second = |receiver: &OpusParams| {
            let mut encoder = AudioEncoder::for_receiver(Codec::Opus, receiver).unwrap();
            let mut buf = [0u8; 1500];
            audio
                .chunks(960)
                .map(|pcm| encoder.encode(pcm, &mut buf).unwrap())
                .sum::<usize>()
                / 5
        };
        let ours = bytes_per_second(&OpusParams::RFC_DEFAULTS);
        let asked = bytes_per_second(&OpusParams {
            max_average_bitrate: Some(12_000),
            ..OpusParams::RFC_DEFAULTS
        });
        // VBR aims at the average and stays under it on this signal.
        assert!((2_400..=3_000).contains(&ours), "24 kb/s: {ours} B/s");
        assert!((1_000..=1_500).contains(&asked), "12 kb/s: {asked} B/s");
        // Asking for more than we send changes nothing.
        let generous = bytes_per_second(&OpusParams {
            max_average_bitrate: Some(64_000),
            ..OpusParams::RFC_DEFAULTS
        });
        assert_eq!(generous, ours);
    }

    #[test]
    fn telephone_event_is_not_audio() {
        assert!(AudioDecoder::new(Codec::TelephoneEvent).is_err());
        assert!(AudioEncoder::new(Codec::TelephoneEvent).is_err());
    }
}
