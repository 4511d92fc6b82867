//! Whether a recording file stays or goes: the rules applied when a recording is complete
//! (DeleteCall during the call, on-demand calls nobody kept), DeleteCall and KeepCall
//! themselves, and the deletion audit (`retention` adds the age limit).
//!
//! Owns: the recording states after `recording`, the `deletions` audit rows, and the list of
//! files to remove once a transaction commits (a file is never removed for a change that might
//! still roll back).
//! Must not: remove a file before its deletion is committed, or remove an audit row (they
//! outlive their calls, retention included).

use std::path::{Path, PathBuf};

use super::db::{int, path_text, remove_files, Db};
use super::model::{
    DeletionRecord, RecordPolicy, RecordingFormat, RecordingOrigin, RecordingState, UnixMs,
};
use super::sql::{args, Row, Sql};
use super::StoreError;

/// Audit reasons (shown by the API).
const DELETED_WHILE_RECORDING: &str = "deleted while recording";
pub(super) const DELETED_ON_REQUEST: &str = "deleted on request";
const ON_DEMAND_NOT_KEPT: &str = "on-demand call not kept";

/// What [`Db::delete_call`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Recordings whose files were removed now.
    pub deleted_now: usize,
    /// Recordings still being written: their files are removed when they are finished.
    pub marked: usize,
}

/// What [`Db::keep_call`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepOutcome {
    /// The call is kept: `kept` policy recordings are kept now, `recording` more will be kept
    /// when they finish (both 0 for a call that records nothing).
    Kept { kept: usize, recording: usize },
    /// The call's on-demand recording was already discarded (it finished before KeepCall came):
    /// nothing is left to keep.
    AlreadyDiscarded,
    /// DeleteCall was called for the call: its recordings go regardless.
    DeleteRequested,
}

impl Db {
    /// DeleteCall: remembers the request (and who made it, for the audit), removes the files of
    /// finished recordings now and marks those still being written, whose files go when they
    /// are finished. Asking again changes nothing. A file already missing is fine.
    pub fn delete_call(
        &mut self,
        call_id: &str,
        by: &str,
        now_ms: UnixMs,
    ) -> Result<DeleteOutcome, StoreError> {
        let tx = self.sql.transaction()?;
        if call_flags(&tx, call_id)?.is_none() {
            return Err(StoreError::UnknownCall(call_id.to_string()));
        }
        tx.execute(
            "UPDATE calls SET delete_requested = 1,
                 delete_requested_by = COALESCE(delete_requested_by, ?2)
             WHERE call_id = ?1",
            args![call_id, by],
        )?;
        tx.execute(
            "UPDATE recordings SET state = ?3 WHERE call_id = ?1 AND state = ?2",
            args![
                call_id,
                RecordingState::Recording.word(),
                RecordingState::MarkedForDeletion.word()
            ],
        )?;
        let marked: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM recordings WHERE call_id = ?1 AND state = ?2",
                args![call_id, RecordingState::MarkedForDeletion.word()],
            )?
            .get(0)?;
        let complete = recordings_in(
            &tx,
            call_id,
            &[RecordingState::Finished, RecordingState::Kept],
        )?;
        let mut doomed = Vec::new();
        for (recording_id, path) in &complete {
            set_state(&tx, recording_id, RecordingState::Deleted)?;
            audit(
                &tx,
                call_id,
                Some((recording_id, path)),
                now_ms,
                by,
                DELETED_ON_REQUEST,
            )?;
            doomed.push(path.clone());
        }
        tx.commit()?;
        remove_files(&doomed);
        Ok(DeleteOutcome {
            deleted_now: complete.len(),
            marked: usize::try_from(marked).unwrap_or(0),
        })
    }

    /// KeepCall: remembers it, turns the call's finished policy recordings into `kept`, and
    /// says when there is nothing left to keep (see [`KeepOutcome`]). Repeating it is harmless.
    /// (`_now_ms` keeps the signature of [`Db::delete_call`]; no keep time is stored yet.)
    pub fn keep_call(&mut self, call_id: &str, _now_ms: UnixMs) -> Result<KeepOutcome, StoreError> {
        let tx = self.sql.transaction()?;
        let Some(call) = call_flags(&tx, call_id)? else {
            return Err(StoreError::UnknownCall(call_id.to_string()));
        };
        tx.execute(
            "UPDATE calls SET kept = 1 WHERE call_id = ?1",
            args![call_id],
        )?;
        if call.delete_requested {
            tx.commit()?;
            return Ok(KeepOutcome::DeleteRequested);
        }
        tx.execute(
            "UPDATE recordings SET state = ?4 WHERE call_id = ?1 AND origin = ?2 AND state = ?3",
            args![
                call_id,
                RecordingOrigin::Policy.word(),
                RecordingState::Finished.word(),
                RecordingState::Kept.word()
            ],
        )?;
        let policy_in = |state: RecordingState| -> Result<usize, StoreError> {
            let n: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM recordings
                     WHERE call_id = ?1 AND origin = ?2 AND state = ?3",
                    args![call_id, RecordingOrigin::Policy.word(), state.word()],
                )?
                .get(0)?;
            Ok(usize::try_from(n).unwrap_or(0))
        };
        let kept = policy_in(RecordingState::Kept)?;
        let recording = policy_in(RecordingState::Recording)?;
        let discarded = policy_in(RecordingState::Deleted)?;
        tx.commit()?;
        if kept == 0 && recording == 0 && discarded > 0 {
            return Ok(KeepOutcome::AlreadyDiscarded);
        }
        Ok(KeepOutcome::Kept { kept, recording })
    }

    /// The deletion audit of a call, oldest first (also after retention removed the call).
    pub fn deletions(&self, call_id: &str) -> Result<Vec<DeletionRecord>, StoreError> {
        self.sql
            .query(
                "SELECT call_id, recording_id, path, at_ms, \"by\", reason FROM deletions
                 WHERE call_id = ?1 ORDER BY at_ms, id",
                args![call_id],
            )?
            .iter()
            .map(|row| {
                Ok(DeletionRecord {
                    call_id: row.get(0)?,
                    recording_id: row.get(1)?,
                    path: row.get::<Option<String>>(2)?.map(PathBuf::from),
                    at_ms: row.get(3)?,
                    by: row.get(4)?,
                    reason: row.get(5)?,
                })
            })
            .collect()
    }
}

