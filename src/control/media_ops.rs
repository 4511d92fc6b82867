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
use std::time::Instant;

use serde_json::json;

use super::events::{Event, OperationDone};
use super::operations::{Finished, OperationKind, TermConds, Termination};
use super::result::{ActionError, ResultCode};
use super::{success, unknown_connection, ActionResult, Controller};
use crate::media::player::{amplitude_of_db, volume_gain, PlaySource};

/// Prompts one Play may name (`Prompt1`..`Prompt3`).
pub const MAX_PROMPTS: usize = 3;

/// What Play is asked to play.
#[derive(Debug, Clone)]
pub struct PlayRequest {
    pub connection: u32,
    pub prompts: Vec<String>,
    /// Prompt sub-directories tried first: `<prompt_dir>/<application>/<locale>/<prompt>`.
    pub application: Option<String>,
    pub locale: Option<String>,
    pub conds: TermConds,
    /// −10..=10 (2 dB steps).
    pub volume: i32,
    pub state: Option<String>,
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

impl Controller {
    /// Play: prompts resolved and loaded now (a missing file fails the action at once, with no
    /// event); `Play_Complete` with `eod` when they have played, or the condition that ended it.
    pub(super) fn play(&mut self, request: PlayRequest) -> Result<ActionResult, ActionError> {
        let id = request.connection;
        self.check_can_play(id)?;
        let source = self.load_prompts(&request)?;
        self.start_playing(
            id,
            OperationKind::Play,
            source,
            volume_gain(request.volume),
            request.volume,
            request.conds,
            request.state,
        )
    }

