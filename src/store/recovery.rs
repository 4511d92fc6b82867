//! Start-up recovery: what a killed process left in the database — calls with no end and
//! recordings still being written — is closed, and the half-written files are repaired by
//! the media layer and measured.
//!
//! Owns: the order of recovery (calls first, so every recording's call is over when the
//! deletion and on-demand rules run) and what a file that cannot be recovered becomes.
//! Must not: run while the server is up (only `Store::open` runs it, before the store thread
//! starts), or parse media files itself ([`RecordingFiles`] does).

use std::io;

use super::db::{measure, remove_files, Db};
use super::deletion::{
    close_recording, open_recording_from_row, Completion, OpenRecording, OPEN_RECORDING_COLUMNS,
};
use super::model::{RecordingState, UnixMs};
use super::sql::args;
use super::{RecordingFiles, StoreError};

/// What start-up recovery found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Calls that had no end, now ended at start-up with cause `restart`.
    pub calls_closed: usize,
    /// Recordings whose files the media layer repaired.
    pub recordings_recovered: usize,
    /// Recordings whose files could not be repaired: finished with the error recorded (size
    /// and SHA-256 of what is on disk), or deleted when the file is missing.
    pub recordings_unrecoverable: usize,
}

impl Db {
    /// Ends the calls a killed process of this node left open (at `now_ms`, cause `restart`),
    /// then has `files` repair every recording of those calls still being written and records
    /// it as complete, under the same rules as a `RecordingFinished` (the call is over now).
    /// Other nodes' calls in a shared store are theirs to recover.
    pub fn recover(
        &mut self,
        files: &dyn RecordingFiles,
        now_ms: UnixMs,
    ) -> Result<RecoveryReport, StoreError> {
        let tx = self.sql.transaction()?;
        let closed = tx.execute(
            "UPDATE calls SET ended_ms = ?1, end_cause = 'restart'
             WHERE ended_ms IS NULL AND node_id = ?2",
            args![now_ms, self.node],
        )?;
        let mut report = RecoveryReport {
            calls_closed: usize::try_from(closed).unwrap_or(usize::MAX),
            ..RecoveryReport::default()
        };
        let open: Vec<OpenRecording> = tx
            .query(
                &format!(
                    "SELECT {OPEN_RECORDING_COLUMNS} FROM recordings WHERE state IN (?1, ?2)
                     AND call_id IN (SELECT call_id FROM calls WHERE node_id = ?3)
                     ORDER BY started_ms, recording_id"
                ),
                args![
                    RecordingState::Recording.word(),
                    RecordingState::MarkedForDeletion.word(),
                    self.node
                ],
            )?
            .iter()
            .map(open_recording_from_row)
            .collect::<Result<_, _>>()?;
        let mut doomed = Vec::new();
        for recording in &open {
            let call_end: UnixMs = tx
                .query_one(
                    "SELECT COALESCE(ended_ms, ?2) FROM calls WHERE call_id = ?1",
                    args![recording.call_id, now_ms],
                )?
                .get(0)?;
            let done = match files.recover(&recording.path, recording.format) {
                Ok(file) => {
                    report.recordings_recovered += 1;
                    recovered(recording, file.frames, file.rate)
                }
                Err(error) => {
                    report.recordings_unrecoverable += 1;
                    tracing::warn!(
                        recording_id = recording.recording_id,
                        error,
                        "recording cannot be recovered"
                    );
                    unrecoverable(recording, call_end, error)
                }
            };
            close_recording(&tx, recording, done, now_ms, &mut doomed)?;
        }
        tx.commit()?;
        remove_files(&doomed);
        Ok(report)
    }
}

