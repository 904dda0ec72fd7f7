//! Dead letters, for every stage that writes them: the original key and value untouched, headers saying
//! why and where from, sent with back-pressure and flushed before the stage commits its input offsets.

use std::time::Duration;

use rdkafka::message::{Header, Headers};
use rdkafka::producer::{BaseProducer, Producer};

use crate::error::{Error, Result};
use crate::kafka::{self, DeliveryTracker, Out, Topic};
use crate::validate::Reason;

/// Header names.
pub mod headers {
    pub const REASON: &str = "reason";
    pub const DETAIL: &str = "detail";
    pub const SOURCE_TOPIC: &str = "source.topic";
    pub const SOURCE_PARTITION: &str = "source.partition";
    pub const SOURCE_OFFSET: &str = "source.offset";
    pub const STAGE: &str = "stage";
    pub const SQLSTATE: &str = "sqlstate";
    /// Set by `ecomlogs dlq replay` on a record it sends back: `<dead-letter topic>/<partition>/<offset>`.
    /// Stages pass it (and the generation) on to whatever they make of the record, so a dead letter made
    /// from a replayed record says so, and replay does not send it round again unless asked to.
    pub const REPLAYED_FROM: &str = "ecomlogs.replayed_from";
    /// How many replays deep a record is (1: replayed once).
    pub const REPLAY_GENERATION: &str = "ecomlogs.replay_generation";
    /// The `$id` of the contract that judged the record: on every clean record and every dead letter
    /// of the processor.
    pub const CONTRACT: &str = "ecomlogs.contract";
}

/// Where a replayed record came from: the dead letter it was replayed from and how many replays deep it
/// is. Borrowed from the record's headers (records without them cost nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage<'a> {
    pub from: &'a [u8],
    pub generation: u32,
}

impl<'a> Lineage<'a> {
    /// The lineage headers of a record, if it was replayed.
    pub fn of<H: Headers>(h: Option<&'a H>) -> Option<Lineage<'a>> {
        let h = h?;
        let mut from = None;
        let mut generation = 1;
        for Header { key, value } in h.iter() {
            match key {
                headers::REPLAYED_FROM => from = value,
                headers::REPLAY_GENERATION => {
                    generation = value
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1)
                }
                _ => {}
            }
        }
        from.map(|from| Lineage { from, generation })
    }

    /// Its two headers (the generation's digits written into `digits`).
    pub fn headers<'s>(&'s self, digits: &'s mut itoa::Buffer) -> [(&'static str, &'s [u8]); 2] {
        [
            (headers::REPLAYED_FROM, self.from),
            (
                headers::REPLAY_GENERATION,
                digits.format(self.generation).as_bytes(),
            ),
        ]
    }

    /// An owned copy, for a dead letter held until its batch is written.
    pub fn to_owned(&self) -> OwnedLineage {
        OwnedLineage {
            from: self.from.to_vec(),
            generation: self.generation,
        }
    }
}

/// `Lineage`, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLineage {
    pub from: Vec<u8>,
    pub generation: u32,
}

impl OwnedLineage {
    pub fn borrow(&self) -> Lineage<'_> {
        Lineage {
            from: &self.from,
            generation: self.generation,
        }
    }
}

/// What a producer that writes dead letters sets for itself: a dead-letter copy carries headers on top
/// of the original value, so leave room above the default 1 MB.
pub const PRODUCER: &[(&str, &str)] = &[("message.max.bytes", "16000000")];

/// A `detail` header is cut to this many bytes (at a character boundary).
const MAX_DETAIL: usize = 1024;

/// Where a dead letter came from and why.
pub struct Why<'a> {
    pub reason: Reason,
    pub detail: &'a str,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    pub stage: &'a str,
    pub sqlstate: Option<&'a str>,
    /// The record was replayed from a dead letter: the new dead letter keeps that lineage.
    pub lineage: Option<Lineage<'a>>,
    /// The `$id` of the contract that rejected it (the processor's dead letters).
    pub contract: Option<&'a str>,
}

impl Why<'_> {
    /// The dead letter's headers (numbers written into `digits`).
    pub fn headers<'s>(
        &'s self,
        digits: &'s mut [itoa::Buffer; 3],
    ) -> Vec<(&'static str, &'s [u8])> {
        let mut end = self.detail.len().min(MAX_DETAIL);
        while !self.detail.is_char_boundary(end) {
            end -= 1;
        }
        let [partition, offset, generation] = digits;
        let mut h = Vec::with_capacity(10);
        h.extend([
            (headers::REASON, self.reason.code().as_bytes()),
            (headers::DETAIL, &self.detail.as_bytes()[..end]),
            (headers::SOURCE_TOPIC, self.source_topic.as_bytes()),
            (
                headers::SOURCE_PARTITION,
                partition.format(self.source_partition).as_bytes(),
            ),
            (
                headers::SOURCE_OFFSET,
                offset.format(self.source_offset).as_bytes(),
            ),
            (headers::STAGE, self.stage.as_bytes()),
        ]);
        if let Some(state) = self.sqlstate {
            h.push((headers::SQLSTATE, state.as_bytes()));
        }
        if let Some(id) = self.contract {
            h.push((headers::CONTRACT, id.as_bytes()));
        }
        if let Some(l) = &self.lineage {
            h.extend(l.headers(generation));
        }
        h
    }
}

/// Sends one dead letter to `dlq` (waiting while the producer's queue is full).
pub fn send(
    producer: &BaseProducer<DeliveryTracker>,
    dlq: &Topic<'_>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    why: &Why<'_>,
) -> Result<()> {
    let mut digits = Default::default();
    let headers = why.headers(&mut digits);
    let record = Out {
        key,
        value,
        headers: &headers,
    };
    kafka::send(producer, dlq, record).map_err(|e| Error::kafka("dead-lettering a record", e))
}

/// Waits until everything sent so far is acknowledged; the first delivery failure is the error.
pub fn flush(producer: &BaseProducer<DeliveryTracker>) -> Result<()> {
    crate::kafka::flush(producer, Duration::from_secs(60))
        .map_err(|e| Error::kafka("delivering dead letters", e))?;
    match producer.context().take_error() {
        Some(e) => Err(Error::kafka("delivering dead letters", e)),
        None => Ok(()),
    }
}

/// A dead letter held until its batch is written (the loader's: it owns its bytes).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub reason: Reason,
    pub detail: String,
    pub sqlstate: Option<String>,
    pub partition: i32,
    pub offset: i64,
    pub lineage: Option<OwnedLineage>,
}

impl DeadLetter {
    pub fn why<'a>(&'a self, source_topic: &'a str, stage: &'a str) -> Why<'a> {
        Why {
            reason: self.reason,
            detail: &self.detail,
            source_topic,
            source_partition: self.partition,
            source_offset: self.offset,
            stage,
            sqlstate: self.sqlstate.as_deref(),
            lineage: self.lineage.as_ref().map(OwnedLineage::borrow),
            contract: None,
        }
    }
}
