//! Typed queries and topic reads for Python: arguments converted here, the work done in plain Rust with
//! the GIL released, values handed back as Python's own types (int, Decimal, float, bool, date, time,
//! datetime, str, bytes, None).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use super::args;
use super::errors::to_pyerr;
use crate::config;
use crate::kafka::{self, ReadRequest, Record};
use crate::pg::{self, Param, Value};

/// Python's types for the values of a query, looked up once per call.
struct PyTypes<'py> {
    decimal: Bound<'py, PyAny>,
    date: Bound<'py, PyAny>,
    time: Bound<'py, PyAny>,
    datetime: Bound<'py, PyAny>,
    utc: Bound<'py, PyAny>,
}

impl<'py> PyTypes<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        let dt = py.import("datetime")?;
        Ok(PyTypes {
            decimal: py.import("decimal")?.getattr("Decimal")?,
            date: dt.getattr("date")?,
            time: dt.getattr("time")?,
            datetime: dt.getattr("datetime")?,
            utc: dt.getattr("timezone")?.getattr("utc")?,
        })
    }
}

/// Runs one statement with `params` bound to `$1`, `$2`, ...; returns (column names, PostgreSQL type
/// names, rows as tuples of Python values).
#[pyfunction]
#[pyo3(signature = (sql, params=None, *, dsn=None))]
pub fn query<'py>(
    py: Python<'py>,
    sql: String,
    params: Option<Vec<Bound<'py, PyAny>>>,
    dsn: Option<&str>,
) -> PyResult<QueryResult<'py>> {
    let t = PyTypes::new(py)?;
    let params = params_of(params, &t)?;
    let dsn = config::database_from(dsn);
    let table = py
        .detach(|| {
            let cfg = pg::parse_dsn(&dsn)?;
            let mut client = pg::connect(&cfg)?;
            pg::query(&mut client, &sql, &params)
        })
        .map_err(to_pyerr)?;
    to_python(py, table, &t)
}

/// (column names, PostgreSQL type names, rows as tuples).
type QueryResult<'py> = (Vec<String>, Vec<String>, Bound<'py, PyList>);

fn params_of(params: Option<Vec<Bound<'_, PyAny>>>, t: &PyTypes<'_>) -> PyResult<Vec<Param>> {
    params
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| param(i, p, t))
        .collect()
}

fn to_python<'py>(
    py: Python<'py>,
    table: pg::Table,
    t: &PyTypes<'py>,
) -> PyResult<QueryResult<'py>> {
    let rows = PyList::empty(py);
    for row in table.rows {
        let cells = row
            .into_iter()
            .map(|v| value(py, v, t))
            .collect::<PyResult<Vec<_>>>()?;
        rows.append(PyTuple::new(py, cells)?)?;
    }
    Ok((table.columns, table.types, rows))
}

/// A PostgreSQL connection kept open between queries: for a reader that asks every second (the
/// dashboard), whose every new connection would cost the server a process start. Connects at the first
/// query and again after the connection is lost; usable from several threads (one query at a time).
#[pyclass(module = "ecomlogs._core", frozen)]
pub struct Database {
    dsn: String,
    client: std::sync::Mutex<Option<postgres::Client>>,
}

#[pymethods]
impl Database {
    #[new]
    #[pyo3(signature = (dsn=None))]
    fn new(dsn: Option<&str>) -> PyResult<Self> {
        let dsn = config::database_from(dsn);
        pg::parse_dsn(&dsn).map_err(to_pyerr)?;
        Ok(Database {
            dsn,
            client: std::sync::Mutex::new(None),
        })
    }

