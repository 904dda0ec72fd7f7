//! Operating a pipeline from Python: the metrics endpoint and the dead-letter commands.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::args::{self, Arg};
use super::errors::to_pyerr;
use super::runner::Runner;
use crate::dlq;
use crate::metrics::server;
use crate::options::{cmd, Values};
use crate::stage;
use crate::values;

/// A running `/metrics` + `/healthz` endpoint (see `serve_metrics`). Closing it (or leaving its `with`
/// block) stops it.
#[pyclass(module = "ecomlogs._core")]
pub struct MetricsServer {
    inner: Option<server::MetricsServer>,
    #[pyo3(get)]
    host: String,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl MetricsServer {
    /// `http://host:port`
    #[getter]
    fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    fn close(&mut self, py: Python<'_>) {
        if let Some(mut s) = self.inner.take() {
            py.detach(|| s.close());
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("MetricsServer({})", self.url())
    }
}

/// Serves `/metrics` (Prometheus text format: every stage running in this process, and the process's
/// CPU and memory) and `/healthz` on `host:port` (port 0: a free one, see `.port`).
#[pyfunction]
#[pyo3(signature = (port=0, host="127.0.0.1"))]
pub fn serve_metrics(py: Python<'_>, port: i128, host: &str) -> PyResult<MetricsServer> {
    let port: u16 = args::int("metrics_port", port, 0..=65535)?;
    let s = py
        .detach(|| server::MetricsServer::start(host, port))
        .map_err(to_pyerr)?;
    let addr = s.addr();
    Ok(MetricsServer {
        inner: Some(s),
        host: addr.ip().to_string(),
        port: addr.port(),
    })
}

/// The metrics as `/metrics` would serve them now.
#[pyfunction]
pub fn metrics_text() -> String {
    crate::metrics::render()
}

/// One record of the dead-letter topic, with its headers.
#[pyclass(frozen, get_all, module = "ecomlogs._core")]
pub struct DeadLetter {
    partition: i32,
    offset: i64,
    /// Kafka timestamp, ms since the epoch.
    timestamp_ms: Option<i64>,
    key: Option<Py<PyBytes>>,
    value: Option<Py<PyBytes>>,
    headers: BTreeMap<String, Option<String>>,
    reason: String,
    stage: String,
    detail: Option<String>,
    source_topic: Option<String>,
    source_partition: Option<i32>,
    source_offset: Option<i64>,
    /// The dead letter this record's original was replayed from (None: not a replayed record).
    replayed_from: Option<String>,
    /// How many replays deep (0: an original).
    generation: u32,
}

#[pymethods]
impl DeadLetter {
    fn __repr__(&self) -> String {
        format!(
            "DeadLetter(partition={}, offset={}, stage={:?}, reason={:?}, source={}[{}]@{})",
            self.partition,
            self.offset,
            self.stage,
            self.reason,
            self.source_topic.as_deref().unwrap_or("?"),
            self.source_partition
                .map(|p| p.to_string())
                .unwrap_or("?".into()),
            self.source_offset
                .map(|o| o.to_string())
                .unwrap_or("?".into()),
        )
    }
}

impl DeadLetter {
    fn new(py: Python<'_>, d: &dlq::DeadLetter) -> Self {
        use crate::dead_letter::headers as h;
        DeadLetter {
            partition: d.partition,
            offset: d.offset,
            timestamp_ms: d.timestamp_ms,
            key: d.key.as_deref().map(|k| PyBytes::new(py, k).unbind()),
            value: d.value.as_deref().map(|v| PyBytes::new(py, v).unbind()),
            headers: d.headers.iter().cloned().collect(),
            reason: d.reason().to_string(),
            stage: d.stage().to_string(),
            detail: d.header(h::DETAIL).map(str::to_string),
            source_topic: d.header(h::SOURCE_TOPIC).map(str::to_string),
            source_partition: d.header(h::SOURCE_PARTITION).and_then(|v| v.parse().ok()),
            source_offset: d.header(h::SOURCE_OFFSET).and_then(|v| v.parse().ok()),
            replayed_from: d.header(h::REPLAYED_FROM).map(str::to_string),
            generation: d.generation(),
        }
    }
}

/// `dlq_inspect`'s answer: dead letters read, counts by (stage, reason), the first samples of each.
#[pyclass(frozen, get_all, module = "ecomlogs._core")]
pub struct DeadLetterReport {
    dlq_topic: String,
    scanned: u64,
    counts: BTreeMap<(String, String), u64>,
    from_replays: u64,
    samples: Vec<Py<DeadLetter>>,
}

#[pymethods]
impl DeadLetterReport {
    /// Dead letters that matched the filters.
    #[getter]
    fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn __repr__(&self) -> String {
        format!(
            "DeadLetterReport(dlq_topic={:?}, scanned={}, total={}, from_replays={}, counts={:?})",
            self.dlq_topic,
            self.scanned,
            self.total(),
            self.from_replays,
            self.counts
        )
    }
}

/// What `dlq_replay` did (or, with `dry_run`, would do).
#[pyclass(frozen, eq, get_all, module = "ecomlogs._core")]
#[derive(Clone, PartialEq)]
pub struct ReplayStats {
    scanned: u64,
    matched: u64,
    replayed: u64,
    no_source: u64,
    from_replays: u64,
    by_topic: BTreeMap<String, u64>,
    ranges: BTreeMap<i32, (i64, i64)>,
    started_at: BTreeMap<i32, i64>,
    resumed: bool,
    checkpoint_group: String,
    dry_run: bool,
}

#[pymethods]
impl ReplayStats {
    fn __repr__(&self) -> String {
        let py_bool = |b: bool| if b { "True" } else { "False" };
        format!(
            "ReplayStats(scanned={}, matched={}, replayed={}, no_source={}, from_replays={}, by_topic={:?}, \
             resumed={}, checkpoint_group={:?}, dry_run={})",
            self.scanned,
            self.matched,
            self.replayed,
            self.no_source,
            self.from_replays,
            self.by_topic,
            py_bool(self.resumed),
            self.checkpoint_group,
            py_bool(self.dry_run)
        )
    }
}

impl From<dlq::ReplayStats> for ReplayStats {
    fn from(s: dlq::ReplayStats) -> Self {
        ReplayStats {
            scanned: s.scanned,
            matched: s.matched,
            replayed: s.replayed,
            no_source: s.no_source,
            from_replays: s.from_replays,
            by_topic: s.by_topic,
            ranges: s.ranges,
            started_at: s.started_at,
            resumed: s.resumed,
            checkpoint_group: s.checkpoint_group,
            dry_run: s.dry_run,
        }
    }
}

/// The filters of a dead-letter command's resolved options (`since_ms`: Python's, converted there).
fn filter(v: &Values, since_ms: Option<i64>) -> PyResult<dlq::Filter> {
    Ok(dlq::Filter {
        reasons: v.list("reason").map_err(to_pyerr)?,
        stages: v.list("stage").map_err(to_pyerr)?,
        since_ms,
    })
}

fn source(v: &Values) -> PyResult<dlq::Source> {
    Ok(dlq::Source {
        topic: v.text("dlq_topic").map_err(to_pyerr)?,
        timeout: v.seconds("timeout_s").map_err(to_pyerr)?,
    })
}

/// Runs a dead-letter scan with the GIL released, Ctrl-C stopping it.
pub(super) fn scanning<T: Send>(
    py: Python<'_>,
    body: impl FnOnce(&stage::StopToken, crate::kafka::Tick<'_>) -> crate::error::Result<T> + Send,
) -> PyResult<T> {
    let mut runner = Runner::new(None, Duration::from_secs(1));
    let token = stage::StopToken::new();
    let result = py.detach(|| body(&token, &mut |_| runner.tick(|py| Ok(py.None()))));
    if let Some(e) = runner.failure.take() {
        return Err(e);
    }
    result.map_err(to_pyerr)
}

/// Reads the dead-letter topic to its end: counts by (stage, reason) of those that match the filters
/// (`reason`, `stage`: lists of accepted values; `since_ms`: written at or after), with the first
/// `samples` of each.
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, dlq_topic=None, reason=None, stage=None,
                    since_ms=None, samples=None, timeout_s=None, extra_config=None))]
