//! The recording metadata store: calls, their parties, recordings and mute spans, the deletion
//! audit and the users of the recording API, in one embedded SQLite database — or one
//! PostgreSQL database several nodes share (`[store] url`, docs/CLUSTER.md).
//!
//! Owns: the database file and, in the server, its two connections: the one that writes (on
//! the thread named `store`) and the reader's (`store-reader`, [`Store::read`]); the schema and its migrations; the rules that decide whether a recording file stays
//! or goes (DeleteCall, on-demand, retention) and the removal of those files; start-up recovery
//! of what a killed process left.
//! Must not: make its callers wait on the disk — the control plane hands writes over a queue
//! ([`Store::write`] never blocks) and the recording API's questions ([`Store::ask`]) are answered
//! on the store thread, or, when they read as long as the range they cover (SearchCalls), on
//! the store's reader ([`Store::read`]: its own connection and thread), so that no write waits
//! behind them; let SQL or a database client out of this module (every statement is a
//! [`Db`] method, written once for both databases through `sql`); write recording
//! files (the media layer does, and repairs them through [`RecordingFiles`]).
//!
//! A write's path: control task → [`Store::write`] → the queue → the store thread, which takes
//! what is queued (up to [`MAX_BATCH`] events) → [`Db::apply`], one transaction → the files the
//! rules discard are removed after the commit. A batch that fails is applied again event by
//! event, so one bad event costs only itself; failures are logged and counted
//! ([`Store::stats`]), never fatal.

pub mod model;

mod agents;
mod db;
mod deletion;
mod events;
mod pcache;
mod queries;
mod recovery;
mod retention;
pub(crate) mod sql;
mod users;

#[cfg(test)]
mod testing;

use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use agents::AgentRecord;
pub use db::{Db, Location};
pub use deletion::{DeleteOutcome, KeepOutcome};
pub use model::*;
pub use recovery::RecoveryReport;
pub use users::{StoredPassword, UserRecord};

/// Most events applied in one transaction.
pub const MAX_BATCH: usize = 1000;

/// How long the store thread waits for more writes after the first of a batch before it
/// commits (group commit): at a few thousand calls per second each call's events otherwise
/// arrive one by one, and every one would be a transaction of its own — a WAL frame write
/// and SQLite's per-commit page-cache work each (most of the store thread's CPU in a profile
/// of 3,000 setups per second). A question ([`Store::ask`]) does not wait: it applies what is
/// gathered and is answered at once.
///
/// 50 ms rather than the 10 ms it was: every commit writes the same tail pages of the calls
/// table, its indexes and the parties' (about 45 WAL frames whether it carries 20 calls or
/// 100), so at 2,000 setups a second 10 ms batches wrote ~2.3 frames a call and checkpointed
/// five times as often — the store thread's system time 16–24 µs a call, 2.5–3.7 with 50 ms
/// (its whole share 34–42 → 19–25 µs). What a crash of the process can lose is what was
/// queued and not yet committed: up to this long of call events.
pub const GROUP_COMMIT: Duration = Duration::from_millis(50);

/// How often the store thread removes calls older than the retention period.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Where the database lives and how long calls are kept (built by `app` from the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// The SQLite file (its directory is created when missing) or the PostgreSQL server.
    pub location: Location,
    /// This node (`[app] node_id`): the owner of the calls it writes, the only calls it
    /// recovers and expires in a shared store.
    pub node: u8,
    /// Calls that ended more than this many days ago are removed with their files; 0 keeps
    /// them forever.
    pub retention_days: u32,
}

/// The media layer's repair of a recording file that a killed process left half written.
pub trait RecordingFiles: Send + Sync {
    /// Makes the file at `path` readable (fixes the WAV header sizes, closes the last Ogg page)
    /// and says how long it is; `Err` says why it cannot be.
    fn recover(&self, path: &Path, format: RecordingFormat) -> Result<RecoveredFile, String>;
}

/// What a repaired recording file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredFile {
    /// Samples per channel.
    pub frames: u64,
    /// Samples per second.
    pub rate: u32,
}

