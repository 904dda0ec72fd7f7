//! The PyO3 skin: converts and checks arguments, calls the plain-Rust core with the GIL released, maps
//! errors. Nothing here has logic of its own. The module's exports are listed once, in `_core` below.

mod args;
mod contracts;
mod errors;
mod ops;
mod query;
mod runner;
mod stages;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::config;
use crate::generate::{Generator, GeneratorConfig, Intended};
use crate::kafka;
use crate::options;
use crate::pg;
use crate::validate;
use crate::values;
use errors::to_pyerr;

static LOG_RESET: std::sync::OnceLock<pyo3_log::ResetHandle> = std::sync::OnceLock::new();

/// (key, value, intended): the key is None for an event without a customer id.
type GeneratedEvent<'py> = (
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    &'static str,
);

/// Generates `n` events; returns (key, value, intended) where intended is "valid" or the invalid kind.
#[pyfunction]
#[pyo3(signature = (n, *, invalid_ratio=0.25, seed=None))]
fn generate_events<'py>(
    py: Python<'py>,
    n: i128,
    invalid_ratio: f64,
    seed: Option<u64>,
) -> PyResult<Vec<GeneratedEvent<'py>>> {
    let n: usize = args::int("n", n, 0..=100_000_000)?;
    let cfg = GeneratorConfig {
        invalid_ratio: args::ratio("invalid_ratio", invalid_ratio)?,
        seed,
        ..Default::default()
    };
    let raw: Vec<(Vec<u8>, Vec<u8>, Intended)> = py.detach(|| {
        let mut g = Generator::new(&cfg);
        (0..n)
            .map(|_| {
                let (mut k, mut v) = (Vec::new(), Vec::new());
                let i = g.next_into(&mut k, &mut v);
                (k, v, i)
            })
            .collect()
    });
    Ok(raw
        .into_iter()
        .map(|(k, v, i)| {
            let key = (!k.is_empty()).then(|| PyBytes::new(py, &k));
            let intended = match i {
                Intended::Valid => "valid",
                Intended::Invalid(kind) => kind.as_str(),
            };
            (key, PyBytes::new(py, &v), intended)
        })
        .collect())
}

/// Creates the topics that do not exist yet, through the Kafka admin API.
#[pyfunction]
#[pyo3(signature = (topics, *, bootstrap_servers=None, partitions=None, replication_factor=None,
                    timeout_s=15.0, extra_config=None))]
fn ensure_topics(
    py: Python<'_>,
    topics: Vec<String>,
    bootstrap_servers: args::Arg<'_>,
    partitions: args::Arg<'_>,
    replication_factor: args::Arg<'_>,
    timeout_s: f64,
    extra_config: args::Arg<'_>,
) -> PyResult<()> {
    let v = values!(
        options::cmd::TOPICS,
        bootstrap_servers,
        partitions,
        replication_factor,
        extra_config
    )?;
    let s = args::kafka_of(&v)?;
    let partitions = v.int("partitions").map_err(to_pyerr)?;
    let timeout = args::seconds("timeout_s", timeout_s, 0.1..=3600.0)?;
    let names = topics
        .iter()
        .map(|t| args::topic("topic", t))
        .collect::<PyResult<Vec<_>>>()?;
    py.detach(|| {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        kafka::ensure_topics(&s, &names, partitions, timeout)
    })
    .map_err(to_pyerr)
}

/// Applies the pending migrations in one transaction (all or nothing), recorded in `schema_migrations`;
/// returns the versions applied now (on a dry run, those that would be, changing nothing).
/// `move_duplicates` moves the extra copies of duplicated event ids aside before the unique key.
#[pyfunction]
#[pyo3(signature = (dsn=None, *, move_duplicates=None, dry_run=None))]
fn migrate(
    py: Python<'_>,
    dsn: args::Arg<'_>,
    move_duplicates: args::Arg<'_>,
    dry_run: args::Arg<'_>,
) -> PyResult<Vec<String>> {
    let v = values!(options::cmd::MIGRATE, dsn, move_duplicates, dry_run)?;
    let dsn = v.text("dsn").map_err(to_pyerr)?;
    let options = pg::MigrateOptions {
        move_duplicates: v.flag("move_duplicates").map_err(to_pyerr)?,
        dry_run: v.flag("dry_run").map_err(to_pyerr)?,
    };
    py.detach(|| {
        let cfg = pg::parse_dsn(&dsn)?;
        let mut client = pg::connect(&cfg)?;
        pg::migrate_with(&mut client, &options)
    })
    .map(|report| {
        report
            .applied
            .iter()
            .map(|a| a.version.to_string())
            .collect()
    })
    .map_err(to_pyerr)
}

