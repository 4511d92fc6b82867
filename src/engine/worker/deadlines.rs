//! One worker's session deadlines: a timing wheel of 1 ms buckets for those due within
//! [`WHEEL_MS`], a heap for the farther ones.
//!
//! Owns: each slot's one live deadline (when, and the generation of the connection it is for),
//! and the entries that find them: a bucket per millisecond of the wheel's span, and a binary
//! heap for deadlines beyond it (RTCP reports, timeouts of sessions that do not tick).
//! Must not: read the clock (`now` is an argument), touch the connections (the worker runs what
//! [`Deadlines::take_due`] hands it), or allocate once its buckets have grown to the worker's
//! largest tick group (they keep their capacity).
//!
//! Why not one heap: sessions tick on a few grids (`TICK_GROUPS` per worker), so each tick
//! makes hundreds of sessions due at the same instant. A heap popped and pushed every one of
//! them (2 % of a worker's time at 3,000 echo calls, `perf`), where the wheel appends each
//! to the bucket of its next tick and takes a whole bucket at once — and the list of what is due
//! lets the worker fetch the next connections' memory while it runs the current one.
//!
//! An entry is stale when its slot's live deadline is no longer the one it was made for (moved,
//! run, or the slot closed and reused): stale entries are dropped when their bucket is taken
//! (within [`WHEEL_MS`]) or when they come out of the heap; checking costs a read of `live`,
//! not of the connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Span of the wheel in 1 ms buckets: two 20 ms ticks, so the next tick of a session at 20 or
/// 30 ms a packet lands in the wheel, and a tick group at 20 ms only ever uses two buckets
/// (each keeps the capacity of a quarter of the worker's calls: 24 bytes an entry). Ticks 40
/// or 60 ms apart go through the heap.
pub(super) const WHEEL_MS: u64 = 40;
const BUCKET: Duration = Duration::from_millis(1);

/// A slot's live deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    at: Instant,
    /// The low 32 bits of the connection's generation: tells a reused slot's entries apart.
    generation: u32,
}

/// One entry of a bucket.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    slot: u32,
    generation: u32,
}

/// The session deadlines of one worker's slots.
pub(super) struct Deadlines {
    /// The instant bucket index 0 starts at: indices count milliseconds from it.
    origin: Instant,
    /// Index of the earliest bucket that may hold entries; every wheel entry's index is in
    /// `cursor .. cursor + WHEEL_MS`.
    cursor: u64,
    /// Bucket `index % WHEEL_MS` holds the entries of index `index`.
    buckets: Box<[Vec<Entry>]>,
    /// The earliest `at` of each bucket's entries (stale ones included), `None` when empty.
    earliest: Box<[Option<Instant>]>,
    /// Deadlines at or beyond `cursor + WHEEL_MS` when they were set, earliest first.
    far: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Each slot's live deadline.
    live: Vec<Option<Live>>,
}

impl Deadlines {
    pub(super) fn new(origin: Instant) -> Deadlines {
        Deadlines {
            origin,
            cursor: 0,
            buckets: (0..WHEEL_MS).map(|_| Vec::new()).collect(),
            earliest: vec![None; WHEEL_MS as usize].into_boxed_slice(),
            far: BinaryHeap::new(),
            live: Vec::new(),
        }
    }

    /// Makes `at` the deadline of `slot` (for the connection of `generation`), replacing the
    /// one it had.
    pub(super) fn set(&mut self, slot: usize, generation: u64, at: Instant) {
        let generation = generation as u32;
        let live = Live { at, generation };
        if slot >= self.live.len() {
            self.live.resize(slot + 1, None);
        }
        if self.live[slot] == Some(live) {
            return; // already there
        }
        self.live[slot] = Some(live);
        let index = self.index(at).max(self.cursor);
        if index >= self.cursor + WHEEL_MS {
            self.far.push(Reverse((at, slot as u32, generation)));
            return;
        }
        let bucket = (index % WHEEL_MS) as usize;
        self.buckets[bucket].push(Entry {
            at,
            slot: slot as u32,
            generation,
        });
        let earliest = &mut self.earliest[bucket];
        *earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }

    /// Makes `at` the deadline of `slot` if it is earlier than the one it has (or it has none).
    pub(super) fn set_if_earlier(&mut self, slot: usize, generation: u64, at: Instant) {
        match self.live.get(slot).copied().flatten() {
            Some(live) if live.generation == generation as u32 && live.at <= at => {}
            _ => self.set(slot, generation, at),
        }
    }

