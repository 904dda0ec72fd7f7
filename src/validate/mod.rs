//! Validation of raw event bytes: the original's five rules, plus structure (UTF-8, JSON, an object, field
//! types) and fit for `kafka_events_silver` (VARCHAR lengths, DECIMAL(10,2), a timestamp that parses, no
//! NUL characters, which PostgreSQL text cannot hold). Never panics, whatever the bytes; strings are
//! borrowed from the input when they contain no escapes.
//!
//! `validate` is the default contract (`contracts/default.json`) as typed code: one borrowed parse, no
//! allocation for a valid event. `fit` is only the structure and the table's needs, which every contract
//! shares (`crate::contract` runs it after a contract's schema; the loader runs it alone).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{limits, CleanEvent, EventType};

/// Why an event was rejected. `code()` is the stable string carried in dead-letter headers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    EmptyValue,
    NotUtf8,
    MalformedJson,
    NotAnObject,
    WrongType,
    MissingCustomerId,
    InvalidEventType,
    MissingAmount,
    NonPositiveAmount,
    MissingCurrency,
    NotMarkedValid,
    MissingEventId,
    BadTimestamp,
    AmountOutOfRange,
    FieldTooLong,
    NulCharacter,
    /// Set by the loader, not by `validate`: PostgreSQL refused the row.
    DatabaseRejected,
    /// A contract's schema refused the event where no `x-reason` says why.
    ContractViolation,
    /// A contract's own reason code (its `x-reason`), interned once per process (`Reason::named`).
    Custom(&'static str),
}

impl Reason {
    /// The built-in codes (a contract may add its own: `Reason::Custom`).
    pub const ALL: [Reason; 18] = [
        Reason::EmptyValue,
        Reason::NotUtf8,
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::WrongType,
        Reason::MissingCustomerId,
        Reason::InvalidEventType,
        Reason::MissingAmount,
        Reason::NonPositiveAmount,
        Reason::MissingCurrency,
        Reason::NotMarkedValid,
        Reason::MissingEventId,
        Reason::BadTimestamp,
        Reason::AmountOutOfRange,
        Reason::FieldTooLong,
        Reason::NulCharacter,
        Reason::DatabaseRejected,
        Reason::ContractViolation,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::EmptyValue => "empty_value",
            Reason::NotUtf8 => "not_utf8",
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::WrongType => "wrong_type",
            Reason::MissingCustomerId => "missing_customer_id",
            Reason::InvalidEventType => "invalid_event_type",
            Reason::MissingAmount => "missing_amount",
            Reason::NonPositiveAmount => "non_positive_amount",
            Reason::MissingCurrency => "missing_currency",
            Reason::NotMarkedValid => "not_marked_valid",
            Reason::MissingEventId => "missing_event_id",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::AmountOutOfRange => "amount_out_of_range",
            Reason::FieldTooLong => "field_too_long",
            Reason::NulCharacter => "nul_character",
            Reason::DatabaseRejected => "database_rejected",
            Reason::ContractViolation => "contract_violation",
            Reason::Custom(code) => code,
        }
    }

    /// A built-in code's reason.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The reason a contract's `x-reason` names: a built-in one, or its own code, interned (a process
    /// loads few contracts, so the codes it keeps are few).
    pub fn named(code: &str) -> Reason {
        if let Some(r) = Reason::from_code(code) {
            return r;
        }
        let mut codes = CUSTOM.lock().unwrap_or_else(|p| p.into_inner());
        match codes.iter().find(|c| **c == code) {
            Some(c) => Reason::Custom(c),
            None => {
                let c: &'static str = Box::leak(code.to_owned().into_boxed_str());
                codes.push(c);
                Reason::Custom(c)
            }
        }
    }

    /// A code known in this process: a built-in one or one of a contract loaded here.
    pub fn known(code: &str) -> Option<Reason> {
        Reason::from_code(code).or_else(|| {
            let codes = CUSTOM.lock().unwrap_or_else(|p| p.into_inner());
            codes
                .iter()
                .find(|c| **c == code)
                .map(|c| Reason::Custom(c))
        })
    }

    /// The contracts' own codes known in this process, sorted.
    pub fn custom_codes() -> Vec<&'static str> {
        let mut codes = CUSTOM.lock().unwrap_or_else(|p| p.into_inner()).clone();
        codes.sort_unstable();
        codes
    }
}

