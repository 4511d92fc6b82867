//! A call recording's file, whatever its format: the one type the recorder thread writes
//! through, and the recovery of a file whose process was killed.
//!
//! Owns: checking that a format suits the rate and channel count asked for (WAV μ-law and A-law
//! at 8000 Hz; WAV PCM16 at any rate its header can hold; Ogg Opus at 8, 12, 16, 24 or
//! 48 kHz; 1 or 2 channels), creating the file's parent directories, handing interleaved
//! samples to [`super::wav::WavWriter`] or [`super::ogg_opus::OggOpusWriter`], and [`recover`]
//! (repair, then length) after a crash. Also the test-only disk limit below.
//! Must not: resample, mix or interleave (the recorder hands samples at the file's rate, left
//! channel first: the party's audio left, what the server sends it right), read the clock,
//! name files, or run on a media worker's packet path: every call does blocking file I/O.
//!
//! # Crash tolerance
//!
//! [`RecordingFile::sync`] (about once a second) leaves a file that plays up to that point as
//! it stands; after a `kill -9`, [`recover`] makes the file whole and tells its length, losing
//! at most what was written since the last sync.
//!
//! # Test-only disk limit
//!
//! Exists for the end-to-end test of a full disk; never set it in production. When the
//! environment variable `CALLBRIDGE_TEST_DISK_LIMIT_BYTES` holds a byte count N (read once per
//! process), every write that would take the bytes written by all recording files of the
//! process past N fails with the error a full disk gives: an [`io::Error`] of raw OS error
//! `ENOSPC` ("No space left on device", kind [`io::ErrorKind::StorageFull`]), as
//! [`RecordingFileError::Io`], for which [`RecordingFileError::is_disk_full`] is true. A real
//! full disk gives the same error, from the writer's `Io` variant. Counted: every file's
//! header and encoded audio. A WAV write is refused before anything is written; an Ogg Opus
//! write is counted after encoding (its size is not known before), so the write that passes N
//! fails with its packets buffered. `sync` and `finish` are not limited. After that error, as
//! after any other, the file refuses every further call.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::ogg_opus::{self, OggOpusError, OggOpusWriter};
use super::wav::{self, Encoding, WavError, WavWriter};

/// The environment variable of the test-only disk limit (module docs).
pub const DISK_LIMIT_VAR: &str = "CALLBRIDGE_TEST_DISK_LIMIT_BYTES";
/// The one rate of G.711 WAV files.
const G711_RATE: u32 = 8_000;

/// The format of a recording file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// RIFF/WAVE with the given sample encoding.
    Wav(Encoding),
    /// Ogg Opus (RFC 7845).
    OggOpus,
}

impl FileKind {
    /// The usual file name extension: `wav`, or `opus` (RFC 7845 §9).
    pub const fn extension(self) -> &'static str {
        match self {
            Self::Wav(_) => "wav",
            Self::OggOpus => "opus",
        }
    }
}

/// Why a recording file cannot be created, written or recovered.
#[derive(Debug)]
pub enum RecordingFileError {
    /// From the WAV writer or repair.
    Wav(WavError),
    /// From the Ogg Opus writer or recovery.
    OggOpus(OggOpusError),
    /// A rate the format does not take.
    UnsupportedRate {
        /// The format asked for.
        kind: FileKind,
        /// The rate asked for, Hz.
        rate: u32,
    },
    /// Neither mono nor stereo.
    UnsupportedChannels {
        /// The channel count asked for.
        channels: u16,
    },
    /// Creating the file's parent directories failed.
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system reported.
        source: io::Error,
    },
    /// The test-only disk limit was reached (module docs).
    Io {
        /// The file being written.
        path: PathBuf,
        /// `ENOSPC`.
        source: io::Error,
    },
    /// An earlier error left the file unusable; drop it (and [`recover`] it).
    Failed {
        /// The file.
        path: PathBuf,
    },
}

