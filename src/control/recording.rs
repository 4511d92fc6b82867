//! Call recording as the control plane runs it, and the store's view of calls: every SIP call
//! leg becomes a row of the recording store (seed 04), and a leg whose route or trunk says
//! `record = "always" | "on-demand"` is recorded in two channels from its answer to its
//! release.
//!
//! Owns: the store call of each connection (its callID, policy and running recording), the
//! recordings whose files the store tracks (policy recordings and Record operations), choosing
//! a recording's file (name, format, rate), muting, the `StoreEvent`s handed to the shell
//! ([`Controller::poll_store`]) and the RecordingStarted / RecordingStopped events.
//! Must not: touch the database (the store thread does, from the events), decide what is kept
//! or deleted at the end (the store applies the on-demand and deletion rules when a file is
//! finished), or read the clock.
//!
//! The release path is the one every other surface uses: `release_connection_in` ends the
//! store call, the engine's close stops the recording, and the recorder's `RecordingDone`
//! finishes the store's recording row — whether the release came from a BYE, a CUAE
//! DeleteConnection, a CTI ReleaseCall or the agent gateway.

use std::path::PathBuf;

use super::backend::Backend;
use super::core::Controller;
use super::events::Event;
use super::events::ReleaseReason;
use crate::media::codec::pcm_rate;
use crate::media::recording_file::{FileKind, NewRecording};
use crate::media::wav::Encoding;
use crate::sip::ua::CallId;
use crate::store::{
    Direction, MuteChannels, RecordPolicy, RecordingFormat, RecordingOrigin, StoreEvent, UnixMs,
};

/// How calls are recorded (`[recording]`).
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// Where call recordings go: `<dir>/<YYYY>/<MM>/<DD>/<callID>.<wav|opus>`.
    pub dir: PathBuf,
    pub format: RecordingFormat,
}

/// A connection as a call of the recording store.
#[derive(Debug)]
pub(super) struct StoreCall {
    /// The recording API's callID.
    pub(super) call_id: String,
    pub(super) policy: RecordPolicy,
    /// The policy recording in progress: its operation and recording id.
    pub(super) recording: Option<(u32, String)>,
    /// The policy recording was started once (a failed one is not started again).
    pub(super) recorded: bool,
    pub(super) answered: bool,
}

/// A recording whose file the store tracks, by engine operation.
#[derive(Debug)]
pub(super) struct TrackedRecording {
    pub(super) connection: u32,
    pub(super) recording_id: String,
    /// The store callID it belongs to.
    pub(super) call_id: String,
    pub(super) started_ms: UnixMs,
}

/// What a call leg is, for its store row.
pub(super) struct LegInfo {
    pub(super) direction: Direction,
    pub(super) call: Option<CallId>,
    pub(super) policy: RecordPolicy,
    pub(super) trunk: Option<String>,
}

impl<M: Backend> Controller<M> {
    /// The writes for the store since the last call, in order (the shell hands them to the
    /// store thread).
    pub fn take_store_events(&mut self) -> Vec<StoreEvent> {
        std::mem::take(&mut self.store_out)
    }

    /// A call leg begins: its store row, with the numbers the party model knows.
    pub(super) fn store_call_started(&mut self, connection: u32, leg: LegInfo) {
        let (calling, called) = match leg.call.and_then(|c| self.call_info.get(&c)) {
            Some(info) => match leg.direction {
                Direction::Outbound => (info.service_dn.clone(), info.dn.clone()),
                _ => (info.dn.clone(), info.service_dn.clone()),
            },
            None => (String::new(), String::new()),
        };
        let call_id = new_uuid();
        self.store_out.push(StoreEvent::CallStarted {
            call_id: call_id.clone(),
            connection,
            direction: leg.direction,
            platform_call_id: leg
                .call
                .and_then(|c| self.ua.sip_call_id(c))
                .map(str::to_string),
            native_id: self.model.conn_id_of(connection).map(|c| c.to_string()),
            calling,
            called,
            trunk: leg.trunk,
            policy: leg.policy,
            started_ms: self.now_ms(),
        });
        self.store_calls.insert(
            connection,
            StoreCall {
                call_id,
                policy: leg.policy,
                recording: None,
                recorded: false,
                answered: false,
            },
        );
    }

