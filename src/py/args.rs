//! Arguments from Python, checked once, here, at the edge: a number outside its range, a name Kafka does
//! not allow or an unknown librdkafka key is a `ConfigError` with one readable line (never an
//! `OverflowError`, a panic or a stage that crawls).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString};

use crate::config::{self, KafkaSettings};
use crate::error::Error;
use crate::kafka;

use super::errors::to_pyerr;

pub fn config_error(message: String) -> PyErr {
    to_pyerr(Error::Config(message))
}

/// Broker settings: the flag, else `KAFKA_BOOTSTRAP_SERVERS`, else the default; the user's librdkafka
/// pairs checked by librdkafka itself.
pub fn kafka_settings(
    bootstrap_servers: Option<&str>,
    extra: Option<&Bound<'_, PyDict>>,
) -> PyResult<KafkaSettings> {
    let settings = KafkaSettings::resolve(bootstrap_servers, extra_pairs(extra)?);
    kafka::check_extra(&settings).map_err(to_pyerr)?;
    Ok(settings)
}

/// `extra_config`: keys are strings; values strings, numbers or booleans (as librdkafka spells them).
fn extra_pairs(extra: Option<&Bound<'_, PyDict>>) -> PyResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in extra.into_iter().flat_map(|d| d.iter()) {
        let key: String = k.extract().map_err(|_| {
            config_error(format!(
                "extra_config keys must be strings, got {}",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let value = if v.is_instance_of::<PyBool>() {
            if v.is_truthy()? { "true" } else { "false" }.to_string()
        } else if v.is_instance_of::<PyString>() {
            v.extract()?
        } else {
            v.str()?.to_string()
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// An integer option in `range`. Taken from Python as an `i128`, so that 2**64 + 1 is out of range
/// rather than an `OverflowError`.
pub fn int<T: TryFrom<i128>>(name: &str, value: i128, range: RangeInclusive<i128>) -> PyResult<T> {
    let v = config::bounded(name, value, range).map_err(to_pyerr)?;
    T::try_from(v).map_err(|_| config_error(format!("{name} is out of range: {value}")))
}

/// Seconds in `range` as a `Duration` (NaN and infinities are out of range).
pub fn seconds(name: &str, value: f64, range: RangeInclusive<f64>) -> PyResult<Duration> {
    config::seconds(name, value, range).map_err(to_pyerr)
}

pub fn opt_seconds(
    name: &str,
    value: Option<f64>,
    range: RangeInclusive<f64>,
) -> PyResult<Option<Duration>> {
    value.map(|v| seconds(name, v, range)).transpose()
}

pub fn ratio(name: &str, value: f64) -> PyResult<f64> {
    if value.is_nan() {
        return Err(config_error(format!(
            "{name} must be between 0 and 1, got NaN"
        )));
    }
    config::bounded(name, value, 0.0..=1.0).map_err(to_pyerr)
}

pub fn topic(name: &str, value: &str) -> PyResult<String> {
    config::topic_name(name, value).map_err(to_pyerr)
}

pub fn group(value: &str) -> PyResult<String> {
    config::group_id(value).map_err(to_pyerr)
}

/// Workers per stage: a worker beyond the partition count only waits, and thousands of them would
/// time out in the group; 64 is far above any partition count this pipeline uses.
pub const WORKERS: RangeInclusive<i128> = 1..=64;
pub const THREADS: RangeInclusive<i128> = 0..=64;
pub const PARTITIONS: RangeInclusive<i128> = 1..=10_000;
pub const BATCH: RangeInclusive<i128> = 1..=1_000_000;
pub const COUNT: RangeInclusive<i128> = 0..=(u64::MAX as i128);
pub const UNTIL_IDLE: RangeInclusive<f64> = 0.001..=config::MAX_SECONDS;
/// Kafka holds a replication factor in 16 bits; a cluster has far fewer brokers anyway.
pub const REPLICATION: RangeInclusive<i128> = 1..=(i16::MAX as i128);
pub const UNREADABLE_TIMEOUT: RangeInclusive<f64> = 0.1..=config::MAX_SECONDS;

/// How the topics a stage creates are replicated.
pub fn replication(settings: &mut KafkaSettings, replication_factor: i128) -> PyResult<()> {
    settings.replication_factor = int("replication_factor", replication_factor, REPLICATION)?;
    Ok(())
}

/// How long a consumer may keep failing to read its input.
pub fn unreadable(settings: &mut KafkaSettings, unreadable_timeout_s: f64) -> PyResult<()> {
    settings.unreadable_timeout = seconds(
        "unreadable_timeout_s",
        unreadable_timeout_s,
        UNREADABLE_TIMEOUT,
    )?;
    Ok(())
}
