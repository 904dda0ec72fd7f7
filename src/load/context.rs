//! The loader's consumer context: on assignment it decides where each partition starts, from what
//! PostgreSQL holds, checked against the log (see `resume`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::kafka::{rebalance, StageContext};
use crate::resume::{LogCheck, Start, StoredPosition};
use crate::sink::PgSink;
use crate::stage::locked;

/// The loader's state in its consumer context: on assignment it decides where each partition starts.
pub(super) struct LoaderState {
    pub(super) sink: Mutex<PgSink>,
    pub(super) topic: String,
    pub(super) check: LogCheck,
    /// The topic's ID as the broker reported it at the last assignment (None if it reports none).
    pub(super) topic_id: Mutex<Option<String>>,
    /// Next offset per partition; records below it are already stored and skipped.
    pub(super) stored: Mutex<HashMap<i32, i64>>,
    pub(super) log_resets: AtomicU64,
    pub(super) offsets_lost: AtomicU64,
    /// A fault met in the rebalance callback, which cannot return it: the loop stops with it.
    pub(super) fault: Mutex<Option<Error>>,
}

pub(super) type LoaderContext = StageContext<LoaderState>;

impl ConsumerContext for LoaderContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        rebalance(self, consumer, err, tpl, "ecomlogs.loader", |tpl| {
            let partitions: Vec<i32> = tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            match self.plan(&partitions) {
                Ok(Some(plan)) => {
                    for (partition, offset) in plan {
                        let _ = tpl.set_partition_offset(&self.topic, partition, offset);
                    }
                }
                // Stopping during an outage: the loop ends before it reads anything.
                Ok(None) => {}
                Err(e) => *locked(&self.fault) = Some(e),
            }
        });
    }
}

impl LoaderState {
    /// Where each assigned partition starts: the stored offset if the log is the one it was read from,
    /// else the beginning of the log (see `resume`). None: stopping during an outage.
    pub(super) fn plan(&self, partitions: &[i32]) -> Result<Option<Vec<(i32, Offset)>>> {
        let mut sink = locked(&self.sink);
        let Some(stored) = sink.stored_positions(partitions)? else {
            return Ok(None);
        };
        let mut stored: HashMap<i32, StoredPosition> = stored.into_iter().collect();
        let (id, checked) = self
            .check
            .check(partitions.iter().map(|p| (*p, stored.remove(p))).collect());
        *locked(&self.topic_id) = id.clone();
        let mut known = locked(&self.stored);
        known.clear();
        let mut described = Vec::new();
        for c in &checked {
            described.push(self.check.report(c));
            match c.start {
                Start::Resume(next) => {
                    known.insert(c.partition, next);
                }
                Start::AfterLoss { log_start, lost } => {
                    self.offsets_lost.fetch_add(lost as u64, Ordering::Relaxed);
                    known.insert(c.partition, log_start);
                    if sink
                        .restart_offset(c.partition, log_start, id.as_deref())?
                        .is_none()
                    {
                        return Ok(None);
                    }
                }
                Start::Beginning(_) if c.is_new_log() => {
                    self.log_resets.fetch_add(1, Ordering::Relaxed);
                    if sink
                        .restart_offset(c.partition, 0, id.as_deref())?
                        .is_none()
                    {
                        return Ok(None);
                    }
                }
                // Nothing stored, or unverified: the old position (if any) stays until passed.
                Start::Beginning(_) => {}
            }
        }
        log::info!(
            target: "ecomlogs.kafka",
            "assigned {}{}",
            if described.is_empty() { "no partitions".to_string() } else { described.join(", ") },
            if checked.iter().any(|c| matches!(c.start, Start::Beginning(_))) {
                "; rows already in the table are skipped by event_id"
            } else {
                ""
            }
        );
        Ok(Some(
            checked.iter().map(|c| (c.partition, c.offset())).collect(),
        ))
    }
}
