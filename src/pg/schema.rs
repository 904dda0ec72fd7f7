//! The schema: migrations embedded in the binary, applied all or nothing and recorded, and the check a
//! loader makes before it reads anything.
//!
//! Every pending migration runs in ONE transaction (PostgreSQL's DDL is transactional), recorded in
//! `schema_migrations` in that same transaction: a run that fails anywhere leaves the schema exactly as
//! it was, and says why. A migration may have a `prepare` step that runs in that transaction just before
//! its SQL (reading the data it is about to constrain, fixing it when asked to), and reports its steps
//! through [`Run::step`]; each migration is logged with its duration and the run with a summary.

use std::time::{Duration, Instant};

use postgres::{Client, Transaction};

use super::{OFFSETS_TABLE, TABLE};
use crate::error::{Error, Result};

/// Where `--move-duplicates` keeps the extra copies of an event: the table's columns plus `moved_at`.
pub const DUPLICATES_TABLE: &str = "kafka_events_silver_duplicates";

/// How a user fixes duplicates that block the unique key (named in every refusal).
pub const MOVE_DUPLICATES_FIX: &str = "run `ecomlogs migrate --move-duplicates` (Python: \
     `ecomlogs.migrate(dsn, move_duplicates=True)`) to keep the row with the lowest id of each event_id \
     and move the other copies to kafka_events_silver_duplicates";

/// Runs in the migrations' transaction just before a migration's SQL; on a dry run, instead of it
/// (the transaction is then read-only and rolled back, so it can only read).
pub type Prepare = fn(&mut Run<'_, '_>) -> Result<()>;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: &'static str,
    pub name: &'static str,
    pub sql: &'static str,
    pub prepare: Option<Prepare>,
    /// Runs in the transaction right after the migration's SQL (not on a dry run).
    pub finish: Option<Prepare>,
}

impl Migration {
    pub fn label(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

/// In order. Embedded so an installed package needs no source tree.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: "0001",
        name: "kafka_events_silver",
        sql: include_str!("../../migrations/0001_kafka_events_silver.sql"),
        prepare: None,
        finish: None,
    },
    Migration {
        version: "0002",
        name: "unique_event_id",
        sql: include_str!("../../migrations/0002_unique_event_id.sql"),
        prepare: Some(prepare_unique_event_id),
        finish: None,
    },
    Migration {
        version: "0003",
        name: "kafka_offsets",
        sql: include_str!("../../migrations/0003_kafka_offsets.sql"),
        prepare: None,
        finish: None,
    },
    Migration {
        version: "0004",
        name: "analytics_views",
        sql: include_str!("../../migrations/0004_analytics_views.sql"),
        prepare: None,
        finish: None,
    },
    Migration {
        version: "0005",
        name: "log_identity",
        sql: include_str!("../../migrations/0005_log_identity.sql"),
        prepare: None,
        finish: None,
    },
    Migration {
        version: "0006",
        name: "partitioned_history",
        sql: include_str!("../../migrations/0006_partitioned_history.sql"),
        prepare: Some(prepare_partitioned_history),
        finish: Some(finish_partitioned_history),
    },
    Migration {
        version: "0007",
        name: "top_customers_index",
        sql: include_str!("../../migrations/0007_top_customers_index.sql"),
        prepare: None,
        finish: None,
    },
];

/// Serialises migration runs of concurrent loaders (an arbitrary, fixed advisory-lock key).
const MIGRATION_LOCK: i64 = 0x0ec0_1095;

/// What a migration run may do besides applying the SQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateOptions {
    /// Before the unique key on `event_id`: move every copy of a duplicated event but the one with the
    /// lowest id into [`DUPLICATES_TABLE`], in the same transaction (nothing is deleted without being
    /// kept). Without it, duplicates stop the run before anything changes.
    pub move_duplicates: bool,
    /// Say what would be applied, and what stands in the way, without changing anything.
    pub dry_run: bool,
}

/// A migration applied (or, on a dry run, that would be).
#[derive(Debug, Clone)]
pub struct Applied {
    pub version: &'static str,
    pub name: &'static str,
    pub elapsed: Duration,
}

/// Event ids stored more than once in the events table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Duplicates {
    /// Event ids with more than one row.
    pub event_ids: i64,
    /// Rows beyond the first of each: what `--move-duplicates` moves.
    pub extra_rows: i64,
    /// A few of them (the earliest stored), with every row id each has.
    pub examples: Vec<(String, Vec<i64>)>,
}

