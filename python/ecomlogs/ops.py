"""Operating a pipeline: the Prometheus endpoint and the dead-letter commands (Rust underneath; see
``_core.pyi`` for the returned types).

::

    with ecomlogs.serve_metrics(port=9464):      # /metrics and /healthz while the block runs
        ecomlogs.load(until_caught_up=True)

    report = ecomlogs.dlq_inspect()               # counts by (stage, reason), a few samples each
    ecomlogs.dlq_replay(reason=["database_rejected"])   # back to the topic each came from
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterable, Mapping, Optional, Union

from ecomlogs import _core
from ecomlogs._core import DeadLetter, DeadLetterReport, MetricsServer, ReplayStats, metrics_text, serve_metrics
from ecomlogs.exceptions import ConfigError

Since = Union[None, int, float, str, dt.datetime, dt.timedelta]
"""A point in time: a datetime (naive = UTC), an ISO 8601 string, a duration back from now (a
timedelta, or a string such as ``90s``, ``15m``, ``2h``, ``1d``), or epoch milliseconds."""

__all__ = [
    "DeadLetter",
    "DeadLetterReport",
    "MetricsServer",
    "ReplayStats",
    "Since",
    "dead_letters",
    "dlq_inspect",
    "dlq_replay",
    "metrics_text",
    "serve_metrics",
    "since_ms",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_ms(value: Since, now: Optional[dt.datetime] = None) -> Optional[int]:
    """``value`` (see ``Since``) as epoch milliseconds; None stays None."""
    if value is None:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    if isinstance(value, bool):
        raise ConfigError(f"since: expected a time, got {value!r}")
    if isinstance(value, (int, float)):
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"since: {value!r} ms is out of range")
        return int(value)
    if isinstance(value, dt.timedelta):
        try:
            return int((now - value).timestamp() * 1000)
        except OverflowError:
            raise ConfigError(f"since: {value} reaches back before the year 1") from None
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(when.timestamp() * 1000)
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    try:
        if m:
            return since_ms(dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)]), now)
        return since_ms(dt.datetime.fromisoformat(text.replace("Z", "+00:00")), now)
    except (OverflowError, ValueError):
        if m:
            raise ConfigError(f"since: {value!r} reaches back before the year 1") from None
        raise ConfigError(
            f"since: expected an ISO 8601 time or a duration such as 15m, 2h, 1d; got {value!r}"
        ) from None


def _names(value: Union[None, str, Iterable[str]]) -> Optional[list[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def dlq_inspect(
    *,
    reason: Union[None, str, Iterable[str]] = None,
    stage: Union[None, str, Iterable[str]] = None,
    since: Since = None,
    samples: Optional[int] = None,
    dlq_topic: Optional[str] = None,
    bootstrap_servers: Optional[str] = None,
    extra_config: Optional[Mapping[str, Union[str, int, float, bool]]] = None,
    timeout_s: Optional[float] = None,
) -> DeadLetterReport:
    """Reads the dead-letter topic to its end: counts by (stage, reason) of the dead letters that match
    the filters, with the first ``samples`` of each (headers, key, value, source coordinates)."""
    return _core.dlq_inspect(
        bootstrap_servers=bootstrap_servers, dlq_topic=dlq_topic, reason=_names(reason), stage=_names(stage),
        since_ms=since_ms(since), samples=samples, timeout_s=timeout_s,
        extra_config=dict(extra_config) if extra_config else None,
    )


def dead_letters(
    limit: Optional[int] = None,
    *,
    reason: Union[None, str, Iterable[str]] = None,
    stage: Union[None, str, Iterable[str]] = None,
    since: Since = None,
    dlq_topic: Optional[str] = None,
    bootstrap_servers: Optional[str] = None,
    extra_config: Optional[Mapping[str, Union[str, int, float, bool]]] = None,
    timeout_s: Optional[float] = None,
) -> list[DeadLetter]:
    """The dead letters that match the filters, read from the dead-letter topic to its end (the latest
    ``limit`` of them; None: all), oldest first (by time, then partition and offset). A topic that does
    not exist yet has none. :func:`ecomlogs.analytics.dead_letter_frame` puts them in a DataFrame."""
    return _core.dlq_read(
        bootstrap_servers=bootstrap_servers, dlq_topic=dlq_topic, reason=_names(reason), stage=_names(stage),
        since_ms=since_ms(since), limit=limit, timeout_s=timeout_s,
        extra_config=dict(extra_config) if extra_config else None,
    )


def dlq_replay(
    *,
    reason: Union[None, str, Iterable[str]] = None,
    stage: Union[None, str, Iterable[str]] = None,
    since: Since = None,
    dry_run: Optional[bool] = None,
    include_replayed: Optional[bool] = None,
    from_beginning: Optional[bool] = None,
    until_idle_s: Optional[float] = None,
    rate: Optional[float] = None,
    dlq_topic: Optional[str] = None,
    bootstrap_servers: Optional[str] = None,
    extra_config: Optional[Mapping[str, Union[str, int, float, bool]]] = None,
    timeout_s: Optional[float] = None,
) -> ReplayStats:
    """Sends the dead letters that match the filters back to the topic each came from (its
    ``source.topic`` header), with the original key and value and the lineage headers
    ``ecomlogs.replayed_from`` (the dead letter) and ``ecomlogs.replay_generation``; returns once all are
    acknowledged.

    A replay cannot feed itself: stages keep the lineage on the dead letters they make of a replayed
    record, and those are left where they are unless ``include_replayed`` (a record this run replayed is
    never sent again by it). It is resumable: the position reached is committed (once a second, after
    what was sent is acknowledged) to a consumer group per reason/stage filter, so a replay run again
    continues where the last one stopped (``from_beginning`` starts over). ``dry_run`` says exactly what
    a real run would send and commits nothing; ``until_idle_s`` keeps following the topic for new dead
    letters to replay until none came for that long; ``rate`` sends at most that many records per second
    (a large replay beside a running pipeline)."""
    return _core.dlq_replay(
        bootstrap_servers=bootstrap_servers, dlq_topic=dlq_topic, reason=_names(reason), stage=_names(stage),
        since_ms=since_ms(since), dry_run=dry_run, include_replayed=include_replayed,
        from_beginning=from_beginning, until_idle_s=until_idle_s, rate=rate, timeout_s=timeout_s,
        extra_config=dict(extra_config) if extra_config else None,
    )
