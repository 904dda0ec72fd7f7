"""The Python API: the Rust core's stages and helpers (typed, with docstrings, in ``_core.pyi``), and the
few conveniences that are easier in Python (events as dicts, rows as dicts)."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional, Union

from ecomlogs import _core
from ecomlogs._core import (
    LoadStats,
    ProcessStats,
    ProduceStats,
    StopToken,
    Validation,
    ensure_topics,
    load,
    migrate,
    process,
    produce,
    reason_codes,
)

RawValue = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], None]

__all__ = [
    "LoadStats",
    "ProcessStats",
    "ProduceStats",
    "RawValue",
    "StopToken",
    "Validation",
    "ensure_topics",
    "generate_events",
    "generate_events_json",
    "load",
    "migrate",
    "process",
    "produce",
    "query",
    "reason_codes",
    "validate",
    "validate_batch",
]


def _as_bytes(value: RawValue) -> Optional[bytes]:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


def generate_events_json(n: int, *, invalid_ratio: float = 0.25, seed: Optional[int] = None) -> list[bytes]:
    """``n`` synthetic events as JSON bytes (about ``invalid_ratio`` of them deliberately invalid)."""
    return [value for _key, value, _intended in _core.generate_events(n, invalid_ratio=invalid_ratio, seed=seed)]


def generate_events(
    n: int,
    *,
    invalid_ratio: float = 0.25,
    seed: Optional[int] = None,
    with_intent: bool = False,
) -> list[dict[str, Any]]:
    """``n`` synthetic events as dicts. With ``with_intent=True`` each dict also has ``_intended``:
    ``"valid"`` or the kind of invalidity the generator put in (``"missing_currency"``, ...)."""
    out = []
    for _key, value, intended in _core.generate_events(n, invalid_ratio=invalid_ratio, seed=seed):
        event = json.loads(value)
        if with_intent:
            event["_intended"] = intended
        out.append(event)
    return out


def validate(value: RawValue) -> Validation:
    """Validates one event given as raw bytes, a JSON string, or a dict."""
    return _core.validate_one(_as_bytes(value))


def validate_batch(values: Iterable[RawValue]) -> list[Validation]:
    """Validates many events in one call into Rust."""
    return _core.validate_many([_as_bytes(v) for v in values])


def query(sql: str, dsn: Optional[str] = None) -> list[dict[str, Optional[str]]]:
    """Runs one SQL statement and returns its rows as dicts of text values (for reports)."""
    columns, rows = _core.query(sql, dsn)
    return [dict(zip(columns, row)) for row in rows]
