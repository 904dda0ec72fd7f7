"""Log output for people (one readable line) or for machines (``--log-format json``: one JSON object per
line, for Loki, Elasticsearch, CloudWatch and the like)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sys
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is kept as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "stage", "message", "pid", "host", ...}``, one object per line; ``stage``
    is the part of the logger name after ``ecomlogs.`` (``loader``, ``processor``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": name,
            "stage": name.split(".", 1)[1] if name.startswith("ecomlogs.") else name,
            "message": record.getMessage(),
            "pid": os.getpid(),
            "host": self.host,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: int, fmt: str) -> None:
    """Sends every log record to stderr in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
