//! The processor's consumer context: on assignment, checks each committed offset against the log.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{log_rebalance, GroupContext};
use crate::resume::{from_commit, LogCheck};

/// The consumer context: on assignment, checks that each partition's committed offset still belongs to
/// the log it was read from (its fingerprint travels in the commit metadata, see `resume`); on a new log
/// (reset broker, re-created topic) the partition is read again from its beginning, so nothing new is
/// skipped (outputs may repeat: at-least-once).
pub(super) struct ProcessorContext {
    pub(super) group: GroupContext,
    pub(super) check: LogCheck,
    pub(super) topic_id: Mutex<Option<String>>,
}

impl ClientContext for ProcessorContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.group.watch.on_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.group.watch.on_error(error, reason);
    }
}

impl ConsumerContext for ProcessorContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.plan(consumer, tpl);
                if let Err(e) = consumer.assign(tpl) {
                    log::error!(target: "ecomlogs.processor", "assigning partitions failed: {e}");
                }
                self.group.assignment.assigned();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                log_rebalance(&Rebalance::Revoke(tpl));
                if let Err(e) = consumer.unassign() {
                    log::error!(target: "ecomlogs.processor", "unassigning partitions failed: {e}");
                }
                self.group.assignment.revoked();
            }
            other => {
                log::warn!(target: "ecomlogs.kafka", "rebalance error: {other:?}");
                let _ = consumer.unassign();
                self.group.assignment.revoked();
            }
        }
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
