//! Applying the control plane's writes ([`StoreEvent`]) to the database.
//!
//! Owns: the meaning of each event as rows — a call's life (start, answer, meeting, parties,
//! end), a recording's (start, failure, finish: size, SHA-256, duration) and its mute spans.
//! Must not: fail a batch for an event about an id it does not know (the control plane's view
//! and the database's can differ after a restart or a refused write): such events are logged
//! and skipped. What becomes of a finished file is `deletion`'s call.

use std::path::PathBuf;

use super::db::{measure, path_text, remove_files, Db};
use super::deletion::{
    call_flags, close_recording, open_recording_from_row, Completion, OpenRecording,
    OPEN_RECORDING_COLUMNS,
};
use super::model::{MuteChannels, RecordingState, StoreEvent, UnixMs};
use super::sql::{args, Sql};
use super::StoreError;

impl Db {
    /// Applies `events` in order, in one transaction; the files the rules discard are removed
    /// after it commits. An event for an unknown call or recording, or a repeated start or
    /// finish, is logged and skipped; an error (the database refused) rolls the whole batch
    /// back and is returned.
    pub fn apply(&mut self, events: &[StoreEvent], now_ms: UnixMs) -> Result<(), StoreError> {
        let answers = answers_at_start(events);
        let tx = self.sql.transaction()?;
        let mut doomed = Vec::new();
        for (event, answer) in events.iter().zip(answers) {
            if let Answer::AtStart(answered_ms) = answer {
                apply_one(&tx, self.node, event, answered_ms, now_ms, &mut doomed)?;
            }
        }
        tx.commit()?;
        remove_files(&doomed);
        Ok(())
    }
}

/// What becomes of each event of a batch as to the call's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Applied; a `CallStarted` inserts its call already answered at this time, if any.
    AtStart(Option<UnixMs>),
    /// A `CallAnswered` whose call starts earlier in the batch: written by that insert.
    Folded,
}

/// A call answered in the batch that starts it is inserted answered (callbridge answers most
/// calls itself, within a turn of their start): one `UPDATE` a call fewer. Only the first
/// answer after the start folds; the final rows are those of applying each event in turn.
fn answers_at_start(events: &[StoreEvent]) -> Vec<Answer> {
    let mut answers = vec![Answer::AtStart(None); events.len()];
    // Call ids are ours (UUIDv7): no peer chooses them.
    let mut started: crate::idmap::IdMap<&str, usize> = crate::idmap::IdMap::default();
    for (i, event) in events.iter().enumerate() {
        match event {
            StoreEvent::CallStarted { call_id, .. } => {
                started.insert(call_id, i);
            }
            StoreEvent::CallAnswered { call_id, at_ms } => {
                if let Some(start) = started.remove(call_id.as_str()) {
                    answers[start] = Answer::AtStart(Some(*at_ms));
                    answers[i] = Answer::Folded;
                }
            }
            _ => {}
        }
    }
    answers
}

