//! Stage 2: `raw_events` -> validation -> `clean_events` (canonical JSON, same key) or
//! `dead_letter_events` (original key and value untouched, headers saying why and where from).
//!
//! Every input record goes to exactly one place. Input offsets are committed only after every output of
//! the batch is acknowledged (at-least-once), or, with `exactly_once`, inside a Kafka transaction together
//! with the outputs (read_committed consumers downstream then see each record once, whatever crashes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{ClientKind, KafkaSettings};
use crate::contract::Contract;
use crate::error::{Error, Result};
use crate::kafka::{ensure_topics, BrokerWatch, DeliveryTracker, InputState};
use crate::metrics::{self, Export, Exporter, METRICS};
use crate::options::{cmd, Values};
use crate::resume::{commit_metadata, Fingerprint, LogCheck};
use crate::stage::{locked, run_workers, Activity, Quiet, Run, Stats, StopToken, TICK};
use crate::validate::Reason;

mod commit;
mod context;
mod route;

use commit::{commit_after_delivery, commit_transaction, producer, CommitFailure};
use context::{ProcessorContext, ProcessorState};
use route::Counts;

#[derive(Debug, Clone)]
pub struct ProcessOptions {
    pub input_topic: String,
    pub output_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    /// Finish, commit and return once no input came for this long (after the group was joined).
    pub until_idle: Option<Duration>,
    /// Finish, commit and return once every assigned partition has been read to its end.
    pub until_caught_up: bool,
    pub exactly_once: bool,
    /// With `exactly_once`: a stable id lets a restarted instance fence its crashed predecessor at once.
    pub transactional_id: Option<String>,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// A log line per event (`--verbose`).
    pub log_each: bool,
    pub partitions: i32,
    /// Consumers (group members) in this process, each with its own producer; they share the group's
    /// partitions. One is the default: it joins the group once and still routes on every core
    /// (`threads`).
    pub workers: usize,
    /// Threads routing each large batch of a consumer, whole partitions each. 0: one per core.
    pub threads: usize,
    /// The event contract (the shipped default unless `--contract`).
    pub contract: Arc<Contract>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self::from_values(&Values::defaults(cmd::PROCESS)).expect("the table's defaults are valid")
    }
}

impl ProcessOptions {
    /// From the processor's options (see `options`).
    pub fn from_values(v: &Values) -> Result<Self> {
        Ok(ProcessOptions {
            input_topic: v.text("input_topic")?,
            output_topic: v.text("output_topic")?,
            dlq_topic: v.text("dlq_topic")?,
            group_id: v.text("group_id")?,
            until_idle: v.opt_seconds("until_idle_s")?,
            until_caught_up: v.flag("until_caught_up")?,
            exactly_once: v.flag("exactly_once")?,
            transactional_id: v.opt_text("transactional_id")?,
            batch_max: v.int("batch_max")?,
            batch_wait: Duration::from_millis(100),
            log_each: v.flag("log_each")?,
            partitions: v.int("partitions")?,
            workers: v.int("workers")?,
            threads: v.int("threads")?,
            contract: Contract::load_or_default(v.opt_text("contract")?.as_deref())?,
        })
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
    /// What the harness keeps (elapsed, interrupted, activity, caught up, quiet).
    pub run: Run,
}

impl Stats for ProcessStats {
    fn add(&mut self, other: &ProcessStats) {
        self.consumed += other.consumed;
        self.valid += other.valid;
        self.invalid += other.invalid;
        for (r, n) in &other.by_reason {
            *self.by_reason.entry(*r).or_default() += n;
        }
        self.batches += other.batches;
        self.retried_batches += other.retried_batches;
    }

    fn run(&self) -> &Run {
        &self.run
    }

    fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }
}