/// What the rules need to know about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallFlags {
    pub(super) policy: RecordPolicy,
    pub(super) kept: bool,
    pub(super) delete_requested: bool,
    pub(super) delete_requested_by: Option<String>,
}

/// The flags of a call, or None when there is no such call.
pub(super) fn call_flags(conn: &Sql, call_id: &str) -> Result<Option<CallFlags>, StoreError> {
    conn.query_opt(
        "SELECT policy, kept, delete_requested, delete_requested_by FROM calls
         WHERE call_id = ?1",
        args![call_id],
    )?
    .map(|row| {
        Ok(CallFlags {
            policy: row.word(0)?,
            kept: row.get(1)?,
            delete_requested: row.get(2)?,
            delete_requested_by: row.get(3)?,
        })
    })
    .transpose()
}

/// A recording whose file is not complete yet (state `recording` or `marked-for-deletion`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OpenRecording {
    pub(super) recording_id: String,
    pub(super) call_id: String,
    pub(super) path: PathBuf,
    pub(super) format: RecordingFormat,
    pub(super) sample_rate: u32,
    pub(super) origin: RecordingOrigin,
    pub(super) state: RecordingState,
    pub(super) started_ms: UnixMs,
    /// From RecordingFailed.
    pub(super) error: Option<String>,
}

/// The columns [`open_recording_from_row`] reads, in order.
pub(super) const OPEN_RECORDING_COLUMNS: &str =
    "recording_id, call_id, path, format, sample_rate, origin, state, started_ms, error";

pub(super) fn open_recording_from_row(row: &Row) -> Result<OpenRecording, StoreError> {
    Ok(OpenRecording {
        recording_id: row.get(0)?,
        call_id: row.get(1)?,
        path: PathBuf::from(row.get::<String>(2)?),
        format: row.word(3)?,
        sample_rate: row.get(4)?,
        origin: row.word(5)?,
        state: row.word(6)?,
        started_ms: row.get(7)?,
        error: row.get(8)?,
    })
}

