use super::*;
use crate::generate::{Generator, GeneratorConfig};

const GOOD: &str = r#"{"event_id":"0b7c1c9e-7d1e-4a43-9a3e-111111111111","customer_id":"CUST-00042","event_type":"PURCHASE","amount":129.99,"currency":"USD","timestamp":"2026-11-26T13:18:27.123Z","is_valid":true}"#;

/// A shop's contract: the original's types plus REFUND (negative amounts only) and SEARCH (no amount),
/// currencies from a list.
pub(crate) const SHOP: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$id": "urn:shop:events:v2",
  "type": "object",
  "required": ["event_id", "event_type", "timestamp"],
  "properties": {
    "event_type": {"x-reason": "invalid_event_type",
                   "enum": ["PAGE_VIEW", "ADD_TO_CART", "PURCHASE", "REFUND", "SEARCH"]},
    "timestamp": {"x-reason": "bad_timestamp", "type": "string", "format": "date-time"},
    "currency": {"x-reason": "unknown_currency", "enum": ["USD", "EUR", "GBP"]}
  },
  "allOf": [
    {"if": {"properties": {"event_type": {"const": "REFUND"}}},
     "then": {"x-reason": "refund_not_negative", "required": ["amount", "currency"],
              "properties": {"amount": {"type": "number", "exclusiveMaximum": 0}}}},
    {"if": {"properties": {"event_type": {"const": "SEARCH"}}},
     "then": {"x-reason": "search_with_amount", "not": {"required": ["amount"]}}},
    {"if": {"properties": {"event_type": {"enum": ["ADD_TO_CART", "PURCHASE"]}}},
     "then": {"x-reason": "non_positive_amount", "required": ["amount", "currency"],
              "properties": {"amount": {"type": "number", "exclusiveMinimum": 0}}}}
  ]
}"#;

/// GOOD with `field` set to the JSON text `json` as written (numbers beyond a double's range too), or
/// removed ("<remove>").
fn with(field: &str, json: &str) -> String {
    let v: serde_json::Map<String, Value> = serde_json::from_str(GOOD).unwrap();
    let mut parts: Vec<String> = v
        .iter()
        .filter(|(k, _)| *k != field)
        .map(|(k, v)| format!("{:?}:{v}", k))
        .collect();
    if json != "<remove>" {
        parts.push(format!("{field:?}:{json}"));
    }
    format!("{{{}}}", parts.join(","))
}

fn default_contract() -> Arc<Contract> {
    Contract::default_contract()
}

fn shop() -> Contract {
    Contract::parse(SHOP, "shop.json").unwrap()
}

/// (reason code, canonical bytes) of a verdict, to compare two ways of reaching it.
fn verdict(
    r: std::result::Result<CleanEvent<'_>, Rejection>,
) -> std::result::Result<Vec<u8>, Reason> {
    r.map(|e| {
        let mut out = Vec::new();
        e.write_canonical_json(&mut out);
        out
    })
    .map_err(|r| r.reason)
}

/// The default contract through its schema and as typed code: same verdict, reason and clean bytes.
fn assert_same(value: Option<&[u8]>) {
    let c = default_contract();
    let typed = verdict(validate::validate(value));
    let schema = verdict(c.validate_with_schema(value));
    assert_eq!(
        schema,
        typed,
        "input: {}",
        value.map_or("None".into(), |v| String::from_utf8_lossy(
            &v[..v.len().min(300)]
        )
        .into_owned())
    );
}

#[test]
fn the_default_contract_is_recognised_and_runs_typed() {
    let c = default_contract();
    assert!(c.is_default());
    assert_eq!(c.id(), "urn:ecomlogs:contract:default:v1");
    // The same content, written differently, is the default too.
    let reformatted =
        serde_json::to_string(&serde_json::from_str::<Value>(DEFAULT_TEXT).unwrap()).unwrap();
    assert!(Contract::parse(&reformatted, "copy.json")
        .unwrap()
        .is_default());
    // Another $id is another contract.
    let renamed = DEFAULT_TEXT.replace("default:v1", "default:v1-copy");
    assert!(!Contract::parse(&renamed, "renamed.json")
        .unwrap()
        .is_default());
    assert_eq!(
        c.reason_codes(),
        [
            "not_an_object",
            "missing_customer_id",
            "wrong_type",
            "invalid_event_type",
            "missing_amount",
            "non_positive_amount",
            "amount_out_of_range",
            "missing_currency",
            "not_marked_valid"
        ]
    );
}

