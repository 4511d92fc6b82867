//! WAV files: prompts read into mono linear PCM, and mono or stereo recordings written so that
//! a crash loses at most the last second.
//!
//! Owns: the RIFF/WAVE container — walking chunks, interpreting `fmt `, `fact` and `data`,
//! turning 16-bit PCM, 8-bit PCM, μ-law and A-law (through [`super::g711`]) into mono 16-bit
//! samples, writing recordings whose header is valid after every [`WavWriter::sync_header`],
//! [`repair`]ing the header of a recording whose process was killed between syncs, and telling
//! a recording's format and length ([`info`]) without decoding it.
//! Must not: resample (the caller converts from [`Audio::sample_rate`]), touch the network,
//! read the clock, or run on a media worker's packet path: every call does blocking file I/O
//! and allocates.
//!
//! # Reading
//!
//! [`parse`] walks the chunks after `RIFF....WAVE`, skipping unknown ones (`LIST`, `fact`,
//! `cue `, ...) and honouring the pad byte after odd-sized chunks, until it has the first `fmt `
//! and the first `data` chunk (in either order). Accepted encodings: format tag 1 with 16-bit or
//! 8-bit (unsigned) samples, tag 6 (A-law, 8-bit), tag 7 (μ-law, 8-bit), and
//! `WAVE_FORMAT_EXTENSIBLE` (0xFFFE) whose sub-format GUID is the standard
//! `xxxxxxxx-0000-0010-8000-00AA00389B71` built from one of those tags. One or two channels;
//! stereo is averaged to mono. The block align must be exactly channels × bytes per sample.
//!
//! Sizes: a `data` size of 0 or 0xFFFF_FFFF (streaming writers) means "to the end of the file";
//! a `data` size that runs past the end of the file is cut to the bytes present (a recording cut
//! off by a crash); a trailing partial sample is dropped. The RIFF size is not used at all: it
//! is stale in exactly the files this module must still read, and chunks after `data` are
//! never needed.
//!
//! # Files written by [`WavWriter`]
//!
//! Mono or stereo (`C` channels below; stereo samples are interleaved, left first),
//! little-endian, offsets in bytes. [`Encoding::Pcm16`], 44-byte canonical header:
//!
//! | offset | bytes | value |
//! |---|---|---|
//! | 0 | 4 | `RIFF` |
//! | 4 | 4 | 36 + data size + pad |
//! | 8 | 4 | `WAVE` |
//! | 12 | 4 | `fmt ` |
//! | 16 | 4 | 16 |
//! | 20 | 2 | 1 (PCM) |
//! | 22 | 2 | C (1 or 2) |
//! | 24 | 4 | sample rate |
//! | 28 | 4 | byte rate = 2 × C × sample rate |
//! | 32 | 2 | block align = 2 × C |
//! | 34 | 2 | 16 bits per sample |
//! | 36 | 4 | `data` |
//! | 40 | 4 | data size (bytes) |
//!
//! [`Encoding::Ulaw`] and [`Encoding::Alaw`], 58-byte header (18-byte `fmt ` with `cbSize` = 0,
//! then a `fact` chunk, as non-PCM formats require):
//!
//! | offset | bytes | value |
//! |---|---|---|
//! | 0 | 4 | `RIFF` |
//! | 4 | 4 | 50 + data size + pad |
//! | 8 | 4 | `WAVE` |
//! | 12 | 4 | `fmt ` |
//! | 16 | 4 | 18 |
//! | 20 | 2 | 7 (μ-law) or 6 (A-law) |
//! | 22 | 2 | C (1 or 2) |
//! | 24 | 4 | sample rate |
//! | 28 | 4 | byte rate = C × sample rate |
//! | 32 | 2 | block align = C |
//! | 34 | 2 | 8 bits per sample |
//! | 36 | 2 | `cbSize` = 0 |
//! | 38 | 4 | `fact` |
//! | 42 | 4 | 4 |
//! | 46 | 4 | frame count (samples per channel) |
//! | 50 | 4 | `data` |
//! | 54 | 4 | data size (bytes) |
//!
//! Samples follow the header. When the data size is odd (mono μ-law/A-law only), a zero pad
//! byte follows the data and is counted in the RIFF size.
//!
//! Crash tolerance: [`WavWriter::sync_header`] first hands every buffered sample to the kernel,
//! then rewrites the data size, the `fact` count and the RIFF size. A process killed at any
//! point therefore leaves a file whose header describes at most what is on disk, which
//! [`read`] accepts (up to the last sync) and [`repair`] extends to every complete frame.
//! `sync_header` does not fsync (only [`WavWriter::finish`] does), so it protects against the
//! process dying, not against the machine losing power.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::g711::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};

/// `WAVE_FORMAT_PCM`.
const TAG_PCM: u16 = 0x0001;
/// `WAVE_FORMAT_ALAW`.
const TAG_ALAW: u16 = 0x0006;
/// `WAVE_FORMAT_MULAW`.
const TAG_ULAW: u16 = 0x0007;
/// `WAVE_FORMAT_EXTENSIBLE`: the real format is in the sub-format GUID.
const TAG_EXTENSIBLE: u16 = 0xFFFE;
/// Bytes 2..16 of every `KSDATAFORMAT_SUBTYPE_*` GUID derived from a format tag
/// (`xxxxxxxx-0000-0010-8000-00AA00389B71`, stored little-endian; bytes 0..2 are the tag).
const SUBFORMAT_SUFFIX: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];
/// Smallest `fmt ` body (`WAVEFORMAT` + `wBitsPerSample`).
const FMT_MIN: u32 = 16;
/// Smallest `fmt ` body of `WAVE_FORMAT_EXTENSIBLE` (`WAVEFORMATEXTENSIBLE`).
const FMT_EXTENSIBLE_MIN: u32 = 40;
/// Chunks looked at before giving up: bounds the work a hostile file of empty chunks can cause.
const MAX_CHUNKS: u32 = 4096;
/// Samples encoded per write to the buffered file.
const ENCODE_BLOCK: usize = 1024;
/// Offset of the RIFF size field.
const RIFF_SIZE_AT: u64 = 4;
/// Offset of the `fact` sample count in μ-law/A-law files written by [`WavWriter`].
const FACT_COUNT_AT: u64 = 46;

