//! The binary COPY of clean events: rows encoded as COPY tuples as they arrive, sent in large chunks.

use std::borrow::Cow;
use std::io::Write;

use bytes::{BufMut, BytesMut};
use chrono::NaiveDateTime;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{CopyInWriter, Transaction};
use rust_decimal::Decimal;

use super::{history, TABLE};
use crate::event::CleanEvent;

const COLUMNS: &str = "event_id, customer_id, event_type, amount, currency, event_timestamp";
/// The unique key that stores each event once (see migration 0006).
const KEY: &str = "event_timestamp, event_id";

/// Bytes handed to the connection at a time. `postgres::binary_copy::BinaryCopyInWriter` enters the
/// client's async runtime once per row, a visible share of the loader's CPU (bench/PROFILE.md);
/// encoding rows into a buffer and sending it in large chunks enters it once per chunk.
const COPY_CHUNK: usize = 1 << 20;

/// The binary COPY signature, flags and header-extension length ("Binary Format" in the COPY docs).
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Appends one value of the binary COPY tuple format: its length (i32), then the bytes `ToSql` wrote.
fn put_field<T: ToSql>(buf: &mut BytesMut, value: &T, ty: &Type) {
    let at = buf.len();
    buf.put_i32(0);
    // Every column value comes from a validated CleanEvent: strings, a NUMERIC(10,2)-sized Decimal and a
    // timestamp in PostgreSQL's range, whose encoders cannot fail (they only write bytes).
    let len = match value.to_sql(ty, buf) {
        Ok(IsNull::No) => (buf.len() - at - 4) as i32,
        Ok(IsNull::Yes) => -1,
        Err(e) => unreachable!("encoding a validated {ty} value failed: {e}"),
    };
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_row(buf: &mut BytesMut, e: &CleanEvent<'_>) {
    let ts: NaiveDateTime = e.timestamp.naive_utc();
    buf.put_i16(6);
    put_field(buf, &e.event_id.as_ref(), &Type::VARCHAR);
    put_field(buf, &e.customer_id.as_deref(), &Type::VARCHAR);
    put_field(buf, &e.event_type.as_deref(), &Type::VARCHAR);
    put_field(buf, &e.amount, &Type::NUMERIC);
    put_field(buf, &e.currency.as_deref(), &Type::VARCHAR);
    put_field(buf, &ts, &Type::TIMESTAMP);
}

/// Sends `buf` to the server; a failure there is the connection's `postgres::Error`.
fn send_chunk(sink: &mut CopyInWriter<'_>, buf: &mut BytesMut) -> Result<(), postgres::Error> {
    let sent = sink.write_all(buf).and_then(|()| sink.flush());
    buf.clear();
    sent.map_err(|e| {
        match e
            .into_inner()
            .map(|inner| inner.downcast::<postgres::Error>())
        {
            Some(Ok(pg)) => *pg,
            // CopyInWriter's only error source is the connection (see its Write impl).
            _ => unreachable!("CopyInWriter failed without a postgres::Error"),
        }
    })
}

/// A batch of rows already encoded as binary COPY tuples, back to back in one buffer: a row costs no
/// allocation of its own, and rows can be sent in any order.
#[derive(Default)]
pub struct CopyRows {
    buf: BytesMut,
    /// Per row: the sort key (see [`CopyRows::key_order`]) and where its tuple ends in `buf`.
    rows: Vec<(u128, usize)>,
}

impl CopyRows {
    pub fn with_capacity(rows: usize) -> Self {
        CopyRows {
            buf: BytesMut::with_capacity(rows * 128),
            rows: Vec::with_capacity(rows),
        }
    }

    pub fn push(&mut self, e: &CleanEvent<'_>) {
        encode_row(&mut self.buf, e);
        // (timestamp, event id): the unique key's order. The timestamp's sign bit flipped so that the
        // unsigned comparison orders it as the signed value; then the id's first 8 bytes.
        let ts = (e.timestamp.timestamp_micros() as u64) ^ (1 << 63);
        let mut prefix = [0u8; 8];
        let n = e.event_id.len().min(8);
        prefix[..n].copy_from_slice(&e.event_id.as_bytes()[..n]);
        let key = (u128::from(ts) << 64) | u128::from(u64::from_be_bytes(prefix));
        self.rows.push((key, self.buf.len()));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows.clear();
    }

    /// Row `i`'s tuple.
    pub fn tuple(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.rows[i - 1].1 };
        &self.buf[start..self.rows[i].1]
    }

    /// The tuples of the rows in `range`, in arrival order.
    pub fn tuples(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &[u8]> + '_ {
        range.map(|i| self.tuple(i))
    }

    /// Row `i` decoded back (for a row the database rejected, which goes to the dead-letter topic).
    pub fn event(&self, i: usize) -> CleanEvent<'_> {
        decode_row(self.tuple(i))
    }

    /// The order in which to COPY the rows: the unique key's, by timestamp then the first 8 bytes of the
    /// event id (byte order, as PostgreSQL's C collation and UUID text in any collation compare).
    /// Inserting a batch in the index's order turns its leaf-page visits into one sweep per day's
    /// partition, which costs PostgreSQL less CPU (figures in `bench/PROFILE.md`). Only the cost depends
    /// on it, never the result: any order stores the same rows.
    pub fn key_order(&self) -> Vec<u32> {
        let mut keyed: Vec<(u128, u32)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (*k, i as u32))
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|(_, i)| i).collect()
    }
}

