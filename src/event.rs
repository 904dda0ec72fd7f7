//! The event model and its JSON form, as the original producer wrote it:
//! `{"event_id": UUID, "customer_id": str, "event_type": str, "amount": number, "currency": str,
//!   "timestamp": ISO-8601 UTC, "is_valid": bool}`; the Kafka key is `customer_id`.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;

/// The three event types the original accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    PageView,
    AddToCart,
    Purchase,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::PageView,
        EventType::AddToCart,
        EventType::Purchase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "PAGE_VIEW",
            EventType::AddToCart => "ADD_TO_CART",
            EventType::Purchase => "PURCHASE",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "PAGE_VIEW" => Some(EventType::PageView),
            "ADD_TO_CART" => Some(EventType::AddToCart),
            "PURCHASE" => Some(EventType::Purchase),
            _ => None,
        }
    }
}

/// Column limits of `ecom_kafka.kafka_events_silver` (the original DDL).
pub mod limits {
    pub const EVENT_ID_CHARS: usize = 255;
    pub const CUSTOMER_ID_CHARS: usize = 255;
    pub const CURRENCY_CHARS: usize = 10;
    pub const EVENT_TYPE_CHARS: usize = 50;
    /// DECIMAL(10, 2): at most 8 digits before the point.
    pub const AMOUNT_MAX_ABS_CENTS: i64 = 9_999_999_999; // 99,999,999.99
    pub const AMOUNT_SCALE: u32 = 2;
}

/// An event that passed its contract and fits the table. Strings borrow from the raw bytes when the JSON
/// had no escapes. Under the default contract every field is there (`Some`); another contract may leave
/// out what the table can hold as NULL (a SEARCH without an amount) and name event types of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub customer_id: Option<Cow<'a, str>>,
    /// At most `limits::EVENT_TYPE_CHARS` characters.
    pub event_type: Option<Cow<'a, str>>,
    /// Exact, at most two decimal places, within DECIMAL(10,2).
    pub amount: Option<Decimal>,
    pub currency: Option<Cow<'a, str>>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize)]
struct CanonicalJson<'a> {
    event_id: &'a str,
    customer_id: Option<&'a str>,
    event_type: Option<&'a str>,
    amount: Option<f64>,
    currency: Option<&'a str>,
    timestamp: &'a str,
    is_valid: bool,
}

impl CleanEvent<'_> {
    /// The canonical JSON written to `clean_events`: the original's seven fields in the original order,
    /// `amount` as a JSON number (exact to the cent: any DECIMAL(10,2) value round-trips through f64's
    /// shortest representation), `timestamp` in RFC 3339 UTC with a `Z` and only the sub-second digits
    /// needed, `is_valid` true; a field the event did not have is `null`. Unknown input fields are
    /// dropped.
    pub fn write_canonical_json(&self, out: &mut Vec<u8>) {
        let ts = self.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let doc = CanonicalJson {
            event_id: &self.event_id,
            customer_id: self.customer_id.as_deref(),
            event_type: self.event_type.as_deref(),
            amount: self.amount.map(|a| a.to_f64().unwrap_or(0.0)),
            currency: self.currency.as_deref(),
            timestamp: &ts,
            is_valid: true,
        };
        // Serialising plain strings and numbers into a Vec cannot fail.
        serde_json::to_writer(out, &doc).expect("serialising a CleanEvent");
    }

    /// The event type as text ("-" when it has none), for log lines.
    pub fn event_type_text(&self) -> &str {
        self.event_type.as_deref().unwrap_or("-")
    }

    pub fn into_owned(self) -> CleanEvent<'static> {
        fn owned(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        CleanEvent {
            event_id: owned(self.event_id),
            customer_id: self.customer_id.map(owned),
            event_type: self.event_type.map(owned),
            amount: self.amount,
            currency: self.currency.map(owned),
            timestamp: self.timestamp,
        }
    }
}
