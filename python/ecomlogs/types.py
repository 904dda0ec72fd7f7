"""The types the API returns (typed, frozen; see ``_core.pyi``): import them from here to annotate your own
code. ``ecomlogs`` itself exports only what you call."""

from __future__ import annotations

from ecomlogs._core import (
    ContractCheck,
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
    "ContractCheck",
    "DeadLetter",
    "DeadLetterReport",
    "LoadStats",
    "MetricsServer",
    "ProcessStats",
    "ProduceStats",
    "ReplayStats",
    "Validation",
]
