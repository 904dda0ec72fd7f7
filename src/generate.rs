//! Synthetic e-commerce events, ~25% deliberately invalid (each invalid event breaks exactly one rule, so
//! every rule of the validator gets exercised). Seedable: the same seed gives the same events except for
//! the wall-clock timestamp.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::event::EventType;

/// The ways a generated event is made invalid, one rule each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    MissingCustomerId,
    EmptyCustomerId,
    UnknownEventType,
    ZeroAmount,
    NegativeAmount,
    MissingAmount,
    MissingCurrency,
    NotMarkedValid,
}

impl InvalidKind {
    pub const ALL: [InvalidKind; 8] = [
        InvalidKind::MissingCustomerId,
        InvalidKind::EmptyCustomerId,
        InvalidKind::UnknownEventType,
        InvalidKind::ZeroAmount,
        InvalidKind::NegativeAmount,
        InvalidKind::MissingAmount,
        InvalidKind::MissingCurrency,
        InvalidKind::NotMarkedValid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::MissingCustomerId => "missing_customer_id",
            InvalidKind::EmptyCustomerId => "empty_customer_id",
            InvalidKind::UnknownEventType => "unknown_event_type",
            InvalidKind::ZeroAmount => "zero_amount",
            InvalidKind::NegativeAmount => "negative_amount",
            InvalidKind::MissingAmount => "missing_amount",
            InvalidKind::MissingCurrency => "missing_currency",
            InvalidKind::NotMarkedValid => "not_marked_valid",
        }
    }
}

/// What the generator meant an event to be (ground truth for tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intended {
    Valid,
    Invalid(InvalidKind),
}

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Share of events made invalid, 0.0..=1.0. The original's is 0.25.
    pub invalid_ratio: f64,
    /// None: seeded from the OS.
    pub seed: Option<u64>,
    /// Distinct customers (`CUST-00001` ...); a few of them buy far more than the rest.
    pub customers: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            invalid_ratio: 0.25,
            seed: None,
            customers: 10_000,
        }
    }
}

const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];
const BOGUS_EVENT_TYPES: [&str; 4] = ["CHECKOUT", "page_view", "REFUND", "UNKNOWN"];

#[derive(Serialize)]
struct RawEventJson<'a> {
    event_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<&'a str>,
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    timestamp: &'a str,
    is_valid: bool,
}

/// Formats "now" as `YYYY-MM-DDTHH:MM:SS.mmmZ`, re-rendering the date part only when the second changes
/// (chrono's formatter costs more than the rest of an event).
struct Clock {
    second: i64,
    text: [u8; 24],
}

impl Clock {
    fn new() -> Self {
        Clock {
            second: i64::MIN,
            text: *b"1970-01-01T00:00:00.000Z",
        }
    }

    fn now(&mut self) -> &str {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = d.as_secs() as i64;
        if secs != self.second {
            self.second = secs;
            let dt = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default();
            let head = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
            self.text[..19].copy_from_slice(&head.as_bytes()[..19]);
        }
        let ms = d.subsec_millis();
        self.text[20] = b'0' + (ms / 100) as u8;
        self.text[21] = b'0' + (ms / 10 % 10) as u8;
        self.text[22] = b'0' + (ms % 10) as u8;
        // Only ASCII digits were written into an ASCII buffer.
        std::str::from_utf8(&self.text).expect("ascii")
    }
}

pub struct Generator {
    rng: SmallRng,
    invalid_ratio: f64,
    customer_ids: Vec<String>,
    clock: Clock,
}

impl Generator {
    pub fn new(config: &GeneratorConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let customers = config.customers.max(1);
        Generator {
            rng,
            invalid_ratio: config.invalid_ratio.clamp(0.0, 1.0),
            customer_ids: (1..=customers).map(|i| format!("CUST-{i:05}")).collect(),
            clock: Clock::new(),
        }
    }

