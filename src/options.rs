//! Every option of every command, declared once: its name, the commands that take it, its kind and
//! range, its default, its environment variable and its help. Everything else is derived from this table
//! or checked against it: the stages' option structs read their values from it (`Values`), the Python
//! signatures take `None` for "default" and hand their arguments to it, the command line builds its flags
//! from it (exported as `_core.OPTIONS`), `_core.DEFAULTS` and the README's configuration table come from
//! it. Adding an option is one row here plus its use.
//!
//! A value is resolved once, at the edge: the caller's (a flag, a keyword argument), else the option's
//! environment variable, else its default; it is checked against the option's kind and range there, and
//! a bad one is a `Config` error naming the flag (command line) or the keyword (Python), never a panic
//! or a stage that starts and then fails.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::{Error, Result};

/// The defaults: the original system's names and settings (our contract), and this crate's own.
pub mod defaults {
    pub const BOOTSTRAP_SERVERS: &str = "localhost:29092";
    pub const DATABASE: &str = "postgresql://postgres@localhost:5432/ecom_kafka";
    pub const RAW_TOPIC: &str = "raw_events";
    pub const CLEAN_TOPIC: &str = "clean_events";
    pub const DLQ_TOPIC: &str = "dead_letter_events";
    pub const PROCESSOR_GROUP: &str = "silver-stream-processor";
    pub const LOADER_GROUP: &str = "postgres-loader";
}

/// The commands, as the command line spells them.
pub mod cmd {
    pub const PRODUCE: &str = "produce";
    pub const PROCESS: &str = "process";
    pub const LOAD: &str = "load";
    pub const RUN: &str = "run";
    pub const MIGRATE: &str = "migrate";
    pub const RETENTION: &str = "retention";
    pub const REBUILD_ROLLUPS: &str = "rebuild-rollups";
    pub const DLQ_INSPECT: &str = "dlq inspect";
    pub const DLQ_REPLAY: &str = "dlq replay";
    pub const DASHBOARD: &str = "dashboard";
    /// `ensure_topics` (Python only).
    pub const TOPICS: &str = "topics";
    /// `dead_letters` (Python only).
    pub const DLQ_READ: &str = "dead letters";
    /// `ecomlogs contract check FILE`: a contract checked, and run over a sample of a topic.
    pub const CONTRACT_CHECK: &str = "contract check";
    /// `validate` and `validate_batch` (Python only).
    pub const VALIDATE: &str = "validate";
}
use cmd::*;

const STAGES: &[&str] = &[PRODUCE, PROCESS, LOAD, RUN];
const KAFKA: &[&str] = &[
    PRODUCE,
    PROCESS,
    LOAD,
    RUN,
    DLQ_INSPECT,
    DLQ_REPLAY,
    DLQ_READ,
    DASHBOARD,
    TOPICS,
    CONTRACT_CHECK,
];
/// Commands of the Python API only (no flags).
pub const PYTHON_ONLY: &[&str] = &[TOPICS, DLQ_READ, VALIDATE];
const CREATES_TOPICS: &[&str] = &[PRODUCE, PROCESS, LOAD, RUN, TOPICS];
const CONSUMERS: &[&str] = &[PROCESS, LOAD];
const DLQ: &[&str] = &[DLQ_INSPECT, DLQ_REPLAY];
const DLQ_ALL: &[&str] = &[DLQ_INSPECT, DLQ_REPLAY, DLQ_READ];
const DATABASE: &[&str] = &[LOAD, RUN, MIGRATE, DASHBOARD, RETENTION, REBUILD_ROLLUPS];
const EVERY: &[&str] = &[
    PRODUCE,
    PROCESS,
    LOAD,
    RUN,
    MIGRATE,
    RETENTION,
    REBUILD_ROLLUPS,
    DLQ_INSPECT,
    DLQ_REPLAY,
    DASHBOARD,
    CONTRACT_CHECK,
];

/// What values an option takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// On or off (a flag on the command line: `--name`, or `--no-name` when the default is on).
    Bool,
    /// A whole number in `min..=max`.
    Int { min: i128, max: i128 },
    /// A number in `min..=max` (`above`: strictly above `min`); NaN and infinities never.
    Float { min: f64, max: f64, above: bool },
    /// Seconds in `min..=max`.
    Seconds { min: f64, max: f64 },
    /// Free text (not empty).
    Text,
    /// A Kafka topic name.
    Topic,
    /// A consumer group id.
    Group,
    /// `host:port[,host:port...]`.
    Servers,
    /// A PostgreSQL URL or `key=value` string.
    Dsn,
    /// A host name or address.
    Host,
    /// An `http://` or `https://` URL.
    Url,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A reason code of the validator or the loader.
    Reason,
    /// `key=value` pairs (librdkafka settings).
    Pairs,
    /// A contract file (JSON Schema): read and compiled when the value is checked.
    Contract,
}

/// An option's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// None (the help says what that means).
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'static str),
}

/// Where an option is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// A flag and a keyword argument.
    Both,
    /// A flag only (logging, metrics endpoint, output format: the Python API has its own ways).
    Cli,
    /// A keyword argument only.
    Python,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// The Python keyword; the flag is `--` + the name without a final `_s` (a unit of seconds) or, for
    /// a repeatable option, without its plural `s` (`metrics_urls` is `--metrics-url`, once per URL),
    /// with dashes for underscores (`--no-` + the name for a bool that is on by default).
    pub name: &'static str,
    pub commands: &'static [&'static str],
    pub kind: Kind,
    pub default: Default,
    /// The default of the Python API where it differs from the command line's (the producer's pace: a
    /// notebook wants events as fast as they go, the original script one every 500 ms).
    pub python_default: Option<Default>,
    /// What a None default means, for the help ("run until Ctrl-C").
    pub none_means: &'static str,
    pub env: Option<&'static str>,
    pub help: &'static str,
    pub aliases: &'static [&'static str],
    pub metavar: Option<&'static str>,
    /// Given several times, the values make a list.
    pub repeat: bool,
    pub surface: Surface,
    /// Options in the same group exclude each other on the command line.
    pub group: Option<&'static str>,
}

