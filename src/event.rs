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
    /// DECIMAL(10, 2): at most 8 digits before the point.
    pub const AMOUNT_MAX_ABS_CENTS: i64 = 9_999_999_999; // 99,999,999.99
    pub const AMOUNT_SCALE: u32 = 2;
}

/// An event that passed every rule and fits the table. Strings borrow from the raw bytes when the JSON
/// had no escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanEvent<'a> {
    pub event_id: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
    pub event_type: EventType,
    /// Exact, at most two decimal places, within DECIMAL(10,2).
    pub amount: Decimal,
    pub currency: Cow<'a, str>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize)]
struct CanonicalJson<'a> {
    event_id: &'a str,
    customer_id: &'a str,
    event_type: &'static str,
    amount: f64,
    currency: &'a str,
    timestamp: &'a str,
    is_valid: bool,
}

impl CleanEvent<'_> {
    /// The canonical JSON written to `clean_events`: the original's seven fields in the original order,
    /// `amount` as a JSON number (exact to the cent: any DECIMAL(10,2) value round-trips through f64's
    /// shortest representation), `timestamp` in RFC 3339 UTC with a `Z` and only the sub-second digits
    /// needed, `is_valid` true. Unknown input fields are dropped.
    pub fn write_canonical_json(&self, out: &mut Vec<u8>) {
        let ts = self.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let doc = CanonicalJson {
            event_id: &self.event_id,
            customer_id: &self.customer_id,
            event_type: self.event_type.as_str(),
            amount: self.amount.to_f64().unwrap_or(0.0),
            currency: &self.currency,
            timestamp: &ts,
            is_valid: true,
        };
        // Serialising plain strings and numbers into a Vec cannot fail.
        serde_json::to_writer(out, &doc).expect("serialising a CleanEvent");
    }

    pub fn into_owned(self) -> CleanEvent<'static> {
        CleanEvent {
            event_id: Cow::Owned(self.event_id.into_owned()),
            customer_id: Cow::Owned(self.customer_id.into_owned()),
            event_type: self.event_type,
            amount: self.amount,
            currency: Cow::Owned(self.currency.into_owned()),
            timestamp: self.timestamp,
        }
    }
}