/// Why the store could not do what was asked.
#[derive(Debug)]
pub enum StoreError {
    /// The database's directory could not be created.
    Directory { path: PathBuf, error: io::Error },
    /// The database refused (the message says why): a full disk, a locked or damaged file, a
    /// constraint, a row this code cannot read.
    Database(String),
    /// The database was written by a newer callbridge (its schema version is higher than the
    /// newest this code knows); nothing was changed.
    SchemaTooNew { found: u32, known: u32 },
    /// No call has this id.
    UnknownCall(String),
    /// A user with this name exists already.
    UserExists(String),
    /// No user has this name.
    UnknownUser(String),
    /// A user name must be 1 to 64 characters of `A-Z a-z 0-9 . _ @ -`.
    InvalidUserName(String),
    /// An agent with this id exists already.
    AgentExists(u32),
    /// No agent has this id.
    UnknownAgent(u32),
    /// An agent id is 101 to 999999.
    InvalidAgentId(i64),
    /// A password must not be empty.
    EmptyPassword,
    /// Hashing a password failed (the message says why).
    PasswordHash(String),
    /// The store thread could not be started.
    Spawn(io::Error),
    /// The store thread has stopped, or the request panicked on it: there is no answer.
    Stopped,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory { path, error } => {
                write!(f, "cannot create directory {}: {error}", path.display())
            }
            Self::Database(message) => write!(f, "database: {message}"),
            Self::SchemaTooNew { found, known } => write!(
                f,
                "database schema version {found} is newer than this callbridge knows ({known}); \
                 upgrade callbridge or use another database file"
            ),
            Self::UnknownCall(call_id) => write!(f, "no call {call_id:?}"),
            Self::UserExists(name) => write!(f, "user {name:?} exists already"),
            Self::UnknownUser(name) => write!(f, "no user {name:?}"),
            Self::InvalidUserName(name) => write!(
                f,
                "invalid user name {name:?}: 1 to 64 characters of A-Z a-z 0-9 . _ @ -"
            ),
            Self::AgentExists(id) => write!(f, "agent {id} exists already"),
            Self::UnknownAgent(id) => write!(f, "no agent {id}"),
            Self::InvalidAgentId(id) => write!(f, "invalid agent id {id}: 101 to 999999"),
            Self::EmptyPassword => f.write_str("the password is empty"),
            Self::PasswordHash(message) => write!(f, "password hashing: {message}"),
            Self::Spawn(error) => write!(f, "cannot start the store thread: {error}"),
            Self::Stopped => f.write_str("the store thread has stopped"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Directory { error, .. } | Self::Spawn(error) => Some(error),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Database(error.to_string())
    }
}

/// A handle on the store thread: cheap to clone, one per user (control plane, recording API,
/// metrics). The thread ends once every handle is dropped.
#[derive(Clone)]
pub struct Store {
    /// The store thread's queue, writes and questions in the order they were handed over.
    jobs: mpsc::Sender<Job>,
    /// The reader thread's queue ([`Store::read`]).
    reads: mpsc::Sender<Read>,
    /// The store thread, unparked by a question: while it gathers a batch it sleeps through
    /// writes (see [`Worker::drain`]) but must answer a question at once.
    thread: thread::Thread,
    counters: Arc<Counters>,
}

/// The store thread and the reader thread, to wait for at shutdown.
pub struct StoreThread {
    handle: JoinHandle<()>,
    reader: JoinHandle<()>,
}

/// The store's counters at one moment, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Events written to the database (including events for unknown ids, logged and skipped).
    pub writes_applied: u64,
    /// Events the database refused (or that were handed over after the thread stopped).
    pub writes_failed: u64,
    /// Events handed over and not yet taken by the store thread.
    pub queued: u64,
    /// Write transactions committed (`writes_applied / batches` is the batching achieved).
    pub batches: u64,
}

