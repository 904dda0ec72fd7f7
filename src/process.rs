//! Stage 2: `raw_events` -> validation -> `clean_events` (canonical JSON, same key) or
//! `dead_letter_events` (original key and value untouched, headers saying why and where from).
//!
//! Every input record goes to exactly one place. Input offsets are committed only after every output of
//! the batch is acknowledged (at-least-once), or, with `exactly_once`, inside a Kafka transaction together
//! with the outputs (read_committed consumers downstream then see each record once, whatever crashes).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::kafka::{
    dead_letter_headers, ensure_topics, is_fatal, send_blocking, DeadLetterInfo, DeliveryTracker,
    GroupContext, KafkaSettings, CLEAN_TOPIC, DEFAULT_PARTITIONS, DLQ_TOPIC, PROCESSOR_GROUP,
    RAW_TOPIC,
};
use crate::validate::{validate, Reason};

#[derive(Debug, Clone)]
pub struct ProcessOptions {
    pub input_topic: String,
    pub output_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    /// Finish, commit and return once no input came for this long (after the group was joined).
    pub until_idle: Option<Duration>,
    pub exactly_once: bool,
    /// With `exactly_once`: a stable id lets a restarted instance fence its crashed predecessor at once.
    pub transactional_id: Option<String>,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// A log line per event (`--verbose`).
    pub log_each: bool,
    pub partitions: i32,
    /// Consumers (threads) in this process, each with its own producer; they share the group's partitions.
    pub workers: usize,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            input_topic: RAW_TOPIC.into(),
            output_topic: CLEAN_TOPIC.into(),
            dlq_topic: DLQ_TOPIC.into(),
            group_id: PROCESSOR_GROUP.into(),
            until_idle: None,
            exactly_once: false,
            transactional_id: None,
            batch_max: 50_000,
            batch_wait: Duration::from_millis(100),
            log_each: false,
            partitions: DEFAULT_PARTITIONS,
            workers: 1,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProcessStats {
    pub consumed: u64,
    pub valid: u64,
    pub invalid: u64,
    pub by_reason: BTreeMap<Reason, u64>,
    pub batches: u64,
    /// Transactions aborted and retried (exactly-once) or batches whose commit the group refused.
    pub retried_batches: u64,
    pub elapsed: Duration,
    pub interrupted: bool,
}

pub const TICK: Duration = Duration::from_millis(100);

impl ProcessStats {
    fn add(&mut self, other: &ProcessStats) {
        self.consumed += other.consumed;
        self.valid += other.valid;
        self.invalid += other.invalid;
        for (r, n) in &other.by_reason {
            *self.by_reason.entry(*r).or_default() += n;
        }
        self.batches += other.batches;
        self.retried_batches += other.retried_batches;
        self.interrupted |= other.interrupted;
    }
}

/// Runs `opts.workers` consumer loops in threads (one consumer and one producer each, all in the same
/// group) and reports their summed counts through `tick` every `TICK`. `tick` returning
/// `Error::Interrupted` stops every worker after its batch in flight.
pub fn run_processor(
    settings: &KafkaSettings,
    opts: &ProcessOptions,
    tick: &mut dyn FnMut(&ProcessStats) -> Result<()>,
) -> Result<ProcessStats> {
    ensure_topics(
        settings,
        &[&opts.input_topic, &opts.output_topic, &opts.dlq_topic],
        opts.partitions,
        Duration::from_secs(15),
    )?;
    let workers = opts.workers.max(1);
    let stop = AtomicBool::new(false);
    let shared: Vec<Mutex<ProcessStats>> = (0..workers)
        .map(|_| Mutex::new(ProcessStats::default()))
        .collect();
    let start = Instant::now();
    let total = |interrupted: bool| {
        let mut t = ProcessStats::default();
        for s in &shared {
            t.add(&s.lock().unwrap_or_else(|p| p.into_inner()));
        }
        t.elapsed = start.elapsed();
        t.interrupted |= interrupted;
        t
    };
    let mut interrupted = false;
    let mut tick_error: Option<Error> = None;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (stop, shared) = (&stop, &shared[i]);
                std::thread::Builder::new()
                    .name(format!("ecomlogs-processor-{i}"))
                    .spawn_scoped(scope, move || {
                        let r = worker(settings, opts, i, workers, stop, shared);
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed); // one failure stops the others
                        }
                        r
                    })
                    .expect("spawning a processor thread")
            })
            .collect();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(TICK);
            if tick_error.is_none() && !interrupted {
                match tick(&total(false)) {
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
                    .unwrap_or_else(|_| Err(Error::Config("a processor thread panicked".into())))
            })
            .collect()
    });
    if let Some(e) = tick_error {
        return Err(e);
    }
    for r in results {
        r?;
    }
    Ok(total(interrupted))
}