    /// The leg was answered: its recording starts, when its policy says so.
    pub(super) fn store_call_answered(&mut self, connection: u32) {
        let at_ms = self.now_ms();
        let Some(call) = self.store_calls.get_mut(&connection) else {
            return;
        };
        if !call.answered {
            call.answered = true;
            let call_id = call.call_id.clone();
            self.store_out
                .push(StoreEvent::CallAnswered { call_id, at_ms });
        }
        self.start_policy_recording(connection);
    }

    /// Starts the leg's two-channel recording once it is answered, has media and its policy
    /// records (called again when media arrives after the answer).
    pub(super) fn start_policy_recording(&mut self, connection: u32) {
        let Some(call) = self.store_calls.get(&connection) else {
            return;
        };
        if call.policy == RecordPolicy::Off || !call.answered || call.recorded {
            return;
        }
        let Some(c) = self.connections.get(&connection) else {
            return;
        };
        if c.media.format.is_none() || c.releasing {
            return;
        }
        let call_id = call.call_id.clone();
        let format = self.recording_settings.format;
        let wideband = pcm_rate(c.rx_codec) > 8000 || pcm_rate(c.tx_codec) > 8000;
        let (kind, rate) = file_kind(format, wideband);
        let path = self.recording_path(&call_id, format);
        if let Some(call) = self.store_calls.get_mut(&connection) {
            call.recorded = true;
        }
        let operation = self.allocate_operation_id();
        // The recorder thread creates the file: no file system work on the control task.
        let file = NewRecording {
            path: path.clone(),
            kind,
            rate,
            channels: 2,
        };
        if let Err(e) =
            self.engine
                .start_recording_to(u64::from(connection), u64::from(operation), file)
        {
            tracing::warn!(connection, error = %e, "call recording cannot start");
            self.recording_stopped(connection, &call_id, e.to_string());
            return;
        }
        let recording_id = new_uuid();
        let started_ms = self.now_ms();
        self.store_out.push(StoreEvent::RecordingStarted {
            recording_id: recording_id.clone(),
            call_id: call_id.clone(),
            path,
            format,
            channels: 2,
            sample_rate: rate,
            origin: RecordingOrigin::Policy,
            started_ms,
        });
        self.tracked_recordings.insert(
            operation,
            TrackedRecording {
                connection,
                recording_id: recording_id.clone(),
                call_id: call_id.clone(),
                started_ms,
            },
        );
        if let Some(call) = self.store_calls.get_mut(&connection) {
            call.recording = Some((operation, recording_id.clone()));
        }
        tracing::info!(connection, operation, "call recording started");
        self.events.emit(Event::RecordingStarted {
            connection_id: connection.to_string(),
            recording_call_id: call_id,
            recording_id,
        });
    }

    /// A Record operation's file: tracked by the store as a recording of the connection's
    /// call (a connection without a SIP call gets a store call of its own first).
    pub(super) fn store_record_operation(
        &mut self,
        connection: u32,
        operation: u32,
        path: PathBuf,
        encoding: Encoding,
        rate: u32,
    ) {
        if !self.store_calls.contains_key(&connection) {
            self.store_call_started(
                connection,
                LegInfo {
                    direction: Direction::Api,
                    call: None,
                    policy: RecordPolicy::Off,
                    trunk: None,
                },
            );
        }
        let Some(call) = self.store_calls.get(&connection) else {
            return;
        };
        let call_id = call.call_id.clone();
        let recording_id = new_uuid();
        let started_ms = self.now_ms();
        self.store_out.push(StoreEvent::RecordingStarted {
            recording_id: recording_id.clone(),
            call_id: call_id.clone(),
            path,
            format: match encoding {
                Encoding::Pcm16 => RecordingFormat::WavPcm16,
                Encoding::Ulaw => RecordingFormat::WavUlaw,
                Encoding::Alaw => RecordingFormat::WavAlaw,
            },
            channels: 1,
            sample_rate: rate,
            origin: RecordingOrigin::RecordOperation,
            started_ms,
        });
        self.tracked_recordings.insert(
            operation,
            TrackedRecording {
                connection,
                recording_id,
                call_id,
                started_ms,
            },
        );
    }