static CUSTOM: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected event: a reason code and a readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// A JSON scalar as found in an event field; objects and arrays are skipped without building them.
#[derive(Debug)]
enum Field<'a> {
    Null,
    Bool(bool),
    Number,
    Str(Cow<'a, str>),
    Composite,
}

impl Field<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Field::Null => "null",
            Field::Bool(_) => "a boolean",
            Field::Number => "a number",
            Field::Str(_) => "a string",
            Field::Composite => "an object or array",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Field<'a>, E> {
                Ok(Field::Bool(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field<'a>, E> {
                Ok(Field::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field<'a>, E> {
                Ok(Field::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<'a>, E> {
                Ok(Field::Number)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Field<'a>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Composite)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Field<'a>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Composite)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The top level of an event. `amount` is kept as raw JSON text so that it is read exactly (no f64).
#[derive(Deserialize)]
pub(crate) struct RawEvent<'a> {
    #[serde(borrow, default)]
    event_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    customer_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    event_type: Option<Field<'a>>,
    #[serde(borrow, default)]
    amount: Option<&'a RawValue>,
    #[serde(borrow, default)]
    currency: Option<Field<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Field<'a>>,
    #[serde(borrow, default)]
    is_valid: Option<Field<'a>>,
}

fn wrong_type(field: &str, got: &Field<'_>, want: &str) -> Rejection {
    Rejection::new(
        Reason::WrongType,
        format!("{field} must be {want}, got {}", got.type_name()),
    )
}

/// Takes an optional string field: Ok(None) when absent or null, Err on any other non-string.
fn string_field<'a>(name: &str, f: Option<Field<'a>>) -> Result<Option<Cow<'a, str>>, Rejection> {
    match f {
        None | Some(Field::Null) => Ok(None),
        Some(Field::Str(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(name, &other, "a string")),
    }
}

fn check_fits(name: &str, s: &str, max_chars: usize) -> Result<(), Rejection> {
    // PostgreSQL VARCHAR(n) counts characters; bytes >= characters, so only count when bytes exceed n.
    if s.len() > max_chars && s.chars().count() > max_chars {
        return Err(Rejection::new(
            Reason::FieldTooLong,
            format!(
                "{name} has {} characters, the column holds {max_chars}",
                s.chars().count()
            ),
        ));
    }
    if s.as_bytes().contains(&0) {
        return Err(Rejection::new(
            Reason::NulCharacter,
            format!("{name} contains a NUL character, which PostgreSQL text cannot store"),
        ));
    }
    Ok(())
}

/// The amount, exact: a JSON number that fits DECIMAL(10,2) (`positive`: and above zero, the default
/// contract's rule, checked where the original checked it: after the number parses, before its places).
fn parse_amount(raw: &RawValue, positive: bool) -> Result<Decimal, Rejection> {
    let text = raw.get();
    let first = text.as_bytes().first().copied().unwrap_or(b'n');
    match first {
        b'n' => return Err(Rejection::new(Reason::MissingAmount, "amount is null")),
        b'-' | b'0'..=b'9' => {}
        b'"' => {
            return Err(Rejection::new(
                Reason::WrongType,
                "amount must be a number, got a string",
            ))
        }
        b't' | b'f' => {
            return Err(Rejection::new(
                Reason::WrongType,
                "amount must be a number, got a boolean",
            ))
        }
        _ => {
            return Err(Rejection::new(
                Reason::WrongType,
                "amount must be a number, got an object or array",
            ))
        }
    }
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str(text)
    };
    let out_of_range = || {
        Rejection::new(
            Reason::AmountOutOfRange,
            format!("amount {text} does not fit DECIMAL(10,2)"),
        )
    };
    let value = parsed.map_err(|_| out_of_range())?.normalize();
    if positive && value <= Decimal::ZERO {
        return Err(Rejection::new(
            Reason::NonPositiveAmount,
            format!("amount must be positive, got {text}"),
        ));
    }
    if value.scale() > limits::AMOUNT_SCALE {
        return Err(Rejection::new(
            Reason::AmountOutOfRange,
            format!(
                "amount {text} has more than {} decimal places",
                limits::AMOUNT_SCALE
            ),
        ));
    }
    if value.abs() > Decimal::new(limits::AMOUNT_MAX_ABS_CENTS, 2) {
        return Err(out_of_range());
    }
    Ok(value)
}

