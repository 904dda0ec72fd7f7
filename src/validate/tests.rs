use super::*;
use crate::generate::{Generator, GeneratorConfig, Intended, InvalidKind};

const GOOD: &str = r#"{"event_id":"0b7c1c9e-7d1e-4a43-9a3e-111111111111","customer_id":"CUST-00042","event_type":"PURCHASE","amount":129.99,"currency":"USD","timestamp":"2026-11-26T13:18:27.123Z","is_valid":true}"#;

fn with(field: &str, json: &str) -> String {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(GOOD).unwrap();
    if json == "<remove>" {
        v.remove(field);
    } else {
        v.insert(field.into(), serde_json::from_str(json).unwrap());
    }
    serde_json::to_string(&v).unwrap()
}

fn reason(bytes: &[u8]) -> Option<Reason> {
    validate(Some(bytes)).err().map(|r| r.reason)
}

#[test]
fn good_event_is_clean_and_exact() {
    let e = validate(Some(GOOD.as_bytes())).unwrap();
    assert_eq!(e.customer_id.as_deref(), Some("CUST-00042"));
    assert!(
        matches!(e.customer_id, Some(Cow::Borrowed(_))),
        "no copy for unescaped strings"
    );
    assert_eq!(e.event_type.as_deref(), Some(EventType::Purchase.as_str()));
    assert_eq!(e.amount, Some(Decimal::new(12999, 2)));
    assert_eq!(e.timestamp.timestamp_millis(), 1795699107123);
    let mut out = vec![];
    e.write_canonical_json(&mut out);
    let back = validate(Some(&out)).unwrap();
    assert_eq!(back, e);
    assert!(std::str::from_utf8(&out)
        .unwrap()
        .contains(r#""amount":129.99"#));
}

/// Inputs and their verdicts, first half: the original's rules.
fn rule_cases() -> Vec<(String, Option<Reason>)> {
    vec![
        (GOOD.into(), None),
        (
            with("customer_id", "<remove>"),
            Some(Reason::MissingCustomerId),
        ),
        (
            with("customer_id", r#""""#),
            Some(Reason::MissingCustomerId),
        ),
        (
            with("customer_id", r#""   ""#),
            Some(Reason::MissingCustomerId),
        ),
        (with("customer_id", "null"), Some(Reason::MissingCustomerId)),
        (with("customer_id", "42"), Some(Reason::WrongType)),
        (
            with("event_type", r#""REFUND""#),
            Some(Reason::InvalidEventType),
        ),
        (
            with("event_type", "<remove>"),
            Some(Reason::InvalidEventType),
        ),
        (
            with("event_type", r#""page_view""#),
            Some(Reason::InvalidEventType),
        ),
        (with("amount", "0"), Some(Reason::NonPositiveAmount)),
        (with("amount", "0.0"), Some(Reason::NonPositiveAmount)),
        (with("amount", "-5.5"), Some(Reason::NonPositiveAmount)),
        (with("amount", "<remove>"), Some(Reason::MissingAmount)),
        (with("amount", "null"), Some(Reason::MissingAmount)),
        (with("amount", r#""12.00""#), Some(Reason::WrongType)),
        (with("amount", "[1]"), Some(Reason::WrongType)),
        (with("amount", "100000000"), Some(Reason::AmountOutOfRange)),
        (with("amount", "99999999.99"), None),
        (
            GOOD.replace("129.99", "1e400"),
            Some(Reason::AmountOutOfRange),
        ),
        (
            GOOD.replace("129.99", "1e-400"),
            Some(Reason::AmountOutOfRange),
        ),
        (
            GOOD.replace("129.99", "123456789012345678901234567890"),
            Some(Reason::AmountOutOfRange),
        ),
        (with("amount", "1.5e2"), None),
        (with("amount", "12.345"), Some(Reason::AmountOutOfRange)),
        (with("amount", "12.300"), None),
        (with("currency", "<remove>"), Some(Reason::MissingCurrency)),
        (with("currency", r#""""#), Some(Reason::MissingCurrency)),
        (
            with("currency", r#""DOLLARS-US-X""#),
            Some(Reason::FieldTooLong),
        ),
    ]
}

/// Inputs and their verdicts, second half: structure and fit for the table.
fn fit_cases() -> Vec<(String, Option<Reason>)> {
    vec![
        (with("is_valid", "false"), Some(Reason::NotMarkedValid)),
        (with("is_valid", "<remove>"), Some(Reason::NotMarkedValid)),
        (with("is_valid", r#""true""#), Some(Reason::WrongType)),
        (with("event_id", "<remove>"), Some(Reason::MissingEventId)),
        (
            with("timestamp", r#""yesterday""#),
            Some(Reason::BadTimestamp),
        ),
        (with("timestamp", "<remove>"), Some(Reason::BadTimestamp)),
        (with("timestamp", r#""2026-11-26T13:18:27.123456""#), None),
        (with("timestamp", r#""2026-11-26T14:18:27+01:00""#), None),
        (with("timestamp", r#""0001-01-01T00:00:00Z""#), None),
        (with("timestamp", r#""9999-12-31T23:59:59.999Z""#), None),
        (
            with("timestamp", r#""0000-06-01T00:00:00Z""#),
            Some(Reason::BadTimestamp),
        ),
        (
            with("timestamp", r#""0001-01-01T00:30:00+01:00""#),
            Some(Reason::BadTimestamp),
        ),
        (
            with("timestamp", r#""9999-12-31T23:30:00-01:00""#),
            Some(Reason::BadTimestamp),
        ),
        (
            with("timestamp", r#""0000-01-01T00:00:00""#),
            Some(Reason::BadTimestamp),
        ),
        (
            with("customer_id", &format!("\"{}\"", "x".repeat(256))),
            Some(Reason::FieldTooLong),
        ),
        (
            with("customer_id", &format!("\"{}\"", "é".repeat(255))),
            None,
        ),
        (
            with("customer_id", r#""a\u0000b""#),
            Some(Reason::NulCharacter),
        ),
        (with("extra", r#"{"nested":[1,2,{"x":null}]}"#), None),
        ("[1,2,3]".into(), Some(Reason::NotAnObject)),
        ("42".into(), Some(Reason::NotAnObject)),
        ("\"str\"".into(), Some(Reason::NotAnObject)),
        ("null".into(), Some(Reason::NotAnObject)),
        ("{not json".into(), Some(Reason::MalformedJson)),
        ("{\"amount\": NaN}".into(), Some(Reason::MalformedJson)),
        ("hello".into(), Some(Reason::MalformedJson)),
        (
            format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
            Some(Reason::MalformedJson),
        ),
        (
            GOOD.replace("\"amount\":129.99", "\"amount\":129.99,\"amount\":1"),
            Some(Reason::WrongType),
        ),
    ]
}

#[test]
fn table_of_inputs() {
    let cases = rule_cases().into_iter().chain(fit_cases());
    for (input, want) in cases {
        assert_eq!(
            reason(input.as_bytes()),
            want,
            "input: {}",
            truncate(&input, 200)
        );
    }
    assert_eq!(reason(b""), Some(Reason::EmptyValue));
    assert_eq!(validate(None).unwrap_err().reason, Reason::EmptyValue);
    assert_eq!(reason(b"{\"customer_id\":\"\xff\"}"), Some(Reason::NotUtf8));
}

#[test]
fn generator_and_validator_agree() {
    let mut g = Generator::new(&GeneratorConfig {
        seed: Some(3),
        ..Default::default()
    });
    let (mut k, mut v) = (vec![], vec![]);
    for _ in 0..50_000 {
        let intended = g.next_into(&mut k, &mut v);
        let got = validate(Some(&v)).err().map(|r| r.reason);
        let want = match intended {
            Intended::Valid => None,
            Intended::Invalid(InvalidKind::MissingCustomerId | InvalidKind::EmptyCustomerId) => {
                Some(Reason::MissingCustomerId)
            }
            Intended::Invalid(InvalidKind::UnknownEventType) => Some(Reason::InvalidEventType),
            Intended::Invalid(InvalidKind::ZeroAmount | InvalidKind::NegativeAmount) => {
                Some(Reason::NonPositiveAmount)
            }
            Intended::Invalid(InvalidKind::MissingAmount) => Some(Reason::MissingAmount),
            Intended::Invalid(InvalidKind::MissingCurrency) => Some(Reason::MissingCurrency),
            Intended::Invalid(InvalidKind::NotMarkedValid) => Some(Reason::NotMarkedValid),
        };
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&v));
    }
}

#[test]
fn reason_codes_round_trip() {
    for r in Reason::ALL {
        assert_eq!(Reason::from_code(r.code()), Some(r));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = validate(Some(&bytes));
    }

    #[test]
    fn never_panics_on_mutated_events(pos in 0usize..200, byte in proptest::prelude::any::<u8>(), cut in 0usize..220) {
        let mut b = GOOD.as_bytes().to_vec();
        let p = pos % b.len();
        b[p] = byte;
        b.truncate(cut.max(1));
        let _ = validate(Some(&b));
    }

    #[test]
    fn json_values_in_every_field_never_panic(field in 0usize..7, v in json_strategy()) {
        let names = ["event_id","customer_id","event_type","amount","currency","timestamp","is_valid"];
        let doc = with(names[field], &v.to_string());
        let _ = validate(Some(doc.as_bytes()));
    }
}

fn json_strategy() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        ".{0,300}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::hash_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