    /// The leg joined a conference: the store's meeting ID is the room's name (its id when
    /// it has none).
    pub(super) fn store_meeting(&mut self, connection: u32, conference: u32) {
        let Some(call) = self.store_calls.get(&connection) else {
            return;
        };
        let meeting = self
            .conferences
            .get(&conference)
            .and_then(|room| room.name.clone())
            .unwrap_or_else(|| conference.to_string());
        self.store_out.push(StoreEvent::MeetingChanged {
            call_id: call.call_id.clone(),
            meeting_id: Some(meeting),
        });
    }

    /// The leg is released (whatever asked): its store call ends. Its recording stops with
    /// the engine's close and is finished when the recorder reports.
    pub(super) fn store_call_ended(&mut self, connection: u32, reason: ReleaseReason) {
        let Some(call) = self.store_calls.remove(&connection) else {
            return;
        };
        let cause = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{reason:?}"));
        self.store_out.push(StoreEvent::CallEnded {
            call_id: call.call_id,
            at_ms: self.now_ms(),
            cause,
        });
    }

    /// The recorder finished a tracked file (a Record operation's Media Control completion
    /// follows in `media_ops`).
    pub(super) fn store_recording_done(
        &mut self,
        operation: u32,
        samples: u64,
        error: Option<String>,
    ) {
        let Some(tracked) = self.tracked_recordings.remove(&operation) else {
            return;
        };
        let policy = self
            .store_calls
            .get(&tracked.connection)
            .and_then(|c| c.recording.as_ref())
            .is_some_and(|(op, _)| *op == operation);
        if policy {
            if let Some(call) = self.store_calls.get_mut(&tracked.connection) {
                call.recording = None;
            }
        }
        tracing::info!(
            connection = tracked.connection,
            operation,
            samples,
            "recording finished"
        );
        self.store_out.push(StoreEvent::RecordingFinished {
            recording_id: tracked.recording_id,
            ended_ms: self.now_ms(),
            samples,
            error,
        });
    }

    /// Writing a recording failed (a full disk): it records nothing more, the call goes on.
    pub(super) fn on_recording_failed(&mut self, operation: u32, error: String) {
        let Some(tracked) = self.tracked_recordings.get(&operation) else {
            return;
        };
        let (connection, recording_id, call_id) = (
            tracked.connection,
            tracked.recording_id.clone(),
            tracked.call_id.clone(),
        );
        self.store_out.push(StoreEvent::RecordingFailed {
            recording_id,
            at_ms: self.now_ms(),
            error: error.clone(),
        });
        self.recording_stopped(connection, &call_id, error);
    }

    /// Mutes (or unmutes) the policy recording of the call with this callID: silence in the
    /// file from now on, and a muted span in the store.
    pub(super) fn mute_call_recording(
        &mut self,
        call_id: &str,
        channels: MuteChannels,
    ) -> Result<(), String> {
        let Some((operation, recording_id)) = self
            .store_calls
            .values()
            .find(|c| c.call_id == call_id)
            .and_then(|c| c.recording.clone())
        else {
            return Err(format!("call {call_id} has no recording in progress"));
        };
        self.engine
            .mute_recording(u64::from(operation), channels.left(), channels.right())
            .map_err(|e| format!("the recorder cannot mute: {e}"))?;
        self.store_out.push(StoreEvent::MuteChanged {
            recording_id,
            at_ms: self.now_ms(),
            channels,
        });
        Ok(())
    }

