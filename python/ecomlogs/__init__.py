"""ecomlogs: a real-time pipeline for e-commerce event logs, with a Rust core.

The notebook-facing API::

    import ecomlogs
    events = ecomlogs.generate_events(5, seed=1)          # list of dicts
    raw = ecomlogs.generate_events_json(5, seed=1)        # list of JSON bytes
    ecomlogs.validate(raw[0])                             # Validation(valid=..., reason=..., ...)
    ecomlogs.validate_batch(raw)                          # one call for many
    ecomlogs.validate(raw[0], contract="shop.json")       # under your own contract (JSON Schema)
    ecomlogs.produce(10_000)                              # to raw_events on localhost:29092

Everything heavy runs in Rust with the GIL released; Ctrl-C stops a running stage cleanly. The types the
functions return are in :mod:`ecomlogs.types`; DataFrames and plots in :mod:`ecomlogs.analytics`.
"""

from __future__ import annotations

from ecomlogs.api import (
    DEFAULT_CONTRACT,
    StopToken,
    contract_check,
    ensure_topics,
    generate_events,
    generate_events_json,
    load,
    migrate,
    process,
    produce,
    query,
    reason_codes,
    rebuild_rollups,
    retention,
    validate,
    validate_batch,
)
from ecomlogs.ops import (
    dead_letters,
    dlq_inspect,
    dlq_replay,
    metrics_text,
    serve_metrics,
)
from ecomlogs.exceptions import (
    ConfigError,
    DatabaseError,
    EcomlogsError,
    InternalError,
    KafkaError,
    ResourceError,
    StalledError,
)

from ecomlogs._core import __version__

__all__ = [
    "__version__",
    "ConfigError",
    "DEFAULT_CONTRACT",
    "DatabaseError",
    "EcomlogsError",
    "InternalError",
    "KafkaError",
    "ResourceError",
    "StalledError",
    "StopToken",
    "contract_check",
    "dead_letters",
    "dlq_inspect",
    "dlq_replay",
    "ensure_topics",
    "generate_events",
    "generate_events_json",
    "load",
    "metrics_text",
    "migrate",
    "process",
    "produce",
    "query",
    "reason_codes",
    "rebuild_rollups",
    "retention",
    "serve_metrics",
    "validate",
    "validate_batch",
]
