//! Reading a topic from outside the pipeline: the one topic reader, used by the dead-letter commands
//! (inspect, replay), by notebooks and by the dashboard. It reads each partition from a given offset to
//! its end (and, when asked, keeps following it), hands every record to a callback, and says where to
//! continue next time. The client is assigned, never subscribed: it joins no group, so the stages never
//! notice it; it commits only when its caller asks (a replay's checkpoint).
//!
//! The end of a partition is librdkafka's end-of-partition event, not the watermark: the dev broker
//! reports as high watermark the base offset of the last batch plus one, short of the last record. A
//! partition asked for an offset past the end of its log (a reset broker, a re-created topic) is read
//! again from its beginning: Apache Kafka says so (the first record comes before the asked offset, after
//! librdkafka's reset to the earliest), the dev broker stays silent (a partition that says nothing for
//! `SILENCE` is assigned again at its beginning).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{BrokerWatch, GroupContext};
use crate::config::{ClientKind, KafkaSettings};
use crate::error::{Error, Result};
use crate::stage::{StopToken, TICK};

/// A group name for a reader that never joins it (librdkafka wants one to assign partitions).
const READER_GROUP: &str = "ecomlogs-reader";

/// How long a partition may stay silent after its assignment (no record, no end-of-partition event)
/// before its start counts as past the end of the log.
const SILENCE: Duration = Duration::from_secs(2);

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

impl Record {
    /// An owned copy of a record (without key and value unless `values`).
    pub fn of(m: &BorrowedMessage<'_>, values: bool) -> Record {
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

    /// A header's value as text (not UTF-8: shown lossily).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// How far a scan goes.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Per partition, the offset to start at (absent: the beginning of the log).
    pub start: BTreeMap<i32, i64>,
    /// Once every partition has been read to its end, keep following the topic until no record the
    /// callback calls active came for this long (None: stop at the end).
    pub follow: Option<Duration>,
    /// Waiting this long for the first answer of the broker is an error (nothing could be read).
    pub timeout: Duration,
    /// Give up after this long in all and return what was read (`ScanEnd::complete` false).
    pub deadline: Option<Duration>,
}

impl Scan {
    /// To the end of every partition, from the beginning of each.
    pub fn to_end(timeout: Duration) -> Scan {
        Scan {
            start: BTreeMap::new(),
            follow: None,
            timeout,
            deadline: None,
        }
    }
}

/// Where a scan stopped. `next`: per partition, the offset to continue from; `restarted`: partitions
/// whose log no longer reached the asked start and were read from their beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanEnd {
    pub next: BTreeMap<i32, i64>,
    pub restarted: Vec<i32>,
    /// Every partition was read to its end (not stopped, not out of time).
    pub complete: bool,
}

/// Reports how many records were read so far, once a `TICK`; an error (`Interrupted`) stops the scan.
pub type Tick<'a> = &'a mut dyn FnMut(u64) -> Result<()>;

