//! The recording API's reads: one call by id, the call a [`CallQuery`] names, a time-window
//! search; each answered as whole [`CallRecord`]s (parties, recordings, mute spans).
//!
//! Owns: the meaning of the selectors and statuses of seed 04 as SQL (which call is "the
//! ongoing one", "the last one", "the next one") and when an answer is ambiguous.
//! Must not: write, or wait: `next` is one try at `request_ms`; the API waits and asks again.

use std::path::PathBuf;

use super::db::{int, Db};
use super::model::{
    CallQuery, CallRecord, CallStatus, FindError, MuteChannels, MuteSpan, PartyRecord,
    RecordingRecord, SearchQuery, UnixMs, MATCHES_COUNTED,
};
use super::sql::{args, params, Row, Sql, Value};
use super::StoreError;

/// How far after the request a `next` call may start.
const NEXT_WINDOW_MS: i64 = 60_000;

/// Largest search page.
const MAX_PAGE_LEN: u32 = 1000;

impl Db {
    /// The call with this id, whole.
    pub fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        load_call(&self.sql, call_id)
    }

    /// The one call `query` names at `request_ms`, or why there is not exactly one. Every set
    /// selector must match; with `extension`, the statuses are tried in order: none found
    /// falls through to the next status, more than one stops with `Ambiguous`.
    pub fn find_call(
        &self,
        query: &CallQuery,
        request_ms: UnixMs,
    ) -> Result<Result<CallRecord, FindError>, StoreError> {
        let selectors = Filter::selectors(query, Extension::Drives);
        if selectors.is_empty() {
            return Ok(Err(FindError::NotFound));
        }
        if query.statuses.is_empty() {
            let ids = self.matching(&selectors)?;
            return self.exactly_one(ids);
        }
        for status in &query.statuses {
            let ids = match status {
                CallStatus::Ongoing => self.matching(&ongoing_filter(query))?,
                CallStatus::Next => self.matching(&next_filter(query, request_ms))?,
                CallStatus::Last => self.last_calls(query, &selectors)?,
            };
            match self.exactly_one(ids)? {
                Err(FindError::NotFound) => continue,
                answer => return Ok(answer),
            }
        }
        Ok(Err(FindError::NotFound))
    }

    /// SearchCalls: the calls that started in `[from_ms, to_ms)` (of `number`, as calling or
    /// called, when set), newest first, one page; and how many there are in all.
    pub fn search(&self, query: &SearchQuery) -> Result<(Vec<CallRecord>, u64), StoreError> {
        let filter = search_filter(query);
        let total: i64 = self
            .sql
            .query_one(
                &format!("SELECT COUNT(*) FROM calls WHERE {}", filter.sql()),
                &params(&filter.values),
            )?
            .get(0)?;
        let page_len = query.page_len.clamp(1, MAX_PAGE_LEN);
        let offset = i64::from(page_len) * i64::from(query.page);
        let sql = format!(
            "SELECT call_id FROM calls WHERE {} ORDER BY started_ms DESC, call_id DESC
             LIMIT {page_len} OFFSET {offset}",
            filter.sql()
        );
        let ids = call_ids(&self.sql, &sql, &filter.values)?;
        let mut calls = Vec::with_capacity(ids.len());
        for id in ids {
            calls.extend(load_call(&self.sql, &id)?);
        }
        Ok((calls, u64::try_from(total).unwrap_or(0)))
    }

    /// Every call still going — of every node, in a shared store — by node and start, without
    /// parties and recordings (`callbridge ctl calls --cluster`).
    pub fn ongoing_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        self.sql
            .query(
                &format!(
                    "SELECT {CALL_COLUMNS} FROM calls WHERE ended_ms IS NULL
                     ORDER BY node_id, started_ms, call_id"
                ),
                args![],
            )?
            .iter()
            .map(call_from_row)
            .collect()
    }

    /// The ids of the calls `filter` matches, as many as an answer counts.
    fn matching(&self, filter: &Filter) -> Result<Vec<String>, StoreError> {
        call_ids(&self.sql, &filter.select(), &filter.values)
    }

    fn exactly_one(&self, ids: Vec<String>) -> Result<Result<CallRecord, FindError>, StoreError> {
        match ids.as_slice() {
            [] => Ok(Err(FindError::NotFound)),
            [id] => Ok(load_call(&self.sql, id)?.ok_or(FindError::NotFound)),
            more => Ok(Err(FindError::Ambiguous {
                matches: more.len(),
            })),
        }
    }
}

/// The calls of `query` still going (`Ongoing`). They, and those starting in the next minute
/// ([`next_filter`]), are few and indexed by themselves (`calls_open`, `calls_started`): found
/// first, each checked for the extension — a busy number has more calls than either.
fn ongoing_filter(query: &CallQuery) -> Filter {
    let mut filter = Filter::selectors(query, Extension::Checked);
    filter.push("ended_ms IS NULL", []);
    filter
}

/// The calls of `query` starting in the minute after `request_ms` (`Next`).
fn next_filter(query: &CallQuery, request_ms: UnixMs) -> Filter {
    let mut filter = Filter::selectors(query, Extension::Checked);
    filter.push(
        "started_ms >= ? AND started_ms < ?",
        [
            Value::Int(request_ms),
            Value::Int(request_ms.saturating_add(NEXT_WINDOW_MS)),
        ],
    );
    filter
}

/// The latest end among the calls `selectors` match, and the calls that ended then, read
/// through the selectors' indexes: what `Last` reads when an id is among the selectors (a
/// number alone is [`Db::last_of_number`]'s).
fn last_filter(selectors: &Filter) -> Filter {
    let mut filter = selectors.clone();
    filter.push(
        &format!(
            "ended_ms = (SELECT MAX(ended_ms) FROM calls WHERE {})",
            selectors.sql()
        ),
        selectors.values.clone(),
    );
    filter
}

