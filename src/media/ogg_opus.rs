//! Ogg Opus recordings (RFC 7845): written so that a killed process leaves a file of complete
//! pages, and [`recover`]ed afterwards.
//!
//! Owns: encoding interleaved 16-bit PCM (mono or stereo, 8–48 kHz) into 20 ms Opus packets,
//! laying them into Ogg pages with RFC 7845 granule positions, the `OpusHead` / `OpusTags`
//! header packets, end trimming, and cutting a recording whose writer died back to its last
//! complete page.
//! Must not: resample (the caller feeds one of the rates Opus encodes natively), read the
//! clock, touch the network, or run on a media worker's packet path: every call does blocking
//! file I/O, and encoding allocates per packet.
//!
//! # Files written by [`OggOpusWriter`]
//!
//! One logical stream, mapping family 0 (mono, or one coupled stereo stream):
//!
//! 1. a page (BOS) holding only `OpusHead`: version 1, the channel count, the pre-skip (the
//!    encoder's lookahead in 48 kHz samples), the input sample rate, output gain 0, mapping
//!    family 0;
//! 2. a page holding only `OpusTags`: vendor string `callbridge`, one comment
//!    `ENCODER=callbridge`;
//! 3. audio pages of 20 ms packets. A page's granule position is the number of 48 kHz samples
//!    decoded through its last packet, pre-skip included (RFC 7845 §4). A page ends at every
//!    [`OggOpusWriter::sync`] and whenever the next packet would not fit its 255 lacing values;
//!    the last page has EOS and an end-trimmed granule (§4.4): the input is padded with silence
//!    to a whole frame and past the encoder's lookahead, and the granule says where the input
//!    ended, so a decoder plays exactly the samples written.
//!
//! Crash tolerance: packets wait in memory for their page to end. [`OggOpusWriter::sync`] ends
//! the page and hands everything to the kernel (no fsync; only [`OggOpusWriter::finish`]
//! fsyncs), so a process killed at any time leaves the pages of the last sync, possibly
//! followed by part of a page, which [`recover`] cuts off. Input not yet making up a whole
//! 20 ms frame is never in the file before `finish`.
//!
//! Bitrate: 24 kb/s mono, 32 kb/s stereo, VBR, libopus's VoIP application at complexity 5
//! (cheaper than the default 10 with many recordings at once): speech, not music.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ogg::reading::{BasePacketReader, PageParser};
use ogg::{OggReadError, PacketWriteEndInfo, PacketWriter};

/// Input rates Opus encodes natively.
pub const INPUT_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];
/// The rate of granule positions and pre-skip (RFC 7845 §4).
const GRANULE_RATE: u32 = 48_000;
/// 48 kHz samples in one 20 ms packet.
const GRANULES_PER_PACKET: u64 = 960;
/// Packets per second.
const PACKETS_PER_SECOND: u32 = 50;
/// libopus's recommended ceiling for one encoded packet.
const MAX_PACKET_BYTES: usize = 4_000;
/// Lacing values an Ogg page can hold.
const MAX_SEGMENTS: u64 = 255;
/// Bytes of an Ogg page header before its lacing values.
const PAGE_HEADER_BYTES: u64 = 27;
/// Offset of the header-type flags in a page header.
const PAGE_FLAGS_AT: usize = 5;
/// Offset of the granule position in a page header.
const PAGE_GRANULE_AT: usize = 6;
/// Offset of the CRC in a page header.
const PAGE_CRC_AT: usize = 22;
/// Header-type flag: last page of the logical stream.
const FLAG_EOS: u8 = 0x04;
/// Length of an `OpusHead` packet with mapping family 0.
const OPUS_HEAD_BYTES: usize = 19;
/// `OpusTags` vendor string.
const VENDOR: &str = "callbridge";
/// The one `OpusTags` user comment.
const ENCODER_COMMENT: &str = "ENCODER=callbridge";
/// Target bitrates, bit/s: enough for wideband speech.
const MONO_BITRATE: i32 = 24_000;
const STEREO_BITRATE: i32 = 32_000;
/// libopus complexity (0..=10), as for the media path's encoders.
const COMPLEXITY: i32 = 5;

/// Why an Ogg Opus recording cannot be written or recovered.
#[derive(Debug)]
pub enum OggOpusError {
    /// Creating, writing, reading, cutting or syncing the file failed.
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system reported.
        source: io::Error,
    },
    /// An input rate Opus does not encode natively (see [`INPUT_RATES`]).
    UnsupportedRate {
        /// The rate asked for, Hz.
        rate: u32,
    },
    /// Neither mono nor stereo.
    UnsupportedChannels {
        /// The channel count asked for.
        channels: u16,
    },
    /// A write of samples that are not whole frames (an odd count in a stereo file).
    PartialFrame {
        /// Samples handed to [`OggOpusWriter::write`].
        samples: usize,
        /// Channels of the file.
        channels: u16,
    },
    /// libopus refused to create the encoder or to encode.
    Encoder {
        /// The file being written.
        path: PathBuf,
        /// What libopus reported.
        source: ::opus::Error,
    },
    /// An earlier error left the writer unusable; drop it (and [`recover`] the file).
    Failed {
        /// The file being written.
        path: PathBuf,
    },
    /// [`recover`] found no complete first page holding an `OpusHead`.
    NoHead {
        /// The file concerned.
        path: PathBuf,
    },
}