/// Runs `opts.workers` consumer loops in threads (one consumer and one producer each, all in the same
/// group) and reports their summed counts through `tick` every `TICK`. `token` (and `tick` returning
/// `Error::Interrupted`) stops every worker after its batch in flight.
pub fn run_processor(
    settings: &KafkaSettings,
    opts: &ProcessOptions,
    token: &StopToken,
    tick: &mut dyn FnMut(&ProcessStats) -> Result<()>,
) -> Result<ProcessStats> {
    if opts.input_topic == opts.output_topic || opts.input_topic == opts.dlq_topic {
        return Err(Error::Config(format!(
            "the input topic {} cannot also be an output topic",
            opts.input_topic
        )));
    }
    ensure_topics(
        settings,
        &[&opts.input_topic, &opts.output_topic, &opts.dlq_topic],
        opts.partitions,
        Duration::from_secs(15),
    )?;
    if opts.until_caught_up {
        token.drain();
    }
    let settings = &crate::kafka::session::resolve(settings);
    let workers = opts.workers.max(1);
    let topics = [
        ("output", opts.output_topic.as_str()),
        ("dead_letters", opts.dlq_topic.as_str()),
    ];
    // One watch for the stage: an outage is logged once, and ends for every worker at once.
    let watch = BrokerWatch::new("ecomlogs.processor");
    metrics::observed("processor", &topics, tick, |tick| {
        run_workers(
            "processor",
            workers,
            opts.until_idle,
            token,
            tick,
            &|i, shared| Worker::new(settings, opts, i, watch.clone())?.run(token, shared),
        )
    })
}

impl Export for ProcessStats {
    fn export(&self, stage: &'static str, out: &mut Exporter) {
        let m = &*METRICS;
        out.advance(
            "consumed",
            &m.consumed.with_label_values(&[stage]),
            self.consumed,
        );
        out.produced("output", self.valid);
        out.produced("dead_letters", self.invalid);
        for (reason, n) in &self.by_reason {
            let c = m.dead_letters.with_label_values(&[stage, reason.code()]);
            out.advance(reason.code(), &c, *n);
        }
    }

    fn activity(&self) -> Activity {
        self.run.activity
    }

    fn broker_down(&self) -> bool {
        self.run.quiet.broker_down
    }
}

/// Counts since the last progress log line.
type Tally = Counts;

impl Counts {
    /// Logs the counts as one progress line and starts again from zero.
    fn log(&mut self) {
        let t = std::mem::take(self);
        if t.valid + t.invalid == 0 {
            return;
        }
        let reasons: Vec<String> = t
            .by_reason
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let mut s = format!("forwarded {} valid, {} invalid", t.valid, t.invalid);
        if !reasons.is_empty() {
            s.push_str(&format!(" ({})", reasons.join(", ")));
        }
        log::info!(target: "ecomlogs.processor", "{s}");
    }
}

/// One partition's part of a batch: its first offset (to rewind to) and the index of its last record
/// (to commit after).
struct Span {
    partition: i32,
    first_offset: i64,
    last: usize,
}

/// What one batch did.
struct BatchOutcome {
    counts: Counts,
    partitions: Vec<Span>,
}

/// One consumer and its producer: batches of records, each record to exactly one output, the input
/// offsets committed after the outputs. (The consumer stands apart: a batch borrows it.)
struct Worker<'a> {
    consumer: BaseConsumer<ProcessorContext>,
    out: Outputs<'a>,
}

/// Everything of a worker but its consumer.
struct Outputs<'a> {
    opts: &'a ProcessOptions,
    producer: BaseProducer<DeliveryTracker>,
    stats: ProcessStats,
    input: InputState,
    tally: Tally,
    canonical: Vec<u8>,
    lag: metrics::Lag,
    last_lag: Instant,
    /// When the batch being collected got its first record.
    batch_started: Instant,
}

