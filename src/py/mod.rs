//! The PyO3 skin: converts arguments, calls the plain-Rust core with the GIL released, maps errors.
//! Nothing here has logic of its own.

mod errors;
mod runner;

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::config::{defaults, ClientKind, KafkaSettings};
use crate::generate::{Generator, GeneratorConfig, Intended};
use crate::kafka::{self};
use crate::load::{run_loader, LoadOptions, LoadStats};
use crate::pg;
use crate::process::{run_processor, ProcessOptions, ProcessStats};
use crate::produce::{run_producer, ProduceOptions, ProduceStats};
use crate::stage;
use crate::validate;
use errors::to_pyerr;
use runner::Runner;

static LOG_RESET: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

fn settings(
    bootstrap_servers: String,
    extra_config: Option<BTreeMap<String, String>>,
) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers,
        extra: extra_config.unwrap_or_default(),
    }
}

fn generator_config(invalid_ratio: f64, seed: Option<u64>) -> PyResult<GeneratorConfig> {
    if !(0.0..=1.0).contains(&invalid_ratio) {
        return Err(to_pyerr(crate::error::Error::Config(format!(
            "invalid_ratio must be between 0 and 1, got {invalid_ratio}"
        ))));
    }
    Ok(GeneratorConfig {
        invalid_ratio,
        seed,
        ..Default::default()
    })
}

/// (key, value, intended): the key is None for an event without a customer id.
type GeneratedEvent<'py> = (
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    &'static str,
);

/// Generates `n` events; returns (key, value, intended) where intended is "valid" or the invalid kind.
#[pyfunction]
#[pyo3(signature = (n, invalid_ratio=0.25, seed=None))]
fn generate_events<'py>(
    py: Python<'py>,
    n: usize,
    invalid_ratio: f64,
    seed: Option<u64>,
) -> PyResult<Vec<GeneratedEvent<'py>>> {
    let cfg = generator_config(invalid_ratio, seed)?;
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
            let key = if k.is_empty() {
                None
            } else {
                Some(PyBytes::new(py, &k))
            };
            let intended = match i {
                Intended::Valid => "valid",
                Intended::Invalid(kind) => kind.as_str(),
            };
            (key, PyBytes::new(py, &v), intended)
        })
        .collect())
}

type Verdict<'py> = (
    Option<&'static str>,
    Option<String>,
    Option<Bound<'py, PyBytes>>,
);

fn verdict<'py>(py: Python<'py>, value: Option<&[u8]>) -> Verdict<'py> {
    match validate::validate(value) {
        Ok(clean) => {
            let mut out = Vec::with_capacity(256);
            clean.write_canonical_json(&mut out);
            (None, None, Some(PyBytes::new(py, &out)))
        }
        Err(r) => (Some(r.reason.code()), Some(r.detail), None),
    }
}

/// Validates one raw value: (reason code or None, detail or None, canonical JSON if valid).
#[pyfunction]
#[pyo3(signature = (value))]
fn validate_one<'py>(py: Python<'py>, value: Option<&[u8]>) -> Verdict<'py> {
    verdict(py, value)
}

/// Validates many raw values in one call.
#[pyfunction]
fn validate_many<'py>(py: Python<'py>, values: Vec<Option<Vec<u8>>>) -> Vec<Verdict<'py>> {
    values.iter().map(|v| verdict(py, v.as_deref())).collect()
}

/// Every reason code the validator and the loader can give.
#[pyfunction]
fn reason_codes() -> Vec<&'static str> {
    validate::Reason::ALL.iter().map(|r| r.code()).collect()
}

/// Tells a running stage how to finish, from another thread: `stop()` finishes the batch in flight,
/// commits and returns; `drain()` keeps going until every assigned partition has been read to its end.
#[pyclass(frozen, name = "StopToken", module = "ecomlogs._core")]
#[derive(Default)]
struct StopToken(stage::StopToken);

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

