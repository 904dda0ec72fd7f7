//! Validation and contracts for Python: `validate_one` / `validate_many` under a contract (the shipped
//! default unless `contract=` or `ECOMLOGS_CONTRACT` names a file), the reason codes, and
//! `contract_check`.

use std::collections::BTreeMap;
use std::sync::Arc;

use pyo3::prelude::*;

use super::args::{self, Arg};
use super::errors::to_pyerr;
use super::ops::scanning;
use crate::contract::Contract;
use crate::contract_check as check;
use crate::options::{cmd, Values};
use crate::validate::Reason;
use crate::values;

/// The verdict on one raw event: `valid`; the stable `reason` code and a readable `detail` when
/// invalid; the `canonical` JSON written to `clean_events` when valid; the `$id` of the `contract`
/// that judged it.
#[pyclass(frozen, eq, get_all, module = "ecomlogs._core")]
#[derive(Clone, PartialEq)]
pub struct Validation {
    valid: bool,
    reason: Option<&'static str>,
    detail: Option<String>,
    canonical: Option<Vec<u8>>,
    contract: String,
}

#[pymethods]
impl Validation {
    fn __repr__(&self) -> String {
        format!(
            "Validation(valid={}, reason={:?}, detail={:?}, canonical={}, contract={:?})",
            self.valid,
            self.reason,
            self.detail,
            match &self.canonical {
                Some(c) => format!("b{:?}", String::from_utf8_lossy(c)),
                None => "None".into(),
            },
            self.contract
        )
    }
}

fn verdict(c: &Contract, value: Option<&[u8]>) -> Validation {
    match c.validate(value) {
        Ok(clean) => {
            let mut out = Vec::with_capacity(256);
            clean.write_canonical_json(&mut out);
            Validation {
                valid: true,
                reason: None,
                detail: None,
                canonical: Some(out),
                contract: c.id().to_string(),
            }
        }
        Err(r) => Validation {
            valid: false,
            reason: Some(r.reason.code()),
            detail: Some(r.detail),
            canonical: None,
            contract: c.id().to_string(),
        },
    }
}

/// The contract of `validate`: the argument, else `ECOMLOGS_CONTRACT`, else the shipped default.
fn contract_of(contract: Arg<'_>) -> PyResult<Arc<Contract>> {
    let v = values!(cmd::VALIDATE, contract)?;
    let path = v.opt_text("contract").map_err(to_pyerr)?;
    Contract::load_or_default(path.as_deref()).map_err(to_pyerr)
}

/// Validates one raw value (bytes; None for a record without a value).
#[pyfunction]
#[pyo3(signature = (value, *, contract=None))]
pub fn validate_one(value: Option<&[u8]>, contract: Arg<'_>) -> PyResult<Validation> {
    let c = contract_of(contract)?;
    Ok(verdict(&c, value))
}

/// Validates many raw values in one call into Rust.
#[pyfunction]
#[pyo3(signature = (values, *, contract=None))]
pub fn validate_many(
    py: Python<'_>,
    values: Vec<Option<Vec<u8>>>,
    contract: Arg<'_>,
) -> PyResult<Vec<Validation>> {
    let c = contract_of(contract)?;
    Ok(py.detach(|| values.iter().map(|v| verdict(&c, v.as_deref())).collect()))
}

/// Every reason code the validator and the loader can give, then the contract's own (its `x-reason`
/// codes that are not built in).
#[pyfunction]
#[pyo3(signature = (*, contract=None))]
pub fn reason_codes(contract: Arg<'_>) -> PyResult<Vec<String>> {
    let given = contract.is_some();
    let mut out: Vec<String> = Reason::ALL.iter().map(|r| r.code().to_string()).collect();
    if given || std::env::var_os("ECOMLOGS_CONTRACT").is_some() {
        for code in contract_of(contract)?.reason_codes() {
            if !out.iter().any(|c| c == code) {
                out.push(code.to_string());
            }
        }
    }
    Ok(out)
}

