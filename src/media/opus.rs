//! Opus (RFC 6716) for telephony: mono, 8–48 kHz PCM, in-band FEC, PLC, through libopus
//! (the `opus` crate 0.4.0 over `opusic-sys` 0.7.7, which builds libopus 1.6.1 statically).
//!
//! Owns: one encoder or decoder state per stream direction, the checks that keep garbage from
//! the network and bad frame sizes away from libopus (every failure is an [`OpusError`], never a
//! panic), and the choice between in-band FEC and PLC for a lost packet.
//!
//! Must not: read the clock, touch sockets, log, parse RTP headers, or allocate per frame. libopus
//! mallocs its state once, in `new` (valgrind counts the same heap allocations for 10 and 1000
//! frames); its per-call scratch lives on the caller's stack (the bundled build uses C99
//! variable-length arrays, ~40 KiB peak measured), so media worker threads need a normal stack,
//! not a tiny one.
//!
//! SDP and RTP facts for the integrator (RFC 7587):
//! - The rtpmap is always `opus/48000/2`, whatever rate we feed the encoder and whether we send
//!   mono or stereo: `a=rtpmap:<pt> opus/48000/2`.
//! - RTP timestamps always run at 48 kHz ([`RTP_CLOCK_RATE`]): a 20 ms packet advances the
//!   timestamp by 960 even when our PCM is 8 kHz. [`OpusDecoder::packet_samples`] with
//!   [`RTP_CLOCK_RATE`] gives a received packet's timestamp span.
//! - What we offer: `a=fmtp:<pt> useinbandfec=1; maxplaybackrate=<rate>;
//!   sprop-maxcapturerate=<rate>; stereo=0`, with `<rate>` the [`OpusConfig::sample_rate`].
//!   The peer's `maxplaybackrate` bounds our encoder's band ([`OpusConfig::max_playback_rate`]:
//!   RFC 7587 says an encoder SHOULD NOT code above it), its `maxaveragebitrate` our bitrate,
//!   and its `useinbandfec` turns our FEC on (`codec::AudioEncoder::for_receiver`); whatever it sends, [`OpusDecoder`] decodes at our
//!   own rate, so no renegotiation is needed.
//! - `ptime`/`maxptime` map onto the frame sizes [`OpusEncoder::encode`] accepts: 10, 20, 40 or
//!   60 ms. The decoder accepts every legal Opus packet, up to 120 ms.
//!
//! Decisions where the codec leaves room:
//! - The encoder runs libopus's VoIP application with 16-bit input depth; VBR stays on (the
//!   libopus default). Its band is the narrowest of the sample rate, the receiver's
//!   `maxplaybackrate` and how wide the audio fed to it can be
//!   ([`OpusEncoder::set_audio_rate`]: a mix of G.711 callers is narrowband): libopus
//!   without its signal analysis (complexity below 7) picks the band from the bitrate alone,
//!   so at 24 kb/s it would code fullband hybrid frames of narrowband audio at twice the CPU.
//! - A zero-length packet is an error ([`OpusError::EmptyPacket`]), not an implicit PLC: RFC 6716
//!   packets are at least one byte, and concealment is the caller's explicit
//!   [`OpusDecoder::conceal`].
//! - [`OpusDecoder::recover_from_next`] falls back to PLC when the next packet carries no FEC
//!   (CELT-only packets, FEC off at the sender, a frame longer than the gap) and also when the
//!   next packet is corrupt: the lost frame is filled either way, and the corruption is reported
//!   when that packet is decoded in its own turn.
//! - Packets longer than [`MAX_PACKET_LEN`] (no RTP payload is) are refused before reaching libopus.
//!
//! What FEC covers (libopus behaviour, measured): the encoder adds FEC only with
//! `expected_loss_percent > 0`, only in SILK/hybrid packets, only when the bitrate leaves room
//! for it after the primary frame (libopus's `decide_fec`: at 24 kb/s and 5 % planned loss,
//! narrowband packets get it, wideband and fullband ones do not), and only for frames its voice
//! activity detector rates as speech. Speech keeps it; a steady tone (music on hold, a test tone)
//! stops looking like speech after ~0.7 s and from then on a loss is concealed by PLC. Random
//! bytes often decode as (noisy) audio: Opus has no checksum, so authentication belongs to SRTP.

use std::fmt;

/// RTP clock rate of Opus, whatever the PCM rate (RFC 7587 §4.1).
pub const RTP_CLOCK_RATE: u32 = 48_000;
/// Longest packet the decoder accepts: the largest possible UDP payload.
pub const MAX_PACKET_LEN: usize = 65_535;
/// Largest buffer the encoder uses: libopus's recommended ceiling for one packet; a longer `out`
/// is only partly used, a shorter one caps the bitrate of that frame.
pub const MAX_ENCODED_LEN: usize = 4_000;

/// PCM rates libopus works at.
const SUPPORTED_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];
/// Frame durations the encoder accepts, in ms (RFC 7587 ptime values for telephony).
const ENCODER_FRAME_MS: [u32; 4] = [10, 20, 40, 60];
/// Longest audio one Opus packet can carry (RFC 6716 §3.2.5).
const MAX_PACKET_MS: u32 = 120;
/// libopus bitrate range honoured as asked (RFC 6716 §2.1.1: 6 to 510 kb/s).
const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 6_000..=510_000;
/// Highest libopus complexity setting.
const MAX_COMPLEXITY: u8 = 10;

/// Encoder settings for one outgoing stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Rate of the PCM we feed: 8000, 12000, 16000, 24000 or 48000 Hz.
    pub sample_rate: u32,
    /// Target bitrate in bit/s, 6000..=510000; default 24000.
    pub bitrate: u32,
    /// Add in-band FEC (SILK LBRR) so the receiver can rebuild a lost frame from the next
    /// packet; default true.
    pub inband_fec: bool,
    /// Expected packet loss in percent, 0..=100; drives how much FEC is sent. Default 5.
    pub expected_loss_percent: u8,
    /// CPU/quality trade-off 0..=10; default 5, cheaper than libopus's 10 for many channels.
    pub complexity: u8,
    /// Discontinuous transmission: during silence the encoder emits packets of at most 2 bytes,
    /// which need not be sent. Default false.
    pub dtx: bool,
    /// The widest audio the receiver plays back, as a sample rate (its SDP `maxplaybackrate`,
    /// RFC 7587 §6.1): the encoder codes no wider a band (8000 → narrowband … 48000 →
    /// fullband). Default 48000, no limit.
    pub max_playback_rate: u32,
}