/// Creates missing topics through the admin API.
#[pyfunction]
#[pyo3(signature = (bootstrap_servers, topics, partitions=3, timeout_s=15.0, extra_config=None))]
fn ensure_topics(
    py: Python<'_>,
    bootstrap_servers: String,
    topics: Vec<String>,
    partitions: i32,
    timeout_s: f64,
    extra_config: Option<BTreeMap<String, String>>,
) -> PyResult<()> {
    let s = settings(bootstrap_servers, extra_config);
    py.detach(|| {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        kafka::ensure_topics(&s, &names, partitions, Duration::from_secs_f64(timeout_s))
    })
    .map_err(to_pyerr)
}

/// Runs a stage loop with the GIL released; progress and Ctrl-C go through `Runner`. Returns the final
/// stats as a dict (also passed to the progress callback, with `final=True`).
fn run_stage<'py, S: Send>(
    py: Python<'py>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    fill: fn(&Bound<'_, PyDict>, &S) -> PyResult<()>,
    body: impl FnOnce(&mut dyn FnMut(&S) -> crate::error::Result<()>) -> crate::error::Result<S> + Send,
) -> PyResult<Bound<'py, PyDict>> {
    let mut runner = Runner::new(progress, Duration::from_secs_f64(progress_every_s));
    let result = py.detach(|| body(&mut |st| runner.tick(|d| fill(d, st))));
    if let Some(e) = runner.failure.take() {
        return Err(e);
    }
    let stats = result.map_err(to_pyerr)?;
    runner.finish(|d| fill(d, &stats))?;
    let d = PyDict::new(py);
    fill(&d, &stats)?;
    Ok(d)
}

fn reasons_dict<'py>(
    py: Python<'py>,
    by_reason: &BTreeMap<validate::Reason, u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (r, n) in by_reason {
        d.set_item(r.code(), n)?;
    }
    Ok(d)
}

fn fill_produce(d: &Bound<'_, PyDict>, s: &ProduceStats) -> PyResult<()> {
    d.set_item("produced", s.produced)?;
    d.set_item("delivered", s.delivered)?;
    d.set_item("failed", s.failed)?;
    d.set_item("valid", s.valid)?;
    d.set_item("invalid", s.invalid)?;
    d.set_item("elapsed_s", s.elapsed.as_secs_f64())?;
    d.set_item("interrupted", s.interrupted)?;
    Ok(())
}

/// Stage 1. Returns the final stats as a dict; Ctrl-C stops it cleanly (flushes, `interrupted=True`).
#[pyfunction]
#[pyo3(signature = (bootstrap_servers, topic, count=None, interval_s=0.5, invalid_ratio=0.25, seed=None,
                    log_each=true, partitions=3, extra_config=None, progress=None, progress_every_s=1.0,
                    stop=None))]
#[allow(clippy::too_many_arguments)]
fn produce<'py>(
    py: Python<'py>,
    bootstrap_servers: String,
    topic: String,
    count: Option<u64>,
    interval_s: f64,
    invalid_ratio: f64,
    seed: Option<u64>,
    log_each: bool,
    partitions: i32,
    extra_config: Option<BTreeMap<String, String>>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<Bound<'py, PyDict>> {
    let s = settings(bootstrap_servers, extra_config);
    let stop = token(stop);
    let opts = ProduceOptions {
        topic,
        count,
        interval: Duration::try_from_secs_f64(interval_s).map_err(|_| {
            to_pyerr(crate::error::Error::Config(format!(
                "invalid interval {interval_s} s"
            )))
        })?,
        generator: generator_config(invalid_ratio, seed)?,
        log_each,
        partitions,
        ..Default::default()
    };
    run_stage(py, progress, progress_every_s, fill_produce, |tick| {
        run_producer(&s, &opts, &stop, tick)
    })
}