impl std::fmt::Display for Duplicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TABLE} holds {} event_id{} stored more than once ({} extra row{})",
            self.event_ids,
            plural(self.event_ids),
            self.extra_rows,
            plural(self.extra_rows)
        )?;
        for (i, (event_id, ids)) in self.examples.iter().enumerate() {
            f.write_str(if i == 0 { ", e.g. " } else { ", " })?;
            let shown: Vec<String> = ids.iter().take(5).map(i64::to_string).collect();
            let more = if ids.len() > 5 { ", ..." } else { "" };
            write!(f, "{event_id:?} (ids {}{more})", shown.join(", "))?;
        }
        Ok(())
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What a run did (or, on a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct MigrateReport {
    pub applied: Vec<Applied>,
    /// Found before the unique key was added (it was pending and the table existed).
    pub duplicates: Option<Duplicates>,
    /// Rows moved to [`DUPLICATES_TABLE`] (0 on a dry run).
    pub moved: u64,
    pub dry_run: bool,
    pub elapsed: Duration,
}

/// A migration in progress: its transaction, the run's options, and a way to report steps.
pub struct Run<'t, 'c> {
    pub tx: &'t mut Transaction<'c>,
    pub options: MigrateOptions,
    pub migration: &'static Migration,
    pub report: &'t mut MigrateReport,
    started: Instant,
}

impl Run<'_, '_> {
    /// Logs a step of a long migration with the time since the migration started.
    pub fn step(&self, what: &str) {
        log::info!(
            target: "ecomlogs.pg",
            "migration {}: {what} ({})",
            self.migration.label(),
            took(self.started.elapsed())
        );
    }
}

/// Applies the migrations not yet recorded in `schema_migrations`; returns the versions applied now.
/// Safe to run twice and from two processes at once (an advisory lock serialises them).
pub fn migrate(client: &mut Client) -> Result<Vec<String>> {
    Ok(migrate_with(client, &MigrateOptions::default())?
        .applied
        .iter()
        .map(|a| a.version.to_string())
        .collect())
}

/// Applies every pending migration in one transaction (all or nothing), recorded in the same one.
pub fn migrate_with(client: &mut Client, options: &MigrateOptions) -> Result<MigrateReport> {
    let started = Instant::now();
    let db = |what: &'static str| move |e: postgres::Error| Error::database(what, &e);
    let mut tx = client
        .transaction()
        .map_err(db("beginning the migrations"))?;
    if options.dry_run {
        tx.batch_execute("SET TRANSACTION READ ONLY")
            .map_err(db("beginning the migrations"))?;
    } else {
        // Held until the transaction ends, whichever way: concurrent runs wait, then find nothing to do.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(db("taking the migration lock"))?;
    }
    let done = applied_migrations(&mut tx)?;
    let pending: Vec<&'static Migration> = MIGRATIONS
        .iter()
        .filter(|m| !done.iter().any(|d| d == m.version))
        .collect();
    let mut report = MigrateReport {
        dry_run: options.dry_run,
        ..MigrateReport::default()
    };
    if pending.is_empty() {
        // Up to date: a role that may not create tables still gets here.
        return Ok(report);
    }
    if options.dry_run {
        let labels: Vec<String> = pending.iter().map(|m| m.label()).collect();
        log::info!(target: "ecomlogs.pg", "would apply {}", labels.join(", "));
    } else {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version TEXT PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .map_err(db("creating schema_migrations"))?;
    }
    let total = pending.len();
    for (i, migration) in pending.into_iter().enumerate() {
        let label = migration.label();
        let context = format!("applying migration {label}");
        let at = Instant::now();
        log::debug!(target: "ecomlogs.pg", "applying migration {label} ({} of {total})", i + 1);
        if let Some(prepare) = migration.prepare {
            prepare(&mut Run {
                tx: &mut tx,
                options: *options,
                migration,
                report: &mut report,
                started: at,
            })?;
        }
        if !options.dry_run {
            tx.batch_execute(migration.sql)
                .map_err(|e| Error::database(format!("{context} (nothing was changed)"), &e))?;
            if let Some(finish) = migration.finish {
                finish(&mut Run {
                    tx: &mut tx,
                    options: *options,
                    migration,
                    report: &mut report,
                    started: at,
                })?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .map_err(db("recording a migration"))?;
            log::info!(target: "ecomlogs.pg", "migration {label} done in {}", took(at.elapsed()));
        }
        report.applied.push(Applied {
            version: migration.version,
            name: migration.name,
            elapsed: at.elapsed(),
        });
    }
    if options.dry_run {
        // Rolled back on drop: a dry run changes nothing (and could not: it was read-only).
        report.elapsed = started.elapsed();
        return Ok(report);
    }
    tx.commit()
        .map_err(db("committing the migrations (nothing was changed)"))?;
    report.elapsed = started.elapsed();
    log::info!(
        target: "ecomlogs.pg",
        "applied {} migration{} in one transaction in {}{}",
        report.applied.len(),
        plural(report.applied.len() as i64),
        took(report.elapsed),
        match report.moved {
            0 => String::new(),
            n => format!("; {n} extra cop{} of duplicated events moved to {DUPLICATES_TABLE}", if n == 1 { "y" } else { "ies" }),
        }
    );
    Ok(report)
}

/// History in daily partitions: an existing table steps aside (and the plan is logged) ...
fn prepare_partitioned_history(run: &mut Run<'_, '_>) -> Result<()> {
    let context = format!("applying migration {}", run.migration.label());
    super::history::prepare_upgrade(run.tx, run.options.dry_run)
        .map_err(|e| Error::database(context, &e))
}

/// ... and its rows move in, the rollups are built from them.
fn finish_partitioned_history(run: &mut Run<'_, '_>) -> Result<()> {
    let context = format!("applying migration {}", run.migration.label());
    super::history::finish_upgrade(run.tx).map_err(|e| Error::database(context, &e))
}

/// Before the unique key on `event_id`: an existing table (the original system's has no such key)
/// may hold the same event more than once. Say so with numbers and examples, or, when asked, move the
/// extra copies aside; never let `CREATE UNIQUE INDEX` fail with just one key in its DETAIL.
fn prepare_unique_event_id(run: &mut Run<'_, '_>) -> Result<()> {
    let context = format!("applying migration {}", run.migration.label());
    let db = |e: postgres::Error| Error::database(context.clone(), &e);
    if !table_exists(run.tx, TABLE).map_err(db)? {
        return Ok(()); // a dry run on an empty database: 0001 would create it, empty
    }
    if !run.options.dry_run {
        // No writer may add a copy between the count and the key (readers carry on).
        run.tx
            .batch_execute(&format!("LOCK TABLE {TABLE} IN SHARE MODE"))
            .map_err(db)?;
    }
    let Some(duplicates) = find_duplicates(run.tx).map_err(db)? else {
        return Ok(());
    };
    if !run.options.move_duplicates {
        return Err(Error::Database {
            context,
            sqlstate: Some("23505".into()),
            message: format!("{duplicates}; nothing was changed: {MOVE_DUPLICATES_FIX}"),
        });
    }
    run.step(&duplicates.to_string());
    run.report.duplicates = Some(duplicates.clone());
    if run.options.dry_run {
        run.step(&format!(
            "would move {} extra row{} to {DUPLICATES_TABLE}",
            duplicates.extra_rows,
            plural(duplicates.extra_rows)
        ));
        return Ok(());
    }
    run.tx
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {DUPLICATES_TABLE} (
                 LIKE {TABLE},
                 moved_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .map_err(db)?;
    // Every copy but the lowest id of each event_id, deleted and inserted by one statement.
    let moved = run
        .tx
        .execute(
            &format!(
                "WITH dup AS (
                     SELECT event_id, min(id) AS keep FROM {TABLE}
                     WHERE event_id IS NOT NULL GROUP BY event_id HAVING count(*) > 1),
                 moved AS (
                     DELETE FROM {TABLE} t USING dup
                     WHERE t.event_id = dup.event_id AND t.id <> dup.keep
                     RETURNING t.*)
                 INSERT INTO {DUPLICATES_TABLE} SELECT moved.*, now() FROM moved"
            ),
            &[],
        )
        .map_err(db)?;
    run.report.moved += moved;
    run.step(&format!(
        "moved {moved} extra row{} to {DUPLICATES_TABLE} (the lowest id of each event_id stays)",
        plural(moved as i64)
    ));
    Ok(())
}

fn table_exists(
    client: &mut impl postgres::GenericClient,
    table: &str,
) -> Result<bool, postgres::Error> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])?
        .get(0))
}

