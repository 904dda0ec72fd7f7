"""Benchmarks: ecomlogs against the baseline (the original design in pure Python, ``baseline/``).

    python bench/bench.py                         # every section, full size (about 17 min on 2 cores)
    python bench/bench.py --sections stage1 --repeat 5
    python bench/bench.py --sections e2e --e2e-repeat 1
    python bench/bench.py --small --out /tmp/b # tiny sizes, for the test suite (a couple of minutes)
    python bench/bench.py --sections history      # history sizes 0/1M/10M/30M, both designs (about 40 min)
    python bench/bench.py --sections history --history-rows 0,1e6 --history-new-rows 100000

Each figure is the median of ``--repeat`` runs; a ratio is ecomlogs / baseline, computed within each run
(both sides measured back to back, in alternating order) and then the median taken. The command prints
figures and never judges them: no timing is asserted anywhere. Counts are checked, though: a run whose
rows, records or duplicates come out wrong stops the benchmark (:class:`BenchError`).

Results go to ``<out>/<UTC timestamp>.json``, ``<out>/latest.json``, ``<out>/latest.md`` (the Markdown
report; its main table is also printed) and ``<out>/latest.png`` (throughput and latency chart).

Sections (:data:`SECTIONS`, in the order they run):

* ``stage1``: generation + serialisation, validation of raw bytes, producing to the broker;
* ``process``: one pre-produced raw topic through each stream processor (a subprocess each);
* ``load``: one clean topic into PostgreSQL by each loader, and a server-side ``COPY`` as the physical limit;
* ``e2e``: producer, processor and loader running at the same time, from the first event produced to the
  last row committed, with CPU per process (stages, broker, PostgreSQL);
* ``latency``: event-to-row latency at fixed producer rates;
* ``contracts``: the same raw topic through the ecomlogs processor under the shipped default contract (run as
  typed code), the same rules through their JSON Schema, and the example shop contract; plus the
  validators alone as Rust loops (today's typed validator beside each contract).
* ``history`` (only when named: it builds tables of up to 30M rows): the events table's writers and readers
  as history grows, the design before migration 0006 beside today's (``bench/history.py``); its results go
  to ``bench/results/history/`` unless ``--out`` says otherwise.

Every consumer run gets its own topics, consumer groups and PostgreSQL database (``bench_<tag>``, dropped
afterwards), so runs never see each other's data.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

from ecomlogs import settings as S
from ecomlogs.exceptions import EcomlogsError

log = logging.getLogger("ecomlogs.bench")

if __name__ == "__main__":
    # bench/history.py imports this file as ``bench``: the same module, not a second copy of it.
    sys.modules.setdefault("bench", sys.modules[__name__])

SCHEMA_VERSION = 2
DEFAULT_EVENTS = 1_000_000
DEFAULT_PRODUCE_EVENTS = 1_000_000
DEFAULT_PROCESS_EVENTS = 1_000_000
DEFAULT_E2E_EVENTS = 1_000_000
DEFAULT_REPEAT = 3
SMALL_EVENTS = 2_000
SMALL_PRODUCE_EVENTS = 2_000
SMALL_PROCESS_EVENTS = 2_000
SMALL_E2E_EVENTS = 5_000
SMALL_REPEAT = 1
VALIDATION_SEED = 20240601
"""The validation input is the same seeded list for both sides and every run."""
PIPELINE_SEED = 20240602
"""Seed of every producer run of the consumer sections (reproducible counts; event ids differ per side)."""
CHILD_TIMEOUT_S = 900.0
"""Upper bound for one producer subprocess (1M events take seconds to tens of seconds)."""
KAFKA_TIMEOUT_S = 30.0
WARM_UP_EVENTS = 10_000
UNTIL_IDLE_S = 2.0
"""``--until-idle`` of every consumer stage: it exits that long after its last input."""
JOIN_TIMEOUT_S = 60.0
"""Upper bound for consumer groups to become stable (the dev broker takes about 3 s)."""
JOIN_SETTLE_S = 0.5
"""Pause after the groups are stable, for the first fetch to go out, before a producer starts."""
LOAD_BATCH = 50_000
"""ecomlogs loader batch for throughput runs (``--batch-size``)."""
ORIGINAL_BATCH = 500
"""The original's batch size: the baseline's, and ecomlogs' default."""
ROW_POLL_S = 0.05
"""Interval of the row-count polls (``max(id)``, an index lookup) that time the last committed row."""
LATENCY_RATES: tuple[tuple[int, float], ...] = ((2, 30.0), (1_000, 20.0), (50_000, 20.0))
"""(events/s, seconds) of the latency runs; the baseline runs only the rates in BASELINE_LATENCY_RATES."""
SMALL_LATENCY_RATES: tuple[tuple[int, float], ...] = ((2, 5.0), (1_000, 3.0), (50_000, 1.0))
BASELINE_LATENCY_RATES = (2, 1_000)
LATENCY_GRACE_S = 5.0
"""How long after the producer's last event rows may still arrive before a latency run is cut off."""
SMALL_LATENCY_GRACE_S = 2.0


class BenchError(EcomlogsError):
    """A benchmark could not run or its counts came out wrong (never raised for slow timings)."""


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Row:
    """One line of the results table: a metric measured on both sides.

    ``ratio`` is ecomlogs / baseline (the median of per-run ratios, so it need not equal the ratio of the
    two medians). ``better`` says which direction is an improvement: ``"higher"`` or ``"lower"``.
    ``baseline`` and ``ratio`` are None where the baseline has no figure (a rate it is not run at, or no row
    arriving in time).
    """

    section: str
    metric: str
    unit: str
    better: str
    ecomlogs: float
    baseline: Optional[float]
    ratio: Optional[float]


@dataclass
class SectionResult:
    """What a section hands back: details for the JSON file, rows for the table, Markdown for the report.

    ``references`` are single figures that are not an ecomlogs/baseline pair (e.g. the COPY limit), as
    ``{"section", "figure", "unit", "value"}``; ``markdown`` holds paragraphs/tables for ``latest.md``.
    """

    details: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BenchConfig:
    """Settings shared by every section (from the command line)."""

    events: int
    produce_events: int
    repeat: int
    bootstrap_servers: str
    dsn: str
    out: Path
    sections: tuple[str, ...]
    small: bool
    keep_topics: bool
    repo_root: Path
    process_events: int = DEFAULT_PROCESS_EVENTS
    e2e_events: int = DEFAULT_E2E_EVENTS
    e2e_repeat: int = DEFAULT_REPEAT
    latency_repeat: int = DEFAULT_REPEAT
    until_idle_s: float = UNTIL_IDLE_S
    processor_workers: int = 1
    """``--workers`` of the ecomlogs stream processor (consumer threads sharing the partitions); by default one
    per partition, as ``ecomlogs run`` does."""
    loader_workers: int = 1
    """``--workers`` of the ecomlogs loader (consumer threads, each with its own PostgreSQL connection)."""
    metrics: bool = False
    """Every ecomlogs stage serves ``/metrics``, scraped once a second (as Prometheus would) during the run."""
    defaults_only: bool = False
    """The ecomlogs scripts get no tuning flags at all (the ``defaults`` section): what a user gets."""
    history_rows: tuple[int, ...] = (0, 1_000_000, 10_000_000, 30_000_000)
    """``history``: the sizes the table grows to, in rows (each design, in order)."""
    history_new_rows: int = 400_000
    """``history``: the new rows of today the COPY and the loader write."""
    history_window_s: float = 10.0
    """``history``: seconds the dashboard's cost is measured over (and as long without it)."""

    @property
    def latency_rates(self) -> tuple[tuple[int, float], ...]:
        return SMALL_LATENCY_RATES if self.small else LATENCY_RATES

    @property
    def latency_grace_s(self) -> float:
        return SMALL_LATENCY_GRACE_S if self.small else LATENCY_GRACE_S


@dataclass(frozen=True)
class Sample:
    """One side's measurement in one run."""

    count: int
    wall_s: float
    cpu_s: float
    max_rss_mib: Optional[float] = None

    @property
    def events_per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.count if self.count else 0.0


@dataclass(frozen=True)
class StageSample(Sample):
    """A consumer-side measurement: ``wall_s`` is the active time (how it was measured: ``timing``);
    ``cpu_s`` the client's CPU, ``pg_cpu_s``/``broker_cpu_s`` the servers' (None where not measured)."""

    timing: str = ""
    pg_cpu_s: Optional[float] = None
    broker_cpu_s: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pg_cpu_us_per_event(self) -> Optional[float]:
        return self.pg_cpu_s * 1e6 / self.count if self.pg_cpu_s is not None and self.count else None


@dataclass(frozen=True)
class ChildRun:
    """A finished subprocess: its own wall time, CPU time and peak memory (see :class:`Child`)."""

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    stdout: str
    stderr: str
    started: float = 0.0
    """``time.time()`` when it was started."""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def usage(self) -> dict[str, float]:
        return {"wall_s": round(self.wall_s, 4), "user_s": round(self.user_s, 4), "sys_s": round(self.sys_s, 4),
                "cpu_s": round(self.cpu_s, 4), "max_rss_mib": round(self.max_rss_mib, 1)}


# ---------------------------------------------------------------------------------------------- helpers
def find_repo_root() -> Path:
    """The checkout this script lives in (``bench/bench.py`` -> the root holding ``baseline/``)."""
    here = Path(__file__).resolve()
    for candidate in [here.parents[1], Path.cwd(), *Path.cwd().parents]:
        if (candidate / "baseline" / "producer.py").is_file():
            return candidate
    raise BenchError(
        "cannot find the baseline (baseline/producer.py): run the benchmark from an ecomlogs checkout"
    )


def load_baseline(repo_root: Path, name: str) -> ModuleType:
    """Imports ``baseline/<name>.py`` under the module name ``baseline_<name>`` (it is not a package)."""
    path = repo_root / "baseline" / f"{name}.py"
    module_name = f"baseline_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# Runs the measured command as its own child and reports that child's rusage. Linux charges a child's
# ru_maxrss with its parent's memory at fork time, so the benchmark (hundreds of MiB after the in-process
# sections) must not be the direct parent: this launcher, a bare interpreter of ~10 MiB, is. SIGINT and
# SIGTERM sent to the launcher are passed on to the command (a Ctrl-C that still gets measured).
_LAUNCHER = """
import json, os, signal, subprocess, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
child = subprocess.Popen(cmd)
def forward(signum, _frame):
    try:
        os.kill(child.pid, signum)
    except OSError:
        pass
signal.signal(signal.SIGINT, forward)
signal.signal(signal.SIGTERM, forward)
_pid, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - started
kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
with open(report, "w") as f:
    json.dump({"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "max_rss_kib": kib}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


class Child:
    """A measured subprocess running in the background: its wall time, user+sys CPU and peak RSS
    (``wait4``, see ``_LAUNCHER``) once it ends.

    Output goes to temporary files (readable while it runs: :meth:`stderr_text`), so that a chatty child can
    never block on a full pipe. :meth:`interrupt` sends it SIGINT (its Ctrl-C path); on a timeout or when
    the ``with`` block is left before :meth:`wait` the whole process group is killed.
    """

    def __init__(self, cmd: Sequence[str], cwd: Optional[Path] = None, label: str = "") -> None:
        self.cmd = list(cmd)
        self.label = label or " ".join(self.cmd[:2])
        self._dir = Path(tempfile.mkdtemp(prefix="ecomlogs-bench-"))
        self._report = self._dir / "rusage.json"
        self._out = open(self._dir / "stdout", "wb")
        self._err = open(self._dir / "stderr", "wb")
        self.result: Optional[ChildRun] = None
        self.started = time.time()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(self._report), *self.cmd],
                stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err, cwd=cwd, start_new_session=True,
            )
        except BaseException:
            self._cleanup()
            raise

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def running(self) -> bool:
        return self.result is None and self.proc.poll() is None

    def stderr_text(self) -> str:
        if self.result is not None:
            return self.result.stderr
        try:
            return (self._dir / "stderr").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """SIGINT (or ``signum``) to the command, through the launcher: a Ctrl-C."""
        if self.running():
            with contextlib.suppress(OSError):
                os.kill(self.proc.pid, signum)

    def stop(self, patience_s: float = 45.0) -> tuple[Optional[ChildRun], str]:
        """Stops it gracefully: SIGINT, then SIGTERM after ``patience_s``, then SIGKILL (no measurement).
        Returns the measurement (None if killed) and the signal that ended it."""
        for signum, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
            self.interrupt(signum)
            try:
                self.proc.wait(timeout=patience_s)
                return self.wait(10), name
            except subprocess.TimeoutExpired:
                tail = " | ".join(self.stderr_text().strip().splitlines()[-3:])
                log.warning("%s still runs %.0f s after %s; last output: %s", self.label, patience_s, name, tail)
        self.kill()
        return None, "SIGKILL"

    def wait(self, timeout_s: float = CHILD_TIMEOUT_S) -> ChildRun:
        if self.result is not None:
            return self.result
        try:
            returncode = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            tail = self.stderr_text()[-2000:]
            self.kill()
            raise BenchError(f"{self.label} did not finish within {timeout_s:.0f} s:\n{tail}") from None
        self._out.close()
        self._err.close()
        stdout = (self._dir / "stdout").read_text(encoding="utf-8", errors="replace")
        stderr = (self._dir / "stderr").read_text(encoding="utf-8", errors="replace")
        try:
            usage = json.loads(self._report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._cleanup()
            raise BenchError(f"{self.label} exited with {returncode} and no measurement:\n{stderr[-2000:]}") from None
        self._cleanup()
        self.result = ChildRun(
            returncode=returncode,
            wall_s=usage["wall_s"],
            user_s=usage["user_s"],
            sys_s=usage["sys_s"],
            max_rss_mib=usage["max_rss_kib"] / 1024,
            stdout=stdout,
            stderr=stderr,
            started=self.started,
        )
        return self.result

    def kill(self) -> None:
        """Kills the process group if it still runs (no measurement then) and removes the temporary files."""
        if self.result is None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        if self.result is None:
            self._cleanup()

    def _cleanup(self) -> None:
        for f in (self._out, self._err):
            with contextlib.suppress(OSError):
                f.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def run_child(cmd: Sequence[str], timeout_s: float = CHILD_TIMEOUT_S, cwd: Optional[Path] = None) -> ChildRun:
    """Runs ``cmd`` to its end and measures exactly that process (see :class:`Child`)."""
    with Child(cmd, cwd=cwd) as child:
        return child.wait(timeout_s)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Calls ``fn`` once; returns its result, wall seconds and CPU seconds of this process (all threads)."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return result, t1 - t0, c1 - c0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


SampleT = TypeVar("SampleT", bound=Sample)
MetricSpec = tuple[str, str, str, Callable[[SampleT], Optional[float]]]
"""(name, unit, better, getter): how to read one metric off a :class:`Sample`."""


def compare(section: str, runs: Sequence[Mapping[str, SampleT]], metrics: Sequence[MetricSpec[SampleT]]) -> list[Row]:
    """Table rows for ``metrics`` over runs of ``{"ecomlogs": Sample, "baseline": Sample}``.

    Values are medians over the runs; the ratio is the median of the per-run ratios. A metric a side did not
    measure (getter returns None) gets no row.
    """
    rows = []
    for name, unit, better, get in metrics:
        pairs = [(get(r["ecomlogs"]), get(r["baseline"])) for r in runs]
        measured = [(o, t) for o, t in pairs if o is not None and t is not None]
        if not measured:
            continue
        ratios = [o / t for o, t in measured if t]
        rows.append(Row(section, name, unit, better, median([o for o, _ in measured]),
                        median([t for _, t in measured]), median(ratios) if ratios else None))
    return rows


def compare_values(section: str, metric: str, unit: str, better: str,
                   pairs: Sequence[tuple[Optional[float], Optional[float]]]) -> Optional[Row]:
    """A table row from per-run (ecomlogs, baseline) values where the baseline may be missing (None):
    medians of what was measured, the ratio only over runs that have both. No row without any ecomlogs value."""
    ours = [o for o, _ in pairs if o is not None]
    if not ours:
        return None
    theirs = [t for _, t in pairs if t is not None]
    ratios = [o / t for o, t in pairs if o is not None and t]
    return Row(section, metric, unit, better, median(ours), median(theirs) if theirs else None,
               median(ratios) if ratios else None)


THROUGHPUT_AND_CPU: list[MetricSpec[Sample]] = [
    ("throughput", "events/s", "higher", lambda s: s.events_per_s),
    ("CPU per event", "µs", "lower", lambda s: s.cpu_us_per_event),
]


T = TypeVar("T")


def alternate(run: int, sides: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Measures every side, in the given order on even runs and reversed on odd ones (no order bias)."""
    order = list(sides) if run % 2 == 0 else list(reversed(list(sides)))
    return {name: sides[name]() for name in order}