impl Default for OpusConfig {
    /// 48 kHz (Opus's native rate), 24 kb/s, FEC on for 5 % loss, complexity 5, no DTX.
    fn default() -> Self {
        OpusConfig {
            sample_rate: 48_000,
            bitrate: 24_000,
            inband_fec: true,
            expected_loss_percent: 5,
            complexity: 5,
            dtx: false,
            max_playback_rate: 48_000,
        }
    }
}

/// Opus encoder for one mono stream.
#[derive(Debug)]
pub struct OpusEncoder {
    /// libopus encoder state, allocated once by libopus.
    inner: ::opus::Encoder,
    /// Rate of the PCM we are fed.
    sample_rate: u32,
    /// The receiver's limit ([`OpusConfig::max_playback_rate`]), as a band.
    playback_band: Band,
    /// The band the encoder is held to now: the narrower of `playback_band` and the audio it
    /// was last told it is fed ([`OpusEncoder::set_audio_rate`]).
    band: Band,
}

impl OpusEncoder {
    /// Creates an encoder with `config` applied; refuses unsupported rates and out-of-range
    /// settings.
    pub fn new(config: &OpusConfig) -> Result<Self, OpusError> {
        check_sample_rate(config.sample_rate)?;
        if !BITRATE_RANGE.contains(&config.bitrate) {
            return Err(OpusError::InvalidSetting {
                setting: "bitrate",
                value: config.bitrate,
            });
        }
        if config.complexity > MAX_COMPLEXITY {
            return Err(OpusError::InvalidSetting {
                setting: "complexity",
                value: u32::from(config.complexity),
            });
        }
        check_loss_percent(config.expected_loss_percent)?;

        let mut inner = ::opus::Encoder::new(
            config.sample_rate,
            ::opus::Channels::Mono,
            ::opus::Application::Voip,
        )?;
        let bitrate = i32::try_from(config.bitrate).expect("bitrate range fits i32");
        inner.set_bitrate(::opus::Bitrate::Bits(bitrate))?;
        inner.set_inband_fec(config.inband_fec)?;
        inner.set_packet_loss_perc(i32::from(config.expected_loss_percent))?;
        inner.set_complexity(i32::from(config.complexity))?;
        inner.set_dtx(config.dtx)?;
        // Our input is i16: telling libopus lets it ignore noise below the 16-bit floor.
        inner.set_lsb_depth(16)?;
        let playback_band = Band::of_rate(config.max_playback_rate);
        inner.set_max_bandwidth(playback_band.bandwidth())?;
        Ok(OpusEncoder {
            inner,
            sample_rate: config.sample_rate,
            playback_band,
            band: playback_band,
        })
    }

    /// Tells the encoder how wide the audio it is fed is, as a sample rate whose Nyquist band
    /// holds all of it (a mix of G.711 callers: 8000; an Opus packet's coded band:
    /// [`packet_audio_rate`]). It codes no wider than that nor than the receiver plays back:
    /// an empty band costs libopus as much as a full one (issue 19: a 20 ms frame of 48 kHz
    /// PCM at complexity 5 encodes in ~115 µs as fullband hybrid, ~55 µs as narrowband SILK),
    /// and its bits are better spent on the audio there is. One comparison when unchanged.
    /// Told before the first frame, the encoder starts in that band; later, libopus moves
    /// there through SILK's low-pass transition, over seconds (fullband to narrowband ~5.8 s
    /// in libopus 1.6), so callers should tell it how wide the audio can be, not how wide
    /// each frame is.
    pub fn set_audio_rate(&mut self, rate: u32) -> Result<(), OpusError> {
        let band = Band::of_rate(rate).min(self.playback_band);
        if band != self.band {
            self.inner.set_max_bandwidth(band.bandwidth())?;
            self.band = band;
        }
        Ok(())
    }

    /// The widest band the encoder may code now, as a sample rate (8000 … 48000).
    pub fn audio_rate(&self) -> u32 {
        self.band.rate()
    }

    /// Encodes one frame of 10, 20, 40 or 60 ms of PCM at the configured rate into `out`;
    /// returns the packet length. With DTX on, a result of 1 or 2 bytes need not be sent.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        let is_frame = ENCODER_FRAME_MS
            .iter()
            .any(|&ms| pcm.len() == samples_in_ms(self.sample_rate, ms));
        if !is_frame {
            return Err(OpusError::BadFrameSize {
                samples: pcm.len(),
                sample_rate: self.sample_rate,
            });
        }
        if out.is_empty() {
            return Err(OpusError::OutputTooSmall {
                needed: 1,
                capacity: 0,
            });
        }
        let capacity = out.len().min(MAX_ENCODED_LEN);
        Ok(self.inner.encode(pcm, &mut out[..capacity])?)
    }

    /// Changes the loss the encoder plans FEC for, e.g. from RTCP receiver reports.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), OpusError> {
        check_loss_percent(percent)?;
        Ok(self.inner.set_packet_loss_perc(i32::from(percent))?)
    }

    /// Rate of the PCM this encoder is fed.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
}

/// Whether the sender's own voice activity detection marked every frame of this packet
/// inactive: a DTX frame (no bytes), or SILK and hybrid frames whose SILK VAD flags are all
/// clear. The flags are the first range-coded symbols of each Opus frame, each with
/// probability one half, so they are the top bits of the frame's first byte (mono: one per
/// SILK frame; stereo: the mid channel's and its LBRR flag, then the side channel's) — RFC 6716
/// §4.2.3. CELT-only packets carry no flag, and code-3 packets (several frames, padding) are
/// not looked into: both answer false (decode them). Never decodes anything.
pub fn packet_is_inactive(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else {
        return false;
    };
    let config = toc >> 3;
    if config >= 16 {
        return false; // CELT only: no VAD flag
    }
    // SILK frames in one Opus frame: 10 and 20 ms hold one, 40 ms two, 60 ms three.
    let silk_frames = if config < 12 {
        [1, 1, 2, 3][usize::from(config & 3)]
    } else {
        1
    };
    let channels = if toc & 0x04 != 0 { 2 } else { 1 };
    let body = &packet[1..];
    let frames: [&[u8]; 2] = match toc & 0x03 {
        0 => [body, &[]],
        1 => {
            if body.len() % 2 != 0 {
                return false;
            }
            let (first, second) = body.split_at(body.len() / 2);
            [first, second]
        }
        2 => {
            let Some((first_len, header)) = frame_length(body) else {
                return false;
            };
            let Some(rest) = body.get(header..) else {
                return false;
            };
            if first_len > rest.len() {
                return false;
            }
            let (first, second) = rest.split_at(first_len);
            [first, second]
        }
        _ => return false,
    };
    frames.iter().all(|frame| {
        let Some(&first) = frame.first() else {
            return true; // a DTX frame
        };
        (0..channels).all(|channel| {
            (0..silk_frames).all(|i| first & (0x80 >> (channel * (silk_frames + 1) + i)) == 0)
        })
    })
}