/// Event ids with more than one row: counts, and the three stored first with their row ids.
fn find_duplicates(
    client: &mut impl postgres::GenericClient,
) -> Result<Option<Duplicates>, postgres::Error> {
    let rows = client.query(
        &format!(
            "WITH dup AS MATERIALIZED (
                 SELECT event_id, count(*) AS n, min(id) AS first_id FROM {TABLE}
                 WHERE event_id IS NOT NULL GROUP BY event_id HAVING count(*) > 1),
             example AS (SELECT event_id, first_id FROM dup ORDER BY first_id LIMIT 3)
             SELECT (SELECT count(*) FROM dup),
                    (SELECT coalesce(sum(n - 1), 0)::bigint FROM dup),
                    example.event_id::text,
                    (SELECT array_agg(t.id::bigint ORDER BY t.id) FROM {TABLE} t
                     WHERE t.event_id = example.event_id)
             FROM (SELECT 1) AS one LEFT JOIN example ON true
             ORDER BY example.first_id"
        ),
        &[],
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let event_ids: i64 = first.get(0);
    if event_ids == 0 {
        return Ok(None);
    }
    Ok(Some(Duplicates {
        event_ids,
        extra_rows: first.get(1),
        examples: rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<Vec<i64>>>(3)?,
                ))
            })
            .collect(),
    }))
}