def warm_up(*calls: Callable[[], object]) -> None:
    """Runs each call once, untimed: first-use costs (lazy imports, allocator arenas) stay out of run 1."""
    for call in calls:
        call()


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- Kafka
@dataclass(frozen=True)
class TopicStats:
    """Records read back from a topic, and the range of their timestamps (ms since the epoch; for records
    the stages produce, librdkafka's CreateTime: when ``produce`` was called)."""

    count: int
    min_ts_ms: Optional[int]
    max_ts_ms: Optional[int]


def topic_stats(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 300.0, idle_s: float = 5.0
) -> TopicStats:
    """Messages in ``topic``, counted by reading it from the beginning of every partition.

    Watermarks would be cheaper, but the Tansu broker of the dev stack reports a high watermark that moves
    once per record batch, not per record, so the topic is read instead. Reading stops at ``expected`` plus
    one short extra poll (to notice surplus records), after ``idle_s`` without a message, or at ``timeout_s``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"ecomlogs-bench-count-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_S)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        count = 0
        lo: Optional[int] = None
        hi: Optional[int] = None
        deadline = time.monotonic() + timeout_s
        last_message = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=0.5 if count >= expected else 1.0)
            stamps = [m.timestamp()[1] for m in batch if not m.error()]
            count += len(stamps)
            if stamps:
                last_message = time.monotonic()
                lo = min(stamps) if lo is None else min(lo, *stamps)
                hi = max(stamps) if hi is None else max(hi, *stamps)
            elif count >= expected or time.monotonic() - last_message >= idle_s:
                break
        return TopicStats(count, lo, hi)
    finally:
        consumer.close()


def count_messages(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 300.0, idle_s: float = 5.0
) -> int:
    """How many messages ``topic`` holds (see :func:`topic_stats`)."""
    return topic_stats(bootstrap_servers, topic, expected, timeout_s, idle_s).count


def delete_topics(bootstrap_servers: str, topics: Sequence[str], timeout_s: float = KAFKA_TIMEOUT_S) -> None:
    """Deletes benchmark topics (best effort: a failure is logged, never raised)."""
    from confluent_kafka.admin import AdminClient

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for topic, future in admin.delete_topics(list(topics), operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as e:  # noqa: BLE001 - cleanup only: report and go on
            log.warning("could not delete topic %s: %s", topic, e)


def wait_for_groups(
    bootstrap_servers: str, groups: Sequence[str], children: Sequence[Child], timeout_s: float = JOIN_TIMEOUT_S
) -> float:
    """Waits until every consumer group in ``groups`` is Stable (its members joined and got partitions),
    then :data:`JOIN_SETTLE_S` more; returns the seconds waited. Raises when a child exits first."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    started = time.monotonic()
    pending = set(groups)
    while pending:
        for child in children:
            if not child.running():
                run = child.wait(10)
                raise BenchError(f"{child.label} exited ({run.returncode}) before its group joined:\n"
                                 f"{run.stderr[-2000:]}")
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"consumer groups {sorted(pending)} not stable within {timeout_s:.0f} s")
        for group, future in admin.describe_consumer_groups(list(pending), request_timeout=5).items():
            try:
                if future.result(timeout=10).state == ConsumerGroupState.STABLE:
                    pending.discard(group)
            except Exception:  # noqa: BLE001 - not known yet: ask again
                pass
        if pending:
            time.sleep(0.2)
    time.sleep(JOIN_SETTLE_S)
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------- stage 1
def bench_generate(cfg: BenchConfig) -> SectionResult:
    """Generation + serialisation to JSON bytes: ``ecomlogs.generate_events_json`` (Rust, including building
    the Python bytes) against the baseline producer's pure-Python generator (uuid4, random, json.dumps)."""
    import ecomlogs

    baseline = load_baseline(cfg.repo_root, "producer")
    n = cfg.events

    def ours() -> Sample:
        values, wall, cpu = timed(lambda: ecomlogs.generate_events_json(n))
        return Sample(len(values), wall, cpu)

    def theirs() -> Sample:
        values, wall, cpu = timed(lambda: baseline.generate_events_json(n))
        return Sample(len(values), wall, cpu)

    warm_up(
        lambda: ecomlogs.generate_events_json(WARM_UP_EVENTS), lambda: baseline.generate_events_json(WARM_UP_EVENTS)
    )
    runs = []
    for i in range(cfg.repeat):
        progress(f"stage1/generate: run {i + 1}/{cfg.repeat} ({n:,} events per side)")
        runs.append(alternate(i, {"ecomlogs": ours, "baseline": theirs}))
    return SectionResult(
        details={"events": n, "runs": [{k: asdict(v) for k, v in r.items()} for r in runs]},
        rows=compare("stage1/generate", runs, THROUGHPUT_AND_CPU),
    )


def bench_validate(cfg: BenchConfig) -> SectionResult:
    """Validation of raw bytes, on one list for both sides: ``_core.validate_many`` (parse, rules, canonical
    JSON out) against the baseline stream processor's ``process_value`` (json.loads, the original's five
    rules, json.dumps of valid events)."""
    import ecomlogs
    from ecomlogs import _core

    baseline = load_baseline(cfg.repo_root, "streamProcessor")
    values: list[Optional[bytes]] = list(ecomlogs.generate_events_json(cfg.events, seed=VALIDATION_SEED))
    n = len(values)
    valid_counts: dict[str, int] = {}

    def ours() -> Sample:
        verdicts, wall, cpu = timed(lambda: _core.validate_many(values))
        valid_counts["ecomlogs"] = sum(1 for v in verdicts if v.valid)
        return Sample(len(verdicts), wall, cpu)

    def theirs() -> Sample:
        process_value = baseline.process_value
        outputs, wall, cpu = timed(lambda: [process_value(v) for v in values])
        valid_counts["baseline"] = sum(1 for o in outputs if o is not None)
        return Sample(len(outputs), wall, cpu)

    sample = values[:WARM_UP_EVENTS]
    warm_up(lambda: _core.validate_many(sample), lambda: [baseline.process_value(v) for v in sample])
    runs = []
    for i in range(cfg.repeat):
        progress(f"stage1/validate: run {i + 1}/{cfg.repeat} ({n:,} events)")
        runs.append(alternate(i, {"ecomlogs": ours, "baseline": theirs}))
    if valid_counts["ecomlogs"] != valid_counts["baseline"]:
        log.warning("validators disagree: ecomlogs accepted %d, baseline %d of %d",
                    valid_counts["ecomlogs"], valid_counts["baseline"], n)
    return SectionResult(
        details={
            "events": n,
            "valid": valid_counts,
            "validators_agree": valid_counts["ecomlogs"] == valid_counts["baseline"],
            "runs": [{k: asdict(v) for k, v in r.items()} for r in runs],
        },
        rows=compare("stage1/validate", runs, THROUGHPUT_AND_CPU),
    )


def bench_produce(cfg: BenchConfig) -> SectionResult:
    """Producing to the broker, each side a fresh process on a fresh 3-partition topic:
    ``python producer.py`` (ecomlogs, the whole loop in Rust) against ``python baseline/producer.py``.

    Throughput is counted on the process's wall time (interpreter start-up included, for both sides); CPU is
    the child's user+sys time; memory its peak RSS. Every topic is read back afterwards and its records counted.
    """
    import ecomlogs

    n = cfg.produce_events
    tag = uuid.uuid4().hex[:8]
    root_script = cfg.repo_root / "producer.py"
    # The root script is the user's entry point; outside a full checkout, the same command through the CLI.
    ours_cmd = (
        [sys.executable, str(root_script)] if root_script.is_file() else [sys.executable, "-m", "ecomlogs", "produce"]
    )
    theirs_cmd = [sys.executable, str(cfg.repo_root / "baseline" / "producer.py")]
    common = ["--count", str(n), "--interval-ms", "0", "--quiet", "--bootstrap-servers", cfg.bootstrap_servers]
    created: list[str] = []

    def side(name: str, cmd: list[str], run: int) -> Callable[[], Sample]:
        def measure() -> Sample:
            topic = f"bench_raw_{tag}_{run}_{name}"
            ecomlogs.ensure_topics([topic], bootstrap_servers=cfg.bootstrap_servers, partitions=int(S.DEFAULTS['load']['partitions']))
            created.append(topic)
            try:
                child = run_child([*cmd, *common, "--topic", topic], cwd=cfg.repo_root)
                if child.returncode != 0:
                    raise BenchError(f"{name} producer exited with {child.returncode}:\n{child.stderr[-2000:]}")
                if name == "baseline":
                    reported = json.loads(child.stdout.strip().splitlines()[-1])
                    if reported.get("produced") != n or reported.get("failed"):
                        raise BenchError(f"baseline producer reported {reported}, expected {n} produced, none failed")
                in_topic = count_messages(cfg.bootstrap_servers, topic, n)
                if in_topic != n:
                    raise BenchError(f"{name} producer: {in_topic} messages in {topic}, expected {n}")
            finally:
                if not cfg.keep_topics:
                    delete_topics(cfg.bootstrap_servers, [topic])
            return Sample(in_topic, child.wall_s, child.user_s + child.sys_s, child.max_rss_mib)

        return measure

    runs = []
    for i in range(cfg.repeat):
        progress(f"stage1/produce: run {i + 1}/{cfg.repeat} ({n:,} events per side)")
        sides = {"ecomlogs": side("ecomlogs", ours_cmd, i), "baseline": side("baseline", theirs_cmd, i)}
        runs.append(alternate(i, sides))
    rows = compare(
        "stage1/produce",
        runs,
        [
            *THROUGHPUT_AND_CPU,
            ("peak RSS", "MiB", "lower", lambda s: s.max_rss_mib),
        ],
    )
    return SectionResult(
        details={
            "events": n,
            "partitions": int(S.DEFAULTS['load']['partitions']),
            "topics": created,
            "topics_kept": cfg.keep_topics,
            "commands": {"ecomlogs": ours_cmd, "baseline": theirs_cmd},
            "runs": [{k: asdict(v) for k, v in r.items()} for r in runs],
        },
        rows=rows,
    )



def run_stage1(cfg: BenchConfig, ws: Optional[Workspace] = None) -> SectionResult:
    """Stage 1 (the producer's work): generation, validation of raw bytes, producing to Kafka."""
    result = SectionResult()
    for name, bench in (("generate", bench_generate), ("validate", bench_validate), ("produce", bench_produce)):
        part = bench(cfg)
        result.details[name] = part.details
        result.rows.extend(part.rows)
    result.references.extend(rust_loops(cfg))
    return result


