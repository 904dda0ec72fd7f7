//! The PostgreSQL side of the loader: one connection, re-opened with backoff through outages; each batch
//! written as one transaction (binary COPY, a dedup fallback, isolation of rejected rows) together with
//! the consumed offsets. Every database error is sorted into one of three kinds (see [`pg::Failure`]):
//! an outage waits and retries, a rejected row is isolated and dead-lettered, a fault stops the stage.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use postgres::{Client, Transaction};
use rand::Rng;

use crate::error::{describe_pg, Error, Result};
use crate::pg::history::{self, Rollup};
use crate::pg::{self, Config, CopyRows, Failure, PartitionProgress};
use crate::resume::StoredPosition;
use crate::stage::{locked, StopToken};

/// A row the database refused, by its index in the batch.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    pub index: usize,
    pub sqlstate: String,
    pub message: String,
}

/// Outcome of writing one batch.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub inserted: u64,
    /// Events already in the table (redelivered), skipped by the unique event_id.
    pub duplicates: u64,
    pub rejected: Vec<RejectedRow>,
}

/// What one attempt at a database call ended with.
enum Attempt {
    /// Wait and retry on a new connection.
    Outage(String),
    /// Stop the stage.
    Fault(Error),
}

impl Attempt {
    fn from_pg(context: &str, e: postgres::Error) -> Attempt {
        match pg::classify(&e) {
            Failure::Outage => Attempt::Outage(outage_reason(&e)),
            // A rejected row outside row isolation (offsets, schema checks) is a fault too.
            Failure::Rejected | Failure::Fault => Attempt::Fault(Error::database(context, &e)),
        }
    }
}

/// What an outage error says, in one line: the server's message and SQLSTATE, or the driver's error.
fn outage_reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}, SQLSTATE {}", db.message(), db.code().code()),
        None => describe_pg(e),
    }
}

/// An outage being waited out: since its first failure, and why the last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub since: Instant,
    pub reason: String,
}

/// A sink's retry state, live: updated inside the retry loop as each attempt fails, so that health and
/// metrics see an outage while the worker is still blocked in the batch it cannot write.
#[derive(Debug, Default)]
pub struct SinkState {
    retries: AtomicU64,
    outage: Mutex<Option<Outage>>,
}

impl SinkState {
    /// Failed attempts during outages, so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The outage being waited out, if any.
    pub fn outage(&self) -> Option<Outage> {
        locked(&self.outage).clone()
    }

    pub fn waiting(&self) -> bool {
        locked(&self.outage).is_some()
    }

    /// An attempt failed with an outage: it starts one, or is the latest reason of the one going on.
    fn failed(&self, why: &str) {
        let reason = one_line(why);
        let mut outage = locked(&self.outage);
        match outage.as_mut() {
            Some(o) => o.reason = reason,
            None => {
                *outage = Some(Outage {
                    since: Instant::now(),
                    reason,
                })
            }
        }
    }

    fn recovered(&self) {
        *locked(&self.outage) = None;
    }
}

/// One loader's connection to PostgreSQL.
pub struct PgSink {
    cfg: Config,
    client: Option<Client>,
    group: String,
    topic: String,
    max_backoff: Duration,
    /// The stage's stop token: a stop also ends the retries of an outage.
    stop: StopToken,
    /// Set once this consumer's loop has ended (leaving the group may still call back).
    done: AtomicBool,
    /// Retries and the outage being waited out, shared with whoever reports on the stage.
    state: Arc<SinkState>,
    /// The days that have a partition (read once, then kept up to date by the batches that create one).
    days: Option<BTreeSet<NaiveDate>>,
    /// The day whose partitions ahead were last made sure of.
    ahead_for: Option<NaiveDate>,
    /// When the batches' customer deltas were last merged into the customer rollup.
    merged: Instant,
}

/// How often a loader working off a backlog merges the batches' customer deltas (see
/// `history::merge_customer_deltas`): top_customers trails such a backlog by up to this much (a batch that
/// ends a burst merges at once, so a trickle is there at once). A merge costs about as much as the
/// customers it touches: with 10,000 customers 0.2 s each time; every 5 s that was a tenth of the loader's
/// database time during a backlog, every 30 s it is a sixtieth.
const MERGE_EVERY: Duration = Duration::from_secs(30);

impl PgSink {
    pub fn new(
        cfg: Config,
        client: Option<Client>,
        group: &str,
        topic: &str,
        max_backoff: Duration,
        stop: StopToken,
    ) -> Self {
        PgSink {
            cfg,
            client,
            group: group.to_string(),
            topic: topic.to_string(),
            max_backoff,
            stop,
            done: AtomicBool::new(false),
            state: Arc::default(),
            days: None,
            ahead_for: None,
            merged: Instant::now(),
        }
    }

