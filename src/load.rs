//! Stage 3: `clean_events` -> PostgreSQL `kafka_events_silver`, exactly once.
//!
//! Each batch is one transaction: a binary COPY of the rows plus an upsert of the consumed offsets
//! (group, topic, partition, next offset). On assignment the consumer starts from the offsets stored in
//! PostgreSQL, so a crash anywhere replays exactly what was not committed; redelivered events (from an
//! at-least-once upstream) hit the unique `event_id` and are skipped. The Kafka commit that follows is
//! advisory. An outage pauses and retries forever with backoff; a row the database rejects is isolated
//! by splitting the batch and dead-lettered with its SQLSTATE.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, Config};
use rand::Rng;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{describe_pg, Error, Result};
use crate::kafka::{
    dead_letter_headers, describe_tpl, ensure_topics, is_fatal, log_rebalance, send_blocking,
    DeadLetterInfo, DeliveryTracker, KafkaSettings, CLEAN_TOPIC, DEFAULT_PARTITIONS, DLQ_TOPIC,
    LOADER_GROUP,
};
use crate::pg;
use crate::validate::{validate, Reason};

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
    pub partitions: i32,
    /// Apply pending migrations at start-up.
    pub migrate: bool,
    /// Longest pause between reconnection attempts during an outage.
    pub max_backoff: Duration,
    pub log_each: bool,
    /// Consumers (threads) in this process, each with its own PostgreSQL connection; they share the
    /// group's partitions, so up to one per partition writes in parallel.
    pub workers: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            topic: CLEAN_TOPIC.into(),
            group_id: LOADER_GROUP.into(),
            dsn: pg::DEFAULT_DSN.into(),
            dlq_topic: DLQ_TOPIC.into(),
            batch_size: 500,
            flush_interval: Duration::from_millis(1000),
            quiet_flush: QUIET_FLUSH,
            until_idle: None,
            partitions: DEFAULT_PARTITIONS,
            migrate: true,
            max_backoff: Duration::from_secs(10),
            log_each: false,
            workers: 1,
        }
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
    pub elapsed: Duration,
    pub interrupted: bool,
    /// Records consumed but not written when an interrupt came during an outage (they are replayed at the
    /// next start: their offsets were not stored).
    pub unwritten: u64,
}

impl LoadStats {
    fn add(&mut self, other: &LoadStats) {
        self.consumed += other.consumed;
        self.rows_inserted += other.rows_inserted;
        self.duplicates_skipped += other.duplicates_skipped;
        self.dead_lettered += other.dead_lettered;
        for (r, n) in &other.by_reason {
            *self.by_reason.entry(*r).or_default() += n;
        }
        self.batches += other.batches;
        self.db_retries += other.db_retries;
        self.interrupted |= other.interrupted;
        self.unwritten += other.unwritten;
    }
}

pub const TICK: Duration = Duration::from_millis(100);
/// Default `LoadOptions::quiet_flush`: longer than the gaps between fetches of a busy topic (records
/// arrive every few milliseconds), short enough not to matter for freshness.
pub const QUIET_FLUSH: Duration = Duration::from_millis(50);

/// The consumer context: on assignment, start each partition at the offset stored in PostgreSQL.
struct LoaderContext {
    pg: Config,
    group: String,
    client: Mutex<Option<Client>>,
    /// Next offset per partition that is safely stored; records below it are skipped.
    stored: Mutex<HashMap<i32, i64>>,
    rebalances: AtomicU64,
    /// Set by `run_loader` on Ctrl-C (also ends the retries of an outage).
    stop: Arc<AtomicBool>,
    /// This consumer's loop has ended.
    done: AtomicBool,
    max_backoff: Duration,
    retries: AtomicU64,
}

impl ClientContext for LoaderContext {}

impl ConsumerContext for LoaderContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let stored = self.with_client(|c| pg::load_offsets(c, &self.group, &parts));
                let mut known = self.stored.lock().unwrap_or_else(|p| p.into_inner());
                known.clear();
                for (topic, partition, next) in stored.unwrap_or_default() {
                    if tpl
                        .set_partition_offset(&topic, partition, Offset::Offset(next))
                        .is_ok()
                    {
                        known.insert(partition, next);
                    }
                }
                drop(known);
                if let Err(e) = consumer.assign(tpl) {
                    log::error!(target: "ecomlogs.loader", "assigning partitions failed: {e}");
                }
                log::info!(target: "ecomlogs.kafka", "assigned {} (starting at the offsets stored in PostgreSQL)", describe_tpl(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                log_rebalance(&Rebalance::Revoke(tpl));
                if let Err(e) = consumer.unassign() {
                    log::error!(target: "ecomlogs.loader", "unassigning partitions failed: {e}");
                }
            }
            other => {
                log::warn!(target: "ecomlogs.kafka", "rebalance error: {other:?}");
                let _ = consumer.unassign();
            }
        }
        self.rebalances.fetch_add(1, Ordering::Relaxed);
    }
}

