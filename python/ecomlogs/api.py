"""The typed Python API over the Rust core (``ecomlogs._core``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from ecomlogs import _core
from ecomlogs._core import StopToken
from ecomlogs.exceptions import ConfigError
from ecomlogs.settings import (
    CLEAN_TOPIC,
    DEFAULT_BATCH_SIZE,
    DEFAULT_FLUSH_INTERVAL_MS,
    DLQ_TOPIC,
    LOADER_GROUP,
    PROCESSOR_GROUP,
    DEFAULT_INVALID_RATIO,
    DEFAULT_PARTITIONS,
    RAW_TOPIC,
    bootstrap_servers as _bootstrap,
    dsn as _dsn,
    merge_extra,
)

RawValue = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], None]


@dataclass(frozen=True)
class Validation:
    """The verdict on one raw event.

    Attributes:
        valid: True when the event passed every rule and fits the table.
        reason: a stable reason code (see :func:`reason_codes`) when invalid, else None.
        detail: a readable explanation when invalid, else None.
        canonical: the canonical JSON written to ``clean_events`` when valid, else None.
    """

    valid: bool
    reason: Optional[str]
    detail: Optional[str]
    canonical: Optional[bytes]


@dataclass(frozen=True)
class ProduceStats:
    """What :func:`produce` did."""

    produced: int
    delivered: int
    failed: int
    valid: int
    invalid: int
    elapsed_s: float
    interrupted: bool

    @property
    def events_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _as_bytes(value: RawValue) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


def generate_events_json(
    n: int, *, invalid_ratio: float = DEFAULT_INVALID_RATIO, seed: Optional[int] = None
) -> list[bytes]:
    """``n`` synthetic events as JSON bytes (about ``invalid_ratio`` of them deliberately invalid)."""
    return [value for _key, value, _intended in _core.generate_events(n, invalid_ratio, seed)]


def generate_events(
    n: int,
    *,
    invalid_ratio: float = DEFAULT_INVALID_RATIO,
    seed: Optional[int] = None,
    with_intent: bool = False,
) -> list[dict[str, Any]]:
    """``n`` synthetic events as dicts. With ``with_intent=True`` each dict also has ``_intended``:
    ``"valid"`` or the kind of invalidity the generator put in (``"missing_currency"``, ...)."""
    out = []
    for _key, value, intended in _core.generate_events(n, invalid_ratio, seed):
        event = json.loads(value)
        if with_intent:
            event["_intended"] = intended
        out.append(event)
    return out


def _verdict(t: tuple[Optional[str], Optional[str], Optional[bytes]]) -> Validation:
    reason, detail, canonical = t
    return Validation(valid=reason is None, reason=reason, detail=detail, canonical=canonical)


def validate(value: RawValue) -> Validation:
    """Validates one event given as raw bytes, a JSON string, or a dict."""
    return _verdict(_core.validate_one(_as_bytes(value)))


def validate_batch(values: Iterable[RawValue]) -> list[Validation]:
    """Validates many events in one call into Rust."""
    return [_verdict(t) for t in _core.validate_many([_as_bytes(v) for v in values])]


def reason_codes() -> list[str]:
    """Every reason code a rejected event can carry (dead-letter header ``reason``)."""
    return _core.reason_codes()


def ensure_topics(
    topics: Sequence[str],
    *,
    bootstrap_servers: Optional[str] = None,
    partitions: int = DEFAULT_PARTITIONS,
    timeout_s: float = 15.0,
    extra_config: Optional[Mapping[str, str]] = None,
) -> None:
    """Creates the topics that do not exist yet, through the Kafka admin API."""
    _core.ensure_topics(_bootstrap(bootstrap_servers), list(topics), partitions, timeout_s, merge_extra(extra_config))


def produce(
    count: Optional[int] = None,
    *,
    bootstrap_servers: Optional[str] = None,
    topic: str = RAW_TOPIC,
    interval_ms: float = 0,
    rate: Optional[float] = None,
    invalid_ratio: float = DEFAULT_INVALID_RATIO,
    seed: Optional[int] = None,
    log_each: Optional[bool] = None,
    partitions: int = DEFAULT_PARTITIONS,
    extra_config: Optional[Mapping[str, str]] = None,
    progress: Optional[Callable[[dict[str, Any]], object]] = None,
    stop: Optional[StopToken] = None,
) -> ProduceStats:
    """Generates and produces ``count`` events (forever when None) to ``topic``, keyed by customer id.

    ``interval_ms=0`` (the default here) runs as fast as the broker takes them; the CLI's default is the
    original's 500 ms. ``rate`` (events per second) is the same as ``interval_ms=1000/rate``.
    ``log_each`` (default: when paced at 20 events/s or slower) logs every event on ``ecomlogs.producer``.
    ``progress`` is called about once a second with a dict of counters. Ctrl-C stops cleanly: queued events
    are flushed and the stats say ``interrupted=True``; so does ``stop.stop()`` from another thread.
    """
    if rate is not None:
        if rate <= 0:
            raise ConfigError(f"rate must be above 0 events/s, got {rate}")
        interval_ms = 1000.0 / rate
    if interval_ms < 0:
        raise ConfigError(f"interval_ms must be 0 or more, got {interval_ms}")
    if log_each is None:
        log_each = interval_ms >= 50
    stats = _core.produce(
        _bootstrap(bootstrap_servers),
        topic,
        count,
        interval_ms / 1000.0,
        invalid_ratio,
        seed,
        log_each,
        partitions,
        merge_extra(extra_config),
        progress,
        stop=stop,
    )
    return ProduceStats(**stats)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ProcessStats:
    """What :func:`process` did. ``by_reason`` counts dead-lettered records per reason code."""

    consumed: int
    valid: int
    invalid: int
    by_reason: dict[str, int]
    batches: int
    retried_batches: int
    elapsed_s: float
    interrupted: bool
    activity: str

    @property
    def events_per_s(self) -> float:
        return self.consumed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def process(
    *,
    bootstrap_servers: Optional[str] = None,
    input_topic: str = RAW_TOPIC,
    output_topic: str = CLEAN_TOPIC,
    dlq_topic: str = DLQ_TOPIC,
    group_id: str = PROCESSOR_GROUP,
    until_idle_s: Optional[float] = None,
    exactly_once: bool = False,
    transactional_id: Optional[str] = None,
    batch_max: int = 50_000,
    log_each: bool = False,
    partitions: int = DEFAULT_PARTITIONS,
    extra_config: Optional[Mapping[str, str]] = None,
    progress: Optional[Callable[[dict[str, Any]], object]] = None,
    workers: int = 1,
    until_caught_up: bool = False,
    stop: Optional[StopToken] = None,
) -> ProcessStats:
    """Runs the stream processor: validates every record of ``input_topic``; valid ones go to
    ``output_topic`` (canonical JSON, same key), invalid ones to ``dlq_topic`` untouched with headers
    ``reason``, ``detail``, ``source.topic``, ``source.partition``, ``source.offset``, ``stage``.

    Offsets are committed only after the outputs are acknowledged; with ``exactly_once`` the outputs and
    the offsets go in one Kafka transaction. ``workers`` consumers (threads, each with its own producer)
    share the group's partitions; more than one helps when a single consumer's fetches are the limit.
    Runs until every assigned partition has been read to its end (``until_caught_up``), ``until_idle_s``
    seconds pass with no input, Ctrl-C, or ``stop.stop()`` / ``stop.drain()`` from another thread (the
    batch in flight is finished and committed first).
    """
    stats = _core.process(
        _bootstrap(bootstrap_servers),
        input_topic,
        output_topic,
        dlq_topic,
        group_id,
        until_idle_s,
        exactly_once,
        transactional_id,
        batch_max,
        log_each,
        partitions,
        merge_extra(extra_config),
        progress,
        1.0,
        workers,
        until_caught_up,
        stop,
    )
    return ProcessStats(**stats)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoadStats:
    """What :func:`load` did. ``duplicates_skipped`` counts redelivered events already in the table;
    ``unwritten`` counts records left for the next start when stopped during a database outage;
    ``log_resets`` counts partitions found on a new log (reset broker, re-created topic) and loaded again
    from its beginning; ``offsets_lost`` counts records the broker deleted (retention) before they were
    loaded; ``activity`` is what the loader was doing last ("running", "waiting for the database", ...)."""

    consumed: int
    rows_inserted: int
    duplicates_skipped: int
    dead_lettered: int
    by_reason: dict[str, int]
    batches: int
    db_retries: int
    elapsed_s: float
    interrupted: bool
    unwritten: int
    log_resets: int
    offsets_lost: int
    activity: str

    @property
    def rows_per_s(self) -> float:
        return self.rows_inserted / self.elapsed_s if self.elapsed_s > 0 else 0.0


def load(
    *,
    bootstrap_servers: Optional[str] = None,
    topic: str = CLEAN_TOPIC,
    group_id: str = LOADER_GROUP,
    dsn: Optional[str] = None,
    dlq_topic: str = DLQ_TOPIC,
    batch_size: int = DEFAULT_BATCH_SIZE,
    flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS,
    until_idle_s: Optional[float] = None,
    partitions: int = DEFAULT_PARTITIONS,
    migrate: bool = True,
    max_backoff_s: float = 10.0,
    log_each: bool = False,
    extra_config: Optional[Mapping[str, str]] = None,
    progress: Optional[Callable[[dict[str, Any]], object]] = None,
    workers: int = 1,
    until_caught_up: bool = False,
    stop: Optional[StopToken] = None,
) -> LoadStats:
    """Runs the PostgreSQL loader: ``topic`` -> ``kafka_events_silver``, exactly once.

    Each batch (``batch_size`` rows, or whatever arrived within ``flush_interval_ms``) is one transaction:
    a binary COPY plus the consumed offsets; the loader resumes from the offsets stored in PostgreSQL.
    A database outage pauses and retries with backoff (``max_backoff_s`` at most between attempts); a row
    the database rejects goes to ``dlq_topic`` with its SQLSTATE. Pending migrations are applied first
    unless ``migrate=False``. A partial batch is written as soon as the topic goes quiet (no record for
    50 ms), so ``flush_interval_ms`` only bounds freshness under a steady trickle. ``workers`` consumers
    (threads, each with its own PostgreSQL connection) share the group's partitions and write in parallel.
    Runs until every assigned partition has been stored to its end (``until_caught_up``), ``until_idle_s``
    seconds pass with no input, Ctrl-C, or ``stop.stop()`` / ``stop.drain()`` from another thread.
    """
    stats = _core.load(
        _bootstrap(bootstrap_servers),
        topic,
        group_id,
        _dsn(dsn),
        dlq_topic,
        batch_size,
        flush_interval_ms,
        until_idle_s,
        partitions,
        migrate,
        max_backoff_s,
        log_each,
        merge_extra(extra_config),
        progress,
        workers=workers,
        until_caught_up=until_caught_up,
        stop=stop,
    )
    return LoadStats(**stats)  # type: ignore[arg-type]


def migrate(dsn: Optional[str] = None) -> list[str]:
    """Applies the pending migrations (recorded in ``schema_migrations``); returns those applied now."""
    return _core.migrate(_dsn(dsn))


def query(sql: str, dsn: Optional[str] = None) -> list[dict[str, Optional[str]]]:
    """Runs one SQL statement and returns its rows as dicts of text values (for reports and notebooks)."""
    columns, rows = _core.query(_dsn(dsn), sql)
    return [dict(zip(columns, row)) for row in rows]