    /// The live retry state (see [`SinkState`]).
    pub fn state(&self) -> &Arc<SinkState> {
        &self.state
    }

    /// Failed attempts during outages, so far.
    pub fn retries(&self) -> u64 {
        self.state.retries()
    }

    /// True while an outage is being waited out.
    pub fn waiting(&self) -> bool {
        self.state.waiting()
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stop.is_interrupted() || self.done.load(Ordering::Relaxed)
    }

    /// Runs `f` on a connection until it succeeds (Some), the stage stops during an outage (None), or
    /// the database reports a fault (Err).
    fn retrying<T>(
        &mut self,
        mut f: impl FnMut(&mut Client) -> std::result::Result<T, Attempt>,
    ) -> Result<Option<T>> {
        let mut attempt = 0u32;
        loop {
            let outcome = match self.client.as_mut() {
                Some(client) => f(client),
                None => match pg::open(&self.cfg) {
                    Ok(c) => {
                        self.client = Some(c);
                        continue;
                    }
                    Err(e) => Err(Attempt::from_pg("connecting to PostgreSQL", e)),
                },
            };
            match outcome {
                Ok(v) => {
                    if self.waiting() {
                        log::info!(target: "ecomlogs.loader", "PostgreSQL is back after {attempt} attempts");
                    }
                    self.state.recovered();
                    return Ok(Some(v));
                }
                Err(Attempt::Fault(e)) => return Err(e),
                Err(Attempt::Outage(why)) => {
                    self.client = None;
                    self.state.failed(&why);
                    if !self.backoff(&mut attempt, &why) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Checks the connection between batches (for health checks and the status line): an outage seen
    /// here counts as one until a check or a write succeeds again.
    pub fn probe(&mut self) {
        let checked = match self.client.as_mut() {
            Some(c) => c.is_valid(Duration::from_secs(2)),
            None => pg::open(&self.cfg).map(|c| {
                self.client = Some(c);
            }),
        };
        let waiting = self.waiting();
        match checked {
            Ok(()) => {
                if waiting {
                    log::info!(target: "ecomlogs.loader", "PostgreSQL is reachable again");
                }
                self.state.recovered();
            }
            Err(e) => {
                let why = outage_reason(&e);
                if !waiting {
                    log::warn!(target: "ecomlogs.loader", "PostgreSQL unavailable ({}; the idle connection check failed); the next batch waits for it", one_line(&why));
                }
                self.client = None;
                self.state.failed(&why);
            }
        }
    }

    /// Sleeps before the next attempt (exponential, with jitter); false when the stage is stopping.
    fn backoff(&mut self, attempt: &mut u32, why: &str) -> bool {
        if self.stopping() {
            return false;
        }
        *attempt += 1;
        self.state.retries.fetch_add(1, Ordering::Relaxed);
        let base = Duration::from_millis(200).saturating_mul(1u32 << (*attempt - 1).min(10));
        let wait = base
            .min(self.max_backoff)
            .mul_f64(rand::rng().random_range(0.5..1.0));
        log::warn!(
            target: "ecomlogs.loader",
            "PostgreSQL unavailable ({}); attempt {} failed, retrying in {:.1}s",
            one_line(why), attempt, wait.as_secs_f64()
        );
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.stopping() {
                return false;
            }
            std::thread::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
        }
        true
    }

    /// What PostgreSQL holds for these partitions of the topic.
    pub fn stored_positions(
        &mut self,
        partitions: &[i32],
    ) -> Result<Option<Vec<(i32, StoredPosition)>>> {
        let (group, topic) = (self.group.clone(), self.topic.clone());
        self.retrying(|c| {
            pg::load_offsets(c, &group, &topic, partitions)
                .map_err(|e| Attempt::from_pg("reading the stored offsets", e))
        })
    }

    /// Points a partition's stored offset at a new log (see `pg::restart_offset`).
    pub fn restart_offset(
        &mut self,
        partition: i32,
        next_offset: i64,
        topic_id: Option<&str>,
    ) -> Result<Option<()>> {
        let (group, topic) = (self.group.clone(), self.topic.clone());
        self.retrying(|c| {
            pg::restart_offset(c, &group, &topic, partition, next_offset, topic_id)
                .map_err(|e| Attempt::from_pg("restarting a stored offset", e))
        })
    }

    /// Writes `rows` and the offsets in one transaction, retrying through outages. `before_commit` runs
    /// last, inside the transaction (it delivers the dead letters), so a crash at any point stores either
    /// everything of the batch or nothing. None: the stage stopped during an outage (nothing stored).
    pub fn write_batch(
        &mut self,
        rows: &CopyRows,
        rollup: &Rollup,
        progress: &[PartitionProgress],
        topic_id: Option<&str>,
        before_commit: &mut dyn FnMut(&Written) -> Result<()>,
    ) -> Result<Option<Written>> {
        let (group, topic) = (self.group.clone(), self.topic.clone());
        let offsets = Offsets {
            group: &group,
            topic: &topic,
            topic_id,
            progress,
        };
        let Some(days) = self.partitions_needed(rollup)? else {
            return Ok(None);
        };
        let rows = Rows {
            rows,
            rollup,
            days: &days,
        };
        // A commit whose answer was lost (the connection dropped just then) may have gone through: the
        // offsets, stored in the batch's own transaction, say whether it did, so the batch is neither
        // written twice nor counted as duplicates of itself.
        let mut committing: Option<Written> = None;
        self.retrying(|c| {
            if let Some(w) = committing.take() {
                if stored(c, &offsets)? {
                    log::info!(target: "ecomlogs.loader", "the batch whose commit was cut off had been stored: not written again");
                    return Ok(w);
                }
            }
            write_once(c, &rows, &offsets, before_commit, &mut committing)
        })
        .inspect(|written| {
            if written.is_some() {
                let known = self.days.get_or_insert_with(BTreeSet::new);
                known.extend(days.iter().copied());
                self.ahead_for = Some(history::today());
            }
        })
    }

    /// The days a batch needs a partition for that may not have one yet (to be made sure of in its
    /// transaction): its days outside the known ones (within the on-demand window), and the days ahead
    /// once a day. None: stopped during an outage.
    fn partitions_needed(&mut self, rollup: &Rollup) -> Result<Option<Vec<NaiveDate>>> {
        if self.days.is_none() {
            let Some(days) = self.retrying(|c| {
                history::partition_days(c)
                    .map_err(|e| Attempt::from_pg("listing the partitions", e))
            })?
            else {
                return Ok(None);
            };
            self.days = Some(days);
        }
        let known = self.days.as_ref().expect("read above");
        let today = history::today();
        let mut needed: BTreeSet<NaiveDate> = rollup
            .days
            .iter()
            .copied()
            .filter(|d| !known.contains(d) && history::on_demand(*d, today))
            .collect();
        if self.ahead_for != Some(today) {
            needed.extend(
                (-1..=history::AHEAD_DAYS)
                    .map(|d| today + chrono::Duration::days(d))
                    .filter(|d| !known.contains(d)),
            );
        }
        Ok(Some(needed.into_iter().collect()))
    }

    /// Merges the customer deltas stored so far, if `MERGE_EVERY` has passed (`now`: at once). None:
    /// stopped during an outage.
    pub fn merge_deltas(&mut self, now: bool) -> Result<Option<u64>> {
        if !now && self.merged.elapsed() < MERGE_EVERY {
            return Ok(Some(0));
        }
        let merged = self.retrying(|c| {
            let mut total = 0;
            loop {
                let n = history::merge_customer_deltas(c)
                    .map_err(|e| Attempt::from_pg("merging the customer rollup", e))?;
                total += n;
                if n == 0 {
                    return Ok(total);
                }
            }
        })?;
        self.merged = Instant::now();
        Ok(merged)
    }

    /// Drops the partitions older than `keep_days` (see `history::retention`), between batches, through
    /// outages. None: stopped during an outage.
    pub fn retention(&mut self, keep_days: u32) -> Result<Option<Vec<history::Retired>>> {
        let retired = self.retrying(|c| {
            history::retention(c, keep_days, history::today(), false)
                .map_err(|e| Attempt::from_pg("dropping old partitions", e))
        })?;
        if let (Some(r), Some(known)) = (&retired, self.days.as_mut()) {
            for d in r {
                known.remove(&d.day);
            }
        }
        Ok(retired)
    }
}

/// A batch as the database gets it: its rows, their rollup, the days it makes sure have a partition.
struct Rows<'a> {
    rows: &'a CopyRows,
    rollup: &'a Rollup,
    days: &'a [NaiveDate],
}

/// A transaction for a batch, with the partitions its rows need.
fn begin<'c>(
    client: &'c mut Client,
    days: &[NaiveDate],
) -> std::result::Result<Transaction<'c>, Attempt> {
    let mut tx = client.transaction().map_err(batch_error)?;
    history::ensure_days(&mut tx, days)
        .map_err(|e| Attempt::from_pg("creating a day's partition", e))?;
    Ok(tx)
}