#[allow(clippy::too_many_arguments)]
pub fn dlq_inspect(
    py: Python<'_>,
    bootstrap_servers: Arg<'_>,
    dlq_topic: Arg<'_>,
    reason: Arg<'_>,
    stage: Arg<'_>,
    since_ms: Option<i64>,
    samples: Arg<'_>,
    timeout_s: Arg<'_>,
    extra_config: Arg<'_>,
) -> PyResult<DeadLetterReport> {
    let v = values!(
        cmd::DLQ_INSPECT,
        bootstrap_servers,
        dlq_topic,
        reason,
        stage,
        samples,
        timeout_s,
        extra_config
    )?;
    let settings = args::kafka_of(&v)?;
    let samples: usize = v.int("samples").map_err(to_pyerr)?;
    let src = source(&v)?;
    let f = filter(&v, since_ms)?;
    let r = scanning(py, |token, tick| {
        dlq::inspect(&settings, &src, &f, samples, token, tick)
    })?;
    Ok(DeadLetterReport {
        dlq_topic: src.topic,
        scanned: r.scanned,
        counts: r.counts,
        from_replays: r.from_replays,
        samples: r
            .samples
            .iter()
            .map(|d| Py::new(py, DeadLetter::new(py, d)))
            .collect::<PyResult<_>>()?,
    })
}

