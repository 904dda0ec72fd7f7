//! PostgreSQL: connections, migrations (embedded in the binary, applied in order and recorded), the
//! binary COPY of clean events, and the offsets table that makes loading exactly-once.

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use chrono::NaiveDateTime;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, Config, CopyInWriter, NoTls, Transaction};
use rust_decimal::Decimal;
use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::event::{CleanEvent, EventType};
use crate::resume::{Fingerprint, StoredPosition};

pub const TABLE: &str = "kafka_events_silver";
pub const OFFSETS_TABLE: &str = "ecomlogs_kafka_offsets";
pub const DEFAULT_DSN: &str = "postgresql://postgres@localhost:5432/ecom_kafka";

/// (version, name, sql), in order. Embedded so an installed package needs no source tree.
pub const MIGRATIONS: &[(&str, &str, &str)] = &[
    (
        "0001",
        "kafka_events_silver",
        include_str!("../migrations/0001_kafka_events_silver.sql"),
    ),
    (
        "0002",
        "unique_event_id",
        include_str!("../migrations/0002_unique_event_id.sql"),
    ),
    (
        "0003",
        "kafka_offsets",
        include_str!("../migrations/0003_kafka_offsets.sql"),
    ),
    (
        "0004",
        "analytics_views",
        include_str!("../migrations/0004_analytics_views.sql"),
    ),
    (
        "0005",
        "log_identity",
        include_str!("../migrations/0005_log_identity.sql"),
    ),
];

/// Serialises migration runs of concurrent loaders (an arbitrary, fixed advisory-lock key).
const MIGRATION_LOCK: i64 = 0x0ec0_1095;

pub fn parse_dsn(dsn: &str) -> Result<Config> {
    let mut cfg: Config = dsn
        .parse()
        .map_err(|e: postgres::Error| Error::Config(format!("invalid PostgreSQL DSN: {e}")))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    cfg.application_name("ecomlogs");
    Ok(cfg)
}

/// A DSN for messages: the password, if any, is never shown.
pub fn describe_dsn(cfg: &Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        cfg.get_user().unwrap_or("?"),
        host,
        port,
        cfg.get_dbname().unwrap_or("?")
    )
}

/// Opens a connection; the error is the driver's, for [`classify`].
pub fn open(cfg: &Config) -> Result<Client, postgres::Error> {
    cfg.connect(NoTls)
}

pub fn connect(cfg: &Config) -> Result<Client> {
    open(cfg).map_err(|e| {
        Error::database(
            format!("connecting to PostgreSQL at {}", describe_dsn(cfg)),
            &e,
        )
    })
}

