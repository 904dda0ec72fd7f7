//! History that stays fast as it grows: the events table partitioned by event day (UTC), partitions
//! created ahead of need and on demand, rollups kept in the loader's transaction (only rows actually
//! inserted count), whole-partition retention that keeps the rollups, and a rebuild of the rollups from
//! the table. The schema is migration 0006 (`migrations/0006_partitioned_history.sql`); its first and
//! last steps (moving an existing table's rows in, with progress) are here too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use chrono::{Duration as Days, NaiveDate, NaiveDateTime, Utc};
use postgres::GenericClient;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::TABLE;
use crate::event::CleanEvent;

pub const DEFAULT_PARTITION: &str = "kafka_events_silver_default";
pub const DAILY_ROLLUP: &str = "ecomlogs_daily_rollup";
pub const CUSTOMER_ROLLUP: &str = "ecomlogs_customer_rollup";
pub const CUSTOMER_RETIRED: &str = "ecomlogs_customer_rollup_retired";
pub const CUSTOMER_DELTAS: &str = "ecomlogs_customer_deltas";
/// Where an upgraded table's rows wait while they move into the partitioned one.
pub const UNPARTITIONED: &str = "kafka_events_silver_unpartitioned";

/// Partitions exist this many days ahead of today.
pub const AHEAD_DAYS: i64 = 7;
/// The loader creates a partition on demand for a day at most this far from today; rows of days further
/// away (a clock far off, a replay of ancient data) land in the default partition.
const ON_DEMAND_PAST_DAYS: i64 = 3660;
const ON_DEMAND_FUTURE_DAYS: i64 = 366;

pub fn partition_name(day: NaiveDate) -> String {
    format!("{TABLE}_{}", day.format("%Y%m%d"))
}

