//! Stage 3: `clean_events` -> PostgreSQL `kafka_events_silver`, exactly once.
//!
//! Each batch is one transaction: a binary COPY of the rows plus the consumed offsets, stored with what
//! identifies the log they belong to. PostgreSQL is the only source of truth for where to start: on
//! assignment each partition starts at the offset stored there once the log is checked to be the same
//! one (see `resume`), at the beginning of the log when nothing is stored or the log is a new one
//! (the unique `event_id` skips what is already in the table), never at the group's Kafka commit, which
//! is advisory. An outage pauses and retries with backoff; a row the database rejects is isolated and
//! dead-lettered with its SQLSTATE; a fault (missing table, no permission, ...) stops the stage.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{ClientKind, KafkaSettings};
use crate::dead_letter::{self};
use crate::error::{Error, Result};
use crate::kafka::{ensure_topics, BrokerWatch, DeliveryTracker, InputState};
use crate::metrics::{self, Export, Exporter, METRICS};
use crate::options::{cmd, Values};
use crate::pg::{self, Config};
use crate::resume::LogCheck;
use crate::sink::{PgSink, SinkState};
use crate::stage::{locked, run_workers, Activity, Quiet, Run, Stats, StopToken, TICK};
use crate::validate::Reason;

mod batch;
mod context;
mod writer;

use batch::Batch;
use context::{LoaderContext, LoaderState};
use writer::{Flushed, Writer};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub topic: String,
    pub group_id: String,
    pub dsn: String,
    pub dlq_topic: String,
    /// Rows per transaction at most (the original's 500).
    pub batch_size: usize,
    /// A batch is written at the latest this long after its first record arrived.
    pub flush_interval: Duration,
    /// A partial batch is written as soon as no record has arrived for this long (the input caught up),
    /// so a quiet topic does not hold rows back for the whole `flush_interval`.
    pub quiet_flush: Duration,
    pub until_idle: Option<Duration>,
    /// Finish, commit and return once every assigned partition has been stored to its end.
    pub until_caught_up: bool,
    pub partitions: i32,
    /// Apply pending migrations at start-up.
    pub migrate: bool,
    /// Longest pause between reconnection attempts during an outage.
    pub max_backoff: Duration,
    pub log_each: bool,
    /// Consumers (threads) in this process, each with its own PostgreSQL connection; they share the
    /// group's partitions, so up to one per partition writes in parallel.
    pub workers: usize,
    /// Drop the daily partitions whose day ended more than this many days ago, at start and hourly
    /// (None: never; see `pg::history::retention`).
    pub retention_days: Option<u32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::from_values(&Values::defaults(cmd::LOAD)).expect("the table's defaults are valid")
    }
}