/// Whether PostgreSQL holds exactly this batch's offsets (next offset and fingerprint per partition).
fn stored(client: &mut Client, offsets: &Offsets<'_>) -> std::result::Result<bool, Attempt> {
    let partitions: Vec<i32> = offsets.progress.iter().map(|p| p.partition).collect();
    let held = pg::load_offsets(client, offsets.group, offsets.topic, &partitions)
        .map_err(|e| Attempt::from_pg("reading the stored offsets", e))?;
    Ok(!offsets.progress.is_empty()
        && offsets.progress.iter().all(|p| {
            held.iter().any(|(partition, s)| {
                *partition == p.partition
                    && s.next_offset == p.next_offset
                    && s.last == Some(p.last)
            })
        }))
}

struct Offsets<'a> {
    group: &'a str,
    topic: &'a str,
    topic_id: Option<&'a str>,
    progress: &'a [PartitionProgress],
}

fn batch_error(e: postgres::Error) -> Attempt {
    Attempt::from_pg("writing a batch", e)
}

/// One transaction: COPY straight into the table (the fast path) with the batch's rollup; only a batch
/// that hits the unique key falls back to staging + ON CONFLICT DO NOTHING, only a batch with a rejected
/// row is split (both roll up server side the rows they actually inserted).
fn write_once(
    client: &mut Client,
    batch: &Rows<'_>,
    offsets: &Offsets<'_>,
    before_commit: &mut dyn FnMut(&Written) -> Result<()>,
    committing: &mut Option<Written>,
) -> std::result::Result<Written, Attempt> {
    let rows = batch.rows;
    let mut tx = begin(client, batch.days)?;
    let mut out = Written::default();
    if rows.is_empty() {
        return commit(tx, offsets, out, before_commit, committing);
    }
    let mut sp = tx.savepoint("batch").map_err(batch_error)?;
    let order = rows.key_order();
    let first = pg::copy_rows(
        &mut sp,
        pg::TABLE,
        order.iter().map(|&i| rows.tuple(i as usize)),
    );
    let e = match first {
        Ok(n) => {
            sp.commit().map_err(batch_error)?;
            batch.rollup.upsert(&mut tx).map_err(batch_error)?;
            out.inserted = n;
            return commit(tx, offsets, out, before_commit, committing);
        }
        Err(e) => e,
    };
    let unique_hit = e.code().is_some_and(|c| c.code() == "23505");
    row_level(e)?;
    sp.rollback().map_err(batch_error)?;
    if unique_hit {
        match pg::copy_rows_dedup(&mut tx, rows.tuples(0..rows.len())) {
            Ok(n) => {
                history::rollup_inserted(&mut tx).map_err(batch_error)?;
                out.inserted = n;
                out.duplicates = rows.len() as u64 - n;
                return commit(tx, offsets, out, before_commit, committing);
            }
            Err(e) => {
                row_level(e)?;
                // Duplicates and a rejected row in one batch: isolate from scratch.
                tx.rollback().map_err(batch_error)?;
                tx = begin(client, batch.days)?;
            }
        }
    }
    insert_isolating(&mut tx, rows, &mut out)?;
    history::rollup_inserted(&mut tx).map_err(batch_error)?;
    commit(tx, offsets, out, before_commit, committing)
}