impl LoaderContext {
    /// Runs `f` on the connection, reconnecting with backoff through outages until it succeeds or the
    /// loader is stopping (then returns None).
    fn with_client<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Option<T> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let mut attempt = 0u32;
        loop {
            if guard.is_none() {
                match pg::connect(&self.pg) {
                    Ok(c) => *guard = Some(c),
                    Err(e) => {
                        if !self.backoff(&mut attempt, &e.to_string()) {
                            return None;
                        }
                        continue;
                    }
                }
            }
            let client = guard.as_mut().expect("connected above");
            match f(client) {
                Ok(v) => return Some(v),
                Err(e) => {
                    *guard = None;
                    if !self.backoff(&mut attempt, &describe_pg(&e)) {
                        return None;
                    }
                }
            }
        }
    }

    /// Sleeps before the next attempt (exponential, with jitter); false when the loader is stopping.
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.done.load(Ordering::Relaxed)
    }

    fn backoff(&self, attempt: &mut u32, why: &str) -> bool {
        if self.stopping() {
            return false;
        }
        *attempt += 1;
        self.retries.fetch_add(1, Ordering::Relaxed);
        let base = Duration::from_millis(200).saturating_mul(1u32 << (*attempt - 1).min(10));
        let capped = base.min(self.max_backoff);
        let wait = capped.mul_f64(rand::rng().random_range(0.5..1.0));
        log::warn!(
            target: "ecomlogs.loader",
            "PostgreSQL unavailable ({}); attempt {} failed, retrying in {:.1}s",
            one_line(why), attempt, wait.as_secs_f64()
        );
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.stopping() {
                return false;
            }
            std::thread::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
        }
        true
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The records on their way to the table: their COPY tuples, and where each came from.
struct Rows {
    tuples: pg::CopyRows,
    origin: Vec<(i32, i64)>,
}

impl Rows {
    fn with_capacity(rows: usize) -> Self {
        Rows {
            tuples: pg::CopyRows::with_capacity(rows),
            origin: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, e: &crate::event::CleanEvent<'_>, partition: i32, offset: i64) {
        self.tuples.push(e);
        self.origin.push((partition, offset));
    }

    fn len(&self) -> usize {
        self.origin.len()
    }

    fn clear(&mut self) {
        self.tuples.clear();
        self.origin.clear();
    }
}

/// A record on its way to the dead-letter topic.
struct DeadLetter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    reason: Reason,
    detail: String,
    sqlstate: Option<String>,
    partition: i32,
    offset: i64,
}

/// Outcome of writing one batch.
#[derive(Default)]
struct Written {
    inserted: u64,
    duplicates: u64,
    rejected: Vec<(usize, String, String)>,
}

enum WriteError {
    Outage(postgres::Error),
    Fatal(Error),
}

fn classify(e: postgres::Error) -> WriteError {
    if pg::is_outage(&e) {
        WriteError::Outage(e)
    } else {
        WriteError::Fatal(Error::database("writing a batch", &e))
    }
}

/// Inserts `rows[range]` under a savepoint; on a row-level rejection splits the range until the bad rows
/// are isolated (recorded in `out.rejected`), keeping every good row.
fn insert_isolating(
    tx: &mut postgres::Transaction<'_>,
    rows: &pg::CopyRows,
    range: std::ops::Range<usize>,
    out: &mut Written,
) -> std::result::Result<(), WriteError> {
    let mut sp = tx.savepoint("isolate").map_err(classify)?;
    match pg::copy_rows_dedup(&mut sp, rows.tuples(range.clone())) {
        Ok(n) => {
            sp.commit().map_err(classify)?;
            out.inserted += n;
            out.duplicates += range.len() as u64 - n;
            Ok(())
        }
        Err(e) if pg::is_outage(&e) => Err(WriteError::Outage(e)),
        Err(e) => {
            sp.rollback().map_err(classify)?;
            if range.len() == 1 {
                let (state, msg) = match e.as_db_error() {
                    Some(db) => (db.code().code().to_string(), db.message().to_string()),
                    None => (String::new(), describe_pg(&e)),
                };
                out.rejected.push((range.start, state, msg));
                return Ok(());
            }
            let mid = range.start + range.len() / 2;
            insert_isolating(tx, rows, range.start..mid, out)?;
            insert_isolating(tx, rows, mid..range.end, out)
        }
    }
}

