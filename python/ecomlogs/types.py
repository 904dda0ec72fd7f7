"""The types the API returns (typed, frozen; see ``_core.pyi``): import them from here to annotate your own
code. ``ecomlogs`` itself exports only what you call."""

from __future__ import annotations

from ecomlogs._core import (
    DeadLetter,
    DeadLetterReport,
    LoadStats,
    MetricsServer,
    ProcessStats,
    ProduceStats,
    ReplayStats,
    Validation,
)

__all__ = [
    "DeadLetter",
    "DeadLetterReport",
    "LoadStats",
    "MetricsServer",
    "ProcessStats",
    "ProduceStats",
    "ReplayStats",
    "Validation",
]