/// The inverse of `encode_row`, for tuples it wrote.
fn decode_row(mut t: &[u8]) -> CleanEvent<'_> {
    /// The next value; None for NULL (length -1).
    fn next<'a>(t: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = i32::from_be_bytes(t[..4].try_into().expect("4 bytes"));
        *t = &t[4..];
        let len = usize::try_from(len).ok()?;
        let (v, rest) = t.split_at(len);
        *t = rest;
        Some(v)
    }
    fn text<'a>(t: &mut &'a [u8]) -> Option<Cow<'a, str>> {
        next(t).map(|v| Cow::Borrowed(std::str::from_utf8(v).expect("encode_row wrote UTF-8")))
    }
    t = &t[2..];
    let event_id = text(&mut t).expect("encode_row wrote an event id");
    let customer_id = text(&mut t);
    let event_type = text(&mut t);
    let amount = next(&mut t)
        .map(|v| Decimal::from_sql(&Type::NUMERIC, v).expect("encode_row wrote a NUMERIC"));
    let currency = text(&mut t);
    let ts = NaiveDateTime::from_sql(&Type::TIMESTAMP, next(&mut t).expect("a timestamp"))
        .expect("encode_row wrote a TIMESTAMP");
    CleanEvent {
        event_id,
        customer_id,
        event_type,
        amount,
        currency,
        timestamp: ts.and_utc(),
    }
}

/// Binary COPY of the encoded `tuples` into `table` within `tx`, in 1 MB messages.
pub fn copy_rows<'a, I>(
    tx: &mut Transaction<'_>,
    table: &str,
    tuples: I,
) -> Result<u64, postgres::Error>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut sink = tx.copy_in(&format!(
        "COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"
    ))?;
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
    buf.put_slice(COPY_HEADER);
    for t in tuples {
        buf.put_slice(t);
        if buf.len() >= COPY_CHUNK {
            send_chunk(&mut sink, &mut buf)?;
        }
    }
    buf.put_i16(-1);
    send_chunk(&mut sink, &mut buf)?;
    sink.finish()
}

/// Fallback for a batch that hit the unique key: COPY into a staging table, then insert what is new,
/// keeping the rows actually inserted in `history::INSERTED` (for the rollups). Returns how many.
pub fn copy_rows_dedup<'a, I>(tx: &mut Transaction<'_>, tuples: I) -> Result<u64, postgres::Error>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS ecomlogs_staging
             (LIKE {TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
         TRUNCATE ecomlogs_staging;
         {}",
        history::inserted_table_sql()
    ))?;
    copy_rows(tx, "ecomlogs_staging", tuples)?;
    tx.execute(
        &format!(
            "WITH ins AS (
                 INSERT INTO {TABLE} ({COLUMNS})
                 SELECT DISTINCT ON ({KEY}) {COLUMNS} FROM ecomlogs_staging ORDER BY {KEY}
                 ON CONFLICT ({KEY}) DO NOTHING
                 RETURNING {COLUMNS})
             INSERT INTO {} SELECT * FROM ins",
            history::INSERTED
        ),
        &[],
    )
}

/// What `insert_isolating` did with a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Isolated {
    pub inserted: u64,
    /// (index in the batch, SQLSTATE, server message) of each row the table refused.
    pub rejected: Vec<(usize, String, String)>,
}

/// Rows per set-based attempt inside `insert_isolating`: with 0.5% bad rows ~92% of chunks go in whole.
/// Measured at 0.4% refused rows, batch 500: chunks of 8-16 rows beat 1 (+30% time), 64 (+13%) and 256 (+33%).
const ISOLATE_CHUNK: i32 = 16;

