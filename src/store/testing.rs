//! Test doubles and builders shared by the `store` tests.
//!
//! Owns: a scripted [`RecordingFiles`], temporary databases, event builders.
//! Must not: be compiled outside tests.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempDir;

use super::model::{Direction, RecordPolicy, RecordingFormat, RecordingOrigin, StoreEvent, UnixMs};
use super::sql::{Param, Sql};
use super::{Db, Location, RecordingFiles, RecoveredFile};

/// A [`RecordingFiles`] that answers what it was told per path (and "no script" otherwise),
/// and remembers what it was asked.
#[derive(Default)]
pub(crate) struct ScriptedFiles {
    answers: Mutex<HashMap<PathBuf, Result<RecoveredFile, String>>>,
    asked: Mutex<Vec<PathBuf>>,
}

impl ScriptedFiles {
    pub(crate) fn answer(&self, path: &Path, answer: Result<RecoveredFile, String>) {
        self.answers
            .lock()
            .expect("answers lock")
            .insert(path.to_path_buf(), answer);
    }

    pub(crate) fn asked(&self) -> Vec<PathBuf> {
        self.asked.lock().expect("asked lock").clone()
    }
}

impl RecordingFiles for ScriptedFiles {
    fn recover(&self, path: &Path, _format: RecordingFormat) -> Result<RecoveredFile, String> {
        self.asked
            .lock()
            .expect("asked lock")
            .push(path.to_path_buf());
        self.answers
            .lock()
            .expect("answers lock")
            .get(path)
            .cloned()
            .unwrap_or_else(|| Err("no script".to_string()))
    }
}

/// A fresh database for a test, with a temporary directory for its files: SQLite
/// (`store.db` in the directory), or — when `CALLBRIDGE_TEST_POSTGRES` names a PostgreSQL
/// server (`scripts/with-postgres` starts one and sets it) — a new database there, so the
/// store's tests run unchanged against both.
pub(crate) fn temp_db() -> (TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = reopen(&dir);
    (dir, db)
}

/// The test database of `dir` again (a second connection, or after a drop).
pub(crate) fn reopen(dir: &TempDir) -> Db {
    Db::connect(&location_for(dir.path()), 0).expect("open test db")
}

/// Where the test database of `dir` is: its `store.db`, or a PostgreSQL database named after
/// the directory (created on first use).
pub(crate) fn location_for(dir: &Path) -> Location {
    let Ok(server) = std::env::var("CALLBRIDGE_TEST_POSTGRES") else {
        return Location::Sqlite(dir.join("store.db"));
    };
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    let name = format!("cb_test_{:016x}", hasher.finish());
    // On a thread of its own: the blocking client must not run inside a `#[tokio::test]`.
    let (admin_server, admin_name) = (server.clone(), name.clone());
    std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&admin_server, postgres::NoTls)
            .unwrap_or_else(|e| panic!("CALLBRIDGE_TEST_POSTGRES={admin_server}: {e}"));
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&admin_name],
            )
            .expect("look up the test database")
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {admin_name}"))
                .expect("create the test database");
        }
    })
    .join()
    .expect("test database created");
    Location::Postgres(format!("{server} dbname={name}"))
}

/// Makes the database refuse (as a full disk would) every party row numbered `dn`.
pub(crate) fn refuse_party(db: &Db, dn: &str) {
    let sql = if db.sql.is_postgres() {
        format!(
            "CREATE FUNCTION refuse_party() RETURNS trigger AS $$ BEGIN
                 IF NEW.dn = '{dn}' THEN RAISE EXCEPTION 'simulated failure'; END IF;
                 RETURN NEW;
             END $$ LANGUAGE plpgsql;
             CREATE TRIGGER refuse_party BEFORE INSERT ON parties
                 FOR EACH ROW EXECUTE FUNCTION refuse_party();"
        )
    } else {
        format!(
            "CREATE TRIGGER refuse_party BEFORE INSERT ON parties WHEN NEW.dn = '{dn}'
             BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;"
        )
    };
    db.sql.batch(&sql).expect("refusing trigger");
}

/// Writes a recording file and answers its path.
pub(crate) fn file(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write recording file");
    path
}

/// An inbound call from `calling` to `called`.
pub(crate) fn call(
    call_id: &str,
    calling: &str,
    called: &str,
    policy: RecordPolicy,
    started_ms: UnixMs,
) -> StoreEvent {
    StoreEvent::CallStarted {
        call_id: call_id.to_string(),
        connection: 7,
        direction: Direction::Inbound,
        platform_call_id: Some(format!("sip-{call_id}")),
        native_id: Some(format!("conn-{call_id}")),
        calling: calling.to_string(),
        called: called.to_string(),
        trunk: Some("pstn".to_string()),
        policy,
        started_ms,
    }
}

pub(crate) fn ended(call_id: &str, at_ms: UnixMs) -> StoreEvent {
    StoreEvent::CallEnded {
        call_id: call_id.to_string(),
        at_ms,
        cause: "remote-bye".to_string(),
    }
}

/// A two-channel 8 kHz WAV recording of `call_id`.
pub(crate) fn recording(
    recording_id: &str,
    call_id: &str,
    path: &Path,
    origin: RecordingOrigin,
    started_ms: UnixMs,
) -> StoreEvent {
    StoreEvent::RecordingStarted {
        recording_id: recording_id.to_string(),
        call_id: call_id.to_string(),
        path: path.to_path_buf(),
        format: RecordingFormat::WavPcm16,
        channels: 2,
        sample_rate: 8000,
        origin,
        started_ms,
    }
}

pub(crate) fn finished(recording_id: &str, ended_ms: UnixMs, samples: u64) -> StoreEvent {
    StoreEvent::RecordingFinished {
        recording_id: recording_id.to_string(),
        ended_ms,
        samples,
        error: None,
    }
}

/// The plan of `query` with `params`, one line per step, in the database's own words
/// (SQLite's `EXPLAIN QUERY PLAN` details, PostgreSQL's `EXPLAIN` lines).
pub(crate) fn plan(sql: &Sql, query: &str, params: &[&dyn Param]) -> Vec<String> {
    let (explain, column) = if sql.is_postgres() {
        ("EXPLAIN", 0)
    } else {
        ("EXPLAIN QUERY PLAN", 3)
    };
    sql.query(&format!("{explain} {query}"), params)
        .expect("plan")
        .iter()
        .map(|row| row.get(column))
        .collect::<Result<_, _>>()
        .expect("plan text")
}
