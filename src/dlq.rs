//! Dead letters you can act on: read the dead-letter topic (every partition, from its beginning to its
//! end, with the one topic reader), count by stage and reason with a few samples, and replay the chosen
//! ones to the topic they came from (their `source.topic` header) with their original key and value.
//!
//! A replay cannot feed itself:
//! - a replayed record carries its lineage (`ecomlogs.replayed_from`, `ecomlogs.replay_generation`);
//!   the stages keep it on whatever they make of the record, so a dead letter made from a replayed
//!   record says so, and replay leaves it where it is unless asked (`include_replayed`);
//! - with `until_idle`, only dead letters it would replay keep it following the topic: its own
//!   consequences never do, and a record it replayed in this run is never sent again in the same run;
//! - it is resumable: its position in the dead-letter topic is committed to a consumer group of its own
//!   (one per reason/stage filter) once what it sent before is acknowledged, so a replay that is killed
//!   continues where it stopped when run again, and a replay run twice sends nothing the second time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Header, Headers, Message};
use rdkafka::producer::{BaseProducer, Producer};

use crate::config::{ClientKind, KafkaSettings};
use crate::dead_letter::{headers, Lineage};
use crate::error::{Error, Result};
use crate::kafka::{self, BrokerWatch, DeliveryTracker, Out, Reader, Scan, Tick, Topic};
use crate::stage::{Schedule, StopToken};

/// The header a replayed record carries: `<dead-letter topic>/<partition>/<offset>`.
pub const REPLAYED_FROM: &str = headers::REPLAYED_FROM;

/// Replay commits its position this often (after the records sent before are acknowledged).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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
    pub fn of(m: &BorrowedMessage<'_>) -> DeadLetter {
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

    /// How many replays deep the record it was made from is (0: an original).
    pub fn generation(&self) -> u32 {
        match self.header(headers::REPLAYED_FROM) {
            None => 0,
            Some(_) => self
                .header(headers::REPLAY_GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(1),
        }
    }
}

/// Which dead letters to act on (empty lists: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub reasons: Vec<String>,
    pub stages: Vec<String>,
    /// Only dead letters written at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

/// What `Filter::matches` needs of a dead letter (borrowed from a record, or from a `DeadLetter`).
struct Facts<'a> {
    reason: &'a [u8],
    stage: &'a [u8],
    timestamp_ms: Option<i64>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.matches_facts(&Facts {
            reason: d.reason().as_bytes(),
            stage: d.stage().as_bytes(),
            timestamp_ms: d.timestamp_ms,
        })
    }

    fn matches_facts(&self, f: &Facts<'_>) -> bool {
        (self.reasons.is_empty() || self.reasons.iter().any(|r| r.as_bytes() == f.reason))
            && (self.stages.is_empty() || self.stages.iter().any(|s| s.as_bytes() == f.stage))
            && self
                .since_ms
                .is_none_or(|since| f.timestamp_ms.is_some_and(|t| t >= since))
    }

    /// The consumer group that holds a replay's position for this filter: one per set of reasons and
    /// stages (`since` only narrows what a run sends, it does not name a replay).
    pub fn checkpoint_group(&self) -> String {
        let mut name = String::from("ecomlogs-dlq-replay");
        for (label, values) in [("reason", &self.reasons), ("stage", &self.stages)] {
            if !values.is_empty() {
                let mut v = values.clone();
                v.sort();
                v.dedup();
                name.push_str(&format!(".{label}={}", v.join(",")));
            }
        }
        name
    }
}

/// How to read the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Source {
    pub topic: String,
    /// How long to wait for the broker (metadata, first fetch).
    pub timeout: Duration,
}

/// Counts by (stage, reason) and the first few samples of each.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Dead letters read (before the filter).
    pub scanned: u64,
    pub counts: BTreeMap<(String, String), u64>,
    /// Of those that match, how many were made from a replayed record.
    pub from_replays: u64,
    pub samples: Vec<DeadLetter>,
}

fn reader(
    settings: &KafkaSettings,
    src: &Source,
    group: Option<&str>,
) -> Result<(Reader, Vec<i32>)> {
    let reader = Reader::new(settings, group)?;
    let parts = reader.existing_partitions(&src.topic, "the dead-letter topic", src.timeout)?;
    Ok((reader, parts))
}

