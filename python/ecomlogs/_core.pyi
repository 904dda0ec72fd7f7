"""Type stubs for the native module (checked against the build with ``python -m mypy.stubtest``). Every
signature is declared here once; ``ecomlogs`` re-exports these functions and classes as they are."""

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Callable, Mapping, Optional, Sequence, Union, final

__all__ = [
    "DEFAULTS",
    "DEFAULT_CONTRACT",
    "ContractCheck",
    "Database",
    "DeadLetter",
    "DeadLetterReport",
    "MetricsServer",
    "ReplayStats",
    "dlq_inspect",
    "dlq_read",
    "dlq_replay",
    "metrics_text",
    "serve_metrics",
    "LoadStats",
    "ProcessStats",
    "ProduceStats",
    "StopToken",
    "Validation",
    "__version__",
    "OPTIONS",
    "parse_option",
    "resolve_option",
    "resolve_options",
    "contract_check",
    "ensure_topics",
    "generate_events",
    "load",
    "migrate",
    "migrations",
    "process",
    "produce",
    "query",
    "read_topic",
    "reason_codes",
    "rebuild_rollups",
    "retention",
    "reset_log_cache",
    "resolve_bootstrap_servers",
    "resolve_dsn",
    "topic_offsets",
    "validate_many",
    "validate_one",
]

__version__: str
DEFAULTS: dict[str, dict[str, Union[None, bool, str, int, float]]]
"""``{command: {option: default}}`` from the options table (the one place options are declared)."""
OPTIONS: list[dict[str, Any]]
"""The options table, one dict per option and command: ``command``, ``name``, ``flag``, ``aliases``,
``kind`` (bool, int, float, seconds, text, choice, pairs), ``choices``, ``default``, ``default_text``,
``env``, ``help``, ``metavar``, ``repeat``, ``cli``, ``python``, ``group``."""
DEFAULT_CONTRACT: str
"""The text of the shipped default contract (``contracts/default.json``: the original's rules as JSON
Schema draft 2020-12), to copy and extend."""

_ExtraConfig = Optional[Mapping[str, Union[str, int, float, bool]]]
_Param = Union[None, bool, int, float, Decimal, str, bytes, bytearray, date, datetime]
_Value = Union[None, bool, int, float, Decimal, str, bytes, date, time, datetime]
_Record = tuple[int, int, Optional[int], Optional[bytes], Optional[bytes], list[tuple[str, Optional[bytes]]]]

@final
class StopToken:
    """Tells a running stage how to finish, from another thread."""

    def __init__(self) -> None: ...
    def stop(self) -> None:
        """Finish the batch in flight, commit, return (the stats say ``interrupted=True``)."""
    def drain(self) -> None:
        """Keep going until every assigned partition has been read to its end, then finish."""
    @property
    def stopped(self) -> bool: ...
    @property
    def draining(self) -> bool: ...

@final
class ProduceStats:
    """What :func:`produce` did."""

    @property
    def produced(self) -> int:
        """Events handed to the client."""
    @property
    def delivered(self) -> int:
        """Events the broker acknowledged."""
    @property
    def failed(self) -> int: ...
    @property
    def valid(self) -> int: ...
    @property
    def invalid(self) -> int: ...
    @property
    def elapsed_s(self) -> float: ...
    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C or ``StopToken.stop()`` rather than by reaching ``count``."""
    @property
    def events_per_s(self) -> float: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

@final
class ProcessStats:
    """What :func:`process` did."""

    @property
    def consumed(self) -> int: ...
    @property
    def valid(self) -> int: ...
    @property
    def invalid(self) -> int: ...
    @property
    def by_reason(self) -> dict[str, int]:
        """Dead letters per reason code."""
    @property
    def batches(self) -> int: ...
    @property
    def retried_batches(self) -> int:
        """Transactions aborted and retried (exactly-once) or batches whose commit the group refused."""
    @property
    def elapsed_s(self) -> float: ...
    @property
    def interrupted(self) -> bool: ...
    @property
    def activity(self) -> str:
        """What the processor was doing last: "joining the consumer group", "running", ..."""
    @property
    def events_per_s(self) -> float: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

@final
class LoadStats:
    """What :func:`load` did."""

    @property
    def consumed(self) -> int: ...
    @property
    def rows_inserted(self) -> int: ...
    @property
    def duplicates_skipped(self) -> int:
        """Redelivered events already in the table, skipped by the unique ``event_id``."""
    @property
    def dead_lettered(self) -> int: ...
    @property
    def by_reason(self) -> dict[str, int]: ...
    @property
    def batches(self) -> int: ...
    @property
    def db_retries(self) -> int:
        """Reconnection attempts during database outages."""
    @property
    def elapsed_s(self) -> float: ...
    @property
    def interrupted(self) -> bool: ...
    @property
    def unwritten(self) -> int:
        """Records left for the next start when stopped during a database outage."""
    @property
    def log_resets(self) -> int:
        """Partitions found on a new log (reset broker, re-created topic), loaded again from its start."""
    @property
    def offsets_lost(self) -> int:
        """Records the broker deleted (retention) before they were loaded."""
    @property
    def activity(self) -> str:
        """What the loader was doing last: "running", "waiting for the database", ..."""
    @property
    def rows_per_s(self) -> float: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

@final
class Validation:
    """The verdict on one raw event."""

    @property
    def valid(self) -> bool:
        """The event passed every rule and fits the table."""
    @property
    def reason(self) -> Optional[str]:
        """A stable reason code (see :func:`reason_codes`) when invalid, else None."""
    @property
    def detail(self) -> Optional[str]:
        """A readable explanation when invalid, else None."""
    @property
    def canonical(self) -> Optional[bytes]:
        """The canonical JSON written to ``clean_events`` when valid, else None."""
    @property
    def contract(self) -> str:
        """The ``$id`` of the contract that judged the event."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