/// Drops the daily partitions whose day ended more than `keep` days ago (each with its customer totals
/// kept aside; the daily rollups stay); returns (day, rows) of each (on a dry run, those that would be).
#[pyfunction]
#[pyo3(signature = (keep=None, *, dsn=None, dry_run=None))]
fn retention<'py>(
    py: Python<'py>,
    keep: args::Arg<'_>,
    dsn: args::Arg<'_>,
    dry_run: args::Arg<'_>,
) -> PyResult<Vec<(Bound<'py, pyo3::types::PyDate>, i64)>> {
    use chrono::Datelike;
    let v = values!(options::cmd::RETENTION, keep, dsn, dry_run)?;
    let keep: u32 = v
        .opt_int("keep")
        .map_err(to_pyerr)?
        .ok_or_else(|| args::config_error("keep (the days to keep) is required".into()))?;
    let (dsn, dry_run) = (
        v.text("dsn").map_err(to_pyerr)?,
        v.flag("dry_run").map_err(to_pyerr)?,
    );
    py.detach(|| {
        let mut client = pg::connect(&pg::parse_dsn(&dsn)?)?;
        pg::check_schema(&mut client)?;
        pg::history::retention(&mut client, keep, pg::history::today(), dry_run)
            .map_err(|e| crate::error::Error::database("dropping old partitions", &e))
    })
    .map_err(to_pyerr)?
    .into_iter()
    .map(|d| {
        let day =
            pyo3::types::PyDate::new(py, d.day.year(), d.day.month() as u8, d.day.day() as u8)?;
        Ok((day, d.rows))
    })
    .collect()
}

/// Recomputes the rollups from the table (days the table covers; customer totals from its rows plus
/// what retention dropped); returns (days, customer rows).
#[pyfunction]
#[pyo3(signature = (dsn=None))]
fn rebuild_rollups(py: Python<'_>, dsn: args::Arg<'_>) -> PyResult<(u64, u64)> {
    let v = values!(options::cmd::REBUILD_ROLLUPS, dsn)?;
    let dsn = v.text("dsn").map_err(to_pyerr)?;
    py.detach(|| {
        let mut client = pg::connect(&pg::parse_dsn(&dsn)?)?;
        pg::check_schema(&mut client)?;
        let db = |e: postgres::Error| crate::error::Error::database("rebuilding the rollups", &e);
        let mut tx = client.transaction().map_err(db)?;
        let r = pg::history::rebuild_rollups(&mut tx).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok((r.days, r.customers))
    })
    .map_err(to_pyerr)
}

/// The embedded migrations: (version, name, sql).
#[pyfunction]
fn migrations() -> Vec<(&'static str, &'static str, &'static str)> {
    pg::MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name, m.sql))
        .collect()
}

/// The bootstrap servers a stage would use: the argument, else `KAFKA_BOOTSTRAP_SERVERS`, else the
/// default.
#[pyfunction]
#[pyo3(signature = (value=None))]
fn resolve_bootstrap_servers(value: Option<&str>) -> String {
    config::bootstrap_servers_from(value)
}

/// The database a stage would use: the argument, else `DATABASE_URL`, else the `PG*` variables over
/// the defaults.
#[pyfunction]
#[pyo3(signature = (value=None))]
fn resolve_dsn(value: Option<&str>) -> String {
    config::database_from(value)
}

/// Re-reads Python's logging configuration (levels are cached for speed).
#[pyfunction]
fn reset_log_cache() {
    if let Some(h) = LOG_RESET.get() {
        h.reset();
    }
}

/// An option's default as a Python value.
fn default_of<'py>(py: Python<'py>, d: options::Default) -> PyResult<Bound<'py, PyAny>> {
    use options::Default as D;
    Ok(match d {
        D::None => py.None().into_bound(py),
        D::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        D::Int(n) => n.into_pyobject(py)?.into_any(),
        D::Float(f) => f.into_pyobject(py)?.into_any(),
        D::Text(t) => t.into_pyobject(py)?.into_any(),
    })
}