const fn opt(
    name: &'static str,
    commands: &'static [&'static str],
    kind: Kind,
    default: Default,
    help: &'static str,
) -> Opt {
    Opt {
        name,
        commands,
        kind,
        default,
        python_default: None,
        none_means: "",
        env: None,
        help,
        aliases: &[],
        metavar: None,
        repeat: false,
        surface: Surface::Both,
        group: None,
    }
}

impl Opt {
    const fn env(mut self, var: &'static str) -> Self {
        self.env = Some(var);
        self
    }
    const fn python_default(mut self, default: Default) -> Self {
        self.python_default = Some(default);
        self
    }
    const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }
    const fn metavar(mut self, metavar: &'static str) -> Self {
        self.metavar = Some(metavar);
        self
    }
    const fn none(mut self, means: &'static str) -> Self {
        self.none_means = means;
        self
    }
    const fn repeat(mut self) -> Self {
        self.repeat = true;
        self
    }
    const fn cli_only(mut self) -> Self {
        self.surface = Surface::Cli;
        self
    }
    const fn python_only(mut self) -> Self {
        self.surface = Surface::Python;
        self
    }
    const fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// The command-line flag.
    pub fn flag_name(&self) -> String {
        let name = if self.repeat {
            self.name.strip_suffix('s').unwrap_or(self.name) // one URL per flag
        } else {
            self.name.strip_suffix("_s").unwrap_or(self.name) // a unit of seconds
        };
        if self.kind == Kind::Bool && self.default == Default::Bool(true) {
            format!("--no-{}", name.replace('_', "-"))
        } else {
            format!("--{}", name.replace('_', "-"))
        }
    }

    /// The placeholder for the flag's value in the help.
    pub fn metavar_text(&self) -> String {
        if let Some(m) = self.metavar {
            return m.to_string();
        }
        match self.kind {
            Kind::Int { .. } => "N".into(),
            Kind::Float { .. } => "NUMBER".into(),
            Kind::Seconds { .. } => "SECONDS".into(),
            Kind::Topic => "TOPIC".into(),
            Kind::Group => "GROUP".into(),
            Kind::Dsn => "DSN".into(),
            Kind::Host => "HOST".into(),
            Kind::Url => "URL".into(),
            Kind::Servers => "HOST:PORT,...".into(),
            Kind::Choice(words) if words.len() <= 4 => words.join("|"),
            Kind::Reason => "REASON".into(),
            Kind::Pairs => "KEY=VALUE".into(),
            Kind::Contract => "FILE".into(),
            _ => self.name.to_uppercase(),
        }
    }

    pub fn on_cli(&self) -> bool {
        self.surface != Surface::Python
    }

    pub fn in_python(&self) -> bool {
        self.surface != Surface::Cli
    }

    /// The default as the help shows it.
    pub fn default_text(&self) -> String {
        match self.default {
            Default::None if !self.none_means.is_empty() => self.none_means.to_string(),
            Default::None => "none".into(),
            Default::Bool(b) => if b { "on" } else { "off" }.into(),
            Default::Int(n) => n.to_string(),
            Default::Float(f) => format!("{f}"),
            Default::Text(t) => t.to_string(),
        }
    }
}

const MAX_S: f64 = MAX_SECONDS;
const U64: i128 = u64::MAX as i128;
const PORT: Kind = Kind::Int { min: 0, max: 65535 };
/// Workers per stage: a worker beyond the partition count only waits, and thousands of them would time
/// out in the group; 64 is far above any partition count this pipeline uses.
const WORKERS: Kind = Kind::Int { min: 1, max: 64 };
const SECONDS: Kind = Kind::Seconds {
    min: 0.001,
    max: MAX_S,
};