fn day_of_partition(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix(TABLE)?.strip_prefix('_')?;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Whether the loader makes a partition for `day` when it meets it (else the default partition takes
/// its rows).
pub fn on_demand(day: NaiveDate, today: NaiveDate) -> bool {
    day >= today - Days::days(ON_DEMAND_PAST_DAYS)
        && day <= today + Days::days(ON_DEMAND_FUTURE_DAYS)
}

/// The days that have a partition now.
pub fn partition_days(c: &mut impl GenericClient) -> Result<BTreeSet<NaiveDate>, postgres::Error> {
    let rows = c.query(
        &format!(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = '{TABLE}'::regclass"
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| day_of_partition(r.get::<_, &str>(0)))
        .collect())
}

/// Creates the partitions of `days` that do not exist yet (rows of those days waiting in the default
/// partition move in), in the caller's transaction; returns the days created.
pub fn ensure_days(
    c: &mut impl GenericClient,
    days: &[NaiveDate],
) -> Result<Vec<NaiveDate>, postgres::Error> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c.query(
        "SELECT d FROM unnest($1::date[]) AS d WHERE ecomlogs_ensure_day(d) ORDER BY d",
        &[&days],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Today's partition, the day before and `AHEAD_DAYS` after.
pub fn ensure_ahead(c: &mut impl GenericClient) -> Result<Vec<NaiveDate>, postgres::Error> {
    let t = today();
    let days: Vec<NaiveDate> = (-1..=AHEAD_DAYS).map(|d| t + Days::days(d)).collect();
    ensure_days(c, &days)
}

/// A customer's totals in one currency: (currency, purchases, revenue in cents, events, last seen).
type CustomerTotals = (String, i64, i64, i64, NaiveDateTime);

/// A batch's rows as rollup deltas, gathered as the rows are taken (all of them count when the batch's
/// COPY goes in whole; the fallback paths roll up server side what they actually inserted).
#[derive(Debug, Default, Clone)]
pub struct Rollup {
    /// (day, event type, currency) -> (events, amount in cents). Few keys: a short vector.
    daily: Vec<(NaiveDate, String, String, i64, i64)>,
    /// customer -> per currency totals.
    customers: HashMap<String, Vec<CustomerTotals>>,
    /// The days the rows fall on (for their partitions).
    pub days: BTreeSet<NaiveDate>,
}

impl Rollup {
    pub fn add(&mut self, e: &CleanEvent<'_>) {
        let ts = e.timestamp.naive_utc();
        let day = ts.date();
        // The rollups' keys are NOT NULL: a column the contract lets be null counts under '' (the views
        // show it as NULL again), as the server-side rollup's coalesce does.
        let kind = e.event_type.as_deref().unwrap_or("");
        let currency = e.currency.as_deref().unwrap_or("");
        let customer = e.customer_id.as_deref().unwrap_or("");
        let cents = e
            .amount
            .map_or(0, |a| (a * Decimal::ONE_HUNDRED).to_i64().unwrap_or(0));
        self.days.insert(day);
        match self
            .daily
            .iter_mut()
            .find(|d| d.0 == day && d.1 == kind && d.2 == currency)
        {
            Some(d) => {
                d.3 += 1;
                d.4 += cents;
            }
            None => self
                .daily
                .push((day, kind.to_string(), currency.to_string(), 1, cents)),
        }
        let purchase = kind == "PURCHASE";
        let (p, rev) = if purchase { (1, cents) } else { (0, 0) };
        let per = match self.customers.get_mut(customer) {
            Some(per) => per,
            None => self.customers.entry(customer.to_string()).or_default(),
        };
        match per.iter_mut().find(|c| c.0 == currency) {
            Some(c) => {
                c.1 += p;
                c.2 += rev;
                c.3 += 1;
                c.4 = c.4.max(ts);
            }
            None => per.push((currency.to_string(), p, rev, 1, ts)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.daily.is_empty()
    }

    pub fn clear(&mut self) {
        self.daily.clear();
        self.customers.clear();
        self.days.clear();
    }

    /// Adds the deltas to the rollup tables (keys in order, so concurrent loaders take the row locks in
    /// the same order).
    pub fn upsert(&self, c: &mut impl GenericClient) -> Result<(), postgres::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let mut daily = self.daily.clone();
        daily.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
        let days: Vec<NaiveDate> = daily.iter().map(|d| d.0).collect();
        let kinds: Vec<&str> = daily.iter().map(|d| d.1.as_str()).collect();
        let currencies: Vec<&str> = daily.iter().map(|d| d.2.as_str()).collect();
        let events: Vec<i64> = daily.iter().map(|d| d.3).collect();
        let cents: Vec<i64> = daily.iter().map(|d| d.4).collect();
        c.execute(
            &format!(
                "INSERT INTO {DAILY_ROLLUP} AS r (day, event_type, currency, events, amount)
                 SELECT d, t, c, n, a::numeric / 100
                 FROM unnest($1::date[], $2::text[], $3::text[], $4::int8[], $5::int8[]) AS u(d, t, c, n, a)
                 ON CONFLICT (day, event_type, currency) DO UPDATE
                 SET events = r.events + EXCLUDED.events, amount = r.amount + EXCLUDED.amount"
            ),
            &[&days, &kinds, &currencies, &events, &cents],
        )?;
        if !self.customers.is_empty() {
            let mut data = Vec::with_capacity(self.customers.len() * 48);
            for (id, per) in &self.customers {
                for c in per {
                    encode_delta(&mut data, id, c);
                }
            }
            c.execute(
                &format!("INSERT INTO {CUSTOMER_DELTAS} (data) VALUES ($1)"),
                &[&data],
            )?;
        }
        Ok(())
    }
}

/// One customer delta: customer id and currency (length-prefixed), purchases, revenue in cents, events,
/// last seen (µs since the epoch), big-endian.
fn encode_delta(out: &mut Vec<u8>, id: &str, c: &CustomerTotals) {
    for s in [id, c.0.as_str()] {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    for n in [c.1, c.2, c.3, c.4.and_utc().timestamp_micros()] {
        out.extend_from_slice(&n.to_be_bytes());
    }
}

type Delta = (i64, i64, i64, NaiveDateTime);

/// Adds every delta in `data` (see `encode_delta`) to `into`; false if `data` is not such a list.
fn decode_deltas(mut data: &[u8], into: &mut BTreeMap<(String, String), Delta>) -> bool {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (data.get(..n)?, data.get(n..)?);
        *data = rest;
        Some(head)
    }
    fn text(data: &mut &[u8]) -> Option<String> {
        let len = u32::from_be_bytes(take(data, 4)?.try_into().ok()?) as usize;
        String::from_utf8(take(data, len)?.to_vec()).ok()
    }
    fn int(data: &mut &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(take(data, 8)?.try_into().ok()?))
    }
    while !data.is_empty() {
        let entry = (|| {
            let key = (text(&mut data)?, text(&mut data)?);
            let (p, rev, n, ls) = (
                int(&mut data)?,
                int(&mut data)?,
                int(&mut data)?,
                int(&mut data)?,
            );
            Some((
                key,
                (
                    p,
                    rev,
                    n,
                    chrono::DateTime::from_timestamp_micros(ls)?.naive_utc(),
                ),
            ))
        })();
        let Some((key, d)) = entry else {
            return false;
        };
        let e = into.entry(key).or_insert((0, 0, 0, d.3));
        e.0 += d.0;
        e.1 += d.1;
        e.2 += d.2;
        e.3 = e.3.max(d.3);
    }
    true
}

/// Merges the customer deltas the batches stored into the customer rollup, in one transaction (a delta
/// is merged exactly once: its row goes in the same transaction). Deltas another loader is merging are
/// left to it. Returns the deltas merged.
pub fn merge_customer_deltas(client: &mut postgres::Client) -> Result<u64, postgres::Error> {
    let mut tx = client.transaction()?;
    let rows = tx.query(
        &format!(
            "SELECT id, data FROM {CUSTOMER_DELTAS} ORDER BY id LIMIT 10000 FOR UPDATE SKIP LOCKED"
        ),
        &[],
    )?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut sum: BTreeMap<(String, String), Delta> = BTreeMap::new();
    let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(r.get(0));
        if !decode_deltas(r.get(1), &mut sum) {
            log::error!(target: "ecomlogs.pg", "customer delta {} is not readable: left in {CUSTOMER_DELTAS}", r.get::<_, i64>(0));
            ids.pop();
        }
    }
    let keys: Vec<&(String, String)> = sum.keys().collect();
    let ids_c: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let currencies: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let purchases: Vec<i64> = sum.values().map(|d| d.0).collect();
    let revenue: Vec<i64> = sum.values().map(|d| d.1).collect();
    let events: Vec<i64> = sum.values().map(|d| d.2).collect();
    let last: Vec<NaiveDateTime> = sum.values().map(|d| d.3).collect();
    tx.execute(
        &format!(
            "INSERT INTO {CUSTOMER_ROLLUP} AS r
                 (customer_id, currency, purchases, revenue, events, last_seen)
             SELECT id, cur, p, rev::numeric / 100, n, ls
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[],
                         $6::timestamp[]) AS u(id, cur, p, rev, n, ls)
             {CUSTOMER_MERGE}"
        ),
        &[&ids_c, &currencies, &purchases, &revenue, &events, &last],
    )?;
    tx.execute(
        &format!("DELETE FROM {CUSTOMER_DELTAS} WHERE id = ANY($1)"),
        &[&ids],
    )?;
    tx.commit()?;
    Ok(ids.len() as u64)
}

const CUSTOMER_MERGE: &str = "ON CONFLICT (customer_id, currency) DO UPDATE SET
     purchases = r.purchases + EXCLUDED.purchases, revenue = r.revenue + EXCLUDED.revenue,
     events = r.events + EXCLUDED.events, last_seen = GREATEST(r.last_seen, EXCLUDED.last_seen)";

/// The temporary table the fallback paths put the rows they actually inserted in (see `copy`).
pub const INSERTED: &str = "pg_temp.ecomlogs_inserted";

/// SQL creating `INSERTED` (empty) for this transaction.
pub fn inserted_table_sql() -> String {
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS ecomlogs_inserted (
             event_id text, customer_id text, event_type text, amount numeric, currency text,
             event_timestamp timestamp) ON COMMIT DELETE ROWS;
         TRUNCATE {INSERTED};"
    )
}