impl RecordingFileError {
    /// Whether the disk (or the test-only limit) is full: an I/O error of kind
    /// [`io::ErrorKind::StorageFull`].
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            Self::Io { source, .. }
            | Self::CreateDir { source, .. }
            | Self::Wav(WavError::Io { source, .. })
            | Self::OggOpus(OggOpusError::Io { source, .. }) => source,
            _ => return false,
        };
        source.kind() == io::ErrorKind::StorageFull
    }
}

impl fmt::Display for RecordingFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wav(e) => write!(f, "WAV recording: {e}"),
            Self::OggOpus(e) => write!(f, "Ogg Opus recording: {e}"),
            Self::UnsupportedRate {
                kind: FileKind::Wav(_),
                rate,
            } => write!(
                f,
                "{rate} Hz: mu-law and A-law WAV recordings are {G711_RATE} Hz"
            ),
            Self::UnsupportedRate {
                kind: FileKind::OggOpus,
                rate,
            } => write!(
                f,
                "{rate} Hz: Ogg Opus recordings take 8000, 12000, 16000, 24000 or 48000 Hz"
            ),
            Self::UnsupportedChannels { channels } => {
                write!(f, "{channels} channels; recordings are mono or stereo")
            }
            Self::CreateDir { path, source } => {
                write!(f, "cannot create directory {}: {source}", path.display())
            }
            Self::Io { path, source } => write!(f, "I/O error on {}: {source}", path.display()),
            Self::Failed { path } => write!(
                f,
                "{}: the recording stopped after an earlier error",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RecordingFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Wav(e) => Some(e),
            Self::OggOpus(e) => Some(e),
            Self::CreateDir { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<WavError> for RecordingFileError {
    fn from(e: WavError) -> Self {
        Self::Wav(e)
    }
}

impl From<OggOpusError> for RecordingFileError {
    fn from(e: OggOpusError) -> Self {
        Self::OggOpus(e)
    }
}

/// A recording file to create where it will be written (the recorder thread), so that no
/// file system work waits on the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecording {
    pub path: PathBuf,
    pub kind: FileKind,
    pub rate: u32,
    pub channels: u16,
}

impl NewRecording {
    /// Creates the file (and its directories).
    pub fn create(&self) -> Result<RecordingFile, RecordingFileError> {
        RecordingFile::create(&self.path, self.kind, self.rate, self.channels)
    }
}

/// One recording being written.
#[derive(Debug)]
pub struct RecordingFile {
    writer: Writer,
    path: PathBuf,
    /// Samples per second per channel.
    rate: u32,
    /// 1 or 2.
    channels: u16,
    /// The test-only disk limit, shared by every file it covers.
    budget: Option<Arc<DiskBudget>>,
    /// Set by the first error: every later call fails.
    failed: bool,
}

/// The format-specific writer.
#[derive(Debug)]
enum Writer {
    Wav(WavWriter),
    OggOpus(OggOpusWriter),
}

impl RecordingFile {
    /// Creates (or truncates) `path`, and its parent directories, and writes the header of an
    /// empty recording of `channels` (1 or 2) at `rate` Hz. The file is valid from the start.
    pub fn create(
        path: &Path,
        kind: FileKind,
        rate: u32,
        channels: u16,
    ) -> Result<RecordingFile, RecordingFileError> {
        Self::create_with_budget(path, kind, rate, channels, process_budget())
    }

    fn create_with_budget(
        path: &Path,
        kind: FileKind,
        rate: u32,
        channels: u16,
        budget: Option<Arc<DiskBudget>>,
    ) -> Result<RecordingFile, RecordingFileError> {
        if !(1..=2).contains(&channels) {
            return Err(RecordingFileError::UnsupportedChannels { channels });
        }
        let rate_ok = match kind {
            FileKind::Wav(Encoding::Pcm16) => true,
            FileKind::Wav(Encoding::Ulaw | Encoding::Alaw) => rate == G711_RATE,
            FileKind::OggOpus => ogg_opus::INPUT_RATES.contains(&rate),
        };
        if !rate_ok {
            return Err(RecordingFileError::UnsupportedRate { kind, rate });
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| RecordingFileError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let writer = match kind {
            FileKind::Wav(encoding) => Writer::Wav(WavWriter::create_with_channels(
                path, rate, encoding, channels,
            )?),
            FileKind::OggOpus => Writer::OggOpus(OggOpusWriter::create(path, rate, channels)?),
        };
        let file = RecordingFile {
            writer,
            path: path.to_path_buf(),
            rate,
            channels,
            budget,
            failed: false,
        };
        let header = file.bytes_written();
        file.charge_before(header)?;
        Ok(file)
    }

    /// Channels of the file: 1 or 2.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Samples per second per channel.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it is written (what [`recover`] needs to read it back).
    pub fn kind(&self) -> FileKind {
        match &self.writer {
            Writer::Wav(writer) => FileKind::Wav(writer.encoding()),
            Writer::OggOpus(_) => FileKind::OggOpus,
        }
    }

    /// Appends `interleaved` samples (left first when stereo; whole frames only). Buffered:
    /// the file holds them after the next [`RecordingFile::sync`].
    pub fn write(&mut self, interleaved: &[i16]) -> Result<(), RecordingFileError> {
        self.usable()?;
        let result = self.write_inner(interleaved);
        self.failed = result.is_err();
        result
    }

    fn write_inner(&mut self, interleaved: &[i16]) -> Result<(), RecordingFileError> {
        // A WAV write's size is known before it is written (a partial frame is refused by
        // the writer, and costs nothing).
        let wav_cost = match &self.writer {
            Writer::Wav(writer) if interleaved.len() % usize::from(self.channels) == 0 => {
                Some(interleaved.len() as u64 * writer.encoding().bytes_per_sample())
            }
            _ => None,
        };
        if let Some(cost) = wav_cost {
            self.charge_before(cost)?;
        }
        match &mut self.writer {
            Writer::Wav(writer) => Ok(writer.write(interleaved)?),
            Writer::OggOpus(writer) => {
                let before = writer.bytes_written();
                writer.write(interleaved)?;
                let added = writer.bytes_written().saturating_sub(before);
                self.charge_after(added)
            }
        }
    }

    /// Makes the file valid as it stands: WAV sizes rewritten, Ogg page ended; everything
    /// handed to the kernel (no fsync). Call about once a second.
    pub fn sync(&mut self) -> Result<(), RecordingFileError> {
        self.usable()?;
        let result = match &mut self.writer {
            Writer::Wav(writer) => writer.sync_header().map_err(RecordingFileError::from),
            Writer::OggOpus(writer) => writer.sync().map_err(RecordingFileError::from),
        };
        self.failed = result.is_err();
        result
    }

    /// Completes the file (final sizes; for Ogg Opus the last frame and page), fsyncs and
    /// closes it. Returns the frames (samples per channel) written.
    pub fn finish(self) -> Result<u64, RecordingFileError> {
        self.usable()?;
        match self.writer {
            Writer::Wav(writer) => {
                let frames = writer.samples_written();
                writer.finish()?;
                Ok(frames)
            }
            Writer::OggOpus(writer) => Ok(writer.finish()?),
        }
    }

    /// Frames (samples per channel) accepted by [`RecordingFile::write`] so far.
    pub fn samples_written(&self) -> u64 {
        match &self.writer {
            Writer::Wav(writer) => writer.samples_written(),
            Writer::OggOpus(writer) => writer.samples_written(),
        }
    }

    /// Bytes the file holds, or will once buffers are flushed.
    fn bytes_written(&self) -> u64 {
        match &self.writer {
            Writer::Wav(writer) => {
                let encoding = writer.encoding();
                encoding.header_len()
                    + writer.samples_written()
                        * u64::from(writer.channels())
                        * encoding.bytes_per_sample()
            }
            Writer::OggOpus(writer) => writer.bytes_written(),
        }
    }

    fn usable(&self) -> Result<(), RecordingFileError> {
        if self.failed {
            return Err(RecordingFileError::Failed {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Counts `bytes` about to be written against the disk limit, refusing them if they do
    /// not fit.
    fn charge_before(&self, bytes: u64) -> Result<(), RecordingFileError> {
        match &self.budget {
            Some(budget) if !budget.reserve(bytes) => Err(self.disk_full()),
            _ => Ok(()),
        }
    }

    /// Counts `bytes` already written against the disk limit.
    fn charge_after(&self, bytes: u64) -> Result<(), RecordingFileError> {
        match &self.budget {
            Some(budget) if !budget.add(bytes) => Err(self.disk_full()),
            _ => Ok(()),
        }
    }

    /// The error a full disk gives.
    fn disk_full(&self) -> RecordingFileError {
        RecordingFileError::Io {
            path: self.path.clone(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        }
    }
}

/// What [`recover`] found: the length of a recording as it now stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Frames (samples per channel) the file plays.
    pub frames: u64,
    /// Samples per second per channel.
    pub rate: u32,
    /// 1 or 2.
    pub channels: u16,
}

impl Recovered {
    /// Playing time, ms.
    pub fn duration_ms(&self) -> u64 {
        self.frames * 1000 / u64::from(self.rate.max(1))
    }
}

/// Makes a recording whose writer was killed (or failed) whole and tells its length: for
/// WAV, [`wav::repair`] and then the header; for Ogg Opus, [`ogg_opus::recover`]. A finished
/// file is left as it is.
pub fn recover(path: &Path, kind: FileKind) -> Result<Recovered, RecordingFileError> {
    match kind {
        FileKind::Wav(_) => {
            wav::repair(path)?;
            let info = wav::info(path)?;
            Ok(Recovered {
                frames: info.frames,
                rate: info.sample_rate,
                channels: info.channels,
            })
        }
        FileKind::OggOpus => {
            let found = ogg_opus::recover(path)?;
            Ok(Recovered {
                frames: found.frames,
                rate: found.rate,
                channels: found.channels,
            })
        }
    }
}

/// The test-only disk limit and the bytes counted against it.
#[derive(Debug)]
struct DiskBudget {
    limit: u64,
    used: AtomicU64,
}

impl DiskBudget {
    fn new(limit: u64) -> Self {
        DiskBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Counts `bytes` if the total stays within the limit; false (nothing counted) if not.
    fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Counts `bytes`; false if the total is now past the limit.
    fn add(&self, bytes: u64) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        before.saturating_add(bytes) <= self.limit
    }
}

/// The process's disk limit, from [`DISK_LIMIT_VAR`] at first use.
fn process_budget() -> Option<Arc<DiskBudget>> {
    static BUDGET: OnceLock<Option<Arc<DiskBudget>>> = OnceLock::new();
    BUDGET
        .get_or_init(|| {
            let value = std::env::var(DISK_LIMIT_VAR).ok()?;
            let Some(limit) = parse_limit(&value) else {
                tracing::warn!(
                    variable = DISK_LIMIT_VAR,
                    value,
                    "ignored: not a byte count"
                );
                return None;
            };
            tracing::warn!(
                variable = DISK_LIMIT_VAR,
                limit,
                "test-only disk limit for recordings in force"
            );
            Some(Arc::new(DiskBudget::new(limit)))
        })
        .clone()
}

/// A byte count, surrounding blanks allowed.
fn parse_limit(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [(FileKind, u32, u16); 5] = [
        (FileKind::Wav(Encoding::Pcm16), 16_000, 2),
        (FileKind::Wav(Encoding::Pcm16), 44_100, 1),
        (FileKind::Wav(Encoding::Ulaw), 8_000, 2),
        (FileKind::Wav(Encoding::Alaw), 8_000, 1),
        (FileKind::OggOpus, 16_000, 2),
    ];

    /// `frames` frames of `channels` interleaved channels of a quiet tone.
    fn frames(count: usize, channels: u16) -> Vec<i16> {
        (0..count * usize::from(channels))
            .map(|i| ((i as f64 * 0.07).sin() * 3000.0) as i16)
            .collect()
    }

    fn name(kind: FileKind, rate: u32, channels: u16) -> String {
        format!("{kind:?}-{rate}-{channels}.{}", kind.extension())
    }

    #[test]
    fn every_format_writes_and_recovers_its_length() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, rate, channels) in KINDS {
            // Parent directories are created.
            let path = dir.path().join("a/b").join(name(kind, rate, channels));
            let mut file = RecordingFile::create(&path, kind, rate, channels).unwrap();
            assert_eq!((file.rate(), file.channels()), (rate, channels));
            let second = frames(rate as usize, channels);
            for block in second.chunks(usize::from(channels) * 123) {
                file.write(block).unwrap();
            }
            file.sync().unwrap();
            file.write(&second[..usize::from(channels) * 77]).unwrap();
            let written = u64::from(rate) + 77;
            assert_eq!(file.samples_written(), written);
            assert_eq!(file.finish().unwrap(), written, "{kind:?}");

            let recovered = recover(&path, kind).unwrap();
            assert_eq!(
                recovered,
                Recovered {
                    frames: written,
                    rate,
                    channels
                },
                "{kind:?} {rate} {channels}"
            );
            assert_eq!(recovered.duration_ms(), written * 1000 / u64::from(rate));
        }
    }

    #[test]
    fn killed_recordings_recover_what_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, rate, channels) in KINDS {
            let path = dir.path().join(name(kind, rate, channels));
            let mut file = RecordingFile::create(&path, kind, rate, channels).unwrap();
            file.write(&frames(rate as usize, channels)).unwrap();
            file.sync().unwrap();
            file.write(&frames(rate as usize / 2, channels)).unwrap();
            // kill -9: nothing more reaches the file.
            std::mem::forget(file);

            let recovered = recover(&path, kind).unwrap();
            let synced = u64::from(rate);
            // Opus loses the encoder's lookahead at the sync point (a few ms).
            let floor = synced - u64::from(rate) / 100;
            assert!(
                (floor..=synced * 3 / 2).contains(&recovered.frames),
                "{kind:?}: {recovered:?}"
            );
            assert_eq!((recovered.rate, recovered.channels), (rate, channels));
        }
    }

    #[test]
    fn formats_take_only_their_rates_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never/made.wav");
        let refused = [
            (FileKind::Wav(Encoding::Ulaw), 16_000, 1),
            (FileKind::Wav(Encoding::Alaw), 48_000, 2),
            (FileKind::OggOpus, 44_100, 1),
            (FileKind::OggOpus, 22_050, 2),
        ];
        for (kind, rate, channels) in refused {
            let e = RecordingFile::create(&path, kind, rate, channels).unwrap_err();
            assert!(
                matches!(e, RecordingFileError::UnsupportedRate { rate: r, .. } if r == rate),
                "{e:?}"
            );
            assert!(e.to_string().contains(&rate.to_string()), "{e}");
        }
        for channels in [0, 3] {
            let e = RecordingFile::create(&path, FileKind::OggOpus, 8_000, channels).unwrap_err();
            assert!(
                matches!(e, RecordingFileError::UnsupportedChannels { .. }),
                "{e:?}"
            );
        }
        assert!(!dir.path().join("never").exists(), "nothing created");

        let e = RecordingFile::create(&path, FileKind::Wav(Encoding::Pcm16), 0, 1).unwrap_err();
        assert!(
            matches!(
                e,
                RecordingFileError::Wav(WavError::InvalidSampleRate { rate: 0 })
            ),
            "{e:?}"
        );

        // A stereo write of half a frame is refused, and so is everything after it.
        let path = dir.path().join("odd.wav");
        let mut file =
            RecordingFile::create(&path, FileKind::Wav(Encoding::Pcm16), 8_000, 2).unwrap();
        let e = file.write(&[1, 2, 3]).unwrap_err();
        assert!(
            matches!(e, RecordingFileError::Wav(WavError::PartialFrame { .. })),
            "{e:?}"
        );
        let e = file.write(&[1, 2]).unwrap_err();
        assert!(matches!(e, RecordingFileError::Failed { .. }), "{e:?}");
        assert!(matches!(
            file.finish(),
            Err(RecordingFileError::Failed { .. })
        ));
    }

    #[test]
    fn disk_limit_fails_writes_like_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        // A limit of its own: other tests' files are not counted against it.
        let budget = Some(Arc::new(DiskBudget::new(1_044)));
        let create = |name: &str, kind| {
            RecordingFile::create_with_budget(
                &dir.path().join(name),
                kind,
                8_000,
                1,
                budget.clone(),
            )
            .unwrap()
        };
        let mut pcm = create("pcm.wav", FileKind::Wav(Encoding::Pcm16)); // 44 bytes
        pcm.write(&[7; 400]).unwrap(); // 844
        let mut ulaw = create("ulaw.wav", FileKind::Wav(Encoding::Ulaw)); // 902
        ulaw.write(&[7; 100]).unwrap(); // 1002

        let e = pcm.write(&[7; 50]).unwrap_err(); // would be 1102
        assert!(e.is_disk_full(), "{e:?}");
        match &e {
            RecordingFileError::Io { path, source } => {
                assert_eq!(path, &dir.path().join("pcm.wav"));
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
                assert_eq!(source.kind(), io::ErrorKind::StorageFull);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("No space left on device"), "{e}");
        let e = pcm.write(&[7; 2]).unwrap_err();
        assert!(matches!(e, RecordingFileError::Failed { .. }), "{e:?}");
        drop(pcm);
        assert_eq!(
            recover(&dir.path().join("pcm.wav"), FileKind::Wav(Encoding::Pcm16))
                .unwrap()
                .frames,
            400,
            "the refused write never reached the file"
        );

        ulaw.write(&[7; 42]).unwrap(); // exactly 1044: still fits
        let e = ulaw.write(&[7; 1]).unwrap_err();
        assert!(e.is_disk_full(), "{e:?}");

        // An Ogg Opus file fails once its encoded audio passes the limit.
        let budget = Some(Arc::new(DiskBudget::new(1_000)));
        let path = dir.path().join("full.opus");
        let mut opus =
            RecordingFile::create_with_budget(&path, FileKind::OggOpus, 8_000, 1, budget).unwrap();
        let tone = frames(160, 1);
        let mut writes = 0;
        let e = loop {
            match opus.write(&tone) {
                Ok(()) => writes += 1,
                Err(e) => break e,
            }
            assert!(writes < 1_000, "the limit never bit");
        };
        assert!(e.is_disk_full(), "{e:?}");
        assert!(writes > 5, "{writes} frames fitted");
        drop(opus);
        assert!(recover(&path, FileKind::OggOpus).is_ok());
    }

    #[test]
    fn disk_limit_value_is_a_byte_count() {
        assert_eq!(parse_limit("1048576"), Some(1_048_576));
        assert_eq!(parse_limit(" 0\n"), Some(0));
        for bad in ["", "1MB", "-1", "1e6"] {
            assert_eq!(parse_limit(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_recording_can_move_to_the_recorder_thread() {
        fn send<T: Send>() {}
        send::<RecordingFile>();
    }
}