def rust_loops(cfg: BenchConfig) -> list[dict[str, Any]]:
    """The same generation and validation work as a loop inside Rust (reused buffers, no Python objects):
    what the stages themselves pay per event (``examples/bench_core.rs``). Median of ``--repeat`` runs."""
    cmd = ["cargo", "run", "--quiet", "--release", "--no-default-features", "--example", "bench_core", "--",
           str(cfg.events), "1"]
    runs = []
    for _ in range(cfg.repeat):
        done = subprocess.run(cmd, cwd=cfg.repo_root, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise BenchError(f"bench_core failed: {done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    out: list[dict[str, Any]] = []
    for key, label in (("generate", "generation + serialisation"), ("validate", "validation of raw bytes")):
        rates = [r[key][0] / r[key][1] for r in runs if r[key][1] > 0]
        cpu = [r[key][2] * 1e6 / r[key][0] for r in runs if r[key][0]]
        out.append({"section": "stage1", "figure": f"{label}, Rust loop", "unit": "events/s",
                    "value": median(rates) if rates else None})
        out.append({"section": "stage1", "figure": f"{label}, Rust loop: CPU per event", "unit": "µs",
                    "value": median(cpu) if cpu else None})
    return out


# ---------------------------------------------------------------------------------------------- workspace
def database_dsn(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name`` (a URL stays a URL)."""
    if dsn.startswith(("postgres://", "postgresql://")):
        from urllib.parse import urlsplit, urlunsplit

        return urlunsplit(urlsplit(dsn)._replace(path="/" + name))
    from psycopg2.extensions import make_dsn  # type: ignore[import-untyped]

    return str(make_dsn(dsn, dbname=name))


def pg_connect(dsn: str, autocommit: bool = True) -> Any:
    import psycopg2  # type: ignore[import-untyped]

    conn = psycopg2.connect(dsn)
    conn.autocommit = autocommit
    return conn


class Workspace:
    """What one benchmark invocation creates on the servers (topics, databases, a CSV file) and removes at
    the end, plus what sections share (the raw topic that ``process`` and ``load`` both read)."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.tag = uuid.uuid4().hex[:8]
        self.topics: list[str] = []
        self.databases: list[str] = []
        self.files: list[Path] = []
        self.cache: dict[Any, Any] = {}
        self._n = 0
        self._pids: Optional[dict[str, Optional[int]]] = None

    def name(self, kind: str) -> str:
        self._n += 1
        return f"bench_{kind}_{self.tag}_{self._n}"

    def new_topics(self, *kinds: str) -> list[str]:
        import ecomlogs

        names = [self.name(k) for k in kinds]
        ecomlogs.ensure_topics(names, bootstrap_servers=self.cfg.bootstrap_servers, partitions=int(S.DEFAULTS['load']['partitions']))
        self.topics.extend(names)
        return names

    def drop_topics(self, topics: Sequence[str]) -> None:
        if self.cfg.keep_topics:
            return
        delete_topics(self.cfg.bootstrap_servers, topics)
        self.topics = [t for t in self.topics if t not in topics]

    def new_database(self, kind: str) -> str:
        """Creates database ``bench_<kind>_<tag>_<n>`` (session time zone UTC) and returns its DSN."""
        name = self.name(kind)
        conn = pg_connect(self.cfg.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
                self.databases.append(name)
                cur.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'UTC'")
        finally:
            conn.close()
        return database_dsn(self.cfg.dsn, name)

    def drop_database(self, dsn: str) -> None:
        name = next((d for d in self.databases if dsn.rstrip("/").endswith(d) or f"dbname={d}" in dsn), None)
        if name is None:
            return
        conn = pg_connect(self.cfg.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.databases.remove(name)
        except Exception as e:  # noqa: BLE001 - cleanup only
            log.warning("could not drop database %s: %s", name, e)
        finally:
            conn.close()

    def server_pids(self) -> dict[str, Optional[int]]:
        if self._pids is None:
            self._pids = find_server_pids()
        return self._pids

    def close(self) -> None:
        if self.topics and not self.cfg.keep_topics:
            delete_topics(self.cfg.bootstrap_servers, self.topics)
            self.topics = []
        for name in list(self.databases):
            self.drop_database(database_dsn(self.cfg.dsn, name))
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink()


# ---------------------------------------------------------------------------------------------- server CPU
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> Optional[list[str]]:
    """Fields of ``/proc/<pid>/stat`` after the command name (index 0 = state, 1 = ppid, 11 = utime,
    12 = stime, 13 = cutime, 14 = cstime), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _pgrep(*args: str) -> Optional[int]:
    try:
        out = subprocess.run(["pgrep", *args], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]) if out else None


def find_server_pids() -> dict[str, Optional[int]]:
    """The broker's and PostgreSQL's (postmaster) pids: from the dev stack, else ``pgrep`` (best effort)."""
    pids: dict[str, Optional[int]] = {"broker": None, "postgres": None}
    with contextlib.suppress(Exception):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # a dev tool, not in the package
        import devstack

        info = devstack.status()
        pids["broker"], pids["postgres"] = info.broker.pid, info.postgres.pid
    if pids["broker"] is None:
        pids["broker"] = _pgrep("-o", "-f", "tansu broker")
    if pids["postgres"] is None:
        pids["postgres"] = _pgrep("-o", "-x", "postgres")
    return pids


def server_cpu(pids: dict[str, Optional[int]]) -> dict[str, Optional[float]]:
    """CPU seconds used so far by the broker (all its threads) and by PostgreSQL (the postmaster, its live
    children, and the children that already exited, which the kernel adds to the postmaster's cutime/cstime).
    Deltas of two calls give what the servers spent in between. None where the process is not visible."""
    out: dict[str, Optional[float]] = {"broker": None, "postgres": None}
    broker = pids.get("broker")
    if broker:
        f = _proc_stat(broker)
        if f:
            out["broker"] = (int(f[11]) + int(f[12])) / _CLK_TCK
    postmaster = pids.get("postgres")
    if postmaster:
        f = _proc_stat(postmaster)
        if f:
            ticks = sum(int(x) for x in f[11:15])
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    child = _proc_stat(int(entry))
                    if child and child[1] == str(postmaster):
                        ticks += int(child[11]) + int(child[12])
            out["postgres"] = ticks / _CLK_TCK
    return out


def cpu_delta(before: dict[str, Optional[float]], after: dict[str, Optional[float]]) -> dict[str, Optional[float]]:
    out: dict[str, Optional[float]] = {}
    for k, b in before.items():
        a = after.get(k)
        out[k] = round(a - b, 3) if a is not None and b is not None else None
    return out


# ---------------------------------------------------------------------------------------------- stage commands
_PRODUCED = re.compile(r"produced ([\d,]+) events to \S+ \(([\d,]+) valid, ([\d,]+) invalid\) in ([\d.]+)s")
_PROCESSED = re.compile(r"processed ([\d,]+) events in ([\d.]+)s \([^)]*\): ([\d,]+) to \S+, ([\d,]+) to \S+")
_LOADED = re.compile(r"loaded ([\d,]+) rows in ([\d.]+)s \([^)]*\) from ([\d,]+) records: ([\d,]+) duplicates "
                     r"skipped, ([\d,]+) dead-lettered")
_ASSIGNED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*?: assigned ", re.M)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def parse_produced(stderr: str) -> Optional[dict[str, Any]]:
    """The ecomlogs producer's final line, or None if it is not there."""
    m = _PRODUCED.search(stderr)
    if not m:
        return None
    return {"produced": _int(m[1]), "valid": _int(m[2]), "invalid": _int(m[3]), "elapsed_s": float(m[4])}


def parse_processed(stderr: str) -> dict[str, Any]:
    """The ecomlogs stream processor's final line (``processed N events in X s ...``)."""
    m = _PROCESSED.search(stderr)
    if not m:
        raise BenchError(f"no 'processed ...' line from the ecomlogs stream processor:\n{stderr[-2000:]}")
    return {"consumed": _int(m[1]), "elapsed_s": float(m[2]), "valid": _int(m[3]), "invalid": _int(m[4])}


def parse_loaded(stderr: str) -> dict[str, Any]:
    """The ecomlogs loader's final line (``loaded N rows in X s ... from M records ...``)."""
    m = _LOADED.search(stderr)
    if not m:
        raise BenchError(f"no 'loaded ...' line from the ecomlogs loader:\n{stderr[-2000:]}")
    return {"rows": _int(m[1]), "elapsed_s": float(m[2]), "consumed": _int(m[3]), "duplicates": _int(m[4]),
            "dead_lettered": _int(m[5])}


def first_assignment_time(stderr: str) -> Optional[float]:
    """``time.time()`` of the first ``assigned ...`` log line of an ecomlogs stage (local-time log stamps)."""
    m = _ASSIGNED.search(stderr)
    if not m:
        return None
    return datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(m[2]) / 1000


def last_json_line(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise BenchError("a baseline script printed no JSON line")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


SCRAPED_PORTS: set[int] = set()


def _scraper() -> None:
    """With ``--metrics``: fetches every stage's /metrics once a second, like a Prometheus server would."""
    import urllib.request

    while True:
        time.sleep(1.0)
        for port in list(SCRAPED_PORTS):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    r.read()
            except OSError:
                pass  # the stage has not started yet, or has finished


def _script(cfg: BenchConfig, root_script: str, command: str) -> list[str]:
    """An ecomlogs entry point: the root script (the user's), or the same command through the CLI; with
    ``--metrics`` serving /metrics on a free port that the scraper fetches."""
    path = cfg.repo_root / root_script
    cmd = [sys.executable, str(path)] if path.is_file() else [sys.executable, "-m", "ecomlogs", command]
    if cfg.metrics:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        SCRAPED_PORTS.add(port)
        cmd += ["--metrics-port", str(port)]
    return cmd


def producer_cmd(cfg: BenchConfig, side: str, topic: str, count: int, rate: Optional[int] = None) -> list[str]:
    common = ["--count", str(count), "--quiet", "--topic", topic, "--seed", str(PIPELINE_SEED),
              "--bootstrap-servers", cfg.bootstrap_servers]
    if side == "ecomlogs":
        pace = ["--rate", str(rate)] if rate else ["--interval-ms", "0"]
        return [*_script(cfg, "producer.py", "produce"), *common, *pace]
    # The original paces with a sleep between events.
    interval_ms = round(1000 / rate) if rate else 0
    return [sys.executable, str(cfg.repo_root / "baseline" / "producer.py"), *common, "--interval-ms", str(interval_ms)]


def processor_cmd(cfg: BenchConfig, side: str, raw: str, clean: str, dlq: str, group: str,
                  quiet: bool = True, until_idle_s: Optional[float] = None,
                  contract: Optional[Path] = None) -> list[str]:
    common = ["--input-topic", raw, "--output-topic", clean, "--group-id", group,
              "--until-idle", str(until_idle_s or cfg.until_idle_s), "--bootstrap-servers", cfg.bootstrap_servers]
    if side == "ecomlogs":
        tuning = [] if cfg.defaults_only else ["--workers", str(cfg.processor_workers)]
        return [*_script(cfg, "streamProcessor.py", "process"), *common, "--dlq-topic", dlq,
                *tuning, *(["--quiet"] if quiet else []), *(["--contract", str(contract)] if contract else [])]
    return [sys.executable, str(cfg.repo_root / "baseline" / "streamProcessor.py"), *common, "--quiet"]


def loader_cmd(cfg: BenchConfig, side: str, clean: str, dlq: str, group: str, dsn: str,
               batch_size: int = ORIGINAL_BATCH, until_idle_s: Optional[float] = None) -> list[str]:
    common = ["--topic", clean, "--group-id", group, "--dsn", dsn,
              "--until-idle", str(until_idle_s or cfg.until_idle_s), "--quiet",
              "--bootstrap-servers", cfg.bootstrap_servers]
    if side == "ecomlogs":
        tuning = [] if cfg.defaults_only else [
            "--batch-size", str(batch_size), "--flush-interval-ms", str(int(S.DEFAULTS['load']['flush_interval_ms'])),
            "--workers", str(cfg.loader_workers)]
        return [*_script(cfg, "psqlConsumer.py", "load"), *common, "--dlq-topic", dlq, *tuning]
    common += ["--batch-size", str(batch_size)]
    return [sys.executable, str(cfg.repo_root / "baseline" / "psqlConsumer.py"), *common, "--create-table"]


def _check_exit(run: ChildRun, what: str) -> None:
    if run.returncode != 0:
        raise BenchError(f"{what} exited with {run.returncode}:\n{run.stderr[-2000:]}")


# ---------------------------------------------------------------------------------------------- table queries
TABLE = "kafka_events_silver"


def table_summary(dsn: str) -> dict[str, Any]:
    """Rows, distinct event ids and the batches of the loaded table. ``created_at`` is the start of the
    inserting transaction, so each batch has one value: ``batches`` counts them; ``batch_starts`` lists the
    last three as (seconds after the first batch's start, rows of the batches that started before it)."""
    conn = pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT event_id), coalesce(max(id), 0) FROM {TABLE}")
            rows, distinct, max_id = cur.fetchone()
            cur.execute(f"SELECT created_at, count(*) FROM {TABLE} GROUP BY created_at ORDER BY created_at")
            batches = cur.fetchall()
    finally:
        conn.close()
    first = batches[0][0] if batches else None
    return {"rows": rows, "distinct_event_ids": distinct, "max_id": max_id, "batches": len(batches),
            "first_batch_at": first.isoformat() if first else None,
            "last_batch_at": batches[-1][0].isoformat() if batches else None,
            "batch_starts": batch_starts(batches)}


def batch_starts(batches: Sequence[tuple[datetime, int]]) -> list[list[float]]:
    """The last three of ``batches`` ((created_at, rows) in order) as [seconds after the first batch's
    start, rows of the batches that started before it] (what :func:`batch_rate` reads)."""
    starts: list[list[float]] = []
    before = 0
    for at, n in batches:
        starts.append([round((at - batches[0][0]).total_seconds(), 6), before])
        before += n
    return starts[-3:]


def batch_rate(summary: dict[str, Any]) -> Optional[float]:
    """Steady-state rows/s from the batch start times: the rows of the batches that started before the
    second-to-last batch, over the time from the first batch's start to the second-to-last's. The last batch
    is left out because it is usually a partial one written late (after a flush interval, or, for the baseline,
    only at its idle exit); with two batches the last one is used; None with one."""
    starts = summary["batch_starts"]
    if summary["batches"] >= 3:
        t, n = starts[-2]
    elif summary["batches"] == 2:
        t, n = starts[-1]
    else:
        return None
    return float(n) / float(t) if t > 0 else None


def latency_stats(dsn: str, where: str, params: Sequence[Any] = ()) -> dict[str, Any]:
    """Per-row latency ``created_at - event_timestamp`` (seconds; both UTC) over the rows matching ``where``:
    count, p50, p99 (``percentile_cont``), min, max."""
    conn = pg_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"""
                SELECT count(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY lat),
                       min(lat), max(lat)
                FROM (SELECT EXTRACT(EPOCH FROM created_at - event_timestamp)::float8 AS lat, created_at
                      FROM {TABLE}) t
                WHERE {where}""", tuple(params))
            rows, p50, p99, lo, hi = cur.fetchone()
    finally:
        conn.close()
    def r(v: Any) -> Optional[float]:
        return round(float(v), 6) if v is not None else None

    return {"rows": rows, "p50_s": r(p50), "p99_s": r(p99), "min_s": r(lo), "max_s": r(hi)}


class RowWatch:
    """Polls how many rows the table holds, cheaply: ``max(id)`` (an index lookup; ids are handed out in
    commit order by the single loader), confirmed by ``count(*)`` once it reaches the target."""

    def __init__(self, dsn: str) -> None:
        self.conn = pg_connect(dsn)

    def rows(self, target: Optional[int] = None) -> int:
        import psycopg2

        try:
            with self.conn.cursor() as cur:
                cur.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}")
                n = int(cur.fetchone()[0])
                if target is not None and n >= target:
                    cur.execute(f"SELECT count(*) FROM {TABLE}")
                    n = int(cur.fetchone()[0])
                return n
        except psycopg2.errors.UndefinedTable:
            return 0

    def close(self) -> None:
        self.conn.close()


def predicted_baseline_valid(cfg: BenchConfig, ws: Workspace, n: int) -> int:
    """How many of the baseline producer's first ``n`` events (seed :data:`PIPELINE_SEED`) the baseline
    processor accepts: the same seeded generator and the same rules, run in-process (not timed)."""
    key = ("baseline_valid", n)
    if key not in ws.cache:
        producer = load_baseline(cfg.repo_root, "producer")
        rules = load_baseline(cfg.repo_root, "streamProcessor")
        next_event = producer.event_source(PIPELINE_SEED)
        ws.cache[key] = sum(1 for _ in range(n) if rules.is_valid_event(next_event()))
    return int(ws.cache[key])


def shared_raw_topic(cfg: BenchConfig, ws: Workspace) -> tuple[str, int]:
    """The raw topic that ``process`` and ``load`` read: ``cfg.process_events`` events produced once by the
    ecomlogs producer (seeded), checked by reading them back."""
    if "raw" not in ws.cache:
        n = cfg.process_events
        (topic,) = ws.new_topics("raw")
        progress(f"producing {n:,} raw events to {topic} (read by the process and load sections)")
        run = run_child(producer_cmd(cfg, "ecomlogs", topic, n), cwd=cfg.repo_root)
        _check_exit(run, "ecomlogs producer")
        in_topic = count_messages(cfg.bootstrap_servers, topic, n)
        if in_topic != n:
            raise BenchError(f"{in_topic} messages in {topic}, expected {n}")
        ws.cache["raw"] = (topic, n)
    topic, n = ws.cache["raw"]
    return str(topic), int(n)


def _runs_json(runs: Sequence[Mapping[str, Sample]]) -> list[dict[str, Any]]:
    return [{k: asdict(v) for k, v in r.items()} for r in runs]


# ---------------------------------------------------------------------------------------------- process
def run_process(cfg: BenchConfig, ws: Workspace) -> SectionResult:
    """Stage 2 alone: the same pre-produced raw topic through ``streamProcessor.py`` (ecomlogs, default batch)
    and ``baseline/streamProcessor.py``, each a fresh process with its own group and output topics.

    Active time excludes start-up, the group join and the idle wait at the end: for the baseline its own
    ``active_s`` (first batch received -> last output delivered); for ecomlogs, from its ``assigned`` log line
    to the CreateTime of its last output record (clean or dead-letter topic). CPU is the process's user+sys
    over its whole life (start-up and join included); memory its peak RSS. Every output topic is read back.
    """
    raw, n = shared_raw_topic(cfg, ws)

    def side(name: str, run_index: int) -> Callable[[], StageSample]:
        def measure() -> StageSample:
            clean, dlq = ws.new_topics(f"proc_clean_{name}", f"proc_dlq_{name}")
            group = ws.name("proc_group")
            try:
                # ecomlogs at INFO level (no --quiet): its assignment line times the start.
                run = run_child(processor_cmd(cfg, name, raw, clean, dlq, group, quiet=False), cwd=cfg.repo_root)
                _check_exit(run, f"{name} stream processor")
                if name == "ecomlogs":
                    counts = parse_processed(run.stderr)
                else:
                    counts = last_json_line(run.stdout)
                    if counts.get("failed"):
                        raise BenchError(f"baseline stream processor reported {counts}")
                if counts["consumed"] != n or counts["valid"] + counts["invalid"] != n:
                    raise BenchError(f"{name} stream processor: {counts}, expected {n} consumed")
                out = topic_stats(cfg.bootstrap_servers, clean, counts["valid"])
                if out.count != counts["valid"]:
                    raise BenchError(f"{name}: {out.count} records in {clean}, expected {counts['valid']}")
                extra: dict[str, Any] = {"valid": counts["valid"], "invalid": counts["invalid"],
                                         "process_wall_s": round(run.wall_s, 3)}
                if name == "ecomlogs":
                    dead = topic_stats(cfg.bootstrap_servers, dlq, counts["invalid"])
                    if dead.count != counts["invalid"]:
                        raise BenchError(f"ecomlogs: {dead.count} records in {dlq}, expected {counts['invalid']}")
                    stamps = [s for s in (out.max_ts_ms, dead.max_ts_ms) if s is not None]
                    start = first_assignment_time(run.stderr)
                    timing = "partition assignment (log line) -> last output record's CreateTime"
                    if start is None:
                        start = min(s for s in (out.min_ts_ms, dead.min_ts_ms) if s is not None) / 1000
                        timing = "first -> last output record's CreateTime (no assignment line found)"
                    active = max(stamps) / 1000 - start
                    extra["stage_reported_elapsed_s"] = counts["elapsed_s"]
                else:
                    active = float(counts["active_s"])
                    timing = "baseline's own active_s: first batch received -> last output delivered"
                    extra["stage_reported_elapsed_s"] = counts["elapsed_s"]
                return StageSample(n, active, run.cpu_s, run.max_rss_mib, timing=timing, extra=extra)
            finally:
                ws.drop_topics([clean, dlq])

        return measure

    runs = []
    for i in range(cfg.repeat):
        progress(f"process: run {i + 1}/{cfg.repeat} ({n:,} events per side)")
        runs.append(alternate(i, {"ecomlogs": side("ecomlogs", i), "baseline": side("baseline", i)}))
    valid = {k: v.extra["valid"] for k, v in runs[0].items()}  
    if valid["ecomlogs"] != valid["baseline"]:
        log.warning("processors disagree: ecomlogs forwarded %d, baseline %d of %d",
                    valid["ecomlogs"], valid["baseline"], n)
    rows = compare("process", runs, [*THROUGHPUT_AND_CPU, ("peak RSS", "MiB", "lower", lambda s: s.max_rss_mib)])
    return SectionResult(
        details={
            "events": n,
            "raw_topic": raw,
            "valid": valid,
            "processors_agree": valid["ecomlogs"] == valid["baseline"],
            "timing": {k: v.timing for k, v in runs[0].items()},  
            "runs": _runs_json(runs),
        },
        rows=rows,
        markdown=[
            f"**process**: {n:,} raw events, one pre-produced topic, through each stream processor (ecomlogs "
            "default `--batch-max 50000`). Throughput over the active time: ecomlogs from its partition "
            "assignment (log line) to its last output record's CreateTime, the baseline its own `active_s` "
            "(first batch received to last output delivered); group join, start-up and the idle wait are "
            "excluded. CPU = the process's user+sys over its whole life / events."
        ],
    )


# ---------------------------------------------------------------------------------------------- load
LOAD_SIDES = ("ecomlogs", "ecomlogs_b500", "baseline", "copy")
COPY_COLUMNS = "event_id, customer_id, event_type, amount, currency, event_timestamp"


def make_clean_topic(cfg: BenchConfig, ws: Workspace) -> tuple[str, int]:
    """The clean topic ``load`` reads: the shared raw topic through the ecomlogs processor once."""
    if "clean" not in ws.cache:
        raw, n = shared_raw_topic(cfg, ws)
        clean, dlq = ws.new_topics("load_clean", "load_dlq")
        progress(f"load: validating {raw} into {clean} (ecomlogs processor, once)")
        run = run_child(processor_cmd(cfg, "ecomlogs", raw, clean, dlq, ws.name("load_prep")), cwd=cfg.repo_root)
        _check_exit(run, "ecomlogs stream processor")
        counts = parse_processed(run.stderr)
        if counts["consumed"] != n:
            raise BenchError(f"ecomlogs stream processor consumed {counts['consumed']}, expected {n}")
        in_topic = count_messages(cfg.bootstrap_servers, clean, counts["valid"])
        if in_topic != counts["valid"]:
            raise BenchError(f"{in_topic} records in {clean}, expected {counts['valid']}")
        ws.drop_topics([dlq])
        ws.cache["clean"] = (clean, counts["valid"])
    clean, n = ws.cache["clean"]
    return str(clean), int(n)


def export_csv(dsn: str, path: Path) -> None:
    """The loaded rows (the COPY columns, in id order) as CSV, readable by the PostgreSQL OS user."""
    conn = pg_connect(dsn)
    try:
        with conn.cursor() as cur, open(path, "w", encoding="utf-8") as f:
            cur.copy_expert(f"COPY (SELECT {COPY_COLUMNS} FROM {TABLE} ORDER BY id) TO STDOUT WITH (FORMAT csv)", f)
    finally:
        conn.close()
    path.chmod(0o644)


def load_with_loader(cfg: BenchConfig, ws: Workspace, side: str, clean: str, n: int, dsn: str) -> StageSample:
    """One loader run into the (empty) database ``dsn``; checks the table afterwards."""
    pids = ws.server_pids()
    name = "ecomlogs" if side.startswith("ecomlogs") else "baseline"
    batch = LOAD_BATCH if side == "ecomlogs" else ORIGINAL_BATCH
    dlq_topics = ws.new_topics("load_dlq") if name == "ecomlogs" else [ws.name("unused_dlq")]
    try:
        before = server_cpu(pids)
        run = run_child(loader_cmd(cfg, name, clean, dlq_topics[0], ws.name("load_group"), dsn, batch),
                        cwd=cfg.repo_root)
        servers = cpu_delta(before, server_cpu(pids))
    finally:
        if name == "ecomlogs":
            ws.drop_topics(dlq_topics)
    _check_exit(run, f"{side} loader")
    extra: dict[str, Any] = {"batch_size": batch, "loader_wall_s": round(run.wall_s, 3)}
    if name == "ecomlogs":
        reported = parse_loaded(run.stderr)
        if reported["rows"] != n or reported["duplicates"] or reported["dead_lettered"]:
            raise BenchError(f"{side} loader reported {reported}, expected {n} rows")
    else:
        reported = last_json_line(run.stdout)
        if reported["rows"] != n or reported["skipped"]:
            raise BenchError(f"baseline loader reported {reported}, expected {n} rows")
        if reported.get("active_s"):
            extra["own_active_rows_per_s"] = round(n / reported["active_s"], 1)
    summary = table_summary(dsn)
    if summary["rows"] != n:
        raise BenchError(f"{side}: {summary['rows']} rows in the table, expected {n}")
    if name == "ecomlogs" and summary["distinct_event_ids"] != n:
        raise BenchError(f"{side}: {summary['distinct_event_ids']} distinct event ids for {n} rows")
    extra["table"] = summary
    rate = batch_rate(summary)
    if rate is not None:
        timing = ("rows of the batches before the second-to-last / (second-to-last batch's created_at - "
                  "first batch's)")
        span = n / rate
    else:
        span = max(run.wall_s - cfg.until_idle_s, 1e-6)
        rate = n / span
        timing = "single batch: rows / (process wall time - idle wait), start-up and group join included"
    extra["rows_per_s"] = rate
    return StageSample(n, span, run.cpu_s, run.max_rss_mib, timing=timing, pg_cpu_s=servers["postgres"],
                       broker_cpu_s=servers["broker"], extra=extra)


def load_with_copy(ws: Workspace, n: int, dsn: str, csv_path: Path) -> StageSample:
    """Server-side ``COPY ... FROM '<file>'`` of the same rows into the migrated (indexed) table, timed by the
    server: ``clock_timestamp()`` before and after the statement, in its transaction."""
    import ecomlogs

    ecomlogs.migrate(dsn)
    pids = ws.server_pids()
    conn = pg_connect(dsn, autocommit=False)
    try:
        with conn.cursor() as cur:
            before = server_cpu(pids)
            started = time.perf_counter()
            cur.execute("SELECT clock_timestamp()")
            t0 = cur.fetchone()[0]
            cur.execute(f"COPY {TABLE} ({COPY_COLUMNS}) FROM %s WITH (FORMAT csv)", (str(csv_path),))
            copied = cur.rowcount
            cur.execute("SELECT clock_timestamp()")
            t1 = cur.fetchone()[0]
            conn.commit()
            with_commit = time.perf_counter() - started
            servers = cpu_delta(before, server_cpu(pids))
    finally:
        conn.close()
    summary = table_summary(dsn)
    if copied != n or summary["rows"] != n or summary["distinct_event_ids"] != n:
        raise BenchError(f"COPY loaded {copied} rows ({summary['rows']} in the table), expected {n}")
    statement_s = (t1 - t0).total_seconds()
    return StageSample(n, statement_s, 0.0, None, timing="server: clock_timestamp() around the COPY statement",
                       pg_cpu_s=servers["postgres"], broker_cpu_s=None,
                       extra={"rows_per_s": n / statement_s, "with_commit_s": round(with_commit, 4),
                              "csv": str(csv_path)})


def run_load(cfg: BenchConfig, ws: Workspace) -> SectionResult:
    """Stage 3 alone: one clean topic (the raw topic validated by ecomlogs) loaded into a fresh database by
    ``psqlConsumer.py --batch-size 50000`` (ecomlogs), ``psqlConsumer.py`` at the original's 500, and
    ``baseline/psqlConsumer.py`` (execute_batch, 500 rows per commit); plus the physical limit, a server-side
    ``COPY FROM`` file of the same rows into the same indexed table.

    Throughput is measured in the database: every batch's rows share one ``created_at`` (the start of its
    transaction); see :func:`batch_rate`. That leaves out start-up, the group join, the first batch's
    filling, the last (partial, late) batch and the idle wait, the same way for every loader. Client CPU is the loader process's user+sys over its whole life; PostgreSQL CPU is the
    delta of all its processes over the loader's life.
    """
    clean, n = make_clean_topic(cfg, ws)
    csv_path = Path(tempfile.gettempdir()) / f"ecomlogs-bench-{ws.tag}.csv"

    def side(name: str) -> Callable[[], StageSample]:
        def measure() -> StageSample:
            dsn = ws.new_database(f"load_{name}")
            try:
                if name == "copy":
                    if not csv_path.is_file():
                        raise BenchError("the COPY file was not written (the ecomlogs load runs first in run 1)")
                    return load_with_copy(ws, n, dsn, csv_path)
                sample = load_with_loader(cfg, ws, name, clean, n, dsn)
                if name == "ecomlogs" and not csv_path.is_file():
                    ws.files.append(csv_path)
                    export_csv(dsn, csv_path)
                return sample
            finally:
                ws.drop_database(dsn)

        return measure

    runs = []
    for i in range(cfg.repeat):
        progress(f"load: run {i + 1}/{cfg.repeat} ({n:,} rows per loader; ecomlogs 50k, ecomlogs 500, baseline, COPY)")
        runs.append(alternate(i, {name: side(name) for name in LOAD_SIDES}))

    def rate(s: StageSample) -> Optional[float]:
        value = s.extra.get("rows_per_s")
        return float(value) if value is not None else None

    def pg_us(s: StageSample) -> Optional[float]:
        return s.pg_cpu_us_per_event

    rows: list[Row] = []
    for variant, label in (("ecomlogs", "batch 50,000"), ("ecomlogs_b500", "batch 500")):
        pairs = [{"ecomlogs": r[variant], "baseline": r["baseline"]} for r in runs]
        rows += compare("load", pairs, [
            (f"throughput, {label}", "rows/s", "higher", rate),
            (f"client CPU per row, {label}", "µs", "lower", lambda s: s.cpu_us_per_event),
            (f"PostgreSQL CPU per row, {label}", "µs", "lower", pg_us),
            (f"peak RSS, {label}", "MiB", "lower", lambda s: s.max_rss_mib),
        ])
    copy_rates = [rate(r["copy"]) or 0.0 for r in runs]
    references: list[dict[str, Any]] = [
        {"section": "load", "figure": "server-side COPY FROM file (statement time)", "unit": "rows/s",
         "value": median(copy_rates)},
        {"section": "load", "figure": "server-side COPY: PostgreSQL CPU per row", "unit": "µs",
         "value": median([v for v in (pg_us(r["copy"]) for r in runs) if v is not None]) if any(
             pg_us(r["copy"]) is not None for r in runs) else None},
    ]
    for variant, label in (("ecomlogs", "ecomlogs batch 50,000"), ("ecomlogs_b500", "ecomlogs batch 500"),
                           ("baseline", "baseline")):
        references.append({"section": "load", "figure": f"{label} / COPY", "unit": "ratio",
                           "value": median([(rate(r[variant]) or 0.0) / c for r, c in zip(runs, copy_rates) if c])})
    return SectionResult(
        details={
            "rows": n,
            "clean_topic": clean,
            "batch_sizes": {"ecomlogs": LOAD_BATCH, "ecomlogs_b500": ORIGINAL_BATCH, "baseline": ORIGINAL_BATCH},
            "timing": {k: v.timing for k, v in runs[0].items()},  
            "runs": _runs_json(runs),
        },
        rows=rows,
        references=references,
        markdown=[
            f"**load**: {n:,} valid events (one clean topic) into a fresh database per run. Rows/s measured in "
            "the table: `created_at` is the start of the inserting transaction, one value per batch; rows/s = "
            "rows of the batches before the second-to-last / (second-to-last batch's `created_at` - first "
            "batch's). That leaves out start-up, group join, the first batch's filling and the last (partial, "
            "late-written) batch and idle wait, the same way for every loader. ecomlogs writes each batch as one "
            "binary COPY transaction into the table with its unique key; the baseline (the original) uses "
            "`execute_batch` INSERTs, 500 rows per commit, into the original table without a unique key. "
            "COPY: server-side `COPY ... FROM` a CSV file of the same rows into the ecomlogs table (indexed), "
            "timed by the server (`clock_timestamp()` around the statement). Client CPU: the loader process's "
            "user+sys over its whole life / rows; PostgreSQL CPU: all its processes' CPU over the loader's life "
            "(`/proc`) / rows."
        ],
    )


# ---------------------------------------------------------------------------------------------- e2e
def e2e_timeout_s(n: int) -> float:
    return 180.0 + n / 2_000


def e2e_once(cfg: BenchConfig, ws: Workspace, side: str) -> StageSample:
    """The three stages of ``side`` at the same time on fresh topics and a fresh database: loader and
    processor first, the producer once both groups are stable; timed from the producer's start to the
    poll that sees the last valid row committed."""
    n = cfg.e2e_events
    pids = ws.server_pids()
    raw, clean, dlq = ws.new_topics(f"e2e_raw_{side}", f"e2e_clean_{side}", f"e2e_dlq_{side}")
    dsn = ws.new_database(f"e2e_{side}")
    proc_group, load_group = ws.name("e2e_proc"), ws.name("e2e_load")
    batch = LOAD_BATCH if side == "ecomlogs" else ORIGINAL_BATCH
    predicted = predicted_baseline_valid(cfg, ws, n) if side == "baseline" else None
    try:
        with contextlib.ExitStack() as stack:
            whole_before = server_cpu(pids)
            loader = stack.enter_context(Child(loader_cmd(cfg, side, clean, dlq, load_group, dsn, batch),
                                               cwd=cfg.repo_root, label=f"{side} loader"))
            processor = stack.enter_context(Child(processor_cmd(cfg, side, raw, clean, dlq, proc_group),
                                                  cwd=cfg.repo_root, label=f"{side} stream processor"))
            join_s = wait_for_groups(cfg.bootstrap_servers, [proc_group, load_group], [loader, processor])
            watch = RowWatch(dsn)
            stack.callback(watch.close)
            active_before = server_cpu(pids)
            t0 = time.time()
            producer = stack.enter_context(Child(producer_cmd(cfg, side, raw, n), cwd=cfg.repo_root,
                                                 label=f"{side} producer"))
            expected = predicted
            history: list[tuple[float, int]] = [(t0, 0)]
            deadline = t0 + e2e_timeout_s(n)
            while True:
                if expected is None and not producer.running():
                    produced = parse_produced(producer.wait(10).stderr)
                    if produced is not None:
                        expected = produced["valid"]
                if expected is None and not processor.running():
                    expected = parse_processed(processor.wait(10).stderr)["valid"]
                loader_done = not loader.running()  # checked before the poll, so the poll sees its last rows
                count = watch.rows(expected)
                now = time.time()
                if count != history[-1][1]:
                    history.append((now, count))
                if expected is not None and count >= expected:
                    break
                if loader_done:
                    break  # it gave up or went idle; the checks below say what is missing
                if now > deadline:
                    raise BenchError(f"{side} e2e: {count:,} rows after {now - t0:.0f} s, expected {expected}")
                time.sleep(ROW_POLL_S)
            active_servers = cpu_delta(active_before, server_cpu(pids))
            timeout = cfg.until_idle_s + 120
            runs = {"producer": producer.wait(timeout), "processor": processor.wait(timeout),
                    "loader": loader.wait(timeout)}
            whole_servers = cpu_delta(whole_before, server_cpu(pids))
        for stage, run in runs.items():
            _check_exit(run, f"{side} {stage}")
        if side == "ecomlogs":
            produced = parse_produced(runs["producer"].stderr)
            processed = parse_processed(runs["processor"].stderr)
            loaded = parse_loaded(runs["loader"].stderr)
            consumed, valid, loaded_rows = processed["consumed"], processed["valid"], loaded["rows"]
            if produced is not None and produced["valid"] != valid:
                raise BenchError(f"ecomlogs e2e: producer says {produced['valid']} valid, processor {valid}")
        else:
            produced = last_json_line(runs["producer"].stdout)
            processed = last_json_line(runs["processor"].stdout)
            loaded = last_json_line(runs["loader"].stdout)
            consumed, valid, loaded_rows = processed["consumed"], processed["valid"], loaded["rows"]
            if produced["produced"] != n or produced["failed"] or processed["failed"]:
                raise BenchError(f"baseline e2e: producer {produced}, processor {processed}")
            if predicted != valid:
                raise BenchError(f"baseline e2e: processor forwarded {valid}, {predicted} predicted from the seed")
        summary = table_summary(dsn)
        if consumed != n or loaded_rows != valid or summary["rows"] != valid:
            raise BenchError(f"{side} e2e: {n} produced, {consumed} processed, {valid} valid, {loaded_rows} "
                             f"loaded, {summary['rows']} rows in the table")
        if side == "ecomlogs" and summary["distinct_event_ids"] != summary["rows"]:
            raise BenchError(f"ecomlogs e2e: {summary['rows']} rows but {summary['distinct_event_ids']} event ids")
        t_end = next((t for t, c in history if c >= valid), history[-1][0])
        full = valid - valid % batch
        t_full = next((t for t, c in history if c >= full), t_end)
    finally:
        ws.drop_topics([raw, clean, dlq])
        ws.drop_database(dsn)
    stage_cpu = sum(r.cpu_s for r in runs.values())
    return StageSample(
        n, t_end - t0, stage_cpu, max(r.max_rss_mib for r in runs.values()),
        timing="producer start -> first row-count poll (every 50 ms) seeing every valid event as a row",
        pg_cpu_s=active_servers["postgres"], broker_cpu_s=active_servers["broker"],
        extra={
            "valid": valid,
            "rows": summary["rows"],
            "distinct_event_ids": summary["distinct_event_ids"],
            "loader_batch_size": batch,
            "join_wait_s": round(join_s, 3),
            "t0_epoch": t0,
            "t_end_epoch": t_end,
            "to_last_row_s": round(t_end - t0, 3),
            "to_last_full_batch_s": round(t_full - t0, 3),
            "raw_events_per_s_to_last_full_batch": round(n / (t_full - t0), 1) if t_full > t0 else None,
            "processes": {k: r.usage() for k, r in runs.items()},
            "servers_active_window": active_servers,
            "servers_whole_run": whole_servers,
        },
    )


def run_defaults(cfg: BenchConfig, ws: Workspace) -> SectionResult:
    """The e2e run again, the ecomlogs scripts with no tuning flags at all (no ``--workers``,
    ``--batch-size``, ``--flush-interval-ms``): what a user who runs them as the README shows gets."""
    return run_e2e(dataclasses.replace(cfg, defaults_only=True), ws, name="defaults")


def run_e2e(cfg: BenchConfig, ws: Workspace, name: str = "e2e") -> SectionResult:
    """The whole pipeline at once: N raw events produced while the processor and the loader run, for ecomlogs
    (the three root scripts, loader ``--batch-size 50000``) and for the baseline (its three scripts).

    Throughput = raw events / (producer start -> last valid row committed), polled every 50 ms. CPU per
    million raw events: the three stage processes (user+sys over their whole lives), and separately the broker
    and PostgreSQL (``/proc`` deltas over the same window as the throughput). Counts are checked: every event
    consumed, rows == valid events, and (ecomlogs) one row per event id.
    """
    n = cfg.e2e_events
    predicted_baseline_valid(cfg, ws, n)  # untimed preparation, before any run
    runs = []
    for i in range(cfg.e2e_repeat):
        progress(f"{name}: run {i + 1}/{cfg.e2e_repeat} ({n:,} raw events per side)")
        runs.append(alternate(i, {"ecomlogs": lambda: e2e_once(cfg, ws, "ecomlogs"),
                                  "baseline": lambda: e2e_once(cfg, ws, "baseline")}))

    def per_million(get: Callable[[StageSample], Optional[float]]) -> Callable[[StageSample], Optional[float]]:
        def per(s: StageSample) -> Optional[float]:
            value = get(s)
            return value * 1e6 / s.count if value is not None and s.count else None

        return per

    def total(s: StageSample) -> Optional[float]:
        if s.pg_cpu_s is None or s.broker_cpu_s is None:
            return None
        return s.cpu_s + s.pg_cpu_s + s.broker_cpu_s

    def rss(stage: str) -> Callable[[StageSample], Optional[float]]:
        return lambda s: float(s.extra["processes"][stage]["max_rss_mib"])

    rows = compare(name, runs, [
        ("throughput", "raw events/s", "higher", lambda s: s.events_per_s),
        ("throughput to the last full batch", "raw events/s", "higher",
         lambda s: s.extra.get("raw_events_per_s_to_last_full_batch")),
        ("stage CPU per 1M raw events (3 processes)", "s", "lower", per_million(lambda s: s.cpu_s)),
        ("broker CPU per 1M raw events", "s", "lower", per_million(lambda s: s.broker_cpu_s)),
        ("PostgreSQL CPU per 1M raw events", "s", "lower", per_million(lambda s: s.pg_cpu_s)),
        ("total CPU per 1M raw events", "s", "lower", per_million(total)),
        ("peak RSS, producer", "MiB", "lower", rss("producer")),
        ("peak RSS, processor", "MiB", "lower", rss("processor")),
        ("peak RSS, loader", "MiB", "lower", rss("loader")),
    ])
    # Per-process CPU table (medians over the runs), the profile's input.
    lines = ["| process | ecomlogs CPU s | ecomlogs % | baseline CPU s | baseline % |", "|---|---:|---:|---:|---:|"]
    shares: dict[str, dict[str, float]] = {}
    for side_name in ("ecomlogs", "baseline"):
        per: dict[str, float] = {}
        for proc in ("producer", "processor", "loader"):
            per[proc] = median([r[side_name].extra["processes"][proc]["cpu_s"] for r in runs])  
        per["broker"] = median([r[side_name].broker_cpu_s or 0.0 for r in runs])  
        per["PostgreSQL"] = median([r[side_name].pg_cpu_s or 0.0 for r in runs])  
        shares[side_name] = per
    for proc in ("producer", "processor", "loader", "broker", "PostgreSQL"):
        cells = []
        for side_name in ("ecomlogs", "baseline"):
            tot = sum(shares[side_name].values()) or 1.0
            cells += [f"{shares[side_name][proc]:.2f}", f"{100 * shares[side_name][proc] / tot:.0f}%"]
        lines.append(f"| {proc} | " + " | ".join(cells) + " |")
    wall = {s: median([r[s].wall_s for r in runs]) for s in ("ecomlogs", "baseline")}
    lines.append(f"| *wall time, producer start -> last row* | {wall['ecomlogs']:.2f} | | {wall['baseline']:.2f} | |")
    return SectionResult(
        details={
            "events": n,
            "loader_batch_size": {"ecomlogs": LOAD_BATCH, "baseline": ORIGINAL_BATCH},
            "timing": runs[0]["ecomlogs"].timing,  
            "cpu_seconds_median": shares,
            "runs": _runs_json(runs),
        },
        rows=rows,
        markdown=[
            f"**{name}**: {n:,} raw events through producer, processor and loader running at the same time "
            f"(median of {cfg.e2e_repeat} run(s)); "
            + ("ecomlogs scripts with their defaults only (no tuning flags), baseline 500. " if cfg.defaults_only
               else f"ecomlogs loader `--batch-size {LOAD_BATCH}`, baseline 500. ") +
            "Throughput = raw events / (producer start -> the 50 ms row-count poll that first sees every valid "
            "event as a row). Stage CPU = user+sys of the three processes over their whole lives; broker and "
            "PostgreSQL CPU = `/proc` deltas (PostgreSQL: postmaster, its children, and exited children) over "
            "the throughput window. The last partial batch is written late by design: ecomlogs after its "
            "`--flush-interval-ms` (1 s), the baseline only when its loader goes idle and exits (`--until-idle "
            f"{cfg.until_idle_s:g}`), as in the original; `to_last_full_batch_s` in the JSON leaves that out.",
            "CPU seconds per process (median):\n\n" + "\n".join(lines),
        ],
    )


# ---------------------------------------------------------------------------------------------- latency
def latency_once(cfg: BenchConfig, ws: Workspace, side: str, rate: int, seconds: float) -> dict[str, Any]:
    """One paced run: loader and processor first, then ``rate`` events/s for ``seconds``; rows may arrive
    until every valid event is a row (ecomlogs, bounded) or the cut-off (producer end + grace); then both
    consumers get a Ctrl-C (the baseline loader writes what it still buffers: 'flushed at shutdown')."""
    n = max(1, round(rate * seconds))
    batch = LOAD_BATCH if side == "ecomlogs" and rate >= 10_000 else ORIGINAL_BATCH
    raw, clean, dlq = ws.new_topics(f"lat_raw_{side}", f"lat_clean_{side}", f"lat_dlq_{side}")
    dsn = ws.new_database(f"lat_{side}")
    proc_group, load_group = ws.name("lat_proc"), ws.name("lat_load")
    expected = predicted_baseline_valid(cfg, ws, n) if side == "baseline" else None
    # The consumers must not stop on their own when the producer pauses or ends (an idle exit would flush the
    # baseline's partial batch early): they get a Ctrl-C at the cut-off; the long idle limit is a safety net.
    idle = seconds + 300.0
    try:
        with contextlib.ExitStack() as stack:
            loader = stack.enter_context(Child(loader_cmd(cfg, side, clean, dlq, load_group, dsn, batch, idle),
                                               cwd=cfg.repo_root, label=f"{side} loader"))
            processor = stack.enter_context(Child(processor_cmd(cfg, side, raw, clean, dlq, proc_group,
                                                                until_idle_s=idle),
                                                  cwd=cfg.repo_root, label=f"{side} stream processor"))
            wait_for_groups(cfg.bootstrap_servers, [proc_group, load_group], [loader, processor])
            watch = RowWatch(dsn)
            stack.callback(watch.close)
            t0 = time.time()
            prun = Child(producer_cmd(cfg, side, raw, n, rate=rate), cwd=cfg.repo_root,
                         label=f"{side} producer").wait(seconds * 3 + 120)
            _check_exit(prun, f"{side} producer")
            produced_at = time.time()
            if side == "ecomlogs":
                produced = parse_produced(prun.stderr)
                expected = produced["valid"] if produced else None
                producer_s = produced["elapsed_s"] if produced else prun.wall_s
            else:
                producer_s = last_json_line(prun.stdout)["elapsed_s"]
            grace = cfg.latency_grace_s if side == "baseline" else 60.0
            while time.time() < produced_at + grace:
                if expected is not None and watch.rows(expected) >= expected:
                    break
                time.sleep(ROW_POLL_S)
            cut_off = time.time()
            arrived_rows = watch.rows()
            # Ctrl-C to both at once (the baseline loader then writes what it buffers, as the original does).
            processor.interrupt()
            loader.interrupt()
            stopped: dict[str, tuple[Optional[ChildRun], str]] = {"processor": processor.stop(), "loader": loader.stop()}
        proc_run = stopped["processor"][0]
        valid: Optional[int] = None
        if proc_run is not None:
            if side == "ecomlogs":
                valid = parse_processed(proc_run.stderr)["valid"]
            else:
                valid = last_json_line(proc_run.stdout)["valid"]
        if expected is not None and valid is not None and valid != expected:
            raise BenchError(f"{side} latency @ {rate}/s: processor forwarded {valid}, expected {expected}")
        valid = valid if valid is not None else expected
        if valid is None:
            raise BenchError(f"{side} latency @ {rate}/s: no count of valid events (producer and processor silent)")
        cut = datetime.fromtimestamp(cut_off, timezone.utc).replace(tzinfo=None)
        arrived = latency_stats(dsn, "created_at <= %s", [cut])
        late = latency_stats(dsn, "created_at > %s", [cut])
        summary = table_summary(dsn)
    finally:
        ws.drop_topics([raw, clean, dlq])
        ws.drop_database(dsn)
    if side == "ecomlogs" and (summary["rows"] != valid or summary["distinct_event_ids"] != valid):
        raise BenchError(f"ecomlogs latency @ {rate}/s: {summary['rows']} rows "
                         f"({summary['distinct_event_ids']} distinct) for {valid} valid events")
    return {
        "rate": rate,
        "seconds": seconds,
        "events": n,
        "valid": valid,
        "producer_elapsed_s": round(producer_s, 3),
        "achieved_rate": round(n / producer_s, 1) if producer_s else None,
        "loader_batch_size": batch,
        "loader_flush_interval_ms": int(S.DEFAULTS['load']['flush_interval_ms']) if side == "ecomlogs" else None,
        "cut_off_after_producer_s": round(cut_off - produced_at, 3),
        "rows_seen_at_cut_off": arrived_rows,
        "arrived": arrived,
        "flushed_at_shutdown": late,
        "rows_total": summary["rows"],
        "arrived_share": arrived["rows"] / valid if valid else None,
        "processes": {k: (r.usage() if r else None) for k, (r, _how) in stopped.items()},
        "stopped_by": {k: how for k, (_r, how) in stopped.items()},
    }


def _latency_retry(cfg: BenchConfig, ws: Workspace, side: str, rate: int, seconds: float) -> dict[str, Any]:
    """:func:`latency_once`, retried once after a failure (a long paced run on a shared machine can be hit by
    something else; a second failure stops the section). A retried run says so (``retried_after``)."""
    try:
        return latency_once(cfg, ws, side, rate, seconds)
    except BenchError as e:
        log.warning("latency %s @ %d/s failed, retrying once: %s", side, rate, e)
        result = latency_once(cfg, ws, side, rate, seconds)
        result["retried_after"] = str(e)
        return result


def run_latency(cfg: BenchConfig, ws: Workspace) -> SectionResult:
    """Event-to-row latency at fixed producer rates: ``created_at - event_timestamp`` per row, where
    ``event_timestamp`` is when the producer made the event and ``created_at`` the start of the loader's
    inserting transaction (so a batch's commit time is not included). p50/p99 by ``percentile_cont``.

    ecomlogs runs every rate (loader default ``--batch-size 500 --flush-interval-ms 1000``; 50,000 rows a
    batch at 10,000/s and above); the baseline the rates in :data:`BASELINE_LATENCY_RATES` (its producer
    sleeps ``1000/rate`` ms between events; its loader writes only full 500-row batches)."""
    rates = cfg.latency_rates
    if any(r in BASELINE_LATENCY_RATES for r, _ in rates):
        for r, s in rates:
            if r in BASELINE_LATENCY_RATES:
                predicted_baseline_valid(cfg, ws, max(1, round(r * s)))
    results: dict[str, list[dict[str, Any]]] = {}
    for rate, seconds in rates:
        key = str(rate)
        results[key] = []
        for i in range(cfg.latency_repeat):
            progress(f"latency: {rate:,}/s for {seconds:g} s, run {i + 1}/{cfg.latency_repeat}")
            sides: dict[str, Callable[[], Any]] = {"ecomlogs": partial(_latency_retry, cfg, ws, "ecomlogs", rate, seconds)}
            if rate in BASELINE_LATENCY_RATES:
                sides["baseline"] = partial(_latency_retry, cfg, ws, "baseline", rate, seconds)
            results[key].append(alternate(i, sides))

    rows: list[Row] = []
    md = ["| rate | side | events (achieved rate) | rows by cut-off / valid | p50 s | p99 s | max s | "
          "flushed at shutdown (p50 s) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for rate, _seconds in rates:
        runs = results[str(rate)]

        def get(side: str, what: Callable[[dict[str, Any]], Optional[float]]) -> list[Optional[float]]:
            return [what(r[side]) if side in r else None for r in runs]

        for metric, unit, better, what in (
            ("p50", "s", "lower", lambda d: d["arrived"]["p50_s"]),
            ("p99", "s", "lower", lambda d: d["arrived"]["p99_s"]),
            ("rows arrived by the cut-off", "% of valid", "higher",
             lambda d: 100.0 * d["arrived_share"] if d["arrived_share"] is not None else None),
        ):
            row = compare_values("latency", f"{metric} @ {rate:,}/s", unit, better,
                                 list(zip(get("ecomlogs", what), get("baseline", what))))
            if row is not None:
                rows.append(row)
        for side in ("ecomlogs", "baseline"):
            if side not in runs[0]:
                continue
            d = runs[len(runs) // 2][side]  # one representative run for the detail table

            def f(v: Optional[float]) -> str:
                return "-" if v is None else f"{v:.3f}"

            md.append(f"| {rate:,}/s | {side} | {d['events']:,} ({d['achieved_rate'] or 0:,.0f}/s) | "
                      f"{d['arrived']['rows']:,} / {d['valid']:,} | {f(d['arrived']['p50_s'])} | "
                      f"{f(d['arrived']['p99_s'])} | {f(d['arrived']['max_s'])} | "
                      f"{d['flushed_at_shutdown']['rows']:,} ({f(d['flushed_at_shutdown']['p50_s'])}) |")
    forced = sorted({f"{side} {proc} ({how})" for runs in results.values() for r in runs for side, d in r.items()
                     for proc, how in d["stopped_by"].items() if how != "SIGINT"})
    if forced:
        md.append("\nNot stopped by Ctrl-C (SIGINT) within 45 s, so stopped by the signal shown: " + ", ".join(forced))
    return SectionResult(
        details={
            "rates": [{"rate": r, "seconds": s} for r, s in rates],
            "baseline_rates": [r for r, _ in rates if r in BASELINE_LATENCY_RATES],
            "grace_s": cfg.latency_grace_s,
            "latency": "created_at (start of the loader's inserting transaction, UTC) - event_timestamp "
                       "(set by the producer, UTC)",
            "runs": results,
        },
        rows=rows,
        markdown=[
            "**latency**: per row, `created_at - event_timestamp`: from the producer making the event to the "
            "start of the loader transaction that inserted it (both UTC; commit time not included); p50/p99 "
            "by `percentile_cont` over the rows that arrived by the cut-off. Consumers join first; the producer "
            f"then runs at the fixed rate. Cut-off: every valid event a row (ecomlogs, at most 60 s after the "
            f"producer ends) or {cfg.latency_grace_s:g} s after the producer's last event (baseline). The "
            "baseline loader only writes full batches of 500, so at 2/s nothing arrives by the cut-off (that is "
            "the original design); what it still buffers is written when it is stopped and is listed as "
            "'flushed at shutdown', not counted in p50/p99. ecomlogs loader: `--batch-size 500 "
            "--flush-interval-ms 1000` (its defaults), 50,000 at 50,000/s. Representative run:",
            "\n".join(md),
        ],
    )


# ---------------------------------------------------------------------------------------------- contracts
CONTRACT_SIDES = ("default", "default_schema", "shop")
CONTRACT_LABELS = {
    "default": "default contract (typed)",
    "default_schema": "default rules via JSON Schema",
    "shop": "shop contract (examples/shop.json)",
}
CONTRACT_LOOPS = (
    ("typed_canonical", "today's typed validator"),
    ("contract_default", "default contract (typed)"),
    ("contract_default_schema", "default rules via JSON Schema"),
    ("contract_shop", "shop contract"),
)


def run_contracts(cfg: BenchConfig, ws: Workspace) -> SectionResult:
    """Event contracts: the shared raw topic through ``streamProcessor.py`` under the default contract (no
    flag: the typed validator, which is today's), the default's rules through their JSON Schema (a copy of
    ``contracts/default.json`` under another ``$id``, so it is not recognised as the default) and the example
    shop contract; each a fresh process with its own group and output topics, measured like ``process``.
    Then the validators alone, as Rust loops over the same generated events (validation and the canonical
    JSON of each valid event), today's typed validator beside each contract."""
    raw, n = shared_raw_topic(cfg, ws)
    folder = Path(tempfile.mkdtemp(prefix="ecomlogs-contracts-"))
    copy = folder / "default-schema.json"
    copy.write_text((cfg.repo_root / "contracts" / "default.json").read_text().replace("default:v1", "default:v1-schema"))
    files: dict[str, Optional[Path]] = {"default": None, "default_schema": copy,
                                        "shop": cfg.repo_root / "contracts" / "examples" / "shop.json"}

    def side(name: str) -> Callable[[], StageSample]:
        def measure() -> StageSample:
            clean, dlq = ws.new_topics(f"contract_clean_{name}", f"contract_dlq_{name}")
            try:
                run = run_child(processor_cmd(cfg, "ecomlogs", raw, clean, dlq, ws.name("contract_group"),
                                              quiet=False, contract=files[name]), cwd=cfg.repo_root)
                _check_exit(run, f"stream processor ({name} contract)")
                counts = parse_processed(run.stderr)
                if counts["consumed"] != n or counts["valid"] + counts["invalid"] != n:
                    raise BenchError(f"stream processor ({name} contract): {counts}, expected {n} consumed")
                out = topic_stats(cfg.bootstrap_servers, clean, counts["valid"])
                dead = topic_stats(cfg.bootstrap_servers, dlq, counts["invalid"])
                if (out.count, dead.count) != (counts["valid"], counts["invalid"]):
                    raise BenchError(f"{name} contract: {out.count} clean and {dead.count} dead letters, "
                                     f"expected {counts['valid']} and {counts['invalid']}")
                stamps = [s for s in (out.max_ts_ms, dead.max_ts_ms) if s is not None]
                start = first_assignment_time(run.stderr)
                if start is None:
                    start = min(s for s in (out.min_ts_ms, dead.min_ts_ms) if s is not None) / 1000
                return StageSample(n, max(stamps) / 1000 - start, run.cpu_s, run.max_rss_mib,
                                   timing="partition assignment -> last output record's CreateTime",
                                   extra={"valid": counts["valid"], "invalid": counts["invalid"]})
            finally:
                ws.drop_topics([clean, dlq])

        return measure

    runs = []
    try:
        for i in range(cfg.repeat):
            progress(f"contracts: run {i + 1}/{cfg.repeat} ({n:,} events, {len(CONTRACT_SIDES)} contracts)")
            runs.append(alternate(i, {name: side(name) for name in CONTRACT_SIDES}))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    agree = runs[0]["default"].extra["valid"] == runs[0]["default_schema"].extra["valid"]
    if not agree:
        raise BenchError(f"the default contract and its schema disagree: {runs[0]['default'].extra} vs "
                         f"{runs[0]['default_schema'].extra}")
    rows: list[Row] = []
    for name in ("default_schema", "shop"):
        pairs = [{"ecomlogs": r[name], "baseline": r["default"]} for r in runs]
        for row in compare("contracts", pairs, THROUGHPUT_AND_CPU):
            rows.append(dataclasses.replace(row, metric=f"process, {CONTRACT_LABELS[name]} vs default contract: "
                                                        f"{row.metric}"))
    references = [{"section": "contracts", "figure": f"process, {CONTRACT_LABELS[name]}", "unit": "events/s",
                   "value": median([r[name].events_per_s for r in runs])} for name in CONTRACT_SIDES]
    loops = contract_loops(cfg)
    references.extend(loops["references"])
    rows.extend(loops["rows"])
    return SectionResult(
        details={"events": n, "raw_topic": raw, "runs": _runs_json(runs), "loops": loops["runs"]},
        rows=rows,
        references=references,
        markdown=[
            f"**contracts**: {n:,} raw events, the topic of `process`, through the ecomlogs stream processor under "
            "three contracts: the shipped default (run as today's typed validator), the same rules through their "
            "JSON Schema (a renamed copy of `contracts/default.json`), and `contracts/examples/shop.json`; the "
            "baseline column holds the default contract's figure. The Rust loops validate the same generated "
            "events and write the canonical JSON of each valid one (the first two alternate five times each and "
            "keep their least wall and CPU time); their baseline column is today's typed validator."
        ],
    )


def contract_loops(cfg: BenchConfig) -> dict[str, Any]:
    """The validators alone (``examples/bench_core.rs``): today's typed validator, the default contract, its
    rules through the schema, the shop contract. Median of ``--repeat`` runs, ratios within each run."""
    cmd = ["cargo", "run", "--quiet", "--release", "--no-default-features", "--example", "bench_core", "--",
           str(cfg.events), "1"]
    runs = []
    for _ in range(cfg.repeat):
        done = subprocess.run(cmd, cwd=cfg.repo_root, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise BenchError(f"bench_core failed: {done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows, references = [], []
    for key, label in CONTRACT_LOOPS:
        samples = [{"ecomlogs": Sample(r[key][0], r[key][1], r[key][2]),
                    "baseline": Sample(r["typed_canonical"][0], r["typed_canonical"][1], r["typed_canonical"][2])}
                   for r in runs]
        references.append({"section": "contracts", "figure": f"validation + canonical JSON, Rust loop: {label}",
                           "unit": "events/s", "value": median([s["ecomlogs"].events_per_s for s in samples])})
        if key != "typed_canonical":
            for row in compare("contracts", samples, THROUGHPUT_AND_CPU):
                rows.append(dataclasses.replace(
                    row, metric=f"Rust loop, {label} vs today's validator: {row.metric}"))
    return {"rows": rows, "references": references, "runs": runs}


def run_history(cfg: BenchConfig, ws: Workspace) -> SectionResult:
    """History at growing sizes, the current design beside the new one: ``bench/history.py``."""
    import history  # bench/ is on sys.path (this script's folder)

    return history.run_history(cfg, ws)


SECTIONS: dict[str, Callable[[BenchConfig, Workspace], SectionResult]] = {
    "stage1": run_stage1,
    "process": run_process,
    "load": run_load,
    "e2e": run_e2e,
    "defaults": run_defaults,
    "latency": run_latency,
    "contracts": run_contracts,
    "history": run_history,
}
"""Implemented sections, in the order they run."""
DEFAULT_SECTIONS: tuple[str, ...] = tuple(s for s in SECTIONS if s != "history")
"""What runs without ``--sections``: ``history`` builds tables of up to 30M rows (about 40 min), so only
when named."""
PLANNED: tuple[str, ...] = ()
"""Sections named in the plan but not written yet."""


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: Optional[float]) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table: section, metric, ecomlogs, baseline, ratio."""
    lines = ["| section | metric | ecomlogs | baseline | ratio |", "|---|---|---:|---:|---:|"]
    for r in rows:
        arrow = "↑" if r.better == "higher" else "↓"
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}×"
        lines.append(
            f"| {r.section} | {r.metric} ({r.unit}, {arrow} better) | {_fmt(r.ecomlogs)} | {_fmt(r.baseline)} "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def references_table(references: Sequence[dict[str, Any]]) -> str:
    lines = ["| section | figure | value |", "|---|---|---:|"]
    for ref in references:
        unit = "" if ref["unit"] == "ratio" else f" {ref['unit']}"
        value = f"{ref['value']:.3g}×" if ref["unit"] == "ratio" else _fmt(ref["value"])
        lines.append(f"| {ref['section']} | {ref['figure']} | {value}{unit} |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any], rows: Sequence[Row], sections: Optional[dict[str, SectionResult]] = None) -> str:
    host, config = report["host"], report["config"]
    sizes = [f"{config['events']:,} (generate/validate)", f"{config['produce_events']:,} (produce)"]
    if "process_events" in config:
        sizes += [f"{config['process_events']:,} (process/load raw)", f"{config['e2e_events']:,} (e2e raw)"]
    parts = [
        "# ecomlogs benchmark",
        "",
        f"{report['created_utc']}, {host['cpus']} CPUs, Python {host['python']}, ecomlogs {host['ecomlogs']}, "
        f"librdkafka {host['librdkafka']}, load average at start {host['loadavg']}",
        "",
        f"Sections: {', '.join(config['sections'])}. Events: {', '.join(sizes)}; median of {config['repeat']} "
        f"run(s) (e2e {config.get('e2e_repeat', config['repeat'])}, latency "
        f"{config.get('latency_repeat', config['repeat'])}); ratio = ecomlogs / baseline, the median of per-run "
        "ratios.",
        "",
        f"ecomlogs stream processor: {config.get('processor_workers', 1)} worker(s); loader: "
        f"{config.get('loader_workers', 1)} worker(s). The baseline runs one process per stage, as the original."
        + (" Metrics endpoints on, each scraped once a second." if config.get("metrics") else ""),
        "",
        *([markdown_table(rows), ""] if rows else []),
    ]
    if report.get("errors"):
        parts += ["**Failed sections** (their figures are missing): "
                  + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in report["errors"].items()), ""]
    if report.get("native_module_changed_during_run"):
        parts += ["**Warning**: the native module `ecomlogs._core` was rebuilt during this run, so figures may "
                  "mix two builds.", ""]
    references = report.get("references") or []
    if references:
        parts += ["Reference figures (not an ecomlogs/baseline pair):", "", references_table(references), ""]
    if report.get("chart"):
        parts += [f"![throughput and latency]({Path(report['chart']).name})", ""]
    parts += [
        "Baseline: the original design in pure Python (`baseline/`). Generation and validation are timed "
        "in-process (CPU = `time.process_time`); producing runs each side as a subprocess (wall time including "
        "interpreter start-up; CPU = the child's user+sys, peak RSS its `ru_maxrss`, both from `wait4`).",
        "",
    ]
    for result in (sections or {}).values():
        for block in result.markdown:
            parts += [block, ""]
    return "\n".join(parts)


def _find(rows: Sequence[dict[str, Any]], section: str, metric: str) -> Optional[dict[str, Any]]:
    return next((r for r in rows if r["section"] == section and r["metric"] == metric), None)


def write_chart(report: dict[str, Any], path: Path) -> Optional[Path]:
    """``latest.png``: throughput per stage (ecomlogs vs baseline, log scale) and latency p50/p99 per rate.
    None when matplotlib is missing or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart")
        return None
    table = report["table"]
    stages = [("stage1/produce", "throughput", "produce"), ("process", "throughput", "process"),
              ("load", "throughput, batch 50,000", "load\n(batch 50k)"), ("load", "throughput, batch 500", "load\n(batch 500)"),
              ("e2e", "throughput", "end to end\n(raw events)")]
    bars: list[tuple[str, dict[str, Any]]] = []
    for s, m, label in stages:
        found = _find(table, s, m)
        if found is not None:
            bars.append((label, found))
    latency = [r for r in table if r["section"] == "latency" and r["metric"][:3] in ("p50", "p99")]
    if not bars and not latency:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {"ecomlogs": "#1f77b4", "baseline": "#ff7f0e", "COPY": "#7f7f7f"}
    if bars:
        x = range(len(bars))
        width = 0.38
        left.bar([i - width / 2 for i in x], [r["ecomlogs"] for _, r in bars], width, label="ecomlogs",
                 color=colours["ecomlogs"])
        left.bar([i + width / 2 for i in x], [r["baseline"] or 0 for _, r in bars], width, label="baseline",
                 color=colours["baseline"])
        for i, (_, r) in enumerate(bars):
            if r["ratio"]:
                left.annotate(f"{r['ratio']:.2g}×", (i, max(r["ecomlogs"], r["baseline"] or 0)), ha="center",
                              va="bottom", fontsize=9, xytext=(0, 3), textcoords="offset points")
        copy = next((ref for ref in report.get("references", []) if ref["figure"].startswith("server-side COPY FROM")),
                    None)
        if copy is not None and any(label.startswith("load") for label, _ in bars):
            left.axhline(copy["value"], color=colours["COPY"], linestyle="--", linewidth=1,
                         label=f"COPY FROM file ({copy['value']:,.0f} rows/s)")
        left.set_xticks(list(x))
        left.set_xticklabels([label for label, _ in bars], fontsize=9)
        left.set_yscale("log")
        left.set_ylabel("events (rows) per second, log scale")
        left.set_title("Throughput per stage")
        left.legend(fontsize=8)
        left.grid(axis="y", which="both", alpha=0.3)
    else:
        left.text(0.5, 0.5, "throughput sections not run", ha="center", va="center")
        left.set_axis_off()
    if latency:
        rates = sorted({r["metric"].split("@ ")[1] for r in latency}, key=lambda s: int(s.split("/")[0].replace(",", "")))
        series = [("ecomlogs", "p50"), ("ecomlogs", "p99"), ("baseline", "p50"), ("baseline", "p99")]
        width = 0.2
        drawn = [v for r in latency for v in (r["ecomlogs"], r["baseline"]) if v]
        bottom = min(drawn) / 3 if drawn else 0.01
        for k, (side, stat) in enumerate(series):
            values, positions = [], []
            for i, rate in enumerate(rates):
                row = _find(latency, "latency", f"{stat} @ {rate}")
                value = row[side] if row else None
                pos = i + (k - 1.5) * width
                if value:
                    values.append(value)
                    positions.append(pos)
                    right.annotate(f"{value:.2g}", (pos, value), ha="center", va="bottom", fontsize=7,
                                   xytext=(0, 2), textcoords="offset points")
                elif side == "baseline" and stat == "p50":
                    arrived = _find(table, "latency", f"rows arrived by the cut-off @ {rate}")
                    note = "baseline:\nno row by\nthe cut-off" if arrived and arrived["baseline"] == 0 else "baseline:\nnot run"
                    right.annotate(note, (pos + width / 2, bottom), ha="center", va="bottom", fontsize=7,
                                   xytext=(0, 3), textcoords="offset points")
            right.bar(positions, [v - bottom for v in values], width, bottom=bottom, label=f"{side} {stat}",
                      color=colours[side], alpha=1.0 if stat == "p50" else 0.55, hatch="" if stat == "p50" else "//")
        right.set_xticks(list(range(len(rates))))
        right.set_xticklabels(rates)
        right.set_yscale("log")
        right.set_ylim(bottom=bottom, top=(max(drawn) if drawn else 1.0) * 4)
        right.set_xlim(-0.5, len(rates) - 0.5)
        right.set_ylabel("event -> row latency, s (log scale)")
        right.set_title("Latency at fixed producer rates (p50, p99)")
        right.legend(fontsize=8, loc="upper left", ncol=2)
        right.grid(axis="y", which="both", alpha=0.3)
    else:
        right.text(0.5, 0.5, "latency section not run", ha="center", va="center")
        right.set_axis_off()
    fig.suptitle(f"ecomlogs vs baseline (original design) - {report['created_utc']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def native_module_info() -> Optional[dict[str, Any]]:
    """Path, modification time and hash prefix of ``ecomlogs._core`` (to notice a rebuild during a run)."""
    import hashlib

    from ecomlogs import _core

    path = Path(getattr(_core, "__file__", "") or "")
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"path": str(path), "mtime_utc": stamp, "sha256_12": digest}


def host_info() -> dict[str, Any]:
    import ecomlogs

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ecomlogs": ecomlogs.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "librdkafka": None,
        "confluent_kafka": None,
        "git_commit": None,
    }
    info["native_module"] = native_module_info()
    try:
        import confluent_kafka

        version, libversion = confluent_kafka.version(), confluent_kafka.libversion()
        info["confluent_kafka"] = version[0] if isinstance(version, tuple) else version
        info["librdkafka"] = libversion[0] if isinstance(libversion, tuple) else libversion
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def write_results(cfg: BenchConfig, report: dict[str, Any], rows: Sequence[Row],
                  sections: Optional[dict[str, SectionResult]] = None) -> tuple[Path, Path, Path]:
    """Writes ``<stamp>.json``, ``latest.json``, ``latest.md`` and ``latest.png`` into ``cfg.out``."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.strptime(report["created_utc"], "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%dT%H%M%SZ")
    chart = None
    try:
        chart = write_chart(report, cfg.out / "latest.png")
    except Exception as e:  # noqa: BLE001 - a chart problem must not lose the figures
        log.warning("could not draw the chart: %s", e)
    report["chart"] = str(chart) if chart else None
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    dated = cfg.out / f"{stamp}.json"
    latest_json = cfg.out / "latest.json"
    latest_md = cfg.out / "latest.md"
    dated.write_text(text, encoding="utf-8")
    latest_json.write_text(text, encoding="utf-8")
    latest_md.write_text(markdown_report(report, rows, sections), encoding="utf-8")
    return dated, latest_json, latest_md


def run(cfg: BenchConfig) -> dict[str, Any]:
    """Runs the configured sections; returns the report that was written."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": created,
        "host": host_info(),
        "config": {
            "events": cfg.events,
            "produce_events": cfg.produce_events,
            "process_events": cfg.process_events,
            "e2e_events": cfg.e2e_events,
            "repeat": cfg.repeat,
            "e2e_repeat": cfg.e2e_repeat,
            "latency_repeat": cfg.latency_repeat,
            "latency_rates": [{"rate": r, "seconds": s} for r, s in cfg.latency_rates],
            "until_idle_s": cfg.until_idle_s,
            "processor_workers": cfg.processor_workers,
            "metrics": cfg.metrics,
            "loader_workers": cfg.loader_workers,
            "sections": list(cfg.sections),
            **({"history_rows": list(cfg.history_rows), "history_new_rows": cfg.history_new_rows,
                "history_window_s": cfg.history_window_s} if "history" in cfg.sections else {}),
            "small": cfg.small,
            "bootstrap_servers": cfg.bootstrap_servers,
        },
        "sections": {},
        "table": [],
        "references": [],
        "section_duration_s": {},
    }
    rows: list[Row] = []
    results: dict[str, SectionResult] = {}
    started = time.perf_counter()
    ws = Workspace(cfg)
    errors: dict[str, str] = {}
    try:
        for name in cfg.sections:
            section_started = time.perf_counter()
            try:
                result = SECTIONS[name](cfg, ws)
            except BenchError as e:
                # One failed section must not lose the others' figures: recorded, and the run fails at the end.
                log.error("section %s failed: %s", name, e)
                errors[name] = str(e)
                result = SectionResult(details={"error": str(e)}, markdown=[f"**{name}**: failed: `{e}`"])
            report["section_duration_s"][name] = round(time.perf_counter() - section_started, 3)
            results[name] = result
            report["sections"][name] = result.details
            report["references"].extend(result.references)
            rows.extend(result.rows)
    finally:
        ws.close()
    report["errors"] = errors
    core_after = native_module_info()
    if core_after != report["host"].get("native_module"):
        report["native_module_changed_during_run"] = core_after
        log.warning("the native module changed during the run (rebuilt?): figures may mix two builds")
    report["duration_s"] = round(time.perf_counter() - started, 3)
    report["table"] = [asdict(r) for r in rows]
    dated, latest_json, latest_md = write_results(cfg, report, rows, results)
    if rows:
        print(markdown_table(rows))
    if report["references"]:
        print("\n" + references_table(report["references"]))
    print(f"\nwritten: {dated}, {latest_json}, {latest_md}" + (f", {report['chart']}" if report["chart"] else ""),
          file=sys.stderr)
    if errors:
        raise BenchError(f"section(s) failed: {', '.join(errors)} (the other figures were written)")
    return report


# ---------------------------------------------------------------------------------------------- CLI
def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _history_rows(text: str) -> tuple[int, ...]:
    import history

    return history.parse_rows(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/bench.py",
        description="Benchmark ecomlogs against the baseline (the original design in pure Python, baseline/). "
        "Prints figures; never asserts timings.",
    )
    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated sections to run, from: {', '.join(SECTIONS)} (default: all but "
                   "history)")
    p.add_argument("--events", type=_positive_int, default=None,
                   help=f"events for generation/validation (default {DEFAULT_EVENTS:,}; {SMALL_EVENTS:,} with --small)")
    p.add_argument("--produce-events", type=_positive_int, default=None,
                   help=f"events per producer run "
                   f"(default {DEFAULT_PRODUCE_EVENTS:,}; {SMALL_PRODUCE_EVENTS:,} with --small)")
    p.add_argument("--process-events", type=_positive_int, default=None,
                   help=f"raw events for the process and load sections "
                   f"(default {DEFAULT_PROCESS_EVENTS:,}; {SMALL_PROCESS_EVENTS:,} with --small)")
    p.add_argument("--e2e-events", type=_positive_int, default=None,
                   help=f"raw events per e2e run (default {DEFAULT_E2E_EVENTS:,}; {SMALL_E2E_EVENTS:,} with --small)")
    p.add_argument("--repeat", type=_positive_int, default=None,
                   help=f"runs per figure, the median is reported "
                   f"(default {DEFAULT_REPEAT}; {SMALL_REPEAT} with --small)")
    p.add_argument("--e2e-repeat", type=_positive_int, default=None, help="runs of the e2e section (default --repeat)")
    p.add_argument("--latency-repeat", type=_positive_int, default=None,
                   help="runs per rate of the latency section (default --repeat)")
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default {S.DEFAULT_BOOTSTRAP_SERVERS})")
    p.add_argument("--dsn", default=None,
                   help=f"PostgreSQL URL of a superuser, to create the per-run databases and run the server-side "
                   f"COPY (env DATABASE_URL; default {S.DEFAULT_DSN})")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default <repo>/bench/results; <repo>/bench/results/history when only "
                   "the history section runs)")
    p.add_argument("--small", action="store_true", help="tiny sizes and one run (for the test suite)")
    p.add_argument("--keep-topics", action="store_true", help="keep the per-run benchmark topics (default: delete)")
    p.add_argument("--processor-workers", type=_positive_int, default=1,
                   help="consumers (group members) of the ecomlogs stream processor (default %(default)s, as "
                   "`ecomlogs run`: one member routing on every core; the baseline runs one process per stage)")
    p.add_argument("--metrics", action="store_true",
                   help="every ecomlogs stage serves /metrics, scraped once a second during the runs (to show "
                   "what metrics cost)")
    p.add_argument("--history-rows", type=_history_rows, default=None, metavar="N,N,...",
                   help="history: the sizes each design's table grows to, in rows "
                   "(default 0,1e6,10e6,30e6; 0,20000 with --small)")
    p.add_argument("--history-new-rows", type=_positive_int, default=None, metavar="N",
                   help="history: new rows of today for the COPY and the loader (default 400,000; 2,000 with --small)")
    p.add_argument("--history-window", type=_positive_float, default=None, metavar="SECONDS",
                   help="history: seconds the dashboard's PostgreSQL cost is measured over, and as long without "
                   "it (default 10; 1 with --small)")
    p.add_argument("--loader-workers", type=_positive_int, default=1,
                   help="consumer threads of the ecomlogs loader, each with its own PostgreSQL connection "
                   "(default %(default)s)")
    return p


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BenchConfig:
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    for s in sections:
        if s in PLANNED:
            parser.error(f"section {s!r} is not implemented yet (available: {', '.join(SECTIONS)})")
        if s not in SECTIONS:
            parser.error(f"unknown section {s!r} (available: {', '.join(SECTIONS)})")
    if not sections:
        parser.error("--sections is empty")
    repo_root = find_repo_root()
    repeat = args.repeat or (SMALL_REPEAT if args.small else DEFAULT_REPEAT)
    chosen = set(sections)
    import history

    default_out = repo_root / "bench" / "results" / ("history" if chosen == {"history"} else "")
    return BenchConfig(
        events=args.events or (SMALL_EVENTS if args.small else DEFAULT_EVENTS),
        produce_events=args.produce_events or (SMALL_PRODUCE_EVENTS if args.small else DEFAULT_PRODUCE_EVENTS),
        repeat=repeat,
        bootstrap_servers=S.bootstrap_servers(args.bootstrap_servers),
        dsn=args.dsn or os.environ.get("DATABASE_URL") or S.DEFAULT_DSN,
        out=args.out or default_out,
        sections=tuple(s for s in SECTIONS if s in chosen),  # always in the documented order
        small=args.small,
        keep_topics=args.keep_topics,
        repo_root=repo_root,
        process_events=args.process_events or (SMALL_PROCESS_EVENTS if args.small else DEFAULT_PROCESS_EVENTS),
        e2e_events=args.e2e_events or (SMALL_E2E_EVENTS if args.small else DEFAULT_E2E_EVENTS),
        e2e_repeat=args.e2e_repeat or repeat,
        latency_repeat=args.latency_repeat or repeat,
        processor_workers=args.processor_workers,
        loader_workers=args.loader_workers,
        metrics=args.metrics,
        history_rows=args.history_rows or (history.SMALL_HISTORY_ROWS if args.small else history.DEFAULT_HISTORY_ROWS),
        history_new_rows=args.history_new_rows or (history.SMALL_NEW_ROWS if args.small else history.DEFAULT_NEW_ROWS),
        history_window_s=args.history_window or (history.SMALL_WINDOW_S if args.small else history.DEFAULT_WINDOW_S),
    )


def restore_sigint() -> None:
    """Started in the background (``cmd &`` ignores SIGINT, and children inherit that), the stages could not
    be stopped with SIGINT, as a user's Ctrl-C stops them: take SIGINT back for this process and its children."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
                        stream=sys.stderr)
    restore_sigint()
    if args.metrics:
        threading.Thread(target=_scraper, name="bench-scraper", daemon=True).start()
    try:
        run(config_from_args(args, parser))
    except EcomlogsError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