    /// Runs one statement as `ecomlogs._core.query` does, on this connection.
    #[pyo3(signature = (sql, params=None))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params: Option<Vec<Bound<'py, PyAny>>>,
    ) -> PyResult<QueryResult<'py>> {
        let t = PyTypes::new(py)?;
        let params = params_of(params, &t)?;
        let table = py
            .detach(|| {
                let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
                let client = match guard.take() {
                    Some(c) if !c.is_closed() => guard.insert(c),
                    _ => guard.insert(pg::connect(&pg::parse_dsn(&self.dsn)?)?),
                };
                let result = pg::query(client, &sql, &params);
                if client.is_closed() {
                    *guard = None;
                }
                result
            })
            .map_err(to_pyerr)?;
        to_python(py, table, &t)
    }

    /// Closes the connection (the next query opens a new one).
    fn close(&self, py: Python<'_>) {
        let client = self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(client));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }
}

fn param(i: usize, v: &Bound<'_, PyAny>, t: &PyTypes<'_>) -> PyResult<Param> {
    Ok(if v.is_none() {
        Param::Null
    } else if v.is_instance_of::<PyBool>() {
        Param::Bool(v.extract()?)
    } else if v.is_instance_of::<PyInt>() {
        match v.extract::<i64>() {
            Ok(n) => Param::Int(n),
            Err(_) => Param::Decimal(v.str()?.to_string()),
        }
    } else if v.is_instance_of::<PyFloat>() {
        Param::Float(v.extract()?)
    } else if v.is_instance(&t.decimal)? {
        Param::Decimal(v.str()?.to_string())
    } else if v.is_instance_of::<PyString>() {
        Param::Text(v.extract()?)
    } else if v.is_instance_of::<PyBytes>() || v.is_instance_of::<PyByteArray>() {
        Param::Bytes(v.extract()?)
    } else if v.is_instance(&t.datetime)? {
        if v.getattr("tzinfo")?.is_none() {
            Param::Timestamp(naive(i, v)?)
        } else {
            Param::TimestampTz(naive(i, &v.call_method1("astimezone", (&t.utc,))?)?.and_utc())
        }
    } else if v.is_instance(&t.date)? {
        Param::Date(ymd(i, v)?)
    } else {
        return Err(args::config_error(format!(
            "parameter ${}: a query takes None, bool, int, float, Decimal, str, bytes, date or datetime \
             values; got {}",
            i + 1,
            v.get_type().name()?
        )));
    })
}

fn ymd(i: usize, v: &Bound<'_, PyAny>) -> PyResult<NaiveDate> {
    let (y, m, d): (i32, u32, u32) = (
        v.getattr("year")?.extract()?,
        v.getattr("month")?.extract()?,
        v.getattr("day")?.extract()?,
    );
    NaiveDate::from_ymd_opt(y, m, d)
        .ok_or_else(|| args::config_error(format!("parameter ${}: not a date", i + 1)))
}

fn naive(i: usize, v: &Bound<'_, PyAny>) -> PyResult<NaiveDateTime> {
    let part = |name: &str| -> PyResult<u32> { v.getattr(name)?.extract() };
    ymd(i, v)?
        .and_hms_micro_opt(
            part("hour")?,
            part("minute")?,
            part("second")?,
            part("microsecond")?,
        )
        .ok_or_else(|| args::config_error(format!("parameter ${}: not a time of day", i + 1)))
}

/// Python's dates stop at the years 1 and 9999; a value beyond comes back as text.
fn in_python_range(year: i32) -> bool {
    (1..=9999).contains(&year)
}

fn datetime_args(x: &NaiveDateTime) -> (i32, u32, u32, u32, u32, u32, u32) {
    let micros = x.nanosecond() / 1000;
    let (y, mo, d) = (x.year(), x.month(), x.day());
    (y, mo, d, x.hour(), x.minute(), x.second(), micros)
}

