//! Kafka plumbing shared by the stages: client configuration built from key/value pairs (a user's
//! librdkafka settings pass straight through), topic creation through the admin API (Tansu does not
//! auto-create topics), delivery accounting, and a consumer context that logs rebalances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
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
            // End-of-partition events tell a stage when it has caught up (`until_caught_up`).
            ("enable.partition.eof", "true"),
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

/// Reports broker outages in a stage's log once: one warning when the connection is lost, one line when
/// it is back, instead of librdkafka's line per failed attempt (which go to debug).
pub struct BrokerWatch {
    /// The stage's logger, e.g. `ecomlogs.loader`.
    target: &'static str,
    /// (start of the outage, last connection error seen in it)
    down: Mutex<Option<(Instant, Instant)>>,
    outages: AtomicU64,
}

/// Records fetched before a connection dropped still arrive for a moment after it: the broker counts as
/// back only once news from it comes this long after the last connection error.
const QUIET_BEFORE_BACK: Duration = Duration::from_secs(1);

impl BrokerWatch {
    /// One per stage, shared by all its clients (consumers and producers).
    pub fn new(target: &'static str) -> Arc<Self> {
        Arc::new(BrokerWatch {
            target,
            down: Mutex::new(None),
            outages: AtomicU64::new(0),
        })
    }

    pub fn is_down(&self) -> bool {
        self.down.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// Broker outages seen so far.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    fn lost(&self, why: &str) {
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match g.as_mut() {
            None => {
                *g = Some((now, now));
                self.outages.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: self.target, "lost the connection to the broker ({why}); retrying until it is back");
            }
            Some((_, last)) => {
                *last = now;
                log::debug!(target: self.target, "broker still unreachable: {why}");
            }
        }
    }

    /// The stage heard from the broker (a record, an acknowledgement): ends an outage.
    pub fn alive(&self) {
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, last)) = *g {
            if last.elapsed() >= QUIET_BEFORE_BACK {
                *g = None;
                log::info!(target: self.target, "the broker is reachable again (after {:.1}s)", since.elapsed().as_secs_f64());
            }
        }
    }

    /// For `ClientContext::error`: connection failures count as an outage, the rest is logged.
    pub fn on_error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::PartitionEOF) {
            log::debug!(target: self.target, "{reason}"); // not an error: the stage is caught up
        } else if is_connection_error(code) {
            self.lost(&one_line(reason));
        } else {
            log::error!(target: self.target, "{error}: {reason}");
        }
    }

    /// For `ClientContext::log`: librdkafka's own lines, minus the per-attempt noise of an outage.
    pub fn on_log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Severity is the number: 0 (emergency) to 7 (debug); warnings and below are 4 and up.
        let during_outage = self.is_down() && (level as i32) >= RDKafkaLogLevel::Warning as i32;
        // One --extra-config feeds a stage's consumers and producers alike: a key that only one kind
        // uses is expected, not worth a warning from the other.
        let other_kind = fac == "CONFWARN" && message.contains("will be ignored by this");
        let quiet = fac == "FAIL" || during_outage || other_kind;
        let lvl = match level {
            _ if quiet => log::Level::Debug,
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => log::Level::Error,
            RDKafkaLogLevel::Warning => log::Level::Warn,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => log::Level::Info,
            RDKafkaLogLevel::Debug => log::Level::Debug,
        };
        log::log!(target: "librdkafka", lvl, "{fac}: {message}");
    }
}

/// Errors that mean "cannot talk to the broker right now" (librdkafka retries them by itself).
pub fn is_connection_error(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::AllBrokersDown)
            | Some(RDKafkaErrorCode::BrokerTransportFailure)
            | Some(RDKafkaErrorCode::Resolve)
            | Some(RDKafkaErrorCode::OperationTimedOut)
            | Some(RDKafkaErrorCode::CoordinatorNotAvailable)
            | Some(RDKafkaErrorCode::NotCoordinator)
            | Some(RDKafkaErrorCode::NetworkException)
            | Some(RDKafkaErrorCode::RequestTimedOut)
    )
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Counts delivery reports; keeps the first failure so the stage can report it.
pub struct DeliveryTracker {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    first_error: Mutex<Option<KafkaError>>,
    pub watch: Arc<BrokerWatch>,
}

impl DeliveryTracker {
    pub fn new(watch: Arc<BrokerWatch>) -> Self {
        DeliveryTracker {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            watch,
        }
    }

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

impl ClientContext for DeliveryTracker {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.watch.on_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.on_error(error, reason);
    }
}

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
pub struct GroupContext {
    pub rebalances: AtomicU64,
    pub assigned_partitions: AtomicU64,
    pub watch: Arc<BrokerWatch>,
}

impl GroupContext {
    pub fn new(watch: Arc<BrokerWatch>) -> Self {
        GroupContext {
            rebalances: AtomicU64::new(0),
            assigned_partitions: AtomicU64::new(0),
            watch,
        }
    }

