//! The three stages for Python: keyword options (checked in `args`), the GIL released around the Rust
//! loop, progress and Ctrl-C through `Runner`, and typed, frozen stats as the result.
//!
//! The defaults in the signatures are literals (so that Python's `help()` and the stubs show them); a
//! test checks each against `_core.DEFAULTS`, which comes from `config::defaults`, where they are defined.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::args::{self, BATCH, COUNT, PARTITIONS, THREADS, UNTIL_IDLE, WORKERS};
use super::errors::to_pyerr;
use super::runner::Runner;
use crate::config;
use crate::generate::GeneratorConfig;
use crate::load::{self as loader, LoadOptions};
use crate::process::{self as processor, ProcessOptions};
use crate::produce::{self as producer, ProduceOptions};
use crate::stage;
use crate::validate::Reason;

/// Tells a running stage how to finish, from another thread: `stop()` finishes the batch in flight,
/// commits and returns; `drain()` keeps going until every assigned partition has been read to its end.
#[pyclass(frozen, module = "ecomlogs._core")]
#[derive(Default)]
pub struct StopToken(stage::StopToken);

#[pymethods]
impl StopToken {
    #[new]
    fn new() -> Self {
        StopToken::default()
    }

    fn stop(&self) {
        self.0.stop();
    }

    fn drain(&self) {
        self.0.drain();
    }

    #[getter]
    fn stopped(&self) -> bool {
        self.0.is_stopped()
    }

    #[getter]
    fn draining(&self) -> bool {
        self.0.is_draining()
    }
}

fn token(t: Option<PyRef<'_, StopToken>>) -> stage::StopToken {
    t.map(|t| t.0.clone()).unwrap_or_default()
}

fn reasons(by_reason: &BTreeMap<Reason, u64>) -> BTreeMap<String, u64> {
    by_reason
        .iter()
        .map(|(r, n)| (r.code().to_string(), *n))
        .collect()
}

/// `Name(field=value, ...)`, like a dataclass.
macro_rules! repr {
    ($self:ident, $name:literal, $($field:ident),+) => {
        format!(concat!($name, "(", $(stringify!($field), "={:?}, ",)+ ")"), $($self.$field),+)
            .replace(", )", ")")
    };
}

/// What `produce` did.
#[pyclass(frozen, eq, get_all, module = "ecomlogs._core")]
#[derive(Clone, PartialEq)]
pub struct ProduceStats {
    /// Handed to the client.
    produced: u64,
    /// Acknowledged by the broker.
    delivered: u64,
    failed: u64,
    valid: u64,
    invalid: u64,
    elapsed_s: f64,
    /// Stopped by Ctrl-C or `StopToken.stop()` rather than by reaching `count`.
    interrupted: bool,
}

impl From<&producer::ProduceStats> for ProduceStats {
    fn from(s: &producer::ProduceStats) -> Self {
        ProduceStats {
            produced: s.produced,
            delivered: s.delivered,
            failed: s.failed,
            valid: s.valid,
            invalid: s.invalid,
            elapsed_s: s.elapsed.as_secs_f64(),
            interrupted: s.interrupted,
        }
    }
}

#[pymethods]
impl ProduceStats {
    #[getter]
    fn events_per_s(&self) -> f64 {
        per_s(self.produced, self.elapsed_s)
    }

    fn __repr__(&self) -> String {
        repr!(
            self,
            "ProduceStats",
            produced,
            delivered,
            failed,
            valid,
            invalid,
            elapsed_s,
            interrupted
        )
    }
}

/// What `process` did. `by_reason` counts dead letters per reason code; `activity` is what the
/// processor was doing last ("joining the consumer group", "running", ...).
#[pyclass(frozen, eq, get_all, module = "ecomlogs._core")]
#[derive(Clone, PartialEq)]
pub struct ProcessStats {
    consumed: u64,
    valid: u64,
    invalid: u64,
    by_reason: BTreeMap<String, u64>,
    batches: u64,
    /// Transactions aborted and retried (exactly-once) or batches whose commit the group refused.
    retried_batches: u64,
    elapsed_s: f64,
    interrupted: bool,
    activity: String,
}