/// A record read: the callback says whether it counts as activity (for `Scan::follow`).
pub type Each<'a> = &'a mut dyn FnMut(&BorrowedMessage<'_>) -> Result<bool>;

/// An assigned (never subscribed) consumer of one topic.
pub struct Reader {
    consumer: BaseConsumer<GroupContext>,
    servers: String,
    group: Option<String>,
}

impl Reader {
    /// A reader; `group` names the consumer group whose commits it reads or writes (none: it never
    /// commits).
    pub fn new(settings: &KafkaSettings, group: Option<&str>) -> Result<Self> {
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
            group: group.map(str::to_string),
        })
    }

    /// The topic's partitions, in order; None when the topic does not exist.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Option<Vec<i32>>> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::kafka(format!("cannot reach the broker at {}", self.servers), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Ok(None);
        }
        let mut out: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        out.sort_unstable();
        Ok(Some(out))
    }

    /// The partitions of a topic that must exist (a `Config` error naming it otherwise).
    pub fn existing_partitions(
        &self,
        topic: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<Vec<i32>> {
        self.partitions(topic, timeout)?.ok_or_else(|| {
            Error::Config(format!(
                "{what} {topic} does not exist on the broker at {}",
                self.servers
            ))
        })
    }

    /// (first offset, next offset) of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| Error::kafka(format!("reading the offsets of {topic}[{partition}]"), e))
    }

    /// The reader's group's committed offsets for these partitions (absent: none committed).
    pub fn committed(
        &self,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| Error::kafka(format!("reading the committed offsets of {topic}"), e))?;
        Ok(partitions
            .iter()
            .filter_map(|&p| match committed.find_partition(topic, p)?.offset() {
                Offset::Offset(n) => Some((p, n)),
                _ => None,
            })
            .collect())
    }

    /// Commits `next` (per partition) for the reader's group, and waits for the broker to take it.
    pub fn commit(&self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<()> {
        if self.group.is_none() || next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))
                .map_err(|e| Error::kafka("building the partition list", e))?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| Error::kafka(format!("committing the position in {topic}"), e))
    }

    /// Reads `partitions` of `topic` as `scan` says, calling `each` with every record in offset order
    /// per partition, until every partition has been read to its end (and, with `follow`, nothing active
    /// came for that long), `token` stops, or `tick` fails.
    pub fn scan(
        &self,
        topic: &str,
        partitions: &[i32],
        scan: &Scan,
        token: &StopToken,
        tick: Tick<'_>,
        each: Each<'_>,
    ) -> Result<ScanEnd> {
        let starts = self.starts(topic, partitions, scan)?;
        let mut end = ScanEnd {
            next: starts.clone(),
            ..ScanEnd::default()
        };
        self.assign(topic, &end.next, &BTreeSet::new())?;
        let began = Instant::now();
        let mut assigned = began;
        let mut heard: BTreeSet<i32> = BTreeSet::new();
        let mut at_end: BTreeSet<i32> = BTreeSet::new();
        let (mut last_active, mut last_tick, mut read) = (began, began, 0u64);
        let result = loop {
            if token.is_stopped() {
                break Ok(());
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                if let Err(e) = tick(read) {
                    break Err(e);
                }
            }
            if scan.deadline.is_some_and(|d| began.elapsed() >= d) {
                log::warn!(target: "ecomlogs.kafka", "reading {topic}: gave up after {:?} with {} partition(s) not read to the end; returning what was read", began.elapsed(), partitions.len() - at_end.len());
                break Ok(());
            }
            if at_end.len() == partitions.len() {
                match scan.follow {
                    Some(idle) if last_active.elapsed() < idle => {}
                    _ => {
                        end.complete = true;
                        break Ok(());
                    }
                }
            }
            if heard.is_empty() && began.elapsed() > scan.timeout {
                break Err(Error::kafka(
                    format!(
                        "reading {topic} at {} (no answer for {:.0}s)",
                        self.servers,
                        scan.timeout.as_secs_f64()
                    ),
                    KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                    ),
                ));
            }
            if assigned.elapsed() >= SILENCE
                && self.restart_silent(topic, partitions, &mut heard, &mut end)?
            {
                assigned = Instant::now();
            }
            let polled = self.consumer.poll(TICK);
            super::note_served(self.consumer.client());
            match polled {
                Some(Ok(m)) => {
                    let p = m.partition();
                    if heard.insert(p) && m.offset() < starts.get(&p).copied().unwrap_or(0) {
                        end.restarted.push(p); // librdkafka reset a start past the end to the beginning
                    }
                    at_end.remove(&p);
                    read += 1;
                    end.next.insert(p, m.offset() + 1);
                    match each(&m) {
                        Ok(true) => last_active = Instant::now(),
                        Ok(false) => {}
                        Err(e) => break Err(e),
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    heard.insert(p);
                    at_end.insert(p);
                }
                // Transport hiccups: librdkafka retries by itself; keep polling.
                Some(Err(e)) => {
                    log::debug!(target: "ecomlogs.kafka", "while reading {topic}: {e}");
                }
                None => {}
            }
        };
        let _ = self.consumer.unassign();
        end.restarted.sort_unstable();
        end.restarted.dedup();
        result.map(|()| end)
    }

    /// Where each partition's scan starts: the scan's start for it, never before the log's start.
    fn starts(&self, topic: &str, partitions: &[i32], scan: &Scan) -> Result<BTreeMap<i32, i64>> {
        let mut starts = BTreeMap::new();
        for &p in partitions {
            let (low, _) = self.watermarks(topic, p, scan.timeout)?;
            starts.insert(p, scan.start.get(&p).copied().unwrap_or(low).max(low));
        }
        Ok(starts)
    }

    /// The broker answered (metadata, watermarks) but said nothing of the partitions not `heard` from,
    /// asked for a start past the end of their log: the dev broker's answer to a reset log. They are
    /// read again from their beginning and counted as restarted. True if there were any.
    fn restart_silent(
        &self,
        topic: &str,
        partitions: &[i32],
        heard: &mut BTreeSet<i32>,
        end: &mut ScanEnd,
    ) -> Result<bool> {
        let silent: BTreeSet<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !heard.contains(p))
            .collect();
        if silent.is_empty() {
            return Ok(false);
        }
        for &p in &silent {
            end.restarted.push(p);
            heard.insert(p);
        }
        self.assign(topic, &end.next, &silent)?;
        Ok(true)
    }

    /// Assigns every partition at its `next` offset, those in `beginning` at the start of their log.
    fn assign(
        &self,
        topic: &str,
        next: &BTreeMap<i32, i64>,
        beginning: &BTreeSet<i32>,
    ) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            let offset = if beginning.contains(&p) {
                Offset::Beginning
            } else {
                Offset::Offset(o)
            };
            tpl.add_partition_offset(topic, p, offset)
                .map_err(|e| Error::kafka("assigning a partition", e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(format!("reading {topic}"), e))
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
    let partitions = reader.partitions(topic, timeout)?.unwrap_or_default();
    let committed = match group {
        Some(_) if !partitions.is_empty() => reader.committed(topic, &partitions, timeout)?,
        _ => BTreeMap::new(),
    };
    partitions
        .into_iter()
        .map(|partition| {
            let (low, high) = reader.watermarks(topic, partition, timeout)?;
            Ok(PartitionOffsets {
                partition,
                low,
                high,
                committed: committed.get(&partition).copied(),
            })
        })
        .collect()
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

/// The records read, and where to continue next time (see `ScanEnd`).
#[derive(Debug, Clone, Default)]
pub struct TopicRead {
    pub records: Vec<Record>,
    pub next: BTreeMap<i32, i64>,
    pub restarted: Vec<i32>,
}

/// Reads `topic` up to the end of every partition into memory (nothing when it does not exist yet).
/// A read that runs out of time (`req.timeout` in all) returns what it has, with `next` where it
/// stopped, and says so in the log.
pub fn read_to_end(settings: &KafkaSettings, topic: &str, req: &ReadRequest) -> Result<TopicRead> {
    let reader = Reader::new(settings, None)?;
    let Some(partitions) = reader.partitions(topic, req.timeout)? else {
        return Ok(TopicRead::default());
    };
    let mut start = req.start.clone();
    if let Some(n) = req.last {
        for &p in &partitions {
            let (_, high) = reader.watermarks(topic, p, req.timeout)?;
            let s = start.entry(p).or_insert(0);
            *s = (*s).max(high.saturating_sub(n));
        }
    }
    let scan = Scan {
        start,
        follow: None,
        timeout: req.timeout,
        deadline: Some(req.timeout),
    };
    let mut records = Vec::new();
    let end = reader.scan(
        topic,
        &partitions,
        &scan,
        &StopToken::new(),
        &mut |_| Ok(()),
        &mut |m| {
            records.push(Record::of(m, req.values));
            Ok(true)
        },
    )?;
    Ok(TopicRead {
        records,
        next: end.next,
        restarted: end.restarted,
    })
}
