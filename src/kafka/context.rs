//! The stages' client contexts: every client of a stage shares one `BrokerWatch`, so a broker outage
//! is reported once per stage (one warning when lost, one line when back), and librdkafka's own lines
//! go to the log without the noise of every failed attempt.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;

use super::{log_rebalance, Assignment};

/// Reports broker outages in a stage's log once: one warning when the connection is lost, one line when
/// it is back, instead of librdkafka's line per failed attempt (which go to debug).
pub struct BrokerWatch {
    /// The stage's logger, e.g. `ecomlogs.loader`.
    target: &'static str,
    down: Mutex<Outage>,
    /// `down.now.is_some()`, readable without the lock (`alive` is called for every record).
    is_down: AtomicBool,
    outages: AtomicU64,
    /// When each kind of error was last logged (a repeat within `REPEAT_QUIET` goes to debug).
    logged: Mutex<HashMap<i32, Instant>>,
}

#[derive(Default)]
struct Outage {
    /// (start of the outage, last connection error served in it)
    now: Option<(Instant, Instant)>,
    /// When the last outage ended.
    ended: Option<Instant>,
}

/// An error that keeps coming back (a TLS or authentication failure at every reconnection) is logged
/// once per this long.
const REPEAT_QUIET: Duration = Duration::from_secs(30);

thread_local! {
    /// librdkafka's text for the last error event polled on this thread. rust-rdkafka hands an error
    /// event's text to the context's `error` callback and, right after, on the same thread, only its
    /// code to `poll`'s caller; the consumer loop takes the text from here (`take_error_text`).
    static ERROR_TEXT: RefCell<Option<(RDKafkaErrorCode, String)>> = const { RefCell::new(None) };
}

/// The text of the error event `poll` just returned with `code`, if the callback saw it.
pub fn take_error_text(code: RDKafkaErrorCode) -> Option<String> {
    ERROR_TEXT
        .with(|t| t.borrow_mut().take())
        .filter(|(c, _)| *c == code)
        .map(|(_, text)| text)
}

/// Errors only a consumer gets, about a batch it cannot read: its fetch-error streak reports them
/// (with where), so the callback does not log them again.
fn about_a_batch(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::BadCompression)
            | Some(RDKafkaErrorCode::BadMessage)
            | Some(RDKafkaErrorCode::InvalidMessage)
            | Some(RDKafkaErrorCode::NotImplemented)
            | Some(RDKafkaErrorCode::MessageSizeTooLarge)
            | Some(RDKafkaErrorCode::InvalidRecord)
            | Some(RDKafkaErrorCode::UnsupportedCompressionType)
    )
}

/// Records fetched before a connection dropped still arrive for a moment after it: the broker counts as
/// back only once news from it comes this long after the last connection error.
const QUIET_BEFORE_BACK: Duration = Duration::from_secs(1);

/// librdkafka retries a lost connection at least every `reconnect.backoff.max.ms` (10 s by default):
/// no connection error for longer than that means the connection is back.
const NO_ERRORS_FOR: Duration = Duration::from_secs(12);

impl Outage {
    fn end(&mut self) {
        self.now = None;
        self.ended = Some(Instant::now());
    }
}

impl BrokerWatch {
    /// One per stage, shared by all its clients (consumers and producers).
    pub fn new(target: &'static str) -> Arc<Self> {
        Arc::new(BrokerWatch {
            target,
            down: Mutex::new(Outage::default()),
            is_down: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            logged: Mutex::new(HashMap::new()),
        })
    }

