//! The age limit: calls that ended more than `retention_days` ago go, with their parties,
//! recordings, mute spans and files.
//!
//! Owns: which calls are old enough, and the `retention` audit rows.
//! Must not: remove an audit row (they outlive their calls), or a call that has not ended
//! (start-up recovery ends what a killed process left open).

use super::db::{int, remove_files, Db};
use super::deletion::{audit, recordings_in};
use super::model::{RecordingState, UnixMs};
use super::sql::args;
use super::StoreError;

/// Calls expired per transaction, so a first run over a large backlog does not hold the write
/// lock for long.
const EXPIRE_CHUNK: u64 = 500;

const DAY_MS: i64 = 86_400_000;

impl Db {
    /// Removes this node's calls that ended more than `retention_days` before `now_ms` with their
    /// parties, recordings, mute spans and files, leaving an audit row (by `retention`) for
    /// each file it removes. 0 days keeps everything. Answers how many calls were removed.
    pub fn expire(&mut self, now_ms: UnixMs, retention_days: u32) -> Result<usize, StoreError> {
        if retention_days == 0 {
            return Ok(0);
        }
        let cutoff = now_ms.saturating_sub(i64::from(retention_days).saturating_mul(DAY_MS));
        let reason = format!("older than {retention_days} days");
        let mut removed = 0;
        loop {
            let tx = self.sql.transaction()?;
            // Each node expires its own calls: their files are on its disk.
            let calls: Vec<String> = tx
                .query(
                    "SELECT call_id FROM calls
                     WHERE ended_ms IS NOT NULL AND ended_ms < ?1 AND node_id = ?3
                     ORDER BY ended_ms LIMIT ?2",
                    args![cutoff, int(EXPIRE_CHUNK), self.node],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect::<Result<_, _>>()?;
            if calls.is_empty() {
                return Ok(removed);
            }
            let mut doomed = Vec::new();
            for call_id in &calls {
                let present = [
                    RecordingState::Recording,
                    RecordingState::Finished,
                    RecordingState::Kept,
                    RecordingState::MarkedForDeletion,
                ];
                for (recording_id, path) in recordings_in(&tx, call_id, &present)? {
                    let row = Some((recording_id.as_str(), path.as_path()));
                    audit(&tx, call_id, row, now_ms, "retention", &reason)?;
                    doomed.push(path);
                }
                // Already deleted (and audited): its file should be gone, but a removal that
                // failed then gets a second chance now.
                for (_, path) in recordings_in(&tx, call_id, &[RecordingState::Deleted])? {
                    doomed.push(path);
                }
                tx.execute("DELETE FROM calls WHERE call_id = ?1", args![call_id])?;
            }
            tx.commit()?;
            remove_files(&doomed);
            removed += calls.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deletion::{set_state, DELETED_ON_REQUEST};
    use crate::store::model::{MuteChannels, RecordPolicy, RecordingOrigin, StoreEvent};
    use crate::store::testing::{call, ended, file, finished, recording, temp_db};

    const DAY: i64 = DAY_MS;

    #[test]
    fn retention_removes_old_calls_their_files_and_rows_but_not_the_audit() {
        let (dir, mut db) = temp_db();
        let now = 100 * DAY;
        let old_file = file(&dir, "old.wav", b"old");
        let old_deleted = file(&dir, "old-deleted.wav", b"od");
        let young_file = file(&dir, "young.wav", b"young");
        db.apply(
            &[
                call(
                    "old",
                    "1",
                    "2",
                    RecordPolicy::Always,
                    now - 31 * DAY - 60_000,
                ),
                recording(
                    "r-old",
                    "old",
                    &old_file,
                    RecordingOrigin::Policy,
                    now - 31 * DAY - 60_000,
                ),
                recording(
                    "r-od",
                    "old",
                    &old_deleted,
                    RecordingOrigin::Policy,
                    now - 31 * DAY - 50_000,
                ),
                StoreEvent::MuteChanged {
                    recording_id: "r-old".into(),
                    at_ms: now - 31 * DAY - 30_000,
                    channels: MuteChannels::BOTH,
                },
                ended("old", now - 31 * DAY),
                finished("r-old", now - 31 * DAY, 8_000),
                finished("r-od", now - 31 * DAY, 8_000),
                call("young", "1", "2", RecordPolicy::Always, now - 29 * DAY),
                recording(
                    "r-young",
                    "young",
                    &young_file,
                    RecordingOrigin::Policy,
                    now - 29 * DAY,
                ),
                ended("young", now - 29 * DAY + 1_000),
                finished("r-young", now - 29 * DAY + 1_000, 8_000),
                call("ongoing", "1", "2", RecordPolicy::Off, now - 40 * DAY),
            ],
            now - 31 * DAY,
        )
        .expect("apply");
        // One of the old call's recordings was deleted earlier, but its file lingered (the
        // removal failed then).
        let by_hand = db.sql.transaction().expect("tx");
        set_state(&by_hand, "r-od", RecordingState::Deleted).expect("state");
        audit(
            &by_hand,
            "old",
            Some(("r-od", old_deleted.as_path())),
            now - 30 * DAY,
            "user:a",
            DELETED_ON_REQUEST,
        )
        .expect("audit");
        by_hand.commit().expect("commit");

        assert_eq!(db.expire(now, 0).expect("keep forever"), 0);
        assert!(db.get_call("old").expect("get").is_some());

        assert_eq!(db.expire(now, 30).expect("expire"), 1);
        assert_eq!(db.get_call("old").expect("get"), None);
        assert!(!old_file.exists());
        assert!(
            !old_deleted.exists(),
            "a lingering file gets a second chance"
        );
        assert!(young_file.exists());
        assert!(db.get_call("young").expect("get").is_some());
        assert!(
            db.get_call("ongoing").expect("get").is_some(),
            "no end, never expired"
        );
        for table in ["parties", "recordings", "mutes"] {
            let orphans: i64 = db
                .sql
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FROM {table} WHERE {}",
                        match table {
                            "mutes" => "recording_id IN ('r-old', 'r-od')",
                            _ => "call_id = 'old'",
                        }
                    ),
                    crate::store::sql::args![],
                )
                .and_then(|row| row.get(0))
                .expect("count");
            assert_eq!(orphans, 0, "{table} rows of the old call remain");
        }
        let audit = db.deletions("old").expect("audit");
        let rows: Vec<(&str, &str, &str)> = audit
            .iter()
            .map(|row| {
                (
                    row.recording_id.as_deref().unwrap_or(""),
                    row.by.as_str(),
                    row.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("r-od", "user:a", DELETED_ON_REQUEST),
                ("r-old", "retention", "older than 30 days"),
            ]
        );
        assert_eq!(db.expire(now, 30).expect("again"), 0);
    }
}
