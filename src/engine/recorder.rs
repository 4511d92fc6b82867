//! The recorder thread (`media-recorder`): writes recordings to disk so media workers never
//! block on file I/O.
//!
//! Owns: every open [`WavWriter`], converting the caller's audio to the file's rate, syncing
//! each file's header about once a second (a killed process leaves a playable file), finishing
//! files, and reporting [`EngineEvent::RecordingDone`].
//! Must not: be waited for by a worker — workers `try_send` frames and a full queue drops them
//! (counted and logged).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;

use super::{ConnectionKey, EngineEvent};
use crate::media::resample::Resampler;
use crate::media::wav::WavWriter;

/// Samples one frame message carries (20 ms at 48 kHz).
pub const FRAME_SAMPLES: usize = 960;

/// Frames (and commands) the recorder queue holds before workers drop frames.
pub const QUEUE_DEPTH: usize = 4096;

/// How often every open file's header is brought up to date.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What the recorder is asked to do.
pub enum RecorderCommand {
    /// A new recording: the file is created (by the control plane, so a bad name fails the
    /// Record action at once); `file_rate` is the file's sample rate.
    Start {
        key: ConnectionKey,
        operation: u64,
        writer: Box<WavWriter>,
        file_rate: u32,
    },
    /// The caller's audio for a recording, at `rate`.
    Frame {
        operation: u64,
        rate: u32,
        len: usize,
        samples: Box<[i16; FRAME_SAMPLES]>,
    },
    /// The recording ends: finish the file and report.
    Stop { operation: u64 },
}

struct Recording {
    key: ConnectionKey,
    writer: WavWriter,
    file_rate: u32,
    /// From the audio's rate to the file's (rebuilt if the audio's rate changes).
    converter: Option<(u32, Resampler)>,
    converted: Vec<i16>,
    error: Option<String>,
}

/// Starts the recorder thread; it ends when every sender is dropped, finishing open files.
pub fn spawn(
    inbox: Receiver<RecorderCommand>,
    events: Sender<EngineEvent>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("media-recorder".into())
        .spawn(move || run(inbox, events))
}

/// A queue for workers to send frames into.
pub fn channel() -> (SyncSender<RecorderCommand>, Receiver<RecorderCommand>) {
    std::sync::mpsc::sync_channel(QUEUE_DEPTH)
}

fn run(inbox: Receiver<RecorderCommand>, events: Sender<EngineEvent>) {
    let mut open: HashMap<u64, Recording> = HashMap::new();
    let mut last_sync = Instant::now();
    loop {
        match inbox.recv_timeout(SYNC_INTERVAL) {
            Ok(RecorderCommand::Start {
                key,
                operation,
                writer,
                file_rate,
            }) => {
                open.insert(
                    operation,
                    Recording {
                        key,
                        writer: *writer,
                        file_rate,
                        converter: None,
                        converted: Vec::with_capacity(FRAME_SAMPLES),
                        error: None,
                    },
                );
            }
            Ok(RecorderCommand::Frame {
                operation,
                rate,
                len,
                samples,
            }) => {
                if let Some(recording) = open.get_mut(&operation) {
                    recording.write(&samples[..len.min(FRAME_SAMPLES)], rate);
                }
            }
            Ok(RecorderCommand::Stop { operation }) => {
                if let Some(recording) = open.remove(&operation) {
                    finish(operation, recording, &events);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_sync.elapsed() >= SYNC_INTERVAL {
            last_sync = Instant::now();
            for recording in open.values_mut() {
                if let Err(e) = recording.writer.sync_header() {
                    recording.fail(e.to_string());
                }
            }
        }
    }
    for (operation, recording) in open.drain() {
        finish(operation, recording, &events);
    }
}

impl Recording {
    fn write(&mut self, samples: &[i16], rate: u32) {
        if self.error.is_some() {
            return;
        }
        let result = if rate == self.file_rate {
            self.writer.write(samples)
        } else {
            if self.converter.as_ref().map(|(r, _)| *r) != Some(rate) {
                match Resampler::new(rate, self.file_rate) {
                    Ok(r) => self.converter = Some((rate, r)),
                    Err(e) => {
                        self.fail(format!("cannot convert {rate} Hz to the file's rate: {e}"));
                        return;
                    }
                }
            }
            let Some((_, converter)) = self.converter.as_mut() else {
                return;
            };
            self.converted
                .resize(converter.output_len(samples.len()), 0);
            let n = converter.process(samples, &mut self.converted);
            self.writer.write(&self.converted[..n])
        };
        if let Err(e) = result {
            self.fail(e.to_string());
        }
    }

    fn fail(&mut self, error: String) {
        if self.error.is_none() {
            tracing::warn!(key = self.key, %error, "recording failed");
            self.error = Some(error);
        }
    }
}

fn finish(operation: u64, recording: Recording, events: &Sender<EngineEvent>) {
    let Recording {
        key, writer, error, ..
    } = recording;
    let samples = writer.samples_written();
    let error = match writer.finish() {
        Ok(_) => error,
        Err(e) => Some(error.unwrap_or_else(|| e.to_string())),
    };
    // The control plane must hear this (it completes the Record): wait for room rather than
    // drop, bounded so a stopped control plane cannot hang the recorder.
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