fn worker(
    settings: &KafkaSettings,
    opts: &ProcessOptions,
    index: usize,
    workers: usize,
    stop: &AtomicBool,
    shared: &Mutex<ProcessStats>,
) -> Result<()> {
    let consumer: BaseConsumer<GroupContext> = settings
        .consumer_config(&opts.group_id)
        .create_with_context(GroupContext::default())
        .map_err(|e| Error::kafka("creating the Kafka consumer", e))?;
    let mut pconf = settings.producer_config();
    // A dead-letter copy carries headers on top of the original value: leave room above the default 1 MB.
    pconf.set("message.max.bytes", "16000000");
    if opts.exactly_once {
        let mut tid = opts
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}-{}", opts.group_id, hostname(), std::process::id()));
        if workers > 1 {
            tid = format!("{tid}-{index}");
        }
        pconf.set("transactional.id", &tid);
        pconf.set("transaction.timeout.ms", "30000");
        pconf.set("message.timeout.ms", "30000");
        // Settings the user passed still win.
        for (k, v) in &settings.extra {
            pconf.set(k, v);
        }
    }
    let producer: BaseProducer<DeliveryTracker> = pconf
        .create_with_context(DeliveryTracker::default())
        .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
    if opts.exactly_once {
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| Error::kafka("initialising Kafka transactions", e))?;
    }
    consumer
        .subscribe(&[&opts.input_topic])
        .map_err(|e| Error::kafka(format!("subscribing to {}", opts.input_topic), e))?;
    log::info!(
        target: "ecomlogs.processor",
        "consuming {} (group {}) -> {} / dead letters {} ({})",
        opts.input_topic, opts.group_id, opts.output_topic, opts.dlq_topic,
        if opts.exactly_once { "exactly-once, transactional" } else { "at-least-once" }
    );

    let start = Instant::now();
    let mut stats = ProcessStats::default();
    let mut last_input = start;
    let mut last_log = start;
    let mut logged = (0u64, 0u64, BTreeMap::<Reason, u64>::new());
    let mut canonical = Vec::with_capacity(512);
    let mut stopping = false;
    let mut seen_rebalances = 0u64;

    while !stopping {
        // Collect a batch: wait for the first record, then take what is already there.
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::new();
        let batch_deadline = Instant::now() + opts.batch_wait;
        while batch.len() < opts.batch_max {
            if stop.load(Ordering::Relaxed) {
                stats.interrupted = true;
                stopping = true;
                break;
            }
            let wait = if batch.is_empty() {
                TICK
            } else {
                Duration::ZERO
            };
            match consumer.poll(wait) {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    if is_fatal(e.rdkafka_error_code()) {
                        return Err(Error::kafka("consuming", e));
                    }
                    log::warn!(target: "ecomlogs.processor", "consumer: {e}");
                }
                None => {
                    if !batch.is_empty() || Instant::now() >= batch_deadline {
                        break;
                    }
                }
            }
        }
        let rebalances = consumer
            .context()
            .rebalances
            .load(std::sync::atomic::Ordering::Relaxed);
        if rebalances != seen_rebalances {
            // A new assignment starts its fetches from the committed offsets: idle counts from here.
            seen_rebalances = rebalances;
            last_input = Instant::now();
        }
        if batch.is_empty() {
            if let Some(idle) = opts.until_idle {
                let joined = consumer.context().has_joined();
                let waited = last_input.elapsed();
                // Before the first assignment we are joining, not idle; give that a generous bound.
                if (joined && waited >= idle) || waited >= idle + Duration::from_secs(60) {
                    log::info!(target: "ecomlogs.processor", "no input for {:.1}s: finishing", waited.as_secs_f64());
                    break;
                }
            }
            continue;
        }
        last_input = Instant::now();

        // Process the batch: every record to exactly one output.
        if opts.exactly_once {
            producer
                .begin_transaction()
                .map_err(|e| Error::kafka("beginning a transaction", e))?;
        }
        // The input is one topic: offsets per partition, (first, next) of this batch.
        let mut next_offsets: HashMap<i32, (i64, i64)> = HashMap::new();
        let mut batch_stats = (0u64, 0u64);
        let mut batch_reasons: BTreeMap<Reason, u64> = BTreeMap::new();
        for m in &batch {
            let entry = next_offsets
                .entry(m.partition())
                .or_insert((m.offset(), m.offset() + 1));
            entry.1 = m.offset() + 1;
            let key = m.key();
            let sent = match validate(m.payload()) {
                Ok(clean) => {
                    canonical.clear();
                    clean.write_canonical_json(&mut canonical);
                    if opts.log_each {
                        log::info!(target: "ecomlogs.processor", "valid {} {}", clean.event_id, clean.event_type.as_str());
                    }
                    batch_stats.0 += 1;
                    let mut r = BaseRecord::to(&opts.output_topic).payload(canonical.as_slice());
                    if let Some(k) = key {
                        r = r.key(k);
                    }
                    send_blocking(&producer, r)
                }
                Err(rej) => {
                    if opts.log_each {
                        log::info!(target: "ecomlogs.processor", "invalid {}[{}]@{}: {}", m.topic(), m.partition(), m.offset(), rej);
                    }
                    batch_stats.1 += 1;
                    *batch_reasons.entry(rej.reason).or_default() += 1;
                    let info = DeadLetterInfo {
                        reason: rej.reason.code(),
                        detail: &rej.detail,
                        source_topic: m.topic(),
                        source_partition: m.partition(),
                        source_offset: m.offset(),
                        stage: "processor",
                        sqlstate: None,
                    };
                    let mut r: BaseRecord<'_, [u8], [u8]> =
                        BaseRecord::to(&opts.dlq_topic).headers(dead_letter_headers(&info));
                    if let Some(v) = m.payload() {
                        r = r.payload(v);
                    }
                    if let Some(k) = key {
                        r = r.key(k);
                    }
                    send_blocking(&producer, r)
                }
            };
            if let Err(e) = sent {
                if opts.exactly_once {
                    let _ = producer.abort_transaction(Duration::from_secs(30));
                }
                return Err(Error::kafka(
                    "producing an output record (offsets not committed)",
                    e,
                ));
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, (_, next)) in &next_offsets {
            tpl.add_partition_offset(&opts.input_topic, *partition, Offset::Offset(*next))
                .map_err(|e| Error::kafka("building the offset list", e))?;
        }

        let committed = if opts.exactly_once {
            commit_transaction(&producer, &consumer, &tpl)
        } else {
            commit_after_delivery(&producer, &consumer, &tpl)
        };
        match committed {
            Ok(()) => {}
            Err(CommitFailure::Fatal(e)) => return Err(e),
            Err(CommitFailure::Retry(why)) => {
                // Rewind the partitions we still own to the start of this batch and go again.
                log::warn!(target: "ecomlogs.processor", "batch not committed ({why}); reprocessing it");
                stats.retried_batches += 1;
                let owned = consumer.assignment().unwrap_or_default();
                for (partition, (first, _)) in &next_offsets {
                    if owned
                        .find_partition(&opts.input_topic, *partition)
                        .is_some()
                    {
                        let _ = consumer.seek(
                            &opts.input_topic,
                            *partition,
                            Offset::Offset(*first),
                            Duration::from_secs(10),
                        );
                    }
                }
                continue;
            }
        }
        stats.consumed += batch.len() as u64;
        stats.valid += batch_stats.0;
        stats.invalid += batch_stats.1;
        stats.batches += 1;
        for (r, n) in batch_reasons {
            *stats.by_reason.entry(r).or_default() += n;
            *logged.2.entry(r).or_default() += n;
        }
        *shared.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
        logged.0 += batch_stats.0;
        logged.1 += batch_stats.1;
        if last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            log::info!(target: "ecomlogs.processor", "{}", batch_line(&logged));
            logged = (0, 0, BTreeMap::new());
        }
    }
    if logged.0 + logged.1 > 0 {
        log::info!(target: "ecomlogs.processor", "{}", batch_line(&logged));
    }
    stats.elapsed = start.elapsed();
    *shared.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    Ok(())
}

