//! Event contracts: the event types and rules as data. A contract is a standard JSON Schema (draft
//! 2020-12) file, compiled once by the `jsonschema` crate; the keyword `x-reason` on a subschema names
//! the reason code of a failure inside it (the nearest enclosing one wins; without one,
//! `contract_violation`). Around the schema, the checks no schema can express run for every contract:
//! the structure before it (a value, UTF-8, JSON, an object, nesting) and the table's needs after it
//! (`validate::fit`: an event id, column types and lengths, DECIMAL(10,2), a timestamp in years
//! 0001-9999, no NUL). A clean event is what the table stores, so the loader checks only the latter.
//!
//! The shipped default (`contracts/default.json`) is the original's rules. A contract with the same
//! content is run as typed code (`validate::validate`: one borrowed parse, no allocation for a valid
//! event), which gives the same verdicts, reasons and clean bytes as the schema; the tests prove it on
//! the corpus and on generated events. Every other contract parses the event into a `serde_json::Value`
//! for the schema.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::CleanEvent;
use crate::validate::{self, truncate, Reason, Rejection};

mod instance;

/// The default contract, as shipped (also installed with the package for users to copy).
pub const DEFAULT_TEXT: &str = include_str!("../../contracts/default.json");

/// The one draft a contract may declare in `$schema` (or leave out).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// The keyword naming a reason code.
pub const X_REASON: &str = "x-reason";

/// A `detail` shows this much of the validator's message at most (an `enum` message repeats the
/// instance).
const MAX_MESSAGE: usize = 300;

/// `$id` lengths: it travels in a header of every record.
const MAX_ID: usize = 255;

/// A compiled contract.
pub struct Contract {
    id: String,
    /// Where it came from: a path, or "the default contract".
    source: String,
    schema: Value,
    validator: Validator,
    /// The shipped default: run as typed code (`validate::validate`).
    typed: bool,
    /// The `x-reason` codes it declares, as reasons (built-in ones or its own), in document order.
    reasons: Vec<(String, Reason)>,
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("typed", &self.typed)
            .finish_non_exhaustive()
    }
}

impl Contract {
    /// The shipped default, compiled once per process.
    pub fn default_contract() -> Arc<Contract> {
        static DEFAULT: OnceLock<Arc<Contract>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Arc::new(
                    Contract::parse(DEFAULT_TEXT, "the default contract")
                        .expect("the shipped default contract compiles"),
                )
            })
            .clone()
    }

    /// `path`'s contract, or the default for None. See `load`.
    pub fn load_or_default(path: Option<&str>) -> Result<Arc<Contract>> {
        match path {
            Some(p) => Contract::load(p),
            None => Ok(Contract::default_contract()),
        }
    }

    /// The contract in the file at `path`: read, checked and compiled, or a `Config` error of one line
    /// that starts with the path. Compiled contracts are kept per path and content, so a process that
    /// names the same file again (each `ecomlogs.validate(..., contract=...)`) compiles it once.
    pub fn load(path: &str) -> Result<Arc<Contract>> {
        type Compiled = HashMap<PathBuf, (String, Arc<Contract>)>;
        static CACHE: OnceLock<Mutex<Compiled>> = OnceLock::new();
        let text = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "{path}: cannot read the contract ({})",
                one_line(&e.to_string())
            ))
        })?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::Config(format!("{path}: the contract is not UTF-8 text")))?;
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| Path::new(path).to_path_buf());
        let cache = CACHE.get_or_init(Default::default);
        if let Some((seen, c)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if *seen == text {
                return Ok(c.clone());
            }
        }
        let contract = Arc::new(Contract::parse(&text, path)?);
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (text, contract.clone()));
        Ok(contract)
    }

    /// A contract from its text; `source` names it in errors ("{source}: ...", one line).
    pub fn parse(text: &str, source: &str) -> Result<Contract> {
        let bad = |what: String| Error::Config(format!("{source}: {}", one_line(&what)));
        let schema: Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("the contract is not JSON ({e})")))?;
        let Value::Object(top) = &schema else {
            return Err(bad(
                "a contract must be a JSON Schema object (with $schema, $id and the rules)".into(),
            ));
        };
        match top.get("$schema") {
            None => {}
            Some(Value::String(s)) if s.trim_end_matches('#') == DRAFT_2020_12 => {}
            Some(other) => {
                return Err(bad(format!(
                    "$schema is {}: a contract is JSON Schema draft 2020-12 ({DRAFT_2020_12})",
                    truncate(&other.to_string(), 120)
                )))
            }
        }
        let id = match top.get("$id") {
            Some(Value::String(id))
                if !id.trim().is_empty()
                    && id.len() <= MAX_ID
                    && !id.chars().any(char::is_control) =>
            {
                id.clone()
            }
            Some(other) => {
                return Err(bad(format!(
                    "$id must be a URI of at most {MAX_ID} characters that names the contract and its \
                     version (it goes into a header of every record), e.g. \"urn:shop:events:v2\"; got {}",
                    truncate(&other.to_string(), 120)
                )))
            }
            None => {
                return Err(bad(
                    "the contract has no $id: give it one that names it and its version (it goes into a \
                     header of every record), e.g. \"$id\": \"urn:shop:events:v2\""
                        .into(),
                ))
            }
        };
        let mut declared = Vec::new();
        reason_codes(&schema, &mut String::new(), &mut declared).map_err(bad)?;
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(false)
            .build(&schema)
            .map_err(|e| {
                let at = e.instance_path().as_str();
                bad(format!(
                    "not a valid JSON Schema: {e}{}",
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!(" (at {at})")
                    }
                ))
            })?;
        let mut reasons: Vec<(String, Reason)> = Vec::new();
        for code in declared {
            if !reasons.iter().any(|(c, _)| *c == code) {
                let r = Reason::named(&code);
                reasons.push((code, r));
            }
        }
        let typed = schema == *default_schema();
        Ok(Contract {
            id,
            source: source.to_string(),
            schema,
            validator,
            typed,
            reasons,
        })
    }

    /// The contract's `$id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it came from: a path, or "the default contract".
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the shipped default (by content), run as typed code.
    pub fn is_default(&self) -> bool {
        self.typed
    }

    /// The reason codes its `x-reason` keywords name, in document order.
    pub fn reason_codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|(c, _)| c.as_str()).collect()
    }

    /// The event in `value` (None: a record without a value), clean, or why not.
    pub fn validate<'a>(
        &self,
        value: Option<&'a [u8]>,
    ) -> std::result::Result<CleanEvent<'a>, Rejection> {
        if self.typed {
            validate::validate(value)
        } else {
            self.validate_with_schema(value)
        }
    }

    /// `validate` through the schema, also for the default (the tests compare both ways; the
    /// benchmark times both).
    pub fn validate_with_schema<'a>(
        &self,
        value: Option<&'a [u8]>,
    ) -> std::result::Result<CleanEvent<'a>, Rejection> {
        let (text, raw) = validate::parse_text(value)?;
        let instance = instance::of(text)?;
        if !self.validator.is_valid(&instance) {
            if let Err(e) = self.validator.validate(&instance) {
                return Err(self.rejection(&e));
            }
        }
        validate::fit_raw(raw)
    }

    /// A schema failure as a rejection: the reason of the nearest enclosing `x-reason`, and a detail
    /// saying which keyword failed where (`minimum: -5 is less than the minimum of 0 at /amount`).
    fn rejection(&self, e: &ValidationError<'_>) -> Rejection {
        let code = nearest_reason(
            &self.schema,
            e.evaluation_path().as_str(),
            e.schema_path().as_str(),
        );
        let reason = match code {
            Some(code) => self
                .reasons
                .iter()
                .find(|(c, _)| c == code)
                .map(|(_, r)| *r)
                .unwrap_or(Reason::ContractViolation),
            None => Reason::ContractViolation,
        };
        let message = e.to_string();
        let at = match e.instance_path().as_str() {
            "" => "/",
            p => p,
        };
        Rejection::new(
            reason,
            format!(
                "{}: {} at {at}",
                e.kind().keyword(),
                one_line(truncate(&message, MAX_MESSAGE))
            ),
        )
    }
}