    /// In an outage. One ends when the stage hears from the broker (`alive`), or once no connection error
    /// came for longer than librdkafka's longest reconnect backoff (a quiet stage may hear nothing).
    pub fn is_down(&self) -> bool {
        if !self.is_down.load(Ordering::Relaxed) {
            return false;
        }
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match g.now {
            Some((since, last)) if last.elapsed() >= NO_ERRORS_FOR => {
                g.end();
                self.is_down.store(false, Ordering::Relaxed);
                log::info!(target: self.target, "the broker is reachable again (no connection error for {}s; after {:.1}s)", NO_ERRORS_FOR.as_secs(), since.elapsed().as_secs_f64());
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Broker outages seen so far.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// A connection error, served by a client whose event queue was last seen empty at `served` (so
    /// librdkafka queued the error after that): a client that was not served for a while (its thread
    /// blocked in a flush or a commit through an outage) serves errors older than the outage's end
    /// after it; those are not a new outage.
    fn lost(&self, why: &str, served: Instant) {
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let ended = g.ended;
        match g.now.as_mut() {
            Some((_, last)) => {
                *last = now;
                log::debug!(target: self.target, "broker still unreachable: {why}");
            }
            None if ended.is_some_and(|end| served < end) => {
                log::debug!(target: self.target, "broker unreachable before it was back (served late): {why}");
            }
            None => {
                g.now = Some((now, now));
                self.is_down.store(true, Ordering::Relaxed);
                self.outages.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: self.target, "lost the connection to the broker ({why}); retrying until it is back");
            }
        }
    }

    /// The stage heard from the broker (a record, an acknowledgement): ends an outage.
    pub fn alive(&self) {
        if !self.is_down() {
            return;
        }
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, last)) = g.now {
            if last.elapsed() >= QUIET_BEFORE_BACK {
                g.end();
                self.is_down.store(false, Ordering::Relaxed);
                log::info!(target: self.target, "the broker is reachable again (after {:.1}s)", since.elapsed().as_secs_f64());
            }
        }
    }

    /// For `ClientContext::error` of a client whose queue was last seen empty at `served`: connection
    /// failures count as an outage; the rest is kept for the consumer loop (see `take_error_text`)
    /// and logged, once per `REPEAT_QUIET` for the same code.
    pub fn on_error(&self, error: KafkaError, reason: &str, served: Instant) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::PartitionEOF) {
            log::debug!(target: self.target, "{reason}"); // not an error: the stage is caught up
            return;
        }
        if is_connection_error(code) {
            self.lost(&one_line(reason), served);
            return;
        }
        if let Some(c) = code {
            ERROR_TEXT.with(|t| *t.borrow_mut() = Some((c, one_line(reason))));
        }
        if about_a_batch(code) || !self.first_in_a_while(code) {
            log::debug!(target: self.target, "{error}: {reason}");
        } else {
            log::error!(target: self.target, "{error}: {reason}");
        }
    }

    fn first_in_a_while(&self, code: Option<RDKafkaErrorCode>) -> bool {
        let Some(code) = code else { return true };
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match logged.get(&(code as i32)) {
            Some(at) if now.duration_since(*at) < REPEAT_QUIET => false,
            _ => {
                logged.insert(code as i32, now);
                true
            }
        }
    }

    /// For `ClientContext::log`: librdkafka's own lines, minus the per-attempt noise of an outage.
    pub fn on_log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let lvl = match is_noise(level, fac, message, self.is_down()) {
            true => log::Level::Debug,
            false => log_level(level),
        };
        log::log!(target: "librdkafka", lvl, "{fac}: {message}");
    }
}

/// A librdkafka line that says nothing the stage does not say better itself (kept at debug):
/// - a connection's failure (`FAIL`): an outage is one warning from `BrokerWatch`, not one per attempt;
/// - an offset commit's failure (`COMMITFAIL`, e.g. "Waiting for coordinator" while the group finds
///   its coordinator again after a broker restart): each commit's result goes to the code that made
///   it, which says what it means (the processor: "records may be reprocessed"; the loader's Kafka
///   commit is advisory, its offsets of record are in PostgreSQL);
/// - any warning while the broker is known to be down;
/// - a key of the one `--extra-config` that only the other kind of client (consumer or producer) uses.
fn is_noise(level: RDKafkaLogLevel, fac: &str, message: &str, down: bool) -> bool {
    // Severity is the number: 0 (emergency) to 7 (debug); warnings and below are 4 and up.
    let during_outage = down && (level as i32) >= RDKafkaLogLevel::Warning as i32;
    let other_kind = fac == "CONFWARN" && message.contains("will be ignored by this");
    fac == "FAIL" || fac == "COMMITFAIL" || during_outage || other_kind
}

/// A librdkafka severity as a `log` level.
fn log_level(level: RDKafkaLogLevel) -> log::Level {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => log::Level::Error,
        RDKafkaLogLevel::Warning => log::Level::Warn,
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => log::Level::Info,
        RDKafkaLogLevel::Debug => log::Level::Debug,
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

/// For a client used for one request (the admin client that creates topics): remembers librdkafka's
/// last word on a failed connection, since the request itself only says "transport failure" or "timed
/// out" when the reason is a TLS handshake or an authentication the broker refused. (The connection
/// failure is logged at once, from librdkafka's thread; its error event may not have been served yet.)
#[derive(Default)]
pub struct LastError(Mutex<Option<String>>);

impl LastError {
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }

    fn remember(&self, why: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(one_line(why));
        }
    }
}