@final
class ContractCheck:
    """What :func:`contract_check` found: the contract, and on a sample of a topic how many records each
    contract accepts and whose verdict would change."""

    @property
    def contract_id(self) -> str:
        """The checked contract's ``$id``."""
    @property
    def source(self) -> str:
        """The checked contract's file."""
    @property
    def is_default(self) -> bool:
        """The file is the shipped default (same content), which runs as typed code."""
    @property
    def reason_codes(self) -> list[str]:
        """The codes its ``x-reason`` keywords name, in document order."""
    @property
    def current_id(self) -> str:
        """The ``$id`` of the contract in use now (compared with)."""
    @property
    def current_source(self) -> str:
        """Its file, or "the default contract"."""
    @property
    def sample_topic(self) -> Optional[str]:
        """The topic sampled (None: no sample was taken)."""
    @property
    def sampled(self) -> int:
        """Records in the sample."""
    @property
    def ranges(self) -> dict[int, tuple[int, int]]:
        """Per partition, the offsets sampled: (first, next)."""
    @property
    def valid_now(self) -> int:
        """Records of the sample the contract in use now accepts."""
    @property
    def valid_new(self) -> int:
        """Records of the sample the checked contract accepts."""
    @property
    def newly_rejected(self) -> dict[str, int]:
        """Records accepted now that the checked contract would reject, by its reason."""
    @property
    def newly_accepted(self) -> dict[str, int]:
        """Records rejected now (by the current reason) that the checked contract would accept."""
    @property
    def reason_changed(self) -> dict[tuple[str, str], int]:
        """Records both reject, for another reason: (reason now, new reason) -> count."""
    @property
    def examples(self) -> list[tuple[int, int, str, str]]:
        """A few newly rejected records of each reason: (partition, offset, reason, detail)."""

def produce(
    count: Optional[int] = ...,
    *,
    bootstrap_servers: Optional[str] = ...,
    topic: Optional[str] = ...,
    interval_ms: Optional[float] = ...,
    rate: Optional[float] = ...,
    invalid_ratio: Optional[float] = ...,
    seed: Optional[int] = ...,
    log_each: Optional[bool] = ...,
    partitions: Optional[int] = ...,
    replication_factor: Optional[int] = ...,
    extra_config: _ExtraConfig = ...,
    progress: Optional[Callable[[ProduceStats], object]] = None,
    progress_every_s: float = 1.0,
    stop: Optional[StopToken] = None,
) -> ProduceStats:
    """Generates events and produces them to ``topic``, keyed by customer id: ``count`` of them (None:
    until stopped), one every ``interval_ms`` (0: as fast as the broker takes them; ``rate`` events/s is
    the same as ``interval_ms = 1000 / rate``). ``bootstrap_servers`` None means
    ``KAFKA_BOOTSTRAP_SERVERS``, else ``localhost:29092``. ``log_each`` (default: when paced at 20
    events/s or slower) logs every event on ``ecomlogs.producer``. A missing topic is created with
    ``partitions`` and ``replication_factor`` (1 suits a single broker; 3 a production cluster).
    ``progress`` gets the stats about every ``progress_every_s``, the last ones included. Ctrl-C or
    ``stop.stop()`` flushes what is queued and returns."""

