//! Reading a topic from outside the pipeline, for notebooks and the dashboard: its partitions' offsets
//! (and a consumer group's committed position, for lag), and its records up to the end of each partition
//! with their headers. The client is assigned, never subscribed: it joins no group and commits nothing,
//! so the stages never notice it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{BrokerWatch, GroupContext};
use crate::config::{ClientKind, KafkaSettings};
use crate::error::{Error, Result};

/// A group name for a reader that never joins it (librdkafka wants one to assign partitions).
const READER_GROUP: &str = "ecomlogs-reader";

/// One partition's offsets: the first record kept, the next offset to be written, and where `group`
/// stands (None: no commit, or no group asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    pub committed: Option<i64>,
}

/// One record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What to read: from `start` (per partition; the log start where absent), at most `last` records of
/// each partition (the latest ones), with or without keys and values.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub start: BTreeMap<i32, i64>,
    pub last: Option<i64>,
    pub values: bool,
    pub timeout: Duration,
}

/// The records read, and where to continue next time. `restarted`: partitions whose log no longer
/// reaches the asked start (a reset broker, a re-created topic), read again from their beginning.
#[derive(Debug, Clone, Default)]
pub struct TopicRead {
    pub records: Vec<Record>,
    pub next: BTreeMap<i32, i64>,
    pub restarted: Vec<i32>,
}

struct Reader {
    consumer: BaseConsumer<GroupContext>,
    servers: String,
}

impl Reader {
    fn new(settings: &KafkaSettings, group: Option<&str>) -> Result<Self> {
        let kind = ClientKind::Consumer {
            group: group.unwrap_or(READER_GROUP),
        };
        let consumer = settings
            .client(kind, &[("fetch.wait.max.ms", "50")])
            // End-of-partition events and lost connections are logged quietly, once.
            .create_with_context(GroupContext::new(BrokerWatch::new("ecomlogs.kafka")))
            .map_err(|e| Error::kafka("creating a Kafka reader", e))?;
        Ok(Reader {
            consumer,
            servers: settings.bootstrap_servers.clone(),
        })
    }

    /// The topic's partitions; none when it does not exist (yet).
    fn partitions(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::kafka(format!("cannot reach the broker at {}", self.servers), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(Vec::new());
        };
        if t.error().is_some() {
            return Ok(Vec::new());
        }
        let mut out: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        out.sort_unstable();
        Ok(out)
    }

    fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| Error::kafka(format!("reading the offsets of {topic}[{partition}]"), e))
    }
}

/// Every partition's offsets, and `group`'s committed position in each when given.
pub fn topic_offsets(
    settings: &KafkaSettings,
    topic: &str,
    group: Option<&str>,
    timeout: Duration,
) -> Result<Vec<PartitionOffsets>> {
    let reader = Reader::new(settings, group)?;
    let mut out = Vec::new();
    for partition in reader.partitions(topic, timeout)? {
        let (low, high) = reader.watermarks(topic, partition, timeout)?;
        out.push(PartitionOffsets {
            partition,
            low,
            high,
            committed: None,
        });
    }
    if group.is_some() && !out.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for p in &out {
            tpl.add_partition(topic, p.partition);
        }
        let committed = reader
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| Error::kafka(format!("reading the committed offsets of {topic}"), e))?;
        for p in &mut out {
            p.committed =
                committed
                    .find_partition(topic, p.partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(n) => Some(n),
                        _ => None,
                    });
        }
    }
    Ok(out)
}

/// Reads `topic` up to the end of every partition (as it was when the read began). A read that runs out
/// of time returns what it has, with `next` where it stopped, and says so in the log.
///
/// The end of a partition is librdkafka's end-of-partition event, not the watermark: the dev broker
/// reports as high watermark the base offset of the last batch plus one, short of the last record. A
/// partition asked for an offset past the end of its log (a reset broker, a re-created topic) is read
/// again from its beginning: Apache Kafka says so (the first record comes before the asked offset, after
/// librdkafka's reset), the dev broker stays silent.
pub fn read_to_end(settings: &KafkaSettings, topic: &str, req: &ReadRequest) -> Result<TopicRead> {
    let reader = Reader::new(settings, None)?;
    let mut out = TopicRead::default();
    let mut starts = BTreeMap::new();
    for partition in reader.partitions(topic, req.timeout)? {
        let (low, high) = reader.watermarks(topic, partition, req.timeout)?;
        let mut start = req.start.get(&partition).copied().unwrap_or(low).max(low);
        if let Some(n) = req.last {
            start = start.max(high.saturating_sub(n));
        }
        out.next.insert(partition, start);
        starts.insert(partition, Offset::Offset(start));
    }
    let deadline = Instant::now() + req.timeout;
    let restarted = collect(&reader.consumer, topic, req, &starts, deadline, &mut out)?;
    if !restarted.is_empty() {
        out.records.retain(|r| !restarted.contains(&r.partition));
        let mut again = BTreeMap::new();
        for &p in &restarted {
            let (low, _high) = reader.watermarks(topic, p, req.timeout)?;
            out.next.insert(p, low);
            again.insert(p, Offset::Beginning);
        }
        collect(&reader.consumer, topic, req, &again, deadline, &mut out)?;
        out.restarted = restarted;
    }
    Ok(out)
}

/// How long a partition may stay silent after its assignment (no record, no end-of-partition event)
/// before its start counts as past the end of the log.
const SILENCE: Duration = Duration::from_secs(2);

/// Reads the partitions in `starts` to their end; returns those whose start is past the end of the log.
fn collect(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    req: &ReadRequest,
    starts: &BTreeMap<i32, Offset>,
    deadline: Instant,
    out: &mut TopicRead,
) -> Result<Vec<i32>> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &offset) in starts {
        tpl.add_partition_offset(topic, p, offset)
            .map_err(|e| Error::kafka("assigning a partition", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka(format!("reading {topic}"), e))?;
    let assigned = Instant::now();
    let mut pending: BTreeSet<i32> = starts.keys().copied().collect();
    let mut heard = BTreeSet::new();
    let mut restarted = Vec::new();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::warn!(target: "ecomlogs.kafka", "reading {topic}: gave up after {:?} with {} partition(s) not read to the end; returning what was read", req.timeout, pending.len());
            break;
        }
        if assigned.elapsed() >= SILENCE {
            let silent: Vec<i32> = pending.difference(&heard).copied().collect();
            for p in silent {
                pending.remove(&p);
                restarted.push(p);
            }
            continue;
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(m)) if pending.contains(&m.partition()) => {
                let p = m.partition();
                let asked = match starts[&p] {
                    Offset::Offset(n) => n,
                    _ => 0,
                };
                if heard.insert(p) && m.offset() < asked {
                    pending.remove(&p);
                    restarted.push(p);
                    continue;
                }
                out.records.push(owned(&m, req.values));
                out.next.insert(p, m.offset() + 1);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                heard.insert(p);
                pending.remove(&p);
            }
            // Transport hiccups: librdkafka retries by itself; keep polling until the deadline.
            _ => {}
        }
    }
    let _ = consumer.unassign();
    Ok(restarted)
}

fn owned(m: &rdkafka::message::BorrowedMessage<'_>, values: bool) -> Record {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().filter(|_| values).map(<[u8]>::to_vec),
        value: m.payload().filter(|_| values).map(<[u8]>::to_vec),
        headers,
    }
}
