//! The recorder thread (`media-recorder`): writes recordings to disk so media workers never
//! block on file I/O.
//!
//! Owns: every open [`RecordingFile`], converting each channel's audio to the file's rate,
//! keeping the two channels of a two-channel recording time-aligned, muting channels (silence
//! in the file), syncing each file about once a second (a killed process leaves a playable
//! file), finishing files, and reporting [`EngineEvent::RecordingFailed`] (at the first write
//! error: a full disk) and [`EngineEvent::RecordingDone`]. Finishing (the last sizes and an
//! fsync) runs on a thread of its own (`media-rec-finish`): an fsync per ended call must not
//! hold up every other call's frames.
//! Must not: be waited for by a worker — workers `try_send` frames and a full queue drops them
//! (counted and logged).
//!
//! Alignment: both channels are paced by the connection's ptime (the worker hands over one
//! frame per ptime of each), so they arrive in step. Each channel waits in its own queue at
//! the file's rate and frames are interleaved as both have samples. When one channel falls
//! more than [`MAX_SKEW_MS`] behind (its peer sent nothing, the session had nowhere to send),
//! it is filled with silence up to the other, so a gap never shifts what follows.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::{ConnectionKey, EngineEvent};
use crate::media::recording_file::{self, NewRecording, RecordingFile};
use crate::media::resample::Resampler;

/// Samples one frame message carries (20 ms at 48 kHz).
pub const FRAME_SAMPLES: usize = 960;

/// Frames (and commands) the recorder queue holds before workers drop frames: about 160 ms
/// of two-channel frames for 1,000 recordings.
pub const QUEUE_DEPTH: usize = 16_384;

/// How often every open file is brought up to date on disk.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How far one channel of a two-channel recording may lag the other before it is filled with
/// silence.
pub const MAX_SKEW_MS: u32 = 200;

/// What the recorder is asked to do.
pub enum RecorderCommand {
    /// A new recording: the file is created (by the control plane, so a bad name fails at
    /// once); its channel count and rate say how frames are written.
    Start {
        key: ConnectionKey,
        operation: u64,
        file: Box<RecordingFile>,
    },
    /// A new recording whose file the recorder creates (a call's recording: no file system
    /// work on the control task). A file that cannot be created is reported as
    /// [`EngineEvent::RecordingFailed`], then [`EngineEvent::RecordingDone`] with the error.
    Create {
        key: ConnectionKey,
        operation: u64,
        file: Box<NewRecording>,
    },
    /// Audio of one channel of a recording (0: left or mono, 1: right), at `rate`.
    Frame {
        operation: u64,
        channel: u8,
        rate: u32,
        len: usize,
        samples: Box<[i16; FRAME_SAMPLES]>,
    },
    /// Silence (or not) in these channels from now on (`left` is a mono file's only one).
    Mute {
        operation: u64,
        left: bool,
        right: bool,
    },
    /// The recording ends: finish the file and report.
    Stop { operation: u64 },
}

/// Starts the recorder thread (and its finisher); it ends when every sender is dropped,
/// finishing open files.
pub fn spawn(
    inbox: Receiver<RecorderCommand>,
    events: Sender<EngineEvent>,
) -> std::io::Result<JoinHandle<()>> {
    let (finish_tx, finish_rx) = std::sync::mpsc::channel::<(u64, Recording)>();
    let finish_events = events.clone();
    let finisher = thread::Builder::new()
        .name("media-rec-finish".into())
        .spawn(move || {
            for (operation, recording) in finish_rx {
                finish(operation, recording, &finish_events);
            }
        })?;
    thread::Builder::new()
        .name("media-recorder".into())
        .spawn(move || {
            run(inbox, events, &finish_tx);
            drop(finish_tx);
            if finisher.join().is_err() {
                tracing::error!("recording finisher panicked");
            }
        })
}

/// A queue for workers to send frames into.
pub fn channel() -> (SyncSender<RecorderCommand>, Receiver<RecorderCommand>) {
    std::sync::mpsc::sync_channel(QUEUE_DEPTH)
}