/// Calls `each` with every dead letter, partition by partition in offset order, up to the end of every
/// partition (or until `token` stops).
pub fn scan(
    settings: &KafkaSettings,
    src: &Source,
    token: &StopToken,
    tick: Tick<'_>,
    each: &mut dyn FnMut(DeadLetter) -> Result<()>,
) -> Result<()> {
    let (reader, parts) = reader(settings, src, None)?;
    reader.scan(
        &src.topic,
        &parts,
        &Scan::to_end(src.timeout),
        token,
        tick,
        &mut |m| each(DeadLetter::of(m)).map(|()| true),
    )?;
    Ok(())
}

/// The latest `limit` dead letters that match `filter` (None: all), oldest first (by time, then partition
/// and offset); none when the topic does not exist yet (reading is not acting on a mistyped name).
pub fn read(
    settings: &KafkaSettings,
    src: &Source,
    filter: &Filter,
    limit: Option<usize>,
    token: &StopToken,
    tick: Tick<'_>,
) -> Result<Vec<DeadLetter>> {
    let reader = Reader::new(settings, None)?;
    let Some(parts) = reader.partitions(&src.topic, src.timeout)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    reader.scan(
        &src.topic,
        &parts,
        &Scan::to_end(src.timeout),
        token,
        tick,
        &mut |m| {
            let d = DeadLetter::of(m);
            if filter.matches(&d) {
                out.push(d);
            }
            Ok(true)
        },
    )?;
    out.sort_by_key(|d| (d.timestamp_ms.unwrap_or(-1), d.partition, d.offset));
    let keep = limit.unwrap_or(out.len()).min(out.len());
    out.drain(..out.len() - keep);
    Ok(out)
}