impl From<&processor::ProcessStats> for ProcessStats {
    fn from(s: &processor::ProcessStats) -> Self {
        ProcessStats {
            consumed: s.consumed,
            valid: s.valid,
            invalid: s.invalid,
            by_reason: reasons(&s.by_reason),
            batches: s.batches,
            retried_batches: s.retried_batches,
            elapsed_s: s.elapsed.as_secs_f64(),
            interrupted: s.interrupted,
            activity: s.activity.as_str().to_string(),
        }
    }
}

#[pymethods]
impl ProcessStats {
    #[getter]
    fn events_per_s(&self) -> f64 {
        per_s(self.consumed, self.elapsed_s)
    }

    fn __repr__(&self) -> String {
        repr!(
            self,
            "ProcessStats",
            consumed,
            valid,
            invalid,
            by_reason,
            batches,
            retried_batches,
            elapsed_s,
            interrupted,
            activity
        )
    }
}

/// What `load` did. `duplicates_skipped` counts redelivered events already in the table; `unwritten`
/// the records left for the next start when stopped during a database outage; `log_resets` the
/// partitions found on a new log and loaded again from its beginning; `offsets_lost` the records the
/// broker deleted (retention) before they were loaded.
#[pyclass(frozen, eq, get_all, module = "ecomlogs._core")]
#[derive(Clone, PartialEq)]
pub struct LoadStats {
    consumed: u64,
    rows_inserted: u64,
    duplicates_skipped: u64,
    dead_lettered: u64,
    by_reason: BTreeMap<String, u64>,
    batches: u64,
    db_retries: u64,
    elapsed_s: f64,
    interrupted: bool,
    unwritten: u64,
    log_resets: u64,
    offsets_lost: u64,
    activity: String,
}

impl From<&loader::LoadStats> for LoadStats {
    fn from(s: &loader::LoadStats) -> Self {
        LoadStats {
            consumed: s.consumed,
            rows_inserted: s.rows_inserted,
            duplicates_skipped: s.duplicates_skipped,
            dead_lettered: s.dead_lettered,
            by_reason: reasons(&s.by_reason),
            batches: s.batches,
            db_retries: s.db_retries,
            elapsed_s: s.elapsed.as_secs_f64(),
            interrupted: s.interrupted,
            unwritten: s.unwritten,
            log_resets: s.log_resets,
            offsets_lost: s.offsets_lost,
            activity: s.activity.as_str().to_string(),
        }
    }
}

#[pymethods]
impl LoadStats {
    #[getter]
    fn rows_per_s(&self) -> f64 {
        per_s(self.rows_inserted, self.elapsed_s)
    }

    fn __repr__(&self) -> String {
        repr!(
            self,
            "LoadStats",
            consumed,
            rows_inserted,
            duplicates_skipped,
            dead_lettered,
            by_reason,
            batches,
            db_retries,
            elapsed_s,
            interrupted,
            unwritten,
            log_resets,
            offsets_lost,
            activity
        )
    }
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Runs a stage loop with the GIL released; each tick's stats go to `progress` (about every
/// `progress_every_s`) as the same typed object the call returns, the last one included.
fn run_stage<S, P>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    body: impl FnOnce(&mut dyn FnMut(&S) -> crate::error::Result<()>) -> crate::error::Result<S> + Send,
) -> PyResult<P>
where
    S: Send,
    P: for<'a> From<&'a S> + pyo3::PyClass + Clone + Into<PyClassInitializer<P>>,
{
    let every = args::seconds(
        "progress_every_s",
        progress_every_s,
        0.0..=config::MAX_SECONDS,
    )?;
    let mut runner = Runner::new(progress, every);
    let result =
        py.detach(|| body(&mut |st| runner.tick(|py| Py::new(py, P::from(st)).map(Py::into_any))));
    if let Some(e) = runner.failure.take() {
        return Err(e);
    }
    // Also after a failure: a log line's pending exception must not outlive the call.
    let stats = result.map(|s| P::from(&s));
    let last = stats.as_ref().ok().cloned();
    runner.finish(last.map(|p| move |py: Python<'_>| Py::new(py, p).map(Py::into_any)))?;
    stats.map_err(to_pyerr)
}

/// Generates events and produces them to `topic`, keyed by customer id: `count` of them (None: until
/// stopped), one every `interval_ms` (0: as fast as the broker takes them; `rate` events/s is the same
/// as `interval_ms = 1000 / rate`). `log_each` (default: when paced at 20 events/s or slower) logs every
/// event on `ecomlogs.producer`. Ctrl-C or `stop.stop()` flushes what is queued and returns.
#[pyfunction]
#[pyo3(signature = (count=None, *, bootstrap_servers=None, topic="raw_events",
                    interval_ms=0.0, rate=None, invalid_ratio=0.25, seed=None,
                    log_each=None, partitions=3, replication_factor=1, extra_config=None,
                    progress=None, progress_every_s=1.0, stop=None))]