/// Accepted timestamps, in UTC: years 1 to 9999, what standard clients (psycopg2, JDBC, Python's
/// datetime) can read back. PostgreSQL itself would store year 0 as "0001-01-01 BC", which then breaks
/// every query that returns the row.
pub const TIMESTAMP_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, Rejection> {
    let parsed = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            // The original producer may have written naive ISO-8601 (Python's datetime.isoformat());
            // read as UTC.
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
                .map(|n| n.and_utc())
        });
    match parsed {
        Some(t) if TIMESTAMP_YEARS.contains(&t.year()) => Ok(t),
        Some(t) => Err(Rejection::new(
            Reason::BadTimestamp,
            format!(
                "timestamp {:?} is {} in UTC, outside the years 0001 to 9999",
                truncate(s, 64),
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        )),
        None => Err(Rejection::new(
            Reason::BadTimestamp,
            format!("timestamp {:?} is not ISO-8601", truncate(s, 64)),
        )),
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Validates one Kafka record value. `None` is a null value (a tombstone).
pub fn validate(value: Option<&[u8]>) -> Result<CleanEvent<'_>, Rejection> {
    let raw = parse(value)?;
    // The original's five rules, in its order.
    let customer_id = required("customer_id", raw.customer_id, Reason::MissingCustomerId)?;
    let event_type = match string_field("event_type", raw.event_type)? {
        Some(t) => EventType::parse(&t).ok_or_else(|| {
            let shown = truncate(&t, 64);
            Rejection::new(
                Reason::InvalidEventType,
                format!("event_type {shown:?} is not one of PAGE_VIEW, ADD_TO_CART, PURCHASE"),
            )
        })?,
        None => {
            return Err(Rejection::new(
                Reason::InvalidEventType,
                "event_type is missing",
            ))
        }
    };
    let amount = match raw.amount {
        Some(a) => parse_amount(a, true)?,
        None => return Err(Rejection::new(Reason::MissingAmount, "amount is missing")),
    };
    let currency = required("currency", raw.currency, Reason::MissingCurrency)?;
    match raw.is_valid {
        Some(Field::Bool(true)) => {}
        Some(Field::Bool(false)) => {
            return Err(Rejection::new(Reason::NotMarkedValid, "is_valid is false"))
        }
        None | Some(Field::Null) => {
            return Err(Rejection::new(
                Reason::NotMarkedValid,
                "is_valid is missing",
            ))
        }
        Some(other) => return Err(wrong_type("is_valid", &other, "a boolean")),
    }
    // Fit for the table.
    let (event_id, timestamp) = id_and_time(raw.event_id, raw.timestamp)?;
    check_fits("customer_id", &customer_id, limits::CUSTOMER_ID_CHARS)?;
    check_fits("currency", &currency, limits::CURRENCY_CHARS)?;
    Ok(CleanEvent {
        event_id,
        customer_id: Some(customer_id),
        event_type: Some(Cow::Borrowed(event_type.as_str())),
        amount: Some(amount),
        currency: Some(currency),
        timestamp,
    })
}

/// What every event needs, under any contract: a non-empty event id that fits its column, and a
/// timestamp.
fn id_and_time<'a>(
    event_id: Option<Field<'a>>,
    timestamp: Option<Field<'a>>,
) -> Result<(Cow<'a, str>, DateTime<Utc>), Rejection> {
    let event_id = match string_field("event_id", event_id)? {
        Some(id) if !id.is_empty() => id,
        _ => {
            return Err(Rejection::new(
                Reason::MissingEventId,
                "event_id is missing",
            ))
        }
    };
    let timestamp = match string_field("timestamp", timestamp)? {
        Some(t) => parse_timestamp(&t)?,
        None => return Err(Rejection::new(Reason::BadTimestamp, "timestamp is missing")),
    };
    check_fits("event_id", &event_id, limits::EVENT_ID_CHARS)?;
    Ok((event_id, timestamp))
}