fn fill_process(d: &Bound<'_, PyDict>, s: &ProcessStats) -> PyResult<()> {
    d.set_item("consumed", s.consumed)?;
    d.set_item("valid", s.valid)?;
    d.set_item("invalid", s.invalid)?;
    d.set_item("by_reason", reasons_dict(d.py(), &s.by_reason)?)?;
    d.set_item("batches", s.batches)?;
    d.set_item("retried_batches", s.retried_batches)?;
    d.set_item("elapsed_s", s.elapsed.as_secs_f64())?;
    d.set_item("interrupted", s.interrupted)?;
    d.set_item("activity", s.activity.as_str())?;
    Ok(())
}

/// Stage 2. Runs until `until_idle_s` of no input or Ctrl-C; returns the final counts as a dict.
#[pyfunction]
#[pyo3(signature = (bootstrap_servers, input_topic, output_topic, dlq_topic, group_id, until_idle_s=None,
                    exactly_once=false, transactional_id=None, batch_max=50000, log_each=false, partitions=3,
                    extra_config=None, progress=None, progress_every_s=1.0, workers=1, until_caught_up=false,
                    stop=None))]
#[allow(clippy::too_many_arguments)]
fn process<'py>(
    py: Python<'py>,
    bootstrap_servers: String,
    input_topic: String,
    output_topic: String,
    dlq_topic: String,
    group_id: String,
    until_idle_s: Option<f64>,
    exactly_once: bool,
    transactional_id: Option<String>,
    batch_max: usize,
    log_each: bool,
    partitions: i32,
    extra_config: Option<BTreeMap<String, String>>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    workers: usize,
    until_caught_up: bool,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<Bound<'py, PyDict>> {
    let s = settings(bootstrap_servers, extra_config);
    let stop = token(stop);
    let opts = ProcessOptions {
        until_caught_up,
        workers: workers.max(1),
        input_topic,
        output_topic,
        dlq_topic,
        group_id,
        until_idle: until_idle_s.map(Duration::from_secs_f64),
        exactly_once,
        transactional_id,
        batch_max: batch_max.max(1),
        log_each,
        partitions,
        ..Default::default()
    };
    run_stage(py, progress, progress_every_s, fill_process, |tick| {
        run_processor(&s, &opts, &stop, tick)
    })
}

fn fill_load(d: &Bound<'_, PyDict>, s: &LoadStats) -> PyResult<()> {
    d.set_item("consumed", s.consumed)?;
    d.set_item("rows_inserted", s.rows_inserted)?;
    d.set_item("duplicates_skipped", s.duplicates_skipped)?;
    d.set_item("dead_lettered", s.dead_lettered)?;
    d.set_item("by_reason", reasons_dict(d.py(), &s.by_reason)?)?;
    d.set_item("batches", s.batches)?;
    d.set_item("db_retries", s.db_retries)?;
    d.set_item("elapsed_s", s.elapsed.as_secs_f64())?;
    d.set_item("interrupted", s.interrupted)?;
    d.set_item("unwritten", s.unwritten)?;
    d.set_item("log_resets", s.log_resets)?;
    d.set_item("offsets_lost", s.offsets_lost)?;
    d.set_item("activity", s.activity.as_str())?;
    Ok(())
}

/// Stage 3. Runs until `until_idle_s` of no input or Ctrl-C; returns the final counts as a dict.
#[pyfunction]
#[pyo3(signature = (bootstrap_servers, topic, group_id, dsn, dlq_topic, batch_size=500, flush_interval_ms=1000,
                    until_idle_s=None, partitions=3, migrate=true, max_backoff_s=10.0, log_each=false,
                    extra_config=None, progress=None, progress_every_s=1.0, workers=1, until_caught_up=false,
                    stop=None))]