/// The table.
pub const OPTIONS: &[Opt] = &[
    // Where the services are, and how to talk to them.
    opt("bootstrap_servers", KAFKA, Kind::Servers, Default::Text(defaults::BOOTSTRAP_SERVERS),
        "Kafka bootstrap servers")
        .env("KAFKA_BOOTSTRAP_SERVERS").metavar("HOST:PORT,..."),
    opt("extra_config", KAFKA, Kind::Pairs, Default::None,
        "a librdkafka setting passed as is, winning over ours (repeatable), e.g. security.protocol=SSL")
        .metavar("KEY=VALUE").repeat(),
    opt("dsn", DATABASE, Kind::Dsn, Default::Text(defaults::DATABASE),
        "PostgreSQL URL or key=value string (then the standard PG* variables); a password comes only from \
         here or PGPASSWORD")
        .env("DATABASE_URL"),
    opt("partitions", CREATES_TOPICS, Kind::Int { min: 1, max: 10_000 }, Default::Int(3),
        "partitions of the topics created when missing"),
    // Kafka holds a replication factor in 16 bits; a cluster has far fewer brokers anyway.
    opt("replication_factor", CREATES_TOPICS, Kind::Int { min: 1, max: i16::MAX as i128 }, Default::Int(1),
        "copies of each partition of the topics created when missing; 3 on a production cluster")
        .env("ECOMLOGS_REPLICATION_FACTOR"),
    opt("unreadable_timeout_s", CONSUMERS, Kind::Seconds { min: 0.1, max: MAX_S }, Default::Float(60.0),
        "fail (exit 1) when records that cannot be fetched or decoded (a corrupt batch, a permission the \
         broker refuses) still block the input after this long; each attempt is logged with topic, \
         partition and offset")
        .metavar("SECONDS"),
    // Logging and metrics: the command line's (the Python API has logging and serve_metrics()).
    opt("quiet", EVERY, Kind::Bool, Default::Bool(false), "only warnings and errors (--log-level warning)")
        .aliases(&["-q"]).cli_only().group("verbosity"),
    opt("verbose", EVERY, Kind::Bool, Default::Bool(false), "debug output (--log-level debug)")
        .aliases(&["-v"]).cli_only().group("verbosity"),
    opt("log_level", EVERY, Kind::Choice(&["debug", "info", "warning", "error"]), Default::Text("info"),
        "the least severe log lines shown")
        .env("ECOMLOGS_LOG").metavar("LEVEL").cli_only().group("verbosity"),
    opt("log_format", EVERY, Kind::Choice(&["text", "json"]), Default::Text("text"),
        "text for people, json for log pipelines: one object per line")
        .env("ECOMLOGS_LOG_FORMAT").cli_only(),
    opt("metrics_port", STAGES, PORT, Default::None,
        "serve Prometheus /metrics and /healthz on this port; 0 = a free one, logged")
        .env("ECOMLOGS_METRICS_PORT").metavar("PORT").none("off").cli_only(),
    opt("metrics_host", STAGES, Kind::Host, Default::Text("127.0.0.1"), "address to serve metrics on")
        .env("ECOMLOGS_METRICS_HOST").metavar("HOST").cli_only(),
    // The producer.
    opt("topic", &[PRODUCE], Kind::Topic, Default::Text(defaults::RAW_TOPIC), "topic to produce to"),
    opt("count", &[PRODUCE], Kind::Int { min: 0, max: U64 }, Default::None, "stop after N events")
        .none("run until Ctrl-C"),
    opt("interval_ms", &[PRODUCE], Kind::Float { min: 0.0, max: 3_600_000.0, above: false }, Default::Float(500.0),
        "pause between events (the original's 500; the Python API's default is 0); 0 = as fast as possible, \
         with a progress line")
        .python_default(Default::Float(0.0)),
    opt("rate", &[PRODUCE, RUN], Kind::Float { min: 0.0, max: 1e9, above: true }, Default::None,
        "events per second (instead of --interval-ms; 2 = the original's pace)")
        .metavar("EVENTS_PER_S").none("--interval-ms, or as fast as possible in run"),
    opt("invalid_ratio", &[PRODUCE, RUN], Kind::Float { min: 0.0, max: 1.0, above: false }, Default::Float(0.25),
        "share of deliberately invalid events")
        .env("ECOMLOGS_INVALID_RATIO"),
    opt("seed", &[PRODUCE, RUN], Kind::Int { min: 0, max: U64 }, Default::None,
        "seed for reproducible events").none("random"),
    opt("log_each", &[PRODUCE], Kind::Bool, Default::None,
        "a log line per event").none("when paced at 20 events/s or slower").python_only(),
    // The stream processor.
    opt("input_topic", &[PROCESS], Kind::Topic, Default::Text(defaults::RAW_TOPIC), "topic to validate"),
    opt("output_topic", &[PROCESS], Kind::Topic, Default::Text(defaults::CLEAN_TOPIC),
        "topic for valid events (canonical JSON, same key)"),
    opt("dlq_topic", &[PROCESS, LOAD, DLQ_INSPECT, DLQ_REPLAY, DLQ_READ, DASHBOARD], Kind::Topic,
        Default::Text(defaults::DLQ_TOPIC), "the dead-letter topic")
        .aliases(&["--topic"]), // `--topic` in `dlq` only (see `aliases_for`)
    opt("group_id", &[PROCESS], Kind::Group, Default::Text(defaults::PROCESSOR_GROUP), "consumer group"),
    opt("until_idle_s", CONSUMERS, SECONDS, Default::None,
        "finish, commit and exit 0 once no input came for this long")
        .metavar("SECONDS").none("run until Ctrl-C"),
    opt("until_caught_up", CONSUMERS, Kind::Bool, Default::Bool(false),
        "finish, commit and exit 0 once every assigned partition has been read to its end"),
    opt("exactly_once", &[PROCESS, RUN], Kind::Bool, Default::Bool(false),
        "Kafka transactions: outputs and input offsets commit together (read downstream with \
         isolation.level=read_committed)"),
    opt("transactional_id", &[PROCESS], Kind::Text, Default::None,
        "with --exactly-once: a stable id per instance, so a restart fences a crashed predecessor at once")
        .none("group-host-pid"),
    opt("batch_max", &[PROCESS], Kind::Int { min: 1, max: 1_000_000 }, Default::Int(10_000),
        "records per batch at most (each batch: outputs acknowledged, then offsets committed)"),
    opt("workers", &[PROCESS], WORKERS, Default::Int(1),
        "consumers (group members) in this process, sharing the partitions; one is enough on one machine, \
         as it routes on every core"),
    opt("threads", &[PROCESS], Kind::Int { min: 0, max: 64 }, Default::Int(0),
        "threads routing each large batch, whole partitions each (a key's order is kept); 0 = one per core"),
    opt("log_each", &[PROCESS, LOAD], Kind::Bool, Default::Bool(false), "a log line per event (--verbose)")
        .python_only(),
    // Contracts.
    opt("contract", &[PROCESS, RUN, VALIDATE], Kind::Contract, Default::None,
        "the event contract: a JSON Schema (draft 2020-12) file whose x-reason keywords name the reason codes; \
         the structure and the table's checks always run too; its $id goes into a header of every record")
        .env("ECOMLOGS_CONTRACT").none("the shipped default (the original's rules)"),
    opt("current_contract", &[CONTRACT_CHECK], Kind::Contract, Default::None,
        "the contract in use now, to compare with")
        .env("ECOMLOGS_CONTRACT").none("the shipped default"),
    opt("sample_topic", &[CONTRACT_CHECK], Kind::Topic, Default::None,
        "run both contracts over the latest records of this topic and count what would change, by reason")
        .none("no sample: only check the file"),
    opt("sample_size", &[CONTRACT_CHECK], Kind::Int { min: 1, max: 10_000_000 }, Default::Int(1000),
        "records per partition in the sample (the latest ones)"),
    opt("timeout_s", &[CONTRACT_CHECK], Kind::Seconds { min: 0.1, max: 3600.0 }, Default::Float(30.0),
        "how long to wait for the broker's first answer")
        .metavar("SECONDS"),
    // The loader.
    opt("topic", &[LOAD], Kind::Topic, Default::Text(defaults::CLEAN_TOPIC), "topic to load"),
    opt("group_id", &[LOAD], Kind::Group, Default::Text(defaults::LOADER_GROUP), "consumer group"),
    opt("batch_size", &[LOAD, RUN], Kind::Int { min: 1, max: 1_000_000 }, Default::Int(50_000),
        "rows per transaction at most; fewer when the input goes quiet (500 is the original's)"),
    opt("flush_interval_ms", &[LOAD, RUN], Kind::Int { min: 1, max: 3_600_000 }, Default::Int(1000),
        "write a batch at the latest this long after its first record; a partial batch is written as soon \
         as the input has been quiet for 50 ms"),
    opt("workers", &[LOAD], WORKERS, Default::Int(1),
        "consumer threads in this process, sharing the partitions, each with its own PostgreSQL connection"),
    opt("migrate", &[LOAD], Kind::Bool, Default::Bool(true), "apply pending migrations at start-up"),
    opt("retention_days", &[LOAD], Kind::Int { min: 1, max: 36_500 }, Default::None,
        "drop the daily partitions whose day ended more than this many days ago, at start and hourly \
         (whole partitions: seconds; the rollups keep counting those days)")
        .env("ECOMLOGS_RETENTION_DAYS").metavar("DAYS").none("keep everything"),
    opt("max_backoff_s", &[LOAD], Kind::Seconds { min: 0.1, max: 3600.0 }, Default::Float(10.0),
        "longest pause between reconnection attempts during a database outage")
        .metavar("SECONDS"),
    // The whole pipeline.
    opt("count", &[RUN], Kind::Int { min: 0, max: U64 }, Default::Int(200_000),
        "events to produce; 0 = until Ctrl-C or --duration").group("amount"),
    opt("duration_s", &[RUN], SECONDS, Default::None, "produce for this long")
        .metavar("SECONDS").none("--count").group("amount"),
    opt("stall_timeout_s", &[RUN], Kind::Seconds { min: 1.0, max: MAX_S }, Default::Float(60.0),
        "while draining, fail (exit 1, naming the stage) if the stage waited on makes no progress for this \
         long")
        .metavar("SECONDS"),
    opt("processor_workers", &[RUN], WORKERS, Default::Int(1), "processor consumers (group members)"),
    opt("loader_workers", &[RUN], WORKERS, Default::Int(1), "loader consumer threads"),
    // Dead letters.
    opt("reason", DLQ_ALL, Kind::Reason, Default::None,
        "only this reason code, e.g. database_rejected (repeatable)")
        .repeat().none("every reason"),
    opt("stage", DLQ_ALL, Kind::Choice(&["processor", "loader"]), Default::None,
        "only dead letters of this stage (repeatable)")
        .repeat().none("both"),
    opt("since", DLQ, Kind::Text, Default::None,
        "only dead letters written since: ISO 8601 (2026-11-27T08:00Z) or a duration back from now (90s, \
         15m, 2h, 1d)")
        // Python's dlq functions take richer values (datetime, timedelta) and convert them themselves.
        .metavar("TIME").none("all").cli_only(),
    opt("samples", &[DLQ_INSPECT], Kind::Int { min: 0, max: 100_000 }, Default::Int(3),
        "samples per stage and reason"),
    opt("json", &[DLQ_INSPECT], Kind::Bool, Default::Bool(false), "one JSON document on stdout, for scripts")
        .cli_only(),
    opt("dry_run", &[DLQ_REPLAY], Kind::Bool, Default::Bool(false),
        "say exactly what a run would send (from the same position); send and commit nothing"),
    opt("include_replayed", &[DLQ_REPLAY], Kind::Bool, Default::Bool(false),
        "also send dead letters made from records replayed before (their generation grows by one); a \
         record this run replayed is never sent again by it"),
    opt("from_beginning", &[DLQ_REPLAY], Kind::Bool, Default::Bool(false),
        "start at the beginning of the topic, not where the last replay with the same --reason/--stage \
         stopped"),
    opt("until_idle_s", &[DLQ_REPLAY], SECONDS, Default::None,
        "keep following the topic for new dead letters to replay until none came for this long (dead \
         letters made from replayed records do not count)")
        .metavar("SECONDS").none("stop at its end"),
    opt("rate", &[DLQ_REPLAY], Kind::Float { min: 0.0, max: 1e9, above: true }, Default::None,
        "at most this many records per second back to their topics (a large replay beside a running \
         pipeline)")
        .metavar("RECORDS_PER_S").none("as fast as the broker takes them"),
    opt("timeout_s", DLQ_ALL, Kind::Seconds { min: 0.1, max: 3600.0 }, Default::Float(30.0),
        "how long to wait for the broker's first answer")
        .metavar("SECONDS"),
    opt("limit", &[DLQ_READ], Kind::Int { min: 0, max: 100_000_000 }, Default::None,
        "at most this many dead letters").none("all"),
    // Migrations.
    opt("move_duplicates", &[MIGRATE], Kind::Bool, Default::Bool(false),
        "keep the row with the lowest id of each duplicated event_id and move the other copies to \
         kafka_events_silver_duplicates (same columns plus moved_at), in the same transaction"),
    opt("dry_run", &[MIGRATE], Kind::Bool, Default::Bool(false),
        "say what would be applied and which duplicates stand in the way; change nothing"),
    // History.
    opt("keep", &[RETENTION], Kind::Int { min: 1, max: 36_500 }, Default::None,
        "drop the daily partitions whose day ended more than this many days ago (required)")
        .metavar("DAYS").none("required"),
    opt("dry_run", &[RETENTION], Kind::Bool, Default::Bool(false),
        "say which partitions would be dropped (and their rows); drop nothing"),
    // The dashboard.
    opt("host", &[DASHBOARD], Kind::Host, Default::Text("127.0.0.1"),
        "address to listen on (127.0.0.1: this machine only)"),
    opt("port", &[DASHBOARD], PORT, Default::Int(8050), "port to listen on; 0 = any free one"),
    opt("metrics_urls", &[DASHBOARD], Kind::Url, Default::None,
        "a stage's Prometheus endpoint, e.g. http://127.0.0.1:9101/metrics (repeatable)")
        .metavar("URL").repeat().none("none: rates and lag come from the topics and the table"),
    opt("interval_s", &[DASHBOARD], Kind::Seconds { min: 0.1, max: 3600.0 }, Default::Float(1.0),
        "how often the sources are read and the page updates")
        .metavar("SECONDS"),
    opt("allow_hosts", &[DASHBOARD], Kind::Host, Default::None,
        "also answer requests for this host name (repeatable); the page answers only its own names \
         (localhost, IP addresses, --host), so that no other web page can read it")
        .metavar("NAME").repeat().none("only its own names"),
];