impl Store {
    /// Opens (or creates) the database, migrates it, recovers what a killed process left
    /// (recordings still being written, calls with no end), and starts the `store` thread,
    /// which also removes calls older than `retention_days` at once and then every hour.
    pub fn open(
        settings: StoreSettings,
        files: Arc<dyn RecordingFiles>,
    ) -> Result<(Store, StoreThread), StoreError> {
        let (jobs, queue) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let (location, node) = (settings.location.clone(), settings.node);
        let worker_counters = Arc::clone(&counters);
        let retention_days = settings.retention_days;
        let handle = spawn_with_db(
            "store",
            move || open_and_recover(&settings, files.as_ref()),
            move |db| {
                let worker = Worker {
                    db,
                    queue,
                    counters: worker_counters,
                    retention_days,
                };
                worker.run();
            },
        )?;
        // The reader's connection is opened once the store thread has migrated the schema.
        let (reads, read_queue) = mpsc::channel::<Read>();
        let reader = spawn_with_db(
            "store-reader",
            move || Db::connect(&location, node),
            move |db| {
                while let Ok(read) = read_queue.recv() {
                    if panic::catch_unwind(AssertUnwindSafe(|| read(&db))).is_err() {
                        // The reply sender was dropped as it unwound: the reader gets `Stopped`.
                        tracing::error!("store read panicked");
                    }
                }
            },
        );
        let reader = match reader {
            Ok(reader) => reader,
            Err(error) => {
                drop(jobs);
                let _ = handle.join();
                return Err(error);
            }
        };
        let store = Store {
            jobs,
            reads,
            thread: handle.thread().clone(),
            counters,
        };
        Ok((store, StoreThread { handle, reader }))
    }

    /// Hands `event` to the store thread. Never blocks; applied in order with the other writes.
    pub fn write(&self, event: StoreEvent) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(Job::Write(event)).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("store thread stopped; write dropped");
        }
    }

    /// Runs `f` on the store thread once the writes handed over before it are applied, and
    /// answers what it returns. Does not block the async task; a slow `f` delays every write.
    pub async fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send_ask(move |db| {
            // The asker may have given up (its task cancelled): nobody to answer then.
            let _ = reply.send(f(db));
        })?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs `f` on the store's reader — a connection and a thread of its own — once the writes
    /// handed over before it are committed, and answers what it returns: `f` reads what
    /// [`Store::ask`] would, while the writes after it, and the other questions, go on. For
    /// reads as long as the range they cover (SearchCalls of a trunk's number over an hour
    /// reads a hundred thousand calls: a third of a second the store thread would not write).
    /// Only reads: the store thread alone writes and decides.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // The store thread commits what it gathered before it answers a question.
        self.ask(|_| Ok(())).await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.reads
            .send(Box::new(move |db: &Db| {
                let _ = reply.send(f(db));
            }))
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// [`Store::ask`] for callers outside an async runtime: blocks the calling thread until
    /// the answer comes. Never call it from `f` itself (the store thread would wait on itself).
    pub fn ask_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send_ask(move |db| {
            let _ = reply.send(f(db));
        })?;
        answer.recv().map_err(|_| StoreError::Stopped)?
    }

    /// The counters now.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            writes_applied: self.counters.applied.load(Ordering::Relaxed),
            writes_failed: self.counters.failed.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
        }
    }

    fn send_ask(&self, f: impl FnOnce(&mut Db) + Send + 'static) -> Result<(), StoreError> {
        self.jobs
            .send(Job::Ask(Box::new(f)))
            .map_err(|_| StoreError::Stopped)?;
        // The thread may be gathering writes, asleep until its batch's deadline.
        self.thread.unpark();
        Ok(())
    }
}

impl StoreThread {
    /// Waits until every [`Store`] handle is dropped and the writes queued before are applied.
    pub fn join(self) -> Result<(), StoreError> {
        let reader = self.reader.join();
        self.handle.join().map_err(|_| StoreError::Stopped)?;
        reader.map_err(|_| StoreError::Stopped)
    }
}