#[allow(clippy::too_many_arguments)]
fn load<'py>(
    py: Python<'py>,
    bootstrap_servers: String,
    topic: String,
    group_id: String,
    dsn: String,
    dlq_topic: String,
    batch_size: usize,
    flush_interval_ms: u64,
    until_idle_s: Option<f64>,
    partitions: i32,
    migrate: bool,
    max_backoff_s: f64,
    log_each: bool,
    extra_config: Option<BTreeMap<String, String>>,
    progress: Option<Py<PyAny>>,
    progress_every_s: f64,
    workers: usize,
    until_caught_up: bool,
    stop: Option<PyRef<'_, StopToken>>,
) -> PyResult<Bound<'py, PyDict>> {
    let s = settings(bootstrap_servers, extra_config);
    let stop = token(stop);
    let opts = LoadOptions {
        until_caught_up,
        topic,
        group_id,
        dsn,
        dlq_topic,
        batch_size: batch_size.max(1),
        flush_interval: Duration::from_millis(flush_interval_ms),
        until_idle: until_idle_s.map(Duration::from_secs_f64),
        partitions,
        migrate,
        max_backoff: Duration::from_secs_f64(max_backoff_s.max(0.1)),
        log_each,
        workers: workers.max(1),
        ..LoadOptions::default()
    };
    run_stage(py, progress, progress_every_s, fill_load, |tick| {
        run_loader(&s, &opts, &stop, tick)
    })
}

/// Applies pending migrations; returns the versions applied now.
#[pyfunction]
fn migrate(py: Python<'_>, dsn: String) -> PyResult<Vec<String>> {
    py.detach(|| {
        let cfg = pg::parse_dsn(&dsn)?;
        let mut client = pg::connect(&cfg)?;
        pg::migrate(&mut client)
    })
    .map_err(to_pyerr)
}

/// The embedded migrations: (version, name, sql).
#[pyfunction]
fn migrations() -> Vec<(&'static str, &'static str, &'static str)> {
    pg::MIGRATIONS.to_vec()
}

/// Runs one SQL statement; returns (column names, rows as text).
#[pyfunction]
fn query(py: Python<'_>, dsn: String, sql: String) -> PyResult<pg::TextTable> {
    py.detach(|| {
        let cfg = pg::parse_dsn(&dsn)?;
        let mut client = pg::connect(&cfg)?;
        pg::query_text(&mut client, &sql)
    })
    .map_err(to_pyerr)
}

/// Times the Rust hot loops without Python objects: generation + serialisation of `n` events, and
/// validation of `values`. Returns {"generate": (events, wall_s, cpu_s), "validate": (...)}.
#[pyfunction]
#[pyo3(signature = (n, values, seed=1))]
fn bench_core<'py>(
    py: Python<'py>,
    n: u64,
    values: Vec<Vec<u8>>,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let (g, v) = py.detach(|| {
        (
            crate::bench::generate_loop(n, seed),
            crate::bench::validate_loop(&values),
        )
    });
    let d = PyDict::new(py);
    d.set_item("generate", (g.events, g.wall_s, g.cpu_s))?;
    d.set_item("validate", (v.events, v.wall_s, v.cpu_s))?;
    Ok(d)
}

/// Re-reads Python's logging configuration (levels are cached for speed).
#[pyfunction]
fn reset_log_cache() {
    if let Some(h) = LOG_RESET.get() {
        h.reset();
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let logger = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::LoggersAndLevels)?
        .filter(log::LevelFilter::Debug)
        .filter_target("rdkafka".to_owned(), log::LevelFilter::Info)
        .filter_target("postgres".to_owned(), log::LevelFilter::Warn)
        .filter_target("tokio_postgres".to_owned(), log::LevelFilter::Warn);
    if let Ok(handle) = logger.install() {
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(generate_events, m)?)?;
    m.add_function(wrap_pyfunction!(validate_one, m)?)?;
    m.add_function(wrap_pyfunction!(validate_many, m)?)?;
    m.add_function(wrap_pyfunction!(reason_codes, m)?)?;
    m.add_function(wrap_pyfunction!(ensure_topics, m)?)?;
    m.add_function(wrap_pyfunction!(produce, m)?)?;
    m.add_function(wrap_pyfunction!(process, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(migrate, m)?)?;
    m.add_function(wrap_pyfunction!(migrations, m)?)?;
    m.add_function(wrap_pyfunction!(query, m)?)?;
    m.add_function(wrap_pyfunction!(bench_core, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    m.add_class::<StopToken>()?;
    Ok(())
}
