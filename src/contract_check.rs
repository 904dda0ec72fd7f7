//! `ecomlogs contract check FILE [--sample-topic TOPIC]`: before rolling a contract out, run it and the
//! contract in use now over the latest records of a topic and count what would change, by reason.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::KafkaSettings;
use crate::contract::Contract;
use crate::error::Result;
use crate::kafka::{Reader, Scan, Tick};
use crate::stage::StopToken;

/// Examples kept per reason.
const EXAMPLES: usize = 3;

/// Where the sample comes from: the latest `per_partition` records of each partition of `topic`.
#[derive(Debug, Clone)]
pub struct Sample {
    pub topic: String,
    pub per_partition: u64,
    pub timeout: Duration,
}

/// One record whose verdict changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub detail: String,
}

/// What the check found: the sample's size, the verdicts of both contracts, and the records whose
/// verdict changes, by reason.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Records read, and per partition the offsets sampled (first, next).
    pub sampled: u64,
    pub ranges: BTreeMap<i32, (i64, i64)>,
    /// Valid under the contract in use now, and under the new one.
    pub valid_now: u64,
    pub valid_new: u64,
    /// Valid now, rejected by the new contract: by its reason.
    pub newly_rejected: BTreeMap<String, u64>,
    /// Rejected now (by the current reason), valid under the new contract.
    pub newly_accepted: BTreeMap<String, u64>,
    /// Rejected by both, for another reason under the new contract: (now, new) -> count.
    pub reason_changed: BTreeMap<(String, String), u64>,
    /// A few records of each newly rejected reason.
    pub examples: Vec<Example>,
}

/// Runs `new` and `current` over the sample (none: nothing is read, the contract compiled).
pub fn check(
    settings: &KafkaSettings,
    new: &Contract,
    current: &Contract,
    sample: Option<&Sample>,
    token: &StopToken,
    tick: Tick<'_>,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let Some(sample) = sample else {
        return Ok(report);
    };
    let reader = Reader::new(settings, None)?;
    let partitions =
        reader.existing_partitions(&sample.topic, "the sample topic", sample.timeout)?;
    let mut start = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = reader.watermarks(&sample.topic, p, sample.timeout)?;
        let first = high.saturating_sub(sample.per_partition as i64).max(low);
        start.insert(p, first);
    }
    let scan = Scan {
        start: start.clone(),
        follow: None,
        timeout: sample.timeout,
        // A partition that is written to faster than it is read never ends: give up on it after this
        // long, with what was read (the log says so).
        deadline: Some(sample.timeout.max(Duration::from_secs(60))),
    };
    let mut taken: BTreeMap<i32, u64> = BTreeMap::new();
    reader.scan(&sample.topic, &partitions, &scan, token, tick, &mut |m| {
        use rdkafka::message::Message;
        let n = taken.entry(m.partition()).or_default();
        if *n >= sample.per_partition {
            return Ok(false); // records that arrived after the sample was taken
        }
        *n += 1;
        let full = *n == sample.per_partition;
        if full
            && taken.len() == partitions.len()
            && taken.values().all(|&t| t >= sample.per_partition)
        {
            // Every partition gave its share (a busy topic would never reach its end).
            token.stop();
        }
        report.sampled += 1;
        let range = report
            .ranges
            .entry(m.partition())
            .or_insert((m.offset(), m.offset() + 1));
        range.0 = range.0.min(m.offset());
        range.1 = range.1.max(m.offset() + 1);
        let now = current.validate(m.payload()).map(|_| ());
        let new_verdict = new.validate(m.payload()).map(|_| ());
        report.valid_now += u64::from(now.is_ok());
        report.valid_new += u64::from(new_verdict.is_ok());
        match (now, new_verdict) {
            (Ok(()), Err(r)) => {
                let code = r.reason.code().to_string();
                let seen = report.newly_rejected.entry(code.clone()).or_default();
                *seen += 1;
                if *seen as usize <= EXAMPLES {
                    report.examples.push(Example {
                        partition: m.partition(),
                        offset: m.offset(),
                        reason: code,
                        detail: r.detail,
                    });
                }
            }
            (Err(r), Ok(())) => {
                *report
                    .newly_accepted
                    .entry(r.reason.code().to_string())
                    .or_default() += 1;
            }
            (Err(a), Err(b)) if a.reason != b.reason => {
                *report
                    .reason_changed
                    .entry((a.reason.code().to_string(), b.reason.code().to_string()))
                    .or_default() += 1;
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(report)
}