/// Applies the migrations not yet recorded in `schema_migrations`; returns the versions applied now.
/// Safe to run twice and from two processes at once (an advisory lock serialises them).
pub fn migrate(client: &mut Client) -> Result<Vec<String>> {
    let db = |what: &str| {
        let what = what.to_string();
        move |e: postgres::Error| Error::database(what.clone(), &e)
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db("taking the migration lock"))?;
    let result = (|| {
        let done = applied_migrations(client)?;
        if MIGRATIONS
            .iter()
            .all(|(v, _, _)| done.iter().any(|d| d == v))
        {
            return Ok(Vec::new()); // up to date: a role that may not create tables still gets here
        }
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version TEXT PRIMARY KEY,
                     name TEXT NOT NULL,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .map_err(db("creating schema_migrations"))?;
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if done.iter().any(|d| d == version) {
                continue;
            }
            let mut tx = client.transaction().map_err(db("beginning a migration"))?;
            tx.batch_execute(sql)
                .map_err(|e| Error::database(format!("applying migration {version}_{name}"), &e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .map_err(db("recording a migration"))?;
            tx.commit().map_err(db("committing a migration"))?;
            log::info!(target: "ecomlogs.pg", "applied migration {version}_{name}");
            applied.push(version.to_string());
        }
        Ok(applied)
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

/// The versions recorded in `schema_migrations` (none when the table does not exist yet).
fn applied_migrations(client: &mut Client) -> Result<Vec<String>> {
    let db = |e: postgres::Error| Error::database("reading schema_migrations", &e);
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(db)?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    Ok(client
        .query("SELECT version FROM schema_migrations", &[])
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Checks, before any record is read, that the schema is complete and writable by this role: a loader
/// that cannot store rows must say so at once, not retry forever.
pub fn check_schema(client: &mut Client) -> Result<()> {
    let fault = |sqlstate: &str, message: String| Error::Database {
        context: "checking the schema".into(),
        sqlstate: Some(sqlstate.into()),
        message,
    };
    let db = |e: postgres::Error| Error::database("checking the schema", &e);
    let applied = applied_migrations(client)?;
    let pending: Vec<String> = MIGRATIONS
        .iter()
        .filter(|(v, _, _)| !applied.iter().any(|a| a == v))
        .map(|(v, n, _)| format!("{v}_{n}"))
        .collect();
    if !pending.is_empty() {
        return Err(fault(
            "42P01",
            format!(
                "the database lacks migrations {} (run `ecomlogs migrate`, or start the loader without --no-migrate)",
                pending.join(", ")
            ),
        ));
    }
    for (table, privileges) in [
        (TABLE, "SELECT, INSERT"),
        (OFFSETS_TABLE, "SELECT, INSERT, UPDATE"),
    ] {
        let ok: bool = client
            .query_one(
                "SELECT has_table_privilege(current_user, $1::text::regclass, $2)",
                &[&table, &privileges.replace(", ", ",")],
            )
            .map_err(db)?
            .get(0);
        if !ok {
            let user: String = client
                .query_one("SELECT current_user::text", &[])
                .map_err(db)?
                .get(0);
            return Err(fault(
                "42501",
                format!(
                    "permission denied for table {table}: role {user} needs {privileges} on it"
                ),
            ));
        }
    }
    Ok(())
}

const COLUMNS: &str = "event_id, customer_id, event_type, amount, currency, event_timestamp";

/// Bytes handed to the connection at a time. `postgres::binary_copy::BinaryCopyInWriter` enters the
/// client's async runtime once per row, which cost the loader about a tenth of its CPU; encoding rows
/// into a buffer and sending it in large chunks enters it once per chunk.
const COPY_CHUNK: usize = 1 << 20;

/// The binary COPY signature, flags and header-extension length ("Binary Format" in the COPY docs).
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Appends one value of the binary COPY tuple format: its length (i32), then the bytes `ToSql` wrote.
fn put_field<T: ToSql>(buf: &mut BytesMut, value: &T, ty: &Type) {
    let at = buf.len();
    buf.put_i32(0);
    // Every column value comes from a validated CleanEvent: strings, a NUMERIC(10,2)-sized Decimal and a
    // timestamp in PostgreSQL's range, whose encoders cannot fail (they only write bytes).
    let len = match value.to_sql(ty, buf) {
        Ok(IsNull::No) => (buf.len() - at - 4) as i32,
        Ok(IsNull::Yes) => -1,
        Err(e) => unreachable!("encoding a validated {ty} value failed: {e}"),
    };
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_row(buf: &mut BytesMut, e: &CleanEvent<'_>) {
    let ts: NaiveDateTime = e.timestamp.naive_utc();
    buf.put_i16(6);
    put_field(buf, &e.event_id.as_ref(), &Type::VARCHAR);
    put_field(buf, &e.customer_id.as_ref(), &Type::VARCHAR);
    put_field(buf, &e.event_type.as_str(), &Type::VARCHAR);
    put_field(buf, &e.amount, &Type::NUMERIC);
    put_field(buf, &e.currency.as_ref(), &Type::VARCHAR);
    put_field(buf, &ts, &Type::TIMESTAMP);
}

/// Sends `buf` to the server; a failure there is the connection's `postgres::Error`.
fn send_chunk(sink: &mut CopyInWriter<'_>, buf: &mut BytesMut) -> Result<(), postgres::Error> {
    let sent = sink.write_all(buf).and_then(|()| sink.flush());
    buf.clear();
    sent.map_err(|e| {
        match e
            .into_inner()
            .map(|inner| inner.downcast::<postgres::Error>())
        {
            Some(Ok(pg)) => *pg,
            // CopyInWriter's only error source is the connection (see its Write impl).
            _ => unreachable!("CopyInWriter failed without a postgres::Error"),
        }
    })
}

/// A batch of rows already encoded as binary COPY tuples, back to back in one buffer: a row costs no
/// allocation of its own, and rows can be sent in any order.
#[derive(Default)]
pub struct CopyRows {
    buf: BytesMut,
    /// Per row: the sort key (see [`CopyRows::key_order`]) and where its tuple ends in `buf`.
    rows: Vec<(u128, usize)>,
}

impl CopyRows {
    pub fn with_capacity(rows: usize) -> Self {
        CopyRows {
            buf: BytesMut::with_capacity(rows * 128),
            rows: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, e: &CleanEvent<'_>) {
        encode_row(&mut self.buf, e);
        let mut prefix = [0u8; 16];
        let n = e.event_id.len().min(16);
        prefix[..n].copy_from_slice(&e.event_id.as_bytes()[..n]);
        self.rows
            .push((u128::from_be_bytes(prefix), self.buf.len()));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows.clear();
    }

    /// Row `i`'s tuple.
    pub fn tuple(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.rows[i - 1].1 };
        &self.buf[start..self.rows[i].1]
    }

    /// The tuples of the rows in `range`, in arrival order.
    pub fn tuples(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &[u8]> + '_ {
        range.map(|i| self.tuple(i))
    }

    /// Row `i` decoded back (for a row the database rejected, which goes to the dead-letter topic).
    pub fn event(&self, i: usize) -> CleanEvent<'_> {
        decode_row(self.tuple(i))
    }

    /// The order in which to COPY the rows: ascending by the first 16 bytes of the event id (byte order,
    /// as PostgreSQL's C collation and UUID text in any collation compare). Inserting a batch in the
    /// unique index's order turns its random leaf-page visits into one sweep: PostgreSQL spends about a
    /// quarter less CPU on a 50k-row batch (see `bench/PROFILE.md`). Only the cost depends on it, never
    /// the result: any order stores the same rows.
    pub fn key_order(&self) -> Vec<u32> {
        let mut keyed: Vec<(u128, u32)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (*k, i as u32))
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, i)| i).collect()
    }
}

/// The inverse of `encode_row`, for tuples it wrote.
fn decode_row(mut t: &[u8]) -> CleanEvent<'_> {
    fn next<'a>(t: &mut &'a [u8]) -> &'a [u8] {
        let len = i32::from_be_bytes(t[..4].try_into().expect("4 bytes")) as usize;
        let (v, rest) = t[4..].split_at(len);
        *t = rest;
        v
    }
    fn text<'a>(t: &mut &'a [u8]) -> &'a str {
        std::str::from_utf8(next(t)).expect("encode_row wrote UTF-8")
    }
    t = &t[2..];
    let event_id = text(&mut t);
    let customer_id = text(&mut t);
    let event_type = EventType::parse(text(&mut t)).expect("encode_row wrote an event type");
    let amount =
        Decimal::from_sql(&Type::NUMERIC, next(&mut t)).expect("encode_row wrote a NUMERIC");
    let currency = text(&mut t);
    let ts = NaiveDateTime::from_sql(&Type::TIMESTAMP, next(&mut t))
        .expect("encode_row wrote a TIMESTAMP");
    CleanEvent {
        event_id: Cow::Borrowed(event_id),
        customer_id: Cow::Borrowed(customer_id),
        event_type,
        amount,
        currency: Cow::Borrowed(currency),
        timestamp: ts.and_utc(),
    }
}