/// The options of a command, in table order.
pub fn of(command: &str) -> impl Iterator<Item = &'static Opt> + '_ {
    OPTIONS
        .iter()
        .filter(move |o| o.commands.contains(&command))
}

/// One option of a command.
pub fn find(command: &str, name: &str) -> Result<&'static Opt> {
    of(command)
        .find(|o| o.name == name)
        .ok_or_else(|| Error::Internal(format!("`{command}` has no option {name}")))
}

/// The command line's aliases of an option in a command (`--topic` names the dead-letter topic in `dlq`
/// only, where it was the first name).
pub fn aliases_for(command: &str, o: &Opt) -> &'static [&'static str] {
    if o.name == "dlq_topic" && !DLQ.contains(&command) {
        &[]
    } else {
        o.aliases
    }
}

/// A value given for an option, or resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    List(Vec<String>),
    Pairs(BTreeMap<String, String>),
}

/// Who gave a value: the messages name the flag for the command line, the keyword for Python, the
/// variable for the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cli,
    Python,
    Env,
}

impl Opt {
    fn label(&self, origin: Origin) -> String {
        match origin {
            Origin::Cli => self.flag_name(),
            Origin::Python => self.name.to_string(),
            Origin::Env => self.env.unwrap_or(self.name).to_string(),
        }
    }