/// Counts the dead letters that match `filter` by (stage, reason), keeping the first `samples` of each.
pub fn inspect(
    settings: &KafkaSettings,
    src: &Source,
    filter: &Filter,
    samples: usize,
    token: &StopToken,
    tick: Tick<'_>,
) -> Result<Report> {
    let mut report = Report::default();
    scan(settings, src, token, tick, &mut |d| {
        report.scanned += 1;
        if filter.matches(&d) {
            if d.generation() > 0 {
                report.from_replays += 1;
            }
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

/// What a replay is asked to do.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub filter: Filter,
    /// Count and say what would be sent; send and commit nothing.
    pub dry_run: bool,
    /// Also send dead letters made from records replayed before (their generation grows by one).
    pub include_replayed: bool,
    /// Start at the beginning of the topic, not at the position committed by earlier replays.
    pub from_beginning: bool,
    /// Keep following the topic for new dead letters to replay until none came for this long.
    pub until_idle: Option<Duration>,
    /// At most this many records per second (None: as fast as the broker takes them).
    pub rate: Option<f64>,
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Dead letters read (from where the replay started).
    pub scanned: u64,
    pub matched: u64,
    /// Sent back (acknowledged), or that would be with `dry_run`.
    pub replayed: u64,
    /// Matched but without a source topic to go back to: left where they are.
    pub no_source: u64,
    /// Matched, but made from a record replayed before (by an earlier run, or by this one): left where
    /// they are (see `include_replayed`; a record replayed by this run is never sent again by it).
    pub from_replays: u64,
    pub by_topic: BTreeMap<String, u64>,
    /// Per partition of the dead-letter topic, the first and last offset replayed.
    pub ranges: BTreeMap<i32, (i64, i64)>,
    /// Where this run resumed: per partition, the position committed by an earlier replay (empty: it
    /// started at the beginning of the topic).
    pub started_at: BTreeMap<i32, i64>,
    /// Partitions that had a committed position (the run resumed an earlier replay).
    pub resumed: bool,
    /// The consumer group holding the replay's position.
    pub checkpoint_group: String,
    pub dry_run: bool,
}

/// What a replay does with one dead letter.
#[derive(Debug, PartialEq, Eq)]
enum Verdict<'a> {
    Skip,
    NoSource,
    FromReplay,
    Send { target: &'a str, generation: u32 },
}

/// The replay's rules for one record of the dead-letter topic (`sent`: coordinates replayed by this run).
fn verdict<'a>(
    opts: &ReplayOptions,
    dlq_topic: &str,
    m: &'a BorrowedMessage<'a>,
    sent: &HashSet<(i32, i64)>,
) -> Verdict<'a> {
    let mut facts = Facts {
        reason: b"unknown",
        stage: b"unknown",
        timestamp_ms: m.timestamp().to_millis(),
    };
    let mut target = None;
    if let Some(h) = m.headers() {
        for Header { key, value } in h.iter() {
            match (key, value) {
                (headers::REASON, Some(v)) => facts.reason = v,
                (headers::STAGE, Some(v)) => facts.stage = v,
                (headers::SOURCE_TOPIC, Some(v)) => target = std::str::from_utf8(v).ok(),
                _ => {}
            }
        }
    }
    if !opts.filter.matches_facts(&facts) {
        return Verdict::Skip;
    }
    let lineage = Lineage::of(m.headers());
    if let Some(l) = &lineage {
        if !opts.include_replayed || made_by(l.from, dlq_topic, sent) {
            return Verdict::FromReplay;
        }
    }
    match target {
        Some(t) if !t.is_empty() && t != dlq_topic => Verdict::Send {
            target: t,
            generation: lineage.map_or(1, |l| l.generation.saturating_add(1)),
        },
        _ => Verdict::NoSource,
    }
}

/// Whether a `replayed_from` value names a dead letter this run replayed.
fn made_by(from: &[u8], dlq_topic: &str, sent: &HashSet<(i32, i64)>) -> bool {
    let Ok(from) = std::str::from_utf8(from) else {
        return false;
    };
    let mut parts = from.rsplitn(3, '/');
    let (Some(o), Some(p), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    t == dlq_topic && matches!((p.parse(), o.parse()), (Ok(p), Ok(o)) if sent.contains(&(p, o)))
}

/// Sends each dead letter that `opts` selects back to its `source.topic` (original key and value, plus
/// the lineage headers), from where the last replay with the same filter stopped, committing the
/// position once a second after what was sent is acknowledged, and at the end.
pub fn replay(
    settings: &KafkaSettings,
    src: &Source,
    opts: &ReplayOptions,
    token: &StopToken,
    tick: Tick<'_>,
) -> Result<ReplayStats> {
    let group = opts.filter.checkpoint_group();
    let (reader, parts) = reader(settings, src, Some(&group))?;
    let producer: BaseProducer<DeliveryTracker> = settings
        .client(ClientKind::Producer, crate::dead_letter::PRODUCER)
        .create_with_context(DeliveryTracker::new(BrokerWatch::new("ecomlogs.dlq")))
        .map_err(|e| Error::kafka("creating the Kafka producer", e))?;
    let committed = if opts.from_beginning {
        BTreeMap::new()
    } else {
        reader.committed(&src.topic, &parts, src.timeout)?
    };
    let mut stats = ReplayStats {
        dry_run: opts.dry_run,
        resumed: !committed.is_empty(),
        started_at: committed.clone(),
        checkpoint_group: group,
        ..ReplayStats::default()
    };
    let scan = Scan {
        start: committed,
        follow: opts.until_idle,
        timeout: src.timeout,
        deadline: None,
    };
    let mut sent: HashSet<(i32, i64)> = HashSet::new();
    let mut position: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_checkpoint = Instant::now();
    let mut sender = Sender::new(&producer, &src.topic);
    let mut pace = opts
        .rate
        .and_then(|r| Schedule::every(Duration::from_secs_f64(1.0 / r)));
    let checkpoint = |position: &BTreeMap<i32, i64>| -> Result<()> {
        if opts.dry_run {
            return Ok(());
        }
        deliver(&producer)?;
        reader.commit(&src.topic, position)
    };
    let end = reader.scan(&src.topic, &parts, &scan, token, tick, &mut |m| {
        let (p, o) = (m.partition(), m.offset());
        stats.scanned += 1;
        let v = verdict(opts, &src.topic, m, &sent);
        if v != Verdict::Skip {
            stats.matched += 1;
        }
        let active = match v {
            Verdict::Skip => false,
            Verdict::NoSource => {
                stats.no_source += 1;
                false
            }
            Verdict::FromReplay => {
                stats.from_replays += 1;
                false
            }
            Verdict::Send { target, generation } => {
                if !opts.dry_run {
                    if let Some(s) = pace.as_mut() {
                        token.sleep_until(s.next_due());
                    }
                    sender.send(m, target, generation)?;
                }
                sent.insert((p, o));
                stats.replayed += 1;
                *stats.by_topic.entry(target.to_string()).or_default() += 1;
                let r = stats.ranges.entry(p).or_insert((o, o));
                r.1 = o;
                true
            }
        };
        position.insert(p, o + 1);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(&position)?;
            last_checkpoint = Instant::now();
        }
        Ok(active)
    })?;
    // Everything read (and nothing more) is covered by the final checkpoint; a partition whose log was
    // reset starts over at its new beginning.
    checkpoint(&end.next)?;
    Ok(stats)
}

/// Sends dead letters back to their topics, through a handle of each topic made once (see
/// `kafka::Topic`), the lineage written into one buffer.
struct Sender<'p> {
    producer: &'p BaseProducer<DeliveryTracker>,
    dlq_topic: &'p str,
    topics: HashMap<String, Topic<'p>>,
    from: String,
}