fn batch_line(l: &(u64, u64, BTreeMap<Reason, u64>)) -> String {
    let reasons: Vec<String> = l.2.iter().map(|(r, n)| format!("{r}={n}")).collect();
    let mut s = format!("forwarded {} valid, {} invalid", l.0, l.1);
    if !reasons.is_empty() {
        s.push_str(&format!(" ({})", reasons.join(", ")));
    }
    s
}

pub enum CommitFailure {
    /// Retrying this batch can help (a rebalance, an aborted transaction).
    Retry(String),
    Fatal(Error),
}

fn commit_after_delivery(
    producer: &BaseProducer<DeliveryTracker>,
    consumer: &BaseConsumer<GroupContext>,
    tpl: &TopicPartitionList,
) -> std::result::Result<(), CommitFailure> {
    producer.flush(Duration::from_secs(60)).map_err(|e| {
        CommitFailure::Fatal(Error::kafka("waiting for output acknowledgements", e))
    })?;
    if let Some(e) = producer.context().take_error() {
        return Err(CommitFailure::Fatal(Error::kafka(
            "an output record was not delivered (offsets not committed)",
            e,
        )));
    }
    match consumer.commit(tpl, CommitMode::Sync) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Outputs are delivered; if the group moved on, the new owner redoes these records
            // (a duplicate downstream, never a loss). Anything else is worth reporting but not fatal.
            log::warn!(target: "ecomlogs.processor", "offset commit failed ({e}); records may be reprocessed");
            Ok(())
        }
    }
}