fn value<'py>(py: Python<'py>, v: Value, t: &PyTypes<'py>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Value::Int(n) => n.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, f).into_any(),
        Value::Decimal(s) => t.decimal.call1((s,))?,
        Value::Text(s) => PyString::new(py, &s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any(),
        Value::Date(d) if in_python_range(d.year()) => {
            t.date.call1((d.year(), d.month(), d.day()))?
        }
        Value::Time(x) => {
            t.time
                .call1((x.hour(), x.minute(), x.second(), x.nanosecond() / 1000))?
        }
        Value::Timestamp(x) if in_python_range(x.year()) => t.datetime.call1(datetime_args(&x))?,
        Value::TimestampTz(x) if in_python_range(x.year()) => {
            let (y, mo, d, h, mi, s, us) = datetime_args(&x.naive_utc());
            t.datetime.call1((y, mo, d, h, mi, s, us, &t.utc))?
        }
        Value::Date(d) => PyString::new(py, &d.to_string()).into_any(),
        Value::Timestamp(x) => PyString::new(py, &x.to_string()).into_any(),
        Value::TimestampTz(x) => PyString::new(py, &x.to_string()).into_any(),
    })
}

/// (partition, offset, timestamp_ms, key, value, headers)
type PyRecord<'py> = (
    i32,
    i64,
    Option<i64>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    Vec<(String, Option<Bound<'py, PyBytes>>)>,
);

fn record(py: Python<'_>, r: Record) -> PyRecord<'_> {
    let bytes = |b: Option<Vec<u8>>| b.map(|b| PyBytes::new(py, &b));
    let headers = r.headers.into_iter().map(|(k, v)| (k, bytes(v))).collect();
    (
        r.partition,
        r.offset,
        r.timestamp_ms,
        bytes(r.key),
        bytes(r.value),
        headers,
    )
}

/// Reads `topic` to the end of every partition, from `start` (per partition; else the log start), at
/// most the `last` records of each partition; returns (records, next offset per partition, partitions
/// whose log was restarted).
#[pyfunction]
#[pyo3(signature = (topic, *, bootstrap_servers=None, start=None, last=None, values=true,
                    timeout_s=30.0, extra_config=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn read_topic<'py>(
    py: Python<'py>,
    topic: &str,
    bootstrap_servers: Option<&str>,
    start: Option<BTreeMap<i32, i64>>,
    last: Option<i128>,
    values: bool,
    timeout_s: f64,
    extra_config: Option<&Bound<'_, PyDict>>,
) -> PyResult<(Vec<PyRecord<'py>>, BTreeMap<i32, i64>, Vec<i32>)> {
    let s = args::kafka_settings(bootstrap_servers, extra_config)?;
    let topic = args::topic("topic", topic)?;
    let req = ReadRequest {
        start: start.unwrap_or_default(),
        last: last
            .map(|n| args::int("last", n, 0..=(i64::MAX as i128)))
            .transpose()?,
        values,
        timeout: args::seconds("timeout_s", timeout_s, 0.1..=3600.0)?,
    };
    let read = py
        .detach(|| kafka::read_to_end(&s, &topic, &req))
        .map_err(to_pyerr)?;
    let records = read.records.into_iter().map(|r| record(py, r)).collect();
    Ok((records, read.next, read.restarted))
}

/// (partition, first offset, next offset, committed offset)
type PartitionOffsets = (i32, i64, i64, Option<i64>);

/// Each partition of `topic`: (partition, first offset, next offset, `group_id`'s committed offset).
#[pyfunction]
#[pyo3(signature = (topic, *, group_id=None, bootstrap_servers=None, timeout_s=10.0,
                    extra_config=None))]
pub fn topic_offsets(
    py: Python<'_>,
    topic: &str,
    group_id: Option<&str>,
    bootstrap_servers: Option<&str>,
    timeout_s: f64,
    extra_config: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<PartitionOffsets>> {
    let s = args::kafka_settings(bootstrap_servers, extra_config)?;
    let topic = args::topic("topic", topic)?;
    let group = group_id.map(args::group).transpose()?;
    let timeout = args::seconds("timeout_s", timeout_s, 0.1..=3600.0)?;
    let offsets = py
        .detach(|| kafka::topic_offsets(&s, &topic, group.as_deref(), timeout))
        .map_err(to_pyerr)?;
    Ok(offsets
        .into_iter()
        .map(|p| (p.partition, p.low, p.high, p.committed))
        .collect())
}
