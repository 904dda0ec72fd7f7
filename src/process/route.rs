//! Routing a batch: every record to exactly one output. A large batch from several partitions is routed by
//! several threads, each taking whole partitions (all records of a key come from one partition, so each
//! key's order in the outputs is kept), all sending through the worker's one producer (librdkafka's
//! producer is thread-safe). One group member thus uses every core without the group joins, rebalances
//! and extra clients that more consumers would cost.

use std::collections::BTreeMap;

use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::BaseProducer;

use super::ProcessOptions;
use crate::dead_letter::{self, headers};
use crate::error::{Error, Result};
use crate::kafka::{self, DeliveryTracker, Out, Topic};
use crate::validate::Reason;

/// Below this many records a batch is routed on the worker's own thread (threads would cost more).
const PARALLEL_MIN: usize = 4096;

#[derive(Debug, Default, PartialEq)]
pub(super) struct Counts {
    pub valid: u64,
    pub invalid: u64,
    pub by_reason: BTreeMap<Reason, u64>,
}

impl Counts {
    pub(super) fn add(&mut self, other: Counts) {
        self.valid += other.valid;
        self.invalid += other.invalid;
        for (r, n) in other.by_reason {
            *self.by_reason.entry(r).or_default() += n;
        }
    }
}

/// Threads for a batch from `partitions` partitions: one per core, at most one per partition
/// (`threads` > 0 overrides the core count).
pub(super) fn threads_for(threads: usize, partitions: usize) -> usize {
    let cores = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    cores.min(partitions).max(1)
}

/// Routes every record of `batch` (whose partitions are `partitions`); the counts of what went where.
pub(super) fn route_batch(
    opts: &ProcessOptions,
    producer: &BaseProducer<DeliveryTracker>,
    batch: &[BorrowedMessage<'_>],
    partitions: &[i32],
    canonical: &mut Vec<u8>,
) -> Result<Counts> {
    let threads = threads_for(opts.threads, partitions.len());
    let to = Outputs::new(producer, opts)?;
    let to = &to;
    if threads <= 1 || batch.len() < PARALLEL_MIN {
        let mut counts = Counts::default();
        for m in batch {
            route(opts, to, m, canonical, &mut counts)?;
        }
        return Ok(counts);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<i32> = partitions
                    .iter()
                    .copied()
                    .skip(t)
                    .step_by(threads)
                    .collect();
                s.spawn(move || -> Result<Counts> {
                    let (mut counts, mut buf) = (Counts::default(), Vec::with_capacity(512));
                    for m in batch.iter().filter(|m| mine.contains(&m.partition())) {
                        route(opts, to, m, &mut buf, &mut counts)?;
                    }
                    Ok(counts)
                })
            })
            .collect();
        let mut total = Counts::default();
        let mut failed = None;
        for h in handles {
            match h.join() {
                Ok(Ok(c)) => total.add(c),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        failed.map_or(Ok(total), Err)
    })
}

/// Where a batch's records go: the worker's producer and handles of its two topics.
struct Outputs<'p> {
    producer: &'p BaseProducer<DeliveryTracker>,
    clean: Topic<'p>,
    dlq: Topic<'p>,
}

impl<'p> Outputs<'p> {
    fn new(producer: &'p BaseProducer<DeliveryTracker>, opts: &ProcessOptions) -> Result<Self> {
        let topic = |name: &str| {
            Topic::new(producer, name).map_err(|e| Error::kafka(format!("producing to {name}"), e))
        };
        Ok(Outputs {
            producer,
            clean: topic(&opts.output_topic)?,
            dlq: topic(&opts.dlq_topic)?,
        })
    }
}

/// One record to exactly one output: canonical JSON to the output topic, or the original to the
/// dead-letter topic with the reason.
fn route(
    opts: &ProcessOptions,
    to: &Outputs<'_>,
    m: &BorrowedMessage<'_>,
    canonical: &mut Vec<u8>,
    counts: &mut Counts,
) -> Result<()> {
    let key = m.key();
    // A replayed record's lineage goes with whatever it becomes (records without headers cost nothing).
    let lineage = dead_letter::Lineage::of(m.headers());
    let contract = opts.contract.id();
    match opts.contract.validate(m.payload()) {
        Ok(clean) => {
            canonical.clear();
            clean.write_canonical_json(canonical);
            if opts.log_each {
                log::info!(target: "ecomlogs.processor", "valid {} {}", clean.event_id, clean.event_type_text());
            }
            counts.valid += 1;
            let mut digits = itoa::Buffer::new();
            let mut h = [(headers::CONTRACT, contract.as_bytes()); 3];
            let n = match &lineage {
                Some(l) => {
                    let [from, generation] = l.headers(&mut digits);
                    (h[1], h[2]) = (from, generation);
                    3
                }
                None => 1,
            };
            let record = Out {
                key,
                value: Some(canonical),
                headers: &h[..n],
            };
            kafka::send(to.producer, &to.clean, record)
                .map_err(|e| Error::kafka("producing an output record (offsets not committed)", e))
        }
        Err(rej) => {
            if opts.log_each {
                log::info!(target: "ecomlogs.processor", "invalid {}[{}]@{}: {}", m.topic(), m.partition(), m.offset(), rej);
            }
            counts.invalid += 1;
            *counts.by_reason.entry(rej.reason).or_default() += 1;
            let why = dead_letter::Why {
                reason: rej.reason,
                detail: &rej.detail,
                source_topic: m.topic(),
                source_partition: m.partition(),
                source_offset: m.offset(),
                stage: "processor",
                sqlstate: None,
                lineage,
                contract: Some(contract),
            };
            dead_letter::send(to.producer, &to.dlq, key, m.payload(), &why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::threads_for;

    #[test]
    fn threads_never_exceed_the_partitions_of_the_batch() {
        assert_eq!(threads_for(4, 3), 3);
        assert_eq!(threads_for(2, 3), 2);
        assert_eq!(threads_for(8, 1), 1);
        assert_eq!(threads_for(8, 0), 1);
        assert!(threads_for(0, 64) >= 1);
    }
}