/// Daily and customer aggregates of `source` (a table or a query with the events' columns), grouped in
/// key order, each merged into its rollup by `merge` (`+` for deltas).
fn rollup_from(source: &str) -> String {
    format!(
        "WITH d AS (
             INSERT INTO {DAILY_ROLLUP} AS r (day, event_type, currency, events, amount)
             SELECT event_timestamp::date, coalesce(event_type, ''), coalesce(currency, ''), count(*),
                    coalesce(sum(amount), 0)
             FROM {source} s WHERE event_timestamp IS NOT NULL
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
             ON CONFLICT (day, event_type, currency) DO UPDATE
             SET events = r.events + EXCLUDED.events, amount = r.amount + EXCLUDED.amount)
         INSERT INTO {CUSTOMER_ROLLUP} AS r (customer_id, currency, purchases, revenue, events, last_seen)
         SELECT coalesce(customer_id, ''), coalesce(currency, ''),
                count(*) FILTER (WHERE event_type = 'PURCHASE'),
                coalesce(sum(amount) FILTER (WHERE event_type = 'PURCHASE'), 0), count(*),
                max(event_timestamp)
         FROM {source} s GROUP BY 1, 2 ORDER BY 1, 2
         {CUSTOMER_MERGE}"
    )
}

/// Adds the rows in `INSERTED` to the rollups.
pub fn rollup_inserted(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    c.batch_execute(&rollup_from(INSERTED))
}