/// Binary COPY of the encoded `tuples` into `table` within `tx`, in 1 MB messages.
pub fn copy_rows<'a, I>(
    tx: &mut Transaction<'_>,
    table: &str,
    tuples: I,
) -> Result<u64, postgres::Error>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut sink = tx.copy_in(&format!(
        "COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"
    ))?;
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
    buf.put_slice(COPY_HEADER);
    for t in tuples {
        buf.put_slice(t);
        if buf.len() >= COPY_CHUNK {
            send_chunk(&mut sink, &mut buf)?;
        }
    }
    buf.put_i16(-1);
    send_chunk(&mut sink, &mut buf)?;
    sink.finish()
}

/// Fallback for a batch that hit the unique key: COPY into a staging table, then insert what is new.
/// Returns the rows inserted (the rest were already there, or repeated within the batch).
pub fn copy_rows_dedup<'a, I>(tx: &mut Transaction<'_>, tuples: I) -> Result<u64, postgres::Error>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS ecomlogs_staging
             (LIKE {TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
         TRUNCATE ecomlogs_staging"
    ))?;
    copy_rows(tx, "ecomlogs_staging", tuples)?;
    tx.execute(
        &format!(
            "INSERT INTO {TABLE} ({COLUMNS})
             SELECT DISTINCT ON (event_id) {COLUMNS} FROM ecomlogs_staging ORDER BY event_id
             ON CONFLICT (event_id) DO NOTHING"
        ),
        &[],
    )
}

