//! SQLite's page cache, wrapped so that a commit does not walk all of it.
//!
//! At the end of every write transaction SQLite truncates its page cache to the database's size
//! (`pager_end_transaction` → `xTruncate(pages + 1)`), so that no page beyond the end survives a
//! rollback. Its default cache (pcache1) bounds the pages it must drop by the largest key it has
//! held since the last truncate (`iMaxKey`), and when that is more than its hash table's length
//! past the limit it walks every bucket and every cached page. A B-tree balance that puts sibling
//! pages back in order parks one of them for a moment at the lock-byte page's number
//! (`balance_nonroot`: `PENDING_BYTE / page size + 1`, page 262,145 with 4 KiB pages), which no
//! page ever keeps: in any database under 1 GiB every commit in which a balance reordered pages
//! walked the whole cache — the 8,192 pages of our 32 MiB, a fifth of the store thread's time
//! at 2,000 call setups a second (docs/PERFORMANCE.md, "A commit's walk of SQLite's page
//! cache").
//!
//! This wrapper passes every call to SQLite's own cache and keeps a tighter bound beside it
//! ([`Extent`]): the largest key a page was created at or moved to, with the key a page was
//! only parked at (moved to, above that bound) kept apart and forgotten when the page moves on.
//! A truncate reaches the cache only when a page may be at or beyond its limit — after a rollback
//! of pages appended, or a parked page that never moved on — and then it walks what it walks
//! today. Installed once per process, before SQLite initialises ([`install`]).

use rusqlite::ffi;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

/// Where the pages of one cache may be: no page is at a key above `high`, but perhaps the one
/// at `parked`. Only ever an over-estimate: pages that leave the cache (recycled, discarded,
/// shrunk) are not followed, so the bound stays where it was until a truncate.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Extent {
    high: c_uint,
    /// A key above `high` that a page was moved to and has not left: a balance parks one page
    /// at a time and moves it on at once. A second page parked meanwhile raises `high`.
    parked: Option<c_uint>,
}

impl Extent {
    /// A page was fetched with permission to create it, and the cache returned one at `key`.
    pub(crate) fn created(&mut self, key: c_uint) {
        self.high = self.high.max(key);
    }

    /// A page moved from `old` to `new`.
    pub(crate) fn moved(&mut self, old: c_uint, new: c_uint) {
        if self.parked == Some(old) {
            self.parked = None;
        }
        if new <= self.high || self.parked == Some(new) {
            return;
        }
        if self.parked.is_none() {
            self.parked = Some(new);
        } else {
            self.high = new;
            self.parked = self.parked.filter(|&key| key > new);
        }
    }

    /// Whether a page may be at `limit` or beyond: the truncate must reach the cache.
    pub(crate) fn reaches(&self, limit: c_uint) -> bool {
        self.high >= limit || self.parked.is_some_and(|key| key >= limit)
    }

    /// The cache dropped every page at `limit` or beyond.
    pub(crate) fn truncated(&mut self, limit: c_uint) {
        self.high = self.high.min(limit.saturating_sub(1));
        self.parked = self.parked.filter(|&key| key < limit);
    }
}

/// One cache: SQLite's own, and its extent.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    extent: Extent,
}

/// SQLite's default page cache methods, which the wrapper calls.
struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: the methods are plain function pointers and SQLite's `pArg` for its own cache (a
// pointer it never writes through from here); SQLite calls them from any thread.
unsafe impl Send for Methods {}
// SAFETY: as above: read-only after `install`.
unsafe impl Sync for Methods {}

static INNER: OnceLock<Methods> = OnceLock::new();

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    &INNER
        .get()
        .expect("the wrapper's methods are installed only after SQLite's are kept")
        .0
}

/// Installs the wrapper as SQLite's page cache, once per process, before any connection is
/// opened (SQLite takes a page cache only before it initialises). True when it is installed;
/// false when SQLite had already initialised (a connection was opened first), and SQLite's own
/// cache then serves unwrapped. Called by [`connect`], the only way the crate opens a connection.
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let mut own = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
        // SAFETY: GETPCACHE2 writes the configured (or default) methods into the struct given.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, own.as_mut_ptr()) };
        if rc != ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite's page cache not wrapped: already initialised");
            return false;
        }
        // SAFETY: written by SQLite just above.
        let own = unsafe { own.assume_init() };
        if INNER.set(Methods(own)).is_err() {
            return false;
        }
        let wrapper = ffi::sqlite3_pcache_methods2 {
            iVersion: own.iVersion,
            pArg: std::ptr::null_mut(),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            xCreate: Some(create),
            xCachesize: Some(cachesize),
            xPagecount: Some(pagecount),
            xFetch: Some(fetch),
            xUnpin: Some(unpin),
            xRekey: Some(rekey),
            xTruncate: Some(truncate),
            xDestroy: Some(destroy),
            xShrink: Some(shrink),
        };
        // SAFETY: PCACHE2 copies the struct; it fails (MISUSE) once SQLite has initialised.
        let rc = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_PCACHE2,
                &wrapper as *const ffi::sqlite3_pcache_methods2,
            )
        };
        if rc != ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite's page cache not wrapped: already initialised");
        }
        rc == ffi::SQLITE_OK
    })
}