/// A partition retention dropped (or, on a dry run, would drop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub day: NaiveDate,
    pub rows: i64,
}

/// Drops every daily partition whose day ended more than `keep_days` days before `today`, each in a
/// transaction of its own: its customer totals are kept aside first (the daily rollups stay as they
/// are), so the rollups still count those days. Seconds, whatever the size: no DELETE.
pub fn retention(
    client: &mut postgres::Client,
    keep_days: u32,
    today: NaiveDate,
    dry_run: bool,
) -> Result<Vec<Retired>, postgres::Error> {
    let cutoff = today - Days::days(i64::from(keep_days));
    let old: Vec<NaiveDate> = partition_days(client)?
        .into_iter()
        .filter(|d| *d < cutoff)
        .collect();
    let mut out = Vec::new();
    for day in old {
        let name = partition_name(day);
        let mut tx = client.transaction()?;
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])?
            .get(0);
        if !dry_run {
            tx.batch_execute(&format!(
                "INSERT INTO {CUSTOMER_RETIRED} AS r
                     (customer_id, currency, purchases, revenue, events, last_seen)
                 SELECT coalesce(customer_id, ''), coalesce(currency, ''),
                        count(*) FILTER (WHERE event_type = 'PURCHASE'),
                        coalesce(sum(amount) FILTER (WHERE event_type = 'PURCHASE'), 0), count(*),
                        max(event_timestamp)
                 FROM {name} GROUP BY 1, 2 ORDER BY 1, 2
                 {CUSTOMER_MERGE};
                 DROP TABLE {name}"
            ))?;
            tx.commit()?;
        }
        log::info!(
            target: "ecomlogs.pg",
            "{} {name} ({rows} rows of {day}); its rollups stay",
            if dry_run { "would drop" } else { "dropped" }
        );
        out.push(Retired { day, rows });
    }
    Ok(out)
}