/// How many of a number's newest parties `Last` reads first: a number with fewer is answered
/// from them alone.
const NEWEST_PARTIES: u64 = 64;

/// How many rows each further page of `Last`'s two walks reads (a node's ends; the number's
/// calls, that many for each node still walked).
const LAST_PAGE: u64 = 1024;

// The rows of both walks' pages: the walk's time (when the party joined, or when the call
// ended), the call's end, and its id when the number is one of its parties.

/// A page of a number's calls, newest party first: the calls of its parties that joined
/// before `?2`, at most `?3`.
const CALLS_OF_NUMBER_BEFORE: &str = "SELECT newest.at_ms, calls.ended_ms, newest.call_id
     FROM (SELECT call_id, at_ms FROM parties WHERE dn = ?1 AND at_ms < ?2
           ORDER BY at_ms DESC LIMIT ?3) AS newest
     LEFT JOIN calls ON calls.call_id = newest.call_id";

/// The calls of the number's parties that joined at `?2`: a page's last millisecond whole.
const CALLS_OF_NUMBER_AT: &str = "SELECT parties.at_ms, calls.ended_ms, parties.call_id
     FROM parties LEFT JOIN calls ON calls.call_id = parties.call_id
     WHERE parties.dn = ?1 AND parties.at_ms = ?2";

/// The next node, after `?1`, with ended calls in the store.
const NEXT_NODE_WITH_ENDS: &str =
    "SELECT MIN(node_id) FROM calls WHERE ended_ms IS NOT NULL AND node_id > ?1";

/// Whether the number `?3` is a party of `recent`'s call: its id if so.
macro_rules! id_if_a_party {
    () => {
        "CASE WHEN EXISTS (SELECT 1 FROM parties
                           WHERE parties.call_id = recent.call_id AND parties.dn = ?3)
              THEN recent.call_id END"
    };
}

/// A page of a node's ends, newest first: its calls that ended at `?2` or later and before
/// `?5`, at most `?4`, checked for the number `?3`.
const ENDS_OF_NODE_BEFORE: &str = concat!(
    "SELECT recent.ended_ms, recent.ended_ms, ",
    id_if_a_party!(),
    " FROM (SELECT call_id, ended_ms FROM calls
           WHERE node_id = ?1 AND ended_ms IS NOT NULL AND ended_ms >= ?2 AND ended_ms < ?5
           ORDER BY ended_ms DESC LIMIT ?4) AS recent"
);

/// A node's calls that ended at `?2` (a page's last millisecond whole), checked for the
/// number `?3`.
const ENDS_OF_NODE_AT: &str = concat!(
    "SELECT recent.ended_ms, recent.ended_ms, ",
    id_if_a_party!(),
    " FROM calls AS recent
     WHERE recent.node_id = ?1 AND recent.ended_ms IS NOT NULL AND recent.ended_ms = ?2"
);

/// The calls that ended last among some read so far.
#[derive(Debug, Default)]
struct Latest {
    end: Option<UnixMs>,
    ids: Vec<String>,
}

impl Latest {
    fn offer(&mut self, call_id: String, ended_ms: UnixMs) {
        match self.end {
            Some(end) if ended_ms < end => {}
            Some(end) if ended_ms == end => {
                if !self.ids.contains(&call_id) {
                    self.ids.push(call_id);
                }
            }
            _ => {
                self.end = Some(ended_ms);
                self.ids = vec![call_id];
            }
        }
    }
}

/// What `Last` of a number found, and how many rows it read for it.
#[derive(Debug, Default)]
struct LastOfNumber {
    latest: Latest,
    rows: u64,
}

impl LastOfNumber {
    /// Takes a page of a walk (its rows: the walk's time, the call's end, the call's id when
    /// it is the number's); the latest end of the number's calls among them, if any.
    fn offer_rows(&mut self, rows: &[Row]) -> Result<Option<UnixMs>, StoreError> {
        self.rows += rows.len() as u64;
        let mut found = None;
        for row in rows {
            if let (Some(ended_ms), Some(call_id)) =
                (row.get::<Option<UnixMs>>(1)?, row.get::<Option<String>>(2)?)
            {
                found = found.max(Some(ended_ms));
                self.latest.offer(call_id, ended_ms);
            }
        }
        Ok(found)
    }
}

/// The earliest walk time (the first column) of a page.
fn oldest(rows: &[Row]) -> Result<Option<UnixMs>, StoreError> {
    let mut oldest: Option<UnixMs> = None;
    for row in rows {
        let at: UnixMs = row.get(0)?;
        oldest = Some(oldest.map_or(at, |o| o.min(at)));
    }
    Ok(oldest)
}

/// One of `Last`'s walks. Each page ends on a whole millisecond: the rows of its last one past
/// the page's limit are read with it, and the next page starts below it.
struct Walk {
    along: Along,
    below: UnixMs,
}

/// What a walk goes down.
#[derive(Clone, Copy)]
enum Along {
    /// The number's calls, newest party first: walked to their end.
    Calls,
    /// A node's ends, newest first: walked until one of the number's calls, or down to the
    /// latest end found so far.
    Ends { node: i64 },
}

