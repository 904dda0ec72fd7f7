//! Prometheus metrics for every stage (`prometheus` crate, the process-wide default registry) and the
//! health of the stages running in this process. Nothing here costs per event: counters are advanced
//! from the stages' own stats once a tick (so at exit they equal what the stage reports), histograms
//! are observed once a batch (the loader's event-to-row ages through a local, unsynchronised
//! histogram flushed once a batch), lag gauges are set once a second from librdkafka's cached
//! watermarks (no request to the broker).

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, TextEncoder,
};
use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use crate::stage::{locked, Activity};

pub mod server;

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    prometheus::register(Box::new(c.clone())).expect("registered once");
    c
}

fn single(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid metric");
    prometheus::register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("a valid metric");
    prometheus::register(Box::new(h.clone())).expect("registered once");
    h
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    prometheus::register(Box::new(g.clone())).expect("registered once");
    g
}

/// Every metric the stages export (names are a contract: dashboards and alerts rely on them).
pub struct Metrics {
    pub consumed: IntCounterVec,
    pub produced: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub rows_inserted: IntCounter,
    pub duplicates: IntCounter,
    pub db_retries: IntCounter,
    pub lag_messages: IntGaugeVec,
    pub lag_seconds: prometheus::GaugeVec,
    pub batch_rows: HistogramVec,
    pub batch_seconds: HistogramVec,
    pub event_to_row: prometheus::Histogram,
    pub up: IntGaugeVec,
}

/// The metrics, registered in the default registry on first use.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let lag_seconds = prometheus::GaugeVec::new(
        Opts::new(
            "ecomlogs_consumer_lag_seconds",
            "Age of the oldest record not yet processed (0 when caught up)",
        ),
        &["stage", "topic", "partition"],
    )
    .expect("a valid metric");
    prometheus::register(Box::new(lag_seconds.clone())).expect("registered once");
    let event_to_row = prometheus::Histogram::with_opts(
        HistogramOpts::new(
            "ecomlogs_event_to_row_seconds",
            "Record timestamp to the commit of its row in PostgreSQL",
        )
        .buckets(exponential_buckets(0.01, 2.0, 16).expect("valid buckets")),
    )
    .expect("a valid metric");
    prometheus::register(Box::new(event_to_row.clone())).expect("registered once");
    Metrics {
        consumed: counter(
            "ecomlogs_events_consumed_total",
            "Records read from the input topic",
            &["stage"],
        ),
        produced: counter(
            "ecomlogs_events_produced_total",
            "Records written to an output topic (acknowledged)",
            &["stage", "topic"],
        ),
        dead_letters: counter(
            "ecomlogs_dead_letters_total",
            "Records sent to the dead-letter topic",
            &["stage", "reason"],
        ),
        rows_inserted: single("ecomlogs_rows_inserted_total", "Rows stored in PostgreSQL"),
        duplicates: single(
            "ecomlogs_duplicates_skipped_total",
            "Events already in the table, skipped by the unique event_id",
        ),
        db_retries: single(
            "ecomlogs_db_retries_total",
            "Reconnection attempts during database outages",
        ),
        lag_messages: gauge(
            "ecomlogs_consumer_lag_messages",
            "Records in the partition not yet processed",
            &["stage", "topic", "partition"],
        ),
        lag_seconds,
        batch_rows: histogram(
            "ecomlogs_batch_rows",
            "Records per committed batch",
            &["stage"],
            exponential_buckets(1.0, 4.0, 10).expect("valid buckets"),
        ),
        batch_seconds: histogram(
            "ecomlogs_batch_duration_seconds",
            "From a batch's first record to its commit",
            &["stage"],
            exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
        ),
        event_to_row,
        up: gauge(
            "ecomlogs_stage_up",
            "1 while the stage runs in this process",
            &["stage"],
        ),
    }
});