    /// Parses a value as the command line or the environment gives it (text), and checks it.
    pub fn parse(&self, text: &str, origin: Origin) -> Result<Value> {
        let label = self.label(origin);
        let bad = |what: &str| Error::Config(format!("{label} must be {what}, got {text:?}"));
        let v = match self.kind {
            Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Value::Bool(true),
                "0" | "false" | "no" | "off" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
            Kind::Int { .. } => Value::Int(
                text.trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| bad("a whole number"))?,
            ),
            Kind::Float { .. } | Kind::Seconds { .. } => {
                Value::Float(text.trim().parse().map_err(|_| bad("a number"))?)
            }
            Kind::Pairs => {
                let (k, v) = text
                    .split_once('=')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{label} expects KEY=VALUE with a non-empty KEY (the argument is not \
                             repeated here: it may hold a secret)"
                        ))
                    })?;
                Value::Pairs([(k.trim().to_string(), v.trim().to_string())].into())
            }
            _ => Value::Text(text.to_string()),
        };
        self.check(v, origin)
    }

    /// Checks a value against the option's kind and range (a list: each of its items).
    pub fn check(&self, v: Value, origin: Origin) -> Result<Value> {
        let label = self.label(origin);
        match v {
            Value::Null => Ok(Value::Null),
            Value::List(items) if self.repeat => items
                .into_iter()
                .map(|i| match self.check_one(Value::Text(i), &label)? {
                    Value::Text(t) => Ok(t),
                    _ => unreachable!("a text item stays text"),
                })
                .collect::<Result<_>>()
                .map(Value::List),
            Value::Text(t) if self.repeat => self.check(Value::List(vec![t]), origin),
            v => self.check_one(v, &label),
        }
    }

    fn check_one(&self, v: Value, label: &str) -> Result<Value> {
        let mismatch = |what: &str, v: &Value| {
            Error::Config(format!("{label} must be {what}, got {}", shown(v)))
        };
        match (self.kind, v) {
            (Kind::Bool, v @ Value::Bool(_)) => Ok(v),
            (Kind::Bool, v) => Err(mismatch("True or False", &v)),
            (Kind::Int { min, max }, Value::Int(n)) => bounded(label, n, min..=max).map(Value::Int),
            (Kind::Int { .. }, v) => Err(mismatch("a whole number", &v)),
            (Kind::Float { min, max, above }, Value::Int(n)) => {
                float_range(label, Value::Float(n as f64), min, max, above)
            }
            (Kind::Float { min, max, above }, v @ Value::Float(_)) => {
                float_range(label, v, min, max, above)
            }
            (Kind::Float { .. }, v) => Err(mismatch("a number", &v)),
            (Kind::Seconds { min, max }, Value::Int(n)) => {
                seconds(label, n as f64, min..=max).map(|_| Value::Float(n as f64))
            }
            (Kind::Seconds { min, max }, Value::Float(f)) => {
                seconds(label, f, min..=max).map(|_| Value::Float(f))
            }
            (Kind::Seconds { .. }, v) => Err(mismatch("a number of seconds", &v)),
            (Kind::Pairs, v @ Value::Pairs(_)) => Ok(v),
            (Kind::Pairs, v) => Err(mismatch("a dict of librdkafka settings", &v)),
            (_, Value::Text(t)) => self.check_text(t, label),
            (_, v) => Err(mismatch("text", &v)),
        }
    }

    fn check_text(&self, t: String, label: &str) -> Result<Value> {
        let bad = |what: String| Err(Error::Config(format!("{label}: {what}")));
        match self.kind {
            Kind::Topic => topic_name(label, &t).map(Value::Text),
            Kind::Group => group_id(&t).map(Value::Text),
            Kind::Text | Kind::Dsn | Kind::Servers | Kind::Host if t.trim().is_empty() => {
                Err(Error::Config(format!("{label} cannot be empty")))
            }
            Kind::Servers if !t.split(',').all(valid_host_port) => {
                bad(format!("expected host:port[,host:port...], got {t:?}"))
            }
            Kind::Host if !valid_host(&t) => Err(Error::Config(format!(
                "{label} expects a host name such as dashboard.example.com or an address (no port, no \
                 scheme), got {t:?}"
            ))),
            Kind::Url => check_url(&t).map_or_else(
                |why| Err(Error::Config(format!("{label} {why}"))),
                |()| Ok(Value::Text(t)),
            ),
            Kind::Choice(words) if !words.contains(&t.as_str()) => {
                bad(format!("expected one of {}, got {t:?}", words.join(", ")))
            }
            Kind::Contract => match crate::contract::Contract::load(&t) {
                Ok(_) => Ok(Value::Text(t)),
                Err(e) => Err(Error::Config(format!("{label} {e}"))),
            },
            Kind::Reason => {
                // Built-in codes, and those of a contract this process loaded or ECOMLOGS_CONTRACT names.
                if crate::validate::Reason::known(&t).is_some() || contract_codes().contains(&t) {
                    Ok(Value::Text(t))
                } else {
                    let mut known: Vec<String> = crate::validate::Reason::ALL
                        .iter()
                        .map(|r| r.code().to_string())
                        .collect();
                    for c in contract_codes() {
                        if !known.contains(&c) {
                            known.push(c);
                        }
                    }
                    bad(format!(
                        "unknown reason code {t:?}; the known ones are {} (a contract's own codes are known \
                         when ECOMLOGS_CONTRACT names it)",
                        known.join(", ")
                    ))
                }
            }
            _ => Ok(Value::Text(t)),
        }
    }

    /// The value from the option's environment variable, if it is set (and not empty). The database
    /// also comes from the standard `PG*` variables, as libpq users expect.
    fn env_value(&self) -> Result<Option<Value>> {
        if self.kind == Kind::Dsn {
            return Ok(Some(Value::Text(database_from(None))));
        }
        let Some(var) = self.env else {
            return Ok(None);
        };
        match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            Some(text) => self.parse(text.trim(), Origin::Env).map(Some),
            None => Ok(None),
        }
    }

    /// The default for callers from `origin` (the Python API's where it has its own).
    fn default_for(&self, origin: Origin) -> Value {
        let d = match (origin, self.python_default) {
            (Origin::Python, Some(d)) => d,
            _ => self.default,
        };
        match d {
            Default::None => Value::Null,
            Default::Bool(b) => Value::Bool(b),
            Default::Int(n) => Value::Int(n as i128),
            Default::Float(f) => Value::Float(f),
            Default::Text(t) => Value::Text(t.to_string()),
        }
    }
}