/// Why a WAV file cannot be read, written or repaired.
#[derive(Debug)]
pub enum WavError {
    /// Opening, reading, writing or syncing the file failed.
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system reported.
        source: io::Error,
    },
    /// The file is shorter than the 12-byte `RIFF....WAVE` header.
    TooShort {
        /// File length, bytes.
        len: u64,
    },
    /// The file does not start with `RIFF`.
    NotRiff {
        /// The first four bytes.
        magic: [u8; 4],
    },
    /// A RIFF file of another form (`AVI `, ...).
    NotWave {
        /// The form type at offset 8.
        form: [u8; 4],
    },
    /// No `fmt ` chunk.
    FmtMissing,
    /// The `fmt ` chunk is too small for its format.
    FmtTooShort {
        /// Declared size of the chunk, bytes.
        size: u32,
        /// Size that format needs, bytes.
        needed: u32,
    },
    /// The `fmt ` chunk runs past the end of the file.
    FmtTruncated {
        /// Declared size of the chunk, bytes.
        declared: u32,
        /// Bytes left in the file after the chunk header.
        present: u64,
    },
    /// A format tag other than PCM, μ-law or A-law.
    UnsupportedEncoding {
        /// The format tag (for `WAVE_FORMAT_EXTENSIBLE`, the one in the sub-format GUID).
        tag: u16,
    },
    /// A `WAVE_FORMAT_EXTENSIBLE` sub-format that is not a standard format-tag GUID.
    UnsupportedSubFormat {
        /// The sub-format GUID as stored in the file.
        guid: [u8; 16],
    },
    /// A supported encoding with a sample size it does not come in (24-bit PCM, 16-bit μ-law).
    UnsupportedBits {
        /// The format tag.
        tag: u16,
        /// Bits per sample.
        bits: u16,
    },
    /// Neither mono nor stereo.
    UnsupportedChannels {
        /// Channel count in the `fmt ` chunk.
        channels: u16,
    },
    /// A sample rate of 0 Hz (or, when writing, one too high for the byte-rate field).
    InvalidSampleRate {
        /// The rate, Hz.
        rate: u32,
    },
    /// The block align is not channels × bytes per sample.
    BlockAlign {
        /// Block align in the `fmt ` chunk.
        block_align: u16,
        /// Channel count in the `fmt ` chunk.
        channels: u16,
        /// Bits per sample in the `fmt ` chunk.
        bits: u16,
    },
    /// No `data` chunk.
    DataMissing,
    /// The `data` chunk holds no complete sample.
    DataEmpty,
    /// The data would exceed what 32-bit RIFF sizes can describe.
    TooLarge {
        /// Size that did not fit, bytes.
        bytes: u64,
    },
    /// [`repair`] cannot safely rewrite this file.
    Unrepairable {
        /// Why not.
        reason: &'static str,
    },
    /// A write to a stereo file of samples that are not whole frames (an odd count).
    PartialFrame {
        /// Samples handed to [`WavWriter::write`].
        samples: usize,
        /// Channels of the file.
        channels: u16,
    },
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const USE: &str = "use PCM 16-bit, mu-law or A-law";
        match self {
            Self::Io { path, source } => write!(f, "I/O error on {}: {source}", path.display()),
            Self::TooShort { len } => {
                write!(f, "file is {len} bytes, too short for a RIFF/WAVE header")
            }
            Self::NotRiff {
                magic: [b'R', b'F', b'6', b'4'],
            } => {
                write!(f, "RF64 (64-bit WAV) files are not supported")
            }
            Self::NotRiff { magic } => write!(
                f,
                "not a RIFF file (starts with \"{}\")",
                magic.escape_ascii()
            ),
            Self::NotWave { form } => {
                write!(f, "RIFF file of form \"{}\", not WAVE", form.escape_ascii())
            }
            Self::FmtMissing => write!(f, "fmt chunk missing"),
            Self::FmtTooShort { size, needed } => write!(
                f,
                "fmt chunk is {size} bytes; this format needs at least {needed}"
            ),
            Self::FmtTruncated { declared, present } => write!(
                f,
                "fmt chunk declares {declared} bytes but the file ends after {present}"
            ),
            Self::UnsupportedEncoding { tag } => match format_name(*tag) {
                Some(name) => write!(f, "unsupported encoding {tag} ({name}); {USE}"),
                None => write!(f, "unsupported encoding {tag} ({tag:#06x}); {USE}"),
            },
            Self::UnsupportedSubFormat { guid } => write!(
                f,
                "unsupported WAVE_FORMAT_EXTENSIBLE sub-format {}; {USE}",
                Guid(guid)
            ),
            Self::UnsupportedBits { tag, bits } => match *tag {
                TAG_PCM => write!(
                    f,
                    "unsupported PCM sample size {bits} bits; use 16-bit (or 8-bit) PCM, \
                     mu-law or A-law"
                ),
                TAG_ULAW => write!(f, "mu-law with {bits} bits per sample; mu-law is 8-bit"),
                TAG_ALAW => write!(f, "A-law with {bits} bits per sample; A-law is 8-bit"),
                _ => write!(f, "encoding {tag} with {bits} bits per sample; {USE}"),
            },
            Self::UnsupportedChannels { channels } => {
                write!(f, "{channels} channels; only mono and stereo are supported")
            }
            Self::InvalidSampleRate { rate } => write!(f, "invalid sample rate {rate} Hz"),
            Self::BlockAlign {
                block_align,
                channels,
                bits,
            } => write!(
                f,
                "block align {block_align} does not match {channels} channel(s) of {bits}-bit \
                 samples (expected {})",
                u32::from(*channels) * u32::from(*bits).div_ceil(8)
            ),
            Self::DataMissing => write!(f, "data chunk missing"),
            Self::DataEmpty => write!(f, "data chunk holds no complete sample"),
            Self::TooLarge { bytes } => {
                write!(f, "{bytes} bytes exceed the 4 GiB size limit of a WAV file")
            }
            Self::Unrepairable { reason } => write!(f, "cannot repair: {reason}"),
            Self::PartialFrame { samples, channels } => write!(
                f,
                "{samples} samples are not whole frames of {channels} interleaved channels"
            ),
        }
    }
}

impl std::error::Error for WavError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Well-known names of format tags, for error messages.
fn format_name(tag: u16) -> Option<&'static str> {
    Some(match tag {
        0x0002 => "Microsoft ADPCM",
        0x0003 => "IEEE float",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0040 => "G.721 ADPCM",
        0x0050 => "MPEG",
        0x0055 => "MPEG Layer 3",
        0x0064 => "G.726 ADPCM",
        0x0065 => "G.722 ADPCM",
        0x00FF => "AAC",
        _ => return None,
    })
}

/// Displays a GUID stored in the Windows mixed-endian layout.
struct Guid<'a>(&'a [u8; 16]);

impl fmt::Display for Guid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-",
            le_u32(g, 0),
            le_u16(g, 4),
            le_u16(g, 6)
        )?;
        for (i, byte) in g.iter().enumerate().skip(8) {
            if i == 10 {
                write!(f, "-")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// Mono 16-bit linear PCM at the file's own sample rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    /// Samples per second, as declared by the file (never 0).
    pub sample_rate: u32,
    /// The samples; stereo files are averaged to mono.
    pub samples: Vec<i16>,
}

/// Reads and decodes a WAV file; see [`parse`] for what is accepted.
pub fn read(path: &Path) -> Result<Audio, WavError> {
    let bytes = fs::read(path).map_err(|source| io_error(path, source))?;
    parse(&bytes)
}

/// Decodes a WAV file held in memory (module docs: what is accepted and how sizes are read).
pub fn parse(bytes: &[u8]) -> Result<Audio, WavError> {
    let layout = locate(&mut SliceSource(bytes))?;
    let format = layout.format;
    let rest = usize::try_from(layout.data_start)
        .ok()
        .and_then(|start| bytes.get(start..))
        .unwrap_or(&[]);
    let data = if layout.data_size == 0 || layout.data_size == u32::MAX {
        rest
    } else {
        usize::try_from(layout.data_size)
            .ok()
            .and_then(|size| rest.get(..size))
            .unwrap_or(rest)
    };
    let block = usize::from(format.block_align).max(1);
    let data = data.get(..data.len() - data.len() % block).unwrap_or(&[]);
    if data.is_empty() {
        return Err(WavError::DataEmpty);
    }
    Ok(Audio {
        sample_rate: format.sample_rate,
        samples: decode(format, data),
    })
}

/// The format and length of a WAV file, as its header and size tell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Samples per second per channel (never 0).
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u16,
    /// Bytes per frame (channels × bytes per sample).
    pub block_align: u16,
    /// Whole frames (samples per channel) that [`read`] would decode; 0 for an empty `data`.
    pub frames: u64,
}

/// Reads a WAV file's header and size without decoding it: what a caller needs to report a
/// recording's length. Sizes are read as [`parse`] reads them; a file [`read`] rejects only for
/// holding no complete sample gives `frames: 0` here.
pub fn info(path: &Path) -> Result<Info, WavError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let len = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let layout = locate(&mut FileSource { file, path, len })?;
    let present = len.saturating_sub(layout.data_start);
    let data = if layout.data_size == 0 || layout.data_size == u32::MAX {
        present
    } else {
        u64::from(layout.data_size).min(present)
    };
    let format = layout.format;
    Ok(Info {
        sample_rate: format.sample_rate,
        channels: format.channels,
        block_align: format.block_align,
        frames: data / u64::from(format.block_align).max(1),
    })
}

/// How samples are stored in a file being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleKind {
    /// Signed 16-bit little-endian.
    Pcm16,
    /// Unsigned 8-bit, 128 = silence.
    Pcm8,
    /// G.711 μ-law.
    Ulaw,
    /// G.711 A-law.
    Alaw,
}

/// The parts of a `fmt ` chunk that decoding needs, already validated.
#[derive(Debug, Clone, Copy)]
struct Format {
    kind: SampleKind,
    /// 1 or 2.
    channels: u16,
    /// Non-zero.
    sample_rate: u32,
    /// channels × bytes per sample.
    block_align: u16,
}

/// Validates a `fmt ` body. `body` holds the first `min(declared, 40)` bytes of the chunk.
fn parse_fmt(body: &[u8], declared: u32) -> Result<Format, WavError> {
    let too_short = |needed| WavError::FmtTooShort {
        size: declared,
        needed,
    };
    if declared < FMT_MIN || body.len() < FMT_MIN as usize {
        return Err(too_short(FMT_MIN));
    }
    let mut tag = le_u16(body, 0);
    let channels = le_u16(body, 2);
    let sample_rate = le_u32(body, 4);
    let block_align = le_u16(body, 12);
    let bits = le_u16(body, 14);
    if tag == TAG_EXTENSIBLE {
        if declared < FMT_EXTENSIBLE_MIN || body.len() < FMT_EXTENSIBLE_MIN as usize {
            return Err(too_short(FMT_EXTENSIBLE_MIN));
        }
        let mut guid = [0u8; 16];
        if let Some(stored) = body.get(24..40) {
            guid.copy_from_slice(stored);
        }
        if guid.get(2..) != Some(SUBFORMAT_SUFFIX.as_slice()) {
            return Err(WavError::UnsupportedSubFormat { guid });
        }
        tag = le_u16(&guid, 0);
    }
    let (kind, bytes_per_sample) = match (tag, bits) {
        (TAG_PCM, 16) => (SampleKind::Pcm16, 2),
        (TAG_PCM, 8) => (SampleKind::Pcm8, 1),
        (TAG_ULAW, 8) => (SampleKind::Ulaw, 1),
        (TAG_ALAW, 8) => (SampleKind::Alaw, 1),
        (TAG_PCM | TAG_ULAW | TAG_ALAW, _) => {
            return Err(WavError::UnsupportedBits { tag, bits });
        }
        _ => return Err(WavError::UnsupportedEncoding { tag }),
    };
    if !(1..=2).contains(&channels) {
        return Err(WavError::UnsupportedChannels { channels });
    }
    if sample_rate == 0 {
        return Err(WavError::InvalidSampleRate { rate: 0 });
    }
    if block_align != channels * bytes_per_sample {
        return Err(WavError::BlockAlign {
            block_align,
            channels,
            bits,
        });
    }
    Ok(Format {
        kind,
        channels,
        sample_rate,
        block_align,
    })
}