/// `{command: {option: default}}`, from the options table.
fn defaults_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for o in options::OPTIONS {
        for &command in o.commands {
            let per = match d.get_item(command)? {
                Some(per) => per.cast_into::<PyDict>()?,
                None => {
                    let per = PyDict::new(py);
                    d.set_item(command, &per)?;
                    per
                }
            };
            per.set_item(
                o.name,
                default_of(py, o.python_default.unwrap_or(o.default))?,
            )?;
        }
    }
    Ok(d)
}

/// The options table, for the command line to build its flags from: one dict per option and command.
fn options_list(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyList>> {
    use options::{Kind, Surface};
    let out = pyo3::types::PyList::empty(py);
    for o in options::OPTIONS {
        for &command in o.commands {
            let d = PyDict::new(py);
            let (kind, choices): (&str, Vec<&str>) = match o.kind {
                Kind::Bool => ("bool", vec![]),
                Kind::Int { .. } => ("int", vec![]),
                Kind::Float { .. } => ("float", vec![]),
                Kind::Seconds { .. } => ("seconds", vec![]),
                Kind::Choice(words) => ("choice", words.to_vec()),
                Kind::Reason => (
                    "choice",
                    validate::Reason::ALL.iter().map(|r| r.code()).collect(),
                ),
                Kind::Pairs => ("pairs", vec![]),
                _ => ("text", vec![]),
            };
            d.set_item("command", command)?;
            d.set_item("name", o.name)?;
            d.set_item("flag", o.flag_name())?;
            d.set_item("aliases", options::aliases_for(command, o).to_vec())?;
            d.set_item("kind", kind)?;
            d.set_item("choices", choices)?;
            d.set_item("default", default_of(py, o.default)?)?;
            d.set_item(
                "python_default",
                default_of(py, o.python_default.unwrap_or(o.default))?,
            )?;
            d.set_item("default_text", o.default_text())?;
            d.set_item("env", o.env)?;
            d.set_item("help", o.help)?;
            d.set_item("metavar", o.metavar_text())?;
            d.set_item("repeat", o.repeat)?;
            let cli = o.surface != Surface::Python && !options::PYTHON_ONLY.contains(&command);
            d.set_item("cli", cli)?;
            d.set_item("python", o.surface != Surface::Cli)?;
            d.set_item("group", o.group)?;
            out.append(d)?;
        }
    }
    Ok(out)
}

/// Parses and checks one value of `command`'s option `name` as the command line gives it (text); the
/// error names the flag.
#[pyfunction]
fn parse_option<'py>(
    py: Python<'py>,
    command: &str,
    name: &str,
    text: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let o = options::find(command, name).map_err(to_pyerr)?;
    let v = o.parse(text, options::Origin::Cli).map_err(to_pyerr)?;
    value_to_py(py, v)
}

/// The value of a command's option as the command line resolves it: the flag's (already parsed; None:
/// not given), else its environment variable, else its default.
#[pyfunction]
#[pyo3(signature = (command, name, given=None))]
fn resolve_option<'py>(
    py: Python<'py>,
    command: &str,
    name: &str,
    given: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let o = options::find(command, name).map_err(to_pyerr)?;
    let command = o
        .commands
        .iter()
        .find(|c| **c == command)
        .copied()
        .expect("found in this command");
    let mut pairs = Vec::new();
    if let Some(g) = &given {
        pairs.push((o.name.to_string(), args::value(o, g)?));
    }
    let origin = options::Origin::Cli;
    let v = options::Values::resolve(command, pairs, origin).map_err(to_pyerr)?;
    value_to_py(py, v.value(o.name).map_err(to_pyerr)?)
}