/// What a rebuild recomputed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Days whose daily rollup was recomputed from the table.
    pub days: u64,
    /// Customer rollup rows written (the table's totals plus what retention dropped).
    pub customers: u64,
}

/// Recomputes the rollups from the table (after an upgrade, or manual edits), within the caller's
/// transaction: the daily rollup of every day the table covers (its partitions' days and the days of the
/// rows in the default partition; days retention dropped keep theirs), and the customer rollup from the
/// rows plus what retention dropped. Loaders wait for it (the rollups are locked).
pub fn rebuild_rollups(c: &mut impl GenericClient) -> Result<Rebuilt, postgres::Error> {
    c.batch_execute(&format!(
        "LOCK TABLE {DAILY_ROLLUP}, {CUSTOMER_ROLLUP}, {CUSTOMER_DELTAS} IN EXCLUSIVE MODE"
    ))?;
    let mut days: Vec<NaiveDate> = partition_days(c)?.into_iter().collect();
    for r in c.query(
        &format!(
            "SELECT DISTINCT event_timestamp::date FROM {DEFAULT_PARTITION}
             WHERE event_timestamp IS NOT NULL"
        ),
        &[],
    )? {
        days.push(r.get(0));
    }
    c.execute(
        &format!("DELETE FROM {DAILY_ROLLUP} WHERE day = ANY($1)"),
        &[&days],
    )?;
    // Deltas not merged yet are in the table's rows too: recomputed from there, dropped here.
    c.batch_execute(&format!(
        "TRUNCATE {CUSTOMER_ROLLUP}; DELETE FROM {CUSTOMER_DELTAS}"
    ))?;
    c.batch_execute(&rollup_from(TABLE))?;
    c.batch_execute(&format!(
        "INSERT INTO {CUSTOMER_ROLLUP} AS r (customer_id, currency, purchases, revenue, events, last_seen)
         SELECT customer_id, currency, purchases, revenue, events, last_seen FROM {CUSTOMER_RETIRED}
         ORDER BY 1, 2 {CUSTOMER_MERGE}"
    ))?;
    let customers: i64 = c
        .query_one(&format!("SELECT count(*) FROM {CUSTOMER_ROLLUP}"), &[])?
        .get(0);
    Ok(Rebuilt {
        days: days.len() as u64,
        customers: customers as u64,
    })
}

// ------------------------------------------------------------------------------------ the upgrade

/// Rows moved per statement while an existing table is upgraded (progress is logged between them).
const MOVE_CHUNK: i64 = 500_000;
/// The rate the upgrade's estimate assumes (rows moved, indexed and rolled up per second, measured on the
/// 2-core machine this project is developed on: about 1M rows per 10 s).
const UPGRADE_ROWS_PER_S: f64 = 100_000.0;

/// Before the partitioned table is created: an existing table (the original system's, or an earlier
/// ecomlogs's) steps aside under `UNPARTITIONED`, and the plan is logged with an estimate.
pub fn prepare_upgrade(
    tx: &mut postgres::Transaction<'_>,
    dry_run: bool,
) -> Result<(), postgres::Error> {
    let kind: Option<i8> = tx
        .query_opt(
            "SELECT relkind::\"char\" FROM pg_class WHERE oid = to_regclass($1)",
            &[&TABLE],
        )?
        .map(|r| r.get(0));
    if kind != Some(b'r' as i8) {
        return Ok(()); // created by 0001 in this very run, or nothing to upgrade
    }
    let (rows, days): (i64, i64) = {
        let r = tx.query_one(
            &format!("SELECT count(*), count(DISTINCT event_timestamp::date) FROM {TABLE}"),
            &[],
        )?;
        (r.get(0), r.get(1))
    };
    if rows > 0 {
        log::info!(
            target: "ecomlogs.pg",
            "{} {TABLE}: {} rows over {days} days move into daily partitions and the rollups are built from them; about {}",
            if dry_run { "would upgrade" } else { "upgrading" },
            grouped(rows),
            estimate(rows)
        );
    }
    if !dry_run {
        tx.batch_execute(&format!(
            "ALTER TABLE {TABLE} RENAME TO {UNPARTITIONED};
             ALTER SEQUENCE {TABLE}_id_seq OWNED BY NONE"
        ))?;
    }
    Ok(())
}