/// One transaction: COPY straight into the table (the fast path); only a batch that hits the unique key
/// falls back to staging + ON CONFLICT DO NOTHING; only a batch with a rejected row is split. Offsets are
/// stored in the same transaction. `before_commit` runs last (it delivers dead letters), so a crash at
/// any point either stores everything of the batch or nothing.
fn write_batch(
    client: &mut Client,
    group: &str,
    rows: &pg::CopyRows,
    offsets: &[(String, i32, i64)],
    before_commit: &mut dyn FnMut(&Written) -> Result<()>,
) -> std::result::Result<Written, WriteError> {
    let mut tx = client.transaction().map_err(classify)?;
    let mut out = Written::default();
    if !rows.is_empty() {
        let mut sp = tx.savepoint("batch").map_err(classify)?;
        let order = rows.key_order();
        match pg::copy_rows(
            &mut sp,
            pg::TABLE,
            order.iter().map(|&i| rows.tuple(i as usize)),
        ) {
            Ok(n) => {
                sp.commit().map_err(classify)?;
                out.inserted = n;
            }
            Err(e) if pg::is_outage(&e) => return Err(WriteError::Outage(e)),
            Err(e) => {
                sp.rollback().map_err(classify)?;
                let unique_hit = e.code().is_some_and(|c| c.code() == "23505");
                if unique_hit {
                    let n = pg::copy_rows_dedup(&mut tx, rows.tuples(0..rows.len()));
                    match n {
                        Ok(n) => {
                            out.inserted = n;
                            out.duplicates = rows.len() as u64 - n;
                        }
                        Err(e) if pg::is_outage(&e) => return Err(WriteError::Outage(e)),
                        Err(_) => {
                            // Duplicates and a rejected row in one batch: isolate from scratch.
                            tx.rollback().map_err(classify)?;
                            let mut tx2 = client.transaction().map_err(classify)?;
                            let mut out2 = Written::default();
                            insert_isolating(&mut tx2, rows, 0..rows.len(), &mut out2)?;
                            return finish(tx2, group, offsets, out2, before_commit);
                        }
                    }
                } else {
                    insert_isolating(&mut tx, rows, 0..rows.len(), &mut out)?;
                }
            }
        }
    }
    finish(tx, group, offsets, out, before_commit)
}

fn finish(
    mut tx: postgres::Transaction<'_>,
    group: &str,
    offsets: &[(String, i32, i64)],
    out: Written,
    before_commit: &mut dyn FnMut(&Written) -> Result<()>,
) -> std::result::Result<Written, WriteError> {
    pg::store_offsets(&mut tx, group, offsets).map_err(classify)?;
    before_commit(&out).map_err(WriteError::Fatal)?;
    tx.commit().map_err(classify)?;
    Ok(out)
}

/// Runs `opts.workers` loader loops in threads (each its own consumer in the group, its own PostgreSQL
/// connection and dead-letter producer) and reports their summed counts through `tick` every `TICK`.
/// `tick` returning `Error::Interrupted` stops every worker after the batch in flight.
pub fn run_loader(
    settings: &KafkaSettings,
    opts: &LoadOptions,
    tick: &mut dyn FnMut(&LoadStats) -> Result<()>,
) -> Result<LoadStats> {
    let pg_cfg = pg::parse_dsn(&opts.dsn)?;
    let mut client = pg::connect(&pg_cfg)?;
    if opts.migrate {
        pg::migrate(&mut client)?;
    }
    ensure_topics(
        settings,
        &[&opts.topic, &opts.dlq_topic],
        opts.partitions,
        Duration::from_secs(15),
    )?;
    log::info!(
        target: "ecomlogs.loader",
        "loading {} (group {}) into {} at {} in batches of {} rows or {} ms{}",
        opts.topic, opts.group_id, pg::TABLE, pg::describe_dsn(&pg_cfg), opts.batch_size,
        opts.flush_interval.as_millis(),
        if opts.workers > 1 { format!(", {} workers", opts.workers) } else { String::new() }
    );
    let workers = opts.workers.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let shared: Vec<Mutex<LoadStats>> = (0..workers)
        .map(|_| Mutex::new(LoadStats::default()))
        .collect();
    let start = Instant::now();
    let total = || {
        let mut t = LoadStats::default();
        for s in &shared {
            t.add(&s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        t.elapsed = start.elapsed();
        t
    };
    let mut first_client = Some(client);
    let mut interrupted = false;
    let mut tick_error: Option<Error> = None;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (stop, shared, pg_cfg) = (stop.clone(), &shared[i], &pg_cfg);
                let client = first_client.take();
                std::thread::Builder::new()
                    .name(format!("ecomlogs-loader-{i}"))
                    .spawn_scoped(scope, move || {
                        let r = worker(settings, opts, pg_cfg, client, &stop, shared);
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed); // one failure stops the others
                        }
                        r
                    })
                    .expect("spawning a loader thread")
            })
            .collect();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(TICK);
            if tick_error.is_none() && !interrupted {
                match tick(&total()) {
                    Ok(()) => {}
                    Err(Error::Interrupted) => interrupted = true,
                    Err(e) => tick_error = Some(e),
                }
                if interrupted || tick_error.is_some() {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Config("a loader thread panicked".into())))
            })
            .collect()
    });
    if let Some(e) = tick_error {
        return Err(e);
    }
    for r in results {
        r?;
    }
    let mut t = total();
    t.interrupted |= interrupted;
    Ok(t)
}