/// A repaired file: its length from the media layer, its end from its start and length.
fn recovered(recording: &OpenRecording, frames: u64, rate: u32) -> Completion {
    let duration_ms = (rate > 0)
        .then(|| u128::from(frames) * 1000 / u128::from(rate))
        .map(|ms| u64::try_from(ms).unwrap_or(u64::MAX));
    let ended_ms = recording
        .started_ms
        .saturating_add(duration_ms.map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)));
    let mut done = Completion {
        ended_ms,
        duration_ms,
        error: recording.error.clone(),
        ..Completion::default()
    };
    measure_into(recording, &mut done);
    done
}

/// A file the media layer could not repair: kept as it is with the error (its length
/// unknown, ended when its call ended), or recorded as deleted when it is not there at all.
fn unrecoverable(recording: &OpenRecording, call_end: UnixMs, error: String) -> Completion {
    let mut done = Completion {
        ended_ms: call_end,
        error: Some(
            recording
                .error
                .clone()
                .unwrap_or_else(|| format!("recovery failed: {error}")),
        ),
        ..Completion::default()
    };
    measure_into(recording, &mut done);
    done
}

fn measure_into(recording: &OpenRecording, done: &mut Completion) {
    match measure(&recording.path) {
        Ok((size, sha)) => {
            done.size_bytes = Some(size);
            done.sha256 = Some(sha);
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            done.missing = Some("file missing after restart");
        }
        Err(error) => {
            done.error
                .get_or_insert_with(|| format!("cannot read file: {error}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{MuteChannels, RecordPolicy, RecordingOrigin, StoreEvent};
    use crate::store::testing::{call, ended, file, finished, recording, temp_db, ScriptedFiles};
    use crate::store::RecoveredFile;

    #[test]
    fn a_killed_process_is_recovered_under_the_usual_rules() {
        let (dir, mut db) = temp_db();
        let always = file(&dir, "always.wav", b"always-repaired");
        let marked = file(&dir, "marked.wav", b"marked");
        let on_demand = file(&dir, "od.wav", b"od");
        let broken = file(&dir, "broken.opus", b"garbage");
        let missing = dir.path().join("missing.wav");
        let done = file(&dir, "done.wav", b"done");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 1_000),
                recording("r-always", "c1", &always, RecordingOrigin::Policy, 1_000),
                StoreEvent::MuteChanged {
                    recording_id: "r-always".into(),
                    at_ms: 2_000,
                    channels: MuteChannels::BOTH,
                },
                recording(
                    "r-broken",
                    "c1",
                    &broken,
                    RecordingOrigin::RecordOperation,
                    1_500,
                ),
                recording(
                    "r-missing",
                    "c1",
                    &missing,
                    RecordingOrigin::RecordOperation,
                    1_600,
                ),
                call("c2", "3", "4", RecordPolicy::Always, 1_000),
                recording("r-marked", "c2", &marked, RecordingOrigin::Policy, 1_000),
                call("c3", "5", "6", RecordPolicy::OnDemand, 1_000),
                recording("r-od", "c3", &on_demand, RecordingOrigin::Policy, 1_000),
                call("c4", "7", "8", RecordPolicy::Always, 500),
                recording("r-done", "c4", &done, RecordingOrigin::Policy, 500),
                ended("c4", 900),
                finished("r-done", 900, 3_200),
            ],
            2_000,
        )
        .expect("before the crash");
        db.delete_call("c2", "user:alice", 2_500)
            .expect("delete during call");

        let files = ScriptedFiles::default();
        files.answer(
            &always,
            Ok(RecoveredFile {
                frames: 24_000,
                rate: 8_000,
            }),
        );
        files.answer(
            &marked,
            Ok(RecoveredFile {
                frames: 8_000,
                rate: 8_000,
            }),
        );
        files.answer(
            &on_demand,
            Ok(RecoveredFile {
                frames: 8_000,
                rate: 8_000,
            }),
        );
        files.answer(&broken, Err("no Ogg page".into()));
        let report = db.recover(&files, 60_000).expect("recover");
        assert_eq!(
            report,
            RecoveryReport {
                calls_closed: 3,
                recordings_recovered: 3,
                recordings_unrecoverable: 2
            }
        );
        assert!(
            !files.asked().contains(&done),
            "complete recordings are left alone"
        );

        let c1 = db.get_call("c1").expect("get").expect("c1");
        assert_eq!(
            (c1.ended_ms, c1.end_cause.as_deref()),
            (Some(60_000), Some("restart"))
        );
        let r = &c1.recordings[0];
        assert_eq!(r.recording_id, "r-always");
        assert_eq!(r.state, RecordingState::Finished);
        assert_eq!((r.duration_ms, r.ended_ms), (Some(3_000), Some(4_000)));
        assert_eq!(r.size_bytes, Some(15));
        assert_eq!(r.error, None);
        assert_eq!(r.mutes[0].to_ms, Some(3_000), "open mute closed at the end");
        let r = &c1.recordings[1];
        assert_eq!(r.recording_id, "r-broken");
        assert_eq!(r.state, RecordingState::Finished, "kept as it is");
        assert_eq!(r.error.as_deref(), Some("recovery failed: no Ogg page"));
        assert_eq!(
            (r.size_bytes, r.duration_ms, r.ended_ms),
            (Some(7), None, Some(60_000))
        );
        assert!(r.sha256.is_some());
        assert!(broken.exists());
        let r = &c1.recordings[2];
        assert_eq!(r.recording_id, "r-missing");
        assert_eq!(r.state, RecordingState::Deleted);
        let audit = db.deletions("c1").expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (audit[0].by.as_str(), audit[0].reason.as_str()),
            ("store", "file missing after restart")
        );

        let c2 = db.get_call("c2").expect("get").expect("c2");
        assert_eq!(c2.recordings[0].state, RecordingState::Deleted);
        assert!(!marked.exists());
        assert_eq!(db.deletions("c2").expect("audit")[0].by, "user:alice");

        let c3 = db.get_call("c3").expect("get").expect("c3");
        assert_eq!(c3.recordings[0].state, RecordingState::Deleted);
        assert!(!on_demand.exists());
        assert_eq!(db.deletions("c3").expect("audit")[0].by, "on-demand");

        let c4 = db.get_call("c4").expect("get").expect("c4");
        assert_eq!(c4.end_cause.as_deref(), Some("remote-bye"));
        assert_eq!(c4.recordings[0].state, RecordingState::Finished);

        assert_eq!(
            db.recover(&files, 70_000).expect("again"),
            RecoveryReport::default()
        );
    }

    /// In a store several nodes share, a node's start-up recovery closes its own calls and
    /// recordings only: the others' are still going on their nodes.
    #[test]
    fn each_node_recovers_only_its_own_calls() {
        let (dir, mut one) = temp_db();
        one.node = 1;
        let mut two = crate::store::testing::reopen(&dir);
        two.node = 2;
        let file_one = file(&dir, "one.wav", b"one");
        let file_two = file(&dir, "two.wav", b"two");
        one.apply(
            &[
                call("on-one", "1", "2", RecordPolicy::Always, 10),
                recording("r1", "on-one", &file_one, RecordingOrigin::Policy, 10),
            ],
            10,
        )
        .expect("node 1 writes");
        two.apply(
            &[
                call("on-two", "3", "4", RecordPolicy::Always, 20),
                recording("r2", "on-two", &file_two, RecordingOrigin::Policy, 20),
            ],
            20,
        )
        .expect("node 2 writes");
        assert_eq!(
            one.get_call("on-two")
                .expect("get")
                .expect("shared")
                .node_id,
            2
        );

        let files = ScriptedFiles::default();
        let report = two.recover(&files, 100).expect("node 2 restarts");
        assert_eq!(report.calls_closed, 1);
        assert_eq!(files.asked(), vec![file_two], "only node 2's recording");
        assert!(one
            .get_call("on-one")
            .expect("get")
            .expect("call")
            .ongoing());
        assert!(!one
            .get_call("on-two")
            .expect("get")
            .expect("call")
            .ongoing());
    }
}