impl<'a> Worker<'a> {
    fn new(
        settings: &KafkaSettings,
        opts: &'a ProcessOptions,
        index: usize,
        watch: std::sync::Arc<BrokerWatch>,
    ) -> Result<Self> {
        let cconf = settings.client(
            ClientKind::Consumer {
                group: &opts.group_id,
            },
            &[],
        );
        let ctx = ProcessorContext::with(
            watch.clone(),
            ProcessorState {
                check: LogCheck::new(
                    &opts.input_topic,
                    cconf.clone(),
                    watch.clone(),
                    "ecomlogs.processor",
                    "the consumer group",
                ),
                topic_id: Mutex::new(None),
            },
        );
        let consumer: BaseConsumer<ProcessorContext> = cconf
            .create_with_context(ctx)
            .map_err(|e| Error::kafka("creating the Kafka consumer", e))?;
        let producer = producer(settings, opts, index, watch)?;
        consumer
            .subscribe(&[&opts.input_topic])
            .map_err(|e| Error::kafka(format!("subscribing to {}", opts.input_topic), e))?;
        log::info!(
            target: "ecomlogs.processor",
            "consuming {} (group {}) -> {} / dead letters {} ({}; contract {}{})",
            opts.input_topic, opts.group_id, opts.output_topic, opts.dlq_topic,
            if opts.exactly_once { "exactly-once, transactional" } else { "at-least-once" },
            opts.contract.id(),
            if opts.contract.is_default() { ", the default" } else { "" }
        );
        Ok(Worker {
            consumer,
            out: Outputs {
                opts,
                producer,
                stats: ProcessStats {
                    run: Run {
                        activity: Activity::JoiningGroup,
                        ..Run::default()
                    },
                    ..ProcessStats::default()
                },
                input: InputState::new("ecomlogs.processor", settings),
                tally: Tally::default(),
                canonical: Vec::with_capacity(512),
                lag: metrics::Lag::new("processor", &opts.input_topic),
                last_lag: Instant::now(),
                batch_started: Instant::now(),
            },
        })
    }

    fn run(&mut self, token: &StopToken, shared: &Mutex<ProcessStats>) -> Result<()> {
        let (consumer, out) = (&self.consumer, &mut self.out);
        let mut last_log = Instant::now();
        loop {
            if token.is_stopped() {
                out.stats.run.interrupted = token.is_interrupted();
                break;
            }
            let batch = out.collect(consumer)?;
            // Its news of the broker (errors queued meanwhile) before the batch's: see `note_served`.
            crate::kafka::serve(&out.producer, Duration::ZERO);
            if out.last_lag.elapsed() >= Duration::from_secs(1) {
                out.last_lag = Instant::now();
                out.lag.update(consumer);
            }
            out.stats.run.caught_up = out.input.caught_up();
            if out.input.assigned() {
                out.stats.run.activity = Activity::Running;
            }
            out.stats.run.quiet = Quiet {
                assigned: out.input.assigned(),
                since: out.input.quiet_since(),
                broker_down: consumer.context().watch.is_down(),
            };
            if batch.is_empty() {
                *locked(shared) = out.stats.clone();
                continue;
            }
            consumer.context().watch.alive();
            if let Some(outcome) = out.process(consumer, &batch)? {
                out.count(&batch, outcome);
            }
            drop(batch);
            out.stats.run.caught_up = out.input.caught_up();
            *locked(shared) = out.stats.clone();
            if last_log.elapsed() >= Duration::from_secs(1) {
                last_log = Instant::now();
                out.tally.log();
            }
        }
        out.tally.log();
        *locked(shared) = out.stats.clone();
        Ok(())
    }
}

type InputConsumer = BaseConsumer<ProcessorContext>;