/// The default registry (these metrics and the process's CPU and memory) in the text format.
pub fn render() -> String {
    LazyLock::force(&METRICS);
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Advances counters to a stage's absolute totals: each counter grows by what its total grew since the
/// last call, so after the stage's last report they have grown by exactly what the stage reports.
#[derive(Default)]
pub struct Exporter {
    seen: HashMap<String, u64>,
    stage: &'static str,
    /// The stage's output topics by role (`output`, `dead_letters`).
    topics: Vec<(&'static str, String)>,
}

impl Exporter {
    /// `ecomlogs_events_produced_total` for the stage's output topic of this role.
    pub fn produced(&mut self, role: &'static str, total: u64) {
        let Some(topic) = self
            .topics
            .iter()
            .find(|(r, _)| *r == role)
            .map(|t| t.1.clone())
        else {
            return;
        };
        let c = METRICS.produced.with_label_values(&[self.stage, &topic]);
        self.advance(role, &c, total);
    }

    /// `key` names the counter and its labels (one key per counter child).
    pub fn advance(&mut self, key: &str, counter: &IntCounter, total: u64) {
        let last = match self.seen.get_mut(key) {
            Some(last) => last,
            None => self.seen.entry(key.to_string()).or_insert(0),
        };
        if total > *last {
            counter.inc_by(total - *last);
            *last = total;
        }
    }
}

/// A stage's stats, as metrics.
pub trait Export {
    fn export(&self, stage: &'static str, out: &mut Exporter);
    fn activity(&self) -> Activity {
        Activity::Running
    }
    /// The database outage the stage is waiting out: since when, and why its last attempt failed.
    fn database_outage(&self) -> Option<(Instant, String)> {
        None
    }
    /// The stage has lost its broker (its `BrokerWatch` says so).
    fn broker_down(&self) -> bool {
        false
    }
}

/// The health of one running stage.
#[derive(Debug, Clone, Default)]
struct StageHealth {
    running: u32,
    broker_down: bool,
    db_down: Option<DbDown>,
}

/// A database outage as `/healthz` shows it.
#[derive(Debug, Clone)]
struct DbDown {
    since: Instant,
    /// Unknown for a stage that only says it is waiting.
    reason: Option<String>,
}

/// A reason is one line of at most this many characters in `/healthz`.
const REASON_MAX: usize = 300;

static HEALTH: LazyLock<Mutex<BTreeMap<&'static str, StageHealth>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// A stage registered as running for `/healthz` and `ecomlogs_stage_up`, and its counters' exporter;
/// dropping it marks the stage stopped.
pub struct StageMetrics {
    stage: &'static str,
    exporter: Exporter,
}

impl StageMetrics {
    pub fn start(stage: &'static str, topics: &[(&'static str, &str)]) -> Self {
        locked(&HEALTH).entry(stage).or_default().running += 1;
        METRICS.up.with_label_values(&[stage]).set(1);
        StageMetrics {
            stage,
            exporter: Exporter {
                stage,
                topics: topics.iter().map(|(r, t)| (*r, t.to_string())).collect(),
                ..Exporter::default()
            },
        }
    }

    /// Once a tick and once at the end: counters to the stage's totals, health from its outage or
    /// activity.
    pub fn report<S: Export>(&mut self, stats: &S) {
        stats.export(self.stage, &mut self.exporter);
        let outage = stats.database_outage();
        if let Some(h) = locked(&HEALTH).get_mut(self.stage) {
            h.broker_down = stats.broker_down();
            h.db_down = match outage {
                Some((since, reason)) => Some(DbDown {
                    since,
                    reason: Some(reason),
                }),
                None if stats.activity() == Activity::WaitingForDatabase => {
                    h.db_down.take().or(Some(DbDown {
                        since: Instant::now(),
                        reason: None,
                    }))
                }
                None => None,
            };
        }
    }
}

impl Drop for StageMetrics {
    fn drop(&mut self) {
        let mut health = locked(&HEALTH);
        if let Some(h) = health.get_mut(self.stage) {
            h.running = h.running.saturating_sub(1);
            if h.running == 0 {
                health.remove(self.stage);
                METRICS.up.with_label_values(&[self.stage]).set(0);
            }
        }
    }
}

/// Runs a stage (`run` gets the tick to report through) with its metrics and health: counters
/// advanced at every tick and to the final totals at the end.
pub fn observed<S: Export>(
    stage: &'static str,
    topics: &[(&'static str, &str)],
    tick: &mut dyn FnMut(&S) -> crate::error::Result<()>,
    run: impl FnOnce(&mut dyn FnMut(&S) -> crate::error::Result<()>) -> crate::error::Result<S>,
) -> crate::error::Result<S> {
    let mut m = StageMetrics::start(stage, topics);
    let mut report = |s: &S| {
        m.report(s);
        tick(s)
    };
    let result = run(&mut report);
    if let Ok(s) = &result {
        m.report(s);
    }
    result
}

/// `/healthz`: Ok while at least one stage runs and every running stage reaches its broker and
/// database; otherwise the reasons, in one line (a database outage with the error its last attempt
/// met and how long it has lasted).
pub fn health() -> Result<String, String> {
    let health = locked(&HEALTH);
    if health.is_empty() {
        return Err("no stage is running".into());
    }
    let mut problems = Vec::new();
    for (stage, h) in health.iter() {
        if h.broker_down {
            problems.push(format!("{stage}: the Kafka broker is unreachable"));
        }
        if let Some(db) = &h.db_down {
            let mut line = format!("{stage}: PostgreSQL is unavailable");
            if let Some(reason) = &db.reason {
                let reason = match reason.char_indices().nth(REASON_MAX) {
                    Some((cut, _)) => format!("{}...", &reason[..cut]),
                    None => reason.clone(),
                };
                line.push_str(&format!(" ({reason})"));
            }
            line.push_str(&format!(", retrying for {}s", db.since.elapsed().as_secs()));
            problems.push(line);
        }
    }
    if problems.is_empty() {
        let stages: Vec<&str> = health.keys().copied().collect();
        Ok(format!("ok: {} running", stages.join(", ")))
    } else {
        Err(problems.join("; "))
    }
}

/// Per-partition lag of one consumer, from librdkafka's cached high watermarks and the consumer's
/// positions (no request to the broker); the age is that of the last record processed in a partition
/// that still has lag (the oldest waiting record is no older than it).
pub struct Lag {
    stage: &'static str,
    topic: String,
    /// Timestamp (ms) of the last record processed, per partition.
    last_ts: HashMap<i32, i64>,
    shown: Vec<i32>,
}

impl Lag {
    pub fn new(stage: &'static str, topic: &str) -> Self {
        Lag {
            stage,
            topic: topic.to_string(),
            last_ts: HashMap::new(),
            shown: Vec::new(),
        }
    }

    /// A record of `partition` with this timestamp (ms since the epoch) has been processed.
    pub fn processed(&mut self, partition: i32, timestamp_ms: Option<i64>) {
        if let Some(ts) = timestamp_ms {
            self.last_ts.insert(partition, ts);
        }
    }

    /// Sets the gauges for the partitions assigned now, and removes those of partitions gone.
    pub fn update<C: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &rdkafka::consumer::BaseConsumer<C>,
    ) {
        let m = &*METRICS;
        let positions = consumer.position().unwrap_or_default();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut current = Vec::new();
        for e in positions.elements_for_topic(&self.topic) {
            let p = e.partition();
            let Some((low, high)) =
                crate::kafka::cached_watermarks(consumer.client(), &self.topic, p)
            else {
                continue; // nothing fetched from it yet
            };
            let pos = match e.offset() {
                Offset::Offset(o) => o,
                _ => low.max(0),
            };
            let lag = (high - pos).max(0);
            let age = match self.last_ts.get(&p) {
                Some(&ts) if lag > 0 => ((now_ms - ts).max(0) as f64) / 1000.0,
                _ => 0.0,
            };
            let part = p.to_string();
            let labels = [self.stage, self.topic.as_str(), part.as_str()];
            m.lag_messages.with_label_values(&labels).set(lag);
            m.lag_seconds.with_label_values(&labels).set(age);
            current.push(p);
        }
        for gone in self.shown.iter().filter(|p| !current.contains(p)) {
            self.remove(*gone);
        }
        self.shown = current;
    }

    fn remove(&self, partition: i32) {
        let part = partition.to_string();
        let labels = [self.stage, self.topic.as_str(), part.as_str()];
        let _ = METRICS.lag_messages.remove_label_values(&labels);
        let _ = METRICS.lag_seconds.remove_label_values(&labels);
    }
}

impl Drop for Lag {
    fn drop(&mut self) {
        for p in &self.shown {
            self.remove(*p);
        }
    }
}

/// One committed batch: its size and the time from its first record to its commit.
pub fn batch(stage: &str, rows: usize, took: Duration) {
    let m = &*METRICS;
    m.batch_rows
        .with_label_values(&[stage])
        .observe(rows as f64);
    m.batch_seconds
        .with_label_values(&[stage])
        .observe(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        n: u64,
        waiting: bool,
        outage: Option<(Instant, String)>,
        broker_down: bool,
    }

    impl Export for Fake {
        fn export(&self, stage: &'static str, out: &mut Exporter) {
            out.advance(
                "consumed",
                &METRICS.consumed.with_label_values(&[stage]),
                self.n,
            );
        }
        fn activity(&self) -> Activity {
            if self.waiting {
                Activity::WaitingForDatabase
            } else {
                Activity::Running
            }
        }
        fn database_outage(&self) -> Option<(Instant, String)> {
            self.outage.clone()
        }
        fn broker_down(&self) -> bool {
            self.broker_down
        }
    }

    fn value(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_grow_by_exactly_the_stage_totals_and_health_follows_the_stage() {
        let mut s = StageMetrics::start("unit-a", &[]);
        s.report(&Fake {
            n: 5,
            ..Fake::default()
        });
        s.report(&Fake {
            n: 12,
            ..Fake::default()
        });
        s.report(&Fake {
            n: 12,
            ..Fake::default()
        });
        let text = render();
        assert_eq!(
            value(&text, "ecomlogs_events_consumed_total{stage=\"unit-a\"}"),
            Some(12.0)
        );
        assert!(health().is_ok_and(|h| h.contains("unit-a")));
        s.report(&Fake {
            n: 12,
            waiting: true,
            ..Fake::default()
        });
        let err = health().unwrap_err();
        assert!(err.contains("unit-a: PostgreSQL is unavailable"), "{err}");
        // With the sink's outage: its reason and how long it has lasted.
        let since = Instant::now() - Duration::from_secs(12);
        s.report(&Fake {
            n: 12,
            outage: Some((since, "could not extend file, SQLSTATE 53100".into())),
            ..Fake::default()
        });
        let err = health().unwrap_err();
        assert!(
            err.contains("unit-a: PostgreSQL is unavailable (could not extend file, SQLSTATE 53100), retrying for 12s"),
            "{err}"
        );
        s.report(&Fake {
            n: 12,
            ..Fake::default()
        });
        assert!(health().is_ok_and(|h| h.contains("unit-a")));
        s.report(&Fake {
            n: 12,
            broker_down: true,
            ..Fake::default()
        });
        assert!(health().unwrap_err().contains("broker is unreachable"));
        drop(s);
        assert!(!render().contains("ecomlogs_stage_up{stage=\"unit-a\"} 1"));
    }
}
