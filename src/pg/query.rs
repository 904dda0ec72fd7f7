//! Typed queries for reports, notebooks and the dashboard: parameters are bound by the types the server
//! infers for them (`$1`, `$2`, ...), and values come back decoded by column type (integers, exact
//! decimals, floats, booleans, dates, times, timestamps, text, bytes, NULL), never as text to re-parse.

use std::error::Error as StdError;
use std::fmt::Write;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use postgres::types::{FromSql, ToSql, Type};
use postgres::Client;
use rust_decimal::Decimal;

use crate::error::{Error, Result};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A parameter as the caller gave it; converted to the type the server expects for its placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// An exact decimal, as text (`"12.50"`, `"1E+3"`).
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    /// A timestamp without a time zone (UTC wall-clock time, as the table stores it).
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// NUMERIC, exactly as the server holds it (`"0.2500"`, `"-3.10"`, `"NaN"`).
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
}

/// A result: column names, their PostgreSQL type names, and the rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub types: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Runs one statement with `params` bound to `$1`, `$2`, ... and returns its rows, typed.
pub fn query(client: &mut Client, sql: &str, params: &[Param]) -> Result<Table> {
    let stmt = client
        .prepare(sql)
        .map_err(|e| Error::database("preparing the query", &e))?;
    if stmt.params().len() != params.len() {
        return Err(Error::Config(format!(
            "the query has {} parameter(s) ($1, $2, ...) but {} value(s) were given",
            stmt.params().len(),
            params.len()
        )));
    }
    for c in stmt.columns() {
        if !decodable(c.type_()) {
            return Err(Error::Config(format!(
                "column {:?} is of type {}, which ecomlogs.query does not convert; cast it in the SQL \
                 (for example {}::text)",
                c.name(),
                c.type_(),
                c.name()
            )));
        }
    }
    let bound = params
        .iter()
        .zip(stmt.params())
        .enumerate()
        .map(|(i, (p, ty))| {
            bind(p, ty).map_err(|m| Error::Config(format!("parameter ${}: {m}", i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref()).collect();
    let rows = client
        .query(&stmt, &refs)
        .map_err(|e| Error::database("running the query", &e))?;
    let mut table = Table {
        columns: stmt
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        types: stmt
            .columns()
            .iter()
            .map(|c| c.type_().to_string())
            .collect(),
        rows: Vec::with_capacity(rows.len()),
    };
    for row in &rows {
        let values = (0..row.len())
            .map(|i| row.try_get::<_, Cell>(i).map(|c| c.0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::database("reading the query's rows", &e))?;
        table.rows.push(values);
    }
    Ok(table)
}

fn is_text(ty: &Type) -> bool {
    <&str as FromSql>::accepts(ty)
}

fn decodable(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC
            | Type::DATE
            | Type::TIME
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::BYTEA
            | Type::JSON
            | Type::JSONB
            | Type::UUID
    ) || is_text(ty)
}

/// A SQL NULL of whatever type the placeholder has.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, BoxError> {
        Ok(postgres::types::IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

/// Converts a parameter to the Rust type that encodes the placeholder's type, or says why it cannot.
fn bind(p: &Param, ty: &Type) -> std::result::Result<Box<dyn ToSql + Sync>, String> {
    let wrong = || format!("the query expects {ty} here; got {}", describe(p));
    let out: Box<dyn ToSql + Sync> = match (p, ty) {
        (Param::Null, _) => Box::new(Null),
        (Param::Bool(b), &Type::BOOL) => Box::new(*b),
        (Param::Int(i), &Type::INT2) => Box::new(i16::try_from(*i).map_err(|_| wrong())?),
        (Param::Int(i), &Type::INT4) => Box::new(i32::try_from(*i).map_err(|_| wrong())?),
        (Param::Int(i), &Type::INT8) => Box::new(*i),
        (Param::Int(i), &Type::FLOAT4 | &Type::FLOAT8) => float(*i as f64, ty),
        (Param::Int(i), &Type::NUMERIC) => Box::new(Decimal::from(*i)),
        (Param::Float(f), &Type::FLOAT4 | &Type::FLOAT8) => float(*f, ty),
        (Param::Float(f), &Type::NUMERIC) => Box::new(Decimal::try_from(*f).map_err(|_| wrong())?),
        (Param::Decimal(d), &Type::NUMERIC) => Box::new(decimal(d).ok_or_else(wrong)?),
        (Param::Decimal(d), &Type::FLOAT4 | &Type::FLOAT8) => {
            float(f64::from_str(d).map_err(|_| wrong())?, ty)
        }
        (Param::Int(i), t) if is_text(t) => Box::new(i.to_string()),
        (Param::Float(f), t) if is_text(t) => Box::new(f.to_string()),
        (Param::Decimal(d), t) if is_text(t) => Box::new(d.clone()),
        (Param::Text(s), t) if is_text(t) => Box::new(s.clone()),
        (Param::Bytes(b), &Type::BYTEA) => Box::new(b.clone()),
        (Param::Date(d), &Type::DATE) => Box::new(*d),
        (Param::Date(d), &Type::TIMESTAMP) => Box::new(d.and_time(NaiveTime::MIN)),
        (Param::Date(d), &Type::TIMESTAMPTZ) => Box::new(d.and_time(NaiveTime::MIN).and_utc()),
        (Param::Timestamp(t), &Type::TIMESTAMP) => Box::new(*t),
        (Param::Timestamp(t), &Type::TIMESTAMPTZ) => Box::new(t.and_utc()),
        (Param::TimestampTz(t), &Type::TIMESTAMPTZ) => Box::new(*t),
        // The table keeps UTC wall-clock times in TIMESTAMP columns.
        (Param::TimestampTz(t), &Type::TIMESTAMP) => Box::new(t.naive_utc()),
        _ => return Err(wrong()),
    };
    Ok(out)
}

fn float(f: f64, ty: &Type) -> Box<dyn ToSql + Sync> {
    if *ty == Type::FLOAT4 {
        Box::new(f as f32)
    } else {
        Box::new(f)
    }
}

fn decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()
}

fn describe(p: &Param) -> String {
    match p {
        Param::Null => "None".into(),
        Param::Bool(b) => format!("a bool ({b})"),
        Param::Int(i) => format!("an int ({i})"),
        Param::Float(f) => format!("a float ({f})"),
        Param::Decimal(d) => format!("a Decimal ({d})"),
        Param::Text(s) => format!("a str ({s:?})"),
        Param::Bytes(b) => format!("bytes ({} bytes)", b.len()),
        Param::Date(d) => format!("a date ({d})"),
        Param::Timestamp(t) => format!("a datetime ({t})"),
        Param::TimestampTz(t) => format!("a datetime ({t})"),
    }
}

/// One decoded cell (any type [`decodable`] allows; NULL as [`Value::Null`]).
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        let v = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Decimal(numeric_text(raw)?),
            Type::DATE => Value::Date(NaiveDate::from_sql(ty, raw)?),
            Type::TIME => Value::Time(NaiveTime::from_sql(ty, raw)?),
            Type::TIMESTAMP => Value::Timestamp(NaiveDateTime::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => Value::TimestampTz(DateTime::<Utc>::from_sql(ty, raw)?),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::JSON => Value::Text(std::str::from_utf8(raw)?.to_string()),
            // jsonb's binary form is a version byte (1) and the JSON text.
            Type::JSONB => Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or(&[]))?.into()),
            Type::UUID => Value::Text(uuid::Uuid::from_slice(raw)?.to_string()),
            _ => Value::Text(String::from_sql(ty, raw)?),
        };
        Ok(Cell(v))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(ty: &Type) -> bool {
        decodable(ty)
    }
}

/// NUMERIC's binary form as exact decimal text: a header (digit count, weight of the first digit,
/// sign, display scale), then base-10000 digits.
pub fn numeric_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let word = |i: usize| -> Option<u16> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let header = (word(0), word(1), word(2), word(3));
    let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) = header else {
        return Err("a NUMERIC value shorter than its header".into());
    };
    let (ndigits, weight, dscale) = (ndigits as usize, weight as i16 as i32, dscale as usize);
    if raw.len() < 8 + 2 * ndigits {
        return Err("a NUMERIC value shorter than its digits".into());
    }
    let mut out = match sign {
        0x0000 => String::new(),
        0x4000 => "-".to_string(),
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => return Err(format!("a NUMERIC value with an unknown sign {sign:#x}").into()),
    };
    let digit = |k: i32| -> u16 {
        usize::try_from(k)
            .ok()
            .filter(|&k| k < ndigits)
            .and_then(|k| word(4 + k))
            .unwrap_or(0)
    };
    if weight < 0 {
        out.push('0');
    }
    for k in 0..=weight {
        let _ = if k == 0 {
            write!(out, "{}", digit(k))
        } else {
            write!(out, "{:04}", digit(k))
        };
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut k = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(k));
            k += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn numeric_binary_decodes_to_exact_text() {
        let cases: &[(Vec<u8>, &str)] = &[
            (numeric(2, 0, 0, 4, &[1234, 5678]), "1234.5678"),
            (numeric(1, -1, 0, 4, &[12]), "0.0012"),
            (numeric(1, 1, 0, 0, &[1]), "10000"),
            (numeric(2, 0, 0x4000, 2, &[5, 5000]), "-5.50"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(0, 0, 0, 0, &[]), "0"),
            (numeric(1, -2, 0, 8, &[7]), "0.00000007"),
            (numeric(3, 2, 0, 1, &[12, 0, 1]), "1200000001.0"),
            (numeric(0, 0, 0xC000, 0, &[]), "NaN"),
            (numeric(0, 0, 0xF000, 0, &[]), "-Infinity"),
        ];
        for (raw, want) in cases {
            assert_eq!(numeric_text(raw).unwrap(), *want);
        }
        assert!(numeric_text(&[0, 1]).is_err());
        assert!(numeric_text(&numeric(2, 0, 0, 0, &[1])).is_err());
    }

    #[test]
    fn parameters_take_the_placeholders_type_or_say_why_not() {
        assert!(bind(&Param::Int(7), &Type::INT4).is_ok());
        assert!(bind(&Param::Int(1 << 40), &Type::INT4).is_err());
        assert!(bind(&Param::Decimal("12.50".into()), &Type::NUMERIC).is_ok());
        assert!(bind(&Param::Decimal("1E+3".into()), &Type::NUMERIC).is_ok());
        assert!(bind(&Param::Null, &Type::DATE).is_ok());
        let e = bind(&Param::Text("2024-01-01".into()), &Type::DATE)
            .err()
            .unwrap();
        assert!(e.contains("expects date") && e.contains("a str"), "{e}");
        assert!(bind(&Param::Bool(true), &Type::INT4).is_err());
    }
}