/// A batch with rows the table refuses (CHECK, NOT NULL, a trigger, a value out of range), in one
/// server-side pass: COPY into a staging table (in batch order), then a PL/pgSQL loop inserts it in chunks
/// of `ISOLATE_CHUNK` rows, each under its own exception block, and a chunk that fails row by row, so that
/// each refused row is named with its SQLSTATE and every other row is stored (or skipped as a duplicate by
/// `ON CONFLICT (event_timestamp, event_id) DO NOTHING`; the rows inserted are kept in
/// `history::INSERTED` for the rollups). Errors other than a row-level refusal (SQLSTATE classes 22, 23,
/// 44, 54) propagate. The function is a temporary one (`pg_temp`): no schema change, no privilege beyond
/// what the staging table needs. The staging columns are unconstrained (text, numeric: the same binary
/// COPY format as the table's varchar and decimal) so that a value too long or too large for the table is
/// refused by the table, row by row, not by the staging COPY.
pub fn insert_isolating<'a, I>(
    tx: &mut Transaction<'_>,
    tuples: I,
) -> Result<Isolated, postgres::Error>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    #[allow(non_snake_case)]
    let (INSERTED, INSERTED_SQL) = (history::INSERTED, history::inserted_table_sql());
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS ecomlogs_isolate (
             event_id text, customer_id text, event_type text, amount numeric, currency text,
             event_timestamp timestamp, ecomlogs_idx bigserial PRIMARY KEY) ON COMMIT DELETE ROWS;
         TRUNCATE ecomlogs_isolate;
         {INSERTED_SQL}
         CREATE OR REPLACE FUNCTION pg_temp.ecomlogs_insert_isolating(
             chunk int, OUT inserted bigint, OUT positions int[], OUT sqlstates text[], OUT messages text[])
         LANGUAGE plpgsql AS $fn$
         DECLARE
             first bigint; last bigint; lo bigint; n bigint; r record; st text; msg text;
         BEGIN
             inserted := 0; positions := '{{}}'; sqlstates := '{{}}'; messages := '{{}}';
             SELECT min(ecomlogs_idx), max(ecomlogs_idx) INTO first, last FROM ecomlogs_isolate;
             lo := first;
             WHILE lo <= last LOOP
                 BEGIN
                     WITH ins AS (
                         INSERT INTO {TABLE} ({COLUMNS})
                         SELECT {COLUMNS} FROM ecomlogs_isolate
                         WHERE ecomlogs_idx BETWEEN lo AND lo + chunk - 1 ORDER BY ecomlogs_idx
                         ON CONFLICT ({KEY}) DO NOTHING RETURNING {COLUMNS})
                     INSERT INTO {INSERTED} SELECT * FROM ins;
                     GET DIAGNOSTICS n = ROW_COUNT;
                     inserted := inserted + n;
                 EXCEPTION WHEN data_exception OR integrity_constraint_violation
                               OR program_limit_exceeded OR with_check_option_violation THEN
                     FOR r IN SELECT * FROM ecomlogs_isolate
                              WHERE ecomlogs_idx BETWEEN lo AND lo + chunk - 1 ORDER BY ecomlogs_idx LOOP
                         BEGIN
                             WITH ins AS (
                                 INSERT INTO {TABLE} ({COLUMNS})
                                 VALUES (r.event_id, r.customer_id, r.event_type, r.amount, r.currency,
                                         r.event_timestamp)
                                 ON CONFLICT ({KEY}) DO NOTHING RETURNING {COLUMNS})
                             INSERT INTO {INSERTED} SELECT * FROM ins;
                             GET DIAGNOSTICS n = ROW_COUNT;
                             inserted := inserted + n;
                         EXCEPTION WHEN data_exception OR integrity_constraint_violation
                                       OR program_limit_exceeded OR with_check_option_violation THEN
                             GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                             positions := positions || (r.ecomlogs_idx - first)::int;
                             sqlstates := sqlstates || st;
                             messages := messages || msg;
                         END;
                     END LOOP;
                 END;
                 lo := lo + chunk;
             END LOOP;
         END
         $fn$;"
    ))?;
    copy_rows(tx, "ecomlogs_isolate", tuples)?;
    let row = tx.query_one(
        "SELECT * FROM pg_temp.ecomlogs_insert_isolating($1)",
        &[&ISOLATE_CHUNK],
    )?;
    let (positions, sqlstates, messages): (Vec<i32>, Vec<String>, Vec<String>) =
        (row.get(1), row.get(2), row.get(3));
    Ok(Isolated {
        inserted: row.get::<_, i64>(0) as u64,
        rejected: positions
            .into_iter()
            .zip(sqlstates)
            .zip(messages)
            .map(|((i, s), m)| (i as usize, s, m))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn field(buf: &[u8], at: &mut usize) -> Option<Vec<u8>> {
        let len = i32::from_be_bytes(buf[*at..*at + 4].try_into().unwrap());
        *at += 4;
        if len < 0 {
            return None;
        }
        let v = buf[*at..*at + len as usize].to_vec();
        *at += len as usize;
        Some(v)
    }

    #[test]
    fn binary_copy_tuple_layout() {
        let e = CleanEvent {
            event_id: Cow::Borrowed("0b9f2a8e-1c3d-4e5f-8a7b-6c5d4e3f2a1b"),
            customer_id: Some(Cow::Borrowed("cust_42")),
            event_type: Some(Cow::Borrowed("PURCHASE")),
            amount: Some(Decimal::new(12345, 2)),
            currency: Some(Cow::Borrowed("EUR")),
            timestamp: Utc.with_ymd_and_hms(2000, 1, 2, 0, 0, 1).unwrap(),
        };
        let mut buf = BytesMut::new();
        buf.put_slice(COPY_HEADER);
        encode_row(&mut buf, &e);
        assert_eq!(&buf[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(COPY_HEADER.len(), 19);
        let mut at = COPY_HEADER.len();
        assert_eq!(i16::from_be_bytes([buf[at], buf[at + 1]]), 6);
        at += 2;
        let text = |v: Option<Vec<u8>>| String::from_utf8(v.unwrap()).unwrap();
        assert_eq!(text(field(&buf, &mut at)), e.event_id);
        assert_eq!(text(field(&buf, &mut at)), "cust_42");
        assert_eq!(text(field(&buf, &mut at)), "PURCHASE");
        // NUMERIC 123.45: 2 base-10000 digits (123, 4500), weight 0, positive, scale 2.
        assert_eq!(
            field(&buf, &mut at).unwrap(),
            [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
        );
        assert_eq!(text(field(&buf, &mut at)), "EUR");
        // TIMESTAMP: microseconds since 2000-01-01 00:00:00.
        let micros = i64::from_be_bytes(field(&buf, &mut at).unwrap().try_into().unwrap());
        assert_eq!(micros, 86_401_000_000);
        assert_eq!(at, buf.len());
    }

    fn event(id: &'static str, cents: i64) -> CleanEvent<'static> {
        CleanEvent {
            event_id: Cow::Borrowed(id),
            customer_id: Some(Cow::Borrowed("cust_7")),
            event_type: Some(Cow::Borrowed("ADD_TO_CART")),
            amount: Some(Decimal::new(cents, 2)),
            currency: Some(Cow::Borrowed("USD")),
            timestamp: Utc.with_ymd_and_hms(2026, 11, 26, 21, 30, 0).unwrap()
                + chrono::Duration::microseconds(123_456),
        }
    }

    #[test]
    fn copy_rows_keep_tuples_and_decode_back() {
        let events = [
            event("b-1", 1),
            event("a-2", 99_999_999),
            event("c-3", 1050),
        ];
        let mut rows = CopyRows::with_capacity(1);
        for e in &events {
            rows.push(e);
        }
        assert_eq!(rows.len(), 3);
        for (i, e) in events.iter().enumerate() {
            let mut alone = BytesMut::new();
            encode_row(&mut alone, e);
            assert_eq!(rows.tuple(i), &alone[..]);
            assert_eq!(&rows.event(i), e);
        }
        rows.clear();
        assert!(rows.is_empty());
        rows.push(&events[2]);
        assert_eq!(rows.event(0), events[2]);
    }

    #[test]
    fn null_columns_round_trip() {
        let mut e = event("s-1", 0);
        e.amount = None;
        e.currency = None;
        e.customer_id = None;
        e.event_type = Some(Cow::Borrowed("SEARCH"));
        let mut rows = CopyRows::default();
        rows.push(&e);
        assert_eq!(rows.event(0), e);
    }

    #[test]
    fn key_order_sorts_by_id_bytes_and_keeps_every_row() {
        let ids = [
            "f0000000-0000-4000-8000-000000000000",
            "0b9f2a8e-1c3d-4e5f-8a7b-6c5d4e3f2a1b",
            "",
            "0b9f2a8e-1c3d-4e5f-8a7b-6c5d4e3f2a1a",
            "a",
            "0b9f2a8e-1c3d-4e5f",
        ];
        let mut rows = CopyRows::default();
        for id in ids {
            rows.push(&event(id, 100));
        }
        let order = rows.key_order();
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..ids.len() as u32).collect::<Vec<_>>());
        let sorted: Vec<&str> = order.iter().map(|&i| ids[i as usize]).collect();
        // By the first 16 bytes; ids equal there keep no particular order among themselves.
        let prefix = |s: &str| s.as_bytes()[..s.len().min(16)].to_vec();
        assert!(
            sorted.windows(2).all(|w| prefix(w[0]) <= prefix(w[1])),
            "{sorted:?}"
        );
        assert_eq!(sorted[0], "");
        assert_eq!(sorted[5], "f0000000-0000-4000-8000-000000000000");
    }
}
