"""Defaults and settings shared by the command line and the Python API. The defaults come from the Rust
core (``ecomlogs._core.DEFAULTS``), so both read the same ones; so does how the broker and the database
are found (a flag, else the environment, else the default)."""

from __future__ import annotations

import re
from typing import Iterable, Optional

from ecomlogs import _core
from ecomlogs.exceptions import ConfigError

DEFAULTS = _core.DEFAULTS
DEFAULT_BOOTSTRAP_SERVERS = str(DEFAULTS["bootstrap_servers"])
DEFAULT_DSN = str(DEFAULTS["dsn"])
RAW_TOPIC = str(DEFAULTS["raw_topic"])
CLEAN_TOPIC = str(DEFAULTS["clean_topic"])
DLQ_TOPIC = str(DEFAULTS["dlq_topic"])
PROCESSOR_GROUP = str(DEFAULTS["processor_group"])
LOADER_GROUP = str(DEFAULTS["loader_group"])


def bootstrap_servers(value: Optional[str] = None) -> str:
    """The argument, else ``KAFKA_BOOTSTRAP_SERVERS``, else ``localhost:29092``."""
    return _core.resolve_bootstrap_servers(value)


def dsn(value: Optional[str] = None) -> str:
    """The argument, else ``DATABASE_URL``, else the standard ``PG*`` variables over the original's
    defaults (localhost:5432, user postgres, database ecom_kafka). A password only ever comes from the
    DSN or ``PGPASSWORD``."""
    return _core.resolve_dsn(value)


def parse_extra_config(pairs: Optional[Iterable[str]]) -> dict[str, str]:
    """Turns repeated ``key=value`` flags into a dict of librdkafka settings."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--extra-config expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def redact(dsn_text: str) -> str:
    """A DSN safe to print: any password is replaced by ***."""
    out = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn_text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", out)