def process(
    *,
    bootstrap_servers: Optional[str] = ...,
    input_topic: Optional[str] = ...,
    output_topic: Optional[str] = ...,
    dlq_topic: Optional[str] = ...,
    group_id: Optional[str] = ...,
    until_idle_s: Optional[float] = ...,
    until_caught_up: Optional[bool] = ...,
    exactly_once: Optional[bool] = ...,
    transactional_id: Optional[str] = ...,
    batch_max: Optional[int] = ...,
    workers: Optional[int] = ...,
    threads: Optional[int] = ...,
    log_each: Optional[bool] = ...,
    contract: Optional[str] = ...,
    partitions: Optional[int] = ...,
    replication_factor: Optional[int] = ...,
    unreadable_timeout_s: Optional[float] = ...,
    extra_config: _ExtraConfig = ...,
    progress: Optional[Callable[[ProcessStats], object]] = None,
    progress_every_s: float = 1.0,
    stop: Optional[StopToken] = None,
) -> ProcessStats:
    """The stream processor: validates every record of ``input_topic``; valid ones go to
    ``output_topic`` (canonical JSON, same key), invalid ones to ``dlq_topic`` untouched, with headers
    ``reason``, ``detail``, ``source.topic``, ``source.partition``, ``source.offset``, ``stage``. Offsets
    are committed only after the outputs are acknowledged (with ``exactly_once``: together with them, in
    one Kafka transaction). ``workers`` consumers (group members, default one) share the group's
    partitions; each routes a large batch on ``threads`` threads, whole partitions each (0: one per core),
    so one group member uses every core and joins the group once. Runs until
    every assigned partition has been read to its end (``until_caught_up``), ``until_idle_s`` without
    input, Ctrl-C, or ``stop.stop()`` / ``stop.drain()`` from another thread (the batch in flight is
    finished and committed first). Records it cannot fetch or decode (a corrupt batch, a permission
    the broker refuses) are logged with topic, partition and offset and retried; if that lasts
    ``unreadable_timeout_s`` it raises :class:`~ecomlogs.KafkaError` (never an idle or caught-up
    success while they wait). Missing topics are created with ``partitions`` and
    ``replication_factor``. ``contract`` (else ``ECOMLOGS_CONTRACT``, else the shipped default) is the
    JSON Schema file the events are checked against; its ``$id`` goes into the ``ecomlogs.contract``
    header of every record written; a file that does not parse or compile is a :class:`ConfigError`."""

def load(
    *,
    bootstrap_servers: Optional[str] = ...,
    dsn: Optional[str] = ...,
    topic: Optional[str] = ...,
    group_id: Optional[str] = ...,
    dlq_topic: Optional[str] = ...,
    batch_size: Optional[int] = ...,
    flush_interval_ms: Optional[int] = ...,
    until_idle_s: Optional[float] = ...,
    until_caught_up: Optional[bool] = ...,
    workers: Optional[int] = ...,
    migrate: Optional[bool] = ...,
    retention_days: Optional[int] = ...,
    max_backoff_s: Optional[float] = ...,
    log_each: Optional[bool] = ...,
    partitions: Optional[int] = ...,
    replication_factor: Optional[int] = ...,
    unreadable_timeout_s: Optional[float] = ...,
    extra_config: _ExtraConfig = ...,
    progress: Optional[Callable[[LoadStats], object]] = None,
    progress_every_s: float = 1.0,
    stop: Optional[StopToken] = None,
) -> LoadStats:
    """The PostgreSQL loader: ``topic`` -> ``kafka_events_silver``, exactly once. Each batch
    (``batch_size`` rows at most, or what arrived within ``flush_interval_ms``, written as soon as the
    input goes quiet) is one transaction: a binary COPY plus the consumed offsets. The loader starts
    where PostgreSQL says, checked against the log (a reset log is loaded again from its beginning;
    retention loss is logged as an error). ``dsn`` None means ``DATABASE_URL``, else the ``PG*``
    variables. An outage pauses and retries (``max_backoff_s`` at most between attempts); a row the
    database rejects goes to ``dlq_topic`` with its SQLSTATE; a fault (missing table, no permission)
    raises :class:`~ecomlogs.DatabaseError`. Runs until ``until_caught_up``, ``until_idle_s``, Ctrl-C, or
    ``stop.stop()`` / ``stop.drain()``. Input it cannot read for ``unreadable_timeout_s`` raises
    :class:`~ecomlogs.KafkaError`, as in :func:`process`. The DSN's ``sslmode`` (``disable``,
    ``prefer``, ``require``, ``verify-ca``, ``verify-full``) and ``sslrootcert``, else ``PGSSLMODE``
    and ``PGSSLROOTCERT``, work as in libpq."""

