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
use crate::options::{self, Kind, Origin, Value, Values};

use super::errors::to_pyerr;

pub fn config_error(message: String) -> PyErr {
    to_pyerr(Error::Config(message))
}

/// A keyword argument of an option (None: not given).
pub type Arg<'py> = Option<Bound<'py, PyAny>>;

/// A command's options from its keyword arguments: `values!(cmd::LOAD, topic, group_id, ...)` resolves
/// each over the environment and the defaults and checks it (see `options::Values::resolve`).
#[macro_export]
macro_rules! values {
    ($command:expr, $($name:ident),+ $(,)?) => {
        $crate::py::args::values($command, &[$((stringify!($name), $name.as_ref())),+])
    };
}

/// See `values!`. Every option of the command that Python takes must be given (a missing one is a bug
/// in the binding, caught by its tests).
pub fn values(
    command: &'static str,
    given: &[(&str, Option<&Bound<'_, PyAny>>)],
) -> PyResult<Values> {
    let mut pairs = Vec::new();
    for o in options::of(command).filter(|o| o.in_python()) {
        let Some((_, v)) = given.iter().find(|(n, _)| *n == o.name) else {
            return Err(to_pyerr(Error::Internal(format!(
                "the binding of `{command}` does not pass its option {}",
                o.name
            ))));
        };
        if let Some(v) = v {
            pairs.push((o.name.to_string(), value(o, v)?));
        }
    }
    Values::resolve(command, pairs, Origin::Python).map_err(to_pyerr)
}

/// A Python value as an option's value (its kind says how to read it; the table checks it).
pub fn value(o: &options::Opt, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    let wrong = |what: &str| {
        config_error(format!(
            "{} must be {what}, got {}",
            o.name,
            v.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    if o.kind == Kind::Pairs {
        let d = v.cast::<PyDict>().map_err(|_| wrong("a dict"))?;
        return Ok(Value::Pairs(extra_pairs(Some(d))?));
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.is_truthy()?));
    }
    if let Ok(n) = v.extract::<i128>() {
        if v.is_instance_of::<pyo3::types::PyInt>() {
            return Ok(Value::Int(n));
        }
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return Err(config_error(format!("{} is out of range: {v}", o.name)));
    }
    if let Ok(f) = v.extract::<f64>() {
        if !v.is_instance_of::<PyString>() {
            return Ok(Value::Float(f));
        }
    }
    if let Ok(t) = v.extract::<String>() {
        return Ok(Value::Text(t));
    }
    if o.repeat {
        if let Ok(items) = v.extract::<Vec<String>>() {
            return Ok(Value::List(items));
        }
        return Err(wrong("a string or a list of strings"));
    }
    Err(wrong("a number, a string or a bool"))
}

/// Broker settings of a command's resolved options, the user's librdkafka pairs checked by librdkafka
/// itself.
pub fn kafka_of(v: &Values) -> PyResult<KafkaSettings> {
    let settings = KafkaSettings::from_values(v).map_err(to_pyerr)?;
    kafka::check_extra(&settings).map_err(to_pyerr)?;
    Ok(settings)
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