/// Starts thread `name`, which opens the database with `open` — on itself: the PostgreSQL
/// client blocks and must not run on the async runtime `Store::open` may be called from — and
/// then runs `work` with it. Returns once the database is open, or with why it is not.
fn spawn_with_db(
    name: &str,
    open: impl FnOnce() -> Result<Db, StoreError> + Send + 'static,
    work: impl FnOnce(Db) + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    let (opened_tx, opened) = mpsc::sync_channel(1);
    let handle = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || match open() {
            Ok(db) => {
                let _ = opened_tx.send(Ok(()));
                work(db);
            }
            Err(error) => {
                let _ = opened_tx.send(Err(error));
            }
        })
        .map_err(StoreError::Spawn)?;
    match opened.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(error)) => {
            let _ = handle.join();
            Err(error)
        }
        Err(_) => {
            let _ = handle.join();
            Err(StoreError::Database(format!(
                "the {name} thread failed while opening"
            )))
        }
    }
}

/// Opens the database and runs start-up recovery (on the store thread).
fn open_and_recover(
    settings: &StoreSettings,
    files: &dyn RecordingFiles,
) -> Result<Db, StoreError> {
    let mut db = Db::connect(&settings.location, settings.node)?;
    let report = db.recover(files, now_ms())?;
    if report != RecoveryReport::default() {
        tracing::info!(
            calls_closed = report.calls_closed,
            recordings_recovered = report.recordings_recovered,
            recordings_unrecoverable = report.recordings_unrecoverable,
            "store recovered after an unclean stop"
        );
    }
    Ok(db)
}

/// The time now, as the store records it.
pub(crate) fn now_ms() -> UnixMs {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// A read for the reader thread.
type Read = Box<dyn FnOnce(&Db) + Send>;

/// What the store thread is handed, in order.
enum Job {
    Write(StoreEvent),
    Ask(Box<dyn FnOnce(&mut Db) + Send>),
}

/// Shared by the handles (which count what they queue) and the thread.
#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
    batches: AtomicU64,
    /// Times the store thread woke while gathering a batch (tests count them: whatever the
    /// database does meanwhile, a PostgreSQL round trip included).
    #[cfg(test)]
    gather_wakes: AtomicU64,
}

/// The store thread's state.
struct Worker {
    db: Db,
    queue: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
    /// 0 keeps calls forever.
    retention_days: u32,
}

impl Worker {
    fn run(mut self) {
        let mut next_expiry = Instant::now();
        loop {
            if Instant::now() >= next_expiry {
                self.expire();
                next_expiry = Instant::now() + RETENTION_EVERY;
            }
            let wait = next_expiry.saturating_duration_since(Instant::now());
            match self.queue.recv_timeout(wait) {
                Ok(job) => self.drain(job),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::debug!("store thread stopped: every handle dropped");
    }

    /// Takes what is queued after `first`, and what arrives within [`GROUP_COMMIT`] of it, up
    /// to a full batch: writes are gathered into one transaction, and a question first applies
    /// the writes before it and is answered at once.
    ///
    /// While it gathers, the thread sleeps until the batch's deadline rather than waiting on
    /// the queue: a writer then hands its event over without waking it (a futex wake-up and
    /// two context switches per event were a fifth of the store's share of a call's setup).
    /// A question unparks it ([`Store::send_ask`]).
    fn drain(&mut self, first: Job) {
        let deadline = Instant::now() + GROUP_COMMIT;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Write(event) => {
                    self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                    batch.push(event);
                }
                Job::Ask(f) => {
                    self.apply(std::mem::take(&mut batch));
                    self.answer(f);
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = self.next_job(deadline, !batch.is_empty());
        }
        self.apply(batch);
    }

    /// The next job of the batch being gathered: what is queued, or — when `gathering` and
    /// nothing is — what is queued once the thread wakes (the deadline, or a question's
    /// unpark); `None` ends the batch.
    fn next_job(&self, deadline: Instant, gathering: bool) -> Option<Job> {
        loop {
            match self.queue.try_recv() {
                Ok(job) => return Some(job),
                Err(mpsc::TryRecvError::Empty) if gathering => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    // Returns early on an unpark (or spuriously): look again.
                    thread::park_timeout(left);
                    #[cfg(test)]
                    self.counters.gather_wakes.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => return None,
            }
        }
    }

    fn apply(&mut self, batch: Vec<StoreEvent>) {
        if batch.is_empty() {
            return;
        }
        let error = match self.apply_guarded(&batch) {
            Ok(()) => {
                self.count_applied(batch.len());
                return;
            }
            Err(error) => error,
        };
        tracing::warn!(%error, events = batch.len(), "store batch failed; applying it event by event");
        for event in &batch {
            match self.apply_guarded(std::slice::from_ref(event)) {
                Ok(()) => self.count_applied(1),
                Err(error) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, event = event.kind(), "store write failed");
                }
            }
        }
    }