/// How a recording's file turned out.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Completion {
    pub(super) ended_ms: UnixMs,
    pub(super) duration_ms: Option<u64>,
    pub(super) size_bytes: Option<u64>,
    pub(super) sha256: Option<String>,
    pub(super) error: Option<String>,
    /// Set when the file is not there at all: the recording is recorded as deleted (by
    /// `store`, with this reason) rather than offering a file nobody can fetch.
    pub(super) missing: Option<&'static str>,
}

/// Records a recording as complete and applies the rules: its final state, its open mute span
/// closed at its end, an audit row and the file queued in `doomed` when the rules discard it.
pub(super) fn close_recording(
    conn: &Sql,
    recording: &OpenRecording,
    done: Completion,
    now_ms: UnixMs,
    doomed: &mut Vec<PathBuf>,
) -> Result<RecordingState, StoreError> {
    let call = call_flags(conn, &recording.call_id)?.ok_or_else(|| {
        StoreError::Database(format!(
            "recording {:?} has no call",
            recording.recording_id
        ))
    })?;
    let mut fate = fate(&call, recording.origin, recording.state);
    if let (Some(reason), Fate::Keep | Fate::Finish) = (done.missing, &fate) {
        fate = Fate::Delete {
            by: "store".to_string(),
            reason,
        };
    }
    let state = match fate {
        Fate::Delete { .. } => RecordingState::Deleted,
        Fate::Keep => RecordingState::Kept,
        Fate::Finish => RecordingState::Finished,
    };
    conn.execute(
        "UPDATE recordings SET state = ?2, ended_ms = ?3, duration_ms = ?4, size_bytes = ?5,
             sha256 = ?6, error = ?7
         WHERE recording_id = ?1",
        args![
            recording.recording_id,
            state.word(),
            done.ended_ms,
            done.duration_ms.map(int),
            done.size_bytes.map(int),
            done.sha256,
            done.error
        ],
    )?;
    let end_offset = done
        .duration_ms
        .map(int)
        .unwrap_or_else(|| done.ended_ms.saturating_sub(recording.started_ms).max(0));
    conn.execute(
        "UPDATE mutes SET to_ms = CASE WHEN from_ms > ?2 THEN from_ms ELSE ?2 END
         WHERE recording_id = ?1 AND to_ms IS NULL",
        args![recording.recording_id, end_offset],
    )?;
    if let Fate::Delete { by, reason } = fate {
        let row = (recording.recording_id.as_str(), recording.path.as_path());
        audit(conn, &recording.call_id, Some(row), now_ms, &by, reason)?;
        doomed.push(recording.path.clone());
    }
    Ok(state)
}

/// What becomes of a recording whose file is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// The file goes; the audit says who asked and why.
    Delete { by: String, reason: &'static str },
    /// An on-demand (or always) policy recording of a call KeepCall asked to keep.
    Keep,
    /// Stays as an ordinary finished recording.
    Finish,
}

/// The rules, first match wins: DeleteCall (during the call or before the recording began);
/// an on-demand policy recording of a call nobody kept; a kept call's policy recording;
/// everything else (a Record operation's file is never `kept`: KeepCall is about the policy).
fn fate(call: &CallFlags, origin: RecordingOrigin, state: RecordingState) -> Fate {
    if call.delete_requested || state == RecordingState::MarkedForDeletion {
        let by = call
            .delete_requested_by
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        return Fate::Delete {
            by,
            reason: DELETED_WHILE_RECORDING,
        };
    }
    let policy = origin == RecordingOrigin::Policy;
    if policy && call.policy == RecordPolicy::OnDemand && !call.kept {
        return Fate::Delete {
            by: "on-demand".to_string(),
            reason: ON_DEMAND_NOT_KEPT,
        };
    }
    if policy && call.kept {
        return Fate::Keep;
    }
    Fate::Finish
}

pub(super) fn set_state(
    conn: &Sql,
    recording_id: &str,
    state: RecordingState,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE recordings SET state = ?2 WHERE recording_id = ?1",
        args![recording_id, state.word()],
    )?;
    Ok(())
}

/// The (id, path) of a call's recordings in any of `states`.
pub(super) fn recordings_in(
    conn: &Sql,
    call_id: &str,
    states: &[RecordingState],
) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let rows = conn.query(
        "SELECT recording_id, path, state FROM recordings WHERE call_id = ?1
         ORDER BY started_ms, recording_id",
        args![call_id],
    )?;
    let mut found = Vec::new();
    for row in rows {
        let state: RecordingState = row.word(2)?;
        if states.contains(&state) {
            found.push((row.get::<String>(0)?, PathBuf::from(row.get::<String>(1)?)));
        }
    }
    Ok(found)
}