fn apply_one(
    conn: &Sql,
    node: u8,
    event: &StoreEvent,
    answered_ms: Option<UnixMs>,
    now_ms: UnixMs,
    doomed: &mut Vec<PathBuf>,
) -> Result<(), StoreError> {
    match event {
        StoreEvent::CallStarted {
            call_id,
            connection,
            direction,
            platform_call_id,
            native_id,
            calling,
            called,
            trunk,
            policy,
            started_ms,
        } => {
            // One statement, not a look-up and an insert: a known call is left as it is.
            let inserted = conn.execute(
                "INSERT INTO calls (call_id, connection, direction, platform_call_id, native_id,
                     calling, called, trunk, policy, started_ms, node_id, answered_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT DO NOTHING",
                args![
                    call_id,
                    connection,
                    direction.word(),
                    platform_call_id,
                    native_id,
                    calling,
                    called,
                    trunk,
                    policy.word(),
                    started_ms,
                    node,
                    answered_ms
                ],
            )?;
            if inserted == 0 {
                tracing::warn!(call_id, "CallStarted for a known call; skipped");
                // The answer folded into this start still applies to the call already known.
                if let Some(at_ms) = answered_ms {
                    let answered = StoreEvent::CallAnswered {
                        call_id: call_id.clone(),
                        at_ms,
                    };
                    return apply_one(conn, node, &answered, None, now_ms, doomed);
                }
                return Ok(());
            }
            // The two ends are parties too, so the party list is the whole story of the call.
            // A statement each, not one of two rows: SQLite gives a statement that writes
            // several rows a statement journal inside the batch's transaction, a copy of every
            // page it touches (7 % of the store thread at 6,000 setups a second).
            for (dn, role) in [(calling, "calling"), (called, "called")] {
                if !dn.is_empty() {
                    add_party(conn, call_id, dn, role, *started_ms)?;
                }
            }
        }
        // The updates look the call up only when they changed nothing (to tell an unknown call,
        // logged, from one already answered or ended): one statement per event, not two.
        StoreEvent::CallAnswered { call_id, at_ms } => {
            let changed = conn.execute(
                "UPDATE calls SET answered_ms = ?2 WHERE call_id = ?1 AND answered_ms IS NULL",
                args![call_id, at_ms],
            )?;
            if changed == 0 {
                known_call(conn, call_id, "CallAnswered")?;
            }
        }
        StoreEvent::MeetingChanged {
            call_id,
            meeting_id,
        } => {
            let changed = conn.execute(
                "UPDATE calls SET meeting_id = ?2 WHERE call_id = ?1",
                args![call_id, meeting_id],
            )?;
            if changed == 0 {
                known_call(conn, call_id, "MeetingChanged")?;
            }
        }
        StoreEvent::PartyAdded {
            call_id,
            dn,
            role,
            at_ms,
        } => {
            if known_call(conn, call_id, "PartyAdded")? {
                add_party(conn, call_id, dn, role, *at_ms)?;
            }
        }
        StoreEvent::CallEnded {
            call_id,
            at_ms,
            cause,
        } => {
            let changed = conn.execute(
                "UPDATE calls SET ended_ms = ?2, end_cause = ?3
                 WHERE call_id = ?1 AND ended_ms IS NULL",
                args![call_id, at_ms, cause],
            )?;
            if changed == 0 {
                known_call(conn, call_id, "CallEnded")?;
            }
        }
        StoreEvent::RecordingStarted {
            recording_id,
            call_id,
            path,
            format,
            channels,
            sample_rate,
            origin,
            started_ms,
        } => {
            let Some(call) = call_flags(conn, call_id)? else {
                tracing::warn!(
                    call_id,
                    recording_id,
                    "RecordingStarted for an unknown call; skipped"
                );
                return Ok(());
            };
            if recording_exists(conn, recording_id)? {
                tracing::warn!(
                    recording_id,
                    "RecordingStarted for a known recording; skipped"
                );
                return Ok(());
            }
            // DeleteCall came before this recording began: it goes too when it is finished.
            let state = if call.delete_requested {
                RecordingState::MarkedForDeletion
            } else {
                RecordingState::Recording
            };
            conn.execute(
                "INSERT INTO recordings (recording_id, call_id, path, format, channels,
                     sample_rate, origin, state, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                args![
                    recording_id,
                    call_id,
                    path_text(path),
                    format.word(),
                    channels,
                    sample_rate,
                    origin.word(),
                    state.word(),
                    started_ms
                ],
            )?;
        }
        StoreEvent::RecordingFailed {
            recording_id,
            at_ms: _,
            error,
        } => {
            // The first error is the cause; the state stays `recording` until the file is closed.
            let changed = conn.execute(
                "UPDATE recordings SET error = COALESCE(error, ?2) WHERE recording_id = ?1",
                args![recording_id, error],
            )?;
            if changed == 0 {
                tracing::warn!(
                    recording_id,
                    "RecordingFailed for an unknown recording; skipped"
                );
            }
        }
        StoreEvent::RecordingFinished {
            recording_id,
            ended_ms,
            samples,
            error,
        } => {
            let Some(recording) = open_recording(conn, recording_id, "RecordingFinished")? else {
                return Ok(());
            };
            let done = finished(&recording, *ended_ms, *samples, error.clone());
            close_recording(conn, &recording, done, now_ms, doomed)?;
        }
        StoreEvent::MuteChanged {
            recording_id,
            at_ms,
            channels,
        } => {
            let Some(recording) = open_recording(conn, recording_id, "MuteChanged")? else {
                return Ok(());
            };
            let offset = at_ms.saturating_sub(recording.started_ms).max(0);
            change_mute(conn, recording_id, offset, *channels)?;
        }
    }
    Ok(())
}

