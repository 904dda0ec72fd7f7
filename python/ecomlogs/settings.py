"""Defaults (the original system's, our contract) and how settings are read from the environment."""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional

from ecomlogs.exceptions import ConfigError

DEFAULT_BOOTSTRAP_SERVERS = "localhost:29092"
RAW_TOPIC = "raw_events"
CLEAN_TOPIC = "clean_events"
DLQ_TOPIC = "dead_letter_events"
PROCESSOR_GROUP = "silver-stream-processor"
LOADER_GROUP = "postgres-loader"
DEFAULT_PARTITIONS = 3
DEFAULT_INTERVAL_MS = 500
DEFAULT_INVALID_RATIO = 0.25
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL_MS = 1000
DEFAULT_DSN = "postgresql://postgres@localhost:5432/ecom_kafka"


def bootstrap_servers(value: Optional[str] = None) -> str:
    """The flag's value, else ``KAFKA_BOOTSTRAP_SERVERS``, else ``localhost:29092``."""
    return value or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP_SERVERS


def parse_extra_config(pairs: Optional[Iterable[str]]) -> dict[str, str]:
    """Turns repeated ``key=value`` flags into a dict of librdkafka settings."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--extra-config expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def merge_extra(extra: Optional[Mapping[str, str]]) -> dict[str, str]:
    """Validates a user's librdkafka dict: every key and value must be a string."""
    out: dict[str, str] = {}
    for k, v in (extra or {}).items():
        if not isinstance(k, str):
            raise ConfigError(f"extra_config keys must be strings, got {k!r}")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


_PG_ENV = (("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"), ("PGPASSWORD", "password"),
           ("PGDATABASE", "dbname"), ("PGSSLMODE", "sslmode"), ("PGCONNECT_TIMEOUT", "connect_timeout"))


def dsn(value: Optional[str] = None) -> str:
    """The flag's value, else ``DATABASE_URL``, else the standard ``PG*`` variables over the original's
    defaults (localhost:5432, user postgres, database ecom_kafka). A password only ever comes from the
    DSN or ``PGPASSWORD``."""
    if value:
        return value
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    parts = {"host": "localhost", "port": "5432", "user": "postgres", "dbname": "ecom_kafka"}
    for env, key in _PG_ENV:
        if os.environ.get(env):
            parts[key] = os.environ[env]
    return " ".join(f"{k}='{_quote(v)}'" for k, v in parts.items())


def _quote(v: str) -> str:
    return v.replace("\\", "\\\\").replace("'", "\\'")


def redact(dsn_text: str) -> str:
    """A DSN safe to print: any password is replaced by ***."""
    import re

    out = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn_text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", out)