impl LoadOptions {
    /// From the loader's options (see `options`).
    pub fn from_values(v: &Values) -> Result<Self> {
        Ok(LoadOptions {
            topic: v.text("topic")?,
            group_id: v.text("group_id")?,
            dsn: v.text("dsn")?,
            dlq_topic: v.text("dlq_topic")?,
            batch_size: v.int("batch_size")?,
            flush_interval: v.millis("flush_interval_ms")?,
            quiet_flush: QUIET_FLUSH,
            until_idle: v.opt_seconds("until_idle_s")?,
            until_caught_up: v.flag("until_caught_up")?,
            partitions: v.int("partitions")?,
            migrate: v.flag("migrate")?,
            max_backoff: v.seconds("max_backoff_s")?,
            log_each: v.flag("log_each")?,
            workers: v.int("workers")?,
            retention_days: v.opt_int("retention_days")?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    pub consumed: u64,
    pub rows_inserted: u64,
    /// Events already in the table (redelivered upstream), skipped by the unique event_id.
    pub duplicates_skipped: u64,
    pub dead_lettered: u64,
    pub by_reason: BTreeMap<Reason, u64>,
    pub batches: u64,
    /// Reconnection attempts during database outages.
    pub db_retries: u64,
    /// Partitions whose stored offset belonged to another log (reset broker, re-created topic) and
    /// that were loaded again from the beginning of the new one.
    pub log_resets: u64,
    /// Offsets deleted by the broker's retention before they were loaded (logged as an error).
    pub offsets_lost: u64,
    /// What the harness keeps (elapsed, interrupted, activity, caught up, quiet).
    pub run: Run,
    /// Records consumed but not written when an interrupt came during an outage (they are replayed at the
    /// next start: their offsets were not stored).
    pub unwritten: u64,
    /// The workers' sinks, read live when stats are merged: a worker blocked in a batch that an outage
    /// holds up cannot publish its retries, but the stage's health and metrics must show them.
    sinks: Vec<Arc<SinkState>>,
}

impl LoadStats {
    /// Failed database attempts, counted by the sinks as they happen.
    fn live_db_retries(&self) -> u64 {
        let live: u64 = self.sinks.iter().map(|s| s.retries()).sum();
        live.max(self.db_retries)
    }

    fn live_activity(&self) -> Activity {
        if self.sinks.iter().any(|s| s.waiting()) {
            Activity::WaitingForDatabase
        } else {
            self.run.activity
        }
    }
}

impl Stats for LoadStats {
    fn add(&mut self, other: &LoadStats) {
        self.consumed += other.consumed;
        self.rows_inserted += other.rows_inserted;
        self.duplicates_skipped += other.duplicates_skipped;
        self.dead_lettered += other.dead_lettered;
        for (r, n) in &other.by_reason {
            *self.by_reason.entry(*r).or_default() += n;
        }
        self.batches += other.batches;
        self.db_retries += other.live_db_retries();
        self.log_resets += other.log_resets;
        self.offsets_lost += other.offsets_lost;
        self.unwritten += other.unwritten;
        // A worker blocked in an outage cannot say so itself: its sink does.
        self.run.activity = self.run.activity.max(other.live_activity());
        self.sinks.extend(other.sinks.iter().cloned());
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }
}

/// Default `LoadOptions::quiet_flush`: longer than the gaps between fetches of a busy topic (records
/// arrive every few milliseconds), short enough not to matter for freshness.
pub const QUIET_FLUSH: Duration = Duration::from_millis(50);

/// Runs `opts.workers` loader loops in threads (each its own consumer in the group, its own PostgreSQL
/// connection and dead-letter producer) and reports their summed counts through `tick` every `TICK`.
/// `token` (and `tick` returning `Error::Interrupted`) stops every worker after the batch in flight.
pub fn run_loader(
    settings: &KafkaSettings,
    opts: &LoadOptions,
    token: &StopToken,
    tick: &mut dyn FnMut(&LoadStats) -> Result<()>,
) -> Result<LoadStats> {
    if opts.topic == opts.dlq_topic {
        return Err(Error::Config(format!(
            "the dead-letter topic cannot be the input topic {}",
            opts.topic
        )));
    }
    let pg_cfg = pg::parse_dsn(&opts.dsn)?;
    let mut client = pg::connect(&pg_cfg)?;
    if opts.migrate {
        pg::migrate(&mut client)?;
    }
    pg::check_schema(&mut client)?;
    if let Some(days) = opts.retention_days {
        pg::history::retention(&mut client, days, pg::history::today(), false)
            .map_err(|e| Error::database("dropping old partitions", &e))?;
    }
    // A loader that stopped without merging (kill -9) left customer deltas: merged now.
    while pg::history::merge_customer_deltas(&mut client)
        .map_err(|e| Error::database("merging the customer rollup", &e))?
        > 0
    {}
    ensure_topics(
        settings,
        &[&opts.topic, &opts.dlq_topic],
        opts.partitions,
        Duration::from_secs(15),
    )?;
    let settings = &crate::kafka::session::resolve(settings);
    log::info!(
        target: "ecomlogs.loader",
        "loading {} (group {}) into {} at {} in batches of {} rows or {} ms{}",
        opts.topic, opts.group_id, pg::TABLE, pg::describe_dsn(&pg_cfg), opts.batch_size,
        opts.flush_interval.as_millis(),
        if opts.workers > 1 { format!(", {} workers", opts.workers) } else { String::new() }
    );
    if opts.until_caught_up {
        token.drain();
    }
    let first = Mutex::new(Some(client));
    let topics = [("dead_letters", opts.dlq_topic.as_str())];
    // One watch for the stage: an outage is logged once, and ends for every worker at once.
    let watch = BrokerWatch::new("ecomlogs.loader");
    metrics::observed("loader", &topics, tick, |tick| {
        run_workers(
            "loader",
            opts.workers,
            opts.until_idle,
            token,
            tick,
            &|index, shared| {
                let client = locked(&first).take();
                let mut w = Worker::new(settings, opts, &pg_cfg, client, token, watch.clone())?;
                // One worker keeps the retention going (every hour; the start did it once).
                w.retains = index == 0 && opts.retention_days.is_some();
                w.run(shared)
            },
        )
    })
}

impl Export for LoadStats {
    fn export(&self, stage: &'static str, out: &mut Exporter) {
        let m = &*METRICS;
        out.advance(
            "consumed",
            &m.consumed.with_label_values(&[stage]),
            self.consumed,
        );
        out.advance("rows", &m.rows_inserted, self.rows_inserted);
        out.advance("duplicates", &m.duplicates, self.duplicates_skipped);
        out.advance("db_retries", &m.db_retries, self.db_retries);
        out.produced("dead_letters", self.dead_lettered);
        for (reason, n) in &self.by_reason {
            let c = m.dead_letters.with_label_values(&[stage, reason.code()]);
            out.advance(reason.code(), &c, *n);
        }
    }

    fn activity(&self) -> Activity {
        self.live_activity()
    }

    /// The longest outage any worker's sink is waiting out.
    fn database_outage(&self) -> Option<(Instant, String)> {
        self.sinks
            .iter()
            .filter_map(|s| s.outage())
            .min_by_key(|o| o.since)
            .map(|o| (o.since, o.reason))
    }

    fn broker_down(&self) -> bool {
        self.run.quiet.broker_down
    }
}

/// How often an idle loader checks its database connection (health, status line).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Counts since the last progress log line.
#[derive(Default)]
struct Tally {
    rows: u64,
    duplicates: u64,
    dead: u64,
}

/// One consumer's loop: batches, writes, commits, until stopped, idle, or failed.
struct Worker<'a> {
    opts: &'a LoadOptions,
    consumer: Arc<BaseConsumer<LoaderContext>>,
    producer: Arc<BaseProducer<DeliveryTracker>>,
    token: &'a StopToken,
    stats: LoadStats,
    /// The batch being filled, and an empty one back from the writer for the next.
    batch: Batch,
    spare: Option<Batch>,
    /// A batch is with the writer.
    in_flight: bool,
    input: InputState,
    tally: Tally,
    last_log: Instant,
    lag: metrics::Lag,
    /// Last lag update and idle connection check.
    last_lag: Instant,
    last_probe: Instant,
    /// This worker runs the retention (`LoadOptions::retention_days`), last at `last_retention`.
    retains: bool,
    last_retention: Instant,
}

/// How often a loader that keeps a retention drops the partitions that grew old.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

impl<'a> Worker<'a> {
    fn new(
        settings: &KafkaSettings,
        opts: &'a LoadOptions,
        pg_cfg: &Config,
        client: Option<Client>,
        token: &'a StopToken,
        watch: std::sync::Arc<BrokerWatch>,
    ) -> Result<Self> {
        let client = match client {
            Some(c) => c,
            None => pg::connect(pg_cfg)?,
        };
        let group = ClientKind::Consumer {
            group: &opts.group_id,
        };
        // An outage pauses the loop without polling; stay in the group for a long one.
        let cconf = settings.client(group, &[("max.poll.interval.ms", "1800000")]);
        let sink = PgSink::new(
            pg_cfg.clone(),
            Some(client),
            &opts.group_id,
            &opts.topic,
            opts.max_backoff,
            token.clone(),
        );
        let sink_state = Arc::clone(sink.state());
        let ctx = LoaderContext::with(
            watch.clone(),
            LoaderState {
                sink: Mutex::new(sink),
                topic: opts.topic.clone(),
                check: LogCheck::new(
                    &opts.topic,
                    cconf.clone(),
                    watch.clone(),
                    "ecomlogs.loader",
                    "PostgreSQL",
                ),
                topic_id: Mutex::new(None),
                stored: Mutex::new(HashMap::new()),
                log_resets: AtomicU64::new(0),
                offsets_lost: AtomicU64::new(0),
                fault: Mutex::new(None),
            },
        );
        let consumer: BaseConsumer<LoaderContext> = cconf
            .create_with_context(ctx)
            .map_err(|e| Error::kafka("creating the Kafka consumer", e))?;
        let producer: BaseProducer<DeliveryTracker> = settings
            .client(ClientKind::Producer, dead_letter::PRODUCER)
            .create_with_context(DeliveryTracker::new(watch))
            .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
        consumer
            .subscribe(&[&opts.topic])
            .map_err(|e| Error::kafka(format!("subscribing to {}", opts.topic), e))?;
        Ok(Worker {
            opts,
            consumer: Arc::new(consumer),
            producer: Arc::new(producer),
            token,
            stats: LoadStats {
                run: Run {
                    activity: Activity::JoiningGroup,
                    ..Run::default()
                },
                sinks: vec![sink_state],
                ..LoadStats::default()
            },
            batch: Batch::new(opts.batch_size),
            spare: None,
            in_flight: false,
            input: InputState::new("ecomlogs.loader", settings),
            tally: Tally::default(),
            last_log: Instant::now(),
            lag: metrics::Lag::new("loader", &opts.topic),
            last_lag: Instant::now(),
            last_probe: Instant::now(),
            retains: false,
            last_retention: Instant::now(),
        })
    }

    fn run(&mut self, shared: &Mutex<LoadStats>) -> Result<()> {
        let (consumer, producer, opts) = (self.consumer.clone(), self.producer.clone(), self.opts);
        let result = std::thread::scope(|scope| {
            let mut writer = Writer::spawn(scope, consumer, producer, opts)?;
            let result = self.run_loop(shared, &mut writer);
            // The batch in flight is finished either way (a failure elsewhere stops after it).
            let last = writer.finish();
            result.and_then(|()| match last? {
                Some(f) => self.flushed(f).map(|_| ()),
                None => Ok(()),
            })
        })
        .and_then(|()| {
            // What the batches left for the customer rollup, merged before leaving.
            locked(&self.consumer.context().sink)
                .merge_deltas(true)
                .map(|_| ())
        });
        // Leaving the group may call the rebalance callback: no more retries for this consumer.
        locked(&self.consumer.context().sink).finish();
        self.log_progress();
        self.publish(shared);
        result
    }

    fn run_loop(&mut self, shared: &Mutex<LoadStats>, writer: &mut Writer) -> Result<()> {
        let start = Instant::now();
        let mut last_tick = start;
        loop {
            let stopping = self.token.is_stopped();
            if let Some(f) = writer.try_take()? {
                if !self.flushed(f)? {
                    break; // stopped during an outage
                }
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                // Both clients' news of the broker, once a tick (see `kafka::note_served`); the
                // dead-letter producer sends seldom, so nothing else would serve it.
                crate::kafka::note_served(self.consumer.client());
                crate::kafka::serve(&self.producer, Duration::ZERO);
                self.stats.run.elapsed = start.elapsed();
                self.publish(shared);
                if !self.retain()? {
                    break; // stopped during an outage
                }
            }
            if !stopping
                && !self
                    .batch
                    .is_due(self.opts, self.input.last_input, self.input.caught_up())
            {
                let got = self.fill(self.batch.wait(self.opts, self.input.last_input))?;
                if let Some(e) = locked(&self.consumer.context().fault).take() {
                    return Err(e);
                }
                if got
                    || !self
                        .batch
                        .is_due(self.opts, self.input.last_input, self.input.caught_up())
                {
                    continue;
                }
            }
            if !self.batch.is_empty() && !self.hand_off(shared, writer)? {
                break; // stopped during an outage
            }
            if stopping {
                self.stats.run.interrupted |= stopping && self.token.is_interrupted();
                break;
            }
        }
        Ok(())
    }

    /// Polls once (waiting up to `wait`), then takes whatever librdkafka already holds, up to a full
    /// batch; the clock is read once per burst. True if any record came.
    fn fill(&mut self, wait: Duration) -> Result<bool> {
        let mut next = self.consumer.poll(wait);
        let ctx = self.consumer.context();
        self.input.sync(&ctx.assignment, &self.consumer)?;
        let mut taken = 0u64;
        loop {
            match next {
                Some(Ok(m)) => {
                    ctx.watch.alive();
                    self.input.record(m.partition());
                    // Records below the stored offset are already in the table.
                    let below = locked(&ctx.stored)
                        .get(&m.partition())
                        .is_some_and(|&stored| m.offset() < stored);
                    if !below {
                        self.batch.take(&m, self.opts.log_each);
                        taken += 1;
                    }
                }
                Some(Err(e)) => {
                    let answered = matches!(e, rdkafka::error::KafkaError::PartitionEOF(_));
                    self.input.poll_error(e, &self.consumer)?;
                    if answered {
                        ctx.watch.alive(); // a fetch answered: the broker is there
                    }
                    break;
                }
                None => break,
            }
            if self.batch.is_full() {
                break;
            }
            next = self.consumer.poll(Duration::ZERO);
        }
        if taken > 0 {
            self.stats.consumed += taken;
            self.stats.run.activity = Activity::Running;
            self.input.last_input = Instant::now();
            self.batch.started.get_or_insert(self.input.last_input);
        }
        Ok(taken > 0)
    }

    /// Hands the batch over to the writer, once the one before is written (its result taken); the
    /// next one is filled meanwhile. False: stopped during an outage (nothing of the batch in flight was
    /// stored; it is read again at the next start).
    fn hand_off(&mut self, shared: &Mutex<LoadStats>, writer: &mut Writer) -> Result<bool> {
        if let Some(f) = writer.wait()? {
            if !self.flushed(f)? {
                return Ok(false);
            }
        }
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| Batch::new(self.opts.batch_size));
        let mut batch = std::mem::replace(&mut self.batch, next);
        // Not full: the input went quiet (or the time bound came): the rollups are brought up to date
        // with it, so a trickle is in top_customers at once; a backlog merges every 30 s.
        batch.settles = !batch.is_full();
        self.stats.run.activity = Activity::Writing;
        locked(shared).run.activity = Activity::Writing;
        self.in_flight = true;
        writer.send(batch)?;
        Ok(true)
    }

    /// A batch back from the writer: counted, observed, its offsets remembered and told to Kafka. False:
    /// it was not written (stopped during an outage).
    fn flushed(&mut self, f: Flushed) -> Result<bool> {
        self.in_flight = false;
        let Some(written) = f.written else {
            self.stats.unwritten = (f.batch.len() + self.batch.len()) as u64;
            log::warn!(
                target: "ecomlogs.loader",
                "stopping during a database outage: {} records not written; they will be loaded at the next start",
                self.stats.unwritten
            );
            return Ok(false);
        };
        let dead: u64 = f.dead_by_reason.values().sum();
        self.stats.rows_inserted += written.inserted;
        self.stats.duplicates_skipped += written.duplicates;
        self.stats.dead_lettered += dead;
        for (r, n) in f.dead_by_reason {
            *self.stats.by_reason.entry(r).or_default() += n;
        }
        self.stats.batches += 1;
        self.stats.run.activity = Activity::Running;
        self.tally.rows += written.inserted;
        self.tally.duplicates += written.duplicates;
        self.tally.dead += dead;
        let mut batch = f.batch;
        self.observe_batch(&batch);
        self.commit_advisory(&batch);
        batch.clear();
        self.spare = Some(batch);
        self.log_progress();
        Ok(true)
    }

    /// A committed batch, as metrics: its size and duration, each row's age at commit, the partitions'
    /// last processed timestamps (for the lag's age).
    fn observe_batch(&mut self, batch: &Batch) {
        let took = batch.started.map(|t| t.elapsed()).unwrap_or_default();
        metrics::batch("loader", batch.len(), took);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ages = metrics::METRICS.event_to_row.local();
        for s in batch.origin.iter().filter(|s| s.timestamp_ms >= 0) {
            ages.observe((now_ms - s.timestamp_ms).max(0) as f64 / 1000.0);
        }
        ages.flush();
        for p in &batch.progress {
            self.lag.processed(p.partition, Some(p.last.timestamp_ms));
        }
    }

    /// Remembers the stored offsets and tells Kafka too (advisory: for lag in Kafka tools; the offsets
    /// of record are in PostgreSQL).
    fn commit_advisory(&self, batch: &Batch) {
        let mut tpl = TopicPartitionList::new();
        let mut known = locked(&self.consumer.context().stored);
        for p in &batch.progress {
            let _ = tpl.add_partition_offset(
                &self.opts.topic,
                p.partition,
                Offset::Offset(p.next_offset),
            );
            known.insert(p.partition, p.next_offset);
        }
        drop(known);
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            log::debug!(target: "ecomlogs.loader", "advisory Kafka commit failed: {e}");
        }
    }

