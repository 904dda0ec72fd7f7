//! The check itself: reading the record before each stored offset, deciding, and saying so in the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{decide, Fingerprint, LogView, NewLog, Probe, Start, StoredPosition};
use crate::kafka::{BrokerWatch, GroupContext};

/// The verdict on one assigned partition.
#[derive(Debug, Clone)]
pub struct Checked {
    pub partition: i32,
    pub stored: Option<StoredPosition>,
    pub view: LogView,
    pub start: Start,
}

impl Checked {
    /// Where the consumer starts, as librdkafka takes it.
    pub fn offset(&self) -> Offset {
        match self.start {
            Start::Resume(n) => Offset::Offset(n),
            Start::Beginning(_) => Offset::Beginning,
            Start::AfterLoss { log_start, .. } => Offset::Offset(log_start),
        }
    }

    /// A confirmed new log (its stored position must be restarted so that it stops pointing into the
    /// old one); an unverified one keeps it.
    pub fn is_new_log(&self) -> bool {
        matches!(self.start, Start::Beginning(ref why) if !matches!(why, NewLog::NothingStored | NewLog::Unverified))
    }
}

/// Checks assigned partitions against the log, and says in the stage's log what it found: one WARNING
/// per partition on a new log, one ERROR per partition that lost records, one INFO line for the rest.
pub struct LogCheck {
    pub topic: String,
    config: ClientConfig,
    watch: Arc<BrokerWatch>,
    /// The stage's logger.
    target: &'static str,
    /// Where the positions are stored, for messages ("PostgreSQL", "the consumer group").
    store: &'static str,
}

impl LogCheck {
    pub fn new(
        topic: &str,
        config: ClientConfig,
        watch: Arc<BrokerWatch>,
        target: &'static str,
        store: &'static str,
    ) -> Self {
        LogCheck {
            topic: topic.to_string(),
            config,
            watch,
            target,
            store,
        }
    }

    /// Decides where each partition starts; returns the topic ID the broker reports (if any) too.
    pub fn check(
        &self,
        stored: Vec<(i32, Option<StoredPosition>)>,
    ) -> (Option<String>, Vec<Checked>) {
        let probe = LogProbe::new(self.config.clone(), PROBE_TIMEOUT, self.watch.clone())
            .map_err(
                |e| log::warn!(target: self.target, "cannot check the log of {}: {e}", self.topic),
            )
            .ok();
        let id = probe
            .as_ref()
            .and_then(|p| crate::kafka::topic_id(p.client().client(), &self.topic, PROBE_TIMEOUT));
        let checked = stored
            .into_iter()
            .map(|(partition, position)| {
                let mut view = match (&position, &probe) {
                    (Some(s), Some(probe)) => probe.view(&self.topic, partition, s.next_offset),
                    (Some(_), None) => LogView::unknown(Probe::NoAnswer),
                    (None, _) => LogView::unknown(Probe::Missing),
                };
                view.topic_id = id.clone();
                let start = decide(position.as_ref(), &view);
                log::debug!(target: self.target, "log check {}[{partition}]: stored {position:?}, now {view:?}: {start:?}", self.topic);
                Checked {
                    partition,
                    stored: position,
                    view,
                    start,
                }
            })
            .collect();
        (id, checked)
    }

    /// Logs what was found; returns a short description for the assignment line.
    pub fn report(&self, c: &Checked) -> String {
        let here = format!("{}[{}]", self.topic, c.partition);
        let old = c.stored.as_ref().map_or(0, |s| s.next_offset);
        match &c.start {
            Start::Resume(next) => format!("{here} at offset {next} (stored in {})", self.store),
            Start::Beginning(NewLog::NothingStored) => format!(
                "{here} from the beginning of the log (no offset stored in {})",
                self.store
            ),
            Start::Beginning(why) => {
                log::warn!(
                    target: self.target,
                    "{here}: {why} (stored offset {old}; the log now holds offsets {}): reading this partition again from the beginning of the log",
                    describe_range(c.view.low, c.view.high)
                );
                format!("{here} from the beginning of the log ({why})")
            }
            Start::AfterLoss { log_start, lost } => {
                log::error!(
                    target: self.target,
                    "{here}: {lost} records (offsets {old} to {}) were deleted by the broker's retention before they were read: they are lost; continuing from the log start {log_start}",
                    log_start - 1
                );
                format!("{here} at the log start {log_start} ({lost} records lost)")
            }
        }
    }
}

