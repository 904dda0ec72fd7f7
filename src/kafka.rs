//! Kafka plumbing shared by the stages: client configuration built from key/value pairs (a user's
//! librdkafka settings pass straight through), topic creation through the admin API (Tansu does not
//! auto-create topics), delivery accounting, and a consumer context that logs rebalances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::ProducerContext;
use rdkafka::TopicPartitionList;

use crate::error::{Error, Result};

pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "localhost:29092";
pub const RAW_TOPIC: &str = "raw_events";
pub const CLEAN_TOPIC: &str = "clean_events";
pub const DLQ_TOPIC: &str = "dead_letter_events";
pub const PROCESSOR_GROUP: &str = "silver-stream-processor";
pub const LOADER_GROUP: &str = "postgres-loader";
pub const DEFAULT_PARTITIONS: i32 = 3;

/// Where the broker is and how to talk to it. `extra` is passed to librdkafka as is and wins over
/// everything this crate sets.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: DEFAULT_BOOTSTRAP_SERVERS.to_string(),
            extra: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            extra: BTreeMap::new(),
        }
    }

    fn base(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", "ecomlogs");
        // Fail fast on an unreachable broker instead of retrying for minutes.
        c.set("socket.connection.setup.timeout.ms", "10000");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// A high-throughput, idempotent producer (no duplicates from internal retries). Only failures get a
    /// delivery report (a callback per record costs more than validating it); a successful `flush` then
    /// means every record was acknowledged.
    pub fn producer_config(&self) -> ClientConfig {
        self.base(&[
            ("enable.idempotence", "true"),
            ("delivery.report.only.error", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            // LZ4 costs the client ~0.2 us per event and halves the broker's CPU (fewer bytes to store
            // and serve); every Kafka broker since 0.10 handles it.
            ("compression.type", "lz4"),
            ("batch.size", "1000000"),
            ("batch.num.messages", "100000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
            ("message.timeout.ms", "60000"),
        ])
    }

    /// A consumer in `group` that commits only what we tell it to. Group joins on Tansu take about half
    /// of `session.timeout.ms`, hence 6 s (the lowest Apache Kafka accepts by default); override with
    /// `extra`.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.base(&[
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "1000"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "100"),
            ("queued.min.messages", "200000"),
            ("fetch.message.max.bytes", "4194304"),
        ]);
        c.set("group.id", group);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.base(&[])
    }
}

/// Creates the topics that do not exist yet (existing ones are left alone).
pub fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .admin_config()
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

/// Counts delivery reports; keeps the first failure so the stage can report it.
#[derive(Default)]
pub struct DeliveryTracker {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    first_error: Mutex<Option<KafkaError>>,
}

impl DeliveryTracker {
    pub fn take_error(&self) -> Option<KafkaError> {
        self.first_error
            .lock()
            .map(|mut g| g.take())
            .unwrap_or(None)
    }
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.first_error.lock() {
                    if g.is_none() {
                        *g = Some(e.clone());
                    }
                }
            }
        }
    }
}

/// Logs rebalances (who got which partitions) under `ecomlogs.kafka` and counts them, so a stage can
/// tell "no input yet because the group is still joining" from "no input".
#[derive(Default)]
pub struct GroupContext {
    pub rebalances: AtomicU64,
    pub assigned_partitions: AtomicU64,
}

impl GroupContext {
    pub fn has_joined(&self) -> bool {
        self.rebalances.load(Ordering::Relaxed) > 0
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        log_rebalance(rebalance);
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => self
                .assigned_partitions
                .store(tpl.count() as u64, Ordering::Relaxed),
            Rebalance::Revoke(_) => self.assigned_partitions.store(0, Ordering::Relaxed),
            Rebalance::Error(_) => {}
        }
    }
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

/// Dead-letter header names, shared by every stage that dead-letters.
pub mod dlq_headers {
    pub const REASON: &str = "reason";
    pub const DETAIL: &str = "detail";
    pub const SOURCE_TOPIC: &str = "source.topic";
    pub const SOURCE_PARTITION: &str = "source.partition";
    pub const SOURCE_OFFSET: &str = "source.offset";
    pub const STAGE: &str = "stage";
    pub const SQLSTATE: &str = "sqlstate";
}

/// Where a dead letter came from and why.
pub struct DeadLetterInfo<'a> {
    pub reason: &'a str,
    pub detail: &'a str,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    pub stage: &'a str,
    pub sqlstate: Option<&'a str>,
}

/// Headers of a dead-letter record: the original key and value stay untouched, these say why.
pub fn dead_letter_headers(info: &DeadLetterInfo<'_>) -> OwnedHeaders {
    const MAX_DETAIL: usize = 1024;
    let mut end = info.detail.len().min(MAX_DETAIL);
    while !info.detail.is_char_boundary(end) {
        end -= 1;
    }
    let partition = info.source_partition.to_string();
    let offset = info.source_offset.to_string();
    let mut h = OwnedHeaders::new_with_capacity(7)
        .insert(Header {
            key: dlq_headers::REASON,
            value: Some(info.reason),
        })
        .insert(Header {
            key: dlq_headers::DETAIL,
            value: Some(&info.detail[..end]),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_TOPIC,
            value: Some(info.source_topic),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_OFFSET,
            value: Some(&offset),
        })
        .insert(Header {
            key: dlq_headers::STAGE,
            value: Some(info.stage),
        });
    if let Some(state) = info.sqlstate {
        h = h.insert(Header {
            key: dlq_headers::SQLSTATE,
            value: Some(state),
        });
    }
    h
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