#[allow(clippy::too_many_arguments)]
pub fn produce(
    py: Python<'_>,
    count: Option<i128>,
    bootstrap_servers: Option<&str>,
    topic: &str,
    interval_ms: f64,
    rate: Option<f64>,
    invalid_ratio: f64,
    seed: Option<u64>,
    log_each: Option<bool>,
    partitions: i128,
    replication_factor: i128,
    extra_config: Option<&Bound<'_, PyDict>>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<ProduceStats> {
    let mut settings = args::kafka_settings(bootstrap_servers, extra_config)?;
    args::replication(&mut settings, replication_factor)?;
    let interval = match rate {
        Some(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Duration::from_secs_f64(1.0 / r),
        Some(r) => {
            return Err(args::config_error(format!(
                "rate must be above 0 and at most 1e9 events/s, got {r}"
            )))
        }
        None => args::seconds("interval_ms", interval_ms / 1000.0, 0.0..=3600.0)?,
    };
    let opts = ProduceOptions {
        topic: args::topic("topic", topic)?,
        count: count.map(|c| args::int("count", c, COUNT)).transpose()?,
        interval,
        generator: GeneratorConfig {
            invalid_ratio: args::ratio("invalid_ratio", invalid_ratio)?,
            seed,
            ..Default::default()
        },
        log_each: log_each.unwrap_or(interval >= Duration::from_millis(50)),
        partitions: args::int("partitions", partitions, PARTITIONS)?,
        ..Default::default()
    };
    let stop = token(stop);
    run_stage(py, progress, progress_every_s, |tick| {
        producer::run_producer(&settings, &opts, &stop, tick)
    })
}

/// The stream processor: validates every record of `input_topic`; valid ones go to `output_topic`
/// (canonical JSON, same key), invalid ones to `dlq_topic` untouched with headers saying why. Offsets
/// are committed only after the outputs are acknowledged (or with them in one Kafka transaction with
/// `exactly_once`). `workers` consumers (group members, default one) share the group's partitions;
/// each routes a large batch on `threads` threads, whole partitions each (0: one per core). Runs until
/// every
/// assigned partition has been read to its end (`until_caught_up`), `until_idle_s` without input,
/// Ctrl-C, or `stop.stop()` / `stop.drain()` from another thread (the batch in flight is finished and
/// committed first).
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, input_topic="raw_events",
                    output_topic="clean_events", dlq_topic="dead_letter_events",
                    group_id="silver-stream-processor", until_idle_s=None, until_caught_up=false,
                    exactly_once=false, transactional_id=None, batch_max=10000,
                    workers=1, threads=0, log_each=false, partitions=3, replication_factor=1,
                    unreadable_timeout_s=60.0, extra_config=None, progress=None,
                    progress_every_s=1.0, stop=None))]