/// Decodes whole blocks of `data` to mono samples.
fn decode(format: Format, data: &[u8]) -> Vec<i16> {
    let interleaved: Vec<i16> = match format.kind {
        SampleKind::Pcm16 => data
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect(),
        SampleKind::Pcm8 => data.iter().map(|&b| (i16::from(b) - 128) * 256).collect(),
        SampleKind::Ulaw => {
            let mut out = vec![0; data.len()];
            decode_ulaw(data, &mut out);
            out
        }
        SampleKind::Alaw => {
            let mut out = vec![0; data.len()];
            decode_alaw(data, &mut out);
            out
        }
    };
    if format.channels == 2 {
        interleaved
            .chunks_exact(2)
            .map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) / 2) as i16)
            .collect()
    } else {
        interleaved
    }
}

/// Where the chunks that matter are, as found by [`locate`].
#[derive(Debug, Clone, Copy)]
struct Layout {
    format: Format,
    /// Declared RIFF size.
    riff_size: u32,
    /// Offset of the `fmt ` body.
    fmt_at: u64,
    /// Offset of the sample count in a `fact` chunk before `data`, if any.
    fact_at: Option<u64>,
    /// Offset of the first data byte.
    data_start: u64,
    /// Declared data size (0 and `u32::MAX` mean "to the end of the file").
    data_size: u32,
}

/// Random access to the bytes of a file being read or repaired.
trait Source {
    /// Total length, bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; callers stay within [`Source::len`].
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), WavError>;
}

/// A file already in memory.
struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), WavError> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buf.len())?));
        match bytes {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io_error(
                Path::new("<in-memory WAV>"),
                io::ErrorKind::UnexpectedEof.into(),
            )),
        }
    }
}

/// An open file.
struct FileSource<'a> {
    file: File,
    path: &'a Path,
    len: u64,
}

impl Source for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), WavError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|source| io_error(self.path, source))
    }
}

/// Checks the RIFF header and walks the chunks until the first `fmt ` and `data` are found.
fn locate(src: &mut impl Source) -> Result<Layout, WavError> {
    let len = src.len();
    if len < 12 {
        return Err(WavError::TooShort { len });
    }
    let mut head = [0u8; 12];
    src.read_exact_at(0, &mut head)?;
    let magic = four(&head, 0);
    if magic != *b"RIFF" {
        return Err(WavError::NotRiff { magic });
    }
    let form = four(&head, 8);
    if form != *b"WAVE" {
        return Err(WavError::NotWave { form });
    }
    let riff_size = le_u32(&head, 4);

    let mut fmt: Option<(u64, Format)> = None;
    let mut fact_at = None;
    let mut data: Option<(u64, u32)> = None;
    let mut pos = 12u64;
    let mut chunks = 0;
    while len.saturating_sub(pos) >= 8 && chunks < MAX_CHUNKS {
        chunks += 1;
        let mut header = [0u8; 8];
        src.read_exact_at(pos, &mut header)?;
        let size = le_u32(&header, 4);
        let body = pos + 8;
        match &four(&header, 0) {
            b"fmt " if fmt.is_none() => {
                let present = len - body;
                if u64::from(size) > present {
                    return Err(WavError::FmtTruncated {
                        declared: size,
                        present,
                    });
                }
                let mut buf = [0u8; FMT_EXTENSIBLE_MIN as usize];
                let wanted = buf.len().min(usize::try_from(size).unwrap_or(usize::MAX));
                let buf = &mut buf[..wanted];
                src.read_exact_at(body, buf)?;
                fmt = Some((body, parse_fmt(buf, size)?));
            }
            b"fact" if fact_at.is_none() && data.is_none() && size >= 4 => fact_at = Some(body),
            b"data" if data.is_none() => {
                data = Some((body, size));
                if size == 0 || size == u32::MAX {
                    // Runs to the end of the file: nothing follows it.
                    break;
                }
            }
            _ => {}
        }
        if fmt.is_some() && data.is_some() {
            break;
        }
        pos = body + u64::from(size) + u64::from(size & 1);
    }
    let (fmt_at, format) = fmt.ok_or(WavError::FmtMissing)?;
    let (data_start, data_size) = data.ok_or(WavError::DataMissing)?;
    Ok(Layout {
        format,
        riff_size,
        fmt_at,
        fact_at,
        data_start,
        data_size,
    })
}

/// Whether `from..len` is empty or exactly a sequence of plausible chunks (printable ASCII
/// ids, sizes within the file): trailing metadata, as opposed to unsynced samples.
fn chunks_fill(src: &mut impl Source, mut pos: u64, len: u64) -> Result<bool, WavError> {
    let mut chunks = 0;
    while pos < len {
        if chunks == MAX_CHUNKS || len - pos < 8 {
            return Ok(false);
        }
        chunks += 1;
        let mut header = [0u8; 8];
        src.read_exact_at(pos, &mut header)?;
        if !four(&header, 0).iter().all(|b| (0x20..=0x7E).contains(b)) {
            return Ok(false);
        }
        let size = le_u32(&header, 4);
        let end = pos + 8 + u64::from(size);
        if end > len {
            return Ok(false);
        }
        // A missing pad byte at the very end is tolerated: `pos` passes `len` and we stop.
        pos = end + u64::from(size & 1);
    }
    Ok(true)
}

/// Makes a recording's header agree with its length; returns whether anything was changed.
///
/// A file is consistent when its RIFF size is the file length − 8 and its `data` chunk fits in
/// the file, followed only by well-formed chunks (or nothing). Otherwise the `data` chunk is
/// taken to run to the end of the file, as it does in a recording whose writer was killed
/// between [`WavWriter::sync_header`] calls: the file is cut to the last complete frame (one
/// sample of every channel, the `fmt ` block align; plus a pad byte if the data size is odd),
/// and the data size, the `fact` frame count (if a `fact` chunk precedes `data`) and the RIFF
/// size are rewritten; then the file is fsynced. When only the RIFF size is wrong it alone is
/// rewritten.
///
/// Meant for recordings: bytes after the `data` chunk that do not look like chunks (an ID3 tag
/// appended to a prompt, say) are taken for samples. Files [`read`] rejects are rejected
/// with the same error.
pub fn repair(path: &Path) -> Result<bool, WavError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    let len = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let mut src = FileSource { file, path, len };
    let layout = locate(&mut src)?;

    let data_end = layout.data_start + u64::from(layout.data_size);
    let pad = u64::from(layout.data_size & 1);
    let data_fits = data_end <= len && chunks_fill(&mut src, data_end + pad, len)?;
    // `locate` guarantees len >= 12.
    let riff_ok = u64::from(layout.riff_size) == len - 8;
    if riff_ok && data_fits {
        return Ok(false);
    }

    let mut file = src.file;
    if data_fits {
        let riff = u32::try_from(len - 8).map_err(|_| WavError::TooLarge { bytes: len })?;
        put_u32(&mut file, RIFF_SIZE_AT, riff).map_err(|source| io_error(path, source))?;
    } else {
        if layout.fmt_at > layout.data_start {
            return Err(WavError::Unrepairable {
                reason: "the fmt chunk follows the data chunk, which would be cut",
            });
        }
        let block = u64::from(layout.format.block_align).max(1);
        let data = (len - layout.data_start) / block * block;
        let new_len = layout.data_start + data + (data & 1);
        let too_large = |_| WavError::TooLarge { bytes: data };
        let riff = u32::try_from(new_len - 8).map_err(too_large)?;
        let data_size = u32::try_from(data).map_err(too_large)?;
        let frames = u32::try_from(data / block).map_err(too_large)?;
        let rewrite = |file: &mut File| -> io::Result<()> {
            // Cuts a partial sample, or appends the zero pad byte of an odd-sized chunk.
            file.set_len(new_len)?;
            put_u32(file, layout.data_start - 4, data_size)?;
            if let Some(at) = layout.fact_at {
                put_u32(file, at, frames)?;
            }
            put_u32(file, RIFF_SIZE_AT, riff)
        };
        rewrite(&mut file).map_err(|source| io_error(path, source))?;
    }
    file.sync_all().map_err(|source| io_error(path, source))?;
    Ok(true)
}

