//! The recording store's cost per call, as the store thread pays it at call-setup rates.
//!
//! - `store/call_events/150`: one group-commit batch as the store thread sees at ~3,000 calls
//!   a second (50 ms of writes, `store::GROUP_COMMIT`): 150 calls started, 150 answered and
//!   150 ended, applied in one transaction to an SQLite file that already holds 50,000 calls.
//!   Criterion's "elements" are calls: µs per call = 1 / throughput.
//! - `store/call_events/30`: the same with a fifth of the calls per transaction (the 10 ms
//!   window the store had before): what the longer window saves.
//!
//! - `store/last/…`: the recording API's `status=last` of a number alone (`Db::find_call`, on
//!   the store thread that also writes the call records) in a file of a million ended calls,
//!   100 a second, a third of them to one trunk's number: `last/trunk-quiet` after the
//!   trunk's last call 30,000 others ended (five minutes of calls without it),
//!   `last/caller` a number with 200 calls, the latest among the latest ends.
//! - `store/search/…`: SearchCalls (`Db::search`, one page of 100 and the total) in the same
//!   store: an hour of every call (`search/hour`: 360,000), the trunk's calls in that hour
//!   (`search/trunk-hour`: 120,000) and all of them (`search/trunk-all`): what the store's
//!   reader spends, which no write waits for (`Store::read`).
//!
//! The database is a real file in a temporary directory with the server's settings (WAL,
//! `synchronous = NORMAL`, its checkpoint interval), so WAL writes and checkpoints are in the
//! figure.
//!
//! Run: `cargo bench --bench store -- --measurement-time 5` (`V4=1` for random call ids); the
//! million calls of `last` and `search` take about half a minute to write first.

use std::time::{Duration, Instant};

use callbridge::store::{
    CallQuery, CallStatus, Db, Direction, RecordPolicy, SearchQuery, StoreEvent,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Calls per batch (each with its three events), one measurement each.
const BATCH_SIZES: [usize; 2] = [30, 150];

/// Calls in the database before measuring.
const PREFILL_CALLS: usize = 50_000;

/// A call id as the control plane makes them (UUIDv7); with `V4` in the environment a random
/// one, as the store had before (the comparison in docs/PERFORMANCE.md).
fn call_id() -> String {
    if std::env::var_os("V4").is_some() {
        uuid::Uuid::new_v4().to_string()
    } else {
        uuid::Uuid::now_v7().to_string()
    }
}

/// The events of one batch: `ids.len()` calls (numbered from `first`) started, answered and
/// ended, at `at_ms`.
fn batch(ids: &[String], first: u64, at_ms: i64) -> Vec<StoreEvent> {
    let mut events = Vec::with_capacity(ids.len() * 3);
    for (i, id) in ids.iter().enumerate() {
        let number = first + i as u64;
        events.push(StoreEvent::CallStarted {
            call_id: id.clone(),
            connection: (number % 0xff_ffff) as u32,
            direction: Direction::Inbound,
            platform_call_id: Some(format!("{number}-4242@127.0.0.1")),
            native_id: Some(format!("{:016x}", 0x0190_0000_0000_0000u64 + number)),
            calling: format!("sipp{}", number % 1000),
            called: "echo".to_string(),
            trunk: None,
            policy: RecordPolicy::Off,
            started_ms: at_ms,
        });
    }
    for id in ids {
        events.push(StoreEvent::CallAnswered {
            call_id: id.clone(),
            at_ms,
        });
    }
    for id in ids {
        events.push(StoreEvent::CallEnded {
            call_id: id.clone(),
            at_ms: at_ms + 1,
            cause: "remote-bye".to_string(),
        });
    }
    events
}

fn call_events(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    for batch_calls in BATCH_SIZES {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut db = Db::open(&dir.path().join("callbridge.db")).expect("open store");
        let mut n = 0u64;
        let mut next_batch = || {
            let ids: Vec<String> = (0..batch_calls).map(|_| call_id()).collect();
            n += 1;
            batch(
                &ids,
                n * batch_calls as u64,
                1_764_000_000_000 + n as i64 * 10,
            )
        };
        for _ in 0..PREFILL_CALLS / batch_calls {
            let events = next_batch();
            db.apply(&events, 0).expect("prefill");
        }
        group.throughput(Throughput::Elements(batch_calls as u64));
        group.bench_function(format!("call_events/{batch_calls}"), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    let events = next_batch();
                    let start = Instant::now();
                    db.apply(&events, 0).expect("apply");
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

/// Calls in the store of the `last` and `search` benchmarks, and how many of the latest are
/// not the trunk's.
const LAST_CALLS: u64 = 1_000_000;
const TRUNK_QUIET_CALLS: u64 = 30_000;

/// Call `i` of the `last` store: started at 100 calls a second, a minute or more long; from
/// one of 5,000 callers to the trunk (every third call until the trunk goes quiet) or to one
/// of 7,000 extensions.
fn numbered_call(i: u64) -> [StoreEvent; 2] {
    let id = format!("call-{i:07}");
    let started_ms = 1_764_000_000_000 + i as i64 * 10;
    let called = if i % 3 == 0 && i < LAST_CALLS - TRUNK_QUIET_CALLS {
        "trunk".to_string()
    } else {
        format!("ext{}", i % 7000)
    };
    [
        StoreEvent::CallStarted {
            call_id: id.clone(),
            connection: (i % 0xff_ffff) as u32,
            direction: Direction::Inbound,
            platform_call_id: Some(format!("{i}-4242@127.0.0.1")),
            native_id: None,
            calling: format!("caller{}", i % 5000),
            called,
            trunk: None,
            policy: RecordPolicy::Off,
            started_ms,
        },
        StoreEvent::CallEnded {
            call_id: id,
            at_ms: started_ms + 60_000 + (i % 13) as i64 * 1000,
            cause: "remote-bye".to_string(),
        },
    ]
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(&dir.path().join("callbridge.db")).expect("open store");
    for first in (0..LAST_CALLS).step_by(1000) {
        let events: Vec<StoreEvent> = (first..first + 1000).flat_map(numbered_call).collect();
        db.apply(&events, 0).expect("prefill");
    }
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    for (name, number, expected) in [
        ("last/trunk-quiet", "trunk", "call-0969981"),
        ("last/caller", "caller42", "call-0995042"),
    ] {
        let query = CallQuery {
            extension: Some(number.to_string()),
            statuses: vec![CallStatus::Last],
            ..CallQuery::default()
        };
        let found = db.find_call(&query, 0).expect("find").expect("one call");
        assert_eq!(found.call_id, expected, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| db.find_call(&query, 0).expect("find").expect("one call"))
        });
    }
    // An hour in the middle of the store: 360,000 calls, 120,000 of them the trunk's.
    let hour = (
        1_764_000_000_000 + 500_000 * 10,
        1_764_000_000_000 + 860_000 * 10,
    );
    for (name, number, (from_ms, to_ms), calls) in [
        ("search/hour", None, hour, 360_000),
        ("search/trunk-hour", Some("trunk"), hour, 120_000),
        ("search/trunk-all", Some("trunk"), (0, i64::MAX), 323_334),
    ] {
        let query = SearchQuery {
            from_ms,
            to_ms,
            number: number.map(str::to_string),
            page_len: 100,
            page: 0,
        };
        let (page, total) = db.search(&query).expect("search");
        assert_eq!((page.len(), total), (100, calls), "{name}");
        group.bench_function(name, |b| b.iter(|| db.search(&query).expect("search")));
    }
    group.finish();
}

criterion_group!(benches, call_events, reads);
criterion_main!(benches);