    fn log_progress(&mut self) {
        let t = std::mem::take(&mut self.tally);
        if t.rows + t.duplicates + t.dead > 0 {
            log::info!(
                target: "ecomlogs.loader",
                "stored {} rows ({} duplicates skipped, {} dead-lettered)",
                t.rows, t.duplicates, t.dead
            );
        }
        self.last_log = Instant::now();
    }

    /// Between batches, once an hour: drops the partitions that grew older than the retention (see
    /// `LoadOptions::retention_days`). False: stopped during an outage.
    fn retain(&mut self) -> Result<bool> {
        let Some(days) = self.opts.retention_days.filter(|_| self.retains) else {
            return Ok(true);
        };
        if !self.batch.is_empty()
            || self.in_flight
            || self.last_retention.elapsed() < RETENTION_EVERY
        {
            return Ok(true);
        }
        self.last_retention = Instant::now();
        let retired = locked(&self.consumer.context().sink).retention(days)?;
        Ok(retired.is_some())
    }

    fn publish(&mut self, shared: &Mutex<LoadStats>) {
        if self.last_lag.elapsed() >= Duration::from_secs(1) {
            self.last_lag = Instant::now();
            self.lag.update(&self.consumer);
        }
        let ctx = self.consumer.context();
        let nothing_to_write = self.batch.is_empty() && !self.in_flight;
        if nothing_to_write && self.last_probe.elapsed() >= PROBE_EVERY {
            self.last_probe = Instant::now();
            locked(&ctx.sink).probe();
        }
        {
            let sink = locked(&ctx.sink);
            self.stats.db_retries = sink.retries();
            if sink.waiting() {
                self.stats.run.activity = Activity::WaitingForDatabase;
            } else if self.stats.run.activity == Activity::WaitingForDatabase {
                self.stats.run.activity = Activity::Running;
            }
        }
        if self.stats.run.activity == Activity::JoiningGroup && self.input.assigned() {
            self.stats.run.activity = Activity::Running;
        }
        self.stats.run.caught_up = self.input.caught_up() && nothing_to_write;
        // Idle only with nothing left to write.
        self.stats.run.quiet = Quiet {
            assigned: self.input.assigned(),
            since: self.input.quiet_since().filter(|_| nothing_to_write),
            broker_down: ctx.watch.is_down(),
        };
        self.stats.log_resets = ctx.log_resets.load(Ordering::Relaxed);
        self.stats.offsets_lost = ctx.offsets_lost.load(Ordering::Relaxed);
        *locked(shared) = self.stats.clone();
    }
}