/// How [`WavWriter`] stores samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little-endian linear PCM (format tag 1), 44-byte header.
    Pcm16,
    /// G.711 μ-law (format tag 7), 8 bits per sample, 58-byte header.
    Ulaw,
    /// G.711 A-law (format tag 6), 8 bits per sample, 58-byte header.
    Alaw,
}

impl Encoding {
    /// Bytes before the first sample in a file [`WavWriter`] writes with this encoding.
    pub const fn header_len(self) -> u64 {
        match self {
            Self::Pcm16 => 44,
            Self::Ulaw | Self::Alaw => 58,
        }
    }

    /// Bytes per (mono) sample.
    pub const fn bytes_per_sample(self) -> u64 {
        match self {
            Self::Pcm16 => 2,
            Self::Ulaw | Self::Alaw => 1,
        }
    }

    const fn format_tag(self) -> u16 {
        match self {
            Self::Pcm16 => TAG_PCM,
            Self::Ulaw => TAG_ULAW,
            Self::Alaw => TAG_ALAW,
        }
    }

    /// Bytes per frame of `channels` interleaved samples.
    const fn block_align(self, channels: u16) -> u64 {
        self.bytes_per_sample() * channels as u64
    }

    /// Largest data size of whole frames whose RIFF size (header, data and pad byte) fits in
    /// 32 bits.
    const fn max_data_bytes(self, channels: u16) -> u64 {
        let max = u32::MAX as u64 - (self.header_len() - 8) - 1;
        max - max % self.block_align(channels)
    }
}

/// The header of an empty file of 1 or 2 channels (module docs: exact layout).
fn header(encoding: Encoding, sample_rate: u32, channels: u16) -> Result<Vec<u8>, WavError> {
    if !(1..=2).contains(&channels) {
        return Err(WavError::UnsupportedChannels { channels });
    }
    let bytes_per_sample = encoding.bytes_per_sample() as u16;
    let block_align = bytes_per_sample * channels;
    let byte_rate = sample_rate
        .checked_mul(u32::from(block_align))
        .filter(|_| sample_rate > 0)
        .ok_or(WavError::InvalidSampleRate { rate: sample_rate })?;
    let pcm = encoding == Encoding::Pcm16;
    let mut h = Vec::with_capacity(encoding.header_len() as usize);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&((encoding.header_len() - 8) as u32).to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&(if pcm { 16u32 } else { 18 }).to_le_bytes());
    h.extend_from_slice(&encoding.format_tag().to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&byte_rate.to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&(bytes_per_sample * 8).to_le_bytes());
    if !pcm {
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(b"fact");
        h.extend_from_slice(&4u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(h.len() as u64, encoding.header_len());
    Ok(h)
}

/// Writes a mono or stereo recording, keeping the file readable after every
/// [`WavWriter::sync_header`].
///
/// Samples go through a `BufWriter`. After an error the file position is unknown: drop the
/// writer and [`repair`] the file. Dropping a writer without [`WavWriter::finish`] syncs the
/// header (errors ignored) but does not fsync.
#[derive(Debug)]
pub struct WavWriter {
    out: BufWriter<File>,
    path: PathBuf,
    encoding: Encoding,
    /// 1 or 2; samples are interleaved.
    channels: u16,
    /// Data bytes handed to `out` (excluding any pad byte); always whole frames.
    data_bytes: u64,
    /// Set by `finish`, so that `Drop` leaves the file alone.
    finished: bool,
}

impl WavWriter {
    /// Creates (or truncates) `path` and writes the header of an empty mono recording, flushed
    /// so the file is a valid WAV file from the start. Fails on a sample rate of 0 or one too
    /// high for the byte-rate field.
    pub fn create(path: &Path, sample_rate: u32, encoding: Encoding) -> Result<Self, WavError> {
        Self::create_with_channels(path, sample_rate, encoding, 1)
    }

    /// As [`WavWriter::create`], for `channels` interleaved channels (1 or 2; anything else is
    /// [`WavError::UnsupportedChannels`]). The header's channel count, byte rate and block
    /// align follow the channel count.
    pub fn create_with_channels(
        path: &Path,
        sample_rate: u32,
        encoding: Encoding,
        channels: u16,
    ) -> Result<Self, WavError> {
        let header = header(encoding, sample_rate, channels)?;
        let file = File::create(path).map_err(|source| io_error(path, source))?;
        let mut out = BufWriter::new(file);
        out.write_all(&header)
            .and_then(|()| out.flush())
            .map_err(|source| io_error(path, source))?;
        Ok(Self {
            out,
            path: path.to_path_buf(),
            encoding,
            channels,
            data_bytes: 0,
            finished: false,
        })
    }

    /// Encodes `samples` (interleaved, left first, when stereo) and appends them (buffered).
    /// Fails without writing anything if the samples are not whole frames or the file would
    /// pass the 4 GiB RIFF limit.
    pub fn write(&mut self, samples: &[i16]) -> Result<(), WavError> {
        if samples.len() % usize::from(self.channels) != 0 {
            return Err(WavError::PartialFrame {
                samples: samples.len(),
                channels: self.channels,
            });
        }
        let added = (samples.len() as u64).saturating_mul(self.encoding.bytes_per_sample());
        let total = self.data_bytes.saturating_add(added);
        if total > self.encoding.max_data_bytes(self.channels) {
            return Err(WavError::TooLarge { bytes: total });
        }
        let mut buf = [0u8; ENCODE_BLOCK * 2];
        for block in samples.chunks(ENCODE_BLOCK) {
            let n = match self.encoding {
                Encoding::Pcm16 => {
                    for (dst, sample) in buf.chunks_exact_mut(2).zip(block) {
                        dst.copy_from_slice(&sample.to_le_bytes());
                    }
                    block.len() * 2
                }
                Encoding::Ulaw => encode_ulaw(block, &mut buf),
                Encoding::Alaw => encode_alaw(block, &mut buf),
            };
            let bytes = buf.get(..n).unwrap_or(&[]);
            self.out
                .write_all(bytes)
                .map_err(|source| io_error(&self.path, source))?;
            self.data_bytes += bytes.len() as u64;
        }
        Ok(())
    }

    /// Hands every buffered sample to the kernel, then rewrites the data size, the `fact`
    /// frame count and the RIFF size for what has been written, so the file is valid as it
    /// stands. Writes the pad byte of an odd-sized data chunk (the next write overwrites it).
    /// No fsync; call about once a second.
    pub fn sync_header(&mut self) -> Result<(), WavError> {
        self.sync_inner()
            .map_err(|source| io_error(&self.path, source))
    }

    fn sync_inner(&mut self) -> io::Result<()> {
        let header_len = self.encoding.header_len();
        let end = header_len + self.data_bytes;
        let pad = self.data_bytes & 1;
        // `write` keeps data_bytes <= max_data_bytes, so these fit; checked all the same.
        let too_large = |_| io::Error::other("WAV data exceeds 4 GiB");
        let data_size = u32::try_from(self.data_bytes).map_err(too_large)?;
        let riff = u32::try_from(end + pad - 8).map_err(too_large)?;
        let frames = u32::try_from(self.samples_written()).map_err(too_large)?;

        // Samples first, header second: the header never describes bytes not yet written.
        if pad == 1 {
            self.out.write_all(&[0])?;
        }
        self.out.flush()?;
        let file = self.out.get_mut();
        put_u32(file, header_len - 4, data_size)?;
        if self.encoding != Encoding::Pcm16 {
            put_u32(file, FACT_COUNT_AT, frames)?;
        }
        put_u32(file, RIFF_SIZE_AT, riff)?;
        // Back to the end of the data (before the pad byte) for the next write.
        file.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    /// Writes the final sizes, fsyncs, closes the file and returns the data size in bytes
    /// (without the pad byte).
    pub fn finish(mut self) -> Result<u64, WavError> {
        self.sync_header()?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|source| io_error(&self.path, source))?;
        self.finished = true;
        Ok(self.data_bytes)
    }

    /// Frames (samples per channel) accepted by [`WavWriter::write`] so far (synced or not).
    pub fn samples_written(&self) -> u64 {
        self.data_bytes / self.encoding.block_align(self.channels)
    }

    /// Channels of the file: 1 or 2.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// How samples are stored.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}

impl Drop for WavWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: a drop has nowhere to report an error, and `repair` can still fix
            // the header later.
            let _ = self.sync_header();
        }
    }
}

