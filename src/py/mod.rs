//! The PyO3 skin: converts and checks arguments, calls the plain-Rust core with the GIL released, maps
//! errors. Nothing here has logic of its own. The module's exports are listed once, in `_core` below.

mod args;
mod errors;
mod ops;
mod query;
mod runner;
mod stages;

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::config::{self, defaults};
use crate::generate::{Generator, GeneratorConfig, Intended};
use crate::kafka;
use crate::pg;
use crate::validate;
use errors::to_pyerr;

static LOG_RESET: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

/// (key, value, intended): the key is None for an event without a customer id.
type GeneratedEvent<'py> = (
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    &'static str,
);

/// Generates `n` events; returns (key, value, intended) where intended is "valid" or the invalid kind.
#[pyfunction]
#[pyo3(signature = (n, *, invalid_ratio=0.25, seed=None))]
fn generate_events<'py>(
    py: Python<'py>,
    n: i128,
    invalid_ratio: f64,
    seed: Option<u64>,
) -> PyResult<Vec<GeneratedEvent<'py>>> {
    let n: usize = args::int("n", n, 0..=100_000_000)?;
    let cfg = GeneratorConfig {
        invalid_ratio: args::ratio("invalid_ratio", invalid_ratio)?,
        seed,
        ..Default::default()
    };
    let raw: Vec<(Vec<u8>, Vec<u8>, Intended)> = py.detach(|| {
        let mut g = Generator::new(&cfg);
        (0..n)
            .map(|_| {
                let (mut k, mut v) = (Vec::new(), Vec::new());
                let i = g.next_into(&mut k, &mut v);
                (k, v, i)
            })
            .collect()
    });
    Ok(raw
        .into_iter()
        .map(|(k, v, i)| {
            let key = (!k.is_empty()).then(|| PyBytes::new(py, &k));
            let intended = match i {
                Intended::Valid => "valid",
                Intended::Invalid(kind) => kind.as_str(),
            };
            (key, PyBytes::new(py, &v), intended)
        })
        .collect())
}

/// The verdict on one raw event: `valid`; the stable `reason` code and a readable `detail` when
/// invalid; the `canonical` JSON written to `clean_events` when valid.
#[pyclass(frozen, eq, get_all, module = "ecomlogs._core")]
#[derive(Clone, PartialEq)]
struct Validation {
    valid: bool,
    reason: Option<&'static str>,
    detail: Option<String>,
    canonical: Option<Vec<u8>>,
}

#[pymethods]
impl Validation {
    fn __repr__(&self) -> String {
        format!(
            "Validation(valid={}, reason={:?}, detail={:?}, canonical={})",
            self.valid,
            self.reason,
            self.detail,
            match &self.canonical {
                Some(c) => format!("b{:?}", String::from_utf8_lossy(c)),
                None => "None".into(),
            }
        )
    }
}

fn verdict(value: Option<&[u8]>) -> Validation {
    match validate::validate(value) {
        Ok(clean) => {
            let mut out = Vec::with_capacity(256);
            clean.write_canonical_json(&mut out);
            Validation {
                valid: true,
                reason: None,
                detail: None,
                canonical: Some(out),
            }
        }
        Err(r) => Validation {
            valid: false,
            reason: Some(r.reason.code()),
            detail: Some(r.detail),
            canonical: None,
        },
    }
}

/// Validates one raw value (bytes; None for a record without a value).
#[pyfunction]
fn validate_one(value: Option<&[u8]>) -> Validation {
    verdict(value)
}

/// Validates many raw values in one call into Rust.
#[pyfunction]
fn validate_many(py: Python<'_>, values: Vec<Option<Vec<u8>>>) -> Vec<Validation> {
    py.detach(|| values.iter().map(|v| verdict(v.as_deref())).collect())
}

/// Every reason code the validator and the loader can give.
#[pyfunction]
fn reason_codes() -> Vec<&'static str> {
    validate::Reason::ALL.iter().map(|r| r.code()).collect()
}

/// Creates the topics that do not exist yet, through the Kafka admin API.
#[pyfunction]
#[pyo3(signature = (topics, *, bootstrap_servers=None, partitions=3, replication_factor=1,
                    timeout_s=15.0, extra_config=None))]
fn ensure_topics(
    py: Python<'_>,
    topics: Vec<String>,
    bootstrap_servers: Option<&str>,
    partitions: i128,
    replication_factor: i128,
    timeout_s: f64,
    extra_config: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let mut s = args::kafka_settings(bootstrap_servers, extra_config)?;
    args::replication(&mut s, replication_factor)?;
    let partitions = args::int("partitions", partitions, args::PARTITIONS)?;
    let timeout = args::seconds("timeout_s", timeout_s, 0.1..=3600.0)?;
    let names = topics
        .iter()
        .map(|t| args::topic("topic", t))
        .collect::<PyResult<Vec<_>>>()?;
    py.detach(|| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        kafka::ensure_topics(&s, &names, partitions, timeout)
    })
    .map_err(to_pyerr)
}

