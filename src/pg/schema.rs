//! The schema: migrations embedded in the binary, applied in order and recorded, and the check a loader
//! makes before it reads anything.

use postgres::Client;

use super::{OFFSETS_TABLE, TABLE};
use crate::error::{Error, Result};

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: &'static str,
    pub name: &'static str,
    pub sql: &'static str,
}

/// In order. Embedded so an installed package needs no source tree.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: "0001",
        name: "kafka_events_silver",
        sql: include_str!("../../migrations/0001_kafka_events_silver.sql"),
    },
    Migration {
        version: "0002",
        name: "unique_event_id",
        sql: include_str!("../../migrations/0002_unique_event_id.sql"),
    },
    Migration {
        version: "0003",
        name: "kafka_offsets",
        sql: include_str!("../../migrations/0003_kafka_offsets.sql"),
    },
    Migration {
        version: "0004",
        name: "analytics_views",
        sql: include_str!("../../migrations/0004_analytics_views.sql"),
    },
    Migration {
        version: "0005",
        name: "log_identity",
        sql: include_str!("../../migrations/0005_log_identity.sql"),
    },
];

/// Serialises migration runs of concurrent loaders (an arbitrary, fixed advisory-lock key).
const MIGRATION_LOCK: i64 = 0x0ec0_1095;

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
            .all(|m| done.iter().any(|d| d == m.version))
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
        for &Migration { version, name, sql } in MIGRATIONS {
            if done.iter().any(|d| d == version) {
                continue;
            }
            let mut tx = client.transaction().map_err(db("beginning a migration"))?;
            tx.batch_execute(sql)
                .map_err(|e| Error::database(format!("applying migration {version}_{name}"), &e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, &name],
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
        .filter(|m| !applied.iter().any(|a| a == m.version))
        .map(|m| format!("{}_{}", m.version, m.name))
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
