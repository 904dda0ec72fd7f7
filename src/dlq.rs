//! Dead letters you can act on: read the dead-letter topic (every partition, from its beginning to
//! its end), count by stage and reason with a few samples, and replay the chosen ones to the topic they
//! came from (their `source.topic` header) with their original key and value and a header saying which
//! dead letter they were. Replays are safe to repeat: the loader skips an `event_id` already stored.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{ClientKind, KafkaSettings};
use crate::dead_letter::headers;
use crate::error::{Error, Result};
use crate::kafka::{send_blocking, BrokerWatch, DeliveryTracker, GroupContext};
use crate::stage::{StopToken, TICK};

/// The header a replayed record carries: `<dead-letter topic>/<partition>/<offset>`.
pub const REPLAYED_FROM: &str = "ecomlogs.replayed_from";

/// One record of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Every header, in order (values as text; not UTF-8 shown lossily).
    pub headers: Vec<(String, Option<String>)>,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn reason(&self) -> &str {
        self.header(headers::REASON).unwrap_or("unknown")
    }

    pub fn stage(&self) -> &str {
        self.header(headers::STAGE).unwrap_or("unknown")
    }
}

/// Which dead letters to act on (empty lists: all).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reasons: Vec<String>,
    pub stages: Vec<String>,
    /// Only dead letters written at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        (self.reasons.is_empty() || self.reasons.iter().any(|r| r == d.reason()))
            && (self.stages.is_empty() || self.stages.iter().any(|s| s == d.stage()))
            && self
                .since_ms
                .is_none_or(|since| d.timestamp_ms.is_some_and(|t| t >= since))
    }
}

/// Counts by (stage, reason) and the first few samples of each.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Dead letters read (before the filter).
    pub scanned: u64,
    pub counts: BTreeMap<(String, String), u64>,
    pub samples: Vec<DeadLetter>,
}

/// How to read the topic: its name, and when to stop.
#[derive(Debug, Clone)]
pub struct Scan {
    pub topic: String,
    /// Keep reading after the end for new dead letters, until none came for this long.
    pub until_idle: Option<Duration>,
    /// How long to wait for the broker (metadata, first fetch).
    pub timeout: Duration,
}

fn reader(settings: &KafkaSettings, scan: &Scan) -> Result<BaseConsumer<GroupContext>> {
    let consumer: BaseConsumer<GroupContext> = settings
        .client(
            ClientKind::Consumer {
                group: "ecomlogs-dlq",
            },
            &[],
        )
        .create_with_context(GroupContext::new(BrokerWatch::new("ecomlogs.dlq")))
        .map_err(|e| Error::kafka("creating the Kafka consumer", e))?;
    let md = consumer
        .fetch_metadata(Some(&scan.topic), scan.timeout)
        .map_err(|e| Error::kafka(format!("reading the metadata of {}", scan.topic), e))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == scan.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(Error::Config(format!(
            "the dead-letter topic {} does not exist on this broker",
            scan.topic
        )));
    }
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(&scan.topic, p, Offset::Beginning)
            .map_err(|e| Error::kafka("building the partition list", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka(format!("reading {}", scan.topic), e))?;
    Ok(consumer)
}