    /// Forgets the deadline of a slot whose connection closed or left.
    pub(super) fn clear(&mut self, slot: usize) {
        if let Some(live) = self.live.get_mut(slot) {
            *live = None;
        }
    }

    /// The live deadline of `slot`.
    #[cfg(test)]
    pub(super) fn get(&self, slot: usize) -> Option<Instant> {
        self.live.get(slot).copied().flatten().map(|live| live.at)
    }

    /// The earliest deadline held, stale ones included (waking for one finds nothing to run).
    pub(super) fn next(&self) -> Option<Instant> {
        let near = (self.cursor..self.cursor + WHEEL_MS)
            .find_map(|index| self.earliest[(index % WHEEL_MS) as usize]);
        let far = self.far.peek().map(|Reverse((at, _, _))| *at);
        match (near, far) {
            (Some(near), Some(far)) => Some(near.min(far)),
            (near, far) => near.or(far),
        }
    }

    /// Appends to `due` every slot whose deadline is at or before `now`, with that deadline,
    /// earliest millisecond first (the far heap's after); each has no deadline until set again.
    pub(super) fn take_due(&mut self, now: Instant, due: &mut Vec<(usize, Instant)>) {
        let now_index = self.index(now);
        let last = now_index.min(self.cursor + WHEEL_MS - 1);
        for index in self.cursor..=last {
            let bucket = (index % WHEEL_MS) as usize;
            if self.earliest[bucket].is_none_or(|earliest| earliest > now) {
                continue;
            }
            let entries = &mut self.buckets[bucket];
            let live = &mut self.live;
            let mut earliest: Option<Instant> = None;
            entries.retain(|entry| {
                let slot = entry.slot as usize;
                if live.get(slot).copied().flatten()
                    != Some(Live {
                        at: entry.at,
                        generation: entry.generation,
                    })
                {
                    return false; // stale
                }
                if entry.at > now {
                    earliest = Some(earliest.map_or(entry.at, |e| e.min(entry.at)));
                    return true; // later in this millisecond
                }
                live[slot] = None;
                due.push((slot, entry.at));
                false
            });
            self.earliest[bucket] = earliest;
        }
        self.cursor = self.cursor.max(now_index);
        while let Some(&Reverse((at, slot, generation))) = self.far.peek() {
            if at > now {
                break;
            }
            self.far.pop();
            let slot = slot as usize;
            if self.live.get(slot).copied().flatten() == Some(Live { at, generation }) {
                self.live[slot] = None;
                due.push((slot, at));
            }
        }
    }

