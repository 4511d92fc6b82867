//! The store's database — SQLite by default, PostgreSQL when several nodes share one
//! (`[store] url`): opening it, its settings, the schema and its migrations for each, and the
//! small helpers the other `store` files share (numbers for the schema, measuring and removing
//! recording files).
//!
//! Owns: [`Db`], the one type through which SQL runs, and the migration lists.
//! Must not: decide anything about calls or recordings (`events`, `deletion`, `recovery` do)
//! or be reached from outside `store` other than through `Db`'s methods.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::sql::{args, Sql};
use super::StoreError;

/// How long a statement waits for another process's lock (`callbridge ctl users` and the
/// server share the file) before it fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one step per version: `PRAGMA user_version` (SQLite) or the `schema_version`
/// table (PostgreSQL) is the number of steps applied. Append only; a released step never
/// changes. PostgreSQL runs the same steps in its own words ([`pg_step`]).
const MIGRATIONS: &[&str] = &[SCHEMA_1, SCHEMA_2, SCHEMA_3, SCHEMA_4, SCHEMA_5];

/// The schema version this code writes (the number of migration steps).
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// PostgreSQL advisory lock held while the schema is checked and migrated: nodes starting at
/// once take turns, and the later ones find the work done.
const PG_MIGRATION_LOCK: i64 = 0x6362_7374_6f72_6501;

/// Version 5: a call's numbers are looked up through its parties. Both ends of every call
/// have always been written as its `calling` and `called` parties (at its start), so the
/// indexes on `calls.calling` and `calls.called` held the same numbers a second time — two
/// index entries a call at setup — while the parties' own index on the number alone was used
/// by no query: a search by extension was `calling = ? OR called = ? OR EXISTS (a party)`,
/// which no index serves, so the latest call of an extension (`Last`) read every call in the
/// store. Now `parties_dn` is by number and time, and the searches drive from it (`queries`).
/// Any call whose ends are not yet parties gets them here, so the party list is the whole
/// story of every call before the searches rely on it.
///
/// And the index of ended calls by node (retention's) holds only the ended ones: a call's
/// start no longer adds an entry to it that its end then moves.
const SCHEMA_5: &str = "
DROP INDEX calls_calling;
DROP INDEX calls_called;
DROP INDEX parties_dn;
CREATE INDEX parties_dn ON parties (dn, at_ms);
DROP INDEX calls_node_open;
CREATE INDEX calls_node_ended ON calls (node_id, ended_ms) WHERE ended_ms IS NOT NULL;
INSERT INTO parties (call_id, dn, role, at_ms)
    SELECT call_id, calling, 'calling', started_ms FROM calls WHERE calling <> ''
    ON CONFLICT DO NOTHING;
INSERT INTO parties (call_id, dn, role, at_ms)
    SELECT call_id, called, 'called', started_ms FROM calls WHERE called <> ''
    ON CONFLICT DO NOTHING;
";

/// Version 4: the indexes of the ids a call may lack (a leg without SIP has no platform call
/// id, one without a party no native id, and a call has a meeting only while the agent gateway
/// puts it in one) hold only the calls that have them: an index entry fewer for each id a
/// call's insert lacks (most calls: the meeting). A look-up by one of them (`column = ?`)
/// implies `IS NOT NULL`, so both SQLite and PostgreSQL still use the index.
///
/// And the index on `ended_ms` goes: retention finds ended calls by (node, end) in
/// `calls_node_open`, and the calls still going — all that was ever looked up by `ended_ms`
/// alone — are the whole of the partial `calls_open`, by node and start as `ctl calls
/// --cluster` lists them. A call's end then changes one small index (its entry leaves
/// `calls_open`) instead of moving its entry in a large one.
const SCHEMA_4: &str = "
DROP INDEX calls_platform_call_id;
DROP INDEX calls_native_id;
DROP INDEX calls_meeting_id;
DROP INDEX calls_ended;
CREATE INDEX calls_platform_call_id ON calls (platform_call_id) WHERE platform_call_id IS NOT NULL;
CREATE INDEX calls_native_id ON calls (native_id) WHERE native_id IS NOT NULL;
CREATE INDEX calls_meeting_id ON calls (meeting_id) WHERE meeting_id IS NOT NULL;
CREATE INDEX calls_open ON calls (node_id, started_ms) WHERE ended_ms IS NULL;
";