impl Walk {
    /// Reads the walk's next page of at most `limit` rows (and its last millisecond whole):
    /// whether the walk goes on.
    fn next_page(
        &mut self,
        sql: &Sql,
        number: &str,
        limit: u64,
        read: &mut LastOfNumber,
    ) -> Result<bool, StoreError> {
        let rows = match self.along {
            Along::Calls => sql.query(
                CALLS_OF_NUMBER_BEFORE,
                args![number, self.below, int(limit)],
            )?,
            Along::Ends { node } => {
                let from = read.latest.end.unwrap_or(UnixMs::MIN);
                sql.query(
                    ENDS_OF_NODE_BEFORE,
                    args![node, from, number, int(limit), self.below],
                )?
            }
        };
        let found = read.offer_rows(&rows)?;
        if (rows.len() as u64) < limit {
            return Ok(false);
        }
        let Some(last_ms) = oldest(&rows)? else {
            return Ok(false);
        };
        let ties = match self.along {
            Along::Calls => sql.query(CALLS_OF_NUMBER_AT, args![number, last_ms])?,
            // Every end of the node from the number's latest on is in the page.
            Along::Ends { .. } if found.is_some_and(|end| end > last_ms) => return Ok(false),
            Along::Ends { node } => sql.query(ENDS_OF_NODE_AT, args![node, last_ms, number])?,
        };
        let tie = read.offer_rows(&ties)?;
        self.below = last_ms;
        Ok(matches!(self.along, Along::Calls) || found.or(tie).is_none())
    }
}

impl Db {
    /// `Last`: the calls `query` names that ended last — one, or more when they ended in the
    /// same millisecond (ambiguous).
    fn last_calls(&self, query: &CallQuery, selectors: &Filter) -> Result<Vec<String>, StoreError> {
        let ids_given = id_selectors(query).iter().any(|(_, id)| id.is_some());
        if let (Some(number), false) = (&query.extension, ids_given) {
            let read = self.last_of_number(number, NEWEST_PARTIES, LAST_PAGE)?;
            return Ok(read.latest.ids);
        }
        self.matching(&last_filter(selectors))
    }

    /// The calls of `number` that ended last. Reading all of a number's calls is as long as
    /// its history — a trunk's or a route's number may have a third of the store's calls
    /// (0.7 s at a million calls, on the thread that also writes the call records) — and so is
    /// reading every end since its last call, for a number quiet a long while. So two walks
    /// take turns, a page each, and the first to finish answers:
    ///
    /// 1. the number's calls, newest party first (`parties_dn`; `first` of them, then `page`
    ///    for each node still walked): all of them read, the latest end among them is the
    ///    answer — a number with fewer than `first` calls is answered by the first page;
    /// 2. on each node, its ends, newest first (`calls_node_ended`), each call checked for the
    ///    number, down to the latest end found so far: a node is done at its first call of
    ///    the number (the latest of that node's), or when it has no more ends that late.
    ///
    /// A busy number's last call is among the latest ends (the first pages of the second
    /// walk); a number quiet for long has its calls read, and no more pages of the nodes'
    /// ends than of its calls. Calls that ended in the same millisecond are all found (a
    /// page's last millisecond is read whole).
    fn last_of_number(
        &self,
        number: &str,
        first: u64,
        page: u64,
    ) -> Result<LastOfNumber, StoreError> {
        let mut read = LastOfNumber::default();
        let mut calls = Walk {
            along: Along::Calls,
            below: UnixMs::MAX,
        };
        if !calls.next_page(&self.sql, number, first, &mut read)? {
            return Ok(read);
        }
        let mut ends = Vec::new();
        let mut node = -1_i64;
        while let Some(next) = self
            .sql
            .query_one(NEXT_NODE_WITH_ENDS, args![node])?
            .get::<Option<i64>>(0)?
        {
            node = next;
            ends.push(Walk {
                along: Along::Ends { node },
                below: UnixMs::MAX,
            });
        }
        loop {
            let mut going = Vec::with_capacity(ends.len());
            for mut walk in ends {
                if walk.next_page(&self.sql, number, page, &mut read)? {
                    going.push(walk);
                }
            }
            if going.is_empty() {
                return Ok(read);
            }
            let limit = page.saturating_mul(going.len() as u64);
            if !calls.next_page(&self.sql, number, limit, &mut read)? {
                return Ok(read);
            }
            ends = going;
        }
    }
}

/// SearchCalls' conditions: started in `[from_ms, to_ms)`, and with `number` as an end.
fn search_filter(query: &SearchQuery) -> Filter {
    let mut filter = Filter::default();
    filter.push(
        "started_ms >= ? AND started_ms < ?",
        [Value::Int(query.from_ms), Value::Int(query.to_ms)],
    );
    if let Some(number) = &query.number {
        // Both ends are parties from the call's start (`parties_dn`: by number and time).
        filter.push(
            "call_id IN (SELECT call_id FROM parties WHERE dn = ?
                 AND role IN ('calling', 'called') AND at_ms >= ? AND at_ms < ?)",
            [
                Value::Text(number.clone()),
                Value::Int(query.from_ms),
                Value::Int(query.to_ms),
            ],
        );
    }
    filter
}

/// How a query's extension takes part in finding its calls. SQLite's planner cannot tell a
/// number with a few calls from one with most of them, so each form is chosen where it is
/// bounded: the extension's own calls (through `parties_dn`), or each call another index
/// found checked for a party with the number (through `parties_call`).
#[derive(Debug, Clone, Copy)]
enum Extension {
    /// The calls are looked up through the extension's parties.
    Drives,
    /// The calls are found by the other conditions, then checked for the extension.
    Checked,
}