/// The latest `limit` dead letters that match the filters (None: all), oldest first; none for a topic
/// that does not exist yet.
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, dlq_topic=None, reason=None, stage=None,
                    since_ms=None, limit=None, timeout_s=None, extra_config=None))]
#[allow(clippy::too_many_arguments)]
pub fn dlq_read(
    py: Python<'_>,
    bootstrap_servers: Arg<'_>,
    dlq_topic: Arg<'_>,
    reason: Arg<'_>,
    stage: Arg<'_>,
    since_ms: Option<i64>,
    limit: Arg<'_>,
    timeout_s: Arg<'_>,
    extra_config: Arg<'_>,
) -> PyResult<Vec<DeadLetter>> {
    let v = values!(
        cmd::DLQ_READ,
        bootstrap_servers,
        dlq_topic,
        reason,
        stage,
        limit,
        timeout_s,
        extra_config
    )?;
    let settings = args::kafka_of(&v)?;
    let limit: Option<usize> = v.opt_int("limit").map_err(to_pyerr)?;
    let src = source(&v)?;
    let f = filter(&v, since_ms)?;
    let found = scanning(py, |token, tick| {
        dlq::read(&settings, &src, &f, limit, token, tick)
    })?;
    Ok(found.iter().map(|d| DeadLetter::new(py, d)).collect())
}

/// Sends the dead letters that match the filters back to the topic each came from (its
/// `source.topic` header) with the original key and value and the lineage headers; returns once every
/// one is acknowledged. Resumes where the last replay with the same reason/stage filter stopped
/// (`from_beginning`: from the start of the topic); leaves dead letters made from replayed records
/// where they are unless `include_replayed`. `dry_run`: counts only. `until_idle_s`: keep following
/// the topic for new dead letters to replay until none came for that long. `rate`: at most this many
/// records per second.
#[pyfunction]
#[pyo3(signature = (*, bootstrap_servers=None, dlq_topic=None, reason=None, stage=None,
                    since_ms=None, dry_run=None, include_replayed=None, from_beginning=None,
                    until_idle_s=None, rate=None, timeout_s=None, extra_config=None))]
#[allow(clippy::too_many_arguments)]
pub fn dlq_replay(
    py: Python<'_>,
    bootstrap_servers: Arg<'_>,
    dlq_topic: Arg<'_>,
    reason: Arg<'_>,
    stage: Arg<'_>,
    since_ms: Option<i64>,
    dry_run: Arg<'_>,
    include_replayed: Arg<'_>,
    from_beginning: Arg<'_>,
    until_idle_s: Arg<'_>,
    rate: Arg<'_>,
    timeout_s: Arg<'_>,
    extra_config: Arg<'_>,
) -> PyResult<ReplayStats> {
    let v = values!(
        cmd::DLQ_REPLAY,
        bootstrap_servers,
        dlq_topic,
        reason,
        stage,
        dry_run,
        include_replayed,
        from_beginning,
        until_idle_s,
        rate,
        timeout_s,
        extra_config
    )?;
    let settings = args::kafka_of(&v)?;
    let src = source(&v)?;
    let opts = dlq::ReplayOptions {
        filter: filter(&v, since_ms)?,
        dry_run: v.flag("dry_run").map_err(to_pyerr)?,
        include_replayed: v.flag("include_replayed").map_err(to_pyerr)?,
        from_beginning: v.flag("from_beginning").map_err(to_pyerr)?,
        until_idle: v.opt_seconds("until_idle_s").map_err(to_pyerr)?,
        rate: v.opt_float("rate").map_err(to_pyerr)?,
    };
    let s = scanning(py, |token, tick| {
        dlq::replay(&settings, &src, &opts, token, tick)
    })?;
    Ok(s.into())
}
