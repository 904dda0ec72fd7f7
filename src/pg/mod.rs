//! PostgreSQL: connections, migrations (embedded in the binary, applied in order and recorded), the
//! binary COPY of clean events, the offsets table that makes loading exactly-once, and typed queries for
//! reports.

use std::time::Duration;

use postgres::Client;

use crate::error::{Error, Result};
mod copy;
mod dsn;
pub mod history;
mod offsets;
mod query;
mod schema;
mod tls;

pub use copy::{copy_rows, copy_rows_dedup, insert_isolating, CopyRows, Isolated};
pub use offsets::{load_offsets, restart_offset, store_offsets, PartitionProgress};
pub use query::{query, Param, Table, Value};
pub use schema::{
    check_schema, migrate, migrate_with, Applied, Duplicates, MigrateOptions, MigrateReport,
    Migration, DUPLICATES_TABLE, MIGRATIONS,
};
pub use tls::{SslMode, Tls};

pub const TABLE: &str = "kafka_events_silver";
pub const OFFSETS_TABLE: &str = "ecomlogs_kafka_offsets";

/// How to reach PostgreSQL: the driver's settings and TLS as libpq would do it.
#[derive(Clone)]
pub struct Config {
    pub driver: postgres::Config,
    pub tls: Tls,
    /// Built once from `tls`, so that a bad certificate file is a configuration error at start-up.
    connector: postgres_openssl::MakeTlsConnector,
}

/// A libpq DSN (URL or `key=value` form); `sslmode` and `sslrootcert` (and `sslcert` / `sslkey`) from it,
/// else from `PGSSLMODE` / `PGSSLROOTCERT` (`PGSSLCERT` / `PGSSLKEY`), as libpq reads them.
pub fn parse_dsn(dsn: &str) -> Result<Config> {
    let (rest, keys) = dsn::split_tls(dsn)?;
    let mut driver: postgres::Config = rest.parse().map_err(|e: postgres::Error| {
        Error::Config(format!(
            "invalid PostgreSQL DSN: {}",
            crate::error::describe_pg(&e)
        ))
    })?;
    if driver.get_connect_timeout().is_none() {
        driver.connect_timeout(Duration::from_secs(10));
    }
    driver.application_name("ecomlogs");
    let tls = Tls::resolve(keys)?;
    driver.ssl_mode(tls.driver_mode());
    let connector = tls.connector()?;
    Ok(Config {
        driver,
        tls,
        connector,
    })
}

/// A DSN for messages: the password, if any, is never shown.
pub fn describe_dsn(cfg: &Config) -> String {
    let tls = match cfg.tls.mode {
        SslMode::Prefer => String::new(),
        mode => format!(" (sslmode={})", mode.as_str()),
    };
    let cfg = &cfg.driver;
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
        "{}@{}:{}/{}{tls}",
        cfg.get_user().unwrap_or("?"),
        host,
        port,
        cfg.get_dbname().unwrap_or("?")
    )
}

/// Opens a connection; the error is the driver's, for [`classify`].
pub fn open(cfg: &Config) -> Result<Client, postgres::Error> {
    cfg.driver.connect(cfg.connector.clone())
}

pub fn connect(cfg: &Config) -> Result<Client> {
    open(cfg).map_err(|e| {
        Error::database(
            format!("connecting to PostgreSQL at {}", describe_dsn(cfg)),
            &e,
        )
    })
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

    #[test]
    fn sqlstates_sort_into_outage_rejection_and_fault() {
        // lost connection, cannot connect, server rejected the connection, shutdown, starting up,
        // too many connections, disk full, out of memory, serialization, deadlock, I/O error
        for code in [
            "08006", "08001", "08004", "57P01", "57P03", "53300", "53100", "53200", "40001",
            "40P01", "58030",
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
}