    /// The bucket index of `at`: whole milliseconds since `origin` (0 before it).
    fn index(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / BUCKET.as_nanos()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn due(deadlines: &mut Deadlines, now: Instant) -> Vec<(usize, Instant)> {
        let mut due = Vec::new();
        deadlines.take_due(now, &mut due);
        due
    }

    /// What is due `now_ms` after `origin`, as (slot, deadline in ms after `origin`).
    fn due_ms(deadlines: &mut Deadlines, origin: Instant, now_ms: u64) -> Vec<(usize, u64)> {
        due(deadlines, origin + ms(now_ms))
            .into_iter()
            .map(|(slot, at)| (slot, (at - origin).as_millis() as u64))
            .collect()
    }

    #[test]
    fn a_tick_group_comes_due_together_and_not_before_its_instant() {
        let origin = Instant::now();
        let mut deadlines = Deadlines::new(origin);
        let tick = origin + ms(20) + Duration::from_micros(500);
        for slot in 0..500 {
            deadlines.set(slot, 1, tick);
        }
        deadlines.set(500, 1, origin + ms(25));
        assert_eq!(deadlines.next(), Some(tick));
        // Same millisecond, a microsecond early: nothing.
        assert!(due(&mut deadlines, tick - Duration::from_micros(1)).is_empty());
        assert_eq!(deadlines.next(), Some(tick));
        let taken = due(&mut deadlines, tick);
        assert_eq!(taken.len(), 500);
        assert!(taken.iter().all(|&(_, at)| at == tick));
        assert_eq!(
            deadlines.get(0),
            None,
            "a taken slot has no deadline until set again"
        );
        assert_eq!(deadlines.next(), Some(origin + ms(25)));
        assert_eq!(due_ms(&mut deadlines, origin, 30), [(500, 25)]);
        assert_eq!(deadlines.next(), None);
    }

    #[test]
    fn due_slots_come_out_earliest_millisecond_first_even_after_a_long_sleep() {
        let origin = Instant::now();
        let mut deadlines = Deadlines::new(origin);
        // Out of order, spread over the whole wheel (40 ms) and beyond it (the heap).
        for (slot, at) in [(0, 70), (1, 3), (2, 25), (3, 39), (4, 200), (5, 12)] {
            deadlines.set(slot, 1, origin + ms(at));
        }
        assert_eq!(
            due_ms(&mut deadlines, origin, 1_000),
            [(1, 3), (5, 12), (2, 25), (3, 39), (0, 70), (4, 200)]
        );
        assert_eq!(deadlines.next(), None);
    }

    #[test]
    fn a_moved_deadline_leaves_a_stale_entry_that_never_runs() {
        let origin = Instant::now();
        let mut deadlines = Deadlines::new(origin);
        deadlines.set(7, 1, origin + ms(10));
        deadlines.set(7, 1, origin + ms(30)); // later: the 10 ms entry is stale
        assert!(due(&mut deadlines, origin + ms(20)).is_empty());
        deadlines.set_if_earlier(7, 1, origin + ms(40)); // not earlier: kept at 30
        assert_eq!(deadlines.get(7), Some(origin + ms(30)));
        deadlines.set_if_earlier(7, 1, origin + ms(25)); // earlier: moved
        assert_eq!(due_ms(&mut deadlines, origin, 50), [(7, 25)]);
        // The slot closes and is reused by another connection before an entry comes due.
        deadlines.set(8, 1, origin + ms(60));
        deadlines.clear(8);
        assert!(due(&mut deadlines, origin + ms(70)).is_empty());
        deadlines.set(8, 1, origin + ms(200)); // far: the heap
        deadlines.clear(8);
        deadlines.set(8, 2, origin + ms(200));
        assert_eq!(due_ms(&mut deadlines, origin, 300), [(8, 200)]);
        // A new connection's deadline replaces the old one's even when later.
        deadlines.set(9, 3, origin + ms(310));
        deadlines.set_if_earlier(9, 4, origin + ms(320));
        assert_eq!(due_ms(&mut deadlines, origin, 400), [(9, 320)]);
    }

    #[test]
    fn an_overdue_deadline_is_due_at_once_and_the_far_ones_when_they_come() {
        let origin = Instant::now();
        let mut deadlines = Deadlines::new(origin);
        assert!(due(&mut deadlines, origin + ms(100)).is_empty());
        deadlines.set(1, 1, origin + ms(50)); // already past
        deadlines.set(2, 1, origin + ms(5_100)); // an RTCP report, five seconds on
        assert_eq!(deadlines.next(), Some(origin + ms(50)));
        assert_eq!(due_ms(&mut deadlines, origin, 100), [(1, 50)]);
        assert!(due(&mut deadlines, origin + ms(5_099)).is_empty());
        assert_eq!(due_ms(&mut deadlines, origin, 5_100), [(2, 5_100)]);
    }

    #[test]
    fn a_steady_tick_reuses_its_buckets() {
        let origin = Instant::now();
        let mut deadlines = Deadlines::new(origin);
        let mut taken = Vec::new();
        let mut at = origin + ms(20);
        // Warm up: the ticks visit the group's two buckets.
        for _ in 0..8 {
            for slot in 0..100 {
                deadlines.set(slot, 1, at);
            }
            taken.clear();
            deadlines.take_due(at, &mut taken);
            assert_eq!(taken.len(), 100);
            at += ms(20);
        }
        let capacities: Vec<usize> = deadlines.buckets.iter().map(Vec::capacity).collect();
        for _ in 0..40 {
            for slot in 0..100 {
                deadlines.set(slot, 1, at);
            }
            taken.clear();
            deadlines.take_due(at, &mut taken);
            at += ms(20);
        }
        let after: Vec<usize> = deadlines.buckets.iter().map(Vec::capacity).collect();
        assert_eq!(capacities, after);
        assert_eq!(after.iter().filter(|&&c| c > 0).count(), 2);
    }
}
