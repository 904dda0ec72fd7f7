//! Kafka plumbing shared by the stages: topic creation through the admin API (the dev broker does not
//! auto-create topics), sending with back-pressure, and what the stages' clients share: contexts that
//! report broker outages once (`context`), and what a consumer knows of its input (`input`).

mod context;
mod input;
mod topic_id;

pub use context::{is_connection_error, BrokerWatch, DeliveryTracker, GroupContext};
pub use input::{poll_error, InputState};
pub use topic_id::topic_id;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Rebalance;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;

use crate::config::{ClientKind, KafkaSettings};
use crate::error::{Error, Result};

/// Creates the topics that do not exist yet (existing ones are left alone).
pub fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client(ClientKind::Admin, &[])
        .create()
        .map_err(|e| Error::kafka("creating the Kafka admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results =
        futures_executor::block_on(admin.create_topics(new.iter(), &opts)).map_err(|e| {
            Error::kafka(
                format!(
                    "creating topics {topics:?} on {} (is the broker running?)",
                    settings.bootstrap_servers
                ),
                e,
            )
        })?;
    for r in results {
        match r {
            Ok(name) => {
                log::info!(target: "ecomlogs.kafka", "created topic {name} ({partitions} partitions)")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::kafka(
                    format!("creating topic {name} on {}", settings.bootstrap_servers),
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}

pub fn log_rebalance(rebalance: &Rebalance<'_>) {
    match rebalance {
        Rebalance::Assign(tpl) => {
            log::info!(target: "ecomlogs.kafka", "assigned {}", describe_tpl(tpl))
        }
        Rebalance::Revoke(tpl) => {
            log::info!(target: "ecomlogs.kafka", "revoked {}", describe_tpl(tpl))
        }
        Rebalance::Error(e) => log::warn!(target: "ecomlogs.kafka", "rebalance error: {e}"),
    }
}

pub fn describe_tpl(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    if parts.is_empty() {
        "no partitions".into()
    } else {
        parts.join(", ")
    }
}

/// True for errors after which retrying the same call cannot help.
pub fn is_fatal(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::Fatal)
            | Some(RDKafkaErrorCode::ProducerFenced)
            | Some(RDKafkaErrorCode::InvalidProducerEpoch)
            | Some(RDKafkaErrorCode::TopicAuthorizationFailed)
    )
}

/// Sends with back-pressure: waits (serving delivery reports) while the local queue is full.
pub fn send_blocking(
    producer: &rdkafka::producer::BaseProducer<DeliveryTracker>,
    mut record: rdkafka::producer::BaseRecord<'_, [u8], [u8]>,
) -> std::result::Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}