/// Only what every contract shares: the structure, and what `kafka_events_silver` needs (an event id;
/// strings, a number or null where the columns are; an amount that fits DECIMAL(10,2), of any sign; a
/// timestamp; lengths and no NUL characters). The loader checks clean records with it, so that it stores
/// whatever the processor's contract accepted (a REFUND with a negative amount, a SEARCH without one).
pub fn fit(value: Option<&[u8]>) -> Result<CleanEvent<'_>, Rejection> {
    fit_raw(parse(value)?)
}

/// `fit` on an event already parsed (the contracts run it after their schema).
pub(crate) fn fit_raw(raw: RawEvent<'_>) -> Result<CleanEvent<'_>, Rejection> {
    let customer_id = string_field("customer_id", raw.customer_id)?;
    let event_type = string_field("event_type", raw.event_type)?;
    let amount = match raw.amount {
        Some(a) if a.get() != "null" => Some(parse_amount(a, false)?),
        _ => None,
    };
    let currency = string_field("currency", raw.currency)?;
    let (event_id, timestamp) = id_and_time(raw.event_id, raw.timestamp)?;
    for (name, value, max) in [
        ("customer_id", &customer_id, limits::CUSTOMER_ID_CHARS),
        ("currency", &currency, limits::CURRENCY_CHARS),
        ("event_type", &event_type, limits::EVENT_TYPE_CHARS),
    ] {
        if let Some(v) = value {
            check_fits(name, v, max)?;
        }
    }
    Ok(CleanEvent {
        event_id,
        customer_id,
        event_type,
        amount,
        currency,
        timestamp,
    })
}

/// The structure: a value, UTF-8, a JSON object (a field given twice among the seven is a wrong type).
fn parse(value: Option<&[u8]>) -> Result<RawEvent<'_>, Rejection> {
    parse_text(value).map(|(_, raw)| raw)
}

/// `parse`, also returning the value as text.
pub(crate) fn parse_text(value: Option<&[u8]>) -> Result<(&str, RawEvent<'_>), Rejection> {
    let bytes = match value {
        None => {
            return Err(Rejection::new(
                Reason::EmptyValue,
                "the record has a null value",
            ))
        }
        Some([]) => {
            return Err(Rejection::new(
                Reason::EmptyValue,
                "the record value is empty",
            ))
        }
        Some(b) => b,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        Rejection::new(
            Reason::NotUtf8,
            format!("the value is not UTF-8 (invalid byte at {at})"),
        )
    })?;
    if !text.trim_start().starts_with('{') {
        // Tell "valid JSON but not an object" from "not JSON at all".
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Rejection::new(Reason::NotAnObject, "the value is JSON but not an object"),
            Err(e) => Rejection::new(Reason::MalformedJson, format!("not JSON: {e}")),
        });
    }
    let raw = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Rejection::new(Reason::WrongType, e.to_string())
        } else {
            Rejection::new(Reason::MalformedJson, format!("not JSON: {e}"))
        }
    })?;
    Ok((text, raw))
}

/// A string field that must be present and not blank (`reason` otherwise).
fn required<'a>(
    name: &str,
    field: Option<Field<'a>>,
    reason: Reason,
) -> Result<Cow<'a, str>, Rejection> {
    match string_field(name, field)? {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(Rejection::new(reason, format!("{name} is empty"))),
        None => Err(Rejection::new(reason, format!("{name} is missing"))),
    }
}

#[cfg(test)]
mod tests;