/// Writes a deletion audit row.
pub(super) fn audit(
    conn: &Sql,
    call_id: &str,
    recording: Option<(&str, &Path)>,
    at_ms: UnixMs,
    by: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let (recording_id, path) = match recording {
        Some((id, path)) => (Some(id), Some(path_text(path))),
        None => (None, None),
    };
    conn.execute(
        "INSERT INTO deletions (call_id, recording_id, path, at_ms, \"by\", reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![call_id, recording_id, path, at_ms, by, reason],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{call, ended, file, finished, recording, temp_db};

    fn state_of(db: &Db, call_id: &str) -> Vec<RecordingState> {
        let call = db.get_call(call_id).expect("get").expect("call");
        call.recordings.iter().map(|r| r.state).collect()
    }

    #[test]
    fn deleting_a_finished_call_removes_the_file_at_once() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"abc");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
                ended("c1", 1_000),
                finished("r1", 1_000, 8_000),
            ],
            1_000,
        )
        .expect("apply");
        let outcome = db
            .delete_call("c1", "api-key:abcd1234", 2_000)
            .expect("delete");
        assert_eq!(
            outcome,
            DeleteOutcome {
                deleted_now: 1,
                marked: 0
            }
        );
        assert!(!path.exists());
        assert_eq!(state_of(&db, "c1"), vec![RecordingState::Deleted]);
        let call = db.get_call("c1").expect("get").expect("call");
        assert!(call.delete_requested);
        assert_eq!(
            call.recordings[0].sha256.as_deref().map(str::len),
            Some(64),
            "row stays"
        );
        let audit = db.deletions("c1").expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].by, "api-key:abcd1234");
        assert_eq!(audit[0].reason, "deleted on request");
        assert_eq!(audit[0].at_ms, 2_000);

        // Again: nothing more to do, no second audit row.
        let again = db.delete_call("c1", "user:x", 3_000).expect("again");
        assert_eq!(
            again,
            DeleteOutcome {
                deleted_now: 0,
                marked: 0
            }
        );
        assert_eq!(db.deletions("c1").expect("audit").len(), 1);
    }

    #[test]
    fn deleting_a_call_whose_file_is_already_gone_is_fine() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"abc");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
                finished("r1", 1_000, 8_000),
            ],
            1_000,
        )
        .expect("apply");
        std::fs::remove_file(&path).expect("rm by hand");
        let outcome = db.delete_call("c1", "user:alice", 2_000).expect("delete");
        assert_eq!(outcome.deleted_now, 1);
        assert_eq!(state_of(&db, "c1"), vec![RecordingState::Deleted]);
    }

    #[test]
    fn delete_ongoing_then_finished_keeps_the_audit() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"abc");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
            ],
            0,
        )
        .expect("start");
        let first = db.delete_call("c1", "user:first", 500).expect("delete");
        assert_eq!(
            first,
            DeleteOutcome {
                deleted_now: 0,
                marked: 1
            }
        );
        let second = db
            .delete_call("c1", "user:second", 600)
            .expect("delete again");
        assert_eq!(
            second,
            DeleteOutcome {
                deleted_now: 0,
                marked: 1
            }
        );
        db.apply(&[ended("c1", 1_000), finished("r1", 1_000, 8_000)], 1_000)
            .expect("finish");
        assert!(!path.exists());
        let audit = db.deletions("c1").expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].by, "user:first", "who asked first is remembered");
        assert_eq!(audit[0].reason, "deleted while recording");
    }

    #[test]
    fn unknown_calls_are_errors() {
        let (_dir, mut db) = temp_db();
        assert!(matches!(
            db.delete_call("nope", "user:a", 1),
            Err(StoreError::UnknownCall(id)) if id == "nope"
        ));
        assert!(matches!(
            db.keep_call("nope", 1),
            Err(StoreError::UnknownCall(_))
        ));
        assert!(db.deletions("nope").expect("audit").is_empty());
    }

    #[test]
    fn keeping_after_the_on_demand_recording_was_discarded_says_so() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"abc");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::OnDemand, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
                ended("c1", 1_000),
                finished("r1", 1_000, 8_000),
            ],
            1_000,
        )
        .expect("apply");
        assert!(!path.exists());
        assert_eq!(
            db.keep_call("c1", 2_000).expect("keep"),
            KeepOutcome::AlreadyDiscarded
        );
        assert_eq!(state_of(&db, "c1"), vec![RecordingState::Deleted]);
    }

    #[test]
    fn keeping_a_finished_always_call_turns_its_policy_recordings_kept() {
        let (dir, mut db) = temp_db();
        let policy = file(&dir, "p.wav", b"p");
        let op = file(&dir, "o.wav", b"o");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &policy, RecordingOrigin::Policy, 0),
                recording("r2", "c1", &op, RecordingOrigin::RecordOperation, 1),
                finished("r1", 1_000, 8_000),
                finished("r2", 1_000, 8_000),
            ],
            1_000,
        )
        .expect("apply");
        assert_eq!(
            db.keep_call("c1", 2_000).expect("keep"),
            KeepOutcome::Kept {
                kept: 1,
                recording: 0
            }
        );
        assert_eq!(
            state_of(&db, "c1"),
            vec![RecordingState::Kept, RecordingState::Finished]
        );
        assert_eq!(
            db.keep_call("c1", 3_000).expect("keep again"),
            KeepOutcome::Kept {
                kept: 1,
                recording: 0
            }
        );
        assert!(db.get_call("c1").expect("get").expect("call").kept);
    }

    #[test]
    fn keeping_a_call_without_recordings_or_one_being_deleted() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r.wav", b"r");
        db.apply(
            &[
                call("plain", "1", "2", RecordPolicy::Off, 0),
                call("gone", "1", "2", RecordPolicy::OnDemand, 0),
                recording("r", "gone", &path, RecordingOrigin::Policy, 0),
            ],
            0,
        )
        .expect("apply");
        assert_eq!(
            db.keep_call("plain", 1).expect("keep"),
            KeepOutcome::Kept {
                kept: 0,
                recording: 0
            }
        );
        db.delete_call("gone", "user:a", 1).expect("delete");
        assert_eq!(
            db.keep_call("gone", 2).expect("keep"),
            KeepOutcome::DeleteRequested
        );
        db.apply(&[finished("r", 3, 8)], 3).expect("finish");
        assert_eq!(
            state_of(&db, "gone"),
            vec![RecordingState::Deleted],
            "delete wins"
        );
        assert!(!path.exists());
    }

    #[test]
    fn the_rules_in_order() {
        let flags = |policy, kept, delete_requested| CallFlags {
            policy,
            kept,
            delete_requested,
            delete_requested_by: delete_requested.then(|| "user:a".to_string()),
        };
        use RecordPolicy::{Always, OnDemand};
        use RecordingOrigin::{Policy, RecordOperation};
        use RecordingState::{MarkedForDeletion, Recording};
        let deleted_by = |by: &str, reason| Fate::Delete {
            by: by.to_string(),
            reason,
        };
        let cases = [
            (
                flags(Always, false, true),
                Policy,
                Recording,
                deleted_by("user:a", DELETED_WHILE_RECORDING),
            ),
            (
                flags(OnDemand, true, true),
                Policy,
                Recording,
                deleted_by("user:a", DELETED_WHILE_RECORDING),
            ),
            (
                flags(Always, false, false),
                Policy,
                MarkedForDeletion,
                deleted_by("unknown", DELETED_WHILE_RECORDING),
            ),
            (
                flags(OnDemand, false, false),
                Policy,
                Recording,
                deleted_by("on-demand", ON_DEMAND_NOT_KEPT),
            ),
            (
                flags(OnDemand, false, false),
                RecordOperation,
                Recording,
                Fate::Finish,
            ),
            (flags(OnDemand, true, false), Policy, Recording, Fate::Keep),
            (flags(Always, true, false), Policy, Recording, Fate::Keep),
            (
                flags(Always, true, false),
                RecordOperation,
                Recording,
                Fate::Finish,
            ),
            (flags(Always, false, false), Policy, Recording, Fate::Finish),
        ];
        for (call, origin, state, want) in cases {
            assert_eq!(
                fate(&call, origin, state),
                want,
                "{call:?} {origin:?} {state:?}"
            );
        }
    }
}
