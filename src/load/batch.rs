//! One loader batch: rows encoded as COPY tuples as they arrive, dead letters, and the offsets to store.

use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Message};

use super::{LoadOptions, TICK};
use crate::dead_letter::{DeadLetter, Lineage, OwnedLineage};
use crate::pg::history::Rollup;
use crate::pg::{self, PartitionProgress};
use crate::resume::Fingerprint;
use crate::sink::Written;
use crate::validate::{self, Reason};

/// The records on their way to the table in one transaction: rows as COPY tuples, dead letters, and
/// per partition the offset to store with them.
/// Where a row came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source {
    partition: i32,
    offset: i64,
    /// The record's timestamp (ms since the epoch; negative if it has none).
    pub(super) timestamp_ms: i64,
}

pub(super) struct Batch {
    pub(super) rows: pg::CopyRows,
    /// (partition, offset) of each row, for dead-lettering a row the database rejects.
    pub(super) origin: Vec<Source>,
    pub(super) dead: Vec<DeadLetter>,
    /// The lineage of rows that were replayed from a dead letter, by row index (few or none).
    pub(super) lineage: Vec<(usize, OwnedLineage)>,
    pub(super) progress: Vec<PartitionProgress>,
    /// The rows' rollup deltas and days (see `pg::history`).
    pub(super) rollup: Rollup,
    pub(super) started: Option<Instant>,
    /// The batch ends a burst of input (it is not full): the writer merges the rollups after it.
    pub(super) settles: bool,
    /// Records per transaction at most.
    limit: usize,
}

impl Batch {
    /// A batch of `limit` records at most.
    pub(super) fn new(limit: usize) -> Self {
        let rows = limit.min(100_000);
        Batch {
            limit,
            settles: false,
            rows: pg::CopyRows::with_capacity(rows),
            origin: Vec::with_capacity(rows),
            dead: Vec::new(),
            lineage: Vec::new(),
            progress: Vec::new(),
            rollup: Rollup::default(),
            started: None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.origin.len() + self.dead.len()
    }

    pub(super) fn is_full(&self) -> bool {
        self.len() >= self.limit
    }

    pub(super) fn is_empty(&self) -> bool {
        self.progress.is_empty()
    }

    /// Routes one record into the batch: a row, or a dead letter if it is not a valid event.
    pub(super) fn take(&mut self, m: &BorrowedMessage<'_>, log_each: bool) {
        let (partition, offset) = (m.partition(), m.offset());
        let last = Fingerprint::of_message(m);
        let timestamp_ms = last.timestamp_ms;
        match self.progress.iter_mut().find(|p| p.partition == partition) {
            Some(p) => {
                p.next_offset = offset + 1;
                p.last = last;
            }
            None => self.progress.push(PartitionProgress {
                partition,
                next_offset: offset + 1,
                last,
            }),
        }
        let lineage = Lineage::of(m.headers()).map(|l| l.to_owned());
        // Only what the table needs: the processor's contract has judged the event (a REFUND with a
        // negative amount, a SEARCH without one are rows).
        match validate::fit(m.payload()) {
            Ok(e) => {
                if let Some(l) = lineage {
                    self.lineage.push((self.origin.len(), l));
                }
                if log_each {
                    log::info!(target: "ecomlogs.loader", "row {} {} {}", e.event_id, e.event_type_text(), e.amount.map_or("-".into(), |a| a.to_string()));
                }
                self.rows.push(&e);
                self.rollup.add(&e);
                self.origin.push(Source {
                    partition,
                    offset,
                    timestamp_ms,
                });
            }
            Err(rej) => self.dead.push(DeadLetter {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                reason: rej.reason,
                detail: rej.detail,
                sqlstate: None,
                partition,
                offset,
                lineage,
            }),
        }
    }

    /// Due for writing: full, or old enough, or its input has gone quiet at the end of every assigned
    /// partition (`caught_up`: a gap between fetches of a backlog is no reason for a small transaction).
    pub(super) fn is_due(&self, opts: &LoadOptions, last_input: Instant, caught_up: bool) -> bool {
        self.is_full()
            || self.started.is_some_and(|t| {
                t.elapsed() >= opts.flush_interval
                    || (caught_up
                        && last_input.elapsed() >= opts.quiet_flush.min(opts.flush_interval))
            })
    }

    /// How long the next poll may wait without making the batch late.
    pub(super) fn wait(&self, opts: &LoadOptions, last_input: Instant) -> Duration {
        match self.started {
            Some(t) => opts
                .flush_interval
                .saturating_sub(t.elapsed())
                .min(
                    opts.quiet_flush
                        .min(opts.flush_interval)
                        .saturating_sub(last_input.elapsed()),
                )
                .min(TICK),
            None => TICK,
        }
    }

    /// The rows the database rejected, as dead letters (decoded back from their COPY tuples).
    pub(super) fn rejected(&self, written: &Written) -> Vec<DeadLetter> {
        written
            .rejected
            .iter()
            .map(|r| {
                let e = self.rows.event(r.index);
                let Source {
                    partition, offset, ..
                } = self.origin[r.index];
                let mut value = Vec::new();
                e.write_canonical_json(&mut value);
                DeadLetter {
                    key: e.customer_id.as_ref().map(|c| c.as_bytes().to_vec()),
                    value: Some(value),
                    reason: Reason::DatabaseRejected,
                    detail: format!("SQLSTATE {}: {}", r.sqlstate, r.message),
                    sqlstate: Some(r.sqlstate.clone()),
                    partition,
                    offset,
                    lineage: self
                        .lineage
                        .iter()
                        .find(|(i, _)| *i == r.index)
                        .map(|(_, l)| l.clone()),
                }
            })
            .collect()
    }

    pub(super) fn clear(&mut self) {
        self.rows.clear();
        self.origin.clear();
        self.dead.clear();
        self.lineage.clear();
        self.progress.clear();
        self.rollup.clear();
        self.started = None;
    }
}