/// Applies the pending migrations in one transaction (all or nothing), recorded in `schema_migrations`;
/// returns the versions applied now (on a dry run, those that would be, changing nothing).
/// `move_duplicates` moves the extra copies of duplicated event ids aside before the unique key.
#[pyfunction]
#[pyo3(signature = (dsn=None, *, move_duplicates=false, dry_run=false))]
fn migrate(
    py: Python<'_>,
    dsn: Option<&str>,
    move_duplicates: bool,
    dry_run: bool,
) -> PyResult<Vec<String>> {
    let dsn = config::database_from(dsn);
    let options = pg::MigrateOptions {
        move_duplicates,
        dry_run,
    };
    py.detach(|| {
        let cfg = pg::parse_dsn(&dsn)?;
        let mut client = pg::connect(&cfg)?;
        pg::migrate_with(&mut client, &options)
    })
    .map(|report| {
        report
            .applied
            .iter()
            .map(|a| a.version.to_string())
            .collect()
    })
    .map_err(to_pyerr)
}

/// The embedded migrations: (version, name, sql).
#[pyfunction]
fn migrations() -> Vec<(&'static str, &'static str, &'static str)> {
    pg::MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name, m.sql))
        .collect()
}

/// The bootstrap servers a stage would use: the argument, else `KAFKA_BOOTSTRAP_SERVERS`, else the
/// default.
#[pyfunction]
#[pyo3(signature = (value=None))]
fn resolve_bootstrap_servers(value: Option<&str>) -> String {
    config::bootstrap_servers_from(value)
}

/// The database a stage would use: the argument, else `DATABASE_URL`, else the `PG*` variables over
/// the defaults.
#[pyfunction]
#[pyo3(signature = (value=None))]
fn resolve_dsn(value: Option<&str>) -> String {
    config::database_from(value)
}

/// Re-reads Python's logging configuration (levels are cached for speed).
#[pyfunction]
fn reset_log_cache() {
    if let Some(h) = LOG_RESET.get() {
        h.reset();
    }
}

/// The defaults of every option, for the command line and the Python API to share.
fn defaults_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bootstrap_servers", defaults::BOOTSTRAP_SERVERS)?;
    d.set_item("dsn", defaults::DATABASE)?;
    d.set_item("raw_topic", defaults::RAW_TOPIC)?;
    d.set_item("clean_topic", defaults::CLEAN_TOPIC)?;
    d.set_item("dlq_topic", defaults::DLQ_TOPIC)?;
    d.set_item("processor_group", defaults::PROCESSOR_GROUP)?;
    d.set_item("loader_group", defaults::LOADER_GROUP)?;
    d.set_item("partitions", defaults::PARTITIONS)?;
    d.set_item("replication_factor", defaults::REPLICATION_FACTOR)?;
    d.set_item("unreadable_timeout_s", defaults::UNREADABLE_TIMEOUT_S)?;
    d.set_item("interval_ms", defaults::INTERVAL_MS)?;
    d.set_item("invalid_ratio", defaults::INVALID_RATIO)?;
    d.set_item("batch_size", defaults::BATCH_SIZE)?;
    d.set_item("flush_interval_ms", defaults::FLUSH_INTERVAL_MS)?;
    d.set_item("batch_max", defaults::BATCH_MAX)?;
    d.set_item("max_backoff_s", defaults::MAX_BACKOFF_S)?;
    d.set_item("workers", defaults::WORKERS)?;
    d.set_item(
        "quiet_flush_ms",
        Duration::as_millis(&crate::load::QUIET_FLUSH) as u64,
    )?;
    Ok(d)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let logger = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::LoggersAndLevels)?
        .filter(log::LevelFilter::Debug)
        .filter_target("librdkafka".to_owned(), log::LevelFilter::Info)
        .filter_target("rdkafka".to_owned(), log::LevelFilter::Info)
        .filter_target("postgres".to_owned(), log::LevelFilter::Warn)
        .filter_target("tokio_postgres".to_owned(), log::LevelFilter::Warn);
    if let Ok(handle) = logger.install() {
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULTS", defaults_dict(m.py())?)?;
    m.add_class::<stages::StopToken>()?;
    m.add_class::<stages::ProduceStats>()?;
    m.add_class::<stages::ProcessStats>()?;
    m.add_class::<stages::LoadStats>()?;
    m.add_class::<Validation>()?;
    m.add_class::<ops::MetricsServer>()?;
    m.add_class::<ops::DeadLetter>()?;
    m.add_class::<ops::DeadLetterReport>()?;
    m.add_class::<ops::ReplayStats>()?;
    m.add_function(wrap_pyfunction!(ops::serve_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(ops::metrics_text, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dlq_inspect, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dlq_read, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dlq_replay, m)?)?;
    m.add_function(wrap_pyfunction!(stages::produce, m)?)?;
    m.add_function(wrap_pyfunction!(stages::process, m)?)?;
    m.add_function(wrap_pyfunction!(stages::load, m)?)?;
    m.add_function(wrap_pyfunction!(generate_events, m)?)?;
    m.add_function(wrap_pyfunction!(validate_one, m)?)?;
    m.add_function(wrap_pyfunction!(validate_many, m)?)?;
    m.add_function(wrap_pyfunction!(reason_codes, m)?)?;
    m.add_function(wrap_pyfunction!(ensure_topics, m)?)?;
    m.add_function(wrap_pyfunction!(migrate, m)?)?;
    m.add_function(wrap_pyfunction!(migrations, m)?)?;
    m.add_function(wrap_pyfunction!(query::query, m)?)?;
    m.add_function(wrap_pyfunction!(query::read_topic, m)?)?;
    m.add_function(wrap_pyfunction!(query::topic_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_bootstrap_servers, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_dsn, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    Ok(())
}