def generate_events(
    n: int, *, invalid_ratio: float = 0.25, seed: Optional[int] = None
) -> list[tuple[Optional[bytes], bytes, str]]:
    """(key, value, intended) for ``n`` events; intended is "valid" or the kind of invalidity."""

def validate_one(value: Optional[bytes], *, contract: Optional[str] = ...) -> Validation:
    """Validates one raw value under ``contract`` (a file; else ``ECOMLOGS_CONTRACT``, else the shipped
    default)."""
def validate_many(values: list[Optional[bytes]], *, contract: Optional[str] = ...) -> list[Validation]:
    """Validates many raw values in one call into Rust (see :func:`validate_one`)."""
def reason_codes(*, contract: Optional[str] = ...) -> list[str]:
    """Every reason code a rejected event can carry (dead-letter header ``reason``): the built-in ones,
    then those of ``contract`` (else ``ECOMLOGS_CONTRACT``) that are its own."""
def contract_check(
    contract: str,
    *,
    current_contract: Optional[str] = ...,
    sample_topic: Optional[str] = ...,
    sample_size: Optional[int] = ...,
    timeout_s: Optional[float] = ...,
    bootstrap_servers: Optional[str] = ...,
    extra_config: _ExtraConfig = ...,
) -> ContractCheck:
    """Checks the contract in the file ``contract`` (JSON, JSON Schema draft 2020-12 with an ``$id``,
    ``x-reason`` codes; a :class:`ConfigError` of one line otherwise) and, with ``sample_topic``, runs it
    and the contract in use now (``current_contract``, else ``ECOMLOGS_CONTRACT``, else the shipped
    default) over the latest ``sample_size`` records of each partition, counting whose verdict changes."""

def ensure_topics(
    topics: list[str],
    *,
    bootstrap_servers: Optional[str] = ...,
    partitions: Optional[int] = ...,
    replication_factor: Optional[int] = ...,
    timeout_s: float = 15.0,
    extra_config: _ExtraConfig = ...,
) -> None:
    """Creates the topics that do not exist yet, through the Kafka admin API, with ``partitions`` and
    ``replication_factor`` each."""

def migrate(dsn: Optional[str] = ..., *, move_duplicates: Optional[bool] = ..., dry_run: Optional[bool] = ...) -> list[str]:
    """Applies the pending migrations in one transaction, recorded in ``schema_migrations`` in it: all
    or nothing (a failure raises :class:`~ecomlogs.DatabaseError` and changes nothing). Returns the
    versions applied now (``[]`` when up to date). Before the unique key on ``event_id``, a table that
    holds an event more than once stops the run with the counts and examples, unless
    ``move_duplicates``: then every copy but the lowest ``id`` of each is moved to
    ``kafka_events_silver_duplicates`` (the same columns plus ``moved_at``) in the same transaction.
    ``dry_run`` changes nothing: it returns the versions that would be applied, logs what would be moved,
    and raises as the real run would on duplicates. Each migration is logged (``ecomlogs.pg``) with its
    duration."""

def retention(keep: Optional[int] = ..., *, dsn: Optional[str] = ..., dry_run: Optional[bool] = ...) -> list[tuple[date, int]]:
    """Drops the daily partitions of ``kafka_events_silver`` whose day ended more than ``keep`` days ago
    (whole partitions: seconds, no DELETE), each in its own transaction, its customer totals kept aside
    first; the daily rollups stay, so the analytics views still count those days. Returns (day, rows) of
    each partition dropped (``dry_run``: that would be)."""

def rebuild_rollups(dsn: Optional[str] = ...) -> tuple[int, int]:
    """Recomputes the rollups from the table, in one transaction (loaders wait): the daily rollup of
    every day the table covers (days retention dropped keep theirs) and the customer rollup from the rows
    plus what retention dropped. Returns (days, customer rows)."""