/// Opens an SQLite connection (a file, or `:memory:`) after installing the wrapper: every
/// connection the crate opens goes through here, so none can initialise SQLite before the
/// wrapper is in place (clippy.toml disallows `Connection::open` elsewhere).
pub(crate) fn connect(path: impl AsRef<std::path::Path>) -> rusqlite::Result<rusqlite::Connection> {
    install();
    #[allow(clippy::disallowed_methods)]
    rusqlite::Connection::open(path)
}

/// The wrapper's cache behind a handle SQLite gives back.
///
/// # Safety
/// `cache` must come from [`create`] and not yet be destroyed; SQLite uses a cache from one
/// connection at a time.
unsafe fn cache<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: the caller's contract.
    unsafe { &mut *cache.cast::<Cache>() }
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let own = inner();
    // SAFETY: SQLite's own initialiser with its own argument.
    own.xInit.map_or(ffi::SQLITE_OK, |f| unsafe { f(own.pArg) })
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let own = inner();
    if let Some(f) = own.xShutdown {
        // SAFETY: SQLite's own shutdown with its own argument.
        unsafe { f(own.pArg) }
    }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(f) = inner().xCreate else {
        return std::ptr::null_mut();
    };
    // SAFETY: SQLite's own constructor with SQLite's arguments.
    let own = unsafe { f(page_size, extra, purgeable) };
    if own.is_null() {
        return own;
    }
    Box::into_raw(Box::new(Cache {
        inner: own,
        extent: Extent::default(),
    }))
    .cast()
}