/// A code-2 packet's first frame length (RFC 6716 §3.2.1): its value and the bytes it took.
fn frame_length(body: &[u8]) -> Option<(usize, usize)> {
    let first = usize::from(*body.first()?);
    if first < 252 {
        return Some((first, 1));
    }
    let second = usize::from(*body.get(1)?);
    Some((first + 4 * second, 2))
}

/// The audio band of a packet, as the sample rate whose Nyquist band holds it: its TOC byte's
/// bandwidth (RFC 6716 §3.1, read by libopus): narrowband 8000, mediumband 12000, wideband
/// 16000, super-wideband 24000, fullband 48000. What a decoder makes of the packet has nothing
/// above that band, whatever rate it decodes at. `None` for an empty packet.
pub fn packet_audio_rate(packet: &[u8]) -> Option<u32> {
    let bandwidth = ::opus::packet::get_bandwidth(packet).ok()?;
    Some(Band::of_bandwidth(bandwidth).rate())
}

/// Opus audio bands (RFC 6716 §2), narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Band {
    Narrow,
    Medium,
    Wide,
    SuperWide,
    Full,
}

impl Band {
    /// The narrowest band that holds audio sampled at `rate` (RFC 7587's mapping of
    /// `maxplaybackrate` onto bands: up to 8000 narrowband, 12000 mediumband, 16000 wideband,
    /// 24000 super-wideband, above that fullband).
    fn of_rate(rate: u32) -> Band {
        match rate {
            0..=8_000 => Band::Narrow,
            8_001..=12_000 => Band::Medium,
            12_001..=16_000 => Band::Wide,
            16_001..=24_000 => Band::SuperWide,
            _ => Band::Full,
        }
    }

    /// The sample rate of the band.
    fn rate(self) -> u32 {
        match self {
            Band::Narrow => 8_000,
            Band::Medium => 12_000,
            Band::Wide => 16_000,
            Band::SuperWide => 24_000,
            Band::Full => 48_000,
        }
    }

    fn of_bandwidth(bandwidth: ::opus::Bandwidth) -> Band {
        match bandwidth {
            ::opus::Bandwidth::Narrowband => Band::Narrow,
            ::opus::Bandwidth::Mediumband => Band::Medium,
            ::opus::Bandwidth::Wideband => Band::Wide,
            ::opus::Bandwidth::Superwideband => Band::SuperWide,
            ::opus::Bandwidth::Fullband | ::opus::Bandwidth::Auto => Band::Full,
        }
    }

    fn bandwidth(self) -> ::opus::Bandwidth {
        match self {
            Band::Narrow => ::opus::Bandwidth::Narrowband,
            Band::Medium => ::opus::Bandwidth::Mediumband,
            Band::Wide => ::opus::Bandwidth::Wideband,
            Band::SuperWide => ::opus::Bandwidth::Superwideband,
            Band::Full => ::opus::Bandwidth::Fullband,
        }
    }
}

/// Opus decoder for one mono stream; decodes packets of any Opus bandwidth to its own rate.
#[derive(Debug)]
pub struct OpusDecoder {
    /// libopus decoder state, allocated once by libopus.
    inner: ::opus::Decoder,
    /// Rate of the PCM we produce.
    sample_rate: u32,
}

impl OpusDecoder {
    /// Creates a decoder producing mono PCM at `sample_rate` (8000, 12000, 16000, 24000 or 48000).
    pub fn new(sample_rate: u32) -> Result<Self, OpusError> {
        check_sample_rate(sample_rate)?;
        let inner = ::opus::Decoder::new(sample_rate, ::opus::Channels::Mono)?;
        Ok(OpusDecoder { inner, sample_rate })
    }