/// Version 3: the node that owns each call (`[app] node_id`), for a store several nodes share.
const SCHEMA_3: &str = "
ALTER TABLE calls ADD COLUMN node_id INTEGER NOT NULL DEFAULT 0;
CREATE INDEX calls_node_open ON calls (node_id, ended_ms);
";

/// Version 2: the agent gateway's agents (their id is the number they sign in with).
const SCHEMA_2: &str = "
CREATE TABLE agents (
    agent_id      INTEGER PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    inspector     INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL
);
";

/// Version 1: calls, parties, recordings, mute spans, the deletion audit, users.
const SCHEMA_1: &str = "
CREATE TABLE calls (
    call_id             TEXT PRIMARY KEY NOT NULL,
    connection          INTEGER NOT NULL,
    direction           TEXT NOT NULL,
    platform_call_id    TEXT,
    native_id           TEXT,
    meeting_id          TEXT,
    calling             TEXT NOT NULL,
    called              TEXT NOT NULL,
    trunk               TEXT,
    policy              TEXT NOT NULL,
    started_ms          INTEGER NOT NULL,
    answered_ms         INTEGER,
    ended_ms            INTEGER,
    end_cause           TEXT,
    kept                INTEGER NOT NULL DEFAULT 0,
    delete_requested    INTEGER NOT NULL DEFAULT 0,
    delete_requested_by TEXT
);
CREATE INDEX calls_calling ON calls (calling, started_ms);
CREATE INDEX calls_called ON calls (called, started_ms);
CREATE INDEX calls_started ON calls (started_ms);
CREATE INDEX calls_platform_call_id ON calls (platform_call_id);
CREATE INDEX calls_native_id ON calls (native_id);
CREATE INDEX calls_meeting_id ON calls (meeting_id);
CREATE INDEX calls_ended ON calls (ended_ms);

CREATE TABLE parties (
    id      INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    dn      TEXT NOT NULL,
    role    TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
-- A call has a number in a role once; this index also finds a call's parties (and keeps the
-- planner off parties_dn, which a busy number such as a route's makes long).
CREATE UNIQUE INDEX parties_call ON parties (call_id, dn, role);
CREATE INDEX parties_dn ON parties (dn);

CREATE TABLE recordings (
    recording_id TEXT PRIMARY KEY NOT NULL,
    call_id      TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    format       TEXT NOT NULL,
    channels     INTEGER NOT NULL,
    sample_rate  INTEGER NOT NULL,
    origin       TEXT NOT NULL,
    state        TEXT NOT NULL,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER,
    duration_ms  INTEGER,
    size_bytes   INTEGER,
    sha256       TEXT,
    error        TEXT
);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_state ON recordings (state);

CREATE TABLE mutes (
    id           INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL REFERENCES recordings (recording_id) ON DELETE CASCADE,
    channels     INTEGER NOT NULL,
    from_ms      INTEGER NOT NULL,
    to_ms        INTEGER
);
CREATE INDEX mutes_recording ON mutes (recording_id);

-- The audit outlives the call it names: no foreign key.
CREATE TABLE deletions (
    id           INTEGER PRIMARY KEY,
    call_id      TEXT NOT NULL,
    recording_id TEXT,
    path         TEXT,
    at_ms        INTEGER NOT NULL,
    by           TEXT NOT NULL,
    reason       TEXT NOT NULL
);
CREATE INDEX deletions_call ON deletions (call_id);

CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
);
";

