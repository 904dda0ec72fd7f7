//! The event as a contract's schema sees it: a `serde_json::Value` of the whole document.
//!
//! Two things a plain `serde_json::from_str` would get wrong for a validator that must agree with the
//! exact, typed one: a number beyond the range of a double (`1e400`) is an error there, and a non-zero
//! number below it (`1e-400`) reads as 0. Here every number is the nearest double, except that one too
//! large is the largest double of its sign and a non-zero one too small is the smallest double of its
//! sign (still above zero, still not a multiple of 0.01), so that `exclusiveMinimum`, `maximum` and
//! `multipleOf` judge them as the exact value would. The table's own checks read the exact text anyway
//! (`validate::fit`).
//!
//! Nesting deeper than `MAX_DEPTH` is refused (`malformed_json`): a contract would need the whole
//! document in memory, and the typed default validator, which skips unknown fields without building
//! them, is the only one that can afford it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::validate::{Reason, Rejection};

/// serde_json's own limit.
pub(crate) const MAX_DEPTH: usize = 128;

/// `text` (a JSON object the structure check accepted) as a `Value`.
pub(crate) fn of(text: &str) -> Result<Value, Rejection> {
    if !has_exponent(text) {
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return Ok(v);
        }
    }
    careful(text, 0)
}

/// Whether a number in `text` is written with an exponent (`1e-400`): an `e` or `E` right after a digit
/// or a `.`, outside strings (event ids are hex: `9e` in a UUID is text).
fn has_exponent(text: &str) -> bool {
    let b = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1, // the escaped character is skipped too
                b'"' => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
        } else if (c | 0x20) == b'e' && i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.') {
            return true;
        }
        i += 1;
    }
    false
}

fn too_deep() -> Rejection {
    Rejection::new(
        Reason::MalformedJson,
        format!("the value nests deeper than {MAX_DEPTH} levels, more than a contract can check"),
    )
}

fn malformed(e: serde_json::Error) -> Rejection {
    Rejection::new(Reason::MalformedJson, format!("not JSON: {e}"))
}

/// One value, read member by member so that each number is read from its own text.
fn careful(text: &str, depth: usize) -> Result<Value, Rejection> {
    let t = text.trim_start();
    match t.as_bytes().first() {
        Some(b'{') => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            // Repeated keys: the last one wins, as in `serde_json::from_str::<Value>`.
            let members: BTreeMap<String, &RawValue> =
                serde_json::from_str(t).map_err(malformed)?;
            let mut out = Map::new();
            for (k, v) in members {
                out.insert(k, careful(v.get(), depth + 1)?);
            }
            Ok(Value::Object(out))
        }
        Some(b'[') => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            let items: Vec<&RawValue> = serde_json::from_str(t).map_err(malformed)?;
            items
                .into_iter()
                .map(|v| careful(v.get(), depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Some(b'-' | b'0'..=b'9') => Ok(Value::Number(number(t.trim_end()))),
        _ => serde_json::from_str(t).map_err(malformed),
    }
}

/// A JSON number's text as the nearest double, kept inside the doubles' range with its sign, and away
/// from zero when it is not zero.
fn number(text: &str) -> Number {
    let negative = text.starts_with('-');
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if let Ok(n) = serde_json::from_str::<Number>(text) {
        if !(nonzero && n.as_f64() == Some(0.0)) {
            return n;
        }
    }
    let f: f64 = text.parse().unwrap_or(0.0);
    let f = if f.is_infinite() {
        f64::MAX
    } else if f == 0.0 && nonzero {
        f64::from_bits(1) // the smallest positive double
    } else {
        f.abs()
    };
    Number::from_f64(if negative { -f } else { f }).unwrap_or_else(|| Number::from(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_sign_and_side_of_zero() {
        let v = of(r#"{"a":1e400,"b":-1e400,"c":1e-400,"d":-1e-400,"e":0e-400,"f":129.99,"g":7,"h":"1e5"}"#)
            .unwrap();
        assert_eq!(v["a"].as_f64(), Some(f64::MAX));
        assert_eq!(v["b"].as_f64(), Some(-f64::MAX));
        assert!(v["c"].as_f64().unwrap() > 0.0);
        assert!(v["d"].as_f64().unwrap() < 0.0);
        assert_eq!(v["e"].as_f64(), Some(0.0));
        assert_eq!(v["f"].as_f64(), Some(129.99));
        assert_eq!(v["g"].as_u64(), Some(7));
        assert_eq!(v["h"], "1e5");
        let plain = of(r#"{"a":[1,{"b":null}],"a":2}"#).unwrap();
        assert_eq!(plain, serde_json::json!({"a": 2}));
    }

    #[test]
    fn exponents_are_found_outside_strings_only() {
        assert!(!has_exponent(
            r#"{"id":"0b7c1c9e-7d1e","a":1.5,"b":true,"c":"x\"1e5"}"#
        ));
        assert!(has_exponent(r#"{"id":"9e","a":1e-400}"#));
        assert!(has_exponent(r#"{"a":[2.E3]}"#));
        assert!(!has_exponent(r#"{"a":"\\","b":"1e5"}"#));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        assert_eq!(of(&deep).unwrap_err().reason, Reason::MalformedJson);
        let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(of(&format!("{{\"x\":{ok}}}")).is_ok());
    }
}