impl Outputs<'_> {
    /// A batch: waits for the first record (up to a tick), then takes what is already there.
    fn collect<'c>(&mut self, consumer: &'c InputConsumer) -> Result<Vec<BorrowedMessage<'c>>> {
        let mut batch = Vec::new();
        let deadline = Instant::now() + self.opts.batch_wait;
        while batch.len() < self.opts.batch_max {
            let wait = if batch.is_empty() {
                TICK
            } else {
                Duration::ZERO
            };
            let polled = consumer.poll(wait);
            let ctx = consumer.context();
            self.input.sync(&ctx.assignment, consumer)?;
            match polled {
                Some(Ok(m)) => {
                    self.input.record(m.partition());
                    if batch.is_empty() {
                        self.batch_started = Instant::now();
                    }
                    batch.push(m);
                }
                Some(Err(e)) => {
                    let answered = matches!(e, rdkafka::error::KafkaError::PartitionEOF(_));
                    self.input.poll_error(e, consumer)?;
                    if answered {
                        ctx.watch.alive(); // a fetch answered: the broker is there
                    }
                }
                None if !batch.is_empty() || Instant::now() >= deadline => break,
                None => {}
            }
        }
        if !batch.is_empty() {
            self.input.last_input = Instant::now();
        }
        crate::kafka::note_served(consumer.client());
        Ok(batch)
    }

    /// Sends every record of the batch to its output and commits the input offsets after them. None:
    /// the commit was refused (rebalance, aborted transaction) and the batch will be read again.
    fn process(
        &mut self,
        consumer: &InputConsumer,
        batch: &[BorrowedMessage<'_>],
    ) -> Result<Option<BatchOutcome>> {
        if self.opts.exactly_once {
            self.producer
                .begin_transaction()
                .map_err(|e| Error::kafka("beginning a transaction", e))?;
        }
        let mut partitions: Vec<Span> = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            match partitions.iter_mut().find(|p| p.partition == m.partition()) {
                Some(p) => p.last = i,
                None => partitions.push(Span {
                    partition: m.partition(),
                    first_offset: m.offset(),
                    last: i,
                }),
            }
        }
        let ids: Vec<i32> = partitions.iter().map(|p| p.partition).collect();
        let counts =
            match route::route_batch(self.opts, &self.producer, batch, &ids, &mut self.canonical) {
                Ok(c) => c,
                Err(e) => {
                    if self.opts.exactly_once {
                        let _ = self.producer.abort_transaction(Duration::from_secs(30));
                    }
                    return Err(e);
                }
            };
        let outcome = BatchOutcome { counts, partitions };
        let tpl = self.offsets(consumer, batch, &outcome)?;
        let committed = if self.opts.exactly_once {
            commit_transaction(&self.producer, consumer, &tpl)
        } else {
            commit_after_delivery(&self.producer, consumer, &tpl)
        };
        match committed {
            Ok(()) => Ok(Some(outcome)),
            Err(CommitFailure::Fatal(e)) => Err(e),
            Err(CommitFailure::Retry(why)) => {
                log::warn!(target: "ecomlogs.processor", "batch not committed ({why}); reprocessing it");
                self.stats.retried_batches += 1;
                self.rewind(consumer, &outcome);
                Ok(None)
            }
        }
    }

    /// The offsets to commit: after each partition's last record, with that record's fingerprint (the
    /// log check's, see `resume`).
    fn offsets(
        &self,
        consumer: &InputConsumer,
        batch: &[BorrowedMessage<'_>],
        outcome: &BatchOutcome,
    ) -> Result<TopicPartitionList> {
        let topic_id = locked(&consumer.context().topic_id).clone();
        let mut tpl = TopicPartitionList::new();
        for &Span {
            partition, last, ..
        } in &outcome.partitions
        {
            let m = &batch[last];
            let mut e = tpl.add_partition(&self.opts.input_topic, partition);
            e.set_offset(Offset::Offset(m.offset() + 1))
                .map_err(|e| Error::kafka("building the offset list", e))?;
            e.set_metadata(commit_metadata(
                &Fingerprint::of_message(m),
                topic_id.as_deref(),
            ));
        }
        Ok(tpl)
    }

    /// Rewinds the partitions still owned to the start of the batch, to go again.
    fn rewind(&self, consumer: &InputConsumer, outcome: &BatchOutcome) {
        let owned = consumer.assignment().unwrap_or_default();
        for &Span {
            partition,
            first_offset: first,
            ..
        } in &outcome.partitions
        {
            if owned
                .find_partition(&self.opts.input_topic, partition)
                .is_some()
            {
                let _ = consumer.seek(
                    &self.opts.input_topic,
                    partition,
                    Offset::Offset(first),
                    Duration::from_secs(10),
                );
            }
        }
    }

    fn count(&mut self, batch: &[BorrowedMessage<'_>], outcome: BatchOutcome) {
        metrics::batch("processor", batch.len(), self.batch_started.elapsed());
        for span in &outcome.partitions {
            let ts = batch[span.last].timestamp().to_millis();
            self.lag.processed(span.partition, ts);
        }
        let c = &outcome.counts;
        self.stats.consumed += batch.len() as u64;
        self.stats.valid += c.valid;
        self.stats.invalid += c.invalid;
        self.stats.batches += 1;
        for (r, n) in &c.by_reason {
            *self.stats.by_reason.entry(*r).or_default() += n;
        }
        self.tally.add(outcome.counts);
    }
}