fn run(
    inbox: Receiver<RecorderCommand>,
    events: Sender<EngineEvent>,
    finisher: &std::sync::mpsc::Sender<(u64, Recording)>,
) {
    let mut open: HashMap<u64, Recording> = HashMap::new();
    // Recordings whose file could not be created, until their stop.
    let mut created_failed: Vec<(ConnectionKey, u64, String)> = Vec::new();
    let mut last_sync = Instant::now();
    loop {
        match inbox.recv_timeout(SYNC_INTERVAL) {
            Ok(RecorderCommand::Start {
                key,
                operation,
                file,
            }) => {
                open.insert(operation, Recording::new(key, *file));
            }
            Ok(RecorderCommand::Create {
                key,
                operation,
                file,
            }) => match file.create() {
                Ok(created) => {
                    open.insert(operation, Recording::new(key, created));
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(key, operation, %error, "recording file cannot be created");
                    let _ = events.try_send(EngineEvent::RecordingFailed {
                        key,
                        operation,
                        error: error.clone(),
                    });
                    created_failed.push((key, operation, error));
                }
            },
            Ok(RecorderCommand::Frame {
                operation,
                channel,
                rate,
                len,
                samples,
            }) => {
                if let Some(recording) = open.get_mut(&operation) {
                    recording.push(channel, &samples[..len.min(FRAME_SAMPLES)], rate);
                    recording.report_failure(operation, &events);
                }
            }
            Ok(RecorderCommand::Mute {
                operation,
                left,
                right,
            }) => {
                if let Some(recording) = open.get_mut(&operation) {
                    recording.channels[0].muted = left;
                    if let Some(c) = recording.channels.get_mut(1) {
                        c.muted = right;
                    }
                }
            }
            Ok(RecorderCommand::Stop { operation }) => {
                if let Some(mut recording) = open.remove(&operation) {
                    recording.flush_tail();
                    hand_over(finisher, operation, recording, &events);
                } else if let Some(at) = created_failed.iter().position(|f| f.1 == operation) {
                    // Its file never existed: done, with the error it failed with.
                    let (key, operation, error) = created_failed.swap_remove(at);
                    report_done(&events, key, operation, 0, Some(error));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_sync.elapsed() >= SYNC_INTERVAL {
            last_sync = Instant::now();
            for (&operation, recording) in open.iter_mut() {
                recording.sync();
                recording.report_failure(operation, &events);
            }
        }
    }
    for (operation, mut recording) in open.drain() {
        recording.flush_tail();
        hand_over(finisher, operation, recording, &events);
    }
}

/// To the finisher thread; finished here when it is gone.
fn hand_over(
    finisher: &std::sync::mpsc::Sender<(u64, Recording)>,
    operation: u64,
    recording: Recording,
    events: &Sender<EngineEvent>,
) {
    if let Err(std::sync::mpsc::SendError((operation, recording))) =
        finisher.send((operation, recording))
    {
        finish(operation, recording, events);
    }
}

/// One open recording.
struct Recording {
    key: ConnectionKey,
    file: RecordingFile,
    /// One per channel of the file.
    channels: Vec<ChannelQueue>,
    /// Interleaved frames ready for the file (reused).
    interleaved: Vec<i16>,
    /// The first write error; the recording writes nothing after it.
    error: Option<String>,
    /// The error was reported to the control plane.
    reported: bool,
}

/// One channel's audio at the file's rate, waiting for the other channel.
struct ChannelQueue {
    /// From the audio's rate to the file's (rebuilt if the audio's rate changes).
    converter: Option<(u32, Resampler)>,
    converted: Vec<i16>,
    pending: VecDeque<i16>,
    muted: bool,
}

impl Recording {
    fn new(key: ConnectionKey, file: RecordingFile) -> Recording {
        let channels = (0..file.channels().clamp(1, 2))
            .map(|_| ChannelQueue {
                converter: None,
                converted: Vec::with_capacity(FRAME_SAMPLES),
                pending: VecDeque::with_capacity(FRAME_SAMPLES * 2),
                muted: false,
            })
            .collect();
        Recording {
            key,
            file,
            channels,
            interleaved: Vec::with_capacity(FRAME_SAMPLES * 2),
            error: None,
            reported: false,
        }
    }

    /// Takes one channel's audio, then writes what both channels have.
    fn push(&mut self, channel: u8, samples: &[i16], rate: u32) {
        if self.error.is_some() {
            return;
        }
        let file_rate = self.file.rate();
        let Some(queue) = self.channels.get_mut(usize::from(channel)) else {
            return;
        };
        if let Err(e) = queue.push(samples, rate, file_rate) {
            self.fail(e);
            return;
        }
        self.write_ready();
    }

    /// Writes the frames both channels have; fills a channel that fell too far behind.
    fn write_ready(&mut self) {
        if let [left, right] = &mut self.channels[..] {
            let skew = (self.file.rate() * MAX_SKEW_MS / 1000) as usize;
            let (l, r) = (left.pending.len(), right.pending.len());
            if l > r + skew {
                right.pending.extend(std::iter::repeat_n(0, l - r));
            } else if r > l + skew {
                left.pending.extend(std::iter::repeat_n(0, r - l));
            }
        }
        let ready = self
            .channels
            .iter()
            .map(|c| c.pending.len())
            .min()
            .unwrap_or(0);
        if ready == 0 {
            return;
        }
        self.interleaved.clear();
        for _ in 0..ready {
            for channel in &mut self.channels {
                let sample = channel.pending.pop_front().unwrap_or(0);
                self.interleaved
                    .push(if channel.muted { 0 } else { sample });
            }
        }
        if let Err(e) = self.file.write(&self.interleaved) {
            self.fail(e.to_string());
        }
    }

    /// The end of the call: what one channel still holds beyond the other is written with
    /// silence beside it.
    fn flush_tail(&mut self) {
        if self.error.is_some() {
            return;
        }
        let longest = self
            .channels
            .iter()
            .map(|c| c.pending.len())
            .max()
            .unwrap_or(0);
        for channel in &mut self.channels {
            let missing = longest - channel.pending.len();
            channel.pending.extend(std::iter::repeat_n(0, missing));
        }
        self.write_ready();
    }

    fn sync(&mut self) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.file.sync() {
            self.fail(e.to_string());
        }
    }

    fn fail(&mut self, error: String) {
        if self.error.is_none() {
            tracing::warn!(key = self.key, %error, "recording failed");
            self.error = Some(error);
        }
    }

    /// Tells the control plane of the first write error, once (never waits: a full queue
    /// tries again on the next frame or sync).
    fn report_failure(&mut self, operation: u64, events: &Sender<EngineEvent>) {
        let (Some(error), false) = (&self.error, self.reported) else {
            return;
        };
        let event = EngineEvent::RecordingFailed {
            key: self.key,
            operation,
            error: error.clone(),
        };
        self.reported = events.try_send(event).is_ok();
    }
}

impl ChannelQueue {
    fn push(&mut self, samples: &[i16], rate: u32, file_rate: u32) -> Result<(), String> {
        if rate == file_rate {
            self.pending.extend(samples.iter().copied());
            return Ok(());
        }
        if self.converter.as_ref().map(|(r, _)| *r) != Some(rate) {
            let converter = Resampler::new(rate, file_rate)
                .map_err(|e| format!("cannot convert {rate} Hz to the file's rate: {e}"))?;
            self.converter = Some((rate, converter));
        }
        let Some((_, converter)) = self.converter.as_mut() else {
            return Ok(());
        };
        self.converted
            .resize(converter.output_len(samples.len()), 0);
        let n = converter.process(samples, &mut self.converted);
        self.pending.extend(self.converted[..n].iter().copied());
        Ok(())
    }
}

fn finish(operation: u64, recording: Recording, events: &Sender<EngineEvent>) {
    let Recording {
        key, file, error, ..
    } = recording;
    let (path, kind) = (file.path().to_path_buf(), file.kind());
    let written = file.samples_written();
    let (samples, error) = match (error, file.finish()) {
        (None, Ok(frames)) => (frames, None),
        (error, finished) => {
            // After a failed write (a full disk) the file is read back to what reached the
            // disk: a valid file of that length.
            let error = error.or(finished.err().map(|e| e.to_string()));
            match recording_file::recover(&path, kind) {
                Ok(recovered) => (recovered.frames, error),
                Err(e) => {
                    tracing::warn!(key, operation, error = %e, "failed recording cannot be repaired");
                    (written, error)
                }
            }
        }
    };
    report_done(events, key, operation, samples, error);
}

/// [`EngineEvent::RecordingDone`]: the control plane must hear it (it completes the Record):
/// wait for room rather than drop, bounded so a stopped control plane cannot hang us.
fn report_done(
    events: &Sender<EngineEvent>,
    key: ConnectionKey,
    operation: u64,
    samples: u64,
    error: Option<String>,
) {
    let event = EngineEvent::RecordingDone {
        key,
        operation,
        samples,
        error,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut event = Some(event);
    while let Some(e) = event.take() {
        match events.try_send(e) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(e)) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
                event = Some(e);
            }
            Err(_) => tracing::warn!(key, operation, "recording finished but nobody was told"),
        }
    }
}