    /// A panic in the database code is a bug, but it must not take the store thread (and every
    /// later write) with it: the transaction rolls back as it unwinds.
    fn apply_guarded(&mut self, events: &[StoreEvent]) -> Result<(), StoreError> {
        let db = &mut self.db;
        panic::catch_unwind(AssertUnwindSafe(|| db.apply(events, now_ms())))
            .unwrap_or_else(|_| Err(StoreError::Database("panic while applying".to_string())))
    }

    fn answer(&mut self, f: Box<dyn FnOnce(&mut Db) + Send>) {
        let db = &mut self.db;
        if panic::catch_unwind(AssertUnwindSafe(|| f(db))).is_err() {
            // The reply sender was dropped as it unwound: the asker gets `Stopped`.
            tracing::error!("store request panicked");
        }
    }

    fn expire(&mut self) {
        if self.retention_days == 0 {
            return;
        }
        match self.db.expire(now_ms(), self.retention_days) {
            Ok(0) => {}
            Ok(calls) => tracing::info!(calls, days = self.retention_days, "expired old calls"),
            Err(error) => tracing::warn!(%error, "retention run failed; retrying in an hour"),
        }
    }

    fn count_applied(&self, events: usize) {
        let events = u64::try_from(events).unwrap_or(u64::MAX);
        self.counters.applied.fetch_add(events, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{RecordPolicy, RecordingOrigin, RecordingState};
    use crate::store::testing::{call, ended, file, recording, ScriptedFiles};

    fn settings(dir: &tempfile::TempDir, retention_days: u32) -> StoreSettings {
        StoreSettings {
            location: crate::store::testing::location_for(dir.path()),
            node: 0,
            retention_days,
        }
    }

    fn connect(dir: &tempfile::TempDir) -> Db {
        Db::connect(&settings(dir, 0).location, 0).expect("db")
    }

    fn open(dir: &tempfile::TempDir) -> (Store, StoreThread) {
        Store::open(settings(dir, 0), Arc::new(ScriptedFiles::default())).expect("open store")
    }

    fn party(call_id: &str, dn: &str) -> StoreEvent {
        StoreEvent::PartyAdded {
            call_id: call_id.into(),
            dn: dn.into(),
            role: "transfer-target".into(),
            at_ms: 1,
        }
    }

    #[test]
    fn the_handle_can_live_in_shared_async_state() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<Store>();
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        send(&store.ask(|db| db.get_call("c1")));
        drop(store);
        thread.join().expect("join");
    }

    /// A question, and a read on the store's reader, see the writes handed over before them;
    /// their errors come back.
    #[tokio::test]
    async fn an_ask_and_a_read_see_the_writes_handed_over_before_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        store.write(call("c1", "1001", "2002", RecordPolicy::Off, 1_000));
        store.write(ended("c1", 2_000));
        let c1 = store
            .ask(|db| db.get_call("c1"))
            .await
            .expect("ask")
            .expect("the call");
        assert_eq!(c1.ended_ms, Some(2_000));
        let stats = store.stats();
        assert_eq!(
            (stats.writes_applied, stats.writes_failed, stats.queued),
            (2, 0, 0)
        );
        let err = store
            .ask(|db| db.delete_call("nope", "user:a", 1))
            .await
            .expect_err("the asker's error comes back");
        assert!(matches!(err, StoreError::UnknownCall(_)));
        store.write(call("c2", "1001", "2002", RecordPolicy::Off, 3_000));
        let search = crate::store::model::SearchQuery {
            from_ms: 0,
            to_ms: 10_000,
            number: Some("2002".into()),
            page_len: 10,
            page: 0,
        };
        let (calls, total) = store
            .read(move |db| db.search(&search))
            .await
            .expect("read");
        assert_eq!(total, 2);
        assert_eq!(calls[0].call_id, "c2");
        let err = store
            .read(|_| Err::<(), _>(StoreError::UnknownCall("c9".into())))
            .await
            .expect_err("the reader's error comes back");
        assert!(matches!(err, StoreError::UnknownCall(_)));
        drop(store);
        thread.join().expect("join");
    }