impl fmt::Display for OggOpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "I/O error on {}: {source}", path.display()),
            Self::UnsupportedRate { rate } => write!(
                f,
                "Opus cannot encode {rate} Hz; use 8000, 12000, 16000, 24000 or 48000 Hz"
            ),
            Self::UnsupportedChannels { channels } => {
                write!(f, "{channels} channels; only mono and stereo are supported")
            }
            Self::PartialFrame { samples, channels } => write!(
                f,
                "{samples} samples are not whole frames of {channels} interleaved channels"
            ),
            Self::Encoder { path, source } => {
                write!(f, "Opus encoder error on {}: {source}", path.display())
            }
            Self::Failed { path } => write!(
                f,
                "{}: the writer stopped after an earlier error",
                path.display()
            ),
            Self::NoHead { path } => write!(
                f,
                "{}: no complete Ogg page with an OpusHead at the start",
                path.display()
            ),
        }
    }
}

impl std::error::Error for OggOpusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Encoder { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes an Ogg Opus recording (module docs: layout, paging and crash tolerance).
///
/// After any error the writer refuses every further call with [`OggOpusError::Failed`]: drop
/// it and [`recover`] the file. Dropping a writer without [`OggOpusWriter::finish`] ends the
/// open page and flushes it (errors ignored), without EOS and without fsync.
pub struct OggOpusWriter {
    /// The Ogg layer over the buffered file.
    pages: PacketWriter<'static, BufWriter<File>>,
    path: PathBuf,
    /// Serial number of the one logical stream.
    serial: u32,
    encoder: ::opus::Encoder,
    /// Rate of the PCM we are fed (one of [`INPUT_RATES`]).
    input_rate: u32,
    /// 1 or 2; input is interleaved.
    channels: u16,
    /// Encoder lookahead in 48 kHz samples, as written in `OpusHead`.
    pre_skip: u16,
    /// Interleaved samples of one 20 ms frame.
    frame_samples: usize,
    /// Input of the frame being filled (always shorter than `frame_samples` between calls).
    frame: Vec<i16>,
    /// Output buffer of the encoder.
    encoded: Vec<u8>,
    /// The newest packet and its granule position, not yet handed to the Ogg layer: whether
    /// it ends a page (and the stream) is known only when the next packet, a sync or the
    /// finish comes.
    held: Option<(Vec<u8>, u64)>,
    /// Packets encoded so far; the granule position of the n-th is n × 960.
    packets: u64,
    /// Frames (samples per channel) accepted by `write`.
    frames_in: u64,
    /// Lacing values of the packets in the page the Ogg layer has open.
    page_segments: u64,
    /// Payload bytes of the packets in that page.
    page_body: u64,
    /// Bytes of complete pages handed to the file.
    committed: u64,
    /// Set by the first error: every later call fails.
    failed: bool,
    /// Set by `finish`, so that `Drop` leaves the file alone.
    finished: bool,
}

impl fmt::Debug for OggOpusWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("path", &self.path)
            .field("input_rate", &self.input_rate)
            .field("channels", &self.channels)
            .field("frames_in", &self.frames_in)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl OggOpusWriter {
    /// Creates (or truncates) `path` and writes the `OpusHead` and `OpusTags` pages, flushed so
    /// the file is a valid (empty) stream from the start. `input_rate` must be one of
    /// [`INPUT_RATES`] and `channels` 1 or 2.
    pub fn create(path: &Path, input_rate: u32, channels: u16) -> Result<Self, OggOpusError> {
        if !INPUT_RATES.contains(&input_rate) {
            return Err(OggOpusError::UnsupportedRate { rate: input_rate });
        }
        let (opus_channels, bitrate) = match channels {
            1 => (::opus::Channels::Mono, MONO_BITRATE),
            2 => (::opus::Channels::Stereo, STEREO_BITRATE),
            _ => return Err(OggOpusError::UnsupportedChannels { channels }),
        };
        let encoder_error = |source| OggOpusError::Encoder {
            path: path.to_path_buf(),
            source,
        };
        let mut encoder =
            ::opus::Encoder::new(input_rate, opus_channels, ::opus::Application::Voip)
                .map_err(encoder_error)?;
        encoder
            .set_bitrate(::opus::Bitrate::Bits(bitrate))
            .and_then(|()| encoder.set_complexity(COMPLEXITY))
            .and_then(|()| encoder.set_lsb_depth(16))
            .map_err(encoder_error)?;
        let lookahead = encoder.get_lookahead().map_err(encoder_error)?;
        let pre_skip = u32::try_from(lookahead)
            .ok()
            .and_then(|samples| samples.checked_mul(GRANULE_RATE / input_rate))
            .and_then(|granules| u16::try_from(granules).ok())
            .expect("libopus's lookahead is a few ms, never negative");

        let file = File::create(path).map_err(|source| io_error(path, source))?;
        let mut writer = OggOpusWriter {
            pages: PacketWriter::new(BufWriter::new(file)),
            path: path.to_path_buf(),
            serial: rand::random(),
            encoder,
            input_rate,
            channels,
            pre_skip,
            frame_samples: (input_rate / PACKETS_PER_SECOND) as usize * usize::from(channels),
            frame: Vec::new(),
            encoded: vec![0; MAX_PACKET_BYTES],
            held: None,
            packets: 0,
            frames_in: 0,
            page_segments: 0,
            page_body: 0,
            committed: 0,
            failed: false,
            finished: false,
        };
        writer.frame.reserve_exact(writer.frame_samples);
        let head = opus_head(channels, pre_skip, input_rate);
        let tags = opus_tags();
        // Each header packet alone on its page (RFC 7845 §3); header pages have granule 0.
        writer
            .emit(head, 0, PacketWriteEndInfo::EndPage)
            .and_then(|()| writer.emit(tags, 0, PacketWriteEndInfo::EndPage))
            .and_then(|()| writer.pages.inner_mut().flush())
            .map_err(|source| io_error(path, source))?;
        Ok(writer)
    }

    /// Takes `samples` (interleaved, left first, when stereo), encoding every complete 20 ms
    /// frame; the rest waits for the next call. Fails without taking anything if the samples
    /// are not whole frames.
    pub fn write(&mut self, samples: &[i16]) -> Result<(), OggOpusError> {
        self.usable()?;
        if samples.len() % usize::from(self.channels) != 0 {
            return Err(OggOpusError::PartialFrame {
                samples: samples.len(),
                channels: self.channels,
            });
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let wanted = self.frame_samples - self.frame.len();
            let (now, later) = rest.split_at(wanted.min(rest.len()));
            self.frame.extend_from_slice(now);
            rest = later;
            if self.frame.len() == self.frame_samples {
                self.encode_frame()?;
            }
        }
        self.frames_in += (samples.len() / usize::from(self.channels)) as u64;
        Ok(())
    }

    /// Ends the open page and hands every complete page to the kernel (no fsync), so the file
    /// is a valid stream as it stands. Input short of a whole frame stays in memory. Call
    /// about once a second.
    pub fn sync(&mut self) -> Result<(), OggOpusError> {
        self.usable()?;
        let result = self.end_page();
        self.check(result)
    }

    /// Pads the last partial frame with silence, encodes past the encoder's lookahead, writes
    /// the last page (EOS, end-trimmed granule), fsyncs and closes the file. Returns the
    /// frames (samples per channel, at the input rate) written.
    pub fn finish(mut self) -> Result<u64, OggOpusError> {
        self.usable()?;
        let end_granule =
            u64::from(self.pre_skip) + self.frames_in * u64::from(GRANULE_RATE / self.input_rate);
        // Silence after the input: completes the last frame, then brings the input's last
        // sample out of the encoder's lookahead. The last packet must exist to carry EOS.
        while self.packets * GRANULES_PER_PACKET < end_granule || self.held.is_none() {
            self.frame.resize(self.frame_samples, 0);
            self.encode_frame()?;
        }
        let (last, _) = self
            .held
            .take()
            .expect("the loop above leaves a held packet");
        let result = self
            .emit(last, end_granule, PacketWriteEndInfo::EndStream)
            .and_then(|()| self.pages.inner_mut().flush())
            .and_then(|()| self.pages.inner().get_ref().sync_all());
        self.check(result)?;
        self.finished = true;
        Ok(self.frames_in)
    }

    /// Frames (samples per channel) accepted by [`OggOpusWriter::write`] so far.
    pub fn samples_written(&self) -> u64 {
        self.frames_in
    }

    /// Channels of the file: 1 or 2.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// The rate samples are fed at, Hz.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Bytes the file will have once the open page ends: the pages written so far plus the
    /// page holding the packets encoded since (input short of a frame is not counted).
    pub fn bytes_written(&self) -> u64 {
        let held = self
            .held
            .as_ref()
            .map_or(0, |(packet, _)| packet.len() as u64);
        let segments = self.page_segments + self.held.as_ref().map_or(0, |(p, _)| segments(p));
        let open = if segments == 0 {
            0
        } else {
            PAGE_HEADER_BYTES + segments + self.page_body + held
        };
        self.committed + open
    }

    fn usable(&self) -> Result<(), OggOpusError> {
        if self.failed {
            return Err(OggOpusError::Failed {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Marks the writer failed on an I/O error and names the file in it.
    fn check(&mut self, result: io::Result<()>) -> Result<(), OggOpusError> {
        result.map_err(|source| {
            self.failed = true;
            io_error(&self.path, source)
        })
    }

    /// Encodes the full `frame` into a packet and queues it.
    fn encode_frame(&mut self) -> Result<(), OggOpusError> {
        let len = match self.encoder.encode(&self.frame, &mut self.encoded) {
            Ok(len) => len,
            Err(source) => {
                self.failed = true;
                return Err(OggOpusError::Encoder {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        self.frame.clear();
        let packet = self.encoded.get(..len).unwrap_or_default().to_vec();
        let result = self.queue(packet);
        self.check(result)
    }

    /// Holds `packet` back and hands the one held before to the Ogg layer, ending the page
    /// with it when `packet` would not fit after it.
    fn queue(&mut self, packet: Vec<u8>) -> io::Result<()> {
        self.packets += 1;
        let granule = self.packets * GRANULES_PER_PACKET;
        if let Some((previous, previous_granule)) = self.held.take() {
            let full = self.page_segments + segments(&previous) + segments(&packet) > MAX_SEGMENTS;
            let end = if full {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.emit(previous, previous_granule, end)?;
        }
        self.held = Some((packet, granule));
        Ok(())
    }

    /// Ends the open page with the held packet, if any, and flushes to the kernel.
    fn end_page(&mut self) -> io::Result<()> {
        if let Some((packet, granule)) = self.held.take() {
            self.emit(packet, granule, PacketWriteEndInfo::EndPage)?;
        }
        self.pages.inner_mut().flush()
    }

    /// Hands one packet to the Ogg layer, keeping count of the page it goes into. The caller
    /// keeps every page within [`MAX_SEGMENTS`], so the Ogg layer never ends one by itself.
    fn emit(&mut self, packet: Vec<u8>, granule: u64, end: PacketWriteEndInfo) -> io::Result<()> {
        self.page_segments += segments(&packet);
        self.page_body += packet.len() as u64;
        self.pages.write_packet(packet, self.serial, end, granule)?;
        if end != PacketWriteEndInfo::NormalPacket {
            self.committed += PAGE_HEADER_BYTES + self.page_segments + self.page_body;
            self.page_segments = 0;
            self.page_body = 0;
        }
        Ok(())
    }
}

impl Drop for OggOpusWriter {
    fn drop(&mut self) {
        if !self.finished && !self.failed {
            // Best effort: a drop has nowhere to report an error, and `recover` cuts a
            // partial page later.
            let _ = self.end_page();
        }
    }
}

/// What [`recover`] found in a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Frames (samples per channel) at `rate` the file plays.
    pub frames: u64,
    /// The input sample rate from `OpusHead` (48000 when it says 0, "unspecified").
    pub rate: u32,
    /// The channel count from `OpusHead`.
    pub channels: u16,
    /// Playing time, ms.
    pub duration_ms: u64,
    /// Bytes cut off the end (a partial or damaged page).
    pub cut_bytes: u64,
}

/// Makes a recording whose writer was killed a valid stream and tells how long it plays.
///
/// Reads whole pages from the start (CRC-checked, through the `ogg` crate); the first that is
/// incomplete, damaged or out of sequence ends the file: it and everything after it are cut
/// off (`set_len`). If the last page kept lacks the EOS flag, the flag is set (and its CRC
/// redone). The file is fsynced when changed. The length is the last granule position minus
/// the pre-skip from `OpusHead`; a file with only header pages plays 0 frames. A file whose
/// first page is not a complete `OpusHead` page is [`OggOpusError::NoHead`], left untouched.
pub fn recover(path: &Path) -> Result<Recovered, OggOpusError> {
    let io = |source| io_error(path, source);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let scan = scan(&mut BufReader::new(&file), len).map_err(io)?;
    let Some(head) = scan.head else {
        return Err(OggOpusError::NoHead {
            path: path.to_path_buf(),
        });
    };
    let mut changed = false;
    if scan.end < len {
        file.set_len(scan.end).map_err(io)?;
        changed = true;
    }
    if let Some(at) = scan.last_page_at.filter(|_| !scan.eos) {
        mark_eos(&mut file, at, scan.end).map_err(io)?;
        changed = true;
    }
    if changed {
        file.sync_all().map_err(io)?;
    }

    let rate = if head.input_rate == 0 {
        GRANULE_RATE
    } else {
        head.input_rate
    };
    let granules = scan
        .granule
        .unwrap_or(0)
        .saturating_sub(u64::from(head.pre_skip));
    Ok(Recovered {
        frames: mul_div(granules, u64::from(rate), u64::from(GRANULE_RATE)),
        rate,
        channels: u16::from(head.channels),
        duration_ms: mul_div(granules, 1000, u64::from(GRANULE_RATE)),
        cut_bytes: len - scan.end,
    })
}

/// The `OpusHead` fields [`recover`] needs.
#[derive(Debug, Clone, Copy)]
struct OpusHead {
    channels: u8,
    pre_skip: u16,
    input_rate: u32,
}

/// What [`scan`] found.
#[derive(Debug, Default)]
struct Scan {
    head: Option<OpusHead>,
    /// End of the last good page (0 if none).
    end: u64,
    /// Start of the last good page.
    last_page_at: Option<u64>,
    /// Whether the last good page has EOS.
    eos: bool,
    /// Granule position of the last good page on which a packet ends.
    granule: Option<u64>,
}

/// Reads good pages from the start of `src` (`len` bytes) until one is not.
fn scan(src: &mut impl Read, len: u64) -> io::Result<Scan> {
    let mut found = Scan::default();
    let mut packets = BasePacketReader::new();
    let mut pos = 0u64;
    let mut first = true;
    while let Some((page, granule, flags, page_len)) = read_page(src, len - pos)? {
        if packets.push_page(page).is_err() {
            break;
        }
        if first {
            let head = packets.read_packet().and_then(|p| parse_head(&p.data));
            if head.is_none() {
                return Ok(found);
            }
            found.head = head;
            first = false;
        }
        while packets.read_packet().is_some() {}
        // Header pages have granule 0; -1 means no packet ends on the page.
        if granule != u64::MAX && granule != 0 {
            found.granule = Some(granule);
        }
        found.last_page_at = Some(pos);
        found.eos = flags & FLAG_EOS != 0;
        pos += page_len;
        found.end = pos;
    }
    Ok(found)
}

/// One page from `src`, if `left` bytes hold a whole one that starts with the capture pattern
/// and passes its CRC: the page, its granule position, flags and length.
fn read_page(
    src: &mut impl Read,
    left: u64,
) -> io::Result<Option<(ogg::reading::OggPage, u64, u8, u64)>> {
    if left < PAGE_HEADER_BYTES {
        return Ok(None);
    }
    let mut header = [0u8; PAGE_HEADER_BYTES as usize];
    src.read_exact(&mut header)?;
    if header.get(..4) != Some(b"OggS".as_slice()) {
        return Ok(None);
    }
    let (mut parser, lacing_len) = match PageParser::new(header) {
        Ok(parsed) => parsed,
        Err(OggReadError::ReadError(e)) => return Err(e),
        Err(_) => return Ok(None),
    };
    let lacing_len = lacing_len as u64;
    if left < PAGE_HEADER_BYTES + lacing_len {
        return Ok(None);
    }
    let mut lacing = vec![0; lacing_len as usize];
    src.read_exact(&mut lacing)?;
    let body_len = parser.parse_segments(lacing) as u64;
    let page_len = PAGE_HEADER_BYTES + lacing_len + body_len;
    if left < page_len {
        return Ok(None);
    }
    let mut body = vec![0; body_len as usize];
    src.read_exact(&mut body)?;
    let Ok(page) = parser.parse_packet_data(body) else {
        return Ok(None);
    };
    let mut granule = [0u8; 8];
    granule.copy_from_slice(&header[PAGE_GRANULE_AT..PAGE_GRANULE_AT + 8]);
    Ok(Some((
        page,
        u64::from_le_bytes(granule),
        header[PAGE_FLAGS_AT],
        page_len,
    )))
}

/// Sets EOS on the page at `start..end` of `file` and rewrites its CRC.
fn mark_eos(file: &mut File, start: u64, end: u64) -> io::Result<()> {
    let len = usize::try_from(end - start).map_err(io::Error::other)?;
    let mut page = vec![0u8; len];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut page)?;
    let header = page
        .get_mut(..PAGE_HEADER_BYTES as usize)
        .ok_or(io::ErrorKind::InvalidData)?;
    header[PAGE_FLAGS_AT] |= FLAG_EOS;
    header[PAGE_CRC_AT..PAGE_CRC_AT + 4].fill(0);
    let crc = ogg_crc(&page);
    let header = &mut page[..PAGE_HEADER_BYTES as usize];
    header[PAGE_CRC_AT..PAGE_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(start))?;
    file.write_all(header)
}

/// The Ogg page checksum (RFC 3533 §6: CRC-32, polynomial 0x04C11DB7, initial value 0, no
/// reflection, no final XOR), over a page whose CRC field is zero. The `ogg` crate keeps its
/// own private.
fn ogg_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The `OpusHead` packet, mapping family 0 (RFC 7845 §5.1).
fn opus_head(channels: u16, pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut head = Vec::with_capacity(OPUS_HEAD_BYTES);
    head.extend_from_slice(b"OpusHead");
    head.push(1);
    head.push(channels as u8);
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The `OpusTags` packet (RFC 7845 §5.2).
fn opus_tags() -> Vec<u8> {
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(VENDOR.len() as u32).to_le_bytes());
    tags.extend_from_slice(VENDOR.as_bytes());
    tags.extend_from_slice(&1u32.to_le_bytes());
    tags.extend_from_slice(&(ENCODER_COMMENT.len() as u32).to_le_bytes());
    tags.extend_from_slice(ENCODER_COMMENT.as_bytes());
    tags
}

/// The `OpusHead` fields, if `data` is one of a version this reader understands (major 0).
fn parse_head(data: &[u8]) -> Option<OpusHead> {
    if data.len() < OPUS_HEAD_BYTES || data.get(..8) != Some(b"OpusHead".as_slice()) {
        return None;
    }
    let version = *data.get(8)?;
    let channels = *data.get(9)?;
    if version & 0xF0 != 0 || channels == 0 {
        return None;
    }
    Some(OpusHead {
        channels,
        pre_skip: u16::from_le_bytes([*data.get(10)?, *data.get(11)?]),
        input_rate: u32::from_le_bytes(data.get(12..16)?.try_into().ok()?),
    })
}

/// Lacing values a packet takes.
fn segments(packet: &[u8]) -> u64 {
    packet.len() as u64 / 255 + 1
}

/// `value × mul / div` without overflow for any granule position.
fn mul_div(value: u64, mul: u64, div: u64) -> u64 {
    u64::try_from(u128::from(value) * u128::from(mul) / u128::from(div)).unwrap_or(u64::MAX)
}

fn io_error(path: &Path, source: io::Error) -> OggOpusError {
    OggOpusError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;
    use std::fs;

    /// `frames` samples of a sine at `freq` Hz.
    fn sine(freq: f64, rate: u32, frames: usize) -> Vec<i16> {
        (0..frames)
            .map(|i| (8000.0 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as i16)
            .collect()
    }

    fn interleave(left: &[i16], right: &[i16]) -> Vec<i16> {
        left.iter().zip(right).flat_map(|(&l, &r)| [l, r]).collect()
    }

    /// Power of `samples` at `freq` Hz (Goertzel).
    fn power(samples: &[i16], freq: f64, rate: u32) -> f64 {
        let coeff = 2.0 * (2.0 * PI * freq / f64::from(rate)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    /// A file read back through the `ogg` crate's reader and libopus.
    struct Decoded {
        head: Vec<u8>,
        tags: Vec<u8>,
        /// Granule position of every page on which a packet ends, after the header pages.
        granules: Vec<u64>,
        /// Whether the last packet was marked last in the stream (EOS).
        eos: bool,
        /// Every packet decoded at 48 kHz, interleaved, nothing trimmed.
        pcm: Vec<i16>,
        channels: usize,
    }

    impl Decoded {
        fn pre_skip(&self) -> usize {
            usize::from(u16::from_le_bytes([self.head[10], self.head[11]]))
        }

        /// What a player plays: pre-skip dropped, cut at the last granule position.
        fn played(&self) -> Vec<i16> {
            let end = *self.granules.last().unwrap() as usize * self.channels;
            self.pcm[self.pre_skip() * self.channels..end].to_vec()
        }

        fn channel(&self, which: usize) -> Vec<i16> {
            self.played()
                .chunks_exact(self.channels)
                .map(|frame| frame[which])
                .collect()
        }
    }

    fn decode(path: &Path) -> Decoded {
        let mut reader = ogg::PacketReader::new(File::open(path).unwrap());
        let head = reader.read_packet_expected().unwrap();
        assert!(head.first_in_stream() && head.last_in_page());
        let channels = usize::from(head.data[9]);
        let tags = reader.read_packet_expected().unwrap();
        assert!(
            tags.first_in_page() && tags.last_in_page(),
            "OpusTags alone"
        );
        let opus_channels = if channels == 2 {
            ::opus::Channels::Stereo
        } else {
            ::opus::Channels::Mono
        };
        let mut decoder = ::opus::Decoder::new(48_000, opus_channels).unwrap();
        let mut out = vec![0i16; 5760 * channels];
        let mut decoded = Decoded {
            head: head.data,
            tags: tags.data,
            granules: Vec::new(),
            eos: false,
            pcm: Vec::new(),
            channels,
        };
        while let Some(packet) = reader.read_packet().unwrap() {
            let n = decoder.decode(&packet.data, &mut out, false).unwrap();
            decoded.pcm.extend_from_slice(&out[..n * channels]);
            if packet.last_in_page() {
                decoded.granules.push(packet.absgp_page());
            }
            decoded.eos = packet.last_in_stream();
        }
        decoded
    }

    #[test]
    fn stereo_tones_come_back_in_their_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.opus");
        let rate = 16_000;
        let left = sine(1000.0, rate, 2 * rate as usize);
        let right = sine(440.0, rate, 2 * rate as usize);
        let mut writer = OggOpusWriter::create(&path, rate, 2).unwrap();
        // Blocks that are not whole 20 ms frames, with a sync every second.
        for (i, block) in interleave(&left, &right).chunks(2 * 250).enumerate() {
            writer.write(block).unwrap();
            if i % 64 == 63 {
                writer.sync().unwrap();
                assert_eq!(writer.bytes_written(), fs::metadata(&path).unwrap().len());
            }
        }
        assert_eq!(writer.samples_written(), 32_000);
        assert_eq!(writer.finish().unwrap(), 32_000);

        let decoded = decode(&path);
        let head = &decoded.head;
        assert_eq!(head.len(), 19);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[8], 1, "version");
        assert_eq!(head[9], 2, "channels");
        assert!((100..=1000).contains(&decoded.pre_skip()), "pre-skip");
        assert_eq!(u32::from_le_bytes(head[12..16].try_into().unwrap()), rate);
        assert_eq!(&head[16..19], &[0, 0, 0], "gain 0, mapping family 0");
        assert_eq!(
            decoded.tags,
            b"OpusTags\x0a\0\0\0callbridge\x01\0\0\0\x12\0\0\0ENCODER=callbridge"
        );
        assert!(
            decoded.granules.windows(2).all(|g| g[0] < g[1]),
            "granules increase: {:?}",
            decoded.granules
        );
        assert!(decoded.granules.len() >= 3, "a page per sync and the last");
        assert!(decoded.eos, "last page has EOS");

        // Every sample written comes out (pre-skip and the padding trimmed).
        let untrimmed = decoded.pcm.len() / 2 - decoded.pre_skip();
        assert!((96_000..96_000 + 960).contains(&untrimmed), "{untrimmed}");
        assert_eq!(decoded.played().len(), 2 * 96_000, "exactly 2 s");

        // Past the codec's start-up, each channel holds its own tone. Steady tones are the
        // worst case of SILK's mid/side stereo at 32 kb/s (measured: 16.5 dB apart here);
        // speech in both channels at once keeps crosstalk below -34 dB.
        let (l, r) = (decoded.channel(0), decoded.channel(1));
        let (l, r) = (&l[9_600..], &r[9_600..]);
        let ratio = |a: f64, b: f64| 10.0 * (a / b).log10();
        let left_db = ratio(power(l, 1000.0, 48_000), power(l, 440.0, 48_000));
        let right_db = ratio(power(r, 440.0, 48_000), power(r, 1000.0, 48_000));
        assert!(left_db > 10.0, "left: 1 kHz over 440 Hz by {left_db:.1} dB");
        assert!(
            right_db > 10.0,
            "right: 440 Hz over 1 kHz by {right_db:.1} dB"
        );
    }

    #[test]
    fn every_rate_decodes_to_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        for rate in INPUT_RATES {
            for (channels, frames) in [(1u16, 0usize), (1, 1), (1, 4_321), (2, 12_345)] {
                let path = dir.path().join(format!("{rate}-{channels}-{frames}.opus"));
                let samples = sine(300.0, rate, frames * usize::from(channels));
                let mut writer = OggOpusWriter::create(&path, rate, channels).unwrap();
                assert_eq!((writer.input_rate(), writer.channels()), (rate, channels));
                writer.write(&samples).unwrap();
                assert_eq!(writer.finish().unwrap(), frames as u64);

                let decoded = decode(&path);
                let played = frames as u64 * u64::from(48_000 / rate);
                assert_eq!(decoded.played().len() as u64, played * u64::from(channels));
                assert!(decoded.eos);

                // A finished file is left alone and reports its exact length.
                let before = fs::read(&path).unwrap();
                let recovered = recover(&path).unwrap();
                assert_eq!(
                    recovered,
                    Recovered {
                        frames: frames as u64,
                        rate,
                        channels,
                        duration_ms: played / 48,
                        cut_bytes: 0,
                    },
                    "{rate} Hz, {channels} ch, {frames} frames"
                );
                assert_eq!(fs::read(&path).unwrap(), before);
            }
        }
    }

    #[test]
    fn killed_writer_is_recovered_to_its_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("killed.opus");
        let rate = 16_000;
        let second = interleave(&sine(1000.0, rate, 16_000), &sine(440.0, rate, 16_000));
        let mut writer = OggOpusWriter::create(&path, rate, 2).unwrap();
        writer.write(&second).unwrap();
        writer.sync().unwrap();
        let synced = fs::metadata(&path).unwrap().len();
        writer.write(&second[..16_000]).unwrap();
        writer.sync().unwrap();
        writer.write(&second[..8_000]).unwrap();
        // kill -9: no finish, no drop; then the last page only partly on disk.
        std::mem::forget(writer);
        let len = fs::metadata(&path).unwrap().len();
        assert!(len > synced + 30);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 11)
            .unwrap();

        let recovered = recover(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), synced, "cut to a page");
        assert_eq!(recovered.cut_bytes, len - 11 - synced);
        assert_eq!((recovered.rate, recovered.channels), (rate, 2));
        // The first second, less the encoder's lookahead still inside it.
        assert!(
            (15_800..=16_000).contains(&recovered.frames),
            "{recovered:?}"
        );
        assert_eq!(recovered.duration_ms, recovered.frames / 16);

        // Readable to the end, which is marked, with no CRC error.
        let decoded = decode(&path);
        assert!(decoded.eos);
        assert_eq!(
            decoded.played().len() as u64,
            recovered.frames * 3 * 2,
            "plays what recover reports"
        );
        let again = recover(&path).unwrap();
        assert_eq!((again.frames, again.cut_bytes), (recovered.frames, 0));
    }

    #[test]
    fn recover_needs_a_complete_opus_head_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.opus");
        drop(OggOpusWriter::create(&path, 8_000, 1).unwrap());
        let bytes = fs::read(&path).unwrap();

        // Only the header pages: valid, 0 frames.
        let recovered = recover(&path).unwrap();
        assert_eq!((recovered.frames, recovered.channels), (0, 1));

        for bad in [
            Vec::new(),
            bytes[..40].to_vec(),
            b"RIFF\0\0\0\0WAVEfmt and more than a page header".to_vec(),
        ] {
            fs::write(&path, &bad).unwrap();
            let e = recover(&path).unwrap_err();
            assert!(matches!(e, OggOpusError::NoHead { .. }), "{e:?}");
            assert!(e.to_string().contains("head.opus"), "{e}");
            assert_eq!(fs::read(&path).unwrap(), bad, "left untouched");
        }

        // A damaged page (CRC) ends the file there.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 3;
        damaged[last] ^= 0x55;
        fs::write(&path, &damaged).unwrap();
        let recovered = recover(&path).unwrap();
        assert_eq!(recovered.frames, 0);
        assert_eq!(
            recovered.cut_bytes as usize,
            bytes.len() - 47,
            "OpusTags page cut"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 47);

        let e = recover(&dir.path().join("missing.opus")).unwrap_err();
        assert!(matches!(e, OggOpusError::Io { .. }), "{e:?}");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.opus");
        for rate in [0, 11_025, 44_100, 96_000] {
            let e = OggOpusWriter::create(&path, rate, 1).unwrap_err();
            assert!(matches!(e, OggOpusError::UnsupportedRate { .. }), "{e:?}");
        }
        for channels in [0, 3] {
            let e = OggOpusWriter::create(&path, 8_000, channels).unwrap_err();
            assert!(
                matches!(e, OggOpusError::UnsupportedChannels { .. }),
                "{e:?}"
            );
        }
        let mut writer = OggOpusWriter::create(&path, 8_000, 2).unwrap();
        let e = writer.write(&[1, 2, 3]).unwrap_err();
        assert!(
            matches!(e, OggOpusError::PartialFrame { samples: 3, .. }),
            "{e:?}"
        );
        writer.write(&[1, 2]).unwrap();
        assert_eq!(writer.finish().unwrap(), 1);
    }

    #[test]
    fn after_an_io_error_the_writer_refuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.opus");
        let mut writer = OggOpusWriter::create(&path, 8_000, 1).unwrap();
        // The disk fills up: every write from now on fails with ENOSPC.
        *writer.pages.inner_mut().get_mut() =
            OpenOptions::new().write(true).open("/dev/full").unwrap();
        writer.write(&sine(300.0, 8_000, 8_000)).unwrap();
        let e = writer.sync().unwrap_err();
        match &e {
            OggOpusError::Io { path: p, source } => {
                assert_eq!(p, &path);
                assert_eq!(source.kind(), io::ErrorKind::StorageFull);
            }
            other => panic!("{other:?}"),
        }
        let e = writer.write(&[0; 160]).unwrap_err();
        assert!(matches!(e, OggOpusError::Failed { .. }), "{e:?}");
        assert!(matches!(writer.sync(), Err(OggOpusError::Failed { .. })));
        assert!(matches!(writer.finish(), Err(OggOpusError::Failed { .. })));
        // What reached the file before is still a stream.
        assert_eq!(recover(&path).unwrap().frames, 0);
    }
}