/// One consumer's loop: batches, writes, commits, until stopped, idle, or failed.
fn worker(
    settings: &KafkaSettings,
    opts: &LoadOptions,
    pg_cfg: &Config,
    client: Option<Client>,
    stop: &Arc<AtomicBool>,
    shared: &Mutex<LoadStats>,
) -> Result<()> {
    let client = match client {
        Some(c) => c,
        None => pg::connect(pg_cfg)?,
    };
    let mut cconf = settings.consumer_config(&opts.group_id);
    // An outage pauses the loop without polling; stay in the group for a long one.
    cconf.set("max.poll.interval.ms", "1800000");
    for (k, v) in &settings.extra {
        cconf.set(k, v);
    }
    let ctx = LoaderContext {
        pg: pg_cfg.clone(),
        group: opts.group_id.clone(),
        client: Mutex::new(Some(client)),
        stored: Mutex::new(HashMap::new()),
        rebalances: AtomicU64::new(0),
        stop: stop.clone(),
        done: AtomicBool::new(false),
        max_backoff: opts.max_backoff,
        retries: AtomicU64::new(0),
    };
    let consumer: BaseConsumer<LoaderContext> = cconf
        .create_with_context(ctx)
        .map_err(|e| Error::kafka("creating the Kafka consumer", e))?;
    let producer: BaseProducer<DeliveryTracker> = settings
        .producer_config()
        .set("message.max.bytes", "16000000")
        .create_with_context(DeliveryTracker::default())
        .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
    consumer
        .subscribe(&[&opts.topic])
        .map_err(|e| Error::kafka(format!("subscribing to {}", opts.topic), e))?;

    let start = Instant::now();
    let mut stats = LoadStats::default();
    let mut last_tick = start;
    let mut last_input = start;
    let mut last_log = start;
    let mut logged = (0u64, 0u64, 0u64);
    let mut seen_rebalances = 0u64;
    let mut stopping = false;

    let mut rows = Rows::with_capacity(opts.batch_size.min(100_000));
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut batch_started: Option<Instant> = None;

    loop {
        // Tick: publish the counts; stop on Ctrl-C (seen by `run_loader`).
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            stats.elapsed = start.elapsed();
            stats.db_retries = consumer.context().retries.load(Ordering::Relaxed);
            *shared.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
            if stop.load(Ordering::Relaxed) && !stopping {
                stats.interrupted = true;
                stopping = true;
            }
        }
        let rb = consumer.context().rebalances.load(Ordering::Relaxed);
        if rb != seen_rebalances {
            seen_rebalances = rb;
            last_input = Instant::now();
        }
        let pending = rows.len() + dead.len();
        let quiet_for = opts.quiet_flush.min(opts.flush_interval);
        let due = batch_started.is_some_and(|t| {
            t.elapsed() >= opts.flush_interval || last_input.elapsed() >= quiet_for
        });
        let mut idle_exit = false;
        if !stopping && pending < opts.batch_size && !due {
            let wait = match batch_started {
                Some(t) => opts
                    .flush_interval
                    .saturating_sub(t.elapsed())
                    .min(quiet_for.saturating_sub(last_input.elapsed()))
                    .min(TICK),
                None => TICK,
            };
            match consumer.poll(wait) {
                Some(Ok(first)) => {
                    // Take what librdkafka already holds in one go; the clock is read once per burst.
                    let mut m = first;
                    let mut taken = 0u64;
                    let mut error = None;
                    loop {
                        if take(
                            &consumer,
                            &m,
                            &mut rows,
                            &mut dead,
                            &mut next,
                            opts.log_each,
                        ) {
                            taken += 1;
                        }
                        if rows.len() + dead.len() >= opts.batch_size {
                            break;
                        }
                        match consumer.poll(Duration::ZERO) {
                            Some(Ok(more)) => m = more,
                            Some(Err(e)) => {
                                error = Some(e);
                                break;
                            }
                            None => break,
                        }
                    }
                    last_input = Instant::now();
                    if taken > 0 {
                        stats.consumed += taken;
                        batch_started.get_or_insert(last_input);
                    }
                    if let Some(e) = error {
                        if is_fatal(e.rdkafka_error_code()) {
                            return Err(Error::kafka("consuming", e));
                        }
                        log::warn!(target: "ecomlogs.loader", "consumer: {e}");
                    }
                    continue;
                }
                Some(Err(e)) => {
                    if is_fatal(e.rdkafka_error_code()) {
                        return Err(Error::kafka("consuming", e));
                    }
                    log::warn!(target: "ecomlogs.loader", "consumer: {e}");
                    continue;
                }
                None => {
                    if pending == 0 {
                        if let Some(idle) = opts.until_idle {
                            let joined = rb > 0;
                            let waited = last_input.elapsed();
                            if (joined && waited >= idle)
                                || waited >= idle + Duration::from_secs(60)
                            {
                                log::info!(target: "ecomlogs.loader", "no input for {:.1}s: finishing", waited.as_secs_f64());
                                idle_exit = true;
                            }
                        }
                    }
                    let flush_now = batch_started.is_some_and(|t| {
                        t.elapsed() >= opts.flush_interval || last_input.elapsed() >= quiet_for
                    });
                    if !idle_exit && !flush_now {
                        continue;
                    }
                }
            }
        }

        // Flush the batch (also on stop and idle exit).
        if !next.is_empty() {
            let offsets: Vec<(String, i32, i64)> = next
                .iter()
                .map(|(p, o)| (opts.topic.clone(), *p, *o))
                .collect();
            let mut delivered_dead = 0u64;
            let mut dead_reasons: BTreeMap<Reason, u64> = BTreeMap::new();
            let outcome = {
                let ctx = consumer.context();
                let mut attempt = 0u32;
                loop {
                    let mut guard = ctx.client.lock().unwrap_or_else(|p| p.into_inner());
                    if guard.is_none() {
                        match pg::connect(&ctx.pg) {
                            Ok(c) => *guard = Some(c),
                            Err(e) => {
                                drop(guard);
                                if !ctx.backoff(&mut attempt, &e.to_string()) {
                                    break None;
                                }
                                continue;
                            }
                        }
                    }
                    let client = guard.as_mut().expect("connected above");
                    let mut deliver = |w: &Written| -> Result<()> {
                        delivered_dead = 0;
                        dead_reasons.clear();
                        let mut rejected: Vec<DeadLetter> = Vec::with_capacity(w.rejected.len());
                        for (idx, state, msg) in &w.rejected {
                            let e = rows.tuples.event(*idx);
                            let (partition, offset) = rows.origin[*idx];
                            let mut value = Vec::new();
                            e.write_canonical_json(&mut value);
                            rejected.push(DeadLetter {
                                key: Some(e.customer_id.as_bytes().to_vec()),
                                value: Some(value),
                                reason: Reason::DatabaseRejected,
                                detail: format!("SQLSTATE {state}: {msg}"),
                                sqlstate: Some(state.clone()),
                                partition,
                                offset,
                            });
                        }
                        for d in dead.iter().chain(rejected.iter()) {
                            let info = DeadLetterInfo {
                                reason: d.reason.code(),
                                detail: &d.detail,
                                source_topic: &opts.topic,
                                source_partition: d.partition,
                                source_offset: d.offset,
                                stage: "loader",
                                sqlstate: d.sqlstate.as_deref(),
                            };
                            let mut r: BaseRecord<'_, [u8], [u8]> =
                                BaseRecord::to(&opts.dlq_topic).headers(dead_letter_headers(&info));
                            if let Some(v) = &d.value {
                                r = r.payload(v.as_slice());
                            }
                            if let Some(k) = &d.key {
                                r = r.key(k.as_slice());
                            }
                            send_blocking(&producer, r)
                                .map_err(|e| Error::kafka("dead-lettering a record", e))?;
                            delivered_dead += 1;
                            *dead_reasons.entry(d.reason).or_default() += 1;
                        }
                        if delivered_dead > 0 {
                            producer
                                .flush(Duration::from_secs(60))
                                .map_err(|e| Error::kafka("delivering dead letters", e))?;
                            if let Some(e) = producer.context().take_error() {
                                return Err(Error::kafka("delivering dead letters", e));
                            }
                        }
                        Ok(())
                    };
                    match write_batch(client, &opts.group_id, &rows.tuples, &offsets, &mut deliver)
                    {
                        Ok(w) => break Some(Ok(w)),
                        Err(WriteError::Fatal(e)) => break Some(Err(e)),
                        Err(WriteError::Outage(e)) => {
                            *guard = None;
                            drop(guard);
                            if !ctx.backoff(&mut attempt, &describe_pg(&e)) {
                                break None;
                            }
                        }
                    }
                }
            };
            match outcome {
                Some(Ok(w)) => {
                    stats.rows_inserted += w.inserted;
                    stats.duplicates_skipped += w.duplicates;
                    stats.dead_lettered += delivered_dead;
                    for (r, n) in dead_reasons {
                        *stats.by_reason.entry(r).or_default() += n;
                    }
                    stats.batches += 1;
                    logged.0 += w.inserted;
                    logged.1 += w.duplicates;
                    logged.2 += delivered_dead;
                    let mut tpl = TopicPartitionList::new();
                    let mut known = consumer
                        .context()
                        .stored
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    for (t, p, o) in &offsets {
                        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
                        known.insert(*p, *o);
                    }
                    drop(known);
                    // Advisory: the offsets of record are in PostgreSQL.
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        log::debug!(target: "ecomlogs.loader", "advisory Kafka commit failed: {e}");
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    stats.unwritten = (rows.len() + dead.len()) as u64;
                    log::warn!(
                        target: "ecomlogs.loader",
                        "stopping during a database outage: {} records not written; they will be loaded at the next start",
                        stats.unwritten
                    );
                    break;
                }
            }
            rows.clear();
            dead.clear();
            next.clear();
            batch_started = None;
            if last_log.elapsed() >= Duration::from_secs(1) {
                last_log = Instant::now();
                log::info!(
                    target: "ecomlogs.loader",
                    "stored {} rows ({} duplicates skipped, {} dead-lettered)",
                    logged.0, logged.1, logged.2
                );
                logged = (0, 0, 0);
            }
        }
        if stopping || idle_exit {
            break;
        }
    }
    if logged.0 + logged.1 + logged.2 > 0 {
        log::info!(
            target: "ecomlogs.loader",
            "stored {} rows ({} duplicates skipped, {} dead-lettered)",
            logged.0, logged.1, logged.2
        );
    }
    // Leaving the group may call the rebalance callback: no more retries for this consumer.
    consumer.context().done.store(true, Ordering::Relaxed);
    stats.elapsed = start.elapsed();
    stats.db_retries = consumer.context().retries.load(Ordering::Relaxed);
    *shared.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    Ok(())
}

/// Routes one consumed record into the batch: a row, or a dead letter if it is not a valid event.
/// Returns false for a record below the stored offset (already in the table).
fn take(
    consumer: &BaseConsumer<LoaderContext>,
    m: &BorrowedMessage<'_>,
    rows: &mut Rows,
    dead: &mut Vec<DeadLetter>,
    next: &mut HashMap<i32, i64>,
    log_each: bool,
) -> bool {
    // One input topic: partitions identify the offsets.
    let key = m.partition();
    if let Some(stored) = consumer
        .context()
        .stored
        .lock()
        .ok()
        .and_then(|s| s.get(&key).copied())
    {
        if m.offset() < stored {
            return false;
        }
    }
    next.insert(key, m.offset() + 1);
    match validate(m.payload()) {
        Ok(e) => {
            if log_each {
                log::info!(target: "ecomlogs.loader", "row {} {} {}", e.event_id, e.event_type.as_str(), e.amount);
            }
            rows.push(&e, m.partition(), m.offset());
        }
        Err(rej) => dead.push(DeadLetter {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            reason: rej.reason,
            detail: rej.detail,
            sqlstate: None,
            partition: m.partition(),
            offset: m.offset(),
        }),
    }
    true
}