    /// Writes the next event's JSON into `value` and its Kafka key (the customer id, empty when the event
    /// has none) into `key`. Both buffers are cleared first.
    pub fn next_into(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Intended {
        key.clear();
        value.clear();
        let intended = if self.rng.random_bool(self.invalid_ratio) {
            Intended::Invalid(InvalidKind::ALL[self.rng.random_range(0..InvalidKind::ALL.len())])
        } else {
            Intended::Valid
        };
        let rng = &mut self.rng;

        // A realistic funnel: many views, fewer carts, fewer purchases.
        let roll: u32 = rng.random_range(0..100);
        let event_type = if roll < 70 {
            EventType::PageView
        } else if roll < 90 {
            EventType::AddToCart
        } else {
            EventType::Purchase
        };
        let cents: i64 = match event_type {
            EventType::Purchase => rng.random_range(1_000..=200_000),
            _ => rng.random_range(500..=50_000),
        };
        // Squaring a uniform draw skews towards low ids: a few customers are much more active.
        let u: f64 = rng.random();
        let idx = ((u * u) * self.customer_ids.len() as f64) as usize;
        let customer = self.customer_ids[idx.min(self.customer_ids.len() - 1)].as_str();
        let currency = CURRENCIES[match rng.random_range(0..10) {
            0..=6 => 0,
            7..=8 => 1,
            _ => 2,
        }];
        let uuid = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let bogus_type = BOGUS_EVENT_TYPES[rng.random_range(0..BOGUS_EVENT_TYPES.len())];

        let mut doc = RawEventJson {
            event_id: "",
            customer_id: Some(customer),
            event_type: event_type.as_str(),
            amount: Some(cents as f64 / 100.0),
            currency: Some(currency),
            timestamp: "",
            is_valid: true,
        };
        if let Intended::Invalid(kind) = intended {
            match kind {
                InvalidKind::MissingCustomerId => doc.customer_id = None,
                InvalidKind::EmptyCustomerId => doc.customer_id = Some(""),
                InvalidKind::UnknownEventType => doc.event_type = bogus_type,
                InvalidKind::ZeroAmount => doc.amount = Some(0.0),
                InvalidKind::NegativeAmount => doc.amount = Some(-(cents as f64) / 100.0),
                InvalidKind::MissingAmount => doc.amount = None,
                InvalidKind::MissingCurrency => doc.currency = None,
                InvalidKind::NotMarkedValid => doc.is_valid = false,
            }
        }
        if let Some(c) = doc.customer_id {
            key.extend_from_slice(c.as_bytes());
        }
        let mut id_buf = [0u8; 36];
        doc.event_id = uuid.hyphenated().encode_lower(&mut id_buf);
        doc.timestamp = self.clock.now();
        serde_json::to_writer(&mut *value, &doc).expect("serialising an event into a Vec");
        intended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn same_seed_same_events_apart_from_time() {
        let cfg = GeneratorConfig {
            seed: Some(7),
            ..Default::default()
        };
        let (mut a, mut b) = (Generator::new(&cfg), Generator::new(&cfg));
        let (mut k1, mut v1, mut k2, mut v2) = (vec![], vec![], vec![], vec![]);
        for _ in 0..1000 {
            assert_eq!(a.next_into(&mut k1, &mut v1), b.next_into(&mut k2, &mut v2));
            let strip = |v: &[u8]| {
                let mut j: serde_json::Value = serde_json::from_slice(v).unwrap();
                j.as_object_mut().unwrap().remove("timestamp");
                j
            };
            assert_eq!(strip(&v1), strip(&v2));
            assert_eq!(k1, k2);
        }
    }

    #[test]
    fn ratio_and_mix() {
        let mut g = Generator::new(&GeneratorConfig {
            seed: Some(42),
            ..Default::default()
        });
        let (mut k, mut v) = (vec![], vec![]);
        let mut kinds: HashMap<Intended, u32> = HashMap::new();
        let mut types: HashMap<String, u32> = HashMap::new();
        let n = 100_000;
        for _ in 0..n {
            let i = g.next_into(&mut k, &mut v);
            *kinds.entry(i).or_default() += 1;
            if i == Intended::Valid {
                let j: serde_json::Value = serde_json::from_slice(&v).unwrap();
                *types
                    .entry(j["event_type"].as_str().unwrap().to_string())
                    .or_default() += 1;
                assert_eq!(k, j["customer_id"].as_str().unwrap().as_bytes());
            }
        }
        let invalid = n - kinds[&Intended::Valid];
        let ratio = invalid as f64 / n as f64;
        assert!((ratio - 0.25).abs() < 0.02, "invalid ratio {ratio}");
        for kind in InvalidKind::ALL {
            assert!(
                kinds.get(&Intended::Invalid(kind)).copied().unwrap_or(0) > 1000,
                "{kind:?}"
            );
        }
        assert!(types["PAGE_VIEW"] > types["ADD_TO_CART"]);
        assert!(types["ADD_TO_CART"] > types["PURCHASE"]);
    }
}