/// Every option of `command`, resolved: `given` (by name; None: not given), else the environment, else
/// the default; each checked (an unknown name is a `ConfigError` listing the command's options).
#[pyfunction]
#[pyo3(signature = (command, given=None))]
fn resolve_options<'py>(
    py: Python<'py>,
    command: &str,
    given: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let command = options::OPTIONS
        .iter()
        .flat_map(|o| o.commands.iter())
        .find(|c| **c == command)
        .copied()
        .ok_or_else(|| {
            errors::to_pyerr(crate::error::Error::Config(format!(
                "no command {command:?}"
            )))
        })?;
    let mut pairs = Vec::new();
    for (k, v) in given.iter().flat_map(|d| d.iter()) {
        let name: String = k.extract()?;
        match options::find(command, &name) {
            Ok(o) => pairs.push((name, args::value(o, &v)?)),
            Err(_) => pairs.push((name, options::Value::Null)), // refused by `resolve`, naming it
        }
    }
    let v = options::Values::resolve(command, pairs, options::Origin::Python).map_err(to_pyerr)?;
    if v.has("extra_config") {
        args::kafka_of(&v)?; // the user's librdkafka keys and values, checked by librdkafka itself
    }
    let out = PyDict::new(py);
    for o in options::of(command) {
        out.set_item(o.name, value_to_py(py, v.value(o.name).map_err(to_pyerr)?)?)?;
    }
    Ok(out)
}

fn value_to_py(py: Python<'_>, v: options::Value) -> PyResult<Bound<'_, PyAny>> {
    use options::Value as V;
    Ok(match v {
        V::Null => py.None().into_bound(py),
        V::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        V::Int(n) => n.into_pyobject(py)?.into_any(),
        V::Float(f) => f.into_pyobject(py)?.into_any(),
        V::Text(t) => t.into_pyobject(py)?.into_any(),
        V::List(l) => l.into_pyobject(py)?.into_any(),
        V::Pairs(p) => p.into_pyobject(py)?.into_any(),
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let logger = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::LoggersAndLevels)?
        .filter(log::LevelFilter::Debug)
        .filter_target("librdkafka".to_owned(), log::LevelFilter::Info)
        .filter_target("rdkafka".to_owned(), log::LevelFilter::Info)
        .filter_target("postgres".to_owned(), log::LevelFilter::Warn)
        .filter_target("tokio_postgres".to_owned(), log::LevelFilter::Warn);
    if let Ok(handle) = logger.install() {
        let _ = LOG_RESET.set(handle);
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULTS", defaults_dict(m.py())?)?;
    m.add("OPTIONS", options_list(m.py())?)?;
    m.add_function(wrap_pyfunction!(parse_option, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_option, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_options, m)?)?;
    m.add_class::<stages::StopToken>()?;
    m.add_class::<stages::ProduceStats>()?;
    m.add_class::<stages::ProcessStats>()?;
    m.add_class::<stages::LoadStats>()?;
    m.add_class::<contracts::Validation>()?;
    m.add_class::<contracts::ContractCheck>()?;
    m.add("DEFAULT_CONTRACT", crate::contract::DEFAULT_TEXT)?;
    m.add_function(wrap_pyfunction!(contracts::contract_check, m)?)?;
    m.add_class::<ops::MetricsServer>()?;
    m.add_class::<ops::DeadLetter>()?;
    m.add_class::<ops::DeadLetterReport>()?;
    m.add_class::<ops::ReplayStats>()?;
    m.add_function(wrap_pyfunction!(ops::serve_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(ops::metrics_text, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dlq_inspect, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dlq_read, m)?)?;
    m.add_function(wrap_pyfunction!(ops::dlq_replay, m)?)?;
    m.add_function(wrap_pyfunction!(stages::produce, m)?)?;
    m.add_function(wrap_pyfunction!(stages::process, m)?)?;
    m.add_function(wrap_pyfunction!(stages::load, m)?)?;
    m.add_function(wrap_pyfunction!(generate_events, m)?)?;
    m.add_function(wrap_pyfunction!(contracts::validate_one, m)?)?;
    m.add_function(wrap_pyfunction!(contracts::validate_many, m)?)?;
    m.add_function(wrap_pyfunction!(contracts::reason_codes, m)?)?;
    m.add_function(wrap_pyfunction!(ensure_topics, m)?)?;
    m.add_function(wrap_pyfunction!(migrate, m)?)?;
    m.add_function(wrap_pyfunction!(migrations, m)?)?;
    m.add_function(wrap_pyfunction!(retention, m)?)?;
    m.add_function(wrap_pyfunction!(rebuild_rollups, m)?)?;
    m.add_function(wrap_pyfunction!(query::query, m)?)?;
    m.add_class::<query::Database>()?;
    m.add_function(wrap_pyfunction!(query::read_topic, m)?)?;
    m.add_function(wrap_pyfunction!(query::topic_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_bootstrap_servers, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_dsn, m)?)?;
    m.add_function(wrap_pyfunction!(reset_log_cache, m)?)?;
    Ok(())
}