    pub fn has_joined(&self) -> bool {
        self.rebalances.load(Ordering::Relaxed) > 0
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.watch.on_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.on_error(error, reason);
    }
}

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

/// The topic's ID (KIP-516, base64 as Kafka tools print it), or None when the broker reports none.
///
/// rust-rdkafka does not wrap librdkafka's DescribeTopics admin call, so this is the one place that
/// calls librdkafka directly; every pointer is created and destroyed here.
pub fn topic_id<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Option<String> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};

    let name = CString::new(topic).ok()?;
    let rk = client.native_ptr();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `rk` is a live client handle for the duration of `client`'s borrow. Every object made
    // here is destroyed before returning; the result's descriptions are owned by `event`, which is
    // destroyed only after the topic ID has been copied into a String.
    unsafe {
        let mut names = [name.as_ptr()];
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let mut id = None;
        if !event.is_null()
            && rd::rd_kafka_event_error(event)
                == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            if !result.is_null() {
                let mut count = 0usize;
                let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
                if count == 1 && !topics.is_null() {
                    let desc = *topics;
                    let err = rd::rd_kafka_TopicDescription_error(desc);
                    if err.is_null()
                        || rd::rd_kafka_error_code(err)
                            == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                    {
                        let uuid = rd::rd_kafka_TopicDescription_topic_id(desc);
                        if !uuid.is_null()
                            && (rd::rd_kafka_Uuid_most_significant_bits(uuid) != 0
                                || rd::rd_kafka_Uuid_least_significant_bits(uuid) != 0)
                        {
                            let text = rd::rd_kafka_Uuid_base64str(uuid);
                            if !text.is_null() {
                                id = Some(CStr::from_ptr(text).to_string_lossy().into_owned());
                            }
                        }
                    }
                }
            }
        }
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_TopicCollection_destroy(collection);
        id
    }
}

/// What a consuming worker knows of its input: which assigned partitions it has read to their end
/// (librdkafka's end-of-partition events, `enable.partition.eof`) and when input last came. Serves
/// `until_caught_up` (every assigned partition read to its end) and `until_idle`.
#[derive(Debug)]
pub struct InputState {
    generation: u64,
    ends: Vec<(i32, bool)>,
    ended: usize,
    assigned_once: bool,
    pub last_input: Instant,
}

impl Default for InputState {
    fn default() -> Self {
        InputState {
            generation: 0,
            ends: Vec::new(),
            ended: 0,
            assigned_once: false,
            last_input: Instant::now(),
        }
    }
}

impl InputState {
    /// Follows the assignment: a new one (the context's rebalance count moved) starts every partition
    /// unread, and restarts the idle clock.
    pub fn sync<C: ConsumerContext>(&mut self, generation: u64, consumer: &BaseConsumer<C>) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.ends = consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.partition(), false))
                    .collect()
            })
            .unwrap_or_default();
        self.ended = 0;
        self.assigned_once |= !self.ends.is_empty();
        self.last_input = Instant::now();
    }

    pub fn assigned(&self) -> bool {
        !self.ends.is_empty()
    }

    /// A record of `partition` came: it is not at its end (any more).
    pub fn record(&mut self, partition: i32) {
        if self.ended > 0 {
            if let Some(e) = self.ends.iter_mut().find(|e| e.0 == partition && e.1) {
                e.1 = false;
                self.ended -= 1;
            }
        }
    }

    pub fn end(&mut self, partition: i32) {
        if let Some(e) = self.ends.iter_mut().find(|e| e.0 == partition && !e.1) {
            e.1 = true;
            self.ended += 1;
        }
    }

    /// Every assigned partition read to its end; a worker the group gave no partition counts too,
    /// once the group has answered.
    pub fn caught_up(&self) -> bool {
        self.ended == self.ends.len() && (self.assigned() || self.generation > 0)
    }

    /// No input for `idle` while assigned (an unassigned worker is joining, not idle: it gets a
    /// generous bound instead; an unreachable broker is never idle: records may be waiting).
    pub fn idle(&self, idle: Option<Duration>, broker_down: bool) -> bool {
        let Some(idle) = idle else { return false };
        let waited = self.last_input.elapsed();
        !broker_down
            && ((self.assigned() && waited >= idle) || waited >= idle + Duration::from_secs(60))
    }
}

/// Handles an error from `poll`: an end of partition is returned, connection trouble is left to the
/// broker watch (reported once), a fatal error ends the stage, anything else is logged.
pub fn poll_error(e: KafkaError, target: &str) -> Result<Option<i32>> {
    if let KafkaError::PartitionEOF(p) = e {
        return Ok(Some(p));
    }
    let code = e.rdkafka_error_code();
    if is_fatal(code) {
        return Err(Error::kafka("consuming", e));
    }
    if !is_connection_error(code) {
        log::warn!(target: target, "consumer: {e}");
    }
    Ok(None)
}