def migrations() -> list[tuple[str, str, str]]:
    """The embedded migrations: (version, name, sql)."""

def query(
    sql: str, params: Optional[Sequence[_Param]] = None, *, dsn: Optional[str] = None
) -> tuple[list[str], list[str], list[tuple[_Value, ...]]]:
    """Runs one SQL statement with ``params`` bound to ``$1``, ``$2``, ... (each converted to the type the
    server expects there); returns (column names, PostgreSQL type names, rows of typed values: int,
    Decimal for NUMERIC, float, bool, date, time, datetime (naive for TIMESTAMP, UTC for TIMESTAMPTZ),
    str, bytes, None). The GIL is released while the database works."""

@final
class Database:
    """A PostgreSQL connection kept open between queries, for a reader that asks often (the dashboard):
    connects at the first query and again after the connection is lost; one query at a time, from any
    thread. A context manager (closes on exit)."""

    def __new__(cls, dsn: Optional[str] = None) -> Database: ...
    def query(
        self, sql: str, params: Optional[Sequence[_Param]] = None
    ) -> tuple[list[str], list[str], list[tuple[_Value, ...]]]:
        """Runs one statement as :func:`query` does, on this connection."""
    def close(self) -> None:
        """Closes the connection (the next query opens a new one)."""
    def __enter__(self) -> Database: ...
    def __exit__(self, *args: object) -> bool: ...

def read_topic(
    topic: str,
    *,
    bootstrap_servers: Optional[str] = None,
    start: Optional[Mapping[int, int]] = None,
    last: Optional[int] = None,
    values: bool = True,
    timeout_s: float = 30.0,
    extra_config: _ExtraConfig = None,
) -> tuple[list[_Record], dict[int, int], list[int]]:
    """Reads ``topic`` to the end of every partition (as it was when the read began) without joining a
    group: from ``start`` (offset per partition; else the log start), at most the ``last`` records of
    each partition, keys and values only with ``values``. Returns (records as (partition, offset,
    timestamp_ms, key, value, headers), the next offset per partition, the partitions whose log no
    longer reaches their ``start`` and were read from their beginning). A read that runs out of
    ``timeout_s`` returns what it has (and logs a warning). A missing topic has no records."""

def topic_offsets(
    topic: str,
    *,
    group_id: Optional[str] = None,
    bootstrap_servers: Optional[str] = None,
    timeout_s: float = 10.0,
    extra_config: _ExtraConfig = None,
) -> list[tuple[int, int, int, Optional[int]]]:
    """Each partition of ``topic`` as (partition, first offset, next offset, the committed offset of
    ``group_id``, None without one); a missing topic has none."""

def parse_option(command: str, name: str, text: str) -> Any:
    """One value of ``command``'s option ``name`` as the command line gives it (text), parsed and checked;
    a bad one raises :class:`~ecomlogs.ConfigError` naming the flag."""

def resolve_option(command: str, name: str, given: Any = None) -> Any:
    """The value of a command-line option: ``given`` (None: not given), else its environment variable,
    else its default; checked."""