    /// Recordings being written (for /metrics, and the shell's last wait at stop).
    pub fn recordings_in_progress(&self) -> usize {
        self.tracked_recordings.len()
    }

    fn recording_stopped(&mut self, connection: u32, call_id: &str, error: String) {
        self.recording_failures += 1;
        self.events.emit(Event::RecordingStopped {
            connection_id: connection.to_string(),
            recording_call_id: call_id.to_string(),
            error,
        });
    }

    fn recording_path(&self, call_id: &str, format: RecordingFormat) -> PathBuf {
        let day = day_of(self.now.unix_ms);
        self.recording_settings
            .dir
            .join(day)
            .join(format!("{call_id}.{}", format.extension()))
    }

    fn now_ms(&self) -> UnixMs {
        i64::try_from(self.now.unix_ms).unwrap_or(i64::MAX)
    }
}

/// The store's start-up recovery of recordings a killed process left, over the media layer's
/// files: WAV headers repaired, Ogg pages cut to the last complete one.
pub struct RecordingFileRecovery;

impl crate::store::RecordingFiles for RecordingFileRecovery {
    fn recover(
        &self,
        path: &std::path::Path,
        format: RecordingFormat,
    ) -> Result<crate::store::RecoveredFile, String> {
        let kind = file_kind(format, false).0;
        let recovered =
            crate::media::recording_file::recover(path, kind).map_err(|e| e.to_string())?;
        Ok(crate::store::RecoveredFile {
            frames: recovered.frames,
            rate: recovered.rate,
        })
    }
}

/// The file a policy recording is written to, and its rate: G.711 WAV at 8 kHz; 16-bit WAV
/// and Opus at 16 kHz when either direction is wideband, else 8 kHz.
fn file_kind(format: RecordingFormat, wideband: bool) -> (FileKind, u32) {
    let rate = if wideband { 16_000 } else { 8_000 };
    match format {
        RecordingFormat::WavPcm16 => (FileKind::Wav(Encoding::Pcm16), rate),
        RecordingFormat::WavUlaw => (FileKind::Wav(Encoding::Ulaw), 8_000),
        RecordingFormat::WavAlaw => (FileKind::Wav(Encoding::Alaw), 8_000),
        RecordingFormat::OggOpus => (FileKind::OggOpus, rate),
    }
}

/// `YYYY/MM/DD` (GMT) of a Unix time in milliseconds.
fn day_of(unix_ms: u64) -> PathBuf {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let text = humantime::format_rfc3339(at).to_string();
    let date = text.get(..10).unwrap_or("1970-01-01");
    date.split('-').collect()
}

/// A time-ordered (version 7, RFC 9562) UUID, as the recording API shows call and recording
/// ids: unique and opaque like a random one, but each new id sorts after the last, so the
/// store's primary keys (and the parties' index on the call id) grow at their end instead of
/// dirtying a random B-tree page per call — a third of the store's cost a call at setup rates
/// (`benches/store.rs`: 106 → 71 µs a call).
fn new_uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_that_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| new_uuid()).collect();
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7, "{id}");
        }
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "not in order");
    }

    #[test]
    fn recordings_are_filed_by_day_in_gmt() {
        // 2026-12-04T23:59:59.999Z, then one millisecond later.
        assert_eq!(day_of(1_796_428_799_999), PathBuf::from("2026/12/04"));
        assert_eq!(day_of(1_796_428_800_000), PathBuf::from("2026/12/05"));
    }

    #[test]
    fn narrowband_calls_record_at_8_khz_and_g711_files_always_do() {
        assert_eq!(file_kind(RecordingFormat::WavPcm16, false).1, 8_000);
        assert_eq!(file_kind(RecordingFormat::WavPcm16, true).1, 16_000);
        assert_eq!(file_kind(RecordingFormat::WavUlaw, true).1, 8_000);
        assert_eq!(file_kind(RecordingFormat::OggOpus, true).1, 16_000);
    }
}