fn to_dead_letter(m: &rdkafka::message::BorrowedMessage<'_>) -> DeadLetter {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|Header { key, value }| {
                    (
                        key.to_string(),
                        value.map(|v| String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    DeadLetter {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Reports how many dead letters were read so far, once a `TICK`; an error (`Interrupted`) stops.
pub type Tick<'a> = &'a mut dyn FnMut(u64) -> Result<()>;

/// Calls `each` with every dead letter, partition by partition in offset order, until every partition
/// has been read to its end (and, with `until_idle`, nothing new came for that long), or `token` stops.
pub fn scan(
    settings: &KafkaSettings,
    scan: &Scan,
    token: &StopToken,
    tick: Tick<'_>,
    each: &mut dyn FnMut(DeadLetter) -> Result<()>,
) -> Result<()> {
    let consumer = reader(settings, scan)?;
    let partitions = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    let mut at_end: HashSet<i32> = HashSet::new();
    let (start, mut last_record) = (Instant::now(), Instant::now());
    let (mut last_tick, mut read) = (Instant::now(), 0u64);
    while !token.is_stopped() {
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            tick(read)?;
        }
        match consumer.poll(TICK) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                last_record = Instant::now();
                read += 1;
                each(to_dead_letter(&m))?;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => {
                log::debug!(target: "ecomlogs.dlq", "while reading {}: {e}", scan.topic);
            }
            None => {}
        }
        if at_end.len() >= partitions {
            match scan.until_idle {
                None => return Ok(()),
                Some(idle) if last_record.elapsed() >= idle => return Ok(()),
                Some(_) => {}
            }
        } else if at_end.is_empty() && last_record == start && start.elapsed() > scan.timeout {
            return Err(Error::kafka(
                format!(
                    "reading {} (no answer for {:.0}s)",
                    scan.topic,
                    scan.timeout.as_secs_f64()
                ),
                rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ),
            ));
        }
    }
    Ok(())
}

/// Counts the dead letters that match `filter` by (stage, reason), keeping the first `samples` of each.
pub fn inspect(
    settings: &KafkaSettings,
    s: &Scan,
    filter: &Filter,
    samples: usize,
    token: &StopToken,
    tick: Tick<'_>,
) -> Result<Report> {
    let mut report = Report::default();
    scan(settings, s, token, tick, &mut |d| {
        report.scanned += 1;
        if filter.matches(&d) {
            let n = report
                .counts
                .entry((d.stage().to_string(), d.reason().to_string()))
                .or_default();
            *n += 1;
            if *n as usize <= samples {
                report.samples.push(d);
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub scanned: u64,
    pub matched: u64,
    /// Sent back (acknowledged), or that would be with `dry_run`.
    pub replayed: u64,
    /// Matched but without a `source.topic` header: left where they are.
    pub no_source: u64,
    pub by_topic: BTreeMap<String, u64>,
    pub dry_run: bool,
}

/// Sends each dead letter that matches `filter` back to its `source.topic` (original key and value,
/// plus `REPLAYED_FROM`), and waits until every one is acknowledged. `dry_run`: counts only.
pub fn replay(
    settings: &KafkaSettings,
    s: &Scan,
    filter: &Filter,
    dry_run: bool,
    token: &StopToken,
    tick: Tick<'_>,
) -> Result<ReplayStats> {
    let producer: BaseProducer<DeliveryTracker> = settings
        .client(ClientKind::Producer, crate::dead_letter::PRODUCER)
        .create_with_context(DeliveryTracker::new(BrokerWatch::new("ecomlogs.dlq")))
        .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
    let mut stats = ReplayStats {
        dry_run,
        ..ReplayStats::default()
    };
    scan(settings, s, token, tick, &mut |d| {
        stats.scanned += 1;
        if !filter.matches(&d) {
            return Ok(());
        }
        stats.matched += 1;
        let Some(target) = d.header(headers::SOURCE_TOPIC).map(str::to_string) else {
            stats.no_source += 1;
            return Ok(());
        };
        if target == s.topic {
            stats.no_source += 1;
            return Ok(());
        }
        if !dry_run {
            let from = format!("{}/{}/{}", s.topic, d.partition, d.offset);
            let headers = OwnedHeaders::new().insert(Header {
                key: REPLAYED_FROM,
                value: Some(from.as_str()),
            });
            let mut r = BaseRecord::to(&target).headers(headers);
            if let Some(v) = d.value.as_deref() {
                r = r.payload(v);
            }
            if let Some(k) = d.key.as_deref() {
                r = r.key(k);
            }
            send_blocking(&producer, r)
                .map_err(|e| Error::kafka(format!("replaying to {target}"), e))?;
        }
        stats.replayed += 1;
        *stats.by_topic.entry(target).or_default() += 1;
        Ok(())
    })?;
    let acked = "waiting for the replayed records to be acknowledged";
    crate::kafka::flush(&producer, Duration::from_secs(60)).map_err(|e| Error::kafka(acked, e))?;
    if let Some(e) = producer.context().take_error() {
        return Err(Error::kafka(acked, e));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, stage: &str, ts: i64) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset: 1,
            timestamp_ms: Some(ts),
            key: None,
            value: None,
            headers: vec![
                ("reason".into(), Some(reason.into())),
                ("stage".into(), Some(stage.into())),
            ],
        }
    }

    #[test]
    fn filter_by_reason_stage_and_time() {
        let d = letter("database_rejected", "loader", 1_000);
        assert!(Filter::default().matches(&d));
        let f = Filter {
            reasons: vec!["database_rejected".into()],
            stages: vec!["loader".into()],
            since_ms: Some(1_000),
        };
        assert!(f.matches(&d));
        assert!(!Filter {
            since_ms: Some(1_001),
            ..f.clone()
        }
        .matches(&d));
        assert!(!Filter {
            reasons: vec!["bad_json".into()],
            ..f.clone()
        }
        .matches(&d));
        assert!(!Filter {
            stages: vec!["processor".into()],
            ..f
        }
        .matches(&d));
    }
}