/// What `contract_check` found.
#[pyclass(frozen, get_all, module = "ecomlogs._core")]
pub struct ContractCheck {
    contract_id: String,
    source: String,
    is_default: bool,
    reason_codes: Vec<String>,
    current_id: String,
    current_source: String,
    sample_topic: Option<String>,
    sampled: u64,
    ranges: BTreeMap<i32, (i64, i64)>,
    valid_now: u64,
    valid_new: u64,
    newly_rejected: BTreeMap<String, u64>,
    newly_accepted: BTreeMap<String, u64>,
    reason_changed: BTreeMap<(String, String), u64>,
    examples: Vec<(i32, i64, String, String)>,
}

#[pymethods]
impl ContractCheck {
    fn __repr__(&self) -> String {
        format!(
            "ContractCheck(contract_id={:?}, sampled={}, valid_now={}, valid_new={}, newly_rejected={:?}, \
             newly_accepted={:?})",
            self.contract_id,
            self.sampled,
            self.valid_now,
            self.valid_new,
            self.newly_rejected,
            self.newly_accepted
        )
    }
}

/// Checks the contract in the file `contract` (JSON, JSON Schema draft 2020-12, `$id`, `x-reason`
/// codes; a `ConfigError` of one line otherwise) and, with `sample_topic`, runs it and the contract in
/// use now (`current_contract`, else `ECOMLOGS_CONTRACT`, else the shipped default) over the latest
/// `sample_size` records of each partition of that topic, counting the records whose verdict changes.
#[pyfunction]
#[pyo3(signature = (contract, *, current_contract=None, sample_topic=None, sample_size=None,
                    timeout_s=None, bootstrap_servers=None, extra_config=None))]
#[allow(clippy::too_many_arguments)]
pub fn contract_check(
    py: Python<'_>,
    contract: &str,
    current_contract: Arg<'_>,
    sample_topic: Arg<'_>,
    sample_size: Arg<'_>,
    timeout_s: Arg<'_>,
    bootstrap_servers: Arg<'_>,
    extra_config: Arg<'_>,
) -> PyResult<ContractCheck> {
    let new = Contract::load(contract).map_err(to_pyerr)?;
    let v: Values = values!(
        cmd::CONTRACT_CHECK,
        current_contract,
        sample_topic,
        sample_size,
        timeout_s,
        bootstrap_servers,
        extra_config
    )?;
    let current =
        Contract::load_or_default(v.opt_text("current_contract").map_err(to_pyerr)?.as_deref())
            .map_err(to_pyerr)?;
    let settings = args::kafka_of(&v)?;
    let sample = match v.opt_text("sample_topic").map_err(to_pyerr)? {
        Some(topic) => Some(check::Sample {
            topic,
            per_partition: v.int("sample_size").map_err(to_pyerr)?,
            timeout: v.seconds("timeout_s").map_err(to_pyerr)?,
        }),
        None => None,
    };
    let r = match &sample {
        Some(s) => scanning(py, |token, tick| {
            check::check(&settings, &new, &current, Some(s), token, tick)
        })?,
        None => check::CheckReport::default(),
    };
    Ok(ContractCheck {
        contract_id: new.id().to_string(),
        source: new.source().to_string(),
        is_default: new.is_default(),
        reason_codes: new.reason_codes().iter().map(|c| c.to_string()).collect(),
        current_id: current.id().to_string(),
        current_source: current.source().to_string(),
        sample_topic: sample.map(|s| s.topic),
        sampled: r.sampled,
        ranges: r.ranges,
        valid_now: r.valid_now,
        valid_new: r.valid_new,
        newly_rejected: r.newly_rejected,
        newly_accepted: r.newly_accepted,
        reason_changed: r.reason_changed,
        examples: r
            .examples
            .into_iter()
            .map(|e| (e.partition, e.offset, e.reason, e.detail))
            .collect(),
    })
}