/// How a file the media layer reports finished turned out: its length from the samples
/// written, its size and digest from the disk. A file that cannot be read keeps its row (with
/// the read error); one that is not there at all is recorded as deleted.
fn finished(
    recording: &OpenRecording,
    ended_ms: UnixMs,
    samples: u64,
    error: Option<String>,
) -> Completion {
    let duration_ms = (recording.sample_rate > 0)
        .then(|| u128::from(samples) * 1000 / u128::from(recording.sample_rate))
        .map(|ms| u64::try_from(ms).unwrap_or(u64::MAX));
    let mut done = Completion {
        ended_ms,
        duration_ms,
        // The first failure is the cause (RecordingFailed came before the file was closed).
        error: recording.error.clone().or(error),
        ..Completion::default()
    };
    match measure(&recording.path) {
        Ok((size, sha)) => {
            done.size_bytes = Some(size);
            done.sha256 = Some(sha);
        }
        Err(read_error) if read_error.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                recording_id = recording.recording_id,
                "finished recording has no file"
            );
            done.missing = Some("file missing when finished");
        }
        Err(read_error) => {
            tracing::warn!(recording_id = recording.recording_id, %read_error, "cannot read finished recording");
            done.error
                .get_or_insert_with(|| format!("cannot read file: {read_error}"));
        }
    }
    done
}

/// Closes the open mute span (if its channels change) and opens a new one unless `channels`
/// is NONE. `offset` is milliseconds from the recording's start.
fn change_mute(
    conn: &Sql,
    recording_id: &str,
    offset: i64,
    channels: MuteChannels,
) -> Result<(), StoreError> {
    let open: Option<(i64, u8)> = conn
        .query_opt(
            "SELECT id, channels FROM mutes WHERE recording_id = ?1 AND to_ms IS NULL
             ORDER BY id DESC LIMIT 1",
            args![recording_id],
        )?
        .map(|row| Ok::<_, StoreError>((row.get(0)?, row.get(1)?)))
        .transpose()?;
    if let Some((id, open_channels)) = open {
        if open_channels == channels.0 {
            return Ok(());
        }
        conn.execute(
            "UPDATE mutes SET to_ms = CASE WHEN from_ms > ?2 THEN from_ms ELSE ?2 END
             WHERE id = ?1",
            args![id, offset],
        )?;
    }
    if channels != MuteChannels::NONE {
        conn.execute(
            "INSERT INTO mutes (recording_id, channels, from_ms) VALUES (?1, ?2, ?3)",
            args![recording_id, channels.0, offset],
        )?;
    }
    Ok(())
}

/// Adds a party unless the call has it already in that role.
fn add_party(
    conn: &Sql,
    call_id: &str,
    dn: &str,
    role: &str,
    at_ms: UnixMs,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO parties (call_id, dn, role, at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        args![call_id, dn, role, at_ms],
    )?;
    Ok(())
}

fn call_exists(conn: &Sql, call_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_opt("SELECT 1 FROM calls WHERE call_id = ?1", args![call_id])?
        .is_some())
}

/// Whether the call exists; logs the skipped event when not.
fn known_call(conn: &Sql, call_id: &str, event: &'static str) -> Result<bool, StoreError> {
    let known = call_exists(conn, call_id)?;
    if !known {
        tracing::warn!(call_id, event, "event for an unknown call; skipped");
    }
    Ok(known)
}

fn recording_exists(conn: &Sql, recording_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM recordings WHERE recording_id = ?1",
            args![recording_id],
        )?
        .is_some())
}