impl ClientContext for LastError {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            self.remember(message);
            log::debug!(target: "librdkafka", "{fac}: {message}");
        } else {
            log::log!(target: "librdkafka", log_level(level), "{fac}: {message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log::debug!(target: "ecomlogs.kafka", "{error}: {reason}");
        // "1/1 brokers are down" says less than the failure before it.
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if !summary || self.0.lock().map(|g| g.is_none()).unwrap_or(false) {
            self.remember(reason);
        }
    }
}

/// The probe is a producer that never sends (a client whose events can be served).
impl ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Every client of a stage: librdkafka's log lines and errors go through the stage's `BrokerWatch` (the
/// one `ClientContext` of the crate), its partition assignments are counted, and `S` holds what the kind
/// of client needs (delivery counts, the loader's sink, ...), reached through `Deref`.
pub struct StageContext<S> {
    pub watch: Arc<BrokerWatch>,
    pub assignment: Assignment,
    pub state: S,
    /// When this client's event queue was last seen empty (`note_served`): every error it serves was
    /// queued after that moment.
    served: Mutex<Instant>,
}

impl<S> StageContext<S> {
    pub fn with(watch: Arc<BrokerWatch>, state: S) -> Self {
        StageContext {
            watch,
            assignment: Assignment::default(),
            state,
            served: Mutex::new(Instant::now()),
        }
    }

    fn served_at(&self) -> Instant {
        *self.served.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// After polling `client`: if its event queue is empty now, every event queued before this moment has
/// been served, which the broker watch uses to tell a connection error that is news from one that
/// waited in the queue while the client's thread was busy (see `BrokerWatch::lost`).
/// True if it was empty.
pub fn note_served<S>(client: &rdkafka::client::Client<StageContext<S>>) -> bool
where
    StageContext<S>: ClientContext,
{
    let empty = pending_events(client.native_ptr()) == 0;
    if empty {
        *client
            .context()
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    empty
}

/// Events waiting to be served: in the consumer queue of a group member (where librdkafka forwards
/// the main queue), else in the main queue.
fn pending_events(rk: *mut rdkafka::bindings::rd_kafka_t) -> usize {
    use rdkafka::bindings as rd;
    // SAFETY: `rk` is a live client handle; each queue handle got here is released here.
    unsafe {
        let mut q = rd::rd_kafka_queue_get_consumer(rk);
        if q.is_null() {
            q = rd::rd_kafka_queue_get_main(rk);
        }
        if q.is_null() {
            return usize::MAX;
        }
        let n = rd::rd_kafka_queue_length(q);
        rd::rd_kafka_queue_destroy(q);
        n
    }
}

impl<S> std::ops::Deref for StageContext<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state
    }
}

impl<S: Send + Sync> ClientContext for StageContext<S> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.watch.on_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.on_error(error, reason, self.served_at());
    }
}

/// A consumer that only logs and counts its rebalances (readers, log checks).
pub type GroupContext = StageContext<()>;

impl GroupContext {
    pub fn new(watch: Arc<BrokerWatch>) -> Self {
        StageContext::with(watch, ())
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        log_rebalance(rebalance);
        match rebalance {
            Rebalance::Assign(_) => self.assignment.assigned(),
            Rebalance::Revoke(_) | Rebalance::Error(_) => self.assignment.revoked(),
        }
    }
}

/// A producer that counts delivery reports and keeps the first failure so the stage can report it.
pub type DeliveryTracker = StageContext<Deliveries>;

#[derive(Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    first_error: Mutex<Option<KafkaError>>,
}

impl DeliveryTracker {
    pub fn new(watch: Arc<BrokerWatch>) -> Self {
        StageContext::with(watch, Deliveries::default())
    }
}

