//! How the processor commits a batch: after its outputs are acknowledged (at-least-once), or in one
//! Kafka transaction with them (exactly-once); and the producer that writes them.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::TopicPartitionList;

use super::context::ProcessorContext;
use super::ProcessOptions;
use crate::config::{ClientKind, KafkaSettings};
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::kafka::{BrokerWatch, DeliveryTracker};

/// The worker's producer: idempotent; transactional with `exactly_once`.
pub(super) fn producer(
    settings: &KafkaSettings,
    opts: &ProcessOptions,
    index: usize,
    watch: Arc<BrokerWatch>,
) -> Result<BaseProducer<DeliveryTracker>> {
    let mut stage: Vec<(&str, &str)> = dead_letter::PRODUCER.to_vec();
    let tid;
    if opts.exactly_once {
        let base = opts
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}-{}", opts.group_id, hostname(), std::process::id()));
        tid = if opts.workers > 1 {
            format!("{base}-{index}")
        } else {
            base
        };
        stage.extend([
            ("transactional.id", tid.as_str()),
            ("transaction.timeout.ms", "30000"),
            ("message.timeout.ms", "30000"),
        ]);
    }
    let producer: BaseProducer<DeliveryTracker> = settings
        .client(ClientKind::Producer, &stage)
        .create_with_context(DeliveryTracker::new(watch))
        .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
    if opts.exactly_once {
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| Error::kafka("initialising Kafka transactions", e))?;
    }
    Ok(producer)
}

pub enum CommitFailure {
    /// Retrying this batch can help (a rebalance, an aborted transaction).
    Retry(String),
    Fatal(Error),
}

pub(super) fn commit_after_delivery(
    producer: &BaseProducer<DeliveryTracker>,
    consumer: &BaseConsumer<ProcessorContext>,
    tpl: &TopicPartitionList,
) -> std::result::Result<(), CommitFailure> {
    crate::kafka::flush(producer, Duration::from_secs(60)).map_err(|e| {
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

pub(super) fn commit_transaction(
    producer: &BaseProducer<DeliveryTracker>,
    consumer: &BaseConsumer<ProcessorContext>,
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