/// A query's id selectors, each with the column it names.
fn id_selectors(query: &CallQuery) -> [(&'static str, &Option<String>); 4] {
    [
        ("call_id", &query.call_id),
        ("platform_call_id", &query.platform_call_id),
        ("native_id", &query.native_id),
        ("meeting_id", &query.meeting_id),
    ]
}

/// A WHERE clause built from parts that must all hold, with its positional values in order.
#[derive(Debug, Clone, Default)]
struct Filter {
    clauses: Vec<String>,
    values: Vec<Value>,
}

impl Filter {
    /// The id selectors and the extension of a query.
    fn selectors(query: &CallQuery, extension_is: Extension) -> Filter {
        let mut filter = Filter::default();
        for (column, value) in id_selectors(query) {
            if let Some(value) = value {
                filter.push(&format!("{column} = ?"), [Value::Text(value.clone())]);
            }
        }
        // Both ends of a call are among its parties, so an extension is any party's number.
        if let Some(extension) = &query.extension {
            let clause = match extension_is {
                Extension::Drives => "call_id IN (SELECT call_id FROM parties WHERE dn = ?)",
                Extension::Checked => {
                    "EXISTS (SELECT 1 FROM parties WHERE parties.call_id = calls.call_id AND dn = ?)"
                }
            };
            filter.push(clause, [Value::Text(extension.clone())]);
        }
        filter
    }

    fn push(&mut self, clause: &str, values: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_string());
        self.values.extend(values);
    }

    fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The ids of the calls that match, as many as an answer counts.
    fn select(&self) -> String {
        format!(
            "SELECT call_id FROM calls WHERE {} LIMIT {}",
            self.sql(),
            MATCHES_COUNTED + 1
        )
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            return "1 = 1".to_string();
        }
        self.clauses.join(" AND ")
    }
}