/// One partition's progress, stored with the batch that made it: the next offset to read and the
/// fingerprint of the record just before it (see `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    pub next_offset: i64,
    pub last: Fingerprint,
}

/// Records the next offsets to consume with the log identity, never moving one backwards (a zombie from
/// an older group generation cannot rewind a partition); the fingerprint always belongs to the offset
/// kept.
pub fn store_offsets(
    tx: &mut Transaction<'_>,
    group: &str,
    topic: &str,
    topic_id: Option<&str>,
    progress: &[PartitionProgress],
) -> Result<(), postgres::Error> {
    let partitions: Vec<i32> = progress.iter().map(|o| o.partition).collect();
    let next: Vec<i64> = progress.iter().map(|o| o.next_offset).collect();
    let ts: Vec<i64> = progress.iter().map(|o| o.last.timestamp_ms).collect();
    let hash: Vec<i64> = progress.iter().map(|o| o.last.hash).collect();
    tx.execute(
        &format!(
            "INSERT INTO {OFFSETS_TABLE} AS o
                 (group_id, topic, partition, next_offset, topic_id, last_timestamp_ms, last_hash)
             SELECT $1, $2, p, n, $3, t, h
             FROM unnest($4::int[], $5::bigint[], $6::bigint[], $7::bigint[]) AS u(p, n, t, h)
             ON CONFLICT (group_id, topic, partition) DO UPDATE SET
                 topic_id = coalesce(EXCLUDED.topic_id, o.topic_id),
                 last_timestamp_ms = CASE WHEN EXCLUDED.next_offset >= o.next_offset
                                          THEN EXCLUDED.last_timestamp_ms ELSE o.last_timestamp_ms END,
                 last_hash = CASE WHEN EXCLUDED.next_offset >= o.next_offset
                                  THEN EXCLUDED.last_hash ELSE o.last_hash END,
                 next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset),
                 updated_at = now()"
        ),
        &[&group, &topic, &topic_id, &partitions, &next, &ts, &hash],
    )?;
    Ok(())
}

/// What is stored for `group` on these partitions of `topic` (partitions with nothing stored are absent).
pub fn load_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, StoredPosition)>, postgres::Error> {
    let rows = client.query(
        &format!(
            "SELECT partition, next_offset, topic_id, last_timestamp_ms, last_hash FROM {OFFSETS_TABLE}
             WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)"
        ),
        &[&group, &topic, &partitions],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let last = match (r.get::<_, Option<i64>>(3), r.get::<_, Option<i64>>(4)) {
                (Some(timestamp_ms), Some(hash)) => Some(Fingerprint { timestamp_ms, hash }),
                _ => None,
            };
            let position = StoredPosition {
                next_offset: r.get(1),
                topic_id: r.get(2),
                last,
            };
            (r.get(0), position)
        })
        .collect())
}