    /// While a read takes its time on the reader, the store thread goes on writing and
    /// answering: a write and a question after it are done before the read ends. (On the store
    /// thread, the read would have held them up.)
    #[tokio::test]
    async fn a_long_read_holds_up_no_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        let (release, gate) = mpsc::channel::<()>();
        let (started_tx, started) = mpsc::channel::<()>();
        let reading = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .read(move |db| {
                        started_tx.send(()).expect("started");
                        gate.recv().expect("released");
                        db.get_call("c1")
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(5)))
            .await
            .expect("task")
            .expect("the read started");
        store.write(call("c1", "1001", "2002", RecordPolicy::Off, 1_000));
        let written =
            tokio::time::timeout(Duration::from_secs(5), store.ask(|db| db.get_call("c1")))
                .await
                .expect("the store thread answers while the read goes on")
                .expect("ask");
        assert!(written.is_some());
        assert!(!reading.is_finished());
        release.send(()).expect("release");
        reading.await.expect("task").expect("read");
        drop(store);
        thread.join().expect("join");
    }

    /// Calls started between 0 and 10 s, as the store's search counts them.
    fn calls_stored(store: &Store) -> u64 {
        store
            .ask_blocking(|db| {
                Ok(db
                    .search(&crate::store::model::SearchQuery {
                        from_ms: 0,
                        to_ms: 10_000,
                        number: None,
                        page_len: 1,
                        page: 0,
                    })?
                    .1)
            })
            .expect("count")
    }

    #[test]
    fn queued_writes_are_applied_in_batches_of_at_most_a_thousand() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        // Hold the store thread in a question while 2,500 writes queue up behind it.
        let (started, wait_started) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let blocker = {
            let store = store.clone();
            thread::spawn(move || {
                store.ask_blocking(move |_db| {
                    started.send(()).expect("test waits");
                    wait_release.recv().expect("test releases");
                    Ok(())
                })
            })
        };
        wait_started.recv().expect("blocker runs");
        for n in 0..2_500 {
            store.write(call(&format!("c{n}"), "1", "2", RecordPolicy::Off, n));
        }
        assert_eq!(store.stats().queued, 2_500);
        release.send(()).expect("release");
        blocker
            .join()
            .expect("blocker thread")
            .expect("blocker answer");
        let count = calls_stored(&store);
        assert_eq!(count, 2_500);
        let stats = store.stats();
        assert_eq!(stats.writes_applied, 2_500);
        assert_eq!(stats.batches, 3, "1,000 + 1,000 + 500");
        assert_eq!(stats.queued, 0);
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn writes_arriving_one_by_one_are_committed_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        // Twenty writes 1 ms apart: without group commit the idle store thread would commit
        // each on its own (20 batches); with it, those within GROUP_COMMIT of a batch's first
        // go together. Half as many batches leaves room for a slow scheduler.
        for n in 0..20 {
            store.write(call(&format!("c{n}"), "1", "2", RecordPolicy::Off, n));
            thread::sleep(Duration::from_millis(1));
        }
        let count = calls_stored(&store);
        assert_eq!(count, 20);
        let stats = store.stats();
        assert_eq!(stats.writes_applied, 20);
        assert!(stats.batches <= 10, "{} batches", stats.batches);
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn writes_while_a_batch_gathers_do_not_wake_the_store_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        // Forty writes 0.5 ms apart span two or three gathering windows. Were each write to
        // wake the thread (a wait on the queue), it would wake once per write.
        for n in 0..40 {
            store.write(call(&format!("c{n}"), "1", "2", RecordPolicy::Off, n));
            thread::sleep(Duration::from_micros(500));
        }
        // The question wakes it at once, whatever its deadline.
        assert_eq!(calls_stored(&store), 40);
        let wakes = store.counters.gather_wakes.load(Ordering::Relaxed);
        assert!(wakes < 20, "{wakes} wake-ups for 40 writes");
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn a_refused_write_costs_only_itself_and_the_thread_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = connect(&dir);
            crate::store::testing::refuse_party(&db, "boom");
        }
        let (store, thread) = open(&dir);
        store.write(call("a", "1", "2", RecordPolicy::Off, 0));
        store.write(party("a", "boom"));
        store.write(ended("unknown", 5));
        store.write(call("b", "3", "4", RecordPolicy::Off, 0));
        let (a, b) = store
            .ask_blocking(|db| Ok((db.get_call("a")?, db.get_call("b")?)))
            .expect("ask");
        assert!(
            a.is_some() && b.is_some(),
            "the batch's other events applied"
        );
        let stats = store.stats();
        assert_eq!((stats.writes_applied, stats.writes_failed), (3, 1));

        store.write(party("a", "3003"));
        let parties = store
            .ask_blocking(|db| Ok(db.get_call("a")?.map(|c| c.parties.len())))
            .expect("still answering");
        assert_eq!(parties, Some(3));
        assert_eq!(store.stats().writes_failed, 1);
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn a_panicking_question_does_not_stop_the_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        let answer: Result<(), StoreError> = store.ask_blocking(|_db| panic!("bug in a question"));
        assert!(matches!(answer, Err(StoreError::Stopped)));
        store.write(call("c1", "1", "2", RecordPolicy::Off, 0));
        assert!(store
            .ask_blocking(|db| db.get_call("c1"))
            .expect("ask")
            .is_some());
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn dropping_every_handle_ends_the_thread_after_the_queued_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, thread) = open(&dir);
        let second = store.clone();
        for n in 0..100 {
            second.write(call(&format!("c{n}"), "1", "2", RecordPolicy::Off, n));
        }
        drop(store);
        drop(second);
        thread.join().expect("join");
        let db = connect(&dir);
        assert!(db.get_call("c99").expect("get").is_some());
    }

    #[test]
    fn open_recovers_and_applies_retention_at_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = file(&dir, "r.wav", b"pcm");
        let day = 86_400_000;
        let now = now_ms();
        {
            let mut db = connect(&dir);
            db.apply(
                &[
                    call("old", "1", "2", RecordPolicy::Off, now - 10 * day),
                    ended("old", now - 10 * day),
                    call("crashed", "1", "2", RecordPolicy::Always, now - 1_000),
                    recording("r", "crashed", &path, RecordingOrigin::Policy, now - 1_000),
                ],
                now,
            )
            .expect("before the crash");
        }
        let files = Arc::new(ScriptedFiles::default());
        files.answer(
            &path,
            Ok(RecoveredFile {
                frames: 8_000,
                rate: 8_000,
            }),
        );
        let (store, thread) = Store::open(settings(&dir, 7), files.clone()).expect("open");
        assert_eq!(files.asked(), vec![path.clone()]);
        let (old, crashed) = store
            .ask_blocking(|db| Ok((db.get_call("old")?, db.get_call("crashed")?)))
            .expect("ask");
        assert_eq!(old, None, "expired at start");
        let crashed = crashed.expect("recent call kept");
        assert_eq!(crashed.end_cause.as_deref(), Some("restart"));
        assert_eq!(crashed.recordings[0].state, RecordingState::Finished);
        assert_eq!(crashed.recordings[0].duration_ms, Some(1_000));
        drop(store);
        thread.join().expect("join");
    }

    #[test]
    fn a_newer_database_is_refused_by_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = connect(&dir);
            let bump = if db.sql.is_postgres() {
                format!(
                    "UPDATE schema_version SET version = {}",
                    db::SCHEMA_VERSION + 1
                )
            } else {
                format!("PRAGMA user_version = {}", db::SCHEMA_VERSION + 1)
            };
            db.sql.batch(&bump).expect("bump");
        }
        let result = Store::open(settings(&dir, 0), Arc::new(ScriptedFiles::default()));
        assert!(matches!(
            result.err(),
            Some(StoreError::SchemaTooNew { found, known })
                if found == db::SCHEMA_VERSION + 1 && known == db::SCHEMA_VERSION
        ));
    }
}