fn call_ids(conn: &Sql, sql: &str, values: &[Value]) -> Result<Vec<String>, StoreError> {
    conn.query(sql, &params(values))?
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The columns [`call_from_row`] reads, in order.
const CALL_COLUMNS: &str = "call_id, connection, direction, platform_call_id, native_id, \
    meeting_id, calling, called, trunk, policy, started_ms, answered_ms, ended_ms, end_cause, \
    kept, delete_requested, node_id";

/// A call with its parties, recordings and their mute spans.
pub(super) fn load_call(conn: &Sql, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
    let call = conn
        .query_opt(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1"),
            args![call_id],
        )?
        .map(|row| call_from_row(&row))
        .transpose()?;
    let Some(mut call) = call else {
        return Ok(None);
    };
    call.parties = conn
        .query(
            "SELECT dn, role, at_ms FROM parties WHERE call_id = ?1 ORDER BY at_ms, id",
            args![call_id],
        )?
        .iter()
        .map(|row| {
            Ok(PartyRecord {
                dn: row.get(0)?,
                role: row.get(1)?,
                at_ms: row.get(2)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    call.recordings = conn
        .query(
            "SELECT recording_id, call_id, path, format, channels, sample_rate, origin, state,
                 started_ms, ended_ms, duration_ms, size_bytes, sha256, error
             FROM recordings WHERE call_id = ?1 ORDER BY started_ms, recording_id",
            args![call_id],
        )?
        .iter()
        .map(recording_from_row)
        .collect::<Result<_, _>>()?;
    for recording in &mut call.recordings {
        recording.mutes = conn
            .query(
                "SELECT channels, from_ms, to_ms FROM mutes WHERE recording_id = ?1
                 ORDER BY from_ms, id",
                args![recording.recording_id],
            )?
            .iter()
            .map(|row| {
                Ok(MuteSpan {
                    channels: MuteChannels(row.get(0)?),
                    from_ms: row.get(1)?,
                    to_ms: row.get(2)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
    }
    Ok(Some(call))
}

fn call_from_row(row: &Row) -> Result<CallRecord, StoreError> {
    Ok(CallRecord {
        call_id: row.get(0)?,
        connection: row.get(1)?,
        direction: row.word(2)?,
        platform_call_id: row.get(3)?,
        native_id: row.get(4)?,
        meeting_id: row.get(5)?,
        calling: row.get(6)?,
        called: row.get(7)?,
        trunk: row.get(8)?,
        policy: row.word(9)?,
        started_ms: row.get(10)?,
        answered_ms: row.get(11)?,
        ended_ms: row.get(12)?,
        end_cause: row.get(13)?,
        kept: row.get(14)?,
        delete_requested: row.get(15)?,
        node_id: row.get(16)?,
        parties: Vec::new(),
        recordings: Vec::new(),
    })
}

fn recording_from_row(row: &Row) -> Result<RecordingRecord, StoreError> {
    Ok(RecordingRecord {
        recording_id: row.get(0)?,
        call_id: row.get(1)?,
        path: PathBuf::from(row.get::<String>(2)?),
        format: row.word(3)?,
        channels: row.get(4)?,
        sample_rate: row.get(5)?,
        origin: row.word(6)?,
        state: row.word(7)?,
        started_ms: row.get(8)?,
        ended_ms: row.get(9)?,
        duration_ms: row.get(10)?,
        size_bytes: row.get(11)?,
        sha256: row.get(12)?,
        error: row.get(13)?,
        mutes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{RecordPolicy, RecordingOrigin, StoreEvent};
    use crate::store::testing::{call, ended, file, finished, plan, recording, temp_db};
    use CallStatus::{Last, Next, Ongoing};

    /// Calls of extension 100:
    /// - `a`: 100 → 200, 1_000..5_000 (finished)
    /// - `b`: 300 → 100, 6_000..9_000 (finished, the last)
    /// - `c`: 100 → 400, from 10_000 (ongoing), a leg of meeting m1
    /// - `d`: 500 → 600, from 11_000 (ongoing), meeting m1, 100 joined as a party
    fn calls() -> (tempfile::TempDir, Db) {
        let (dir, mut db) = temp_db();
        db.apply(
            &[
                call("a", "100", "200", RecordPolicy::Off, 1_000),
                ended("a", 5_000),
                call("b", "300", "100", RecordPolicy::Off, 6_000),
                ended("b", 9_000),
                call("c", "100", "400", RecordPolicy::Off, 10_000),
                StoreEvent::MeetingChanged {
                    call_id: "c".into(),
                    meeting_id: Some("m1".into()),
                },
                call("d", "500", "600", RecordPolicy::Off, 11_000),
                StoreEvent::MeetingChanged {
                    call_id: "d".into(),
                    meeting_id: Some("m1".into()),
                },
            ],
            11_000,
        )
        .expect("apply");
        (dir, db)
    }

    fn query(extension: &str, statuses: &[CallStatus]) -> CallQuery {
        CallQuery {
            extension: Some(extension.to_string()),
            statuses: statuses.to_vec(),
            ..CallQuery::default()
        }
    }

    fn found(db: &Db, q: &CallQuery, at: UnixMs) -> Result<String, FindError> {
        db.find_call(q, at).expect("find").map(|call| call.call_id)
    }

    /// `count` ended calls `{prefix}0`, `{prefix}1`, … from `calling` to `called`: call i
    /// starts at `first + i * step` and lasts `length`.
    fn ended_calls(
        prefix: &str,
        (calling, called): (&str, &str),
        count: i64,
        (first, step): (UnixMs, UnixMs),
        length: UnixMs,
    ) -> Vec<StoreEvent> {
        (0..count)
            .flat_map(|i| {
                let (id, at) = (format!("{prefix}{i}"), first + i * step);
                [
                    call(&id, calling, called, RecordPolicy::Off, at),
                    ended(&id, at + length),
                ]
            })
            .collect()
    }

    #[test]
    fn each_id_selector_finds_its_call() {
        let (_dir, db) = calls();
        let by = |q: CallQuery| found(&db, &q, 20_000);
        assert_eq!(
            by(CallQuery {
                call_id: Some("b".into()),
                ..Default::default()
            }),
            Ok("b".into())
        );
        assert_eq!(
            by(CallQuery {
                platform_call_id: Some("sip-a".into()),
                ..Default::default()
            }),
            Ok("a".into())
        );
        assert_eq!(
            by(CallQuery {
                native_id: Some("conn-c".into()),
                ..Default::default()
            }),
            Ok("c".into())
        );
        assert_eq!(
            by(CallQuery {
                call_id: Some("zz".into()),
                ..Default::default()
            }),
            Err(FindError::NotFound)
        );
        assert_eq!(
            by(CallQuery::default()),
            Err(FindError::NotFound),
            "no selector"
        );
    }

    #[test]
    fn every_set_selector_must_match() {
        let (_dir, db) = calls();
        let q = CallQuery {
            call_id: Some("a".into()),
            platform_call_id: Some("sip-b".into()),
            ..Default::default()
        };
        assert_eq!(found(&db, &q, 0), Err(FindError::NotFound));
        let q = CallQuery {
            call_id: Some("a".into()),
            platform_call_id: Some("sip-a".into()),
            native_id: Some("conn-a".into()),
            ..Default::default()
        };
        assert_eq!(found(&db, &q, 0), Ok("a".into()));
    }

    #[test]
    fn a_meeting_names_several_legs_unless_an_extension_picks_one() {
        let (_dir, db) = calls();
        let meeting = CallQuery {
            meeting_id: Some("m1".into()),
            ..Default::default()
        };
        assert_eq!(
            found(&db, &meeting, 0),
            Err(FindError::Ambiguous { matches: 2 })
        );
        let q = CallQuery {
            extension: Some("400".into()),
            ..meeting.clone()
        };
        assert_eq!(found(&db, &q, 0), Ok("c".into()));
        let q = CallQuery {
            extension: Some("200".into()),
            ..meeting
        };
        assert_eq!(found(&db, &q, 0), Err(FindError::NotFound));
    }

    #[test]
    fn ongoing_finds_the_call_in_progress_and_is_ambiguous_with_two() {
        let (_dir, mut db) = calls();
        assert_eq!(
            found(&db, &query("400", &[Ongoing]), 20_000),
            Ok("c".into())
        );
        assert_eq!(
            found(&db, &query("200", &[Ongoing]), 20_000),
            Err(FindError::NotFound)
        );
        // 100 is an end of `c` and a party of `d`.
        db.apply(
            &[StoreEvent::PartyAdded {
                call_id: "d".into(),
                dn: "100".into(),
                role: "transfer-target".into(),
                at_ms: 12_000,
            }],
            12_000,
        )
        .expect("party");
        assert_eq!(
            found(&db, &query("100", &[Ongoing]), 20_000),
            Err(FindError::Ambiguous { matches: 2 })
        );
        assert_eq!(
            found(&db, &query("500", &[Ongoing]), 20_000),
            Ok("d".into())
        );
    }

    #[test]
    fn last_is_the_latest_end_and_a_tie_is_ambiguous() {
        let (_dir, mut db) = calls();
        assert_eq!(found(&db, &query("100", &[Last]), 20_000), Ok("b".into()));
        assert_eq!(found(&db, &query("200", &[Last]), 20_000), Ok("a".into()));
        assert_eq!(
            found(&db, &query("600", &[Last]), 20_000),
            Err(FindError::NotFound),
            "ongoing only"
        );
        db.apply(
            &[
                call("e", "100", "700", RecordPolicy::Off, 7_000),
                ended("e", 9_000),
            ],
            9_000,
        )
        .expect("tie");
        assert_eq!(
            found(&db, &query("100", &[Last]), 20_000),
            Err(FindError::Ambiguous { matches: 2 })
        );
    }

    /// A busy number's last call is found from its newest parties and the calls that ended
    /// after them — and still found when those bounded reads cannot tell: a call that started
    /// before the number's newest ones and ended after them, one ended while its newest are
    /// all still going, a tie past the newest, and a number whose calls ended before more
    /// than [`LAST_PAGE`] others. And an ambiguous look-up of a busy number counts its calls
    /// only to a hundred.
    #[test]
    fn last_of_a_busy_number_is_found_past_its_newest_calls() {
        let (_dir, mut db) = temp_db();
        let newest = NEWEST_PARTIES as i64;
        let mut events = Vec::new();
        // "trunk": `long` starts first and ends last; `newest` + 10 short calls after it.
        events.push(call("long", "trunk", "1", RecordPolicy::Off, 1_000));
        events.extend(ended_calls(
            "t",
            ("2", "trunk"),
            newest + 10,
            (2_000, 10),
            5,
        ));
        events.push(ended("long", 50_000));
        // "route": one call that ends late, then `newest` + 1 still going.
        events.push(call("r-ended", "route", "3", RecordPolicy::Off, 3_000));
        events.push(ended("r-ended", 45_000));
        for i in 0..=newest {
            events.push(call(
                &format!("r{i}"),
                "route",
                "4",
                RecordPolicy::Off,
                4_000 + i,
            ));
        }
        // "quiet": `newest` calls long ago, then more than `LAST_PAGE` calls of others,
        // which end before the trunk's and the route's last.
        events.extend(ended_calls("q", ("quiet", "5"), newest, (100, 1), 100));
        let others = LAST_PAGE as i64 + 10;
        events.extend(ended_calls("o", ("6", "7"), others, (30_000, 1), 10_000));
        db.apply(&events, 70_000).expect("calls");
        let last = |number: &str, db: &Db| found(db, &query(number, &[Last]), 80_000);
        assert_eq!(
            last("trunk", &db),
            Ok("long".into()),
            "ended after the newest"
        );
        assert_eq!(
            last("route", &db),
            Ok("r-ended".into()),
            "the newest all going"
        );
        assert_eq!(
            last("quiet", &db),
            Ok(format!("q{}", newest - 1)),
            "long ago"
        );
        // Each answered by the first page of each walk: the trunk's and the route's last call
        // among the latest ends, the quiet number's calls all in the first page of its own.
        for number in ["trunk", "route", "quiet"] {
            let read = db
                .last_of_number(number, NEWEST_PARTIES, LAST_PAGE)
                .expect("read");
            assert!(
                read.rows <= NEWEST_PARTIES + LAST_PAGE + 2,
                "{number}: {} rows",
                read.rows
            );
        }
        // Without a status the number must name one call: past a hundred they are not counted.
        assert_eq!(
            found(&db, &query("6", &[]), 80_000),
            Err(FindError::Ambiguous {
                matches: MATCHES_COUNTED + 1
            })
        );
        // A call of the trunk's that starts before its newest and ends with `long` is a tie.
        db.apply(
            &[
                call("long-too", "trunk", "8", RecordPolicy::Off, 1_500),
                ended("long-too", 50_000),
            ],
            70_000,
        )
        .expect("tie");
        assert_eq!(last("trunk", &db), Err(FindError::Ambiguous { matches: 2 }));
    }

    /// In a store several nodes share, the latest ends are read on every node: a busy
    /// number's last call can be another node's, behind ends of the first node's own.
    #[test]
    fn last_of_a_busy_number_reads_every_nodes_latest_ends() {
        let (_dir, mut db) = temp_db();
        let newest = NEWEST_PARTIES as i64;
        // Node 1 (a neighbour sharing the store): the number's first call, which ends last.
        db.node = 1;
        db.apply(
            &[
                call("far", "trunk", "1", RecordPolicy::Off, 500),
                ended("far", 90_000),
            ],
            90_000,
        )
        .expect("node 1");
        // Node 0: the number's newest calls, and later ends of other numbers' calls.
        db.node = 0;
        let mut events = ended_calls("t", ("2", "trunk"), newest + 5, (1_000, 10), 5);
        events.extend(ended_calls("o", ("6", "7"), 20, (5_000, 1), 90_000));
        db.apply(&events, 95_100).expect("node 0");
        assert_eq!(
            found(&db, &query("trunk", &[Last]), 100_000),
            Ok("far".into())
        );
        let read = db
            .last_of_number("trunk", NEWEST_PARTIES, LAST_PAGE)
            .expect("read");
        assert!(
            read.rows < 2 * NEWEST_PARTIES,
            "answered from the first pages: {} rows",
            read.rows
        );
    }

    /// `Last` of a number reads about twice the shorter of its two walks: a number with many
    /// calls, quiet behind a few later ends, is found among those ends; a number with few
    /// calls, quiet behind many, by reading its calls.
    #[test]
    fn last_of_a_number_reads_about_twice_the_shorter_walk() {
        let (_dir, mut db) = temp_db();
        let (first, page) = (4, 16);
        // "dormant": 20 calls, before everything else; "old-trunk": 400 calls; then 60 calls
        // of others that end after all of them.
        let mut events = ended_calls("d", ("2", "dormant"), 20, (100, 1), 100);
        events.extend(ended_calls("t", ("old-trunk", "1"), 400, (1_000, 10), 5));
        events.extend(ended_calls("o", ("3", "4"), 60, (10_000, 1), 10_000));
        db.apply(&events, 30_000).expect("calls");
        // Four pages of the 60 later ends, and the fifth finds the trunk's last call; as many
        // pages of the trunk's calls meanwhile: 120 rows where its calls are 400.
        let trunk = db.last_of_number("old-trunk", first, page).expect("trunk");
        assert_eq!(trunk.latest.ids, ["t399"]);
        assert!(trunk.rows <= 130, "{} rows", trunk.rows);
        // Its 20 calls read in two pages, and two pages of the 460 ends after them.
        let dormant = db.last_of_number("dormant", first, page).expect("dormant");
        assert_eq!(dormant.latest.ids, ["d19"]);
        assert!(dormant.rows <= 60, "{} rows", dormant.rows);
    }

    /// Whatever the pages, down to one row each, `Last` of a number is what reading all its
    /// calls finds: on three nodes, with calls that start or end in the same millisecond
    /// (times on grids of 10, 100 and 1,000 ms), calls still going, a number at both ends of a
    /// call, parties that joined late, and numbers from busy to rare, so that either walk may
    /// be the first to finish. Forty stores of random calls.
    #[test]
    fn last_of_a_number_is_the_latest_end_whatever_the_pages() {
        use rand::{Rng, SeedableRng};
        // n0 a third of the ends, each next number half as many as the one before (n6 one in
        // 192); the other ends numbers of their own.
        let numbers = ["n0", "n1", "n2", "n3", "n4", "n5", "n6"];
        let number = |rng: &mut rand::rngs::StdRng, own: String| {
            let (mut draw, mut share): (f64, f64) = (rng.random(), 1.0 / 3.0);
            for number in numbers {
                if draw < share {
                    return number.to_string();
                }
                draw -= share;
                share /= 2.0;
            }
            own
        };
        let mut checked = 0;
        for seed in 0..40_u64 {
            let (_dir, mut db) = temp_db();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let grid = [10, 100, 1_000][seed as usize % 3];
            for node in 0..3 {
                db.node = node;
                let mut events = Vec::new();
                for i in 0..60 {
                    let id = format!("c{node}-{i}");
                    let start = rng.random_range(0..20) * grid;
                    let calling = number(&mut rng, format!("{id}-a"));
                    let called = number(&mut rng, format!("{id}-b"));
                    events.push(call(&id, &calling, &called, RecordPolicy::Off, start));
                    if rng.random_bool(0.3) {
                        events.push(StoreEvent::PartyAdded {
                            call_id: id.clone(),
                            dn: number(&mut rng, format!("{id}-c")),
                            role: "transfer-target".into(),
                            at_ms: start + grid / 2,
                        });
                    }
                    if rng.random_bool(0.9) {
                        events.push(ended(&id, start + rng.random_range(0..20) * grid));
                    }
                }
                db.apply(&events, 100_000).expect("calls");
            }
            for number in numbers {
                let all = Filter::selectors(&query(number, &[]), Extension::Drives);
                let mut expected = db.matching(&last_filter(&all)).expect("all its calls");
                expected.sort();
                assert!(expected.len() <= MATCHES_COUNTED);
                checked += usize::from(!expected.is_empty());
                for (first, page) in [(1, 1), (1, 2), (2, 3), (4, 16), (NEWEST_PARTIES, LAST_PAGE)]
                {
                    let mut ids = db
                        .last_of_number(number, first, page)
                        .expect("walks")
                        .latest
                        .ids;
                    ids.sort();
                    assert_eq!(
                        ids, expected,
                        "seed {seed}: {number}, pages of {first} and {page}"
                    );
                }
            }
        }
        assert!(checked > 200, "numbers with a last call: {checked}");
    }

    #[test]
    fn next_is_a_call_starting_within_a_minute_after_the_request() {
        let (_dir, mut db) = calls();
        let request = 100_000;
        assert_eq!(
            found(&db, &query("800", &[Next]), request),
            Err(FindError::NotFound)
        );
        db.apply(
            &[
                call("early", "800", "1", RecordPolicy::Off, request - 1),
                call("late", "800", "1", RecordPolicy::Off, request + 60_000),
            ],
            request,
        )
        .expect("outside the window");
        assert_eq!(
            found(&db, &query("800", &[Next]), request),
            Err(FindError::NotFound)
        );
        db.apply(
            &[call(
                "edge",
                "1",
                "800",
                RecordPolicy::Off,
                request + 59_999,
            )],
            request,
        )
        .expect("inside");
        assert_eq!(
            found(&db, &query("800", &[Next]), request),
            Ok("edge".into())
        );
        db.apply(
            &[call("first", "800", "2", RecordPolicy::Off, request)],
            request,
        )
        .expect("inside too");
        assert_eq!(
            found(&db, &query("800", &[Next]), request),
            Err(FindError::Ambiguous { matches: 2 })
        );
    }

    #[test]
    fn statuses_fall_back_in_order_and_ambiguity_stops() {
        let (_dir, mut db) = calls();
        // `ongoing,next`: nothing in progress for 900 yet, then a call starts.
        assert_eq!(
            found(&db, &query("900", &[Ongoing, Next]), 50_000),
            Err(FindError::NotFound)
        );
        db.apply(&[call("n", "900", "1", RecordPolicy::Off, 50_500)], 50_500)
            .expect("next call");
        assert_eq!(
            found(&db, &query("900", &[Ongoing, Next]), 50_000),
            Ok("n".into())
        );
        // `last,ongoing`: 600 has no finished call, so its call in progress.
        assert_eq!(
            found(&db, &query("600", &[Last, Ongoing]), 20_000),
            Ok("d".into())
        );
        // `ongoing,last`: an ongoing call wins over the last one.
        assert_eq!(
            found(&db, &query("100", &[Ongoing, Last]), 20_000),
            Ok("c".into())
        );
        assert_eq!(
            found(&db, &query("100", &[Last, Ongoing]), 20_000),
            Ok("b".into())
        );
        // Two in progress: ambiguous, and `last` is not tried.
        db.apply(&[call("c2", "100", "1", RecordPolicy::Off, 12_000)], 12_000)
            .expect("second ongoing");
        assert_eq!(
            found(&db, &query("100", &[Ongoing, Last]), 20_000),
            Err(FindError::Ambiguous { matches: 2 })
        );
    }

    #[test]
    fn an_extension_alone_must_name_one_call() {
        let (_dir, db) = calls();
        assert_eq!(found(&db, &query("200", &[]), 0), Ok("a".into()));
        assert_eq!(
            found(&db, &query("100", &[]), 0),
            Err(FindError::Ambiguous { matches: 3 })
        );
    }

    #[test]
    fn the_found_call_is_whole() {
        let (dir, mut db) = calls();
        let path = file(&dir, "r.wav", b"abc");
        db.apply(
            &[
                recording("r1", "c", &path, RecordingOrigin::Policy, 10_000),
                StoreEvent::MuteChanged {
                    recording_id: "r1".into(),
                    at_ms: 10_500,
                    channels: MuteChannels::LEFT,
                },
            ],
            10_500,
        )
        .expect("recording");
        let call = db
            .find_call(&query("400", &[Ongoing]), 20_000)
            .expect("find")
            .expect("one call");
        assert_eq!(call.parties.len(), 2);
        assert_eq!(call.recordings.len(), 1);
        assert_eq!(call.recordings[0].path, path);
        assert_eq!(
            call.recordings[0].mutes,
            vec![MuteSpan {
                channels: MuteChannels::LEFT,
                from_ms: 500,
                to_ms: None
            }]
        );
        db.apply(
            &[ended("c", 30_000), finished("r1", 30_000, 160_000)],
            30_000,
        )
        .expect("finish");
        assert_eq!(
            db.get_call("c").expect("get"),
            db.find_call(&query("400", &[Last]), 40_000)
                .expect("find")
                .ok()
        );
        assert_eq!(db.get_call("zz").expect("get"), None);
    }

    #[test]
    fn search_pages_newest_first_with_a_total() {
        let (_dir, mut db) = calls();
        // A number that joined a call is not one of its ends: SearchCalls does not list it.
        db.apply(
            &[StoreEvent::PartyAdded {
                call_id: "a".into(),
                dn: "300".into(),
                role: "transfer-target".into(),
                at_ms: 2_000,
            }],
            2_000,
        )
        .expect("party");
        let search = |number: Option<&str>, page_len, page| {
            let (calls, total) = db
                .search(&SearchQuery {
                    from_ms: 1_000,
                    to_ms: 11_000,
                    number: number.map(str::to_string),
                    page_len,
                    page,
                })
                .expect("search");
            let ids: Vec<String> = calls.into_iter().map(|call| call.call_id).collect();
            (ids, total)
        };
        assert_eq!(
            search(None, 10, 0),
            (vec!["c".into(), "b".into(), "a".into()], 3),
            "d starts at `to`"
        );
        assert_eq!(search(None, 2, 0), (vec!["c".into(), "b".into()], 3));
        assert_eq!(search(None, 2, 1), (vec!["a".into()], 3));
        assert_eq!(search(None, 2, 2), (vec![], 3));
        assert_eq!(
            search(Some("100"), 10, 0),
            (vec!["c".into(), "b".into(), "a".into()], 3)
        );
        assert_eq!(search(Some("300"), 10, 0), (vec!["b".into()], 1));
        assert_eq!(search(Some("999"), 10, 0), (vec![], 0));
        assert_eq!(
            search(Some("400"), 10, 0),
            (vec!["c".into()], 1),
            "an end of c"
        );
        assert_eq!(
            search(None, 0, 0).0.len(),
            1,
            "a page holds at least one call"
        );
    }

    /// Every way the recording API looks calls up by number reaches them through an index —
    /// the number's parties, the calls still going, or the start — and never reads every
    /// call or every party: with the number in `calls.calling OR calls.called OR a party`,
    /// `Last` read the whole store (0.9 s a look-up at a million calls, on the thread that
    /// also writes the call records).
    #[test]
    fn look_ups_by_number_read_only_what_their_indexes_find() {
        let (_dir, db) = calls();
        if db.sql.is_postgres() {
            // The planner would scan these few rows whatever the indexes.
            db.sql
                .batch("SET enable_seqscan = off")
                .expect("planner setting");
        }
        let extension = query("100", &[]);
        let with_id = CallQuery {
            meeting_id: Some("m1".into()),
            ..extension.clone()
        };
        let mut filters = Vec::new();
        for q in [&extension, &with_id] {
            let selectors = Filter::selectors(q, Extension::Drives);
            filters.push(("no status", selectors.clone()));
            filters.push(("ongoing", ongoing_filter(q)));
            filters.push(("next", next_filter(q, 20_000)));
            // With an id (a number alone walks, below).
            filters.push(("last", last_filter(&selectors)));
        }
        filters.push((
            "search",
            search_filter(&SearchQuery {
                from_ms: 1_000,
                to_ms: 11_000,
                number: Some("100".into()),
                page_len: 10,
                page: 0,
            }),
        ));
        let mut plans: Vec<(&str, String, Vec<Value>)> = filters
            .into_iter()
            .map(|(what, filter)| (what, filter.select(), filter.values))
            .collect();
        // `Last` of a number alone: pages of its calls, and of the nodes' ends.
        let number = Value::Text("100".into());
        let (at, limit) = (Value::Int(5_000), Value::Int(64));
        plans.extend([
            (
                "last: the number's calls",
                CALLS_OF_NUMBER_BEFORE.to_string(),
                vec![number.clone(), at.clone(), limit.clone()],
            ),
            (
                "last: the number's calls at a millisecond",
                CALLS_OF_NUMBER_AT.to_string(),
                vec![number.clone(), at.clone()],
            ),
            (
                "last: next node",
                NEXT_NODE_WITH_ENDS.to_string(),
                vec![Value::Int(-1)],
            ),
            (
                "last: a node's ends",
                ENDS_OF_NODE_BEFORE.to_string(),
                vec![
                    Value::Int(0),
                    Value::Int(0),
                    number.clone(),
                    limit,
                    at.clone(),
                ],
            ),
            (
                "last: a node's ends at a millisecond",
                ENDS_OF_NODE_AT.to_string(),
                vec![Value::Int(0), at, number],
            ),
        ]);
        for (what, sql, values) in plans {
            let plan = plan(&db.sql, &sql, &params(&values));
            let filter = sql;
            for line in &plan {
                let whole_table = if db.sql.is_postgres() {
                    line.contains("Seq Scan")
                } else {
                    // A scan of the calls still going (`calls_open`) is as long as they are,
                    // one of a bounded subquery's rows (`SCAN newest`) as it is.
                    let line = line.trim_start();
                    (line.starts_with("SCAN calls") || line.starts_with("SCAN parties"))
                        && !line.contains("calls_open")
                };
                assert!(!whole_table, "{what}: {filter}\n{plan:#?}");
            }
        }
    }
}