    /// PlayTone: a tone of one or two frequencies; `eod` when `Duration` has elapsed.
    pub(super) fn play_tone(
        &mut self,
        connection: u32,
        tone: ToneRequest,
        conds: TermConds,
        state: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        self.check_can_play(connection)?;
        let duration = tone.duration_ms.filter(|&ms| ms > 0);
        if duration.is_none() && conds.is_empty() {
            return Err(ActionError::new(
                ResultCode::InvalidParameters,
                "a PlayTone without Duration needs a termination condition",
            ));
        }
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
            1.0,
            0,
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
        if !self.connections.contains_key(&connection) {
            return Err(unknown_connection(connection));
        }
        let operation = self.allocate_operation_id();
        let now = Instant::now();
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
    /// with `userstop`. The completion events are emitted before this returns, so `Block`
    /// (true or false) is always honoured.
    pub(super) fn stop_media_operation(
        &mut self,
        connection: u32,
        operation: Option<u32>,
    ) -> Result<ActionResult, ActionError> {
        let now = Instant::now();
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
        for f in finished {
            self.complete(connection, f);
        }
        Ok(success())
    }

    /// AdjustPlay: the volume of the playout in progress (speed changes are refused: 8).
    pub(super) fn adjust_play(
        &mut self,
        connection: u32,
        volume: i32,
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
        let new = match adjustment {
            Adjustment::Absolute => volume,
            Adjustment::Relative => c.volume + volume,
            Adjustment::Toggle => {
                if c.volume == 0 {
                    c.toggled_volume
                } else {
                    0
                }
            }
        }
        .clamp(-10, 10);
        if c.volume != 0 {
            c.toggled_volume = c.volume;
        }
        c.volume = new;
        if let Err(e) = self
            .engine
            .set_play_gain(u64::from(connection), volume_gain(new))
        {
            tracing::warn!(connection, error = %e, "engine could not change the volume");
        }
        let mut result = success();
        result.insert("Volume".into(), json!(new));
        Ok(result)
    }

    /// A digit for a connection (RFC 4733, in-band, SendDigits): buffered, and the operations
    /// it ends complete.
    pub(super) fn on_operation_digit(&mut self, connection: u32, digit: char) {
        let now = Instant::now();
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        for f in c.ops.on_digit(now, digit) {
            self.complete(connection, f);
        }
    }

    /// The engine played a Play/PlayTone to its end: `eod`.
    pub(super) fn on_playout_done(&mut self, connection: u32, operation: u32) {
        let now = Instant::now();
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        if c.playing == Some(operation) {
            c.playing = None;
        }
        if let Some(f) = c.ops.end(now, operation, Termination::Eod) {
            self.complete(connection, f);
        }
    }

    /// Operation timers (maxtime, CommandTimeout, inter-digit delay) that are due.
    pub(super) fn expire_operations(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .connections
            .iter()
            .filter(|(_, c)| c.ops.poll_timeout().is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let finished = match self.connections.get_mut(&id) {
                Some(c) => c.ops.handle_timeout(now),
                None => continue,
            };
            for f in finished {
                self.complete(id, f);
            }
        }
    }

    /// The earliest operation timer.
    pub(super) fn next_operation_deadline(&self) -> Option<Instant> {
        self.connections
            .values()
            .filter_map(|c| c.ops.poll_timeout())
            .min()
    }

    /// A connection is going away: its operations complete with `autostop`.
    pub(super) fn autostop_operations(&mut self, connection: u32) {
        let now = Instant::now();
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        for f in c.ops.end_all(now, Termination::AutoStop) {
            self.complete(connection, f);
        }
    }

    /// Emits the completion event of a finished operation, and stops its audio in the engine
    /// when something else ended it.
    fn complete(&mut self, connection: u32, f: Finished) {
        if let Some(c) = self.connections.get_mut(&connection) {
            if c.playing == Some(f.operation) {
                c.playing = None;
                if f.termination != Termination::Eod {
                    if let Err(e) = self
                        .engine
                        .stop_play(u64::from(connection), u64::from(f.operation))
                    {
                        tracing::warn!(connection, error = %e, "engine could not stop playing");
                    }
                }
            }
        }
        tracing::info!(
            connection,
            operation = f.operation,
            action = f.kind.name(),
            termination = f.termination.as_str(),
            "media operation complete"
        );
        let done = OperationDone {
            connection_id: connection.to_string(),
            operation_id: f.operation.to_string(),
            termination_condition: Some(f.termination.as_str().into()),
            elapsed_time: Some(f.elapsed.as_millis() as u64),
            digits: f.digits,
            filename: None,
            result_code: None,
            state: f.state,
        };
        self.events.emit(match f.kind {
            OperationKind::Play => Event::PlayComplete(done),
            OperationKind::PlayTone => Event::PlayToneComplete(done),
            OperationKind::GatherDigits => Event::GatherDigitsComplete(done),
            OperationKind::Record => Event::RecordComplete(done),
            OperationKind::DetectSilence => Event::DetectSilenceComplete(done),
            OperationKind::DetectNonSilence => Event::DetectNonSilenceComplete(done),
        });
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

    #[allow(clippy::too_many_arguments)]
    fn start_playing(
        &mut self,
        connection: u32,
        kind: OperationKind,
        source: PlaySource,
        gain: f32,
        volume: i32,
        conds: TermConds,
        state: Option<String>,
    ) -> Result<ActionResult, ActionError> {
        let operation = self.allocate_operation_id();
        self.engine
            .play(u64::from(connection), u64::from(operation), source, gain)
            .map_err(super::engine_error)?;
        let now = Instant::now();
        let c = self
            .connections
            .get_mut(&connection)
            .ok_or_else(|| unknown_connection(connection))?;
        c.playing = Some(operation);
        c.volume = volume;
        // A Play starts no GatherDigits, so nothing can finish at once.
        let _ = c.ops.start(now, operation, kind, conds, state);
        tracing::info!(
            connection,
            operation,
            action = kind.name(),
            "media operation started"
        );
        Ok(operation_result(connection, operation))
    }

    /// Resolves and loads the prompts; all must have one sample rate.
    fn load_prompts(&self, request: &PlayRequest) -> Result<PlaySource, ActionError> {
        let mut joined: Vec<i16> = Vec::new();
        let mut rate = None;
        for prompt in &request.prompts {
            let path = self.resolve_prompt(prompt, request)?;
            let audio = crate::media::wav::read(&path).map_err(|e| {
                ActionError::new(
                    ResultCode::FileIo,
                    format!("prompt {}: {e}", path.display()),
                )
            })?;
            match rate {
                None => rate = Some(audio.sample_rate),
                Some(r) if r != audio.sample_rate => {
                    return Err(ActionError::new(
                        ResultCode::InvalidParameter,
                        format!(
                            "prompts of one Play must share one format: {} is {} Hz, the first is {r} Hz",
                            path.display(),
                            audio.sample_rate
                        ),
                    ))
                }
                Some(_) => {}
            }
            joined.extend_from_slice(&audio.samples);
        }
        let rate = rate.ok_or_else(|| {
            ActionError::new(ResultCode::InvalidParameters, "Prompt1 is required")
        })?;
        if crate::media::resample::Resampler::new(rate, 8000).is_err() {
            return Err(ActionError::new(
                ResultCode::FileIo,
                format!("prompt sample rate {rate} Hz is not supported (use 8, 16 or 48 kHz)"),
            ));
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
            if path.is_file() {
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
        candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
            ActionError::new(
                ResultCode::FileOpen,
                format!("prompt {prompt:?} not found under {}", base.display()),
            )
        })
    }

    fn allocate_operation_id(&mut self) -> u32 {
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