impl<'p> Sender<'p> {
    fn new(producer: &'p BaseProducer<DeliveryTracker>, dlq_topic: &'p str) -> Self {
        Sender {
            producer,
            dlq_topic,
            topics: HashMap::new(),
            from: String::with_capacity(dlq_topic.len() + 24),
        }
    }

    /// One dead letter back to `target`, with its original key and value and its lineage.
    fn send(&mut self, m: &BorrowedMessage<'_>, target: &str, generation: u32) -> Result<()> {
        let failed = |e| Error::kafka(format!("replaying to {target}"), e);
        if !self.topics.contains_key(target) {
            let topic = Topic::new(self.producer, target).map_err(failed)?;
            self.topics.insert(target.to_owned(), topic);
        }
        self.from.clear();
        let _ = write!(
            self.from,
            "{}/{}/{}",
            self.dlq_topic,
            m.partition(),
            m.offset()
        );
        let lineage = Lineage {
            from: self.from.as_bytes(),
            generation,
        };
        let mut digits = itoa::Buffer::new();
        let record = Out {
            key: m.key(),
            value: m.payload(),
            headers: &lineage.headers(&mut digits),
        };
        kafka::send(self.producer, &self.topics[target], record).map_err(failed)
    }
}

/// Waits until every replayed record is acknowledged; a delivery failure is the error.
fn deliver(producer: &BaseProducer<DeliveryTracker>) -> Result<()> {
    let acked = "waiting for the replayed records to be acknowledged";
    crate::kafka::flush(producer, Duration::from_secs(60)).map_err(|e| Error::kafka(acked, e))?;
    match producer.context().take_error() {
        Some(e) => Err(Error::kafka(acked, e)),
        None => Ok(()),
    }
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

    #[test]
    fn a_checkpoint_group_per_reason_and_stage_filter() {
        assert_eq!(Filter::default().checkpoint_group(), "ecomlogs-dlq-replay");
        let f = Filter {
            reasons: vec!["b".into(), "a".into(), "b".into()],
            stages: vec!["loader".into()],
            since_ms: Some(5),
        };
        assert_eq!(
            f.checkpoint_group(),
            "ecomlogs-dlq-replay.reason=a,b.stage=loader"
        );
        let later = Filter {
            since_ms: Some(9),
            ..f.clone()
        };
        assert_eq!(later.checkpoint_group(), f.checkpoint_group());
    }

    #[test]
    fn lineage_names_the_dead_letters_of_this_run() {
        let sent: HashSet<(i32, i64)> = [(2, 40)].into_iter().collect();
        assert!(made_by(
            b"dead_letter_events/2/40",
            "dead_letter_events",
            &sent
        ));
        assert!(!made_by(
            b"dead_letter_events/2/41",
            "dead_letter_events",
            &sent
        ));
        assert!(!made_by(b"other/2/40", "dead_letter_events", &sent));
        assert!(made_by(b"a/b/2/40", "a/b", &sent)); // not a legal topic name, still parsed from the right
        assert!(!made_by(b"garbage", "dead_letter_events", &sent));
    }

    #[test]
    fn generation_of_a_dead_letter() {
        let mut d = letter("x", "processor", 0);
        assert_eq!(d.generation(), 0);
        d.headers
            .push((headers::REPLAYED_FROM.into(), Some("t/0/1".into())));
        assert_eq!(d.generation(), 1);
        d.headers
            .push((headers::REPLAY_GENERATION.into(), Some("3".into())));
        assert_eq!(d.generation(), 3);
    }
}
