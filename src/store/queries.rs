//! The recording API's reads: one call by id, the call a [`CallQuery`] names, a time-window
//! search; each answered as whole [`CallRecord`]s (parties, recordings, mute spans).
//!
//! Owns: the meaning of the selectors and statuses of seed 04 as SQL (which call is "the
//! ongoing one", "the last one", "the next one") and when an answer is ambiguous.
//! Must not: write, or wait: `next` is one try at `request_ms`; the API waits and asks again.

use std::path::PathBuf;

use super::db::Db;
use super::model::{
    CallQuery, CallRecord, CallStatus, FindError, MuteChannels, MuteSpan, PartyRecord,
    RecordingRecord, SearchQuery, UnixMs,
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
            return self.exactly_one(&selectors);
        }
        for status in &query.statuses {
            let filter = status_filter(query, *status, request_ms, &selectors);
            match self.exactly_one(&filter)? {
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

    fn exactly_one(&self, filter: &Filter) -> Result<Result<CallRecord, FindError>, StoreError> {
        let sql = format!("SELECT call_id FROM calls WHERE {}", filter.sql());
        let ids = call_ids(&self.sql, &sql, &filter.values)?;
        match ids.as_slice() {
            [] => Ok(Err(FindError::NotFound)),
            [id] => Ok(load_call(&self.sql, id)?.ok_or(FindError::NotFound)),
            more => Ok(Err(FindError::Ambiguous {
                matches: more.len(),
            })),
        }
    }
}

/// The calls of `query` in `status` at `request_ms`; `selectors` are the query's own
/// ([`Extension::Drives`]).
fn status_filter(
    query: &CallQuery,
    status: CallStatus,
    request_ms: UnixMs,
    selectors: &Filter,
) -> Filter {
    // The calls still going and those of the next minute are few and indexed by themselves:
    // found first, each checked for the extension. The last of an extension is among its own
    // calls, found through its parties.
    let mut filter = match status {
        CallStatus::Ongoing | CallStatus::Next => Filter::selectors(query, Extension::Checked),
        CallStatus::Last => selectors.clone(),
    };
    match status {
        CallStatus::Ongoing => filter.push("ended_ms IS NULL", []),
        CallStatus::Next => filter.push(
            "started_ms >= ? AND started_ms < ?",
            [
                Value::Int(request_ms),
                Value::Int(request_ms.saturating_add(NEXT_WINDOW_MS)),
            ],
        ),
        // The latest end among the matching calls; two ending in the same millisecond are
        // ambiguous.
        CallStatus::Last => {
            let latest = format!(
                "ended_ms = (SELECT MAX(ended_ms) FROM calls WHERE {})",
                selectors.sql()
            );
            filter.push(&latest, selectors.values.clone());
        }
    }
    filter
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
        let ids = [
            ("call_id", &query.call_id),
            ("platform_call_id", &query.platform_call_id),
            ("native_id", &query.native_id),
            ("meeting_id", &query.meeting_id),
        ];
        for (column, value) in ids {
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
            for status in [Ongoing, Next, Last] {
                filters.push(("status", status_filter(q, status, 20_000, &selectors)));
            }
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
        for (what, filter) in filters {
            let plan = plan(
                &db.sql,
                &format!("SELECT call_id FROM calls WHERE {}", filter.sql()),
                &params(&filter.values),
            );
            for line in &plan {
                let whole_table = if db.sql.is_postgres() {
                    line.contains("Seq Scan")
                } else {
                    // A scan of the calls still going (`calls_open`) is as long as they are.
                    line.trim_start().starts_with("SCAN") && !line.contains("calls_open")
                };
                assert!(!whole_table, "{what}: {}\n{plan:#?}", filter.sql());
            }
        }
    }
}