/// How long the log check waits for the broker, per request.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn describe_range(low: Option<i64>, high: Option<i64>) -> String {
    match (low, high) {
        (Some(l), Some(h)) if h > l => format!("{l} to {}", h - 1),
        (Some(_), Some(_)) => "none".into(),
        _ => "unknown".into(),
    }
}

impl LogView {
    fn unknown(at_last: Probe) -> Self {
        LogView {
            topic_id: None,
            low: None,
            high: None,
            at_last,
        }
    }
}

/// Reads the record at `next_offset - 1` of each partition, one partition at a time, with a client of
/// its own (assigned, never subscribed: it joins no group and commits nothing). `config` is the stage's
/// consumer configuration (security settings included).
pub struct LogProbe {
    consumer: BaseConsumer<GroupContext>,
    timeout: Duration,
}

impl LogProbe {
    /// `watch`: the stage's, so that a broker outage during the check is reported like any other.
    pub fn new(
        mut config: ClientConfig,
        timeout: Duration,
        watch: Arc<BrokerWatch>,
    ) -> Result<Self, KafkaError> {
        config
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .set("queued.min.messages", "1");
        // librdkafka wants a group for assign(); this client never joins it nor commits to it.
        Ok(LogProbe {
            consumer: config.create_with_context(GroupContext::new(watch))?,
            timeout,
        })
    }

    /// The view of `topic[partition]` around `next_offset`.
    pub fn view(&self, topic: &str, partition: i32, next_offset: i64) -> LogView {
        let (low, high) = match self
            .consumer
            .fetch_watermarks(topic, partition, self.timeout)
        {
            Ok((l, h)) => (Some(l), Some(h)),
            Err(_) => (None, None),
        };
        // Past the end the broker may stay silent instead of answering "out of range": wait less there.
        let past_end = high.is_some_and(|h| h < next_offset);
        let wait = if past_end {
            self.timeout.min(Duration::from_secs(2))
        } else {
            self.timeout
        };
        LogView {
            topic_id: None,
            low,
            high,
            at_last: self.record_at(topic, partition, next_offset - 1, wait),
        }
    }

    fn record_at(&self, topic: &str, partition: i32, offset: i64, wait: Duration) -> Probe {
        if offset < 0 {
            return Probe::Missing;
        }
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .and_then(|()| self.consumer.assign(&tpl))
        {
            log::warn!(target: "ecomlogs.loader", "cannot read {topic}[{partition}] at {offset}: {e}");
            return Probe::NoAnswer;
        }
        let deadline = Instant::now() + wait;
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Probe::NoAnswer;
            }
            let polled = self.consumer.poll(left.min(Duration::from_millis(100)));
            crate::kafka::note_served(self.consumer.client());
            match polled {
                Some(Ok(m)) if m.partition() == partition && m.topic() == topic => {
                    break if m.offset() == offset {
                        Probe::Found(Fingerprint::of_message(&m))
                    } else {
                        Probe::Missing // the first record there is a later one
                    };
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Probe::Missing,
                Some(Err(e)) if is_out_of_range(&e) => break Probe::Missing,
                // Transport hiccups: keep asking until the deadline.
                _ => {}
            }
        };
        let _ = self.consumer.unassign();
        outcome
    }

    pub fn client(&self) -> &BaseConsumer<GroupContext> {
        &self.consumer
    }
}

fn is_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset) | Some(RDKafkaErrorCode::OffsetOutOfRange)
    )
}