/// Starts a partition's record again for a new log (reset broker, re-created topic, retention loss):
/// the stored offset belongs to a log that no longer exists, and must not hold the new one back.
pub fn restart_offset(
    client: &mut Client,
    group: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
    topic_id: Option<&str>,
) -> Result<(), postgres::Error> {
    client.execute(
        &format!(
            "UPDATE {OFFSETS_TABLE} SET next_offset = $4, topic_id = $5, last_timestamp_ms = NULL,
                 last_hash = NULL, log_restarts = log_restarts + 1, updated_at = now()
             WHERE group_id = $1 AND topic = $2 AND partition = $3"
        ),
        &[&group, &topic, &partition, &next_offset, &topic_id],
    )?;
    Ok(())
}

/// Column names and rows of a query, every value as text (NULL as None).
pub type TextTable = (Vec<String>, Vec<Vec<Option<String>>>);

/// Runs a read-only query and returns the rows as text (for reports and notebooks).
pub fn query_text(client: &mut Client, sql: &str) -> Result<TextTable> {
    let msgs = client
        .simple_query(sql)
        .map_err(|e| Error::database("running a query", &e))?;
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            postgres::SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            postgres::SimpleQueryMessage::Row(r) => {
                if columns.is_empty() {
                    columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    Ok((columns, rows))
}

/// What a database error means for the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or cannot serve right now: wait, reconnect and retry (never
    /// dead-letter for this).
    Outage,
    /// The server judged the data: a row it will never accept (isolate it, dead-letter it).
    Rejected,
    /// Waiting will not help (missing table, permission denied, authentication, ...): stop the stage.
    Fault,
}

/// Sorts an error by its SQLSTATE class (PostgreSQL manual, Appendix A).
pub fn classify(e: &postgres::Error) -> Failure {
    if e.is_closed() {
        return Failure::Outage;
    }
    // No verdict from the server (I/O, TLS, a broken protocol exchange): the connection is suspect.
    let Some(db) = e.as_db_error() else {
        return Failure::Outage;
    };
    classify_sqlstate(db.code().code())
}

pub fn classify_sqlstate(code: &str) -> Failure {
    match code {
        // serialization failure, deadlock, lock not available, object in use, query cancelled
        // (statement timeout), read-only transaction (a standby during failover)
        "40001" | "40P01" | "55P03" | "55006" | "57014" | "25006" => Failure::Outage,
        _ => match code.get(..2).unwrap_or("") {
            // connection exception, insufficient resources, operator intervention (shutdown, cannot
            // connect now), system error (I/O)
            "08" | "53" | "57" | "58" => Failure::Outage,
            // data exception, integrity constraint violation, program limit exceeded (row too big),
            // WITH CHECK OPTION violation
            "22" | "23" | "54" | "44" => Failure::Rejected,
            _ => Failure::Fault,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn field(buf: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let len = i32::from_be_bytes(buf[*at..*at + 4].try_into().unwrap());
        *at += 4;
        if len < 0 {
            return None;
        }
        let v = buf[*at..*at + len as usize].to_vec();
        *at += len as usize;
        Some(v)
    }

    #[test]
    fn sqlstates_sort_into_outage_rejection_and_fault() {
        for code in [
            "08006", "57P01", "57P03", "53300", "40001", "40P01", "58030",
        ] {
            assert_eq!(classify_sqlstate(code), Failure::Outage, "{code}");
        }
        for code in ["23514", "23502", "22001", "22P02", "54000"] {
            assert_eq!(classify_sqlstate(code), Failure::Rejected, "{code}");
        }
        // missing table, permission denied, bad password, missing database, internal error
        for code in ["42P01", "42501", "28P01", "3D000", "XX000", "0A000"] {
            assert_eq!(classify_sqlstate(code), Failure::Fault, "{code}");
        }
    }

    #[test]
    fn binary_copy_tuple_layout() {
        let e = CleanEvent {
            event_id: Cow::Borrowed("0b9f2a8e-1c3d-4e5f-8a7b-6c5d4e3f2a1b"),
            customer_id: Cow::Borrowed("cust_42"),
            event_type: EventType::Purchase,
            amount: Decimal::new(12345, 2),
            currency: Cow::Borrowed("EUR"),
            timestamp: Utc.with_ymd_and_hms(2000, 1, 2, 0, 0, 1).unwrap(),
        };
        let mut buf = BytesMut::new();
        buf.put_slice(COPY_HEADER);
        encode_row(&mut buf, &e);
        assert_eq!(&buf[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(COPY_HEADER.len(), 19);
        let mut at = COPY_HEADER.len();
        assert_eq!(i16::from_be_bytes([buf[at], buf[at + 1]]), 6);
        at += 2;
        let text = |v: Option<Vec<u8>>| String::from_utf8(v.unwrap()).unwrap();
        assert_eq!(text(field(&buf, &mut at)), e.event_id);
        assert_eq!(text(field(&buf, &mut at)), "cust_42");
        assert_eq!(text(field(&buf, &mut at)), "PURCHASE");
        // NUMERIC 123.45: 2 base-10000 digits (123, 4500), weight 0, positive, scale 2.
        assert_eq!(
            field(&buf, &mut at).unwrap(),
            [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
        );
        assert_eq!(text(field(&buf, &mut at)), "EUR");
        // TIMESTAMP: microseconds since 2000-01-01 00:00:00.
        let micros = i64::from_be_bytes(field(&buf, &mut at).unwrap().try_into().unwrap());
        assert_eq!(micros, 86_401_000_000);
        assert_eq!(at, buf.len());
    }

    fn event(id: &'static str, cents: i64) -> CleanEvent<'static> {
        CleanEvent {
            event_id: Cow::Borrowed(id),
            customer_id: Cow::Borrowed("cust_7"),
            event_type: EventType::AddToCart,
            amount: Decimal::new(cents, 2),
            currency: Cow::Borrowed("USD"),
            timestamp: Utc.with_ymd_and_hms(2026, 11, 26, 21, 30, 0).unwrap()
                + chrono::Duration::microseconds(123_456),
        }
    }

    #[test]
    fn copy_rows_keep_tuples_and_decode_back() {
        let events = [
            event("b-1", 1),
            event("a-2", 99_999_999),
            event("c-3", 1050),
        ];
        let mut rows = CopyRows::with_capacity(1);
        for e in &events {
            rows.push(e);
        }
        assert_eq!(rows.len(), 3);
        for (i, e) in events.iter().enumerate() {
            let mut alone = BytesMut::new();
            encode_row(&mut alone, e);
            assert_eq!(rows.tuple(i), &alone[..]);
            assert_eq!(&rows.event(i), e);
        }
        rows.clear();
        assert!(rows.is_empty());
        rows.push(&events[2]);
        assert_eq!(rows.event(0), events[2]);
    }

    #[test]
    fn key_order_sorts_by_id_bytes_and_keeps_every_row() {
        let ids = [
            "f0000000-0000-4000-8000-000000000000",
            "0b9f2a8e-1c3d-4e5f-8a7b-6c5d4e3f2a1b",
            "",
            "0b9f2a8e-1c3d-4e5f-8a7b-6c5d4e3f2a1a",
            "a",
            "0b9f2a8e-1c3d-4e5f",
        ];
        let mut rows = CopyRows::default();
        for id in ids {
            rows.push(&event(id, 100));
        }
        let order = rows.key_order();
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..ids.len() as u32).collect::<Vec<_>>());
        let sorted: Vec<&str> = order.iter().map(|&i| ids[i as usize]).collect();
        // By the first 16 bytes; ids equal there keep no particular order among themselves.
        let prefix = |s: &str| s.as_bytes()[..s.len().min(16)].to_vec();
        assert!(
            sorted.windows(2).all(|w| prefix(w[0]) <= prefix(w[1])),
            "{sorted:?}"
        );
        assert_eq!(sorted[0], "");
        assert_eq!(sorted[5], "f0000000-0000-4000-8000-000000000000");
    }
}