/// One field changed at a time: for each field, values that matter to some rule (good ones, each kind
/// of bad one; `<remove>` drops the field).
const FIELD_VALUES: &[(&str, &[&str])] = &[
    (
        "customer_id",
        &[
            "<remove>",
            r#""""#,
            r#""   ""#,
            "null",
            "42",
            r#""a\u0000b""#,
            "true",
            "[]",
            "{}",
            r#""\u00a0""#,
            r#""\ufeff""#,
            r#""\u2003x""#,
            r#""é""#,
        ],
    ),
    (
        "event_type",
        &[
            r#""REFUND""#,
            "<remove>",
            r#""page_view""#,
            "null",
            "7",
            r#""PAGE_VIEW""#,
            r#""ADD_TO_CART""#,
        ],
    ),
    (
        "amount",
        &[
            "0",
            "0.0",
            "-0",
            "-0.0",
            "-5.5",
            "<remove>",
            "null",
            r#""12.00""#,
            "[1]",
            "true",
            "{}",
            "100000000",
            "99999999.99",
            "99999999.991",
            "1.5e2",
            "12.345",
            "12.300",
            "0.01",
            "0.001",
            "1e-2",
            "1E2",
            "1e400",
            "1e-400",
            "123456789012345678901234567890",
            "-12.345",
            "-1e-2",
            "1.005",
            "123456789.0",
            "1e28",
            "7.9e28",
            "0.1",
            "0.07",
            "1.1",
            "19.99",
            "99999999.98",
        ],
    ),
    (
        "currency",
        &[
            "<remove>",
            r#""""#,
            r#""DOLLARS-US-X""#,
            "null",
            "1",
            r#""  ""#,
            r#""EUR""#,
        ],
    ),
    (
        "is_valid",
        &["false", "<remove>", r#""true""#, "null", "1", "true"],
    ),
    (
        "event_id",
        &["<remove>", r#""""#, r#"" ""#, "null", "5", r#""a\u0000""#],
    ),
    (
        "timestamp",
        &[
            r#""yesterday""#,
            "<remove>",
            r#""2026-11-26T13:18:27.123456""#,
            r#""2026-11-26T14:18:27+01:00""#,
            r#""0001-01-01T00:00:00Z""#,
            r#""9999-12-31T23:59:59.999Z""#,
            r#""0000-06-01T00:00:00Z""#,
            r#""0001-01-01T00:30:00+01:00""#,
            r#""9999-12-31T23:30:00-01:00""#,
            r#""0000-01-01T00:00:00""#,
            r#""2026-11-26 13:18:27""#,
            "null",
            "1234",
        ],
    ),
    (
        "extra",
        &[r#"{"nested":[1,2,{"x":null}]}"#, "1e400", r#""\u0000""#],
    ),
];

/// Every input of the validator's own tests (`validate/tests.rs`) and of the Python table
/// (`tests/test_events.py`), plus more edges.
fn corpus() -> Vec<Vec<u8>> {
    let mut out: Vec<String> = vec![GOOD.into()];
    for (field, values) in FIELD_VALUES {
        out.extend(values.iter().map(|v| with(field, v)));
    }
    out.extend(too_long());
    out.extend(not_events());
    out.extend(several_faults());
    let mut bytes: Vec<Vec<u8>> = out.into_iter().map(String::into_bytes).collect();
    bytes.push(b"{\"customer_id\":\"\xff\"}".to_vec());
    bytes.push(Vec::new());
    bytes
}

/// Texts one character over (or at) the table's column lengths.
fn too_long() -> Vec<String> {
    vec![
        with("customer_id", &format!("\"{}\"", "x".repeat(256))),
        with("customer_id", &format!("\"{}\"", "é".repeat(255))),
        with("currency", &format!("\"{}\"", "€".repeat(10))),
        with("event_id", &format!("\"{}\"", "i".repeat(256))),
    ]
}

/// Inputs that are not an event object: other JSON, broken JSON, too deep, repeated keys.
fn not_events() -> Vec<String> {
    let mut out: Vec<String> = [
        "[1,2,3]",
        "42",
        "\"str\"",
        "null",
        "{not json",
        "{\"amount\": NaN}",
        "hello",
        "{}",
        " {} ",
        "{\"customer_id\":\"a\"}",
    ]
    .map(String::from)
    .to_vec();
    out.push(format!(
        "{}{}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    ));
    out.push(format!("{}{}", "[".repeat(5000), "]".repeat(5000)));
    out.push(GOOD.replace("\"amount\":129.99", "\"amount\":129.99,\"amount\":1"));
    out.push(
        GOOD.replace("\"extra\"", "\"x\"")
            .replace("}", ",\"x\":1,\"x\":2}"),
    );
    out
}

/// Several faults at once: the first in the original's order names the reason.
fn several_faults() -> Vec<String> {
    vec![
        with("customer_id", "<remove>").replace("\"USD\"", "\"\""),
        with("amount", "12.345").replace("\"USD\"", "\"\""),
        with("amount", "1e-400").replace("true", "false"),
        with("amount", "100000000").replace("true", "false"),
        with("event_type", "\"X\"").replace("CUST-00042", &"c".repeat(300)),
        with("timestamp", "\"never\"").replace("USD", "DOLLARS-US-X"),
    ]
}

#[test]
fn default_contract_schema_and_typed_agree_on_the_corpus() {
    assert_same(None);
    for v in corpus() {
        assert_same(Some(&v));
    }
}

#[test]
fn default_contract_schema_and_typed_agree_on_generated_events() {
    let mut g = Generator::new(&GeneratorConfig {
        seed: Some(11),
        invalid_ratio: 0.5,
        ..Default::default()
    });
    let (mut k, mut v) = (vec![], vec![]);
    for _ in 0..20_000 {
        g.next_into(&mut k, &mut v);
        assert_same(Some(&v));
    }
}

/// Fields drawn from the values that matter to some rule (good ones, each kind of bad one), in any
/// combination: several faults at once, too.
fn field_strategy(field: usize) -> impl proptest::strategy::Strategy<Value = Option<String>> {
    use proptest::prelude::*;
    let common = vec![
        None,
        Some("null".to_string()),
        Some("true".into()),
        Some("false".into()),
        Some("[]".into()),
        Some("{\"k\":[1]}".into()),
        Some("\"\"".into()),
        Some("\"  \"".into()),
        Some("\"a\\u0000b\"".into()),
    ];
    let specific: Vec<Option<String>> = match field {
        0 | 1 => vec![
            Some(format!("\"{}\"", "x".repeat(256))),
            Some("\"CUST-1\"".into()),
            Some("\"0b7c1c9e-7d1e-4a43-9a3e-111111111111\"".into()),
            Some("\"\\u00a0\"".into()),
        ],
        2 => [
            "PAGE_VIEW",
            "ADD_TO_CART",
            "PURCHASE",
            "REFUND",
            "page_view",
        ]
        .iter()
        .map(|t| Some(format!("\"{t}\"")))
        .collect(),
        3 => vec![],
        4 => vec![
            Some("\"USD\"".into()),
            Some("\"EUR\"".into()),
            Some("\"DOLLARS-US-X\"".into()),
            Some("7".into()),
        ],
        5 => vec![
            Some("\"2026-11-26T13:18:27.123Z\"".into()),
            Some("\"2026-11-26T13:18:27\"".into()),
            Some("\"0000-01-01T00:00:00Z\"".into()),
            Some("\"soon\"".into()),
            Some("17".into()),
        ],
        _ => vec![Some("true".into()), Some("\"true\"".into())],
    };
    let choices: Vec<Option<String>> = common.into_iter().chain(specific).collect();
    if field == 3 {
        // Amounts: the listed edges, and exact decimals of every size and sign.
        let edges = prop::sample::select(vec![
            None,
            Some("null".to_string()),
            Some("\"5\"".into()),
            Some("true".into()),
            Some("0".into()),
            Some("-0.0".into()),
            Some("1e400".into()),
            Some("1e-400".into()),
            Some("1.5e2".into()),
            Some("99999999.99".into()),
            Some("100000000".into()),
            Some("12.345".into()),
            Some("12.300".into()),
        ]);
        let decimals = (-99_999_999_999i64..99_999_999_999i64, 0u32..5)
            .prop_map(|(n, scale)| Some(rust_decimal::Decimal::new(n, scale).to_string()));
        return prop_oneof![edges, decimals].boxed();
    }
    prop::sample::select(choices).boxed()
}

fn event_strategy() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    (
        field_strategy(0),
        field_strategy(1),
        field_strategy(2),
        field_strategy(3),
        field_strategy(4),
        field_strategy(5),
        field_strategy(6),
        any::<bool>(),
    )
        .prop_map(|(id, customer, ty, amount, currency, ts, valid, extra)| {
            let mut parts = Vec::new();
            for (name, v) in [
                ("event_id", id),
                ("customer_id", customer),
                ("event_type", ty),
                ("amount", amount),
                ("currency", currency),
                ("timestamp", ts),
                ("is_valid", valid),
            ] {
                if let Some(v) = v {
                    parts.push(format!("\"{name}\":{v}"));
                }
            }
            if extra {
                parts.push("\"extra\":{\"deep\":[1,2,3]}".into());
            }
            format!("{{{}}}", parts.join(","))
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
    /// Events with any mix of good and bad fields (several faults at once, too): the schema and the
    /// typed code reach the same verdict, reason and clean bytes. The one exception: a negative amount
    /// too large or too small for an exact decimal (-1e30, -1e-400), which the original's order calls
    /// out of range before negative, and the schema negative (both refuse it).
    #[test]
    fn default_contract_schema_and_typed_agree_on_any_mix(doc in event_strategy()) {
        assert_same(Some(doc.as_bytes()));
    }
}

/// The documented differences of the schema path from the typed default (both refuse, for another
/// reason, or the schema path refuses what the typed one skips).
#[test]
fn the_documented_differences() {
    // Nesting deeper than a contract holds, in a field the default does not read.
    let deep = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    assert_eq!(
        validate::validate(Some(deep.as_bytes()))
            .unwrap_err()
            .reason,
        Reason::MissingCustomerId
    );
    assert_eq!(
        default_contract()
            .validate_with_schema(Some(deep.as_bytes()))
            .unwrap_err()
            .reason,
        Reason::MalformedJson
    );
    // A negative amount beyond exact decimals.
    let c = default_contract();
    for amount in ["-1e400", "-1e30", "-1e-400"] {
        let doc = with("amount", amount);
        assert_eq!(
            validate::validate(Some(doc.as_bytes())).unwrap_err().reason,
            Reason::AmountOutOfRange
        );
        assert_eq!(
            c.validate_with_schema(Some(doc.as_bytes()))
                .unwrap_err()
                .reason,
            Reason::NonPositiveAmount
        );
    }
}

#[test]
fn x_reason_the_nearest_enclosing_one_wins() {
    let c = Contract::parse(
        r##"{
          "$id": "urn:t:1", "x-reason": "outer",
          "properties": {
            "a": {"x-reason": "inner_a", "type": "integer"},
            "b": {"type": "string"},
            "c": {"$ref": "#/$defs/money"},
            "d": {"x-reason": "at_ref", "$ref": "#/$defs/plain"}
          },
          "$defs": {
            "money": {"x-reason": "bad_money", "minimum": 0},
            "plain": {"maximum": 10}
          }
        }"##,
        "t.json",
    )
    .unwrap();
    let reason = |doc: &str| {
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(GOOD).unwrap();
        let extra: serde_json::Map<String, Value> = serde_json::from_str(doc).unwrap();
        v.extend(extra);
        let bytes = serde_json::to_vec(&v).unwrap();
        let r = c.validate(Some(&bytes)).unwrap_err();
        (r.reason.code().to_string(), r.detail)
    };
    assert_eq!(reason(r#"{"a": 1.5}"#).0, "inner_a");
    assert_eq!(reason(r#"{"b": 1}"#).0, "outer");
    let (code, detail) = reason(r#"{"c": -5}"#);
    assert_eq!(code, "bad_money");
    assert!(
        detail.starts_with("minimum: -5 is less than the minimum of 0 at /c"),
        "{detail}"
    );
    assert_eq!(reason(r#"{"d": 11}"#).0, "at_ref");
    // Without any x-reason: contract_violation.
    let bare = Contract::parse(r#"{"$id": "urn:t:2", "required": ["zzz"]}"#, "t2.json").unwrap();
    let r = bare.validate(Some(GOOD.as_bytes())).unwrap_err();
    assert_eq!(r.reason, Reason::ContractViolation);
    assert_eq!(r.detail, "required: \"zzz\" is a required property at /");
}

#[test]
fn the_shop_contract_takes_refunds_and_searches() {
    let c = shop();
    assert!(!c.is_default());
    let refund = with("event_type", "\"REFUND\"").replace("129.99", "-25.5");
    let e = c.validate(Some(refund.as_bytes())).unwrap();
    assert_eq!(e.amount, Some(rust_decimal::Decimal::new(-2550, 2)));
    assert_eq!(e.event_type.as_deref(), Some("REFUND"));
    let positive_refund = with("event_type", "\"REFUND\"");
    let r = c.validate(Some(positive_refund.as_bytes())).unwrap_err();
    assert_eq!(r.reason.code(), "refund_not_negative");
    assert_eq!(
        r.detail,
        "exclusiveMaximum: 129.99 is greater than or equal to the maximum of 0 at /amount"
    );
    let search = r#"{"event_id":"s-1","customer_id":"CUST-1","event_type":"SEARCH","query":"red shoes","timestamp":"2026-11-26T13:18:27Z"}"#;
    let e = c.validate(Some(search.as_bytes())).unwrap();
    assert_eq!((e.amount, e.currency.as_deref()), (None, None));
    let mut out = Vec::new();
    e.write_canonical_json(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"event_id":"s-1","customer_id":"CUST-1","event_type":"SEARCH","amount":null,"currency":null,"timestamp":"2026-11-26T13:18:27Z","is_valid":true}"#
    );
    let with_amount = search.replace("\"query\"", "\"amount\":1,\"query\"");
    assert_eq!(
        c.validate(Some(with_amount.as_bytes()))
            .unwrap_err()
            .reason
            .code(),
        "search_with_amount"
    );
    assert_eq!(
        c.validate(Some(with("currency", "\"JPY\"").as_bytes()))
            .unwrap_err()
            .reason
            .code(),
        "unknown_currency"
    );
    // format: date-time is asserted (an offset is required by RFC 3339).
    let naive = with("timestamp", "\"2026-11-26T13:18:27\"");
    assert_eq!(
        c.validate(Some(naive.as_bytes())).unwrap_err().reason,
        Reason::BadTimestamp
    );
    // The table's checks still run: an amount with three places, a timestamp in year 0.
    let places = with("amount", "1.005");
    assert_eq!(
        c.validate(Some(places.as_bytes())).unwrap_err().reason,
        Reason::AmountOutOfRange
    );
    let year0 = with("timestamp", "\"0000-06-01T00:00:00Z\"");
    assert_eq!(
        c.validate(Some(year0.as_bytes())).unwrap_err().reason,
        Reason::BadTimestamp
    );
    let long_type = with("event_type", &format!("\"{}\"", "T".repeat(51)));
    assert_eq!(
        c.validate(Some(long_type.as_bytes()))
            .unwrap_err()
            .reason
            .code(),
        "invalid_event_type"
    );
    assert_eq!(
        c.validate(Some(b"\xff")).unwrap_err().reason,
        Reason::NotUtf8
    );
}

#[test]
fn broken_contracts_are_one_line_errors() {
    for (text, words) in [
        ("{not json", &["t.json", "not JSON"][..]),
        ("[1, 2]", &["JSON Schema object"]),
        (r#"{"required": ["a"]}"#, &["no $id"]),
        (r#"{"$id": 5}"#, &["$id must be"]),
        (
            r#"{"$id": "urn:x", "$schema": "http://json-schema.org/draft-07/schema#"}"#,
            &["draft-07", "draft 2020-12"],
        ),
        (
            r#"{"$id": "urn:x", "$schema": "https://example.com/my-draft"}"#,
            &["my-draft"],
        ),
        (
            r#"{"$id": "urn:x", "type": "strnig"}"#,
            &["not a valid JSON Schema", "strnig"],
        ),
        (
            r#"{"$id": "urn:x", "minimum": "zero"}"#,
            &["not a valid JSON Schema"],
        ),
        (
            r#"{"$id": "urn:x", "properties": {"a": {"x-reason": "Bad Code"}}}"#,
            &["x-reason at /properties/a"],
        ),
        (
            r#"{"$id": "urn:x", "$ref": "https://example.com/other.json"}"#,
            &["not a valid JSON Schema"],
        ),
        (r#"{"$id": "urn:x", "format": "date_time"}"#, &["date_time"]),
    ] {
        let e = Contract::parse(text, "t.json").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        for w in words {
            assert!(e.contains(w), "{text}: {e}");
        }
    }
}
