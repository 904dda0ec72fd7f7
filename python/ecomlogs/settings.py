"""Defaults and settings shared by the command line and the Python API. The defaults come from the Rust
core (``ecomlogs._core.DEFAULTS``), so both read the same ones; so does how the broker and the database
are found (a flag, else the environment, else the default)."""

from __future__ import annotations

import re
from typing import Iterable, Optional

from ecomlogs import _core
from ecomlogs.exceptions import ConfigError

DEFAULTS = _core.DEFAULTS
"""``{command: {option: default}}``, from the options table."""
DEFAULT_BOOTSTRAP_SERVERS = str(DEFAULTS["load"]["bootstrap_servers"])
DEFAULT_DSN = str(DEFAULTS["load"]["dsn"])
RAW_TOPIC = str(DEFAULTS["process"]["input_topic"])
CLEAN_TOPIC = str(DEFAULTS["process"]["output_topic"])
DLQ_TOPIC = str(DEFAULTS["process"]["dlq_topic"])
PROCESSOR_GROUP = str(DEFAULTS["process"]["group_id"])
LOADER_GROUP = str(DEFAULTS["load"]["group_id"])


def bootstrap_servers(value: Optional[str] = None) -> str:
    """The argument, else ``KAFKA_BOOTSTRAP_SERVERS``, else ``localhost:29092``."""
    return _core.resolve_bootstrap_servers(value)


def dsn(value: Optional[str] = None) -> str:
    """The argument, else ``DATABASE_URL``, else the standard ``PG*`` variables over the original's
    defaults (localhost:5432, user postgres, database ecom_kafka). A password only ever comes from the
    DSN or ``PGPASSWORD``."""
    return _core.resolve_dsn(value)


def redact(dsn_text: str) -> str:
    """A DSN safe to print: any password is replaced by ***."""
    out = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn_text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", out)
