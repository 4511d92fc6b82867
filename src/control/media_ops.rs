//! Media operations in the control plane: Play, PlayTone, GatherDigits, SendDigits, AdjustPlay
//! and StopMediaOperation (reference §3.6–3.7, §3.10, §3.16–3.18).
//!
//! Owns: OperationIds, resolving prompt names to files inside the prompt directory, loading and
//! joining prompts, and turning finished operations into `<Action>_Complete` events — including
//! `userstop` (StopMediaOperation) and `autostop` (the connection went away).
//! Must not: evaluate termination conditions (that is [`super::operations`]) or produce audio
//! (the engine's session plays what it is given).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::events::{Event, OperationDone, ReleaseReason};
use super::operations::{Finished, OperationKind, TermConds, Termination};
use super::result::{ActionError, ResultCode};
use super::timers::Timer;
use super::Backend;
use super::{success, unknown_connection, ActionResult, Controller};
use crate::media::player::{amplitude_of_db, volume_gain, PlaySource};

/// Prompts one Play may name (`Prompt1`..`Prompt3`).
pub const MAX_PROMPTS: usize = 3;

/// What a Play, PlayTone or Record is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Connection(u32),
    /// Through a temporary conference connection, whose id the action returns.
    Conference(u32),
}

/// What Play is asked to play.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub target: Target,
    pub prompts: Vec<String>,
    /// Prompt sub-directories tried first: `<prompt_dir>/<application>/<locale>/<prompt>`.
    pub application: Option<String>,
    pub locale: Option<String>,
    pub conds: TermConds,
    /// −10..=10 (2 dB steps).
    pub volume: i32,
    /// −10..=10 (10 % steps, pitch kept).
    pub speed: i32,
    pub state: Option<String>,
}

impl PlayRequest {
    /// One prompt to `target`, at its own volume and speed, until it ends.
    pub fn prompt(target: Target, prompt: impl Into<String>) -> PlayRequest {
        PlayRequest {
            target,
            prompts: vec![prompt.into()],
            application: None,
            locale: None,
            conds: TermConds::default(),
            volume: 0,
            speed: 0,
            state: None,
        }
    }
}

/// What AdjustPlay changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Volume(i32),
    Speed(i32),
}

/// PlayTone's tone (reference §3.18).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneRequest {
    pub frequency1: u32,
    pub frequency2: Option<u32>,
    /// dB, −40..=0.
    pub amplitude1: i32,
    pub amplitude2: i32,
    /// ms; None (or 0): until a termination condition or StopMediaOperation.
    pub duration_ms: Option<u32>,
}

/// AdjustPlay's `AdjustmentType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    Absolute,
    Relative,
    /// Toggles between the original volume (0) and the last other one.
    Toggle,
}

impl<M: Backend> Controller<M> {
    /// Play: prompts resolved and loaded now (a missing file fails the action at once, with no
    /// event); `Play_Complete` with `eod` when they have played, or the condition that ended it.
    pub(super) fn play(&mut self, request: PlayRequest) -> Result<ActionResult, ActionError> {
        if let Target::Connection(id) = request.target {
            self.check_can_play(id)?;
        }
        let source = self.load_prompts(&request)?;
        let id = self.target_connection(request.target, &request.conds)?;
        self.start_playing(
            id,
            OperationKind::Play,
            source,
            (request.volume, request.speed),
            request.conds,
            request.state,
        )
    }

    /// PlayTone: a tone of one or two frequencies; `eod` when `Duration` has elapsed.
    pub(super) fn play_tone(
        &mut self,
        target: Target,
        tone: ToneRequest,
        conds: TermConds,
        state: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        if let Target::Connection(id) = target {
            self.check_can_play(id)?;
        }
        let duration = tone.duration_ms.filter(|&ms| ms > 0);
        if duration.is_none() && conds.is_empty() {
            return Err(ActionError::new(
                ResultCode::InvalidParameters,
                "a PlayTone without Duration needs a termination condition",
            ));
        }
        let connection = self.target_connection(target, &conds)?;
        let source = PlaySource::Tone {
            frequencies: [
                f64::from(tone.frequency1),
                f64::from(tone.frequency2.unwrap_or(0)),
            ],
            amplitudes: [
                amplitude_of_db(tone.amplitude1),
                if tone.frequency2.is_some() {
                    amplitude_of_db(tone.amplitude2)
                } else {
                    0.0
                },
            ],
            duration: duration.map(|ms| std::time::Duration::from_millis(u64::from(ms))),
        };
        self.start_playing(
            connection,
            OperationKind::PlayTone,
            source,
            (0, 0),
            conds,
            state,
        )
    }

