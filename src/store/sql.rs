//! The two databases the store runs on — SQLite (embedded, the default) and PostgreSQL (one
//! store shared by several nodes, docs/CLUSTER.md) — behind the few operations the store needs:
//! run a statement, read rows, a transaction. The store writes its SQL once, in the subset
//! both understand (`?N` placeholders, `INSERT ... ON CONFLICT DO NOTHING`, `CASE` instead of
//! the two-argument `MAX`, `"by"` quoted), with integers and text only.
//!
//! Owns: the connection, placeholder translation (`?N` and `?` to `$N` for PostgreSQL), value
//! conversion both ways, PostgreSQL's prepared-statement cache.
//! Must not: hold SQL of its own beyond BEGIN/COMMIT/ROLLBACK, or be used from an async task:
//! the `postgres` client runs its own runtime and blocks (the store thread and `ctl` use it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;
use std::str::FromStr;

use super::model::UnknownWord;
use super::StoreError;

/// A value as both databases store it: the store has integers and text only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// Something that can be a statement's parameter.
pub(crate) trait Param {
    fn value(&self) -> Value;

    /// The value without copying its text (SQLite binds it borrowed).
    fn value_ref(&self) -> ValueRef<'_>;
}

/// A parameter's value, its text borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueRef<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value {
        (**self).value()
    }

    fn value_ref(&self) -> ValueRef<'_> {
        (**self).value_ref()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value {
        self.as_ref().map_or(Value::Null, Param::value)
    }

    fn value_ref(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, Param::value_ref)
    }
}

impl Param for str {
    fn value(&self) -> Value {
        Value::Text(self.to_string())
    }

    fn value_ref(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }

    fn value_ref(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for bool {
    fn value(&self) -> Value {
        Value::Int(i64::from(*self))
    }

    fn value_ref(&self) -> ValueRef<'_> {
        ValueRef::Int(i64::from(*self))
    }
}

impl Param for Value {
    fn value(&self) -> Value {
        self.clone()
    }

    fn value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Int(*v),
            Value::Text(t) => ValueRef::Text(t),
        }
    }
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value {
                Value::Int(i64::from(*self))
            }

            fn value_ref(&self) -> ValueRef<'_> {
                ValueRef::Int(i64::from(*self))
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8);

/// Values gathered at run time (a search's filters) as parameters.
pub(crate) fn params(values: &[Value]) -> Vec<&dyn Param> {
    values.iter().map(|v| v as &dyn Param).collect()
}

/// A statement's parameters: `args![a, b]`.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        &[$(&$x as &dyn $crate::store::sql::Param),*] as &[&dyn $crate::store::sql::Param]
    };
}
pub(crate) use args;

/// A column value read back.
pub(crate) trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(v) => Ok(*v),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, String> {
                let v = i64::from_value(value)?;
                <$t>::try_from(v).map_err(|_| format!("{v} is out of range"))
            }
        }
    )*};
}
int_from_value!(i32, u32, u16, u8, u64, usize);

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(text) => Ok(text.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row read back.
#[derive(Debug, Clone)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    /// Column `idx` as `T`; a NULL or a value of another type is an error naming the column.
    pub(crate) fn get<T: FromValue>(&self, idx: usize) -> Result<T, StoreError> {
        let value = self
            .0
            .get(idx)
            .ok_or_else(|| StoreError::Database(format!("no column {idx} in the row")))?;
        T::from_value(value).map_err(|e| StoreError::Database(format!("column {idx}: {e}")))
    }

    /// A word column (`direction`, `state`, ...) as its enum.
    pub(crate) fn word<T: FromStr<Err = UnknownWord>>(&self, idx: usize) -> Result<T, StoreError> {
        let text: String = self.get(idx)?;
        text.parse()
            .map_err(|e: UnknownWord| StoreError::Database(format!("column {idx}: {e}")))
    }
}

/// The connection.
pub(crate) enum Sql {
    Sqlite(rusqlite::Connection),
    /// RefCell: the `postgres` client needs `&mut` for every statement; the store is used by
    /// one thread at a time (the store thread, or `ctl`).
    /// Boxed: the client and its statement cache are several times an SQLite handle's size.
    Postgres(Box<RefCell<Postgres>>),
}

pub(crate) struct Postgres {
    client: postgres::Client,
    /// Statements prepared on this connection, by their translated text.
    statements: HashMap<String, postgres::Statement>,
}

