"""The Python API: the Rust core's stages and helpers (typed, with docstrings, in ``_core.pyi``), and the
few conveniences that are easier in Python (events as dicts, rows as dicts)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence as _Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

from ecomlogs import _core
from ecomlogs._core import (
    DEFAULT_CONTRACT,
    ContractCheck,
    LoadStats,
    ProcessStats,
    ProduceStats,
    StopToken,
    Validation,
    ensure_topics,
    migrate,
    rebuild_rollups,
    retention,
)
from ecomlogs.exceptions import ConfigError

if TYPE_CHECKING:
    from ecomlogs._core import load, process, produce
else:
    # In a notebook the long calls show a progress bar unless given a ``progress`` callable.
    from ecomlogs.notebook import with_notebook_progress

    produce = with_notebook_progress(_core.produce, "produce")
    process = with_notebook_progress(_core.process, "process")
    load = with_notebook_progress(_core.load, "load")

RawValue = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], None]
ContractPath = Union[str, "os.PathLike[str]", None]
"""A contract file (JSON Schema draft 2020-12); None: ``ECOMLOGS_CONTRACT``, else the shipped default."""
QueryParam = Union[None, bool, int, float, Decimal, str, bytes, bytearray, date, datetime]
"""What :func:`query` binds to ``$1``, ``$2``, ... (converted to the type the server expects there)."""
QueryValue = Union[None, bool, int, float, Decimal, str, bytes, date, time, datetime]
"""What :func:`query` returns for a value (see its docstring for the mapping)."""

__all__ = [
    "ContractCheck",
    "ContractPath",
    "DEFAULT_CONTRACT",
    "LoadStats",
    "ProcessStats",
    "ProduceStats",
    "QueryParam",
    "QueryValue",
    "RawValue",
    "StopToken",
    "Validation",
    "contract_check",
    "ensure_topics",
    "generate_events",
    "generate_events_json",
    "load",
    "migrate",
    "process",
    "produce",
    "query",
    "reason_codes",
    "rebuild_rollups",
    "retention",
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


def _path(contract: ContractPath) -> Optional[str]:
    return None if contract is None else os.fspath(contract)


def validate(value: RawValue, *, contract: ContractPath = None) -> Validation:
    """Validates one event given as raw bytes, a JSON string, or a dict, under ``contract`` (a JSON
    Schema file; None: ``ECOMLOGS_CONTRACT``, else the shipped default). A contract file that does not
    parse or compile is a :class:`ConfigError`; a file is compiled once per process and content."""
    return _core.validate_one(_as_bytes(value), contract=_path(contract))


def validate_batch(values: Iterable[RawValue], *, contract: ContractPath = None) -> list[Validation]:
    """Validates many events in one call into Rust (see :func:`validate`)."""
    return _core.validate_many([_as_bytes(v) for v in values], contract=_path(contract))


def reason_codes(*, contract: ContractPath = None) -> list[str]:
    """Every reason code a rejected event can carry: the built-in ones, then the contract's own."""
    return _core.reason_codes(contract=_path(contract))


def contract_check(contract: Union[str, "os.PathLike[str]"], *, current_contract: ContractPath = None,
                   sample_topic: Optional[str] = None, sample_size: Optional[int] = None,
                   timeout_s: Optional[float] = None, bootstrap_servers: Optional[str] = None,
                   extra_config: Optional[Mapping[str, Union[str, int, float, bool]]] = None) -> ContractCheck:
    """Checks a contract file and, with ``sample_topic``, compares it with the contract in use now on the
    latest ``sample_size`` records of each partition of that topic (see :class:`ContractCheck`): a
    compatibility check before rollout."""
    return _core.contract_check(os.fspath(contract), current_contract=_path(current_contract),
                                sample_topic=sample_topic, sample_size=sample_size, timeout_s=timeout_s,
                                bootstrap_servers=bootstrap_servers, extra_config=extra_config)


def query(
    sql: str, params: Optional[Sequence[QueryParam]] = None, *, dsn: Optional[str] = None
) -> list[dict[str, QueryValue]]:
    """Runs one SQL statement with ``params`` bound to ``$1``, ``$2``, ... and returns its rows as dicts
    of typed values: integers as ``int``, NUMERIC as exact ``Decimal``, floating point as ``float``,
    booleans, ``date``, ``time``, TIMESTAMP as a naive ``datetime`` (the table's times are UTC),
    TIMESTAMPTZ as a ``datetime`` in UTC, text (also JSON and UUID) as ``str``, bytea as ``bytes``, NULL
    as ``None``. ``dsn`` None means ``DATABASE_URL``, else the ``PG*`` variables.

    ``ecomlogs.query("SELECT * FROM daily_revenue WHERE currency = $1", ["EUR"])``"""
    columns, _types, rows = _core.query(sql, query_params(params), dsn=dsn)
    return [dict(zip(columns, row)) for row in rows]


def query_params(params: Optional[Sequence[QueryParam]]) -> Optional[list[QueryParam]]:
    """``params`` as a list, or a :class:`ConfigError` for what cannot be one (a DSN given in its place)."""
    if params is None:
        return None
    if isinstance(params, (str, bytes, bytearray)) or not isinstance(params, _Sequence):
        raise ConfigError(
            f"params must be a list or tuple of values for $1, $2, ...; got {type(params).__name__} "
            "(the database goes in dsn=...)"
        )
    return list(params)