    /// Decode a packet into `out` (capacity for 120 ms at sample_rate); returns samples written.
    ///
    /// A shorter `out` is fine as long as it holds this packet's audio
    /// ([`Self::packet_samples`]); otherwise the result is [`OpusError::OutputTooSmall`].
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        let samples = Self::packet_samples(packet, self.sample_rate)?;
        if out.len() < samples {
            return Err(OpusError::OutputTooSmall {
                needed: samples,
                capacity: out.len(),
            });
        }
        Ok(self.inner.decode(packet, &mut out[..samples], false)?)
    }

    /// Forgets everything decoded so far (`OPUS_RESET_STATE`): the next packet decodes as the
    /// first of a stream. For a decoder that skipped packets ([`packet_is_inactive`]).
    pub fn reset(&mut self) -> Result<(), OpusError> {
        Ok(self.inner.reset_state()?)
    }

    /// The packet for this frame was lost: PLC for `frame_samples` samples.
    ///
    /// `frame_samples` must be a multiple of 2.5 ms and at most 120 ms at the decoder's rate;
    /// give the lost packet's exact duration so the decoder stays aligned with the stream.
    pub fn conceal(&mut self, frame_samples: usize, out: &mut [i16]) -> Result<usize, OpusError> {
        self.check_lost_frame(frame_samples, out.len())?;
        // An empty input is libopus's "packet lost": it extrapolates from its state.
        Ok(self.inner.decode(&[], &mut out[..frame_samples], false)?)
    }

    /// The packet for this frame was lost but the NEXT packet is here: recover this frame from
    /// its in-band FEC (falls back to PLC if it has none).
    ///
    /// Decode `next_packet` normally afterwards; this call only reads its FEC part. A corrupt
    /// `next_packet` also means PLC here (see the module doc).
    pub fn recover_from_next(
        &mut self,
        next_packet: &[u8],
        frame_samples: usize,
        out: &mut [i16],
    ) -> Result<usize, OpusError> {
        self.check_lost_frame(frame_samples, out.len())?;
        if Self::packet_samples(next_packet, self.sample_rate).is_err() {
            return self.conceal(frame_samples, out);
        }
        // libopus itself runs PLC for packets without LBRR data and for the part of a gap
        // longer than the next packet's frame.
        match self
            .inner
            .decode(next_packet, &mut out[..frame_samples], true)
        {
            Ok(written) => Ok(written),
            Err(e) if e.code() == ::opus::ErrorCode::InvalidPacket => {
                self.conceal(frame_samples, out)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Audio duration of `packet` in samples at `sample_rate`, from its TOC byte and frame
    /// count (RFC 6716 §3.1). With [`RTP_CLOCK_RATE`] it is the packet's RTP timestamp span.
    pub fn packet_samples(packet: &[u8], sample_rate: u32) -> Result<usize, OpusError> {
        check_sample_rate(sample_rate)?;
        if packet.is_empty() {
            return Err(OpusError::EmptyPacket);
        }
        if packet.len() > MAX_PACKET_LEN {
            return Err(OpusError::PacketTooLong { len: packet.len() });
        }
        Ok(::opus::packet::get_nb_samples(packet, sample_rate)?)
    }

    /// Rate of the PCM this decoder produces.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Checks a lost frame's length: whole 2.5 ms steps (libopus's PLC granularity), at most
    /// one maximal packet, and room for it in `out`.
    fn check_lost_frame(&self, frame_samples: usize, capacity: usize) -> Result<(), OpusError> {
        let step = samples_in_ms(self.sample_rate, 5) / 2;
        let max = samples_in_ms(self.sample_rate, MAX_PACKET_MS);
        if frame_samples == 0 || frame_samples % step != 0 || frame_samples > max {
            return Err(OpusError::BadFrameSize {
                samples: frame_samples,
                sample_rate: self.sample_rate,
            });
        }
        if capacity < frame_samples {
            return Err(OpusError::OutputTooSmall {
                needed: frame_samples,
                capacity,
            });
        }
        Ok(())
    }
}

/// Everything that can go wrong in this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusError {
    /// A PCM rate libopus does not run at.
    UnsupportedSampleRate(u32),
    /// An encoder setting outside its range.
    InvalidSetting {
        /// Which [`OpusConfig`] field (or `set_expected_loss`).
        setting: &'static str,
        /// The refused value.
        value: u32,
    },
    /// PCM length that is not an accepted frame (encoder: 10/20/40/60 ms; PLC/FEC: a multiple
    /// of 2.5 ms up to 120 ms).
    BadFrameSize {
        /// Samples given.
        samples: usize,
        /// The codec's PCM rate.
        sample_rate: u32,
    },
    /// The caller's output buffer cannot hold the result.
    OutputTooSmall {
        /// Samples (decoder) or bytes (encoder) needed.
        needed: usize,
        /// Length of the buffer given.
        capacity: usize,
    },
    /// A zero-length packet: not Opus (use [`OpusDecoder::conceal`] for a missing one).
    EmptyPacket,
    /// A packet longer than [`MAX_PACKET_LEN`].
    PacketTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// libopus found the packet malformed.
    CorruptPacket {
        /// libopus's error text.
        message: &'static str,
    },
    /// Any other libopus failure.
    Codec {
        /// The libopus call that failed.
        call: &'static str,
        /// libopus's error text.
        message: &'static str,
    },
}

impl fmt::Display for OpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpusError::UnsupportedSampleRate(rate) => write!(
                f,
                "Opus sample rate {rate} Hz not supported (8000, 12000, 16000, 24000 or 48000)"
            ),
            OpusError::InvalidSetting { setting, value } => {
                write!(f, "Opus {setting} {value} out of range")
            }
            OpusError::BadFrameSize {
                samples,
                sample_rate,
            } => write!(
                f,
                "{samples} samples at {sample_rate} Hz is not a valid Opus frame length"
            ),
            OpusError::OutputTooSmall { needed, capacity } => {
                write!(f, "output buffer of {capacity} too small, need {needed}")
            }
            OpusError::EmptyPacket => f.write_str("empty Opus packet"),
            OpusError::PacketTooLong { len } => {
                write!(f, "Opus packet of {len} bytes exceeds {MAX_PACKET_LEN}")
            }
            OpusError::CorruptPacket { message } => write!(f, "corrupt Opus packet: {message}"),
            OpusError::Codec { call, message } => write!(f, "libopus {call}: {message}"),
        }
    }
}

impl std::error::Error for OpusError {}

impl From<::opus::Error> for OpusError {
    fn from(e: ::opus::Error) -> Self {
        if e.code() == ::opus::ErrorCode::InvalidPacket {
            return OpusError::CorruptPacket {
                message: e.description(),
            };
        }
        OpusError::Codec {
            call: e.function(),
            message: e.description(),
        }
    }
}

/// Samples in `ms` milliseconds at `sample_rate` (exact for every supported rate and 2.5 ms step).
fn samples_in_ms(sample_rate: u32, ms: u32) -> usize {
    // u32 → usize is lossless on every platform callbridge targets; the product stays < 2^32.
    (u64::from(sample_rate) * u64::from(ms) / 1000) as usize
}

fn check_sample_rate(sample_rate: u32) -> Result<(), OpusError> {
    if SUPPORTED_RATES.contains(&sample_rate) {
        Ok(())
    } else {
        Err(OpusError::UnsupportedSampleRate(sample_rate))
    }
}

