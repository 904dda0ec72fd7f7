//! The processor's consumer context: on assignment, checks each committed offset against the log.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{rebalance, StageContext};
use crate::resume::{from_commit, LogCheck};

/// The consumer context: on assignment, checks that each partition's committed offset still belongs to
/// the log it was read from (its fingerprint travels in the commit metadata, see `resume`); on a new log
/// (reset broker, re-created topic) the partition is read again from its beginning, so nothing new is
/// skipped (outputs may repeat: at-least-once).
pub(super) struct ProcessorState {
    pub(super) check: LogCheck,
    pub(super) topic_id: Mutex<Option<String>>,
}

pub(super) type ProcessorContext = StageContext<ProcessorState>;

impl ConsumerContext for ProcessorContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        rebalance(self, consumer, err, tpl, "ecomlogs.processor", |tpl| {
            self.plan(consumer, tpl)
        });
    }
}

impl ProcessorContext {
    /// Sets each assigned partition's start from its committed offset, checked against the log.
    pub(super) fn plan(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let topic = self.check.topic.clone();
        let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(30)) {
            Ok(c) => c,
            Err(e) => {
                // Left to librdkafka (committed offset, else the earliest); said so.
                log::warn!(target: "ecomlogs.processor", "reading the committed offsets failed ({e}); the log is not checked for this assignment");
                return;
            }
        };
        let stored = committed
            .elements_for_topic(&topic)
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(n) => (e.partition(), Some(from_commit(n, Some(e.metadata())))),
                _ => (e.partition(), None),
            })
            .collect();
        let (id, checked) = self.check.check(stored);
        *self.topic_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
        let described: Vec<String> = checked.iter().map(|c| self.check.report(c)).collect();
        for c in &checked {
            let _ = tpl.set_partition_offset(&topic, c.partition, c.offset());
        }
        log::info!(target: "ecomlogs.kafka", "assigned {}", if described.is_empty() { "no partitions".into() } else { described.join(", ") });
    }
}
