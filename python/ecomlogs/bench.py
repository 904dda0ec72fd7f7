"""Benchmarks: ecomlogs against the baseline (the original design in pure Python, ``baseline/``).

    python -m ecomlogs.bench                      # every implemented section, full size
    python -m ecomlogs.bench --sections stage1 --repeat 5
    python -m ecomlogs.bench --small --out /tmp/b # tiny sizes, for the test suite

Each figure is the median of ``--repeat`` runs; a ratio is ecomlogs / baseline, computed within each run
(both sides measured back to back, in alternating order) and then the median taken. The command prints
figures and never judges them: no timing is asserted anywhere.

Results go to ``<out>/<UTC timestamp>.json``, ``<out>/latest.json`` and ``<out>/latest.md`` (the Markdown
table that is also printed).

Sections are functions registered in :data:`SECTIONS`; each returns a :class:`SectionResult` (details for
the JSON plus rows for the table). ``stage1`` is implemented: generation + serialisation, validation of
raw bytes, and producing to the broker. ``process``, ``load`` and ``e2e`` are planned (:data:`PLANNED`).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

from ecomlogs import settings as S
from ecomlogs.exceptions import EcomlogsError

log = logging.getLogger("ecomlogs.bench")

SCHEMA_VERSION = 1
DEFAULT_EVENTS = 1_000_000
DEFAULT_PRODUCE_EVENTS = 1_000_000
DEFAULT_REPEAT = 3
SMALL_EVENTS = 2_000
SMALL_PRODUCE_EVENTS = 2_000
SMALL_REPEAT = 1
VALIDATION_SEED = 20240601
"""The validation input is the same seeded list for both sides and every run."""
CHILD_TIMEOUT_S = 900.0
"""Upper bound for one producer subprocess (1M events take seconds to tens of seconds)."""
KAFKA_TIMEOUT_S = 30.0
WARM_UP_EVENTS = 10_000


class BenchError(EcomlogsError):
    """A benchmark could not run or its counts came out wrong (never raised for slow timings)."""


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Row:
    """One line of the results table: a metric measured on both sides.

    ``ratio`` is ecomlogs / baseline (the median of per-run ratios, so it need not equal the ratio of the
    two medians). ``better`` says which direction is an improvement: ``"higher"`` or ``"lower"``.
    """

    section: str
    metric: str
    unit: str
    better: str
    ecomlogs: float
    baseline: float
    ratio: float


@dataclass
class SectionResult:
    """What a section hands back: details for the JSON file and rows for the table."""

    details: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


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
class ChildRun:
    """A finished subprocess: its own wall time, CPU time and peak memory (see :func:`run_child`)."""

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    stdout: str
    stderr: str


# ---------------------------------------------------------------------------------------------- helpers
def find_repo_root() -> Path:
    """The checkout this package lives in (``python/ecomlogs/bench.py`` -> the root holding ``baseline/``)."""
    here = Path(__file__).resolve()
    for candidate in [here.parents[2], Path.cwd(), *Path.cwd().parents]:
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
# sections) must not be the direct parent: this launcher, a bare interpreter of ~10 MiB, is.
_LAUNCHER = """
import json, os, subprocess, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
child = subprocess.Popen(cmd)
_pid, status, usage = os.wait4(child.pid, 0)
wall = time.perf_counter() - started
kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
with open(report, "w") as f:
    json.dump({"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "max_rss_kib": kib}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(cmd: Sequence[str], timeout_s: float = CHILD_TIMEOUT_S, cwd: Optional[Path] = None) -> ChildRun:
    """Runs ``cmd`` and measures exactly that process: its wall time, user+sys CPU and peak RSS (``wait4``).

    The command is started by a small launcher (see ``_LAUNCHER``) so that its peak RSS is its own. Output
    goes to temporary files so that a chatty child can never block on a full pipe; on timeout the whole
    process group is killed.
    """
    with tempfile.TemporaryDirectory(prefix="ecomlogs-bench-") as tmp:
        report = Path(tmp) / "rusage.json"
        with open(Path(tmp) / "stdout", "w+b") as out, open(Path(tmp) / "stderr", "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(report), *cmd],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, start_new_session=True,
            )
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                raise BenchError(f"{' '.join(cmd)} did not finish within {timeout_s:.0f} s") from None
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        try:
            usage = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise BenchError(
                f"{' '.join(cmd)} exited with {returncode} and no measurement:\n{stderr[-2000:]}"
            ) from None
    return ChildRun(
        returncode=returncode,
        wall_s=usage["wall_s"],
        user_s=usage["user_s"],
        sys_s=usage["sys_s"],
        max_rss_mib=usage["max_rss_kib"] / 1024,
        stdout=stdout,
        stderr=stderr,
    )


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Calls ``fn`` once; returns its result, wall seconds and CPU seconds of this process (all threads)."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return result, t1 - t0, c1 - c0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


MetricSpec = tuple[str, str, str, Callable[[Sample], Optional[float]]]
"""(name, unit, better, getter): how to read one metric off a :class:`Sample`."""


def compare(section: str, runs: Sequence[dict[str, Sample]], metrics: Sequence[MetricSpec]) -> list[Row]:
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
        rows.append(Row(section, name, unit, better,
                        median([o for o, _ in measured]), median([t for _, t in measured]), median(ratios)))
    return rows


THROUGHPUT_AND_CPU: list[MetricSpec] = [
    ("throughput", "events/s", "higher", lambda s: s.events_per_s),
    ("CPU per event", "µs", "lower", lambda s: s.cpu_us_per_event),
]


def alternate(run: int, sides: dict[str, Callable[[], Sample]]) -> dict[str, Sample]:
    """Measures both sides, ecomlogs first on even runs and baseline first on odd ones (no order bias)."""
    order = list(sides) if run % 2 == 0 else list(reversed(list(sides)))
    return {name: sides[name]() for name in order}


def warm_up(*calls: Callable[[], object]) -> None:
    """Runs each call once, untimed: first-use costs (lazy imports, allocator arenas) stay out of run 1."""
    for call in calls:
        call()


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- Kafka
def count_messages(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 300.0, idle_s: float = 5.0
) -> int:
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
        deadline = time.monotonic() + timeout_s
        last_message = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10_000, timeout=0.5 if count >= expected else 1.0)
            good = sum(1 for m in batch if not m.error())
            count += good
            if good:
                last_message = time.monotonic()
            elif count >= expected or time.monotonic() - last_message >= idle_s:
                break
        return count
    finally:
        consumer.close()


def delete_topics(bootstrap_servers: str, topics: Sequence[str], timeout_s: float = KAFKA_TIMEOUT_S) -> None:
    """Deletes benchmark topics (best effort: a failure is logged, never raised)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for topic, future in admin.delete_topics(list(topics), operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as e:  # noqa: BLE001 - cleanup only: report and go on
            log.warning("could not delete topic %s: %s", topic, e)


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
        valid_counts["ecomlogs"] = sum(1 for reason, _detail, _canonical in verdicts if reason is None)
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
            ecomlogs.ensure_topics([topic], bootstrap_servers=cfg.bootstrap_servers, partitions=S.DEFAULT_PARTITIONS)
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
            "partitions": S.DEFAULT_PARTITIONS,
            "topics": created,
            "topics_kept": cfg.keep_topics,
            "commands": {"ecomlogs": ours_cmd, "baseline": theirs_cmd},
            "runs": [{k: asdict(v) for k, v in r.items()} for r in runs],
        },
        rows=rows,
    )


def run_stage1(cfg: BenchConfig) -> SectionResult:
    """Stage 1 (the producer's work): generation, validation of raw bytes, producing to Kafka."""
    result = SectionResult()
    for name, bench in (("generate", bench_generate), ("validate", bench_validate), ("produce", bench_produce)):
        part = bench(cfg)
        result.details[name] = part.details
        result.rows.extend(part.rows)
    return result


SECTIONS: dict[str, Callable[[BenchConfig], SectionResult]] = {
    "stage1": run_stage1,
}
"""Implemented sections, in the order they run."""
PLANNED = ("process", "load", "e2e")
"""Sections named in the plan but not written yet."""


# ---------------------------------------------------------------------------------------------- report
def _fmt(value: float) -> str:
    if value != value:  # NaN
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
        lines.append(
            f"| {r.section} | {r.metric} ({r.unit}, {arrow} better) | {_fmt(r.ecomlogs)} | {_fmt(r.baseline)} "
            f"| {r.ratio:.3g}× |"
        )
    return "\n".join(lines)


def markdown_report(report: dict[str, Any], rows: Sequence[Row]) -> str:
    host, config = report["host"], report["config"]
    return "\n".join([
        "# ecomlogs benchmark",
        "",
        f"{report['created_utc']}, {host['cpus']} CPUs, Python {host['python']}, ecomlogs {host['ecomlogs']}, "
        f"librdkafka {host['librdkafka']}, load average at start {host['loadavg']}",
        "",
        f"Events: {config['events']:,} (generate/validate), {config['produce_events']:,} (produce); "
        f"median of {config['repeat']} run(s); ratio = ecomlogs / baseline, the median of per-run ratios.",
        "",
        markdown_table(rows),
        "",
        "Baseline: the original design in pure Python (`baseline/`). Generation and validation are timed "
        "in-process (CPU = `time.process_time`); producing runs each side as a subprocess (wall time including "
        "interpreter start-up; CPU = the child's user+sys, peak RSS its `ru_maxrss`, both from `wait4`).",
        "",
    ])


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
    try:
        import confluent_kafka

        info["confluent_kafka"] = confluent_kafka.version()[0]
        info["librdkafka"] = confluent_kafka.libversion()[0]
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


def write_results(cfg: BenchConfig, report: dict[str, Any], rows: Sequence[Row]) -> tuple[Path, Path, Path]:
    """Writes ``<stamp>.json``, ``latest.json`` and ``latest.md`` into ``cfg.out``."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.strptime(report["created_utc"], "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    dated = cfg.out / f"{stamp}.json"
    latest_json = cfg.out / "latest.json"
    latest_md = cfg.out / "latest.md"
    dated.write_text(text, encoding="utf-8")
    latest_json.write_text(text, encoding="utf-8")
    latest_md.write_text(markdown_report(report, rows), encoding="utf-8")
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
            "repeat": cfg.repeat,
            "sections": list(cfg.sections),
            "small": cfg.small,
            "bootstrap_servers": cfg.bootstrap_servers,
        },
        "sections": {},
        "table": [],
    }
    rows: list[Row] = []
    started = time.perf_counter()
    for name in cfg.sections:
        result = SECTIONS[name](cfg)
        report["sections"][name] = result.details
        rows.extend(result.rows)
    report["duration_s"] = round(time.perf_counter() - started, 3)
    report["table"] = [asdict(r) for r in rows]
    dated, latest_json, latest_md = write_results(cfg, report, rows)
    print(markdown_table(rows))
    print(f"\nwritten: {dated}, {latest_json}, {latest_md}", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ecomlogs.bench",
        description="Benchmark ecomlogs against the baseline (the original design in pure Python, baseline/). "
        "Prints figures; never asserts timings.",
    )
    p.add_argument("--sections", default="stage1",
                   help=f"comma-separated sections to run: {', '.join(SECTIONS)} (planned: {', '.join(PLANNED)}); "
                   "default %(default)s")
    p.add_argument("--events", type=_positive_int, default=None,
                   help=f"events for generation/validation (default {DEFAULT_EVENTS:,}; {SMALL_EVENTS:,} with --small)")
    p.add_argument("--produce-events", type=_positive_int, default=None,
                   help=f"events per producer run "
                   f"(default {DEFAULT_PRODUCE_EVENTS:,}; {SMALL_PRODUCE_EVENTS:,} with --small)")
    p.add_argument("--repeat", type=_positive_int, default=None,
                   help=f"runs per figure, the median is reported "
                   f"(default {DEFAULT_REPEAT}; {SMALL_REPEAT} with --small)")
    p.add_argument("--bootstrap-servers", default=None,
                   help=f"Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default {S.DEFAULT_BOOTSTRAP_SERVERS})")
    p.add_argument("--dsn", default=None,
                   help=f"PostgreSQL URL for the load sections (env DATABASE_URL; default {S.DEFAULT_DSN})")
    p.add_argument("--out", type=Path, default=None, help="results folder (default <repo>/bench/results)")
    p.add_argument("--small", action="store_true", help="tiny sizes and one run (for the test suite)")
    p.add_argument("--keep-topics", action="store_true", help="keep the per-run benchmark topics (default: delete)")
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
    return BenchConfig(
        events=args.events or (SMALL_EVENTS if args.small else DEFAULT_EVENTS),
        produce_events=args.produce_events or (SMALL_PRODUCE_EVENTS if args.small else DEFAULT_PRODUCE_EVENTS),
        repeat=args.repeat or (SMALL_REPEAT if args.small else DEFAULT_REPEAT),
        bootstrap_servers=S.bootstrap_servers(args.bootstrap_servers),
        dsn=args.dsn or os.environ.get("DATABASE_URL") or S.DEFAULT_DSN,
        out=args.out or repo_root / "bench" / "results",
        sections=tuple(dict.fromkeys(sections)),
        small=args.small,
        keep_topics=args.keep_topics,
        repo_root=repo_root,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        run(config_from_args(args, parser))
    except EcomlogsError as e:
        print(f"ecomlogs.bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ecomlogs.bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
