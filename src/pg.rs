//! PostgreSQL: connections, migrations (embedded in the binary, applied in order and recorded), the
//! binary COPY of clean events, and the offsets table that makes loading exactly-once.

use std::time::Duration;

use chrono::NaiveDateTime;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, NoTls, Transaction};

use crate::error::{Error, Result};
use crate::event::CleanEvent;

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

pub fn connect(cfg: &Config) -> Result<Client> {
    cfg.connect(NoTls).map_err(|e| {
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
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version TEXT PRIMARY KEY,
                     name TEXT NOT NULL,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .map_err(db("creating schema_migrations"))?;
        let done: Vec<String> = client
            .query("SELECT version FROM schema_migrations", &[])
            .map_err(db("reading schema_migrations"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
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

const COLUMNS: &str = "event_id, customer_id, event_type, amount, currency, event_timestamp";
const COLUMN_TYPES: [Type; 6] = [
    Type::VARCHAR,
    Type::VARCHAR,
    Type::VARCHAR,
    Type::NUMERIC,
    Type::VARCHAR,
    Type::TIMESTAMP,
];

/// Binary COPY of `rows` into `table` within `tx`.
pub fn copy_rows<'a, I>(
    tx: &mut Transaction<'_>,
    table: &str,
    rows: I,
) -> Result<u64, postgres::Error>
where
    I: IntoIterator<Item = &'a CleanEvent<'a>>,
{
    let sink = tx.copy_in(&format!(
        "COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"
    ))?;
    let mut writer = BinaryCopyInWriter::new(sink, &COLUMN_TYPES);
    for e in rows {
        let ts: NaiveDateTime = e.timestamp.naive_utc();
        let event_type = e.event_type.as_str();
        let values: [&(dyn ToSql + Sync); 6] = [
            &e.event_id.as_ref(),
            &e.customer_id.as_ref(),
            &event_type,
            &e.amount,
            &e.currency.as_ref(),
            &ts,
        ];
        writer.write(&values)?;
    }
    writer.finish()
}

/// Fallback for a batch that hit the unique key: COPY into a staging table, then insert what is new.
/// Returns the rows inserted (the rest were already there, or repeated within the batch).
pub fn copy_rows_dedup<'a, I>(tx: &mut Transaction<'_>, rows: I) -> Result<u64, postgres::Error>
where
    I: IntoIterator<Item = &'a CleanEvent<'a>>,
{
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS ecomlogs_staging
             (LIKE {TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
         TRUNCATE ecomlogs_staging"
    ))?;
    copy_rows(tx, "ecomlogs_staging", rows)?;
    tx.execute(
        &format!(
            "INSERT INTO {TABLE} ({COLUMNS})
             SELECT DISTINCT ON (event_id) {COLUMNS} FROM ecomlogs_staging ORDER BY event_id
             ON CONFLICT (event_id) DO NOTHING"
        ),
        &[],
    )
}

/// Records the next offsets to consume, never moving one backwards (a zombie from an older group
/// generation cannot rewind a partition).
pub fn store_offsets(
    tx: &mut Transaction<'_>,
    group: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), postgres::Error> {
    let topics: Vec<&str> = offsets.iter().map(|o| o.0.as_str()).collect();
    let partitions: Vec<i32> = offsets.iter().map(|o| o.1).collect();
    let next: Vec<i64> = offsets.iter().map(|o| o.2).collect();
    tx.execute(
        &format!(
            "INSERT INTO {OFFSETS_TABLE} AS o (group_id, topic, partition, next_offset)
             SELECT $1, t, p, n FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, n)
             ON CONFLICT (group_id, topic, partition) DO UPDATE
             SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()"
        ),
        &[&group, &topics, &partitions, &next],
    )?;
    Ok(())
}

/// The stored next offsets of `group` for these partitions (missing ones are absent).
pub fn load_offsets(
    client: &mut Client,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<Vec<(String, i32, i64)>, postgres::Error> {
    let topics: Vec<&str> = partitions.iter().map(|p| p.0.as_str()).collect();
    let parts: Vec<i32> = partitions.iter().map(|p| p.1).collect();
    let rows = client.query(
        &format!(
            "SELECT o.topic, o.partition, o.next_offset FROM {OFFSETS_TABLE} o
             JOIN unnest($2::text[], $3::int[]) AS u(t, p) ON o.topic = u.t AND o.partition = u.p
             WHERE o.group_id = $1"
        ),
        &[&group, &topics, &parts],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
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

/// True for errors that mean "the database is not reachable right now" (retry, never dead-letter),
/// as opposed to the database rejecting a particular row.
pub fn is_outage(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O, TLS, protocol: no SQLSTATE means the server never judged the data
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || c == "40001" // serialization failure
                || c == "40P01" // deadlock
                || c == "55P03" // lock not available
                || c == "57014" // query cancelled (statement timeout)
        }
    }
}
