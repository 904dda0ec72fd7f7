//! The three stages for Python: keyword options (checked in `args`), the GIL released around the Rust
//! loop, progress and Ctrl-C through `Runner`, and typed, frozen stats as the result.
//!
//! The options are declared once, in `options`: the signatures take None for "default" (the stubs write
//! `= ...`) and hand what they are given to the table, which resolves the environment and the defaults
//! and checks every value; a test checks that each signature names exactly its command's options.

use std::collections::BTreeMap;

use pyo3::prelude::*;

use super::args::{self, Arg};
use super::errors::to_pyerr;
use super::runner::Runner;
use crate::config;
use crate::load::{self as loader, LoadOptions};
use crate::options::cmd;
use crate::process::{self as processor, ProcessOptions};
use crate::produce::{self as producer, ProduceOptions};
use crate::stage;
use crate::validate::Reason;
use crate::values;

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
            elapsed_s: s.run.elapsed.as_secs_f64(),
            interrupted: s.run.interrupted,
            activity: s.run.activity.as_str().to_string(),
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
            elapsed_s: s.run.elapsed.as_secs_f64(),
            interrupted: s.run.interrupted,
            unwritten: s.unwritten,
            log_resets: s.log_resets,
            offsets_lost: s.offsets_lost,
            activity: s.run.activity.as_str().to_string(),
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
/// event on `ecomlogs.producer`. Ctrl-C or `stop.stop()` flushes what is queued and returns. Options
/// left at None take their environment variable or default (`ecomlogs.options("produce")`).
#[pyfunction]
#[pyo3(signature = (count=None, *, bootstrap_servers=None, topic=None, interval_ms=None, rate=None,
                    invalid_ratio=None, seed=None, log_each=None, partitions=None,
                    replication_factor=None, extra_config=None, progress=None, progress_every_s=1.0,
                    stop=None))]
#[allow(clippy::too_many_arguments)]
pub fn produce(
    py: Python<'_>,
    count: Arg<'_>,
    bootstrap_servers: Arg<'_>,
    topic: Arg<'_>,
    interval_ms: Arg<'_>,
    rate: Arg<'_>,
    invalid_ratio: Arg<'_>,
    seed: Arg<'_>,
    log_each: Arg<'_>,
    partitions: Arg<'_>,
    replication_factor: Arg<'_>,
    extra_config: Arg<'_>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<ProduceStats> {
    let v = values!(
        cmd::PRODUCE,
        count,
        bootstrap_servers,
        topic,
        interval_ms,
        rate,
        invalid_ratio,
        seed,
        log_each,
        partitions,
        replication_factor,
        extra_config
    )?;
    let settings = args::kafka_of(&v)?;
    let opts = ProduceOptions::from_values(&v).map_err(to_pyerr)?;
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
/// every assigned partition has been read to its end (`until_caught_up`), `until_idle_s` without
/// input, Ctrl-C, or `stop.stop()` / `stop.drain()` from another thread (the batch in flight is
/// finished and committed first). Options left at None take their environment variable or default
/// (`ecomlogs.options("process")`).
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, input_topic=None, output_topic=None, dlq_topic=None,
                    group_id=None, until_idle_s=None, until_caught_up=None, exactly_once=None,
                    transactional_id=None, batch_max=None, workers=None, threads=None, log_each=None,
                    contract=None, partitions=None, replication_factor=None, unreadable_timeout_s=None,
                    extra_config=None, progress=None, progress_every_s=1.0, stop=None))]
#[allow(clippy::too_many_arguments)]
pub fn process(
    py: Python<'_>,
    bootstrap_servers: Arg<'_>,
    input_topic: Arg<'_>,
    output_topic: Arg<'_>,
    dlq_topic: Arg<'_>,
    group_id: Arg<'_>,
    until_idle_s: Arg<'_>,
    until_caught_up: Arg<'_>,
    exactly_once: Arg<'_>,
    transactional_id: Arg<'_>,
    batch_max: Arg<'_>,
    workers: Arg<'_>,
    threads: Arg<'_>,
    log_each: Arg<'_>,
    contract: Arg<'_>,
    partitions: Arg<'_>,
    replication_factor: Arg<'_>,
    unreadable_timeout_s: Arg<'_>,
    extra_config: Arg<'_>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<ProcessStats> {
    let v = values!(
        cmd::PROCESS,
        bootstrap_servers,
        input_topic,
        output_topic,
        dlq_topic,
        group_id,
        until_idle_s,
        until_caught_up,
        exactly_once,
        transactional_id,
        batch_max,
        workers,
        threads,
        log_each,
        contract,
        partitions,
        replication_factor,
        unreadable_timeout_s,
        extra_config
    )?;
    let settings = args::kafka_of(&v)?;
    let opts = ProcessOptions::from_values(&v).map_err(to_pyerr)?;
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
/// `until_caught_up`, `until_idle_s`, Ctrl-C, or `stop.stop()` / `stop.drain()`. Options left at None
/// take their environment variable or default (`ecomlogs.options("load")`).
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, dsn=None, topic=None, group_id=None, dlq_topic=None,
                    batch_size=None, flush_interval_ms=None, until_idle_s=None,
                    until_caught_up=None, workers=None, migrate=None, retention_days=None,
                    max_backoff_s=None, log_each=None, partitions=None, replication_factor=None,
                    unreadable_timeout_s=None, extra_config=None, progress=None,
                    progress_every_s=1.0, stop=None))]
#[allow(clippy::too_many_arguments)]
pub fn load(
    py: Python<'_>,
    bootstrap_servers: Arg<'_>,
    dsn: Arg<'_>,
    topic: Arg<'_>,
    group_id: Arg<'_>,
    dlq_topic: Arg<'_>,
    batch_size: Arg<'_>,
    flush_interval_ms: Arg<'_>,
    until_idle_s: Arg<'_>,
    until_caught_up: Arg<'_>,
    workers: Arg<'_>,
    migrate: Arg<'_>,
    retention_days: Arg<'_>,
    max_backoff_s: Arg<'_>,
    log_each: Arg<'_>,
    partitions: Arg<'_>,
    replication_factor: Arg<'_>,
    unreadable_timeout_s: Arg<'_>,
    extra_config: Arg<'_>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<LoadStats> {
    let v = values!(
        cmd::LOAD,
        bootstrap_servers,
        dsn,
        topic,
        group_id,
        dlq_topic,
        batch_size,
        flush_interval_ms,
        until_idle_s,
        until_caught_up,
        workers,
        migrate,
        retention_days,
        max_backoff_s,
        log_each,
        partitions,
        replication_factor,
        unreadable_timeout_s,
        extra_config
    )?;
    let settings = args::kafka_of(&v)?;
    let opts = LoadOptions::from_values(&v).map_err(to_pyerr)?;
    let stop = token(stop);
    run_stage(py, progress, progress_every_s, |tick| {
        loader::run_loader(&settings, &opts, &stop, tick)
    })
}