/// The recording if it is still being written; logs the skipped event when it is unknown or
/// already complete.
fn open_recording(
    conn: &Sql,
    recording_id: &str,
    event: &'static str,
) -> Result<Option<OpenRecording>, StoreError> {
    let sql = format!("SELECT {OPEN_RECORDING_COLUMNS} FROM recordings WHERE recording_id = ?1");
    let recording = conn
        .query_opt(&sql, args![recording_id])?
        .map(|row| open_recording_from_row(&row))
        .transpose()?;
    let Some(recording) = recording else {
        tracing::warn!(
            recording_id,
            event,
            "event for an unknown recording; skipped"
        );
        return Ok(None);
    };
    let open = matches!(
        recording.state,
        RecordingState::Recording | RecordingState::MarkedForDeletion
    );
    if !open {
        tracing::warn!(
            recording_id,
            event,
            state = recording.state.word(),
            "event for a complete recording; skipped"
        );
        return Ok(None);
    }
    Ok(Some(recording))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{RecordPolicy, RecordingOrigin, RecordingRecord};
    use crate::store::testing::{call, ended, file, finished, recording, temp_db};

    fn only_recording(db: &Db, call_id: &str) -> RecordingRecord {
        let call = db.get_call(call_id).expect("get").expect("call");
        assert_eq!(call.recordings.len(), 1);
        call.recordings[0].clone()
    }

    #[test]
    fn a_call_life_is_recorded() {
        let (_dir, mut db) = temp_db();
        let events = [
            call("c1", "1001", "2002", RecordPolicy::Off, 10_000),
            StoreEvent::CallAnswered {
                call_id: "c1".into(),
                at_ms: 12_000,
            },
            StoreEvent::CallAnswered {
                call_id: "c1".into(),
                at_ms: 13_000,
            },
            StoreEvent::MeetingChanged {
                call_id: "c1".into(),
                meeting_id: Some("m-9".into()),
            },
            StoreEvent::PartyAdded {
                call_id: "c1".into(),
                dn: "3003".into(),
                role: "transfer-target".into(),
                at_ms: 14_000,
            },
            StoreEvent::PartyAdded {
                call_id: "c1".into(),
                dn: "3003".into(),
                role: "transfer-target".into(),
                at_ms: 15_000,
            },
            ended("c1", 20_000),
            StoreEvent::CallEnded {
                call_id: "c1".into(),
                at_ms: 21_000,
                cause: "api".into(),
            },
        ];
        db.apply(&events, 30_000).expect("apply");
        let c = db.get_call("c1").expect("get").expect("call");
        assert_eq!(c.calling, "1001");
        assert_eq!(c.called, "2002");
        assert_eq!(c.platform_call_id.as_deref(), Some("sip-c1"));
        assert_eq!(c.native_id.as_deref(), Some("conn-c1"));
        assert_eq!(c.trunk.as_deref(), Some("pstn"));
        assert_eq!(c.connection, 7);
        assert_eq!(c.started_ms, 10_000);
        assert_eq!(c.answered_ms, Some(12_000), "the first answer counts");
        assert_eq!(c.meeting_id.as_deref(), Some("m-9"));
        assert_eq!(c.ended_ms, Some(20_000), "the first end counts");
        assert_eq!(c.end_cause.as_deref(), Some("remote-bye"));
        assert!(!c.ongoing());
        let parties: Vec<(&str, &str, i64)> = c
            .parties
            .iter()
            .map(|p| (p.dn.as_str(), p.role.as_str(), p.at_ms))
            .collect();
        assert_eq!(
            parties,
            vec![
                ("1001", "calling", 10_000),
                ("2002", "called", 10_000),
                ("3003", "transfer-target", 14_000)
            ]
        );

        db.apply(
            &[StoreEvent::MeetingChanged {
                call_id: "c1".into(),
                meeting_id: None,
            }],
            31_000,
        )
        .expect("leave meeting");
        assert_eq!(
            db.get_call("c1").expect("get").expect("call").meeting_id,
            None
        );
    }

    fn answered(call_id: &str, at_ms: UnixMs) -> StoreEvent {
        StoreEvent::CallAnswered {
            call_id: call_id.into(),
            at_ms,
        }
    }

    #[test]
    fn the_first_answer_after_a_start_in_the_same_batch_folds_into_its_insert() {
        use Answer::{AtStart, Folded};
        let events = [
            answered("c2", 1),
            call("c1", "1001", "2002", RecordPolicy::Off, 10),
            call("c2", "1001", "2002", RecordPolicy::Off, 10),
            answered("c1", 12),
            answered("c1", 13),
            ended("c2", 14),
            answered("c2", 15),
            answered("c3", 16),
        ];
        assert_eq!(
            answers_at_start(&events),
            [
                AtStart(None),
                AtStart(Some(12)),
                AtStart(Some(15)),
                Folded,
                AtStart(None),
                AtStart(None),
                Folded,
                AtStart(None),
            ]
        );
    }

    #[test]
    fn folded_answers_leave_the_rows_that_one_event_at_a_time_leaves() {
        let batches = [
            vec![
                call("c1", "1", "2", RecordPolicy::Off, 10),
                answered("c1", 12),
            ],
            // Answered after it ended: the answer is still recorded.
            vec![
                call("c1", "1", "2", RecordPolicy::Off, 10),
                ended("c1", 11),
                answered("c1", 12),
            ],
            // An answer before the start is for an unknown call: skipped.
            vec![
                answered("c1", 9),
                call("c1", "1", "2", RecordPolicy::Off, 10),
            ],
        ];
        for batch in batches {
            let (_one, mut folded) = temp_db();
            let (_two, mut single) = temp_db();
            folded.apply(&batch, 30).expect("batch");
            for event in &batch {
                single
                    .apply(std::slice::from_ref(event), 30)
                    .expect("one event");
            }
            let rows = |db: &Db| db.get_call("c1").expect("get").expect("call");
            assert_eq!(rows(&folded), rows(&single), "{batch:?}");
        }
        // A repeated start keeps the call as it was, and its folded answer still applies.
        let (_dir, mut db) = temp_db();
        db.apply(&[call("c1", "1", "2", RecordPolicy::Off, 10)], 30)
            .expect("start");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Off, 20),
                answered("c1", 21),
            ],
            30,
        )
        .expect("repeat");
        let c = db.get_call("c1").expect("get").expect("call");
        assert_eq!((c.started_ms, c.answered_ms), (10, Some(21)));
    }

    #[test]
    fn events_for_unknown_ids_are_skipped_not_fatal() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r.wav", b"x");
        let events = [
            StoreEvent::CallAnswered {
                call_id: "nope".into(),
                at_ms: 1,
            },
            ended("nope", 2),
            recording("r0", "nope", &path, RecordingOrigin::Policy, 3),
            finished("nope-rec", 4, 8000),
            StoreEvent::RecordingFailed {
                recording_id: "nope-rec".into(),
                at_ms: 5,
                error: "x".into(),
            },
            StoreEvent::MuteChanged {
                recording_id: "nope-rec".into(),
                at_ms: 6,
                channels: MuteChannels::LEFT,
            },
            call("c1", "1", "2", RecordPolicy::Off, 100),
            call("c1", "9", "9", RecordPolicy::Off, 200),
        ];
        db.apply(&events, 1_000).expect("skips, does not fail");
        let c = db.get_call("c1").expect("get").expect("first start kept");
        assert_eq!((c.calling.as_str(), c.started_ms), ("1", 100));
        assert!(c.recordings.is_empty());
        assert_eq!(db.get_call("nope").expect("get"), None);
    }

    #[test]
    fn a_finished_recording_gets_size_sha_and_duration() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"abc");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 1_000),
            ],
            1_000,
        )
        .expect("start");
        let r = only_recording(&db, "c1");
        assert_eq!(r.state, RecordingState::Recording);
        assert_eq!((r.channels, r.sample_rate), (2, 8000));

        db.apply(&[ended("c1", 9_000), finished("r1", 9_000, 60_000)], 9_500)
            .expect("finish");
        let r = only_recording(&db, "c1");
        assert_eq!(r.state, RecordingState::Finished);
        assert_eq!(r.ended_ms, Some(9_000));
        assert_eq!(r.duration_ms, Some(7_500), "60000 samples at 8 kHz");
        assert_eq!(r.size_bytes, Some(3));
        assert_eq!(
            r.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(r.error, None);
        assert!(path.exists());

        // A second finish changes nothing.
        db.apply(&[finished("r1", 99_000, 1)], 99_000)
            .expect("again");
        assert_eq!(only_recording(&db, "c1").duration_ms, Some(7_500));
    }

    #[test]
    fn a_failed_recording_stays_recording_until_finished() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"partial");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
                StoreEvent::RecordingFailed {
                    recording_id: "r1".into(),
                    at_ms: 500,
                    error: "disk full".into(),
                },
                StoreEvent::RecordingFailed {
                    recording_id: "r1".into(),
                    at_ms: 600,
                    error: "still full".into(),
                },
            ],
            700,
        )
        .expect("fail");
        let r = only_recording(&db, "c1");
        assert_eq!(r.state, RecordingState::Recording);
        assert_eq!(r.error.as_deref(), Some("disk full"));

        let finish = StoreEvent::RecordingFinished {
            recording_id: "r1".into(),
            ended_ms: 2_000,
            samples: 4_000,
            error: Some("closed after failure".into()),
        };
        db.apply(&[finish], 2_000).expect("finish");
        let r = only_recording(&db, "c1");
        assert_eq!(r.state, RecordingState::Finished);
        assert_eq!(r.error.as_deref(), Some("disk full"));
        assert_eq!(r.size_bytes, Some(7));
        assert_eq!(r.duration_ms, Some(500));
    }

    #[test]
    fn mute_spans_follow_the_changes_and_close_at_the_end() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"pcm");
        let mute = |at_ms, channels| StoreEvent::MuteChanged {
            recording_id: "r1".into(),
            at_ms,
            channels,
        };
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 10_000),
                mute(11_000, MuteChannels::LEFT),
                mute(12_000, MuteChannels::BOTH),
                mute(12_500, MuteChannels::BOTH),
                mute(13_000, MuteChannels::NONE),
                mute(13_500, MuteChannels::NONE),
                mute(14_000, MuteChannels::RIGHT),
            ],
            14_000,
        )
        .expect("mutes");
        let open = only_recording(&db, "c1").mutes;
        assert_eq!(
            open.last().map(|span| span.to_ms),
            Some(None),
            "still muted"
        );

        db.apply(&[finished("r1", 15_000, 40_000)], 15_000)
            .expect("finish");
        let spans: Vec<(u8, u64, Option<u64>)> = only_recording(&db, "c1")
            .mutes
            .iter()
            .map(|span| (span.channels.0, span.from_ms, span.to_ms))
            .collect();
        assert_eq!(
            spans,
            vec![
                (1, 1_000, Some(2_000)),
                (3, 2_000, Some(3_000)),
                (2, 4_000, Some(5_000)),
            ]
        );
        // After the file is complete, a mute change is skipped.
        db.apply(&[mute(16_000, MuteChannels::LEFT)], 16_000)
            .expect("late mute");
        assert_eq!(only_recording(&db, "c1").mutes.len(), 3);
    }

    #[test]
    fn an_on_demand_call_nobody_kept_loses_its_recording() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "od.wav", b"voice");
        let op = file(&dir, "op.wav", b"prompt");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::OnDemand, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
                recording("r2", "c1", &op, RecordingOrigin::RecordOperation, 100),
                ended("c1", 5_000),
                finished("r1", 5_000, 40_000),
                finished("r2", 5_000, 39_200),
            ],
            5_100,
        )
        .expect("apply");
        let c = db.get_call("c1").expect("get").expect("call");
        assert_eq!(c.recordings[0].state, RecordingState::Deleted);
        assert_eq!(c.recordings[0].sha256.as_deref().map(str::len), Some(64));
        assert!(!path.exists(), "on-demand file removed");
        assert_eq!(
            c.recordings[1].state,
            RecordingState::Finished,
            "Record op kept"
        );
        assert!(op.exists());
        let audit = db.deletions("c1").expect("deletions");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].recording_id.as_deref(), Some("r1"));
        assert_eq!(audit[0].path.as_deref(), Some(path.as_path()));
        assert_eq!((audit[0].by.as_str(), audit[0].at_ms), ("on-demand", 5_100));
        assert_eq!(audit[0].reason, "on-demand call not kept");
    }

    #[test]
    fn an_on_demand_call_kept_during_the_call_keeps_its_recording() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "od.wav", b"voice");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::OnDemand, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
            ],
            0,
        )
        .expect("start");
        assert_eq!(
            db.keep_call("c1", 1_000).expect("keep"),
            crate::store::KeepOutcome::Kept {
                kept: 0,
                recording: 1
            }
        );
        db.apply(&[ended("c1", 5_000), finished("r1", 5_000, 40_000)], 5_000)
            .expect("finish");
        let c = db.get_call("c1").expect("get").expect("call");
        assert!(c.kept);
        assert_eq!(c.recordings[0].state, RecordingState::Kept);
        assert!(path.exists());
        assert!(db.deletions("c1").expect("deletions").is_empty());
    }

    #[test]
    fn a_call_deleted_while_recording_loses_the_file_when_it_is_finished() {
        let (dir, mut db) = temp_db();
        let path = file(&dir, "r1.wav", b"secret");
        let later = file(&dir, "r2.wav", b"more");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
            ],
            0,
        )
        .expect("start");
        let outcome = db.delete_call("c1", "user:alice", 1_000).expect("delete");
        assert_eq!(
            outcome,
            crate::store::DeleteOutcome {
                deleted_now: 0,
                marked: 1
            }
        );
        assert_eq!(
            only_recording(&db, "c1").state,
            RecordingState::MarkedForDeletion
        );
        assert!(path.exists(), "still being written");

        // A recording that starts after DeleteCall goes too.
        db.apply(
            &[recording(
                "r2",
                "c1",
                &later,
                RecordingOrigin::RecordOperation,
                1_500,
            )],
            1_500,
        )
        .expect("second recording");
        db.apply(
            &[
                ended("c1", 3_000),
                finished("r1", 3_000, 24_000),
                finished("r2", 3_000, 100),
            ],
            3_100,
        )
        .expect("finish");
        let c = db.get_call("c1").expect("get").expect("call");
        assert!(c.delete_requested);
        assert!(c
            .recordings
            .iter()
            .all(|r| r.state == RecordingState::Deleted));
        assert!(!path.exists() && !later.exists());
        let audit = db.deletions("c1").expect("deletions");
        assert_eq!(audit.len(), 2);
        for row in &audit {
            assert_eq!(
                (row.by.as_str(), row.reason.as_str()),
                ("user:alice", "deleted while recording")
            );
            assert_eq!(row.at_ms, 3_100);
        }
    }

    #[test]
    fn a_finished_recording_without_its_file_is_recorded_as_deleted() {
        let (dir, mut db) = temp_db();
        let path = dir.path().join("never-written.wav");
        db.apply(
            &[
                call("c1", "1", "2", RecordPolicy::Always, 0),
                recording("r1", "c1", &path, RecordingOrigin::Policy, 0),
                finished("r1", 1_000, 8_000),
            ],
            1_000,
        )
        .expect("apply");
        let r = only_recording(&db, "c1");
        assert_eq!(r.state, RecordingState::Deleted);
        assert_eq!((r.size_bytes, r.sha256), (None, None));
        let audit = db.deletions("c1").expect("deletions");
        assert_eq!(
            (audit[0].by.as_str(), audit[0].reason.as_str()),
            ("store", "file missing when finished")
        );
    }

    #[test]
    fn a_refused_event_rolls_the_whole_batch_back() {
        let (_dir, mut db) = temp_db();
        crate::store::testing::refuse_party(&db, "boom");
        let party = StoreEvent::PartyAdded {
            call_id: "c1".into(),
            dn: "boom".into(),
            role: "x".into(),
            at_ms: 1,
        };
        let err = db
            .apply(&[call("c1", "1", "2", RecordPolicy::Off, 0), party], 1)
            .expect_err("refused");
        assert!(err.to_string().contains("simulated failure"), "{err}");
        assert_eq!(db.get_call("c1").expect("get"), None, "rolled back");
    }
}