fn float_range(label: &str, v: Value, min: f64, max: f64, above: bool) -> Result<Value> {
    let Value::Float(f) = v else {
        return Ok(v);
    };
    let ok = f.is_finite() && (if above { f > min } else { f >= min }) && f <= max;
    if ok {
        Ok(v)
    } else if above {
        Err(Error::Config(format!(
            "{label} must be above {min} and at most {max}, got {f}"
        )))
    } else {
        Err(Error::Config(format!(
            "{label} must be between {min} and {max}, got {f}"
        )))
    }
}

fn valid_host_port(s: &str) -> bool {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// An `http(s)://host[:port][/path]` URL, checked without a URL parser of its own: the parts a request
/// needs are there and well formed. A password in it is never repeated.
fn check_url(t: &str) -> std::result::Result<(), String> {
    let shown = match (t.find("//"), t.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}***{}", &t[..a + 2], &t[b..]),
        _ => t.to_string(),
    };
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{shown:?} contains a space or a control character"));
    }
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| format!("must be an http:// or https:// URL, got {shown:?}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!(
            "{shown:?}: a user name or password in the URL is not supported"
        ));
    }
    let invalid = || format!("{shown:?} is not a valid URL");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(invalid)?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid());
        }
        match after {
            "" => (h, None),
            a => (h, Some(a.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(invalid());
    }
    Ok(())
}

/// A host name or an address, without a scheme or a port (`[::1]` or `::1` for IPv6).
fn valid_host(t: &str) -> bool {
    let t = t.trim_end_matches('.');
    let bare = t
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(t);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) => format!("{t:?}"),
        Value::List(l) => format!("{l:?}"),
        Value::Pairs(_) => "a dict".into(),
    }
}

/// A command's options, resolved: the caller's values, else the environment's, else the defaults, each
/// checked. Read with the typed getters; asking for an option the command does not have is a bug
/// (`Error::Internal`), caught by the tests of each stage.
#[derive(Debug, Clone)]
pub struct Values {
    command: &'static str,
    values: BTreeMap<&'static str, Value>,
}

impl Values {
    /// The defaults of every option of `command` (no environment): what `Options::default()` is.
    pub fn defaults(command: &'static str) -> Values {
        Values::defaults_for(command, Origin::Cli)
    }

    fn defaults_for(command: &'static str, origin: Origin) -> Values {
        Values {
            command,
            values: of(command)
                .map(|o| (o.name, o.default_for(origin)))
                .collect(),
        }
    }

    /// Resolves `given` (by name; Null or absent: not given) over the environment and the defaults of
    /// `command`. Every given name must be one of the command's options.
    pub fn resolve(
        command: &'static str,
        given: impl IntoIterator<Item = (String, Value)>,
        origin: Origin,
    ) -> Result<Values> {
        let mut out = Values::defaults_for(command, origin);
        let mut given: BTreeMap<String, Value> = given.into_iter().collect();
        for o in of(command) {
            let v = match given.remove(o.name) {
                Some(v) if v != Value::Null => o.check(v, origin)?,
                _ => match o.env_value()? {
                    Some(v) => v,
                    None => continue,
                },
            };
            out.values.insert(o.name, v);
        }
        match given.into_keys().next() {
            Some(name) => Err(Error::Config(format!(
                "`{command}` has no option {name}; its options are {}",
                of(command).map(|o| o.name).collect::<Vec<_>>().join(", ")
            ))),
            None => Ok(out),
        }
    }