/// PostgreSQL's words for a step of [`MIGRATIONS`]: integers are BIGINT (SQLite's INTEGER is
/// 64-bit), row ids are identity columns, and `by` — a reserved word there — is quoted.
/// Derived rather than written twice, so the two schemas cannot drift apart.
fn pg_step(sqlite: &str) -> String {
    sqlite
        .replace(
            "INTEGER PRIMARY KEY,",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,",
        )
        .replace(" INTEGER", " BIGINT")
        .replace("\n    by ", "\n    \"by\" ")
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (created with its directory when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user:password@host/db` or key=value form).
    Postgres(String),
}

impl Location {
    /// For messages: the file, or the server without the password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => describe_url(url),
        }
    }
}

/// A connection string as logged: the password, if any, left out.
fn describe_url(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    postgres::config::Host::Tcp(name) => name.clone(),
                    postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!(
                "postgres://{}@{}/{}",
                config.get_user().unwrap_or("-"),
                hosts.join(","),
                config.get_dbname().unwrap_or("-")
            )
        }
        Err(_) => "postgres (unreadable connection string)".to_string(),
    }
}

/// The database: every statement the store runs is a method of this type (here and in the
/// other files of `store`). Used on the store thread by the server, directly by `ctl`.
pub struct Db {
    pub(super) sql: Sql,
    /// The node whose calls this process writes, recovers and expires (`[app] node_id`).
    pub(super) node: u8,
}

impl Db {
    /// Opens (or creates) the SQLite database at `path`, as node 0. See [`Db::connect`].
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        Db::connect(&Location::Sqlite(path.to_path_buf()), 0)
    }

    /// Opens the store at `location` for node `node` and brings its schema up to date.
    /// Refuses a database written by a newer callbridge. Does not run start-up recovery
    /// (`Store::open` does; `ctl` must not touch recordings). PostgreSQL: call it off any
    /// async runtime (the client blocks).
    pub fn connect(location: &Location, node: u8) -> Result<Db, StoreError> {
        let db = match location {
            Location::Sqlite(path) => Db {
                sql: Sql::Sqlite(open_sqlite(path)?),
                node,
            },
            Location::Postgres(url) => {
                let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
                    StoreError::Database(format!("cannot connect to {}: {e}", describe_url(url)))
                })?;
                Db {
                    sql: Sql::postgres(client),
                    node,
                }
            }
        };
        // Checked before anything is written: a newer database is left exactly as it is.
        refuse_newer(db.schema_version()?)?;
        db.migrate()?;
        Ok(db)
    }

    /// Frees the page cache's unused pages and what else SQLite can (`sqlite3_db_release_memory`),
    /// for when a burst of calls is over: the 32 MiB cache fills as the database grows, its
    /// 4 KiB pages are allocated among the burst's call data, and while they live the pages
    /// around them cannot go back to the kernel (`app::MemoryReturn`). It refills on demand.
    /// PostgreSQL's cache is the server's: nothing to do here.
    pub fn release_memory(&self) -> Result<(), StoreError> {
        match &self.sql {
            Sql::Sqlite(conn) => Ok(conn.release_memory()?),
            Sql::Postgres(_) => Ok(()),
        }
    }

    /// The schema version of the database (the number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        if self.sql.is_postgres() {
            let exists = self.sql.query_one(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'schema_version'",
                args![],
            )?;
            if exists.get::<i64>(0)? == 0 {
                return Ok(0);
            }
            return self
                .sql
                .query_one("SELECT version FROM schema_version", args![])?
                .get(0);
        }
        self.sql.query_one("PRAGMA user_version", args![])?.get(0)
    }

    /// Applies the migrations the database lacks, in one transaction that holds the write lock
    /// (SQLite) or the migration lock (PostgreSQL) from the start, so a second process opening
    /// at the same time waits and then finds the work done.
    fn migrate(&self) -> Result<(), StoreError> {
        let known = SCHEMA_VERSION as usize;
        if self.schema_version()? as usize == known {
            return Ok(());
        }
        let tx = self.sql.write_transaction()?;
        if tx.is_postgres() {
            tx.execute("SELECT pg_advisory_xact_lock(?1)", args![PG_MIGRATION_LOCK])?;
        }
        let found = self.schema_version()?;
        refuse_newer(found)?;
        if tx.is_postgres() && found == 0 {
            tx.batch(
                "CREATE TABLE schema_version (version BIGINT NOT NULL);
                 INSERT INTO schema_version (version) VALUES (0);",
            )?;
        }
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            if tx.is_postgres() {
                tx.batch(&pg_step(sql))?;
            } else {
                tx.batch(sql)?;
            }
            let version = step + 1;
            if tx.is_postgres() {
                tx.execute(
                    "UPDATE schema_version SET version = ?1",
                    args![version as i64],
                )?;
            } else {
                tx.batch(&format!("PRAGMA user_version = {version}"))?;
            }
            tracing::info!(version, "store schema migrated");
        }
        tx.commit()?;
        Ok(())
    }
}

/// WAL pages between two automatic checkpoints (see `open_sqlite`).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_000;

/// Bytes the WAL file is truncated to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Opens an SQLite file with the store's settings (WAL, foreign keys, a 32 MiB page cache).
fn open_sqlite(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|error| StoreError::Directory {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    let conn = super::pcache::connect(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode = wal_mode(&conn)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            mode,
            "SQLite did not switch to WAL; readers may wait for writers"
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoint every 16,000 WAL pages (64 MiB), not SQLite's 1,000: between two checkpoints
    // the same index pages (the tails of the time-ordered keys) are rewritten by every commit,
    // and a checkpoint copies each once. At call-setup rates checkpoints were a quarter of
    // the store's work; `benches/store.rs` measured 71 → 47 µs a call. The WAL file is cut
    // back to 64 MiB after a checkpoint.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // 32 MiB of page cache (the default is 2 MiB): random UUID keys touch pages all over
    // the calls table and its indexes. Its size no longer costs every commit a walk of it
    // (`pcache`, installed above).
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Switches the database to WAL and returns the journal mode it is in. Taking the exclusive
/// lock that the switch needs does not wait through SQLite's busy handler: while another
/// process (a second node or `ctl`, opening the same new file) holds a lock, it is retried here
/// for as long as the busy timeout.
fn wal_mode(conn: &Connection) -> Result<String, StoreError> {
    let give_up = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return Ok(result?),
        }
    }
}

/// A database whose schema is newer than [`MIGRATIONS`] was written by a newer callbridge.
fn refuse_newer(found: u32) -> Result<(), StoreError> {
    let known = SCHEMA_VERSION;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    Ok(())
}

/// A count as the schema stores it (SQLite INTEGER is signed 64-bit; nothing we count gets
/// near its end, so the clamp never changes a real value).
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A path as stored: recording paths are built by callbridge from its config and ids, so they
/// are UTF-8; anything else is stored lossily (and logged), never refused.
pub(super) fn path_text(path: &Path) -> String {
    match path.to_str() {
        Some(text) => text.to_string(),
        None => {
            tracing::warn!(path = %path.display(), "recording path is not UTF-8; stored lossily");
            path.to_string_lossy().into_owned()
        }
    }
}

/// A recording file's size in bytes and SHA-256 (lower-case hex).
pub(super) fn measure(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = hasher.finalize();
    let hex = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok((size, hex))
}

/// Removes recording files whose deletion is committed. A file already gone is what was
/// wanted; another failure is logged (the row says deleted, the file lingers) and not retried.
pub(super) fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "recording file removed"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot remove recording file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::CallQuery;
    use crate::store::testing::{plan, reopen, temp_db};

    /// An SQLite store in a temporary directory, whatever backend the other tests use.
    fn sqlite_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("store.db")).expect("open");
        (dir, db)
    }

    /// Bytes the connection's page cache holds (`SQLITE_DBSTATUS_CACHE_USED`).
    fn cache_used(db: &Db) -> i32 {
        let Sql::Sqlite(conn) = &db.sql else {
            panic!("an SQLite store")
        };
        let (mut current, mut high) = (0, 0);
        // SAFETY: the handle is this open connection's; db_status only reads its counters.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut current,
                &mut high,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        current
    }

    fn pragma<T: crate::store::sql::FromValue>(db: &Db, name: &str) -> T {
        db.sql
            .query_one(&format!("PRAGMA {name}"), args![])
            .and_then(|row| row.get(0))
            .expect("pragma")
    }

    #[test]
    fn released_memory_empties_the_page_cache_and_the_data_stays() {
        use crate::store::model::RecordPolicy;
        use crate::store::testing::{call, ended};
        let (_dir, mut db) = sqlite_db();
        let events: Vec<_> = (0..5_000)
            .flat_map(|n| {
                let id = format!("{n:08x}-5f0e-4c1a-9d2b-{n:012x}");
                [
                    call(&id, "1001", &format!("2{n:04}"), RecordPolicy::Always, n),
                    ended(&id, n + 1),
                ]
            })
            .collect();
        db.apply(&events, 10_000).expect("apply");
        let filled = cache_used(&db);
        assert!(
            filled > 1 << 20,
            "5,000 calls fill over 1 MiB of cache: {filled}"
        );
        db.release_memory().expect("release");
        let released = cache_used(&db);
        assert!(released < filled / 10, "{filled} -> {released}");
        // The cache refills on demand: every call is still there.
        let count: i64 = db
            .sql
            .query_one("SELECT count(*) FROM calls", args![])
            .and_then(|row| row.get(0))
            .expect("count");
        assert_eq!(count, 5_000);
    }

    #[test]
    fn open_creates_the_directory_and_sets_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a/b/store.db");
        let db = Db::open(&path).expect("open");
        assert!(path.exists());
        assert_eq!(pragma::<String>(&db, "journal_mode"), "wal");
        assert_eq!(pragma::<i64>(&db, "foreign_keys"), 1);
        assert_eq!(pragma::<i64>(&db, "synchronous"), 1, "NORMAL");
        assert_eq!(pragma::<i64>(&db, "wal_autocheckpoint"), 16_000);
        assert_eq!(pragma::<i64>(&db, "journal_size_limit"), 64 << 20);
        assert_eq!(
            db.schema_version().expect("version"),
            MIGRATIONS.len() as u32
        );
    }

    #[test]
    fn reopening_keeps_the_data_and_the_version() {
        let (dir, mut db) = temp_db();
        db.add_user("alice", "pw", 1).expect("add");
        drop(db);
        let db = reopen(&dir);
        assert_eq!(db.list_users().expect("list").len(), 1);
        assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn the_ids_a_call_may_lack_are_indexed_only_where_present_and_still_found_by_index() {
        let (_dir, db) = temp_db();
        let sql = &db.sql;
        if sql.is_postgres() {
            // The planner would scan the empty table whatever the index.
            sql.batch("SET enable_seqscan = off")
                .expect("planner setting");
        }
        for column in ["platform_call_id", "native_id", "meeting_id"] {
            let index = format!("calls_{column}");
            let definition: String = if sql.is_postgres() {
                sql.query_one(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = ?1",
                    args![index],
                )
            } else {
                sql.query_one(
                    "SELECT sql FROM sqlite_master WHERE name = ?1",
                    args![index],
                )
            }
            .and_then(|row| row.get(0))
            .expect("the index exists");
            assert!(
                definition.contains(&format!("WHERE ({column} IS NOT NULL)"))
                    || definition.contains(&format!("WHERE {column} IS NOT NULL")),
                "{index} holds only the calls that have {column}: {definition}"
            );
            let plan = plan(
                sql,
                &format!("SELECT call_id FROM calls WHERE {column} = 'x'"),
                args![],
            );
            assert!(
                plan.iter().any(|line| line.contains(&index)),
                "{column} look-up plan: {plan:?}"
            );
        }
        // Without an index on the end alone: what looked calls up by it uses the others.
        let looked_up_by_end = [
            (
                "SELECT call_id FROM calls WHERE ended_ms IS NOT NULL AND ended_ms < 5
                 AND node_id = 0 ORDER BY ended_ms LIMIT 10",
                "calls_node_ended",
            ),
            (
                "SELECT call_id FROM calls WHERE ended_ms IS NULL
                 ORDER BY node_id, started_ms, call_id",
                "calls_open",
            ),
            (
                "SELECT call_id FROM calls WHERE ended_ms IS NULL AND node_id = 0",
                "calls_",
            ),
        ];
        for (query, index) in looked_up_by_end {
            let plan = plan(sql, query, args![]);
            assert!(
                plan.iter().any(|line| line.contains(index)),
                "{query}: {plan:?}"
            );
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        {
            let raw = super::super::pcache::connect(&path).expect("raw open");
            raw.execute_batch(SCHEMA_1).expect("version 1 schema");
            raw.execute_batch(
                "INSERT INTO users (name, password_hash, created_ms) VALUES ('old', 'x', 1);
                 INSERT INTO calls (call_id, connection, direction, calling, called, policy,
                     started_ms) VALUES ('c-old', 1, 'inbound', '1', '2', 'off', 5);",
            )
            .expect("version 1 rows");
            raw.pragma_update(None, "user_version", 1)
                .expect("version 1");
        }
        let mut db = Db::open(&path).expect("migrated");
        assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
        assert_eq!(db.list_users().expect("users")[0].name, "old");
        db.add_agent(1001, "pw", false, 2)
            .expect("the agents table exists");
        let old = db.get_call("c-old").expect("get").expect("the old call");
        assert_eq!(old.node_id, 0, "calls from before version 3 are node 0's");
        // Written without its parties, the call gets its two ends as parties (version 5), and
        // the look-ups by number, which go through the parties, find it.
        let ends: Vec<(&str, &str, i64)> = old
            .parties
            .iter()
            .map(|p| (p.dn.as_str(), p.role.as_str(), p.at_ms))
            .collect();
        assert_eq!(ends, [("1", "calling", 5), ("2", "called", 5)]);
        let by_number = CallQuery {
            extension: Some("2".into()),
            ..CallQuery::default()
        };
        let found = db.find_call(&by_number, 10).expect("find");
        assert_eq!(found.map(|call| call.call_id), Ok("c-old".to_string()));
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let (dir, db) = sqlite_db();
        db.sql
            .batch("PRAGMA user_version = 99")
            .expect("bump version");
        drop(db);
        let err = Db::open(&dir.path().join("store.db"))
            .err()
            .expect("newer schema refused");
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 99,
                    known: SCHEMA_VERSION
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("newer"));
        let raw = super::super::pcache::connect(dir.path().join("store.db")).expect("raw open");
        let version: u32 = raw
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, 99);
    }

    #[test]
    fn two_connections_open_the_same_store() {
        let (dir, _db) = temp_db();
        let second = reopen(&dir);
        assert_eq!(second.schema_version().expect("version"), SCHEMA_VERSION);
    }

    /// Several nodes starting at once on a new store: one migrates, the others wait for it
    /// (SQLite's write lock, PostgreSQL's advisory lock) and find the schema done.
    #[test]
    fn nodes_starting_at_once_migrate_the_store_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = crate::store::testing::location_for(dir.path());
        let starts: Vec<_> = (1..=4u8)
            .map(|node| {
                let location = location.clone();
                std::thread::spawn(move || {
                    Db::connect(&location, node).and_then(|db| db.schema_version())
                })
            })
            .collect();
        for start in starts {
            let version = start.join().expect("no panic").expect("every node opens");
            assert_eq!(version, SCHEMA_VERSION);
        }
    }

    #[test]
    fn postgresql_steps_are_the_sqlite_ones_in_its_words() {
        let pg: Vec<String> = MIGRATIONS.iter().map(|step| pg_step(step)).collect();
        assert!(pg.iter().all(|step| !step.contains("INTEGER")), "{pg:#?}");
        assert!(pg[0].contains("id      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"));
        assert!(
            pg[0]
                .lines()
                .any(|l| l.trim_start().starts_with("\"by\" ") && l.ends_with("TEXT NOT NULL,")),
            "{}",
            pg[0]
        );
        assert!(pg[1].contains("agent_id      BIGINT PRIMARY KEY NOT NULL"));
        assert!(pg[2].contains("node_id BIGINT NOT NULL DEFAULT 0"));
    }

    #[test]
    fn a_connection_string_is_described_without_its_password() {
        let shown = describe_url("postgres://cb:s3cret@db.example:5433/callbridge");
        assert_eq!(shown, "postgres://cb@db.example/callbridge");
        assert!(
            !describe_url("host=/run/postgresql user=cb password=s3cret dbname=x")
                .contains("s3cret")
        );
    }

    #[test]
    fn measure_gives_size_and_lower_case_sha256() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        fs::write(&path, b"abc").expect("write");
        let (size, sha) = measure(&path).expect("measure");
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