fn commit_transaction(
    producer: &BaseProducer<DeliveryTracker>,
    consumer: &BaseConsumer<GroupContext>,
    tpl: &TopicPartitionList,
) -> std::result::Result<(), CommitFailure> {
    let abort = |why: String| {
        if let Err(e) = producer.abort_transaction(Duration::from_secs(30)) {
            return CommitFailure::Fatal(Error::kafka("aborting a transaction", e));
        }
        CommitFailure::Retry(why)
    };
    let Some(cgm) = consumer.group_metadata() else {
        return Err(abort("no consumer group metadata".into()));
    };
    if let Err(e) = producer.send_offsets_to_transaction(tpl, &cgm, Duration::from_secs(30)) {
        return Err(classify_txn_error(
            e,
            "sending offsets to the transaction",
            abort,
        ));
    }
    if let Err(e) = producer.commit_transaction(Duration::from_secs(60)) {
        return Err(classify_txn_error(e, "committing the transaction", abort));
    }
    Ok(())
}

fn classify_txn_error(
    e: KafkaError,
    what: &str,
    abort: impl FnOnce(String) -> CommitFailure,
) -> CommitFailure {
    let retriable_abort = match &e {
        KafkaError::Transaction(t) => t.txn_requires_abort() && !t.is_fatal(),
        _ => false,
    };
    if retriable_abort {
        abort(format!("{what}: {e}"))
    } else {
        CommitFailure::Fatal(Error::kafka(what, e))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}