impl Deliveries {
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

/// The consumer side of a rebalance for a stage that decides where each assigned partition starts
/// (`plan`, which sets the offsets in the list): assign, revoke or give up the partitions, counting the
/// assignments, logging what happened.
pub fn rebalance<S: Send + Sync>(
    ctx: &StageContext<S>,
    consumer: &BaseConsumer<StageContext<S>>,
    err: rdkafka::types::RDKafkaRespErr,
    tpl: &mut rdkafka::TopicPartitionList,
    target: &str,
    plan: impl FnOnce(&mut rdkafka::TopicPartitionList),
) where
    StageContext<S>: ConsumerContext,
{
    use rdkafka::consumer::Consumer;
    use rdkafka::types::RDKafkaRespErr as E;
    match err {
        E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
            plan(tpl);
            if let Err(e) = consumer.assign(tpl) {
                log::error!(target: target, "assigning partitions failed: {e}");
            }
            ctx.assignment.assigned();
        }
        E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
            log_rebalance(&Rebalance::Revoke(tpl));
            if let Err(e) = consumer.unassign() {
                log::error!(target: target, "unassigning partitions failed: {e}");
            }
            ctx.assignment.revoked();
        }
        other => {
            log::warn!(target: "ecomlogs.kafka", "rebalance error: {other:?}");
            let _ = consumer.unassign();
            ctx.assignment.revoked();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> KafkaError {
        KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)
    }

    /// Ends the outage as a record would once the errors are `QUIET_BEFORE_BACK` old.
    fn back(w: &BrokerWatch) {
        let long_ago = Instant::now() - QUIET_BEFORE_BACK * 2;
        w.down.lock().unwrap().now = Some((long_ago, long_ago));
        w.alive();
        assert!(!w.is_down());
    }

    #[test]
    fn an_error_queued_before_the_broker_was_back_is_not_a_new_outage() {
        let w = BrokerWatch::new("test");
        let start = Instant::now();
        w.on_error(refused(), "Connect to ipv4#127.0.0.1:9092 failed", start);
        w.on_error(refused(), "1/1 brokers are down", start);
        assert!(w.is_down() && w.outages() == 1);
        back(&w);
        // A client last served before the end serves what waited in its queue: old news.
        w.on_error(refused(), "Connect to ipv4#127.0.0.1:9092 failed", start);
        assert!(!w.is_down() && w.outages() == 1);
        // A client served since the end: the broker is gone again.
        w.on_error(refused(), "Disconnected", Instant::now());
        assert!(w.is_down() && w.outages() == 2);
        // Other errors are never an outage.
        back(&w);
        let e = KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed);
        w.on_error(e, "not authorized", Instant::now());
        assert!(!w.is_down() && w.outages() == 2);
    }

    /// librdkafka's own queue: a producer pointed at a closed port queues its connection errors until
    /// served; `note_served` tells an empty queue, and the errors it serves reach the watch.
    #[test]
    fn a_client_is_noted_as_served_only_when_its_queue_is_empty() {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, Producer};
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let watch = BrokerWatch::new("test");
        let producer: BaseProducer<DeliveryTracker> = ClientConfig::new()
            .set("bootstrap.servers", addr.to_string())
            .set("reconnect.backoff.ms", "10")
            .create_with_context(DeliveryTracker::new(watch.clone()))
            .unwrap();
        let created = producer.context().served_at();
        let deadline = Instant::now() + Duration::from_secs(20);
        while pending_events(producer.client().native_ptr()) == 0 {
            assert!(Instant::now() < deadline, "no connection error queued");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!note_served(producer.client()));
        assert_eq!(producer.context().served_at(), created);
        assert_eq!(watch.outages(), 0); // queued, not served yet
        super::super::serve(&producer, Duration::ZERO);
        assert!(producer.context().served_at() > created);
        assert!(watch.is_down() && watch.outages() == 1);
    }

    #[test]
    fn per_attempt_failures_are_noise_other_warnings_are_not() {
        let w = RDKafkaLogLevel::Warning;
        let commit = "Offset commit (manual) failed for 1/1 partition(s) in join-state \
                      wait-unassign-to-complete: Local: Waiting for coordinator";
        assert!(is_noise(w, "COMMITFAIL", commit, false));
        assert!(is_noise(
            RDKafkaLogLevel::Error,
            "FAIL",
            "Connect to ipv4#127.0.0.1:9092 failed",
            false
        ));
        assert!(is_noise(w, "CONFWARN", "Configuration property x is a producer property and will be ignored by this consumer instance", false));
        assert!(!is_noise(
            w,
            "CONFWARN",
            "Configuration property x is deprecated",
            false
        ));
        assert!(!is_noise(
            w,
            "MAXPOLL",
            "Application maximum poll interval exceeded",
            false
        ));
        assert!(is_noise(
            w,
            "MAXPOLL",
            "Application maximum poll interval exceeded",
            true
        ));
        // Errors above warning stay visible even during an outage.
        assert!(!is_noise(
            RDKafkaLogLevel::Error,
            "SSL",
            "certificate verify failed",
            true
        ));
    }
}