#[allow(clippy::too_many_arguments)]
pub fn process(
    py: Python<'_>,
    bootstrap_servers: Option<&str>,
    input_topic: &str,
    output_topic: &str,
    dlq_topic: &str,
    group_id: &str,
    until_idle_s: Option<f64>,
    until_caught_up: bool,
    exactly_once: bool,
    transactional_id: Option<String>,
    batch_max: i128,
    workers: i128,
    threads: i128,
    log_each: bool,
    partitions: i128,
    replication_factor: i128,
    unreadable_timeout_s: f64,
    extra_config: Option<&Bound<'_, PyDict>>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<ProcessStats> {
    let mut settings = args::kafka_settings(bootstrap_servers, extra_config)?;
    args::replication(&mut settings, replication_factor)?;
    args::unreadable(&mut settings, unreadable_timeout_s)?;
    let opts = ProcessOptions {
        input_topic: args::topic("input_topic", input_topic)?,
        output_topic: args::topic("output_topic", output_topic)?,
        dlq_topic: args::topic("dlq_topic", dlq_topic)?,
        group_id: args::group(group_id)?,
        until_idle: args::opt_seconds("until_idle_s", until_idle_s, UNTIL_IDLE)?,
        until_caught_up,
        exactly_once,
        transactional_id,
        batch_max: args::int("batch_max", batch_max, BATCH)?,
        log_each,
        partitions: args::int("partitions", partitions, PARTITIONS)?,
        workers: args::int("workers", workers, WORKERS)?,
        threads: args::int("threads", threads, THREADS)?,
        ..ProcessOptions::default()
    };
    let stop = token(stop);
    run_stage(py, progress, progress_every_s, |tick| {
        processor::run_processor(&settings, &opts, &stop, tick)
    })
}

/// The PostgreSQL loader: `topic` -> `kafka_events_silver`, exactly once. Each batch (`batch_size` rows
/// at most, or what arrived within `flush_interval_ms`, written as soon as the input goes quiet) is one
/// transaction: a binary COPY plus the consumed offsets. The loader starts where PostgreSQL says,
/// checked against the log. A database outage pauses and retries (`max_backoff_s` at most between
/// attempts); a row the database rejects goes to `dlq_topic` with its SQLSTATE; a fault (missing table,
/// no permission) raises `DatabaseError`. Pending migrations are applied first unless `migrate=False`.
/// `workers` consumers (threads, each with its own connection) share the partitions. Runs until
/// `until_caught_up`, `until_idle_s`, Ctrl-C, or `stop.stop()` / `stop.drain()`.
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, dsn=None, topic="clean_events",
                    group_id="postgres-loader", dlq_topic="dead_letter_events",
                    batch_size=50000, flush_interval_ms=1000,
                    until_idle_s=None, until_caught_up=false, workers=1, migrate=true,
                    max_backoff_s=10.0, log_each=false,
                    partitions=3, replication_factor=1, unreadable_timeout_s=60.0,
                    extra_config=None, progress=None, progress_every_s=1.0, stop=None))]
#[allow(clippy::too_many_arguments)]
pub fn load(
    py: Python<'_>,
    bootstrap_servers: Option<&str>,
    dsn: Option<&str>,
    topic: &str,
    group_id: &str,
    dlq_topic: &str,
    batch_size: i128,
    flush_interval_ms: i128,
    until_idle_s: Option<f64>,
    until_caught_up: bool,
    workers: i128,
    migrate: bool,
    max_backoff_s: f64,
    log_each: bool,
    partitions: i128,
    replication_factor: i128,
    unreadable_timeout_s: f64,
    extra_config: Option<&Bound<'_, PyDict>>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<LoadStats> {
    let mut settings = args::kafka_settings(bootstrap_servers, extra_config)?;
    args::replication(&mut settings, replication_factor)?;
    args::unreadable(&mut settings, unreadable_timeout_s)?;
    let opts = LoadOptions {
        topic: args::topic("topic", topic)?,
        group_id: args::group(group_id)?,
        dsn: config::database_from(dsn),
        dlq_topic: args::topic("dlq_topic", dlq_topic)?,
        batch_size: args::int("batch_size", batch_size, BATCH)?,
        flush_interval: Duration::from_millis(args::int(
            "flush_interval_ms",
            flush_interval_ms,
            1..=3_600_000,
        )?),
        until_idle: args::opt_seconds("until_idle_s", until_idle_s, UNTIL_IDLE)?,
        until_caught_up,
        partitions: args::int("partitions", partitions, PARTITIONS)?,
        migrate,
        max_backoff: args::seconds("max_backoff_s", max_backoff_s, 0.1..=3600.0)?,
        log_each,
        workers: args::int("workers", workers, WORKERS)?,
        ..LoadOptions::default()
    };
    let stop = token(stop);
    run_stage(py, progress, progress_every_s, |tick| {
        loader::run_loader(&settings, &opts, &stop, tick)
    })
}