impl Sql {
    pub(crate) fn postgres(client: postgres::Client) -> Sql {
        Sql::Postgres(Box::new(RefCell::new(Postgres {
            client,
            statements: HashMap::new(),
        })))
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Sql::Postgres(_))
    }

    /// Runs a statement; the rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, StoreError> {
        match self {
            Sql::Sqlite(conn) => {
                let values = sqlite_values(params);
                let changed = conn
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values.iter()))?;
                Ok(changed as u64)
            }
            Sql::Postgres(pg) => pg
                .borrow_mut()
                .run(sql, params, |client, statement, values| {
                    client.execute(statement, values)
                }),
        }
    }

    /// Every row a query answers.
    pub(crate) fn query(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, StoreError> {
        match self {
            Sql::Sqlite(conn) => {
                let values = sqlite_values(params);
                let mut statement = conn.prepare_cached(sql)?;
                let columns = statement.column_count();
                let mut rows = statement.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(columns);
                    for idx in 0..columns {
                        values.push(sqlite_value(row.get_ref(idx)?, idx)?);
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Sql::Postgres(pg) => pg
                .borrow_mut()
                .run(sql, params, |client, statement, values| {
                    client.query(statement, values)
                })?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// The first row a query answers, if any.
    pub(crate) fn query_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query that always answers one (COUNT, MAX).
    pub(crate) fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Database(format!("no row from {sql:?}")))
    }

    /// Runs statements without parameters (schema steps), as one text.
    pub(crate) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Sql::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Sql::Postgres(pg) => Ok(pg
                .borrow_mut()
                .client
                .batch_execute(sql)
                .map_err(pg_error)?),
        }
    }

    /// Starts a transaction; it rolls back unless [`Tx::commit`] is called.
    pub(crate) fn transaction(&self) -> Result<Tx<'_>, StoreError> {
        self.batch("BEGIN")?;
        Ok(Tx {
            sql: self,
            done: false,
        })
    }

    /// A transaction that takes the write lock at once (SQLite `BEGIN IMMEDIATE`): for schema
    /// steps, so two processes opening one file do not both read the old version.
    pub(crate) fn write_transaction(&self) -> Result<Tx<'_>, StoreError> {
        self.batch(if self.is_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        })?;
        Ok(Tx {
            sql: self,
            done: false,
        })
    }
}

/// A transaction in progress: statements run on it through `Deref`.
pub(crate) struct Tx<'a> {
    sql: &'a Sql,
    done: bool,
}

impl Tx<'_> {
    pub(crate) fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.sql.batch("COMMIT")
    }
}

impl Deref for Tx<'_> {
    type Target = Sql;
    fn deref(&self) -> &Sql {
        self.sql
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(error) = self.sql.batch("ROLLBACK") {
                tracing::warn!(%error, "rollback failed");
            }
        }
    }
}

/// A statement's parameters as the `postgres` client takes them.
type PgParams<'a> = [&'a (dyn postgres::types::ToSql + Sync)];

impl Postgres {
    /// Runs `sql` (prepared once) with `params` through `f`.
    fn run<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(
            &mut postgres::Client,
            &postgres::Statement,
            &PgParams<'_>,
        ) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let statement = self.statement(sql)?;
        let values: Vec<Value> = params.iter().map(|p| p.value()).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        f(&mut self.client, &statement, &refs).map_err(pg_error)
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        let text = pg_placeholders(sql);
        if let Some(statement) = self.statements.get(&text) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&text).map_err(pg_error)?;
        // The store's statements are a fixed set plus the search filters' combinations.
        if self.statements.len() >= 256 {
            self.statements.clear();
        }
        self.statements.insert(text, statement.clone());
        Ok(statement)
    }
}

/// The parameters as SQLite binds them: text borrowed, not copied.
fn sqlite_values<'a>(params: &'a [&'a dyn Param]) -> Vec<rusqlite::types::ToSqlOutput<'a>> {
    use rusqlite::types::{ToSqlOutput, ValueRef as Sqlite};
    params
        .iter()
        .map(|p| {
            ToSqlOutput::Borrowed(match p.value_ref() {
                ValueRef::Null => Sqlite::Null,
                ValueRef::Int(v) => Sqlite::Integer(v),
                ValueRef::Text(t) => Sqlite::Text(t.as_bytes()),
            })
        })
        .collect()
}

fn sqlite_value(value: rusqlite::types::ValueRef<'_>, idx: usize) -> Result<Value, StoreError> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(v) => Ok(Value::Int(v)),
        ValueRef::Text(bytes) => Ok(Value::Text(String::from_utf8_lossy(bytes).into_owned())),
        ValueRef::Real(_) | ValueRef::Blob(_) => Err(StoreError::Database(format!(
            "column {idx} holds a real or a blob; the store has integers and text only"
        ))),
    }
}