unsafe extern "C" fn cachesize(handle: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: a handle from `create` (SQLite's contract for every method below).
    let cache = unsafe { cache(handle) };
    if let Some(f) = inner().xCachesize {
        // SAFETY: SQLite's own method on its own cache.
        unsafe { f(cache.inner, pages) }
    }
}

unsafe extern "C" fn pagecount(handle: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: a handle from `create`.
    let cache = unsafe { cache(handle) };
    // SAFETY: SQLite's own method on its own cache.
    inner().xPagecount.map_or(0, |f| unsafe { f(cache.inner) })
}

unsafe extern "C" fn fetch(
    handle: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: a handle from `create`.
    let cache = unsafe { cache(handle) };
    let Some(f) = inner().xFetch else {
        return std::ptr::null_mut();
    };
    // SAFETY: SQLite's own method on its own cache.
    let page = unsafe { f(cache.inner, key, create) };
    if create != 0 && !page.is_null() {
        cache.extent.created(key);
    }
    page
}

unsafe extern "C" fn unpin(
    handle: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: a handle from `create`.
    let cache = unsafe { cache(handle) };
    if let Some(f) = inner().xUnpin {
        // SAFETY: SQLite's own method on its own cache and page.
        unsafe { f(cache.inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    handle: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: a handle from `create`.
    let cache = unsafe { cache(handle) };
    if let Some(f) = inner().xRekey {
        // SAFETY: SQLite's own method on its own cache and page.
        unsafe { f(cache.inner, page, old, new) }
    }
    #[cfg(test)]
    if new > cache.extent.high {
        tests::SEEN.with(|seen| seen.borrow_mut().parked += 1);
    }
    cache.extent.moved(old, new);
}

unsafe extern "C" fn truncate(handle: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: a handle from `create`.
    let cache = unsafe { cache(handle) };
    if !cache.extent.reaches(limit) {
        #[cfg(test)]
        tests::SEEN.with(|seen| seen.borrow_mut().skipped += 1);
        return;
    }
    #[cfg(test)]
    tests::SEEN.with(|seen| seen.borrow_mut().passed += 1);
    if let Some(f) = inner().xTruncate {
        // SAFETY: SQLite's own method on its own cache.
        unsafe { f(cache.inner, limit) }
    }
    cache.extent.truncated(limit);
}

unsafe extern "C" fn destroy(handle: *mut ffi::sqlite3_pcache) {
    // SAFETY: a handle from `create`, given back by SQLite once, here.
    let cache = unsafe { Box::from_raw(handle.cast::<Cache>()) };
    if let Some(f) = inner().xDestroy {
        // SAFETY: SQLite's own destructor on its own cache.
        unsafe { f(cache.inner) }
    }
}

unsafe extern "C" fn shrink(handle: *mut ffi::sqlite3_pcache) {
    // SAFETY: a handle from `create`.
    let cache = unsafe { cache(handle) };
    if let Some(f) = inner().xShrink {
        // SAFETY: SQLite's own method on its own cache.
        unsafe { f(cache.inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// What this thread's caches were asked (its connections are used on it only).
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct Seen {
        /// Truncates passed on to SQLite's cache.
        pub(super) passed: u32,
        /// Truncates that had nothing to drop.
        pub(super) skipped: u32,
        /// Pages moved beyond every page created.
        pub(super) parked: u32,
    }

    thread_local! {
        pub(super) static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
    }

    #[test]
    fn a_page_parked_beyond_the_end_and_moved_on_leaves_no_truncate_to_do() {
        // A balance of a 200-page database: new pages appended, then two swapped through the
        // lock-byte page's number.
        let mut extent = Extent::default();
        for key in 1..=202 {
            extent.created(key);
        }
        extent.moved(201, 262_145);
        extent.moved(150, 201);
        extent.moved(262_145, 150);
        assert!(!extent.reaches(203), "the commit's truncate to 202 pages");
        assert!(
            extent.reaches(202),
            "a rollback to 201 pages drops page 202"
        );
    }

    #[test]
    fn a_page_still_parked_is_truncated() {
        let mut extent = Extent::default();
        extent.created(10);
        extent.moved(9, 262_145);
        assert!(extent.reaches(11));
        extent.truncated(11);
        assert!(!extent.reaches(11));
        assert_eq!(extent.high, 10);
    }

    #[test]
    fn a_rollback_of_appended_pages_is_truncated_and_the_bound_follows() {
        let mut extent = Extent::default();
        for key in 1..=50 {
            extent.created(key);
        }
        assert!(
            extent.reaches(41),
            "pages 41-50 appended, then rolled back to 40"
        );
        extent.truncated(41);
        assert!(!extent.reaches(41));
        extent.created(41);
        assert!(extent.reaches(41));
        extent.truncated(0);
        assert_eq!(extent, Extent::default());
    }

    #[test]
    fn a_second_page_parked_before_the_first_moves_on_raises_the_bound() {
        let mut extent = Extent::default();
        extent.created(5);
        extent.moved(1, 300);
        extent.moved(2, 200);
        assert_eq!(extent.high, 200);
        assert_eq!(
            extent.parked,
            Some(300),
            "the first, above the new bound, still followed"
        );
        assert!(extent.reaches(201));
        extent.moved(300, 3);
        assert!(extent.reaches(200), "the second never moved on");
        assert!(!extent.reaches(201));
        extent.moved(4, 100);
        assert_eq!(
            (extent.high, extent.parked),
            (200, None),
            "below the bound: nothing parked"
        );
    }

    #[test]
    fn a_database_on_the_wrapped_cache_commits_without_a_walk_and_rolls_back_whole() {
        assert!(
            install(),
            "a connection was opened before pcache::install: every SQLite open in the crate \
             goes through pcache::connect"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = connect(dir.path().join("t.db")).expect("open");
        conn.pragma_update(None, "cache_size", -32_768)
            .expect("cache");
        conn.execute_batch(
            "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
             CREATE INDEX t_v ON t (v);",
        )
        .expect("schema");
        // Keys in random order split index pages all over the tree, and balances reorder
        // siblings through the parked page.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..40 {
            let tx = conn.unchecked_transaction().expect("begin");
            for _ in 0..200 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                tx.execute(
                    "INSERT INTO t VALUES (?1, ?2)",
                    rusqlite::params![format!("{state:016x}"), state.to_le_bytes().repeat(8)],
                )
                .expect("insert");
            }
            tx.commit().expect("commit");
        }
        // A rollback of appended pages must drop them from the cache: the rows read back are
        // the committed ones.
        let tx = conn.unchecked_transaction().expect("begin");
        for i in 0..2_000 {
            tx.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                rusqlite::params![format!("zz{i:08}"), vec![7u8; 200]],
            )
            .expect("insert");
        }
        tx.rollback().expect("rollback");
        let seen = SEEN.with(|seen| *seen.borrow());
        assert!(
            seen.parked > 0,
            "balances parked pages beyond the end: {seen:?}"
        );
        assert!(
            seen.skipped >= 40,
            "the commits' truncates stop here: {seen:?}"
        );
        assert!(
            (1..=2).contains(&seen.passed),
            "the rollback's truncate (and the schema's) reach the cache: {seen:?}"
        );
        let count: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .expect("count");
        assert_eq!(count, 8_000);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity");
        assert_eq!(check, "ok");
        // And written again after the rollback, into the pages it gave back.
        conn.execute(
            "INSERT INTO t VALUES ('zz', zeroblob(3000))",
            rusqlite::params![],
        )
        .expect("insert after rollback");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity");
        assert_eq!(check, "ok");
    }
}
