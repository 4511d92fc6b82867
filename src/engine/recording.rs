//! The engine's recording commands: a connection's or a conference's audio to a file through
//! the recorder thread (`recorder`), muting, stopping.
//!
//! Owns: handing files (or files to create) to the recorder and the command that makes a
//! worker send audio to it, in that order, and finishing the file when the worker cannot.
//! Must not: write files (the recorder thread does) or wait for a worker.

use super::{recorder, ConferenceKey, ConnectionKey, Engine, EngineError, WorkerCommand};
use crate::media::recording_file::{NewRecording, RecordingFile};

impl Engine {
    /// Starts recording a connection into `file`: the caller's audio, and (a two-channel
    /// file) what the connection sends it on the right; [`EngineEvent::RecordingDone`]
    /// follows [`Engine::stop_recording`].
    ///
    /// [`EngineEvent::RecordingDone`]: super::EngineEvent::RecordingDone
    pub fn start_recording(
        &self,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError> {
        let both = file.channels() == 2;
        let start = recorder::RecorderCommand::Start {
            key,
            operation,
            file: Box::new(file),
        };
        self.with_recorder(operation, start, || {
            self.submit_for(
                key,
                WorkerCommand::Record {
                    key,
                    operation,
                    both,
                },
            )
        })
    }

    /// Starts recording a connection into a file the recorder thread creates (a call's
    /// recording: the caller's audio, and with two channels what the connection sends it);
    /// a file that cannot be created comes back as [`EngineEvent::RecordingFailed`].
    ///
    /// [`EngineEvent::RecordingFailed`]: super::EngineEvent::RecordingFailed
    pub fn start_recording_to(
        &self,
        key: ConnectionKey,
        operation: u64,
        file: NewRecording,
    ) -> Result<(), EngineError> {
        let both = file.channels == 2;
        let create = recorder::RecorderCommand::Create {
            key,
            operation,
            file: Box::new(file),
        };
        self.with_recorder(operation, create, || {
            self.submit_for(
                key,
                WorkerCommand::Record {
                    key,
                    operation,
                    both,
                },
            )
        })
    }

    /// Mutes (silence in the file) or unmutes a recording's channels: `left` the caller's
    /// audio (or a mono file's only channel), `right` what the connection is sent.
    pub fn mute_recording(
        &self,
        operation: u64,
        left: bool,
        right: bool,
    ) -> Result<(), EngineError> {
        self.to_recorder(recorder::RecorderCommand::Mute {
            operation,
            left,
            right,
        })
    }

    /// Gives the recorder a new recording (`Start` or `Create`), then runs `start` (the
    /// command that makes a worker send audio to it); if `start` fails the recorder finishes
    /// the file at once.
    fn with_recorder(
        &self,
        operation: u64,
        recording: recorder::RecorderCommand,
        start: impl FnOnce() -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        self.to_recorder(recording)?;
        let started = start();
        if started.is_err() {
            let _ = self.to_recorder(recorder::RecorderCommand::Stop { operation });
        }
        started
    }

    /// One command to the recorder thread, never waiting: a full queue is `QueueFull`.
    fn to_recorder(&self, command: recorder::RecorderCommand) -> Result<(), EngineError> {
        let queue = self.recorder.as_ref().ok_or(EngineError::WorkerGone)?;
        queue.try_send(command).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => EngineError::QueueFull,
            std::sync::mpsc::TrySendError::Disconnected(_) => EngineError::WorkerGone,
        })
    }

    /// Ends a recording: the worker hands over what it still holds, the recorder finishes the
    /// file and reports [`EngineEvent::RecordingDone`].
    ///
    /// [`EngineEvent::RecordingDone`]: super::EngineEvent::RecordingDone
    pub fn stop_recording(&self, key: ConnectionKey, operation: u64) -> Result<(), EngineError> {
        let stopped = self.submit_for(key, WorkerCommand::StopRecord { key, operation });
        if stopped.is_err() {
            let _ = self.to_recorder(recorder::RecorderCommand::Stop { operation });
        }
        stopped
    }

    /// Records a conference's whole mix into `file` (at the room's rate, converted to the
    /// file's), as listener `key`.
    pub fn conference_record(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
        file: RecordingFile,
    ) -> Result<(), EngineError> {
        let worker = self.conference_worker(conference)?;
        let start = recorder::RecorderCommand::Start {
            key,
            operation,
            file: Box::new(file),
        };
        self.with_recorder(operation, start, || {
            self.workers[worker].submit(WorkerCommand::RoomRecord {
                conference,
                key,
                operation,
            })
        })
    }

    /// Stops a conference recording; [`EngineEvent::RecordingDone`] follows.
    ///
    /// [`EngineEvent::RecordingDone`]: super::EngineEvent::RecordingDone
    pub fn conference_stop_record(
        &self,
        conference: ConferenceKey,
        key: ConnectionKey,
        operation: u64,
    ) -> Result<(), EngineError> {
        let stopped = self.conference_worker(conference).and_then(|worker| {
            self.workers[worker].submit(WorkerCommand::RoomStopRecord {
                conference,
                key,
                operation,
            })
        });
        if stopped.is_err() {
            let _ = self.to_recorder(recorder::RecorderCommand::Stop { operation });
        }
        stopped
    }
}