fn default_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(DEFAULT_TEXT).expect("the default contract is JSON"))
}

/// Messages are one line (they go into log lines and headers).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A reason code: a lowercase letter, then lowercase letters, digits and `_` (at most 64).
fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Collects every `x-reason` of the schema (in document order), checking that each is a code. `at` is
/// the JSON pointer of `v`.
fn reason_codes(
    v: &Value,
    at: &mut String,
    out: &mut Vec<String>,
) -> std::result::Result<(), String> {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get(X_REASON) {
                match r {
                    Value::String(code) if is_code(code) => out.push(code.clone()),
                    other => {
                        return Err(format!(
                            "{X_REASON} at {} must be a reason code (a lowercase letter, then lowercase \
                             letters, digits and _), got {}",
                            if at.is_empty() { "/" } else { at },
                            truncate(&other.to_string(), 80)
                        ))
                    }
                }
            }
            for (k, child) in m {
                // Values of these keywords are data, not schemas: an `x-reason` inside them is text.
                if matches!(
                    k.as_str(),
                    "const" | "enum" | "examples" | "default" | X_REASON
                ) {
                    continue;
                }
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                reason_codes(child, at, out)?;
                at.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                reason_codes(child, at, out)?;
                at.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The segments of a JSON pointer, unescaped.
fn segments(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// The subschema a local `$ref` points to (`#`, `#/json/pointer`); None for anything else.
fn local_ref<'s>(root: &'s Value, reference: &str) -> Option<&'s Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    let decoded = percent_decode(pointer);
    root.pointer(&decoded)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The code of the nearest `x-reason` enclosing the failed keyword: along the evaluation path (which
/// goes through `$ref`s, followed here when local), else along the keyword's place in the document.
fn nearest_reason<'s>(root: &'s Value, evaluation: &str, keyword: &str) -> Option<&'s str> {
    fn reason_of(v: &Value) -> Option<&str> {
        v.get(X_REASON).and_then(Value::as_str)
    }
    let walk = |path: &str, follow_refs: bool| -> Option<Option<&'s str>> {
        let mut node = root;
        let mut found = reason_of(node);
        for seg in segments(path) {
            let next = if (seg == "$ref" || seg == "$dynamicRef") && follow_refs {
                local_ref(root, node.get(&seg)?.as_str()?)?
            } else {
                match node {
                    Value::Object(m) => m.get(&seg)?,
                    Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                    _ => return Some(found),
                }
            };
            node = next;
            if let Some(r) = reason_of(node) {
                found = Some(r);
            }
        }
        Some(found)
    };
    walk(evaluation, true)
        .or_else(|| walk(keyword, false))
        .flatten()
}

#[cfg(test)]
mod tests;