/// Passes a row-level rejection on to be isolated; anything else ends the attempt.
fn row_level(e: postgres::Error) -> std::result::Result<(), Attempt> {
    match pg::classify(&e) {
        Failure::Rejected => Ok(()),
        _ => Err(batch_error(e)),
    }
}

/// Stores a batch with refused rows in one server-side pass (see `pg::insert_isolating`): every good
/// row inserted or skipped as a duplicate, each refused one recorded in `out.rejected`.
fn insert_isolating(
    tx: &mut Transaction<'_>,
    rows: &CopyRows,
    out: &mut Written,
) -> std::result::Result<(), Attempt> {
    let done = pg::insert_isolating(tx, rows.tuples(0..rows.len())).map_err(batch_error)?;
    out.inserted += done.inserted;
    out.duplicates += (rows.len() - done.rejected.len()) as u64 - done.inserted;
    out.rejected.extend(
        done.rejected
            .into_iter()
            .map(|(index, sqlstate, message)| RejectedRow {
                index,
                sqlstate,
                message,
            }),
    );
    Ok(())
}

fn commit(
    mut tx: Transaction<'_>,
    offsets: &Offsets<'_>,
    out: Written,
    before_commit: &mut dyn FnMut(&Written) -> Result<()>,
    committing: &mut Option<Written>,
) -> std::result::Result<Written, Attempt> {
    pg::store_offsets(
        &mut tx,
        offsets.group,
        offsets.topic,
        offsets.topic_id,
        offsets.progress,
    )
    .map_err(|e| Attempt::from_pg("storing the offsets", e))?;
    before_commit(&out).map_err(Attempt::Fault)?;
    *committing = Some(out.clone());
    tx.commit().map_err(batch_error)?;
    Ok(out)
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