/// The versions recorded in `schema_migrations` (none when the table does not exist yet).
fn applied_migrations(client: &mut impl postgres::GenericClient) -> Result<Vec<String>> {
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

/// "12 ms", "3.40 s".
fn took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
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
    let pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|a| a == m.version))
        .collect();
    if !pending.is_empty() {
        let labels: Vec<String> = pending.iter().map(|m| m.label()).collect();
        let mut message = format!("the database lacks migrations {}", labels.join(", "));
        // The unique key would fail on duplicates: name the fix for them, not one that fails again.
        let key_pending = pending.iter().any(|m| m.name == "unique_event_id");
        let duplicates = if key_pending && table_exists(client, TABLE).map_err(db)? {
            find_duplicates(client).map_err(db)?
        } else {
            None
        };
        return Err(match duplicates {
            Some(duplicates) => fault(
                "23505",
                format!("{message} and {duplicates}: {MOVE_DUPLICATES_FIX}, then start the loader"),
            ),
            None => {
                message.push_str(
                    " (run `ecomlogs migrate`, or start the loader without --no-migrate)",
                );
                fault("42P01", message)
            }
        });
    }
    for (table, privileges) in [
        (TABLE, "SELECT, INSERT"),
        (OFFSETS_TABLE, "SELECT, INSERT, UPDATE"),
        (super::history::DAILY_ROLLUP, "SELECT, INSERT, UPDATE"),
        (super::history::CUSTOMER_ROLLUP, "SELECT, INSERT, UPDATE"),
        (
            super::history::CUSTOMER_DELTAS,
            "SELECT, INSERT, UPDATE, DELETE",
        ),
    ] {
        // Each privilege on its own: has_table_privilege with a list is true if ANY of them is held.
        let ok: bool = client
            .query_one(
                "SELECT bool_and(has_table_privilege(current_user, $1::text::regclass, p))
                 FROM unnest(string_to_array($2, ', ')) AS p",
                &[&table, &privileges],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_read_as_counts_and_examples() {
        let d = Duplicates {
            event_ids: 2,
            extra_rows: 8,
            examples: vec![
                ("e-1".into(), vec![1, 4]),
                ("e-2".into(), (2..10).collect()),
            ],
        };
        assert_eq!(
            d.to_string(),
            "kafka_events_silver holds 2 event_ids stored more than once (8 extra rows), e.g. \
             \"e-1\" (ids 1, 4), \"e-2\" (ids 2, 3, 4, 5, 6, ...)"
        );
    }

    #[test]
    fn the_migrations_with_steps_of_their_own() {
        let with = |step: fn(&Migration) -> bool| -> Vec<&str> {
            MIGRATIONS
                .iter()
                .filter(|m| step(m))
                .map(|m| m.name)
                .collect()
        };
        assert_eq!(
            with(|m| m.prepare.is_some()),
            ["unique_event_id", "partitioned_history"]
        );
        assert_eq!(with(|m| m.finish.is_some()), ["partitioned_history"]);
        let versions: Vec<&str> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(versions, sorted, "applied in order");
    }
}
