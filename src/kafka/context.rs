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
    /// (start of the outage, last connection error seen in it)
    down: Mutex<Option<(Instant, Instant)>>,
    /// `down.is_some()`, readable without the lock (`alive` is called for every record).
    is_down: AtomicBool,
    outages: AtomicU64,
    /// When each kind of error was last logged (a repeat within `REPEAT_QUIET` goes to debug).
    logged: Mutex<HashMap<i32, Instant>>,
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

impl BrokerWatch {
    /// One per stage, shared by all its clients (consumers and producers).
    pub fn new(target: &'static str) -> Arc<Self> {
        Arc::new(BrokerWatch {
            target,
            down: Mutex::new(None),
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
        match *g {
            Some((since, last)) if last.elapsed() >= NO_ERRORS_FOR => {
                *g = None;
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

    fn lost(&self, why: &str) {
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match g.as_mut() {
            None => {
                *g = Some((now, now));
                self.is_down.store(true, Ordering::Relaxed);
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
        if !self.is_down() {
            return;
        }
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, last)) = *g {
            if last.elapsed() >= QUIET_BEFORE_BACK {
                *g = None;
                self.is_down.store(false, Ordering::Relaxed);
                log::info!(target: self.target, "the broker is reachable again (after {:.1}s)", since.elapsed().as_secs_f64());
            }
        }
    }

    /// For `ClientContext::error`: connection failures count as an outage; the rest is kept for the
    /// consumer loop (see `take_error_text`) and logged, once per `REPEAT_QUIET` for the same code.
    pub fn on_error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::PartitionEOF) {
            log::debug!(target: self.target, "{reason}"); // not an error: the stage is caught up
            return;
        }
        if is_connection_error(code) {
            self.lost(&one_line(reason));
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
}

impl<S> StageContext<S> {
    pub fn with(watch: Arc<BrokerWatch>, state: S) -> Self {
        StageContext {
            watch,
            assignment: Assignment::default(),
            state,
        }
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
        self.watch.on_error(error, reason);
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