fn check_loss_percent(percent: u8) -> Result<(), OpusError> {
    if percent > 100 {
        return Err(OpusError::InvalidSetting {
            setting: "expected_loss_percent",
            value: u32::from(percent),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::alloc_counter::allocations_during;

    /// Peak amplitude of the test tones (-10 dBFS), loud enough to dwarf coding noise.
    const AMPLITUDE: f64 = 10_000.0;

    #[test]
    fn the_senders_vad_marks_encoded_silence_inactive_and_a_voice_active() {
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).expect("encoder");
        let mut packet = [0u8; 1500];
        let silence = [0i16; 960];
        let tone: Vec<i16> = (0..960)
            .map(|k| {
                ((k as f64 * 2.0 * std::f64::consts::PI * 500.0 / 48_000.0).sin() * AMPLITUDE)
                    as i16
            })
            .collect();
        let mut inactive = Vec::new();
        for pcm in [&silence[..]; 6]
            .into_iter()
            .chain([&tone[..]; 6])
            .chain([&silence[..]; 6])
        {
            let len = encoder.encode(pcm, &mut packet).expect("encode");
            assert!(packet[0] >> 3 < 16, "a SILK or hybrid packet at 24 kb/s");
            inactive.push(packet_is_inactive(&packet[..len]));
        }
        assert!(inactive[..6].iter().all(|&i| i), "silence: {inactive:?}");
        assert!(
            inactive[6..12].iter().all(|&i| !i),
            "a tone is voice: {inactive:?}"
        );
        // The encoder's VAD lets go of a talkspurt after a hang-over.
        assert!(inactive[17], "silence again: {inactive:?}");
    }

    #[test]
    fn only_frames_whose_every_vad_flag_is_clear_are_inactive() {
        // TOC: config 1 (SILK NB 20 ms), mono, code 0; the flag is the first byte's top bit.
        assert!(packet_is_inactive(&[0x08, 0x3f, 0xff]));
        assert!(!packet_is_inactive(&[0x08, 0x80]));
        // SILK 60 ms (config 3): three flags, the top three bits; the LBRR flag (bit 4) is not one.
        assert!(packet_is_inactive(&[0x18, 0x10]));
        assert!(!packet_is_inactive(&[0x18, 0x20]));
        // Stereo (s bit): the side channel's flag follows the mid channel's flag and LBRR bit.
        assert!(!packet_is_inactive(&[0x0c, 0x20]));
        assert!(packet_is_inactive(&[0x0c, 0x40]));
        // Code 1: two equal frames, both looked at; code 2: the first's length, then both.
        assert!(packet_is_inactive(&[0x09, 0x01, 0x02]));
        assert!(!packet_is_inactive(&[0x09, 0x01, 0x82]));
        assert!(!packet_is_inactive(&[0x0a, 0x01, 0x01, 0x80]));
        assert!(packet_is_inactive(&[0x0a, 0x01, 0x01, 0x00]));
        assert!(
            !packet_is_inactive(&[0x0a, 0x05, 0x01]),
            "a length past the end"
        );
        // A DTX frame (the TOC alone) is inactive; CELT-only, code 3 and nothing are unknown.
        assert!(packet_is_inactive(&[0x08]));
        assert!(!packet_is_inactive(&[0x80, 0x00]));
        assert!(!packet_is_inactive(&[0x0b, 0x01, 0x00]));
        assert!(!packet_is_inactive(&[]));
    }
    /// Output skipped before measuring: codec delay plus the encoder's start-up.
    const WARMUP_MS: u32 = 100;
    /// How long a steady tone keeps libopus's VAD (and so its FEC) active, with margin.
    const FEC_ACTIVE_MS: u32 = 600;

    // ---- audio round trip -----------------------------------------------------------------

    #[test]
    fn tone_survives_round_trip_at_telephony_rates() {
        for (rate, freq) in [(48_000, 1_000.0), (16_000, 1_000.0), (8_000, 400.0)] {
            let config = OpusConfig {
                sample_rate: rate,
                ..OpusConfig::default()
            };
            let (input, packets) = encode_tone(&config, freq, 20, 1_000);
            assert_eq!(packets.len(), 50);
            let output = decode_all(rate, &packets);
            assert_eq!(
                output.len(),
                input.len(),
                "{rate} Hz: one frame out per packet"
            );
            assert_tone(
                &output[samples_in_ms(rate, WARMUP_MS)..],
                freq,
                rate,
                &input,
            );
        }
    }

    #[test]
    fn decoder_rate_is_independent_of_sender_rate() {
        // A 48 kHz sender and an 8 kHz receiver: Opus decodes any packet at any rate.
        let (_, packets) = encode_tone(&OpusConfig::default(), 400.0, 20, 1_000);
        let output = decode_all(8_000, &packets);
        assert_eq!(output.len(), 8_000);
        let reference = tone(400.0, 8_000, 8_000);
        assert_tone(
            &output[samples_in_ms(8_000, WARMUP_MS)..],
            400.0,
            8_000,
            &reference,
        );
    }

    #[test]
    fn every_telephony_frame_size_round_trips() {
        for rate in [48_000, 16_000, 8_000] {
            let config = OpusConfig {
                sample_rate: rate,
                ..OpusConfig::default()
            };
            for ms in ENCODER_FRAME_MS {
                let frame = samples_in_ms(rate, ms);
                let (input, packets) = encode_tone(&config, 400.0, ms, 1_200);
                let mut decoder = OpusDecoder::new(rate).unwrap();
                let mut out = [0i16; 5_760];
                let mut output = Vec::new();
                for packet in &packets {
                    assert_eq!(OpusDecoder::packet_samples(packet, rate), Ok(frame));
                    let rtp_span = OpusDecoder::packet_samples(packet, RTP_CLOCK_RATE);
                    assert_eq!(rtp_span, Ok(48 * ms as usize), "{ms} ms RTP timestamp step");
                    let written = decoder.decode(packet, &mut out).unwrap();
                    assert_eq!(written, frame, "{rate} Hz, {ms} ms");
                    output.extend_from_slice(&out[..written]);
                }
                assert_eq!(output.len(), input.len());
                assert_tone(&output[samples_in_ms(rate, 120)..], 400.0, rate, &input);
            }
        }
    }

    // ---- frame sizes and settings -----------------------------------------------------------

    #[test]
    fn wrong_frame_sizes_are_errors_not_panics() {
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let pcm = tone(1_000.0, 48_000, 10_000);
        let mut packet = [0u8; 1_500];
        // 2.5/5/80/100/120 ms are legal Opus but not telephony ptimes: refused too.
        for samples in [
            0, 1, 120, 240, 479, 481, 959, 961, 3_840, 4_800, 5_760, 10_000,
        ] {
            assert_eq!(
                encoder.encode(&pcm[..samples], &mut packet),
                Err(OpusError::BadFrameSize {
                    samples,
                    sample_rate: 48_000
                })
            );
        }
        assert_eq!(
            encoder.encode(&pcm[..960], &mut []),
            Err(OpusError::OutputTooSmall {
                needed: 1,
                capacity: 0
            })
        );
        let len = encoder.encode(&pcm[..960], &mut packet).unwrap();
        assert!(
            (10..=200).contains(&len),
            "24 kb/s * 20 ms is ~60 bytes, got {len}"
        );

        let mut decoder = OpusDecoder::new(48_000).unwrap();
        let mut out = [0i16; 5_760];
        for samples in [0, 1, 119, 121, 959, 5_761, 100_000] {
            let expected = Err(OpusError::BadFrameSize {
                samples,
                sample_rate: 48_000,
            });
            assert_eq!(decoder.conceal(samples, &mut out), expected);
            assert_eq!(
                decoder.recover_from_next(&packet[..len], samples, &mut out),
                expected
            );
        }
        assert_eq!(
            decoder.conceal(960, &mut out[..959]),
            Err(OpusError::OutputTooSmall {
                needed: 960,
                capacity: 959
            })
        );
        assert_eq!(
            decoder.decode(&packet[..len], &mut out[..959]),
            Err(OpusError::OutputTooSmall {
                needed: 960,
                capacity: 959
            })
        );
        // A buffer that fits this packet exactly is enough; 2.5 ms PLC steps are allowed.
        assert_eq!(decoder.decode(&packet[..len], &mut out[..960]), Ok(960));
        assert_eq!(decoder.conceal(120, &mut out), Ok(120));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let base = OpusConfig::default();
        let cases = [
            (
                OpusConfig {
                    sample_rate: 44_100,
                    ..base
                },
                OpusError::UnsupportedSampleRate(44_100),
            ),
            (
                OpusConfig {
                    bitrate: 5_999,
                    ..base
                },
                OpusError::InvalidSetting {
                    setting: "bitrate",
                    value: 5_999,
                },
            ),
            (
                OpusConfig {
                    bitrate: 510_001,
                    ..base
                },
                OpusError::InvalidSetting {
                    setting: "bitrate",
                    value: 510_001,
                },
            ),
            (
                OpusConfig {
                    complexity: 11,
                    ..base
                },
                OpusError::InvalidSetting {
                    setting: "complexity",
                    value: 11,
                },
            ),
            (
                OpusConfig {
                    expected_loss_percent: 101,
                    ..base
                },
                OpusError::InvalidSetting {
                    setting: "expected_loss_percent",
                    value: 101,
                },
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(OpusEncoder::new(&config).err(), Some(expected));
        }
        assert_eq!(
            OpusDecoder::new(11_025).err(),
            Some(OpusError::UnsupportedSampleRate(11_025))
        );
        let mut encoder = OpusEncoder::new(&base).unwrap();
        assert_eq!(encoder.sample_rate(), 48_000);
        assert!(encoder.set_expected_loss(101).is_err());
        assert_eq!(encoder.set_expected_loss(100), Ok(()));
        assert_eq!(
            OpusError::UnsupportedSampleRate(44_100).to_string(),
            "Opus sample rate 44100 Hz not supported (8000, 12000, 16000, 24000 or 48000)"
        );
    }

    #[test]
    fn dtx_sends_tiny_packets_during_silence() {
        let config = OpusConfig {
            dtx: true,
            ..OpusConfig::default()
        };
        let mut encoder = OpusEncoder::new(&config).unwrap();
        let silence = [0i16; 960];
        let mut packet = [0u8; 1_500];
        let lens: Vec<usize> = (0..50)
            .map(|_| encoder.encode(&silence, &mut packet).unwrap())
            .collect();
        // After libopus's ~200 ms hangover only a comfort-noise refresh every 400 ms is real.
        let droppable = lens[10..].iter().filter(|&&len| len <= 2).count();
        assert!(droppable >= 36, "DTX packets in 1 s of silence: {lens:?}");
        assert!(lens[..5].iter().all(|&len| len > 2), "hangover: {lens:?}");
    }

    // ---- loss: FEC and PLC ------------------------------------------------------------------

    #[test]
    fn lost_packets_are_filled_by_fec_or_plc_without_gaps() {
        for rate in [48_000, 16_000] {
            let config = OpusConfig {
                sample_rate: rate,
                expected_loss_percent: 20,
                ..OpusConfig::default()
            };
            let frame = samples_in_ms(rate, 20);
            let (input, packets) = encode_tone(&config, 1_000.0, 20, 1_000);
            let lossless = decode_all(rate, &packets);
            let lost = |i: usize| i % 5 == 4;
            let (fec_out, plc_out) = decode_with_losses(rate, &packets, lost);
            assert_eq!(fec_out.len(), input.len());
            assert_eq!(plc_out.len(), input.len());

            let tone_rms = rms(&input);
            let warm = samples_in_ms(rate, WARMUP_MS) / frame;
            for (name, output) in [("FEC", &fec_out), ("PLC", &plc_out)] {
                for (block, samples) in output.chunks(frame).enumerate().skip(warm) {
                    let level = db(rms(samples) / tone_rms);
                    assert!(
                        level > -20.0,
                        "{rate} Hz {name}: gap at block {block}, {level:.1} dB"
                    );
                }
            }
            // libopus codes FEC only for frames its VAD rates as speech; a steady tone stops
            // looking like speech after ~0.7 s, so only the start of the tone is FEC-protected.
            let fec_frames = (warm..FEC_ACTIVE_MS as usize / 20).filter(|&i| lost(i));
            for i in fec_frames {
                let span = i * frame..(i + 1) * frame;
                let level = db(rms(&fec_out[span.clone()]) / tone_rms);
                assert!(
                    level.abs() < 1.5,
                    "{rate} Hz FEC frame {i} at {level:.1} dB"
                );
                let fec_snr = snr_db(&lossless[span.clone()], &fec_out[span.clone()]);
                let plc_snr = snr_db(&lossless[span.clone()], &plc_out[span]);
                assert!(
                    fec_snr > 12.0 && fec_snr > plc_snr + 10.0,
                    "{rate} Hz frame {i}: FEC {fec_snr:.1} dB, PLC {plc_snr:.1} dB vs lossless"
                );
            }
        }
    }

    #[test]
    fn fec_follows_the_encoder_settings() {
        let lost = 14;
        let with_fec = |config: OpusConfig, loss_at_frame_10: Option<u8>| {
            let input = tone(1_000.0, 48_000, 48_000);
            let mut encoder = OpusEncoder::new(&config).unwrap();
            let mut buf = [0u8; 1_500];
            let packets: Vec<Vec<u8>> = input
                .chunks(960)
                .enumerate()
                .map(|(i, frame)| {
                    if let (10, Some(percent)) = (i, loss_at_frame_10) {
                        encoder.set_expected_loss(percent).unwrap();
                    }
                    let len = encoder.encode(frame, &mut buf).unwrap();
                    buf[..len].to_vec()
                })
                .collect();
            let lossless = decode_all(48_000, &packets);
            let (fec_out, plc_out) = decode_with_losses(48_000, &packets, |i| i == lost);
            let span = lost * 960..(lost + 1) * 960;
            // Without LBRR data libopus's FEC path is exactly its PLC.
            let recovered = fec_out[span.clone()] != plc_out[span.clone()];
            let snr = snr_db(&lossless[span.clone()], &fec_out[span]);
            (recovered, snr)
        };
        let base = OpusConfig {
            expected_loss_percent: 10,
            ..OpusConfig::default()
        };
        let (recovered, snr) = with_fec(base, None);
        assert!(recovered && snr > 15.0, "FEC on, 10 % loss: {snr:.1} dB");
        let no_fec = OpusConfig {
            inband_fec: false,
            ..base
        };
        assert!(!with_fec(no_fec, None).0, "FEC off: PLC only");
        let no_loss = OpusConfig {
            expected_loss_percent: 0,
            ..base
        };
        assert!(
            !with_fec(no_loss, None).0,
            "0 % expected loss: libopus sends no FEC"
        );
        let (recovered, snr) = with_fec(no_loss, Some(10));
        assert!(recovered && snr > 15.0, "loss raised to 10 %: {snr:.1} dB");
    }

    #[test]
    fn the_encoder_codes_no_wider_than_its_audio_or_its_receiver() {
        let input = fullband_audio(48_000 * 10);
        let mut buf = [0u8; 1_500];
        // The band of every packet, with `width` told before the first frame and `later`
        // after `at` frames.
        let mut bands = |config: OpusConfig, width: u32, later: Option<(usize, u32)>| {
            let mut encoder = OpusEncoder::new(&config).unwrap();
            encoder.set_audio_rate(width).unwrap();
            assert_eq!(encoder.audio_rate(), width.min(config.max_playback_rate));
            input
                .chunks(960)
                .enumerate()
                .map(|(i, frame)| {
                    if let Some((_, width)) = later.filter(|&(at, _)| at == i) {
                        encoder.set_audio_rate(width).unwrap();
                    }
                    let len = encoder.encode(frame, &mut buf).unwrap();
                    packet_audio_rate(&buf[..len]).unwrap()
                })
                .collect::<Vec<u32>>()
        };
        // Told before it starts, the encoder codes that band from its first packet.
        for width in [8_000, 12_000, 16_000, 24_000, 48_000] {
            let coded = bands(OpusConfig::default(), width, None);
            assert!(
                coded.iter().all(|&band| band == width),
                "{width}: {coded:?}"
            );
        }
        // Never wider than the receiver plays back.
        let wideband_phone = OpusConfig {
            max_playback_rate: 16_000,
            ..OpusConfig::default()
        };
        for (width, coded_band) in [(48_000, 16_000), (24_000, 16_000), (8_000, 8_000)] {
            let coded = bands(wideband_phone, width, None);
            assert!(
                coded.iter().all(|&band| band == coded_band),
                "{width}: {coded:?}"
            );
        }
        // Narrowed while it runs, it gets there through SILK's low-pass transition (libopus
        // 1.6: ~5.8 s from fullband to narrowband), and stays.
        let coded = bands(OpusConfig::default(), 48_000, Some((10, 8_000)));
        assert_eq!(coded[..10], [48_000; 10]);
        let narrow_from = coded
            .iter()
            .position(|&band| band == 8_000)
            .expect("narrows");
        assert!(narrow_from < 400, "narrowband from frame {narrow_from}");
        assert!(coded[narrow_from..].iter().all(|&band| band == 8_000));
        assert_eq!(packet_audio_rate(&[]), None);
    }

    // ---- packet inspection and robustness ---------------------------------------------------

    #[test]
    fn packet_samples_reads_the_toc() {
        let (_, packets) = encode_tone(&OpusConfig::default(), 1_000.0, 20, 100);
        for packet in &packets {
            assert_eq!(OpusDecoder::packet_samples(packet, 48_000), Ok(960));
            assert_eq!(OpusDecoder::packet_samples(packet, 16_000), Ok(320));
            assert_eq!(OpusDecoder::packet_samples(packet, 8_000), Ok(160));
        }
        // TOC config 1 = SILK NB 20 ms; code 3 with 3 frames = 60 ms; code 3 with 7 frames of
        // 20 ms = 140 ms, over the 120 ms limit.
        assert_eq!(OpusDecoder::packet_samples(&[0x08], 48_000), Ok(960));
        assert_eq!(
            OpusDecoder::packet_samples(&[0x0b, 0x03], 48_000),
            Ok(2_880)
        );
        assert_eq!(
            OpusDecoder::packet_samples(&[0x0b, 0x07], 48_000),
            Err(OpusError::CorruptPacket {
                message: "corrupted stream"
            })
        );
        assert_eq!(
            OpusDecoder::packet_samples(&[], 48_000),
            Err(OpusError::EmptyPacket)
        );
        assert_eq!(
            OpusDecoder::packet_samples(&[0x08], 44_100),
            Err(OpusError::UnsupportedSampleRate(44_100))
        );
    }

    #[test]
    fn garbage_packets_give_errors_or_audio_never_a_panic() {
        let mut rng = 0x5EED_0F05_u64;
        let mut decoder = OpusDecoder::new(48_000).unwrap();
        let mut out = [0i16; 5_760];
        let mut garbage = vec![0u8; 100_000];
        let mut sizes: Vec<usize> = (0..=64).collect();
        sizes.extend([1_275, 1_276, 1_500, 3_832, 4_000, 65_535, 65_536, 100_000]);
        sizes.extend((0..2_000).map(|_| (xorshift(&mut rng) % 1_600) as usize));
        let (mut decoded, mut refused) = (0, 0);
        for &size in &sizes {
            for byte in &mut garbage[..size] {
                *byte = xorshift(&mut rng) as u8;
            }
            let packet = &garbage[..size];
            match decoder.decode(packet, &mut out) {
                Ok(n) => {
                    decoded += 1;
                    assert!(n > 0 && n <= 5_760 && n % 120 == 0, "{size} bytes gave {n}");
                    assert_eq!(OpusDecoder::packet_samples(packet, 48_000), Ok(n));
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
            // FEC from garbage falls back to PLC: the lost frame is always filled.
            assert_eq!(decoder.recover_from_next(packet, 960, &mut out), Ok(960));
        }
        assert!(
            decoded > 100 && refused > 100,
            "{decoded} decoded, {refused} refused"
        );
        assert_eq!(decoder.decode(&[], &mut out), Err(OpusError::EmptyPacket));
        assert_eq!(
            decoder.decode(&garbage[..65_536], &mut out),
            Err(OpusError::PacketTooLong { len: 65_536 })
        );

        // The same decoder still plays a real stream afterwards.
        let (input, packets) = encode_tone(&OpusConfig::default(), 1_000.0, 20, 500);
        let mut output = Vec::new();
        for packet in &packets {
            let n = decoder.decode(packet, &mut out).unwrap();
            output.extend_from_slice(&out[..n]);
        }
        assert_tone(
            &output[samples_in_ms(48_000, 200)..],
            1_000.0,
            48_000,
            &input,
        );
    }

    #[test]
    fn steady_state_encode_and_decode_do_not_allocate() {
        assert_eq!(
            allocations_during(|| drop(vec![0u8; 8])),
            1,
            "the counter works"
        );
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new(48_000).unwrap();
        let pcm = tone(1_000.0, 48_000, 48_000);
        let mut packet = [0u8; 1_500];
        let mut next = [0u8; 1_500];
        let mut out = [0i16; 5_760];
        let mut decoded = 0;
        let allocations = allocations_during(|| {
            for frame in pcm.chunks(960).take(40) {
                let len = encoder.encode(frame, &mut packet).unwrap();
                decoded += decoder.decode(&packet[..len], &mut out).unwrap();
                decoded += decoder.conceal(960, &mut out).unwrap();
                let next_len = encoder.encode(frame, &mut next).unwrap();
                decoded += decoder
                    .recover_from_next(&next[..next_len], 960, &mut out)
                    .unwrap();
                decoded += OpusDecoder::packet_samples(&next[..next_len], 48_000).unwrap();
                // Error paths too: a bad frame size and a corrupt packet.
                let _ = encoder.encode(&frame[..100], &mut packet);
                let _ = decoder.decode(&[0x0b, 0x07], &mut out);
                encoder.set_expected_loss(10).unwrap();
            }
        });
        assert_eq!(allocations, 0);
        assert_eq!(decoded, 40 * 4 * 960);
    }

    // ---- helpers ----------------------------------------------------------------------------

    /// `samples` of fullband content at 48 kHz, as a room of 48 kHz talkers gives: a 1 kHz tone
    /// and white noise (deterministic).
    pub(crate) fn fullband_audio(samples: usize) -> Vec<i16> {
        let mut noise = 0x2545_f491_4f6c_dd1d_u64;
        tone(1_000.0, 48_000, samples)
            .iter()
            .map(|&s| s / 2 + (xorshift(&mut noise) >> 52) as i16 - 2048)
            .collect()
    }

    /// `samples` of a sine at `freq` Hz, phase continuous from sample 0.
    fn tone(freq: f64, rate: u32, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                let phase = std::f64::consts::TAU * freq * n as f64 / f64::from(rate);
                (AMPLITUDE * phase.sin()).round() as i16
            })
            .collect()
    }

    /// Encodes `duration_ms` of a tone in `frame_ms` frames; returns the input and the packets.
    fn encode_tone(
        config: &OpusConfig,
        freq: f64,
        frame_ms: u32,
        duration_ms: u32,
    ) -> (Vec<i16>, Vec<Vec<u8>>) {
        let rate = config.sample_rate;
        let input = tone(freq, rate, samples_in_ms(rate, duration_ms));
        let mut encoder = OpusEncoder::new(config).unwrap();
        let mut buf = [0u8; 1_500];
        let packets = input
            .chunks(samples_in_ms(rate, frame_ms))
            .map(|frame| {
                let len = encoder.encode(frame, &mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect();
        (input, packets)
    }

    fn decode_all(rate: u32, packets: &[Vec<u8>]) -> Vec<i16> {
        let mut decoder = OpusDecoder::new(rate).unwrap();
        let mut out = [0i16; 5_760];
        let mut output = Vec::new();
        for packet in packets {
            let n = decoder.decode(packet, &mut out).unwrap();
            output.extend_from_slice(&out[..n]);
        }
        output
    }

    /// Decodes `packets`, losing those for which `lost` holds, twice: recovering each lost
    /// frame from the next packet's FEC, and concealing it. Returns (FEC output, PLC output).
    fn decode_with_losses(
        rate: u32,
        packets: &[Vec<u8>],
        lost: impl Fn(usize) -> bool,
    ) -> (Vec<i16>, Vec<i16>) {
        let mut fec_decoder = OpusDecoder::new(rate).unwrap();
        let mut plc_decoder = OpusDecoder::new(rate).unwrap();
        let (mut fec_out, mut plc_out) = (Vec::new(), Vec::new());
        let mut buf = [0i16; 5_760];
        for (i, packet) in packets.iter().enumerate() {
            let frame = OpusDecoder::packet_samples(packet, rate).unwrap();
            if lost(i) {
                let next = packets.get(i + 1).map_or(&[][..], |p| &p[..]);
                let n = fec_decoder
                    .recover_from_next(next, frame, &mut buf)
                    .unwrap();
                assert_eq!(n, frame);
                fec_out.extend_from_slice(&buf[..n]);
                let n = plc_decoder.conceal(frame, &mut buf).unwrap();
                assert_eq!(n, frame);
                plc_out.extend_from_slice(&buf[..n]);
                continue;
            }
            let n = fec_decoder.decode(packet, &mut buf).unwrap();
            fec_out.extend_from_slice(&buf[..n]);
            let n = plc_decoder.decode(packet, &mut buf).unwrap();
            plc_out.extend_from_slice(&buf[..n]);
        }
        (fec_out, plc_out)
    }

    /// The tone dominates (> 20 dB over 3 kHz, 500 Hz and its 3rd harmonic) and its level is
    /// within 3 dB of `input`'s.
    fn assert_tone(output: &[i16], freq: f64, rate: u32, input: &[i16]) {
        let signal = goertzel_db(output, freq, rate);
        for other in [3_000.0, 500.0, 3.0 * freq] {
            if other >= f64::from(rate) / 2.0 {
                continue;
            }
            let margin = signal - goertzel_db(output, other, rate);
            assert!(
                margin > 20.0,
                "{rate} Hz: {freq} Hz only {margin:.1} dB over {other} Hz"
            );
        }
        let level = db(rms(output) / rms(input));
        assert!(
            level.abs() < 3.0,
            "{rate} Hz: level {level:.2} dB off the input"
        );
    }

    /// Power (dB) at `freq` over the Hann-windowed `samples`.
    fn goertzel_db(samples: &[i16], freq: f64, rate: u32) -> f64 {
        let coeff = 2.0 * (std::f64::consts::TAU * freq / f64::from(rate)).cos();
        let len = samples.len() as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for (n, &x) in samples.iter().enumerate() {
            let window = 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / len).cos();
            let s0 = f64::from(x) * window + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        10.0 * (power + 1e-9).log10()
    }

    fn rms(samples: &[i16]) -> f64 {
        let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
        (energy / samples.len().max(1) as f64).sqrt()
    }

    fn db(ratio: f64) -> f64 {
        20.0 * (ratio + 1e-12).log10()
    }

    /// Signal-to-error ratio of `test` against `reference`, in dB.
    fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
        let error: Vec<i16> = reference
            .iter()
            .zip(test)
            .map(|(&r, &t)| r.saturating_sub(t))
            .collect();
        db(rms(reference) / rms(&error))
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }
}
