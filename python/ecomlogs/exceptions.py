"""Exceptions raised by ecomlogs.

One hierarchy: catch :class:`EcomlogsError` to handle them all. Where a stdlib exception already means the
same thing, ours subclasses it too (a bad setting is also a ``ValueError``), so existing handlers keep
working. The Rust core raises these very classes (``src/py/errors.rs`` imports them from here).
"""

from __future__ import annotations

from typing import Optional


class EcomlogsError(Exception):
    """Root of every error raised by ecomlogs; catch this to handle them all."""


class ConfigError(EcomlogsError, ValueError):
    """A setting (flag, environment variable or argument) is missing, malformed or contradictory."""


class KafkaError(EcomlogsError):
    """The Kafka broker refused a request or could not be reached.

    Attributes:
        code: librdkafka's name for the error code, as its documentation spells it (for example
            ``"_TRANSPORT"`` or ``"TOPIC_ALREADY_EXISTS"``), or ``None`` when the error came without one.
    """

    code: Optional[str] = None


class DatabaseError(EcomlogsError):
    """PostgreSQL refused a request or could not be reached.

    Attributes:
        sqlstate: the five-character SQLSTATE from the server (for example ``"23505"``), or ``None``.
    """

    sqlstate: Optional[str] = None


class ResourceError(EcomlogsError, OSError):
    """The operating system refused something a stage needs (a thread, a file, a socket)."""


class StalledError(EcomlogsError):
    """A running pipeline stopped making progress while records were waiting (``ecomlogs run``): the
    message names the stage and what it was waiting for (the consumer group, the database, ...)."""


class InternalError(EcomlogsError):
    """A bug in ecomlogs (a worker thread panicked). Nothing the caller did; please report it."""


__all__ = ["EcomlogsError", "ConfigError", "KafkaError", "DatabaseError", "ResourceError", "StalledError", "InternalError"]