/// Writes a little-endian `u32` at `offset` (moves the file position).
fn put_u32(file: &mut File, offset: u64, value: u32) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&value.to_le_bytes())
}

fn io_error(path: &Path, source: io::Error) -> WavError {
    WavError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Four bytes at `at` (zeros past the end; callers pass buffers that are long enough).
fn four(bytes: &[u8], at: usize) -> [u8; 4] {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 4])
}

/// Little-endian `u16` at `at` (0 past the end).
fn le_u16(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

/// Little-endian `u32` at `at` (0 past the end).
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(four(bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711;

    const ALL: [Encoding; 3] = [Encoding::Pcm16, Encoding::Ulaw, Encoding::Alaw];

    /// A pseudo-random signal over the whole 16-bit range, with the extremes included.
    fn signal(len: usize, seed: u32) -> Vec<i16> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut out: Vec<i16> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u16 as i16
            })
            .collect();
        for (slot, value) in out.iter_mut().zip([i16::MIN, i16::MAX, 0, -1, 1]) {
            *slot = value;
        }
        out
    }

    /// What reading back `samples` written with `encoding` must give.
    fn through_codec(encoding: Encoding, samples: &[i16]) -> Vec<i16> {
        let mut codes = vec![0u8; samples.len()];
        let mut out = vec![0i16; samples.len()];
        match encoding {
            Encoding::Pcm16 => return samples.to_vec(),
            Encoding::Ulaw => {
                g711::encode_ulaw(samples, &mut codes);
                g711::decode_ulaw(&codes, &mut out);
            }
            Encoding::Alaw => {
                g711::encode_alaw(samples, &mut codes);
                g711::decode_alaw(&codes, &mut out);
            }
        }
        out
    }

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = id.to_vec();
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut f = b"RIFF".to_vec();
        f.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        f.extend_from_slice(b"WAVE");
        f.extend_from_slice(&body);
        f
    }

    fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut b = Vec::new();
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        b.extend_from_slice(&align.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b
    }

    fn extensible_body(sub_tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut b = fmt_body(TAG_EXTENSIBLE, channels, rate, bits);
        b.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        b.extend_from_slice(&bits.to_le_bytes()); // wValidBitsPerSample
        b.extend_from_slice(&(if channels == 2 { 3u32 } else { 4 }).to_le_bytes());
        b.extend_from_slice(&sub_tag.to_le_bytes());
        b.extend_from_slice(&SUBFORMAT_SUFFIX);
        b
    }

    fn pcm16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// Asserts that a file written by `WavWriter` has sizes that match its length exactly.
    fn assert_sizes_match(bytes: &[u8], encoding: Encoding, samples: usize) {
        let header = encoding.header_len() as usize;
        let data = samples * encoding.bytes_per_sample() as usize;
        let pad = data % 2;
        assert_eq!(bytes.len(), header + data + pad, "{encoding:?} file length");
        assert_eq!(
            u32_at(bytes, 4) as usize,
            bytes.len() - 8,
            "{encoding:?} RIFF size"
        );
        assert_eq!(
            u32_at(bytes, header - 4) as usize,
            data,
            "{encoding:?} data size"
        );
        if encoding != Encoding::Pcm16 {
            assert_eq!(
                u32_at(bytes, 46) as usize,
                samples,
                "{encoding:?} fact count"
            );
        }
    }

    fn error_of(bytes: &[u8]) -> WavError {
        match parse(bytes) {
            Ok(audio) => panic!("expected an error, got {} samples", audio.samples.len()),
            Err(error) => error,
        }
    }

    #[test]
    fn round_trip_every_encoding_at_8_and_16_khz() {
        let dir = tempfile::tempdir().unwrap();
        for encoding in ALL {
            for rate in [8000, 16000] {
                let path = dir.path().join(format!("{encoding:?}-{rate}.wav"));
                // Odd length: μ-law/A-law data needs a pad byte.
                let input = signal(3001, rate);
                let mut writer = WavWriter::create(&path, rate, encoding).unwrap();
                // Uneven pieces, larger than the encode block, with a sync in between.
                writer.write(&input[..1500]).unwrap();
                writer.sync_header().unwrap();
                writer.write(&input[1500..1501]).unwrap();
                writer.write(&[]).unwrap();
                writer.write(&input[1501..]).unwrap();
                assert_eq!(writer.samples_written(), 3001);
                let data = writer.finish().unwrap();
                assert_eq!(data, 3001 * encoding.bytes_per_sample());

                let bytes = fs::read(&path).unwrap();
                assert_sizes_match(&bytes, encoding, 3001);
                let audio = read(&path).unwrap();
                assert_eq!(audio.sample_rate, rate);
                assert_eq!(
                    audio.samples,
                    through_codec(encoding, &input),
                    "{encoding:?}"
                );
                if encoding != Encoding::Pcm16 {
                    // The codec really was applied (and not PCM stored under a G.711 tag).
                    assert_ne!(audio.samples, input);
                }
                assert!(
                    !repair(&path).unwrap(),
                    "{encoding:?} {rate}: finished file"
                );
            }
        }
    }

    #[test]
    fn headers_have_the_documented_layout() {
        let dir = tempfile::tempdir().unwrap();
        let expected_pcm: Vec<u8> = [
            b"RIFF".as_slice(),
            &42u32.to_le_bytes(), // 36 + 6
            b"WAVE",
            b"fmt ",
            &16u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &1u16.to_le_bytes(),
            &8000u32.to_le_bytes(),
            &16000u32.to_le_bytes(),
            &2u16.to_le_bytes(),
            &16u16.to_le_bytes(),
            b"data",
            &6u32.to_le_bytes(),
        ]
        .concat();
        assert_eq!(expected_pcm.len(), 44);
        let g711_header = |tag: u16| -> Vec<u8> {
            [
                b"RIFF".as_slice(),
                &54u32.to_le_bytes(), // 50 + 3 + pad
                b"WAVE",
                b"fmt ",
                &18u32.to_le_bytes(),
                &tag.to_le_bytes(),
                &1u16.to_le_bytes(),
                &8000u32.to_le_bytes(),
                &8000u32.to_le_bytes(),
                &1u16.to_le_bytes(),
                &8u16.to_le_bytes(),
                &0u16.to_le_bytes(),
                b"fact",
                &4u32.to_le_bytes(),
                &3u32.to_le_bytes(),
                b"data",
                &3u32.to_le_bytes(),
            ]
            .concat()
        };
        for (encoding, expected) in [
            (Encoding::Pcm16, expected_pcm),
            (Encoding::Ulaw, g711_header(7)),
            (Encoding::Alaw, g711_header(6)),
        ] {
            assert_eq!(expected.len() as u64, encoding.header_len());
            let path = dir.path().join(format!("{encoding:?}.wav"));

            // Right after create: sizes for zero data, already on disk.
            let writer = WavWriter::create(&path, 8000, encoding).unwrap();
            let empty = fs::read(&path).unwrap();
            assert_eq!(empty.len() as u64, encoding.header_len());
            assert_eq!(u32_at(&empty, 4) as u64, encoding.header_len() - 8);
            assert_eq!(u32_at(&empty, empty.len() - 4), 0);
            drop(writer);

            let mut writer = WavWriter::create(&path, 8000, encoding).unwrap();
            writer.write(&[0, 1000, -1000]).unwrap();
            writer.finish().unwrap();
            let bytes = fs::read(&path).unwrap();
            assert_eq!(
                &bytes[..expected.len()],
                expected.as_slice(),
                "{encoding:?}"
            );
            // Then the samples, and for 3 G.711 bytes a zero pad byte.
            let tail: Vec<u8> = match encoding {
                Encoding::Pcm16 => pcm16(&[0, 1000, -1000]),
                Encoding::Ulaw => vec![0xFF, g711::ulaw_encode(1000), g711::ulaw_encode(-1000), 0],
                Encoding::Alaw => vec![0xD5, g711::alaw_encode(1000), g711::alaw_encode(-1000), 0],
            };
            assert_eq!(&bytes[expected.len()..], tail.as_slice(), "{encoding:?}");
        }
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let left = [100i16, -100, i16::MAX, i16::MIN, 3, -3];
        let right = [300i16, -301, i16::MAX, i16::MIN, 0, 0];
        let interleaved: Vec<i16> = left
            .iter()
            .zip(&right)
            .flat_map(|(&l, &r)| [l, r])
            .collect();
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(TAG_PCM, 2, 16000, 16)),
            chunk(b"data", &pcm16(&interleaved)),
        ]);
        let audio = parse(&file).unwrap();
        assert_eq!(audio.sample_rate, 16000);
        assert_eq!(audio.samples, [200, -200, i16::MAX, i16::MIN, 1, -1]);

        // Stereo μ-law: each channel decoded, then averaged.
        let codes = [
            g711::ulaw_encode(1000),
            g711::ulaw_encode(-3000),
            g711::ulaw_encode(0),
            g711::ulaw_encode(20000),
        ];
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(TAG_ULAW, 2, 8000, 8)),
            chunk(b"data", &codes),
        ]);
        let expected = |a: u8, b: u8| {
            ((i32::from(g711::ulaw_decode(a)) + i32::from(g711::ulaw_decode(b))) / 2) as i16
        };
        assert_eq!(
            parse(&file).unwrap().samples,
            [expected(codes[0], codes[1]), expected(codes[2], codes[3])]
        );
    }

    #[test]
    fn unknown_and_odd_sized_chunks_are_skipped() {
        let samples = [1i16, -2, 3, -4, 5];
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 16)),
            // Odd sizes: the pad byte must be skipped, or "data" is never found.
            chunk(b"LIST", b"INFOx"),
            chunk(b"junk", b"abc"),
            chunk(b"fact", &5u32.to_le_bytes()),
            chunk(b"data", &pcm16(&samples)),
            chunk(b"id3 ", b"trailing metadata"),
        ]);
        assert_eq!(file[12 + 24 + 8 + 5], 0, "pad byte present in the fixture");
        let audio = parse(&file).unwrap();
        assert_eq!(audio.samples, samples);

        // fmt after data is fine too.
        let file = riff(&[
            chunk(b"LIST", b"I"),
            chunk(b"data", &pcm16(&samples)),
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 22050, 16)),
        ]);
        let audio = parse(&file).unwrap();
        assert_eq!(audio.sample_rate, 22050);
        assert_eq!(audio.samples, samples);

        // An odd-sized data chunk (8-bit) followed by its pad byte and another chunk.
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(TAG_ALAW, 1, 8000, 8)),
            chunk(b"data", &[0xD5, 0x55, 0xAA]),
            chunk(b"LIST", b"xy"),
        ]);
        assert_eq!(parse(&file).unwrap().samples, [8, -8, 32256]);
    }

    #[test]
    fn eight_bit_pcm_and_extensible_formats_are_read() {
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 11025, 8)),
            chunk(b"data", &[0, 128, 255, 64]),
        ]);
        let audio = parse(&file).unwrap();
        assert_eq!(audio.sample_rate, 11025);
        assert_eq!(audio.samples, [-32768, 0, 32512, -16384]);

        let file = riff(&[
            chunk(b"fmt ", &extensible_body(TAG_PCM, 2, 48000, 16)),
            chunk(b"data", &pcm16(&[10, 20, -10, -20])),
        ]);
        let audio = parse(&file).unwrap();
        assert_eq!(audio.sample_rate, 48000);
        assert_eq!(audio.samples, [15, -15]);

        let file = riff(&[
            chunk(b"fmt ", &extensible_body(TAG_ULAW, 1, 8000, 8)),
            chunk(b"data", &[0xFF, 0xFE, 0x7E]),
        ]);
        assert_eq!(parse(&file).unwrap().samples, [0, 8, -8]);

        let file = riff(&[
            chunk(b"fmt ", &extensible_body(TAG_ALAW, 1, 8000, 8)),
            chunk(b"data", &[0xD5]),
        ]);
        assert_eq!(parse(&file).unwrap().samples, [8]);
    }

    #[test]
    fn sizes_past_the_end_and_streaming_sizes_read_what_is_there() {
        let samples = [7i16, -7, 700, -700];
        let fmt = chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 16));

        // Declared 1000 bytes, 9 present: four samples and half of one.
        let mut file = riff(std::slice::from_ref(&fmt));
        file.extend_from_slice(b"data");
        file.extend_from_slice(&1000u32.to_le_bytes());
        file.extend_from_slice(&pcm16(&samples));
        file.push(0x55);
        assert_eq!(parse(&file).unwrap().samples, samples);

        // Streaming writers: RIFF and data sizes 0xFFFFFFFF, or 0.
        for size in [u32::MAX, 0] {
            let mut file = b"RIFF".to_vec();
            file.extend_from_slice(&size.to_le_bytes());
            file.extend_from_slice(b"WAVE");
            file.extend_from_slice(&fmt);
            file.extend_from_slice(b"data");
            file.extend_from_slice(&size.to_le_bytes());
            file.extend_from_slice(&pcm16(&samples));
            assert_eq!(parse(&file).unwrap().samples, samples, "size {size:#x}");
        }

        // A stale RIFF size (writer killed) does not limit the walk.
        let mut file = riff(&[fmt.clone(), chunk(b"data", &pcm16(&samples))]);
        file[4..8].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(parse(&file).unwrap().samples, samples);
    }

    #[test]
    fn each_malformed_file_gives_its_own_error() {
        let fmt16 = chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 16));
        let data = chunk(b"data", &pcm16(&[1, 2]));
        let message = |error: &WavError| error.to_string();

        let e = error_of(b"RIFF\x04\0\0\0WAV");
        assert!(matches!(e, WavError::TooShort { len: 11 }), "{e:?}");

        let mut not_riff = riff(&[fmt16.clone(), data.clone()]);
        not_riff[..4].copy_from_slice(b"RIFX");
        let e = error_of(&not_riff);
        assert!(
            matches!(e, WavError::NotRiff { magic } if &magic == b"RIFX"),
            "{e:?}"
        );
        assert_eq!(message(&e), "not a RIFF file (starts with \"RIFX\")");
        not_riff[..4].copy_from_slice(b"RF64");
        assert!(message(&error_of(&not_riff)).contains("RF64"));

        let mut avi = riff(&[fmt16.clone(), data.clone()]);
        avi[8..12].copy_from_slice(b"AVI ");
        let e = error_of(&avi);
        assert!(
            matches!(e, WavError::NotWave { form } if &form == b"AVI "),
            "{e:?}"
        );

        let e = error_of(&riff(&[chunk(b"LIST", b"x"), data.clone()]));
        assert!(matches!(e, WavError::FmtMissing), "{e:?}");
        assert_eq!(message(&e), "fmt chunk missing");

        let e = error_of(&riff(&[fmt16.clone(), chunk(b"LIST", b"x")]));
        assert!(matches!(e, WavError::DataMissing), "{e:?}");
        assert_eq!(message(&e), "data chunk missing");

        let e = error_of(&riff(&[fmt16.clone(), chunk(b"data", &[])]));
        assert!(matches!(e, WavError::DataEmpty), "{e:?}");
        // One byte of a 16-bit sample is no sample.
        let e = error_of(&riff(&[fmt16.clone(), chunk(b"data", &[1])]));
        assert!(matches!(e, WavError::DataEmpty), "{e:?}");

        let e = error_of(&riff(&[
            chunk(b"fmt ", &fmt_body(0x55, 1, 8000, 0)),
            data.clone(),
        ]));
        assert!(
            matches!(e, WavError::UnsupportedEncoding { tag: 85 }),
            "{e:?}"
        );
        assert_eq!(
            message(&e),
            "unsupported encoding 85 (MPEG Layer 3); use PCM 16-bit, mu-law or A-law"
        );
        let e = error_of(&riff(&[
            chunk(b"fmt ", &fmt_body(0x1234, 1, 8000, 16)),
            data.clone(),
        ]));
        assert!(message(&e).contains("4660 (0x1234)"), "{e}");

        let e = error_of(&riff(&[
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 24)),
            data.clone(),
        ]));
        assert!(
            matches!(e, WavError::UnsupportedBits { tag: 1, bits: 24 }),
            "{e:?}"
        );
        assert!(message(&e).contains("24 bits"), "{e}");
        let e = error_of(&riff(&[
            chunk(b"fmt ", &fmt_body(TAG_ULAW, 1, 8000, 16)),
            data.clone(),
        ]));
        assert!(
            matches!(e, WavError::UnsupportedBits { tag: 7, bits: 16 }),
            "{e:?}"
        );

        for channels in [0, 3, 6] {
            let e = error_of(&riff(&[
                chunk(b"fmt ", &fmt_body(TAG_PCM, channels, 8000, 16)),
                data.clone(),
            ]));
            assert!(
                matches!(e, WavError::UnsupportedChannels { channels: c } if c == channels),
                "{e:?}"
            );
        }

        let e = error_of(&riff(&[
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 0, 16)),
            data.clone(),
        ]));
        assert!(
            matches!(e, WavError::InvalidSampleRate { rate: 0 }),
            "{e:?}"
        );

        let mut bad_align = fmt_body(TAG_PCM, 2, 8000, 16);
        bad_align[12..14].copy_from_slice(&2u16.to_le_bytes());
        let e = error_of(&riff(&[chunk(b"fmt ", &bad_align), data.clone()]));
        assert!(
            matches!(
                e,
                WavError::BlockAlign {
                    block_align: 2,
                    channels: 2,
                    bits: 16
                }
            ),
            "{e:?}"
        );
        assert!(message(&e).contains("expected 4"), "{e}");

        let e = error_of(&riff(&[chunk(b"fmt ", &[1, 0, 1, 0]), data.clone()]));
        assert!(
            matches!(
                e,
                WavError::FmtTooShort {
                    size: 4,
                    needed: 16
                }
            ),
            "{e:?}"
        );
        let short_extensible = fmt_body(TAG_EXTENSIBLE, 1, 8000, 16);
        let e = error_of(&riff(&[chunk(b"fmt ", &short_extensible), data.clone()]));
        assert!(
            matches!(
                e,
                WavError::FmtTooShort {
                    size: 16,
                    needed: 40
                }
            ),
            "{e:?}"
        );

        // fmt declared larger than the rest of the file.
        let mut truncated = riff(&[]);
        truncated.extend_from_slice(b"fmt ");
        truncated.extend_from_slice(&100u32.to_le_bytes());
        truncated.extend_from_slice(&fmt_body(TAG_PCM, 1, 8000, 16));
        let e = error_of(&truncated);
        assert!(
            matches!(
                e,
                WavError::FmtTruncated {
                    declared: 100,
                    present: 16
                }
            ),
            "{e:?}"
        );

        let mut odd_guid = extensible_body(TAG_PCM, 1, 8000, 16);
        odd_guid[39] ^= 0xFF;
        let e = error_of(&riff(&[chunk(b"fmt ", &odd_guid), data.clone()]));
        assert!(matches!(e, WavError::UnsupportedSubFormat { .. }), "{e:?}");
        assert!(
            message(&e).contains("00000001-0000-0010-8000-00AA00389B8E"),
            "{e}"
        );
        let e = error_of(&riff(&[
            chunk(b"fmt ", &extensible_body(3, 1, 8000, 32)),
            data.clone(),
        ]));
        assert!(
            matches!(e, WavError::UnsupportedEncoding { tag: 3 }),
            "{e:?}"
        );
        assert!(message(&e).contains("IEEE float"), "{e}");

        // Every error is a std::error::Error with a non-empty message.
        let boxed: Box<dyn std::error::Error> = Box::new(WavError::DataEmpty);
        assert!(!boxed.to_string().is_empty());
    }

    #[test]
    fn io_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wav");
        let e = read(&missing).unwrap_err();
        assert!(matches!(e, WavError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.wav"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert!(matches!(repair(&missing), Err(WavError::Io { .. })));

        let e = WavWriter::create(&dir.path().join("no/such/dir.wav"), 8000, Encoding::Pcm16)
            .unwrap_err();
        assert!(matches!(e, WavError::Io { .. }), "{e:?}");

        for rate in [0, u32::MAX] {
            let e =
                WavWriter::create(&dir.path().join("rate.wav"), rate, Encoding::Pcm16).unwrap_err();
            assert!(
                matches!(e, WavError::InvalidSampleRate { rate: r } if r == rate),
                "{e:?}"
            );
        }
    }

    /// Writes `first`, syncs, writes `second` and "kills" the process: the buffer reaches the
    /// kernel but the header is never updated again.
    fn killed_writer(path: &Path, encoding: Encoding, first: &[i16], second: &[i16]) {
        let mut writer = WavWriter::create(path, 8000, encoding).unwrap();
        writer.write(first).unwrap();
        writer.sync_header().unwrap();
        writer.write(second).unwrap();
        writer.out.flush().unwrap();
        std::mem::forget(writer);
    }

    #[test]
    fn killed_writer_is_readable_and_repair_recovers_every_complete_sample() {
        let dir = tempfile::tempdir().unwrap();
        for encoding in ALL {
            let path = dir.path().join(format!("killed-{encoding:?}.wav"));
            // Odd first part: for G.711 the sync wrote a pad byte, later overwritten.
            let first = signal(8001, 1);
            let second = signal(2999, 2);
            killed_writer(&path, encoding, &first, &second);
            if encoding == Encoding::Pcm16 {
                // Killed in the middle of a sample.
                let mut file = OpenOptions::new().append(true).open(&path).unwrap();
                file.write_all(&[0x42]).unwrap();
            }

            // Readable as it stands, up to the last sync.
            let audio = read(&path).unwrap();
            assert_eq!(
                audio.samples,
                through_codec(encoding, &first),
                "{encoding:?}"
            );

            assert!(repair(&path).unwrap(), "{encoding:?}: header was stale");
            let bytes = fs::read(&path).unwrap();
            assert_sizes_match(&bytes, encoding, first.len() + second.len());
            let all = [first.as_slice(), &second].concat();
            assert_eq!(read(&path).unwrap().samples, through_codec(encoding, &all));
            assert!(
                !repair(&path).unwrap(),
                "{encoding:?}: repaired file is consistent"
            );
        }
    }

    #[test]
    fn writer_killed_before_its_first_sync_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        for encoding in ALL {
            let path = dir.path().join(format!("early-{encoding:?}.wav"));
            let samples = signal(333, 3);
            killed_writer(&path, encoding, &[], &samples);
            // Data size 0 reads as "to the end of the file".
            assert_eq!(
                read(&path).unwrap().samples,
                through_codec(encoding, &samples)
            );
            assert!(repair(&path).unwrap());
            assert_sizes_match(&fs::read(&path).unwrap(), encoding, samples.len());
            assert_eq!(
                read(&path).unwrap().samples,
                through_codec(encoding, &samples)
            );
        }
    }

    #[test]
    fn writer_killed_between_header_fields_is_recovered() {
        // The RIFF size already covers everything, the data size does not.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("half-synced.wav");
        let (first, second) = (signal(100, 4), signal(50, 5));
        killed_writer(&path, Encoding::Pcm16, &first, &second);
        let mut bytes = fs::read(&path).unwrap();
        let riff = bytes.len() as u32 - 8;
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        fs::write(&path, &bytes).unwrap();

        assert_eq!(read(&path).unwrap().samples, first);
        assert!(repair(&path).unwrap());
        assert_sizes_match(&fs::read(&path).unwrap(), Encoding::Pcm16, 150);
        assert_eq!(read(&path).unwrap().samples, [first, second].concat());
    }

    #[test]
    fn unsynced_samples_shaped_like_a_chunk_header_are_still_samples() {
        // Bytes 01 00 02 00 00 00 00 00: an 8-byte "chunk" of size 0 with a non-ASCII id.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk-shaped.wav");
        let (first, second) = (signal(10, 8), [1i16, 2, 0, 0]);
        killed_writer(&path, Encoding::Pcm16, &first, &second);
        assert!(repair(&path).unwrap());
        assert_sizes_match(&fs::read(&path).unwrap(), Encoding::Pcm16, 14);
        assert_eq!(read(&path).unwrap().samples, [&first[..], &second].concat());
    }

    #[test]
    fn repair_leaves_good_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        for encoding in ALL {
            for len in [0, 1, 2, 777] {
                let path = dir.path().join(format!("good-{encoding:?}-{len}.wav"));
                let mut writer = WavWriter::create(&path, 16000, encoding).unwrap();
                writer.write(&signal(len, 6)).unwrap();
                writer.finish().unwrap();
                let before = fs::read(&path).unwrap();
                assert!(!repair(&path).unwrap(), "{encoding:?} {len}");
                assert_eq!(fs::read(&path).unwrap(), before);
            }
        }

        // Metadata after the data chunk is not mistaken for samples.
        let path = dir.path().join("trailing-list.wav");
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 16)),
            chunk(b"data", &pcm16(&[1, 2, 3])),
            chunk(b"LIST", b"INFOISFT\x05\0\0\0Sox\0\0"),
        ]);
        fs::write(&path, &file).unwrap();
        assert!(!repair(&path).unwrap());
        assert_eq!(fs::read(&path).unwrap(), file);

        // ... and a wrong RIFF size there is fixed without touching the data.
        let mut stale = file.clone();
        stale[4..8].copy_from_slice(&28u32.to_le_bytes());
        fs::write(&path, &stale).unwrap();
        assert!(repair(&path).unwrap());
        assert_eq!(fs::read(&path).unwrap(), file);
    }

    #[test]
    fn repair_fixes_streaming_sizes_and_drops_a_partial_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("streamed.wav");
        let samples = [5i16, -5, 500, -500, 5000];
        let mut file = b"RIFF\xFF\xFF\xFF\xFFWAVE".to_vec();
        file.extend_from_slice(&chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 16)));
        file.extend_from_slice(b"data\xFF\xFF\xFF\xFF");
        file.extend_from_slice(&pcm16(&samples));
        file.push(9);
        fs::write(&path, &file).unwrap();

        assert_eq!(read(&path).unwrap().samples, samples);
        assert!(repair(&path).unwrap());
        let bytes = fs::read(&path).unwrap();
        assert_sizes_match(&bytes, Encoding::Pcm16, samples.len());
        // The original bytes, without the stray byte, with real sizes in place of 0xFFFFFFFF.
        let mut expected = file[..file.len() - 1].to_vec();
        let riff = expected.len() as u32 - 8;
        expected[4..8].copy_from_slice(&riff.to_le_bytes());
        expected[40..44].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(read(&path).unwrap().samples, samples);
    }

    #[test]
    fn repair_rejects_what_it_cannot_understand() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.wav");
        fs::write(&path, b"not a wav file at all").unwrap();
        assert!(matches!(repair(&path), Err(WavError::NotRiff { .. })));

        // Stray bytes at the end, but the fmt chunk sits after data: extending data to the end
        // of the file would swallow it.
        let mut file = riff(&[
            chunk(b"data", &pcm16(&[1, 2])),
            chunk(b"fmt ", &fmt_body(TAG_PCM, 1, 8000, 16)),
        ]);
        file.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &file).unwrap();
        assert_eq!(read(&path).unwrap().samples, [1, 2]);
        let e = repair(&path).unwrap_err();
        assert!(matches!(e, WavError::Unrepairable { .. }), "{e:?}");
        assert_eq!(fs::read(&path).unwrap(), file, "nothing written");
    }

    #[test]
    fn dropped_writer_leaves_a_consistent_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.wav");
        let samples = signal(1234, 7);
        let mut writer = WavWriter::create(&path, 8000, Encoding::Ulaw).unwrap();
        writer.write(&samples).unwrap();
        drop(writer);
        assert!(!repair(&path).unwrap());
        assert_eq!(
            read(&path).unwrap().samples,
            through_codec(Encoding::Ulaw, &samples)
        );
    }

    #[test]
    fn writer_refuses_to_pass_the_riff_limit() {
        let dir = tempfile::tempdir().unwrap();
        for encoding in ALL {
            let path = dir.path().join(format!("big-{encoding:?}.wav"));
            let mut writer = WavWriter::create(&path, 8000, encoding).unwrap();
            let max = encoding.max_data_bytes(1);
            // The largest file still has a RIFF size (with pad) that fits in 32 bits.
            assert!(encoding.header_len() - 8 + max + max % 2 <= u64::from(u32::MAX));
            writer.data_bytes = max - encoding.bytes_per_sample();
            writer.write(&[]).unwrap();
            let e = writer.write(&[0, 0]).unwrap_err();
            assert!(matches!(e, WavError::TooLarge { .. }), "{e:?}");
            assert!(e.to_string().contains("4 GiB"), "{e}");
            // Nothing was buffered; forget the pretend size before the writer syncs on drop.
            assert_eq!(writer.out.buffer().len(), 0);
            writer.data_bytes = 0;
        }
    }

    /// `frames` samples of a sine at `freq` Hz.
    fn sine(freq: f64, rate: u32, frames: usize) -> Vec<i16> {
        (0..frames)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn interleave(left: &[i16], right: &[i16]) -> Vec<i16> {
        left.iter().zip(right).flat_map(|(&l, &r)| [l, r]).collect()
    }

    /// The two channels of a stereo file written by `WavWriter`, decoded from its bytes.
    fn channels_of(bytes: &[u8], encoding: Encoding) -> (Vec<i16>, Vec<i16>) {
        let data = &bytes[encoding.header_len() as usize..];
        let samples: Vec<i16> = match encoding {
            Encoding::Pcm16 => data
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
            Encoding::Ulaw => data.iter().map(|&b| g711::ulaw_decode(b)).collect(),
            Encoding::Alaw => data.iter().map(|&b| g711::alaw_decode(b)).collect(),
        };
        samples.chunks_exact(2).map(|lr| (lr[0], lr[1])).unzip()
    }

    #[test]
    fn stereo_files_keep_each_channel() {
        let dir = tempfile::tempdir().unwrap();
        for (encoding, rate) in [(Encoding::Pcm16, 16000), (Encoding::Ulaw, 8000)] {
            let path = dir.path().join(format!("stereo-{encoding:?}.wav"));
            let frames = 1601;
            let left = sine(1000.0, rate, frames);
            let right = vec![0i16; frames];
            let all = interleave(&left, &right);
            let mut writer = WavWriter::create_with_channels(&path, rate, encoding, 2).unwrap();
            assert_eq!(writer.channels(), 2);
            for block in all.chunks(320) {
                writer.write(block).unwrap();
            }
            assert_eq!(
                writer.samples_written(),
                frames as u64,
                "frames, not samples"
            );
            let data = writer.finish().unwrap();
            assert_eq!(data, 2 * frames as u64 * encoding.bytes_per_sample());

            let bytes = fs::read(&path).unwrap();
            let block = 2 * encoding.bytes_per_sample() as u16;
            assert_eq!(le_u16(&bytes, 22), 2, "{encoding:?} channels");
            assert_eq!(le_u32(&bytes, 24), rate);
            assert_eq!(le_u32(&bytes, 28), rate * u32::from(block), "byte rate");
            assert_eq!(le_u16(&bytes, 32), block, "block align");
            if encoding != Encoding::Pcm16 {
                assert_eq!(le_u32(&bytes, 46), frames as u32, "fact counts frames");
            }
            assert_eq!(
                bytes.len() as u64,
                encoding.header_len() + data,
                "{encoding:?}: whole frames, no pad byte"
            );
            assert_eq!(
                info(&path).unwrap(),
                Info {
                    sample_rate: rate,
                    channels: 2,
                    block_align: block,
                    frames: frames as u64,
                }
            );

            let (l, r) = channels_of(&bytes, encoding);
            assert_eq!(l, through_codec(encoding, &left), "{encoding:?} left");
            assert!(r.iter().all(|&s| s == 0), "{encoding:?} right is silent");
            assert_eq!(
                read(&path).unwrap().samples.len(),
                frames,
                "parse: one per frame"
            );
            assert!(
                !repair(&path).unwrap(),
                "{encoding:?}: finished file is consistent"
            );
        }
    }

    #[test]
    fn stereo_writer_refuses_partial_frames_and_other_channel_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial.wav");
        let mut writer = WavWriter::create_with_channels(&path, 8000, Encoding::Alaw, 2).unwrap();
        let e = writer.write(&[1, 2, 3]).unwrap_err();
        assert!(
            matches!(
                e,
                WavError::PartialFrame {
                    samples: 3,
                    channels: 2
                }
            ),
            "{e:?}"
        );
        assert_eq!(writer.samples_written(), 0, "nothing written");
        writer.write(&[1, 2]).unwrap();
        assert_eq!(writer.finish().unwrap(), 2);

        for channels in [0, 3] {
            let e = WavWriter::create_with_channels(&path, 8000, Encoding::Pcm16, channels)
                .unwrap_err();
            assert!(
                matches!(e, WavError::UnsupportedChannels { channels: c } if c == channels),
                "{e:?}"
            );
        }
    }

    #[test]
    fn stereo_file_cut_mid_frame_is_repaired_to_whole_frames() {
        let dir = tempfile::tempdir().unwrap();
        for encoding in ALL {
            let path = dir.path().join(format!("cut-{encoding:?}.wav"));
            let left = signal(150, 9);
            let right = signal(150, 10);
            let all = interleave(&left, &right);
            let mut writer = WavWriter::create_with_channels(&path, 8000, encoding, 2).unwrap();
            writer.write(&all[..200]).unwrap();
            writer.sync_header().unwrap();
            writer.write(&all[200..]).unwrap();
            writer.out.flush().unwrap();
            std::mem::forget(writer);
            // Killed after the left sample of the last frame reached the file.
            let len = fs::metadata(&path).unwrap().len();
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len - encoding.bytes_per_sample()).unwrap();

            assert!(repair(&path).unwrap(), "{encoding:?}");
            let bytes = fs::read(&path).unwrap();
            let data = 149 * 2 * encoding.bytes_per_sample();
            assert_eq!(
                bytes.len() as u64,
                encoding.header_len() + data,
                "{encoding:?}"
            );
            assert_eq!(u64::from(u32_at(&bytes, 4)), bytes.len() as u64 - 8);
            let data_size_at = encoding.header_len() as usize - 4;
            assert_eq!(u64::from(u32_at(&bytes, data_size_at)), data);
            if encoding != Encoding::Pcm16 {
                assert_eq!(u32_at(&bytes, 46), 149, "fact counts frames");
            }
            assert_eq!(info(&path).unwrap().frames, 149);
            let (l, r) = channels_of(&bytes, encoding);
            assert_eq!(
                l,
                through_codec(encoding, &left[..149]),
                "{encoding:?} left"
            );
            assert_eq!(
                r,
                through_codec(encoding, &right[..149]),
                "{encoding:?} right"
            );
            assert!(!repair(&path).unwrap());
        }
    }
}
