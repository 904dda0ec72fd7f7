//! What a consuming worker knows of its input.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Offset;

use super::context::take_error_text;
use super::fetch_errors::{FetchError, FetchErrors, Verdict, DEFAULT_LIMIT};
use super::{is_connection_error, is_fatal};
use crate::config::KafkaSettings;
use crate::error::{Error, Result};

/// This member's standing in its consumer group, kept by its context's rebalance callback: how many
/// rebalances so far, and whether an assignment is in force (from an ASSIGN to the next REVOKE; during
/// a rebalance none is, even an empty one).
#[derive(Debug, Default)]
pub struct Assignment {
    generation: AtomicU64,
    in_force: AtomicBool,
}

impl Assignment {
    pub fn assigned(&self) {
        self.in_force.store(true, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn revoked(&self) {
        self.in_force.store(false, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn in_force(&self) -> bool {
        self.in_force.load(Ordering::Relaxed)
    }
}

/// An assigned partition, and whether it has been read to its end (since its last record).
#[derive(Debug)]
struct PartitionEnd {
    partition: i32,
    at_end: bool,
    /// A record or its end came since the current streak of fetch errors began.
    moved: bool,
}

/// What a consuming worker knows of its input: which assigned partitions it has read to their end
/// (librdkafka's end-of-partition events, `enable.partition.eof`) and when input last came. Serves
/// `until_caught_up` (every assigned partition read to its end) and `until_idle`, and keeps both from
/// being reported while records wait that cannot be read (see `fetch_errors`).
#[derive(Debug)]
pub struct InputState {
    generation: u64,
    in_force: bool,
    topic: String,
    ends: Vec<PartitionEnd>,
    ended: usize,
    pub last_input: Instant,
    unreadable: FetchErrors,
    /// A streak of fetch errors is going on (records then note which partitions move).
    watching: bool,
    /// The streak comes from `silent_stall`, not from errors librdkafka reported.
    silent: bool,
    /// `sync` calls (one per poll): the clock is read on every 16th only.
    syncs: u32,
    /// When a silent stall was first suspected (it counts from the next look, a second later, so that
    /// a loop that was not polling, busy with the database, catches up on its records first).
    suspect_since: Option<Instant>,
}

/// A worker with no input for this long, while a partition has not reached its end, looks for a batch
/// that librdkafka re-fetches without a word (see `silent_stall`).
const SILENT_AFTER: Duration = Duration::from_secs(5);

impl Default for InputState {
    fn default() -> Self {
        InputState::with_limit("ecomlogs.kafka", DEFAULT_LIMIT)
    }
}

impl InputState {
    /// For a stage logging to `target`, giving up on unreadable input after the settings' limit.
    pub fn new(target: &'static str, settings: &KafkaSettings) -> Self {
        InputState::with_limit(target, settings.unreadable_timeout)
    }

    fn with_limit(target: &'static str, limit: Duration) -> Self {
        InputState {
            generation: 0,
            in_force: false,
            topic: String::new(),
            ends: Vec::new(),
            ended: 0,
            last_input: Instant::now(),
            unreadable: FetchErrors::new(target, limit),
            watching: false,
            silent: false,
            syncs: 0,
            suspect_since: None,
        }
    }

    /// Follows the assignment: a new one (the group's generation moved) starts every partition unread,
    /// and restarts the idle clock.
    /// Also ends a streak of fetch errors once it has cleared, and looks for a silent stall: an error
    /// means records wait that cannot be read, for longer than the stage allows.
    pub fn sync<C: ConsumerContext>(
        &mut self,
        group: &Assignment,
        consumer: &BaseConsumer<C>,
    ) -> Result<()> {
        if self.watching {
            self.settle();
        }
        let generation = group.generation();
        if generation == self.generation {
            return self.silent_stall(consumer);
        }
        self.follow(generation, group, consumer);
        Ok(())
    }

    /// A new assignment: every partition unread, the idle clock restarted, any streak over.
    fn follow<C: ConsumerContext>(
        &mut self,
        generation: u64,
        group: &Assignment,
        consumer: &BaseConsumer<C>,
    ) {
        self.generation = generation;
        self.in_force = group.in_force();
        let tpl = match self.in_force {
            true => consumer.assignment().unwrap_or_default(),
            false => Default::default(),
        };
        self.ends = tpl
            .elements()
            .iter()
            .map(|e| PartitionEnd {
                partition: e.partition(),
                at_end: false,
                moved: false,
            })
            .collect();
        if let Some(e) = tpl.elements().first() {
            self.topic = e.topic().to_string();
        }
        self.ended = 0;
        self.last_input = Instant::now();
        self.suspect_since = None;
        if self.watching {
            self.watching = false;
            self.unreadable.clear("the assignment changed");
        }
    }

    /// Ends the streak when nothing waits any more (every partition moved or reached its end) or the
    /// error stopped coming back.
    fn settle(&mut self) {
        let now = Instant::now();
        if self.waiting().is_empty() {
            self.unreadable.clear("the waiting partitions moved on");
        } else {
            self.unreadable.expire(now);
        }
        self.watching = self.unreadable.active(now);
        self.silent &= self.watching;
    }

    /// librdkafka fetches some corrupt batches again and again without a word (an uncompressed batch
    /// whose records do not parse): nothing comes from that partition, and neither does its end. Once
    /// the worker has had no input for `SILENT_AFTER`, a partition short of its end whose records the
    /// broker confirms (its high watermark is past our position) counts as a fetch error, once a
    /// second, and ends in the same streak as the errors librdkafka reports.
    fn silent_stall<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<()> {
        self.syncs = self.syncs.wrapping_add(1);
        if self.syncs % 16 != 0 || !self.assigned() || self.ended == self.ends.len() {
            return Ok(());
        }
        let now = Instant::now();
        let quiet = now.saturating_duration_since(self.last_input);
        if quiet < SILENT_AFTER || (self.watching && !self.silent) {
            self.suspect_since = None;
            return Ok(());
        }
        let since = *self.suspect_since.get_or_insert(now);
        if now.saturating_duration_since(since) < Duration::from_secs(1) {
            return Ok(());
        }
        self.suspect_since = Some(now);
        let positions = consumer.position().unwrap_or_default();
        let short: Vec<i32> = self
            .ends
            .iter()
            .filter(|e| !e.at_end)
            .map(|e| e.partition)
            .collect();
        for p in short {
            // The broker does not answer: the broker watch reports that, and it is not idle either.
            let Ok((_, high)) = consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(1))
            else {
                return Ok(());
            };
            let at = positions
                .find_partition(&self.topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            if at.is_some_and(|o| o >= high) {
                continue; // read to its end: the end-of-partition event is on its way
            }
            let text = format!(
                "no record and no end of partition for {:.0}s though the broker holds records up to \
                 offset {high}, and the client reports no error (a batch it cannot parse, fetched \
                 again and again)",
                quiet.as_secs_f64()
            );
            let place = match at {
                Some(o) => format!("{}[{p}] at offset {o}", self.topic),
                None => format!("{}[{p}]", self.topic),
            };
            let error = FetchError {
                code: RDKafkaErrorCode::BadMessage,
                text,
            };
            self.silent = true;
            return self.streak(
                error,
                &place,
                KafkaError::MessageConsumption(RDKafkaErrorCode::BadMessage),
            );
        }
        Ok(())
    }

    /// One more failed attempt in the streak; past the limit, the stage's error.
    fn streak(&mut self, error: FetchError, place: &str, source: KafkaError) -> Result<()> {
        match self.unreadable.error(Instant::now(), error, place) {
            Verdict::Retry => {
                if self.unreadable.fresh() {
                    self.ends.iter_mut().for_each(|e| e.moved = false);
                }
                self.watching = true;
                Ok(())
            }
            Verdict::GiveUp(what) => Err(Error::kafka(what, source)),
        }
    }

    /// Partitions that neither moved nor reached their end since the streak began: where the records
    /// wait that cannot be read.
    fn waiting(&self) -> Vec<i32> {
        self.ends
            .iter()
            .filter(|e| !e.at_end && !e.moved)
            .map(|e| e.partition)
            .collect()
    }

    /// Partitions are assigned to this worker now.
    pub fn assigned(&self) -> bool {
        self.in_force && !self.ends.is_empty()
    }

    /// A record of `partition` came: it is not at its end (any more).
    pub fn record(&mut self, partition: i32) {
        if self.ended > 0 || self.watching {
            if let Some(e) = self.ends.iter_mut().find(|e| e.partition == partition) {
                if e.at_end {
                    e.at_end = false;
                    self.ended -= 1;
                }
                e.moved = true;
            }
        }
    }

    pub fn end(&mut self, partition: i32) {
        if let Some(e) = self.ends.iter_mut().find(|e| e.partition == partition) {
            e.moved = true;
            if !e.at_end {
                e.at_end = true;
                self.ended += 1;
            }
        }
    }

    /// An assignment is in force and every partition of it has been read to its end (a worker the
    /// group gave no partition counts too, but never one in the middle of a rebalance).
    pub fn caught_up(&self) -> bool {
        self.in_force && self.ended == self.ends.len() && !self.watching
    }

    /// For the stage's idle exit (decided for all workers, see `stage::all_idle`): when the input was
    /// last seen, or None while records may still be waiting here: a partition not read to its end (it
    /// ends as a fetch error instead, see `silent_stall`) or a streak of unreadable records.
    pub fn quiet_since(&self) -> Option<Instant> {
        let all_read = self.ended == self.ends.len();
        (!self.unreadable.active(Instant::now()) && (all_read || !self.assigned()))
            .then_some(self.last_input)
    }

    /// Handles an error from `poll`: an end of partition is noted, connection trouble is left to the
    /// broker watch (reported once), a fatal error ends the stage at once, and anything else (a batch
    /// that cannot be fetched or decoded) is a streak that ends the stage if it lasts too long.
    pub fn poll_error<C: ConsumerContext>(
        &mut self,
        e: KafkaError,
        consumer: &BaseConsumer<C>,
    ) -> Result<()> {
        if let KafkaError::PartitionEOF(p) = e {
            self.end(p);
            return Ok(());
        }
        let Some(code) = e.rdkafka_error_code() else {
            log::warn!(target: "ecomlogs.kafka", "consumer: {e}");
            return Ok(());
        };
        if is_connection_error(Some(code)) {
            return Ok(());
        }
        let error = FetchError {
            code,
            text: take_error_text(code).unwrap_or_else(|| e.to_string()),
        };
        if is_fatal(Some(code)) || matches!(e, KafkaError::MessageConsumptionFatal(_)) {
            let place = self.place(&error, consumer);
            let what = format!("cannot read {place}: {} ({})", error.meaning(), error.text);
            return Err(Error::kafka(what, e));
        }
        if self.ended == self.ends.len() {
            // Nothing waits (no assignment, or every partition read to its end): not about records
            // (the broker watch has logged it).
            return Ok(());
        }
        let place = self.place(&error, consumer);
        self.silent = false;
        self.streak(error, &place, e)
    }

    /// Where the records wait: the partitions that did not move since the streak began, e.g.
    /// `raw_events[2] at offset 1200`. When the error names an offset and several partitions are
    /// candidates, only those holding records past that offset (asked of the broker: this happens once
    /// per log line) and, of those, the ones whose position is that offset are named.
    fn place<C: ConsumerContext>(&self, error: &FetchError, consumer: &BaseConsumer<C>) -> String {
        let offset = error.offset();
        let mut waiting: Vec<i32> = if self.unreadable.active(Instant::now()) {
            self.waiting()
        } else {
            self.ends
                .iter()
                .filter(|e| !e.at_end)
                .map(|e| e.partition)
                .collect()
        };
        if let (Some(at), true) = (offset, waiting.len() > 1) {
            let past = |p: &i32| {
                consumer
                    .fetch_watermarks(&self.topic, *p, Duration::from_secs(1))
                    .map_or(true, |(_, high)| high > at)
            };
            narrow(&mut waiting, past);
            let positions = consumer.position().unwrap_or_default();
            narrow(&mut waiting, |p| {
                positions
                    .find_partition(&self.topic, *p)
                    .is_some_and(|e| e.offset() == Offset::Offset(at))
            });
        }
        let topic = if self.topic.is_empty() {
            "the input"
        } else {
            &self.topic
        };
        let partitions = match waiting.as_slice() {
            [] => String::new(),
            [p] => format!("[{p}]"),
            many => format!(
                " (one of partitions {})",
                many.iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        match offset {
            Some(at) => format!("{topic}{partitions} at offset {at}"),
            None => format!("{topic}{partitions}"),
        }
    }
}

/// Keeps the partitions that pass `test`, unless none does (then the test told nothing).
fn narrow(partitions: &mut Vec<i32>, test: impl Fn(&i32) -> bool) {
    let kept: Vec<i32> = partitions.iter().copied().filter(test).collect();
    if !kept.is_empty() {
        *partitions = kept;
    }
}