    pub fn command(&self) -> &'static str {
        self.command
    }

    /// Whether the command has this option.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&Value> {
        self.values
            .get(name)
            .ok_or_else(|| Error::Internal(format!("`{}` has no option {name}", self.command)))
    }

    fn wrong(&self, name: &str, what: &str) -> Error {
        Error::Internal(format!("option {name} of `{}` is not {what}", self.command))
    }

    pub fn value(&self, name: &str) -> Result<Value> {
        self.get(name).cloned()
    }

    pub fn flag(&self, name: &str) -> Result<bool> {
        match self.get(name)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.wrong(name, "a bool")),
        }
    }

    pub fn opt_flag(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name)? {
            Value::Null => Ok(None),
            _ => self.flag(name).map(Some),
        }
    }

    pub fn opt_int<T: TryFrom<i128>>(&self, name: &str) -> Result<Option<T>> {
        match self.get(name)? {
            Value::Null => Ok(None),
            Value::Int(n) => T::try_from(*n)
                .map(Some)
                .map_err(|_| Error::Config(format!("{name} is out of range: {n}"))),
            _ => Err(self.wrong(name, "a whole number")),
        }
    }

    pub fn int<T: TryFrom<i128>>(&self, name: &str) -> Result<T> {
        self.opt_int(name)?.ok_or_else(|| self.wrong(name, "set"))
    }

    pub fn opt_float(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name)? {
            Value::Null => Ok(None),
            Value::Float(f) => Ok(Some(*f)),
            Value::Int(n) => Ok(Some(*n as f64)),
            _ => Err(self.wrong(name, "a number")),
        }
    }

    pub fn float(&self, name: &str) -> Result<f64> {
        self.opt_float(name)?.ok_or_else(|| self.wrong(name, "set"))
    }

    pub fn opt_seconds(&self, name: &str) -> Result<Option<Duration>> {
        Ok(self.opt_float(name)?.map(Duration::from_secs_f64))
    }

    pub fn seconds(&self, name: &str) -> Result<Duration> {
        Ok(Duration::from_secs_f64(self.float(name)?))
    }

    pub fn millis(&self, name: &str) -> Result<Duration> {
        Ok(Duration::from_millis(self.int(name)?))
    }

    pub fn opt_text(&self, name: &str) -> Result<Option<String>> {
        match self.get(name)? {
            Value::Null => Ok(None),
            Value::Text(t) => Ok(Some(t.clone())),
            _ => Err(self.wrong(name, "text")),
        }
    }

    pub fn text(&self, name: &str) -> Result<String> {
        self.opt_text(name)?.ok_or_else(|| self.wrong(name, "set"))
    }

    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name)? {
            Value::Null => Ok(Vec::new()),
            Value::List(l) => Ok(l.clone()),
            _ => Err(self.wrong(name, "a list")),
        }
    }

    pub fn pairs(&self, name: &str) -> Result<BTreeMap<String, String>> {
        match self.get(name)? {
            Value::Null => Ok(BTreeMap::new()),
            Value::Pairs(p) => Ok(p.clone()),
            _ => Err(self.wrong(name, "key=value pairs")),
        }
    }
}