/// 10000000 -> "10,000,000" (for the upgrade's log lines).
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn estimate(rows: i64) -> String {
    let s = (rows as f64 / UPGRADE_ROWS_PER_S).ceil().max(1.0);
    if s < 90.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min", s / 60.0)
    }
}

/// After the partitioned table is created: the waiting rows move in (their days get partitions), in
/// chunks of `MOVE_CHUNK` ids with progress, the rollups are built from them, the old table goes.
pub fn finish_upgrade(tx: &mut postgres::Transaction<'_>) -> Result<(), postgres::Error> {
    ensure_ahead(tx)?;
    if tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&UNPARTITIONED])?
        .get::<_, bool>(0)
    {
        let started = Instant::now();
        let days: Vec<NaiveDate> = tx
            .query(
                &format!(
                    "SELECT DISTINCT event_timestamp::date FROM {UNPARTITIONED}
                     WHERE event_timestamp IS NOT NULL"
                ),
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ensure_days(tx, &days)?;
        let r = tx.query_one(
            &format!("SELECT min(id), max(id), count(*) FROM {UNPARTITIONED}"),
            &[],
        )?;
        let (lo, hi, total): (Option<i32>, Option<i32>, i64) = (r.get(0), r.get(1), r.get(2));
        let mut moved = 0i64;
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let mut from = i64::from(lo);
            while from <= i64::from(hi) {
                let to = from + MOVE_CHUNK;
                moved += tx.execute(
                    &format!(
                        "INSERT INTO {TABLE} (id, event_id, customer_id, event_type, amount, currency,
                                              event_timestamp, created_at)
                         SELECT id, event_id, customer_id, event_type, amount, currency,
                                event_timestamp, created_at
                         FROM {UNPARTITIONED} WHERE id >= $1 AND id < $2"
                    ),
                    &[&(from as i32), &(to.min(i64::from(i32::MAX)) as i32)],
                )? as i64;
                from = to;
                let spent = started.elapsed().as_secs_f64();
                let left = if moved > 0 {
                    spent / moved as f64 * (total - moved).max(0) as f64
                } else {
                    0.0
                };
                log::info!(
                    target: "ecomlogs.pg",
                    "upgrade: moved {} of {} rows ({:.0}%), about {left:.0} s left",
                    grouped(moved),
                    grouped(total),
                    100.0 * moved as f64 / total.max(1) as f64
                );
            }
        }
        let rebuilt = rebuild_rollups(tx)?;
        tx.batch_execute(&format!("DROP TABLE {UNPARTITIONED}"))?;
        if total == 0 {
            return Ok(());
        }
        log::info!(
            target: "ecomlogs.pg",
            "upgrade: {} rows in {} daily partitions, rollups of {} days and {} customer rows built, in {:.1} s",
            grouped(moved),
            days.len(),
            rebuilt.days,
            rebuilt.customers,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::borrow::Cow;

    fn event(
        id: &str,
        customer: &str,
        kind: &str,
        cents: i64,
        cur: &str,
        day: u32,
    ) -> CleanEvent<'static> {
        CleanEvent {
            event_id: Cow::Owned(id.into()),
            customer_id: Some(Cow::Owned(customer.into())),
            event_type: Some(Cow::Owned(kind.into())),
            amount: Some(Decimal::new(cents, 2)),
            currency: Some(Cow::Owned(cur.into())),
            timestamp: Utc.with_ymd_and_hms(2026, 12, day, 10, 0, 0).unwrap(),
        }
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(10_000_000), "10,000,000");
        assert_eq!(grouped(-1234567), "-1,234,567");
    }

    #[test]
    fn partition_names_carry_their_day() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 9).unwrap();
        assert_eq!(partition_name(d), "kafka_events_silver_20260109");
        assert_eq!(day_of_partition(&partition_name(d)), Some(d));
        assert_eq!(day_of_partition(DEFAULT_PARTITION), None);
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        assert!(on_demand(today, today) && on_demand(d, today));
        assert!(!on_demand(NaiveDate::from_ymd_opt(1, 1, 1).unwrap(), today));
        assert!(!on_demand(
            NaiveDate::from_ymd_opt(9999, 1, 1).unwrap(),
            today
        ));
    }

    #[test]
    fn a_batch_rolls_up_by_day_type_currency_and_by_customer() {
        let mut r = Rollup::default();
        for e in [
            event("a", "C1", "PURCHASE", 1050, "EUR", 6),
            event("b", "C1", "PAGE_VIEW", 99, "EUR", 6),
            event("c", "C1", "PURCHASE", 250, "EUR", 7),
            event("d", "C2", "PURCHASE", 1, "USD", 7),
        ] {
            r.add(&e);
        }
        let mut daily = r.daily.clone();
        daily.sort();
        let d = |day| NaiveDate::from_ymd_opt(2026, 12, day).unwrap();
        assert_eq!(
            daily,
            vec![
                (d(6), "PAGE_VIEW".into(), "EUR".into(), 1, 99),
                (d(6), "PURCHASE".into(), "EUR".into(), 1, 1050),
                (d(7), "PURCHASE".into(), "EUR".into(), 1, 250),
                (d(7), "PURCHASE".into(), "USD".into(), 1, 1),
            ]
        );
        let c1 = &r.customers["C1"];
        assert_eq!(c1.len(), 1);
        assert_eq!((c1[0].1, c1[0].2, c1[0].3), (2, 1300, 3));
        assert_eq!(c1[0].4.date(), d(7));
        assert_eq!(r.days.len(), 2);
        // Stored as one delta per batch and read back to the same sums.
        let mut data = Vec::new();
        for (id, per) in &r.customers {
            for c in per {
                encode_delta(&mut data, id, c);
            }
        }
        let mut sum = BTreeMap::new();
        assert!(decode_deltas(&data, &mut sum) && decode_deltas(&data, &mut sum));
        let c1 = sum[&("C1".to_string(), "EUR".to_string())];
        assert_eq!((c1.0, c1.1, c1.2, c1.3.date()), (4, 2600, 6, d(7)));
        assert!(!decode_deltas(
            &data[..data.len() - 3],
            &mut BTreeMap::new()
        ));
        r.clear();
        assert!(r.is_empty() && r.days.is_empty());
    }

    #[test]
    fn null_columns_a_contract_allows_count_under_empty_keys() {
        // A SEARCH without amount, currency or customer (a shop contract lets them be null): counted under
        // '' as the server-side rollup's coalesce does; a REFUND's negative amount is summed as it is.
        let mut search = event("s", "", "SEARCH", 0, "", 6);
        search.amount = None;
        search.currency = None;
        search.customer_id = None;
        let mut r = Rollup::default();
        r.add(&search);
        r.add(&event("r", "C1", "REFUND", -500, "EUR", 6));
        let mut daily = r.daily.clone();
        daily.sort();
        let d = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        assert_eq!(
            daily,
            vec![
                (d, "REFUND".into(), "EUR".into(), 1, -500),
                (d, "SEARCH".into(), "".into(), 1, 0),
            ]
        );
        assert_eq!(r.customers[""][0].3, 1);
        assert_eq!(r.customers["C1"][0].2, 0, "a refund is no purchase revenue");
    }
}