    /// GatherDigits: completes from the digit buffer and the digits that follow.
    pub(super) fn gather_digits(
        &mut self,
        connection: u32,
        conds: TermConds,
        state: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        self.caller_of(connection, "digits to gather")?;
        let operation = self.allocate_operation_id();
        let now = self.now.at;
        let c = self
            .connections
            .get_mut(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        let finished = c
            .ops
            .start(now, operation, OperationKind::GatherDigits, conds, state);
        let result = operation_result(connection, operation);
        if let Some(f) = finished {
            self.complete(connection, f);
        }
        self.arm_operations(connection);
        Ok(result)
    }

    /// SendDigits: into the connection's digit buffer, as if received (no signalling).
    pub(super) fn send_digits(
        &mut self,
        connection: u32,
        digits: &str,
    ) -> Result<ActionResult, ActionError> {
        if !self.connections.contains_key(&connection) {
            return Err(unknown_connection(connection));
        }
        for digit in digits.chars() {
            self.on_operation_digit(connection, digit);
        }
        Ok(success())
    }

    /// StopMediaOperation: one operation (`operation`) or all of the connection's; each ends
    /// with `userstop`. Completion events are emitted before this returns, except a Record's,
    /// which follows when its file is finished (the caller holds a `Block` answer until then).
    /// Returns the operations stopped.
    pub(super) fn stop_media_operation(
        &mut self,
        connection: u32,
        operation: Option<u32>,
    ) -> Result<(ActionResult, Vec<u32>), ActionError> {
        let now = self.now.at;
        let c = self
            .connections
            .get_mut(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        let finished = match operation {
            Some(op) => vec![c.ops.end(now, op, Termination::UserStop).ok_or_else(|| {
                ActionError::new(
                    ResultCode::NoOperation,
                    format!("operation {op} is not running on connection {connection}"),
                )
            })?],
            None => c.ops.end_all(now, Termination::UserStop),
        };
        let stopped: Vec<u32> = finished.iter().map(|f| f.operation).collect();
        for f in finished {
            self.complete(connection, f);
        }
        self.arm_operations(connection);
        Ok((success(), stopped))
    }

    /// AdjustPlay: the volume or the speed of the playout in progress. `toggle` switches the
    /// volume between 0 and its last other value; it leaves the speed alone (reference §3.7).
    pub(super) fn adjust_play(
        &mut self,
        connection: u32,
        level: Level,
        adjustment: Adjustment,
    ) -> Result<ActionResult, ActionError> {
        let c = self
            .connections
            .get_mut(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        if c.playing.is_none() {
            return Err(ActionError::new(
                ResultCode::NoOperation,
                format!("nothing is playing on connection {connection}"),
            ));
        }
        match level {
            Level::Volume(volume) => {
                let new = match adjustment {
                    Adjustment::Absolute => volume,
                    Adjustment::Relative => c.volume + volume,
                    Adjustment::Toggle if c.volume == 0 => c.toggled_volume,
                    Adjustment::Toggle => 0,
                }
                .clamp(-10, 10);
                if c.volume != 0 {
                    c.toggled_volume = c.volume;
                }
                c.volume = new;
            }
            Level::Speed(speed) => {
                c.speed = match adjustment {
                    Adjustment::Absolute => speed,
                    Adjustment::Relative => c.speed + speed,
                    Adjustment::Toggle => c.speed,
                }
                .clamp(-10, 10);
            }
        }
        let (volume, speed) = (c.volume, c.speed);
        self.apply_playback(connection);
        let mut result = success();
        result.insert("Volume".into(), json!(volume));
        result.insert("Speed".into(), json!(speed));
        Ok(result)
    }

    /// Sends a connection's playout volume and speed to the engine.
    fn apply_playback(&mut self, connection: u32) {
        let Some(c) = self.connections.get(&connection) else {
            return;
        };
        let (gain, speed) = (volume_gain(c.volume), c.speed);
        let applied = match c.leg_of {
            Some(conference) => self.engine.conference_set_gain(
                u64::from(conference),
                u64::from(connection),
                gain,
                Some(speed),
            ),
            None => self
                .engine
                .set_play_gain(u64::from(connection), gain)
                .and_then(|()| self.engine.set_play_speed(u64::from(connection), speed)),
        };
        if let Err(e) = applied {
            tracing::warn!(connection, error = %e, "engine could not adjust the playout");
        }
    }

    /// A digit for a connection (RFC 4733, in-band, SendDigits): buffered, and the operations
    /// it ends complete.
    pub(super) fn on_operation_digit(&mut self, connection: u32, digit: char) {
        let now = self.now.at;
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        for f in c.ops.on_digit(now, digit) {
            self.complete(connection, f);
        }
        self.arm_operations(connection);
    }

    /// The engine played a Play/PlayTone to its end: `eod`. An announcement call then ends.
    pub(super) fn on_playout_done(&mut self, connection: u32, operation: u32) {
        let now = self.now.at;
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        if c.playing == Some(operation) {
            c.playing = None;
        }
        let hang_up = c.hang_up_after == Some(operation);
        if let Some(f) = c.ops.end(now, operation, Termination::Eod) {
            self.complete(connection, f);
        }
        self.arm_operations(connection);
        if hang_up {
            let _ = self.release_connection(
                connection,
                super::events::ReleaseReason::AnnouncementComplete,
            );
        }
    }

    /// An `announcement` call: plays its prompt (Request-URI `play=`, RFC 4240, or the
    /// route's), and hangs up when it has played. `file://` URLs name absolute paths.
    pub(super) fn start_announcement(
        &mut self,
        connection: u32,
        prompt: Option<String>,
    ) -> Result<(), ActionError> {
        let prompt = prompt.ok_or_else(|| {
            ActionError::new(
                ResultCode::InvalidParameters,
                "no play= parameter and no prompt on the route",
            )
        })?;
        let prompt = match prompt.strip_prefix("file://") {
            // file://host/path: the path (host ignored: local files only).
            Some(rest) => rest
                .find('/')
                .map_or_else(|| rest.to_string(), |i| rest[i..].to_string()),
            None => prompt,
        };
        let result = self.play(PlayRequest::prompt(Target::Connection(connection), prompt))?;
        let operation = result
            .get("OperationId")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok());
        if let Some(c) = self.connections.get_mut(&connection) {
            c.hang_up_after = operation;
        }
        Ok(())
    }

    /// A connection's operation timer (maxtime, CommandTimeout, inter-digit delay) is due.
    pub(super) fn expire_operations(&mut self, id: u32) {
        let now = self.now.at;
        let finished = match self.connections.get_mut(&id) {
            Some(c) => c.ops.handle_timeout(now),
            None => return,
        };
        for f in finished {
            self.complete(id, f);
        }
        self.arm_operations(id);
    }

    /// Sets a connection's operation timer to its operations' earliest deadline.
    pub(super) fn arm_operations(&mut self, id: u32) {
        let at = self.connections.get(&id).and_then(|c| c.ops.poll_timeout());
        self.timers.set_or_cancel(Timer::Operations(id), at);
    }

    /// A connection is going away: its operations complete with `autostop`.
    pub(super) fn autostop_operations(&mut self, connection: u32) {
        let now = self.now.at;
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        for f in c.ops.end_all(now, Termination::AutoStop) {
            self.complete(connection, f);
        }
    }

    /// Emits the completion event of a finished operation, and stops what the engine still
    /// does for it (playout, energy watch, recording). A Record's event waits for its file.
    fn complete(&mut self, connection: u32, f: Finished) {
        let mut recording = None;
        if let Some(c) = self.connections.get_mut(&connection) {
            if c.playing == Some(f.operation) {
                c.playing = None;
                if f.termination != Termination::Eod {
                    let stopped = match c.leg_of {
                        Some(conference) => self
                            .engine
                            .conference_stop_play(u64::from(conference), u64::from(connection)),
                        None => self
                            .engine
                            .stop_play(u64::from(connection), u64::from(f.operation)),
                    };
                    if let Err(e) = stopped {
                        tracing::warn!(connection, error = %e, "engine could not stop playing");
                    }
                }
            }
            if c.watching.contains(&f.operation) {
                c.watching.retain(|&op| op != f.operation);
                let _ = self
                    .engine
                    .unwatch_energy(u64::from(connection), u64::from(f.operation));
            }
            if c.recording
                .as_ref()
                .is_some_and(|(op, _)| *op == f.operation)
            {
                recording = c.recording.take();
            }
        }
        tracing::info!(
            connection,
            operation = f.operation,
            action = f.kind.name(),
            termination = f.termination.as_str(),
            "media operation complete"
        );
        *self
            .operations_completed
            .entry((
                f.kind.name().to_string(),
                f.termination.as_str().to_string(),
            ))
            .or_default() += 1;
        let leg = self
            .connections
            .get(&connection)
            .filter(|c| c.leg_of.is_some() && !c.releasing && c.ops.running().is_empty())
            .and_then(|c| c.leg_of);
        if let Some((operation, filename)) = recording {
            let leg_of = self.connections.get(&connection).and_then(|c| c.leg_of);
            let stopped = match leg_of {
                Some(conference) => self.engine.conference_stop_record(
                    u64::from(conference),
                    u64::from(connection),
                    u64::from(operation),
                ),
                None => self
                    .engine
                    .stop_recording(u64::from(connection), u64::from(operation)),
            };
            if let Err(e) = stopped {
                tracing::warn!(connection, error = %e, "engine could not stop recording");
            }
            self.pending_records.insert(
                operation,
                PendingRecord {
                    connection,
                    finished: f,
                    filename,
                },
            );
        } else {
            let done = operation_done(connection, &f);
            self.events.emit(match f.kind {
                OperationKind::Play => Event::PlayComplete(done),
                OperationKind::PlayTone => Event::PlayToneComplete(done),
                OperationKind::GatherDigits => Event::GatherDigitsComplete(done),
                OperationKind::Record => Event::RecordComplete(done),
                OperationKind::DetectSilence => Event::DetectSilenceComplete(done),
                OperationKind::DetectNonSilence => Event::DetectNonSilenceComplete(done),
            });
        }
        if leg.is_some() {
            // A temporary conference connection lives as long as its operation.
            let _ = self.release_connection_in(
                connection,
                ReleaseReason::OperationComplete,
                None,
                None,
            );
        }
    }

    /// The connection an operation runs on: the given one, or a new temporary connection of
    /// the conference (silence conditions need a caller's audio: refused there).
    fn target_connection(&mut self, target: Target, conds: &TermConds) -> Result<u32, ActionError> {
        match target {
            Target::Connection(id) => Ok(id),
            Target::Conference(conference) => {
                if conds.silence.is_some() || conds.non_silence.is_some() {
                    return Err(ActionError::new(
                        ResultCode::TermCondition,
                        "silence conditions apply to a connection's caller, not a conference",
                    ));
                }
                self.open_conference_leg(conference)
            }
        }
    }

    /// One playout per connection at a time: a second Play/PlayTone is refused with 14.
    fn check_can_play(&self, connection: u32) -> Result<(), ActionError> {
        let c = self
            .connections
            .get(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        if let Some(op) = c.playing {
            return Err(ActionError::new(
                ResultCode::ConnectionBusy,
                format!("operation {op} is playing on connection {connection}; stop it first"),
            ));
        }
        if c.media.format.is_none() {
            return Err(ActionError::new(
                ResultCode::NotConnected,
                format!("connection {connection} has no negotiated media to play on"),
            ));
        }
        Ok(())
    }

    /// Starts a playout with `(volume, speed)`.
    fn start_playing(
        &mut self,
        connection: u32,
        kind: OperationKind,
        source: PlaySource,
        (volume, speed): (i32, i32),
        conds: TermConds,
        state: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        let gain = volume_gain(volume);
        let operation = self.allocate_operation_id();
        let leg_of = self.connections.get(&connection).and_then(|c| c.leg_of);
        let started = match leg_of {
            Some(conference) => self.engine.conference_play(
                u64::from(conference),
                u64::from(connection),
                u64::from(operation),
                source,
                gain,
            ),
            None => self
                .engine
                .play(u64::from(connection), u64::from(operation), source, gain),
        };
        if let Err(e) = started {
            if leg_of.is_some() {
                let _ = self.release_connection_in(
                    connection,
                    ReleaseReason::OperationComplete,
                    None,
                    None,
                );
            }
            return Err(super::engine_error(e));
        }
        let now = self.now.at;
        let c = self
            .connections
            .get_mut(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        c.playing = Some(operation);
        c.volume = volume;
        c.speed = speed;
        if speed != 0 {
            // Queued behind the play: applied before its first frame.
            self.apply_playback(connection);
        }
        let Some(c) = self.connections.get_mut(&connection) else {
            return Err(unknown_connection(connection));
        };
        // A Play starts no GatherDigits, so nothing can finish at once.
        let watch = conds.clone();
        let _ = c.ops.start(now, operation, kind, conds, state);
        self.arm_operations(connection);
        self.watch_conditions(connection, operation, &watch);
        tracing::info!(
            connection,
            operation,
            action = kind.name(),
            "media operation started"
        );
        Ok(operation_result(connection, operation))
    }

    /// Resolves and loads the prompts. Prompts at rates the real-time path cannot convert
    /// (6, 11.025, 22.05, 44.1 kHz ...) are converted now, to 8 or 16 kHz; prompts of different
    /// rates are joined at the highest.
    fn load_prompts(&self, request: &PlayRequest) -> Result<PlaySource, ActionError> {
        use crate::media::resample::{convert_any, Resampler};
        let mut prompts = Vec::new();
        for prompt in &request.prompts {
            let path = self.resolve_prompt(prompt, request)?;
            let mut audio = self.engine.read_prompt(&path).map_err(|e| {
                ActionError::new(
                    ResultCode::FileIo,
                    format!("prompt {}: {e}", path.display()),
                )
            })?;
            if Resampler::new(audio.sample_rate, 8000).is_err() {
                let to = if audio.sample_rate >= 16_000 {
                    16_000
                } else {
                    8000
                };
                audio.samples = convert_any(&audio.samples, audio.sample_rate, to);
                audio.sample_rate = to;
            }
            prompts.push(audio);
        }
        let rate = prompts.iter().map(|a| a.sample_rate).max().ok_or_else(|| {
            ActionError::new(ResultCode::InvalidParameters, "Prompt1 is required")
        })?;
        let mut joined: Vec<i16> = Vec::new();
        for audio in prompts {
            if audio.sample_rate == rate {
                joined.extend_from_slice(&audio.samples);
            } else {
                joined.extend(convert_any(&audio.samples, audio.sample_rate, rate));
            }
        }
        Ok(PlaySource::Samples {
            pcm: Arc::from(joined),
            rate,
        })
    }

    /// Reference §3.6 order: a full path (when allowed), then
    /// `<prompt_dir>/<application>/<locale>/<prompt>`, then `<prompt_dir>/<prompt>`. A prompt
    /// that names no file is free text: text-to-speech is not available (35).
    fn resolve_prompt(&self, prompt: &str, request: &PlayRequest) -> Result<PathBuf, ActionError> {
        let path = Path::new(prompt);
        if path.is_absolute() {
            if !self.media.allow_absolute_paths {
                return Err(ActionError::new(
                    ResultCode::FileOpen,
                    format!("absolute prompt path {prompt:?} is not allowed ([media] allow_absolute_paths)"),
                ));
            }
            if self.engine.is_file(path) {
                return Ok(path.to_path_buf());
            }
            return Err(ActionError::new(
                ResultCode::FileOpen,
                format!("prompt {prompt:?} not found"),
            ));
        }
        let looks_like_file = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav") || e.eq_ignore_ascii_case("vox"));
        if !looks_like_file {
            return Err(ActionError::new(
                ResultCode::MalformedRequest,
                format!("prompt {prompt:?} is not a .wav file and text-to-speech is not available"),
            ));
        }
        if !is_contained(path) {
            return Err(ActionError::new(
                ResultCode::FileOpen,
                format!("prompt {prompt:?} leaves the prompt directory"),
            ));
        }
        let base = &self.media.prompt_dir;
        let mut candidates = Vec::new();
        if let (Some(app), Some(locale)) = (&request.application, &request.locale) {
            if is_contained(Path::new(app)) && is_contained(Path::new(locale)) {
                candidates.push(base.join(app).join(locale).join(path));
            }
        }
        candidates.push(base.join(path));
        candidates
            .into_iter()
            .find(|c| self.engine.is_file(c))
            .ok_or_else(|| {
                ActionError::new(
                    ResultCode::FileOpen,
                    format!("prompt {prompt:?} not found under {}", base.display()),
                )
            })
    }

    pub(super) fn allocate_operation_id(&mut self) -> u32 {
        let id = self.next_operation_id;
        self.next_operation_id = self.next_operation_id.wrapping_add(1).max(1);
        id
    }
}

/// A relative path without `..`, root or prefix components.
fn is_contained(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn operation_result(connection: u32, operation: u32) -> ActionResult {
    let mut m = success();
    m.insert("ConnectionId".into(), json!(connection.to_string()));
    m.insert("OperationId".into(), json!(operation.to_string()));
    m
}

/// What Record is asked to do (reference §3.9).
#[derive(Debug, Clone)]
pub struct RecordRequest {
    pub target: Target,
    /// Relative to `[media] recording_dir` (absolute only when allowed); None: generated.
    pub filename: Option<String>,
    pub conds: TermConds,
    pub encoding: crate::media::wav::Encoding,
    /// The file's sample rate (8000, or 16000 for 16-bit PCM).
    pub file_rate: u32,
    /// Days until the server deletes the file; 0 = never.
    pub expires_days: u32,
    pub state: Option<String>,
}

/// A Record whose operation has ended, waiting for its file to be finished.
#[derive(Debug)]
pub(super) struct PendingRecord {
    connection: u32,
    finished: Finished,
    filename: String,
}

/// Suffix of the file next to a recording that holds its expiry (Unix seconds).
pub(super) const EXPIRES_SUFFIX: &str = ".expires";

impl<M: Backend> Controller<M> {
    /// Record: the caller's audio into a WAV file; `Record_Complete` (with `Filename`) once the
    /// file is finished.
    pub(super) fn record(&mut self, request: RecordRequest) -> Result<ActionResult, ActionError> {
        if let Target::Connection(id) = request.target {
            let c = self
                .connections
                .get(&id)
                .ok_or_else(|| unknown_connection(id))?;
            if c.media.format.is_none() {
                return Err(ActionError::new(
                    ResultCode::NotConnected,
                    format!("connection {id} has no negotiated media to record"),
                ));
            }
            if c.recording.is_some() {
                return Err(ActionError::new(
                    ResultCode::ConnectionBusy,
                    format!("connection {id} is already being recorded"),
                ));
            }
        }
        let operation = self.allocate_operation_id();
        let (path, filename) = self.resolve_recording(request.filename.as_deref(), operation)?;
        let writer = self
            .engine
            .create_recording(
                &path,
                crate::media::recording_file::FileKind::Wav(request.encoding),
                request.file_rate,
                1,
            )
            .map_err(|e| ActionError::new(ResultCode::FileOpen, e))?;
        let id = match self.target_connection(request.target, &request.conds) {
            Ok(id) => id,
            Err(e) => {
                drop(writer);
                self.engine.remove_file(&path);
                return Err(e);
            }
        };
        let leg_of = self.connections.get(&id).and_then(|c| c.leg_of);
        if request.expires_days > 0 && !Path::new(&filename).is_absolute() {
            let at = self.now.unix_ms / 1000 + u64::from(request.expires_days) * 86_400;
            let mut marker = path.clone().into_os_string();
            marker.push(EXPIRES_SUFFIX);
            if let Err(e) = self.engine.write_file(Path::new(&marker), &at.to_string()) {
                tracing::warn!(path = %path.display(), error = %e, "cannot record the expiry");
            }
        }
        let started = match leg_of {
            Some(conference) => self.engine.conference_record(
                u64::from(conference),
                u64::from(id),
                u64::from(operation),
                writer,
            ),
            None => self
                .engine
                .start_recording(u64::from(id), u64::from(operation), writer),
        };
        if let Err(e) = started {
            self.engine.remove_file(&path);
            if leg_of.is_some() {
                let _ =
                    self.release_connection_in(id, ReleaseReason::OperationComplete, None, None);
            }
            return Err(super::engine_error(e));
        }
        self.watch_conditions(id, operation, &request.conds);
        let now = self.now.at;
        if let Some(c) = self.connections.get_mut(&id) {
            c.recording = Some((operation, filename.clone()));
            let _ = c.ops.start(
                now,
                operation,
                OperationKind::Record,
                request.conds,
                request.state,
            );
        }
        self.arm_operations(id);
        // A conference's mix belongs to no call of the store: only a connection's is tracked.
        if leg_of.is_none() {
            self.store_record_operation(
                id,
                operation,
                path.clone(),
                request.encoding,
                request.file_rate,
            );
        }
        tracing::info!(connection = id, operation, file = %path.display(), "recording");
        let mut result = operation_result(id, operation);
        result.insert("Filename".into(), json!(filename));
        Ok(result)
    }

    /// DetectSilence / DetectNonSilence: completes after `needed` of continuous silence (or
    /// sound), or on CommandTimeout.
    pub(super) fn detect_energy(
        &mut self,
        connection: u32,
        silence: bool,
        needed: std::time::Duration,
        command_timeout: Option<std::time::Duration>,
        state: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        let c = self.caller_of(connection, "audio to listen to")?;
        if c.media.format.is_none() {
            return Err(ActionError::new(
                ResultCode::NotConnected,
                format!("connection {connection} has no negotiated media to listen to"),
            ));
        }
        let operation = self.allocate_operation_id();
        let conds = TermConds {
            silence: silence.then_some(needed),
            non_silence: (!silence).then_some(needed),
            command_timeout,
            ..TermConds::default()
        };
        self.watch_conditions(connection, operation, &conds);
        let kind = if silence {
            OperationKind::DetectSilence
        } else {
            OperationKind::DetectNonSilence
        };
        let now = self.now.at;
        if let Some(c) = self.connections.get_mut(&connection) {
            let _ = c.ops.start(now, operation, kind, conds, state);
        }
        self.arm_operations(connection);
        Ok(operation_result(connection, operation))
    }

    /// The engine saw the silence (or sound) an operation waited for.
    pub(super) fn on_energy(&mut self, connection: u32, operation: u32, silence: bool) {
        let now = self.now.at;
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        c.watching.retain(|&op| op != operation);
        let termination = if silence {
            Termination::Silence
        } else {
            Termination::NonSilence
        };
        if let Some(f) = c.ops.end(now, operation, termination) {
            self.complete(connection, f);
        }
        self.arm_operations(connection);
    }

    /// A connection with a caller behind it: a conference's own connection (made for a Play
    /// or Record to the conference, and gone with that operation) has no `what` (36, as the
    /// silence conditions of an operation to a conference).
    fn caller_of(
        &self,
        connection: u32,
        what: &str,
    ) -> Result<&super::core::Connection, ActionError> {
        let c = self
            .connections
            .get(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        match c.leg_of {
            Some(conference) => Err(ActionError::new(
                ResultCode::TermCondition,
                format!(
                    "connection {connection} is conference {conference}'s own (a Play or Record to it): no caller's {what}"
                ),
            )),
            None => Ok(c),
        }
    }

    /// The recorder finished a file: `Record_Complete`, or `Record_Failed` (31) when writing
    /// failed.
    pub(super) fn on_recording_done(
        &mut self,
        operation: u32,
        samples: u64,
        error: Option<String>,
    ) {
        let Some(pending) = self.pending_records.remove(&operation) else {
            return;
        };
        let PendingRecord {
            connection,
            finished,
            filename,
        } = pending;
        tracing::info!(connection, operation, samples, file = %filename, "recording finished");
        let mut done = operation_done(connection, &finished);
        done.filename = Some(filename);
        match error {
            None => self.events.emit(Event::RecordComplete(done)),
            Some(e) => {
                tracing::warn!(connection, operation, error = %e, "recording failed");
                done.termination_condition = None;
                done.result_code = Some(ResultCode::FileIo.as_wire());
                self.events.emit(Event::RecordFailed(done));
            }
        }
        self.release_blocked_stops();
    }

    /// Records still being finished among `operations`.
    pub(super) fn unfinished_records(&self, operations: &[u32]) -> Vec<u32> {
        operations
            .iter()
            .copied()
            .filter(|op| self.pending_records.contains_key(op))
            .collect()
    }

    /// Answers the StopMediaOperation requests (Block) whose recordings are all finished.
    fn release_blocked_stops(&mut self) {
        let mut waiting = std::mem::take(&mut self.blocked_stops);
        waiting.retain_mut(|(operations, reply, result)| {
            operations.retain(|op| self.pending_records.contains_key(op));
            if operations.is_empty() {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Ok(result.clone()));
                }
                false
            } else {
                true
            }
        });
        self.blocked_stops = waiting;
    }

    /// Asks the engine to watch for the silence/non-silence conditions of an operation.
    fn watch_conditions(&mut self, connection: u32, operation: u32, conds: &TermConds) {
        for (silence, needed) in [(true, conds.silence), (false, conds.non_silence)] {
            let Some(needed) = needed else { continue };
            match self.engine.watch_energy(
                u64::from(connection),
                u64::from(operation),
                silence,
                needed,
            ) {
                Ok(()) => {
                    if let Some(c) = self.connections.get_mut(&connection) {
                        c.watching.push(operation);
                    }
                }
                Err(e) => {
                    tracing::warn!(connection, operation, error = %e, "engine cannot watch energy")
                }
            }
        }
    }

    /// A recording's path: a generated name, or the request's (relative, without `..`, unless
    /// absolute paths are allowed). Parent directories are created with the file.
    fn resolve_recording(
        &self,
        requested: Option<&str>,
        operation: u32,
    ) -> Result<(PathBuf, String), ActionError> {
        let name = match requested {
            Some(n) => n.to_string(),
            None => format!("rec-{}-{operation}.wav", self.now.unix_ms),
        };
        let path = Path::new(&name);
        let full = if path.is_absolute() {
            if !self.media.allow_absolute_paths {
                return Err(ActionError::new(
                    ResultCode::FileOpen,
                    format!("absolute recording path {name:?} is not allowed ([media] allow_absolute_paths)"),
                ));
            }
            path.to_path_buf()
        } else {
            if !is_contained(path) || name.is_empty() {
                return Err(ActionError::new(
                    ResultCode::FileOpen,
                    format!("recording name {name:?} leaves the recording directory"),
                ));
            }
            self.media.recording_dir.join(path)
        };
        Ok((full, name))
    }
}

/// The `<Action>_Complete` parameters of a finished operation.
fn operation_done(connection: u32, f: &Finished) -> OperationDone {
    OperationDone {
        connection_id: connection.to_string(),
        operation_id: f.operation.to_string(),
        termination_condition: Some(f.termination.as_str().into()),
        elapsed_time: Some(f.elapsed.as_millis() as u64),
        digits: f.digits.clone(),
        filename: None,
        result_code: None,
        state: f.state.clone(),
    }
}