// ------------------------------------------------------------------------------------ checks and sources

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The `x-reason` codes of the contract `ECOMLOGS_CONTRACT` names (none if unset or broken: the stage
/// that uses it says why).
fn contract_codes() -> Vec<String> {
    env("ECOMLOGS_CONTRACT")
        .and_then(|path| crate::contract::Contract::load(path.trim()).ok())
        .map(|c| c.reason_codes().iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

/// The flag, else `KAFKA_BOOTSTRAP_SERVERS`, else `localhost:29092`.
pub fn bootstrap_servers_from(flag: Option<&str>) -> String {
    flag.filter(|f| !f.trim().is_empty())
        .map(str::to_string)
        .or_else(|| env("KAFKA_BOOTSTRAP_SERVERS"))
        .unwrap_or_else(|| defaults::BOOTSTRAP_SERVERS.to_string())
}

/// The flag, else `DATABASE_URL`, else the standard `PG*` variables over the original's defaults
/// (localhost:5432, user postgres, database ecom_kafka), as libpq users expect. A password only ever
/// comes from the DSN or `PGPASSWORD`.
pub fn database_from(flag: Option<&str>) -> String {
    if let Some(f) = flag.filter(|f| !f.trim().is_empty()) {
        return f.to_string();
    }
    if let Some(url) = env("DATABASE_URL") {
        return url;
    }
    let mut parts = vec![
        ("host", "localhost".to_string()),
        ("port", "5432".to_string()),
        ("user", "postgres".to_string()),
        ("dbname", "ecom_kafka".to_string()),
    ];
    for (var, key) in PG_ENV {
        if let Some(v) = env(var) {
            match parts.iter_mut().find(|(k, _)| *k == key) {
                Some(p) => p.1 = v,
                None => parts.push((key, v)),
            }
        }
    }
    parts
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

const PG_ENV: [(&str, &str); 9] = [
    ("PGHOST", "host"),
    ("PGPORT", "port"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGDATABASE", "dbname"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGAPPNAME", "application_name"),
];

/// `value` if it lies in `range`, else a `ConfigError` naming the option and its range.
pub fn bounded<T: PartialOrd + Display + Copy>(
    name: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Error::Config(format!(
            "{name} must be between {} and {}, got {value}",
            range.start(),
            range.end()
        )))
    }
}

/// Seconds as a `Duration`, checked against `range` (NaN, infinities and negatives never get through).
pub fn seconds(name: &str, value: f64, range: RangeInclusive<f64>) -> Result<Duration> {
    if value.is_nan() {
        return Err(Error::Config(format!(
            "{name} must be a number of seconds, got NaN"
        )));
    }
    bounded(name, value, range).map(Duration::from_secs_f64)
}

/// The longest wait any option may ask for: a year.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Topic names as Kafka allows them: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn topic_name(name: &str, value: &str) -> Result<String> {
    let legal = !value.is_empty()
        && value.len() <= 249
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if legal {
        Ok(value.to_string())
    } else {
        Err(Error::Config(format!(
            "{name} {value:?} is not a legal Kafka topic name (1 to 249 of letters, digits, '.', '_' \
             and '-'; not '.' or '..')"
        )))
    }
}

/// A consumer group id: not empty.
pub fn group_id(value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::Config(
            "the consumer group id cannot be empty".into(),
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commands_options_are_unique_and_their_defaults_valid() {
        for command in [
            PRODUCE,
            PROCESS,
            LOAD,
            RUN,
            MIGRATE,
            DLQ_INSPECT,
            DLQ_REPLAY,
            DASHBOARD,
            TOPICS,
            DLQ_READ,
            CONTRACT_CHECK,
            VALIDATE,
            RETENTION,
            REBUILD_ROLLUPS,
        ] {
            let mut names: Vec<&str> = of(command).map(|o| o.name).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "{command}: an option declared twice");
            let mut flags: Vec<String> = of(command).map(|o| o.flag_name()).collect();
            flags.sort_unstable();
            flags.dedup();
            assert_eq!(flags.len(), n, "{command}: a flag declared twice");
            for o in of(command) {
                let d = o.default_for(Origin::Cli);
                assert_eq!(
                    o.check(d.clone(), Origin::Python).unwrap(),
                    d,
                    "{command} {}",
                    o.name
                );
            }
        }
    }

    #[test]
    fn flags_follow_the_names() {
        let f = |c, n| find(c, n).unwrap().flag_name();
        assert_eq!(f(LOAD, "batch_size"), "--batch-size");
        assert_eq!(f(LOAD, "until_idle_s"), "--until-idle");
        assert_eq!(f(LOAD, "migrate"), "--no-migrate");
        assert_eq!(f(RUN, "duration_s"), "--duration");
        assert_eq!(f(DASHBOARD, "metrics_urls"), "--metrics-url");
        assert_eq!(f(DLQ_INSPECT, "reason"), "--reason");
        assert_eq!(
            aliases_for(DLQ_REPLAY, find(DLQ_REPLAY, "dlq_topic").unwrap()),
            &["--topic"]
        );
        assert!(aliases_for(LOAD, find(LOAD, "dlq_topic").unwrap()).is_empty());
    }

    #[test]
    fn values_resolve_over_the_defaults_and_are_checked_with_the_callers_name() {
        let v = Values::resolve(
            LOAD,
            [("batch_size".to_string(), Value::Int(500))],
            Origin::Python,
        )
        .unwrap();
        assert_eq!(v.int::<usize>("batch_size").unwrap(), 500);
        assert_eq!(v.text("topic").unwrap(), "clean_events");
        assert_eq!(v.opt_seconds("until_idle_s").unwrap(), None);
        let cli = find(LOAD, "batch_size").unwrap().parse("0", Origin::Cli);
        assert_eq!(
            cli.unwrap_err().to_string(),
            "--batch-size must be between 1 and 1000000, got 0"
        );
        let py = Values::resolve(LOAD, [("batch_size".into(), Value::Int(0))], Origin::Python);
        assert!(py
            .unwrap_err()
            .to_string()
            .starts_with("batch_size must be between"));
        let huge = find(LOAD, "batch_size")
            .unwrap()
            .parse("18446744073709551617", Origin::Cli);
        assert!(huge
            .unwrap_err()
            .to_string()
            .contains("18446744073709551617"));
        let unknown = Values::resolve(LOAD, [("batch".into(), Value::Int(1))], Origin::Python);
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("has no option batch"));
    }

    #[test]
    fn numbers_out_of_range_nan_and_infinities_are_refused() {
        let idle = find(LOAD, "until_idle_s").unwrap();
        for bad in ["inf", "nan", "-1", "1e300", "0"] {
            assert!(idle.parse(bad, Origin::Cli).is_err(), "{bad}");
        }
        let rate = find(PRODUCE, "rate").unwrap();
        assert!(rate.parse("0", Origin::Cli).is_err());
        assert!(rate.parse("0.5", Origin::Cli).is_ok());
        let ratio = find(PRODUCE, "invalid_ratio").unwrap();
        assert!(ratio.check(Value::Float(f64::NAN), Origin::Python).is_err());
        assert_eq!(
            ratio.check(Value::Int(1), Origin::Python).unwrap(),
            Value::Float(1.0)
        );
        let count = find(RUN, "count").unwrap();
        assert!(count
            .parse("-1", Origin::Cli)
            .unwrap_err()
            .to_string()
            .contains("--count"));
    }

    #[test]
    fn text_kinds_are_checked() {
        let url = find(DASHBOARD, "metrics_urls").unwrap();
        for bad in [
            "http://[::1",
            "ftp://x",
            "http://",
            "http://h:99999/",
            "http:// h/",
        ] {
            assert!(url.parse(bad, Origin::Cli).is_err(), "{bad}");
        }
        for ok in [
            "http://127.0.0.1:9101/metrics",
            "https://[::1]:8080/m",
            "http://host",
        ] {
            assert!(url.parse(ok, Origin::Cli).is_ok(), "{ok}");
        }
        let reason = find(DLQ_REPLAY, "reason").unwrap();
        let e = reason
            .parse("no_such_reason", Origin::Cli)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("database_rejected") && e.contains("no_such_reason"),
            "{e}"
        );
        assert_eq!(
            reason
                .check(Value::Text("missing_currency".into()), Origin::Python)
                .unwrap(),
            Value::List(vec!["missing_currency".into()])
        );
        let servers = find(LOAD, "bootstrap_servers").unwrap();
        assert!(servers.parse("localhost", Origin::Cli).is_err());
        assert!(servers.parse("a:1,b:2", Origin::Cli).is_ok());
        assert!(find(DASHBOARD, "dlq_topic")
            .unwrap()
            .parse("", Origin::Cli)
            .is_err());
        let pairs = find(LOAD, "extra_config").unwrap();
        assert!(pairs.parse("novalue", Origin::Cli).is_err());
    }
}