def resolve_options(command: str, given: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Every option of ``command``: ``given`` (by Python name), else the environment, else the defaults;
    each checked (an unknown name, a value out of range, an unknown librdkafka key: ConfigError)."""

def resolve_bootstrap_servers(value: Optional[str] = None) -> str: ...
def resolve_dsn(value: Optional[str] = None) -> str: ...
def reset_log_cache() -> None:
    """Re-reads Python's logging configuration (the Rust side caches logger levels)."""

# ----------------------------------------------------------------------------------------- operating
@final
class MetricsServer:
    """A running ``/metrics`` + ``/healthz`` endpoint; ``close()`` or leaving its ``with`` block stops it."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str:
        """``http://host:port``"""
    def close(self) -> None: ...
    def __enter__(self) -> MetricsServer: ...
    def __exit__(self, *_exc: object) -> bool: ...

def serve_metrics(port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
    """Serves ``/metrics`` (Prometheus text format: every stage running in this process, and the
    process's CPU and memory) and ``/healthz`` (200 while every running stage reaches its broker and
    database, else 503 with the reason) on ``host:port`` (0: a free port, see ``.port``)."""

def metrics_text() -> str:
    """The metrics as ``/metrics`` would serve them now."""

@final
class DeadLetter:
    """One record of the dead-letter topic."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> Optional[int]:
        """When it was dead-lettered (Kafka timestamp, ms since the epoch)."""
    @property
    def key(self) -> Optional[bytes]: ...
    @property
    def value(self) -> Optional[bytes]:
        """The original value, untouched (the processor's) or the canonical JSON (the loader's)."""
    @property
    def headers(self) -> dict[str, Optional[str]]: ...
    @property
    def reason(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def detail(self) -> Optional[str]: ...
    @property
    def source_topic(self) -> Optional[str]: ...
    @property
    def source_partition(self) -> Optional[int]: ...
    @property
    def source_offset(self) -> Optional[int]: ...
    @property
    def replayed_from(self) -> Optional[str]:
        """``<dead-letter topic>/<partition>/<offset>`` of the dead letter its record was replayed from
        (None: an original)."""
    @property
    def generation(self) -> int:
        """How many replays deep its record is (0: an original)."""

@final
class DeadLetterReport:
    """What :func:`dlq_inspect` found."""

    @property
    def dlq_topic(self) -> str: ...
    @property
    def scanned(self) -> int:
        """Dead letters read (before the filters)."""
    @property
    def counts(self) -> dict[tuple[str, str], int]:
        """Matching dead letters by (stage, reason)."""
    @property
    def from_replays(self) -> int:
        """Of the matching ones, those made from a replayed record."""
    @property
    def samples(self) -> list[DeadLetter]:
        """The first few of each (stage, reason)."""
    @property
    def total(self) -> int:
        """Dead letters that matched the filters."""

@final
class ReplayStats:
    """What :func:`dlq_replay` did (or would do, with ``dry_run``)."""

    @property
    def scanned(self) -> int: ...
    @property
    def matched(self) -> int: ...
    @property
    def replayed(self) -> int:
        """Sent back and acknowledged (with ``dry_run``: that would be)."""
    @property
    def no_source(self) -> int:
        """Matched but without a ``source.topic`` header: left where they are."""
    @property
    def from_replays(self) -> int:
        """Matched but made from a replayed record (an earlier run's, or this run's own): left where they
        are unless ``include_replayed`` (this run's own never go round again)."""
    @property
    def by_topic(self) -> dict[str, int]: ...
    @property
    def ranges(self) -> dict[int, tuple[int, int]]:
        """Per partition of the dead-letter topic: the first and last offset replayed."""
    @property
    def started_at(self) -> dict[int, int]:
        """Where this run resumed: the positions committed by an earlier replay (empty: from the start)."""
    @property
    def resumed(self) -> bool: ...
    @property
    def checkpoint_group(self) -> str:
        """The consumer group holding the replay's position (one per reason/stage filter)."""
    @property
    def dry_run(self) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

def dlq_inspect(
    *,
    bootstrap_servers: Optional[str] = ...,
    dlq_topic: Optional[str] = ...,
    reason: Optional[list[str]] = ...,
    stage: Optional[list[str]] = ...,
    since_ms: Optional[int] = None,
    samples: Optional[int] = ...,
    timeout_s: Optional[float] = ...,
    extra_config: _ExtraConfig = ...,
) -> DeadLetterReport:
    """Counts the dead letters that match the filters by (stage, reason), with the first ``samples``."""

def dlq_read(
    *,
    bootstrap_servers: Optional[str] = ...,
    dlq_topic: Optional[str] = ...,
    reason: Optional[list[str]] = ...,
    stage: Optional[list[str]] = ...,
    since_ms: Optional[int] = None,
    limit: Optional[int] = ...,
    timeout_s: Optional[float] = ...,
    extra_config: _ExtraConfig = ...,
) -> list[DeadLetter]:
    """The latest ``limit`` dead letters that match the filters (None: all), oldest first; none for a
    topic that does not exist yet."""

def dlq_replay(
    *,
    bootstrap_servers: Optional[str] = ...,
    dlq_topic: Optional[str] = ...,
    reason: Optional[list[str]] = ...,
    stage: Optional[list[str]] = ...,
    since_ms: Optional[int] = None,
    dry_run: Optional[bool] = ...,
    include_replayed: Optional[bool] = ...,
    from_beginning: Optional[bool] = ...,
    until_idle_s: Optional[float] = ...,
    rate: Optional[float] = ...,
    timeout_s: Optional[float] = ...,
    extra_config: _ExtraConfig = ...,
) -> ReplayStats:
    """Sends the matching dead letters back to their ``source.topic`` with their lineage headers,
    resuming where the last replay with the same filter stopped; returns once all are acknowledged."""
