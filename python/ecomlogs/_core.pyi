"""Type stubs for the native module (checked against the build with ``python -m mypy.stubtest``). Every
signature is declared here once; ``ecomlogs`` re-exports these functions and classes as they are."""

from typing import Callable, Mapping, Optional, Union, final

__all__ = [
    "DEFAULTS",
    "LoadStats",
    "ProcessStats",
    "ProduceStats",
    "StopToken",
    "Validation",
    "__version__",
    "ensure_topics",
    "generate_events",
    "load",
    "migrate",
    "migrations",
    "process",
    "produce",
    "query",
    "reason_codes",
    "reset_log_cache",
    "resolve_bootstrap_servers",
    "resolve_dsn",
    "validate_many",
    "validate_one",
]

__version__: str
DEFAULTS: dict[str, Union[str, int, float]]
"""The default of every option, shared by the command line and the Python API."""

_ExtraConfig = Optional[Mapping[str, Union[str, int, float, bool]]]

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
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

def produce(
    count: Optional[int] = None,
    *,
    bootstrap_servers: Optional[str] = None,
    topic: str = "raw_events",
    interval_ms: float = 0.0,
    rate: Optional[float] = None,
    invalid_ratio: float = 0.25,
    seed: Optional[int] = None,
    log_each: Optional[bool] = None,
    partitions: int = 3,
    replication_factor: int = 1,
    extra_config: _ExtraConfig = None,
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
    bootstrap_servers: Optional[str] = None,
    input_topic: str = "raw_events",
    output_topic: str = "clean_events",
    dlq_topic: str = "dead_letter_events",
    group_id: str = "silver-stream-processor",
    until_idle_s: Optional[float] = None,
    until_caught_up: bool = False,
    exactly_once: bool = False,
    transactional_id: Optional[str] = None,
    batch_max: int = 50000,
    workers: int = 1,
    log_each: bool = False,
    partitions: int = 3,
    replication_factor: int = 1,
    unreadable_timeout_s: float = 60.0,
    extra_config: _ExtraConfig = None,
    progress: Optional[Callable[[ProcessStats], object]] = None,
    progress_every_s: float = 1.0,
    stop: Optional[StopToken] = None,
) -> ProcessStats:
    """The stream processor: validates every record of ``input_topic``; valid ones go to
    ``output_topic`` (canonical JSON, same key), invalid ones to ``dlq_topic`` untouched, with headers
    ``reason``, ``detail``, ``source.topic``, ``source.partition``, ``source.offset``, ``stage``. Offsets
    are committed only after the outputs are acknowledged (with ``exactly_once``: together with them, in
    one Kafka transaction). ``workers`` consumers (threads) share the group's partitions. Runs until
    every assigned partition has been read to its end (``until_caught_up``), ``until_idle_s`` without
    input, Ctrl-C, or ``stop.stop()`` / ``stop.drain()`` from another thread (the batch in flight is
    finished and committed first). Records it cannot fetch or decode (a corrupt batch, a permission
    the broker refuses) are logged with topic, partition and offset and retried; if that lasts
    ``unreadable_timeout_s`` it raises :class:`~ecomlogs.KafkaError` (never an idle or caught-up
    success while they wait). Missing topics are created with ``partitions`` and
    ``replication_factor``."""

def load(
    *,
    bootstrap_servers: Optional[str] = None,
    dsn: Optional[str] = None,
    topic: str = "clean_events",
    group_id: str = "postgres-loader",
    dlq_topic: str = "dead_letter_events",
    batch_size: int = 50000,
    flush_interval_ms: int = 1000,
    until_idle_s: Optional[float] = None,
    until_caught_up: bool = False,
    workers: int = 1,
    migrate: bool = True,
    max_backoff_s: float = 10.0,
    log_each: bool = False,
    partitions: int = 3,
    replication_factor: int = 1,
    unreadable_timeout_s: float = 60.0,
    extra_config: _ExtraConfig = None,
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

def validate_one(value: Optional[bytes]) -> Validation: ...
def validate_many(values: list[Optional[bytes]]) -> list[Validation]: ...
def reason_codes() -> list[str]:
    """Every reason code a rejected event can carry (dead-letter header ``reason``)."""

def ensure_topics(
    topics: list[str],
    *,
    bootstrap_servers: Optional[str] = None,
    partitions: int = 3,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
    extra_config: _ExtraConfig = None,
) -> None:
    """Creates the topics that do not exist yet, through the Kafka admin API, with ``partitions`` and
    ``replication_factor`` each."""

def migrate(dsn: Optional[str] = None) -> list[str]:
    """Applies the pending migrations (recorded in ``schema_migrations``); returns those applied now."""

def migrations() -> list[tuple[str, str, str]]:
    """The embedded migrations: (version, name, sql)."""

def query(sql: str, dsn: Optional[str] = None) -> tuple[list[str], list[list[Optional[str]]]]:
    """Runs one SQL statement; returns (column names, rows as text)."""

def resolve_bootstrap_servers(value: Optional[str] = None) -> str: ...
def resolve_dsn(value: Optional[str] = None) -> str: ...
def reset_log_cache() -> None:
    """Re-reads Python's logging configuration (the Rust side caches logger levels)."""