fn pg_row(row: &postgres::Row) -> Result<Row, StoreError> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(row.len());
    for (idx, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(idx)
                .map(|v| v.map(Value::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(idx)
                .map(|v| v.map(|v| Value::Int(v.into())))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(idx)
                .map(|v| v.map(|v| Value::Int(v.into())))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(idx)
                .map(|v| v.map(|v| Value::Int(v.into())))
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
            row.try_get::<_, Option<String>>(idx)
                .map(|v| v.map(Value::Text))
        } else {
            return Err(StoreError::Database(format!(
                "column {} is of type {ty}; the store reads integers and text only",
                column.name()
            )));
        };
        values.push(value.map_err(pg_error)?.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::BOOL => (*v != 0).to_sql(ty, out),
            Value::Int(v) => Err(format!("integer {v} for a parameter of type {ty}").into()),
            Value::Text(text) => text.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_error(error: postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Database(error.to_string()),
    }
}

/// `?N` becomes `$N` and each bare `?` the next number, outside quoted text.
pub(crate) fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut bare = 0;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    bare += 1;
                    out.push_str(&bare.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_and_quoted_text_is_left_alone() {
        assert_eq!(
            pg_placeholders("UPDATE calls SET a = ?2 WHERE b = ?1 AND c = '?3'"),
            "UPDATE calls SET a = $2 WHERE b = $1 AND c = '?3'"
        );
        assert_eq!(
            pg_placeholders("x >= ? AND x < ? AND \"by\" = ?"),
            "x >= $1 AND x < $2 AND \"by\" = $3"
        );
        assert_eq!(pg_placeholders("?10, ?9"), "$10, $9");
    }

    #[test]
    fn values_convert_both_ways_and_a_wrong_type_names_its_column() {
        assert_eq!(Some(5u32).value(), Value::Int(5));
        assert_eq!(None::<&str>.value(), Value::Null);
        assert_eq!(true.value(), Value::Int(1));
        assert_eq!("x".value(), Value::Text("x".into()));
        // The borrowed form agrees, for every kind of parameter.
        assert_eq!(Some(5u32).value_ref(), ValueRef::Int(5));
        assert_eq!(None::<&str>.value_ref(), ValueRef::Null);
        assert_eq!(true.value_ref(), ValueRef::Int(1));
        assert_eq!("x".value_ref(), ValueRef::Text("x"));
        assert_eq!(String::from("y").value_ref(), ValueRef::Text("y"));
        assert_eq!(Value::Text("z".into()).value_ref(), ValueRef::Text("z"));
        let row = Row(vec![Value::Int(7), Value::Null, Value::Text("t".into())]);
        assert_eq!(row.get::<u8>(0).expect("u8"), 7);
        assert!(row.get::<bool>(0).expect("bool"));
        assert_eq!(row.get::<Option<i64>>(1).expect("null"), None);
        assert_eq!(row.get::<String>(2).expect("text"), "t");
        let err = row.get::<i64>(2).unwrap_err().to_string();
        assert!(err.contains("column 2"), "{err}");
        assert!(row.get::<i64>(1).is_err(), "NULL is not a number");
        assert!(Row(vec![Value::Int(-1)]).get::<u32>(0).is_err());
    }

    #[test]
    fn a_transaction_rolls_back_unless_committed() {
        let sql = Sql::Sqlite(crate::store::pcache::connect(":memory:").expect("memory db"));
        sql.batch("CREATE TABLE t (v INTEGER)").expect("table");
        {
            let tx = sql.transaction().expect("begin");
            tx.execute("INSERT INTO t (v) VALUES (?1)", args![1i64])
                .expect("insert");
        }
        let tx = sql.transaction().expect("begin");
        tx.execute("INSERT INTO t (v) VALUES (?1)", args![2i64])
            .expect("insert");
        tx.commit().expect("commit");
        let rows = sql.query("SELECT v FROM t", args![]).expect("select");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<i64>(0).expect("v"), 2);
    }
}
