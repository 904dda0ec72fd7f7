"""The whole pipeline in one process: producer, processor and loader side by side (each a Rust loop in its
own thread with the GIL released), with a live status line and a closing analytics report.

    from ecomlogs.pipeline import run_pipeline
    result = run_pipeline(count=100_000)
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ecomlogs import _core, api
from ecomlogs import settings as S
from ecomlogs._core import StopToken
from ecomlogs.exceptions import StalledError

log = logging.getLogger("ecomlogs.pipeline")


class _Stage:
    """One stage running in a thread; ``token`` tells it how to finish (stop, or drain: finish once every
    assigned partition has been read to its end); its progress callback publishes its counters."""

    def __init__(self, name: str, target: Callable[[Callable[[Any], None], StopToken], Any]) -> None:
        self.name = name
        self.token = StopToken()
        self.draining = False
        self.stats: Any = None
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=f"ecomlogs-{name}", daemon=True)

    def _progress(self, stats: Any) -> None:
        self.stats = stats

    def _run(self) -> None:
        try:
            self.result = self._target(self._progress, self.token)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which reports it
            self.error = e

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


@dataclass
class PipelineResult:
    """Counts of one run of the whole pipeline, and the analytics report read from the views."""

    produced: int
    processed: int
    valid: int
    invalid: int
    invalid_by_reason: dict[str, int]
    rows_inserted: int
    duplicates_skipped: int
    dead_lettered_by_loader: int
    elapsed_s: float
    interrupted: bool
    report: dict[str, list[dict[str, Optional[str]]]] = field(default_factory=dict)


STUCK_AFTER_S = 10.0
"""A stage with work waiting and no progress for this long is shown as stuck in the status line."""


WAITING = ("starting", "joining the consumer group", "waiting for the database")
"""Activities shown in the status line as they happen (instead of a row of zeros)."""


class _ProgressWatch:
    """When each stage last moved, to tell a slow stage from a stuck one."""

    def __init__(self, now: float) -> None:
        self.moved: dict[str, tuple[int, float]] = {}
        self.lag: dict[str, int] = {}
        self.start = now
        self.gave_up = False

    def update(self, counts: dict[str, tuple[int, int]]) -> None:
        now = time.monotonic()
        for name, (progress, lag) in counts.items():
            seen = self.moved.get(name)
            if seen is None or progress != seen[0] or lag == 0:
                self.moved[name] = (progress, now)
            self.lag[name] = lag

    def idle_for(self, name: str) -> float:
        seen = self.moved.get(name)
        return time.monotonic() - (seen[1] if seen else self.start)

    def note(self, name: str, stats: Any) -> str:
        """What the stage waits for when it is not simply running (joining its group, the database), and a
        "STUCK" mark once it has had work and no progress for a while."""
        activity = str(getattr(stats, "activity", "starting")) if stats is not None else "starting"
        if self.lag.get(name, 0) > 0 and self.idle_for(name) >= STUCK_AFTER_S:
            return f"; STUCK {self.idle_for(name):.0f}s: {activity}"
        if activity in WAITING:
            return f"; {activity}"
        return ""

    def stalled(self, timeout_s: float) -> Optional[tuple[str, int, float]]:
        """(stage, lag, seconds) of the first stage with work waiting, if none of the stages with work
        waiting moved for ``timeout_s`` (a stage with nothing to do is never stuck)."""
        waiting = [n for n in ("processor", "loader") if self.lag.get(n, 0) > 0]
        if not waiting or any(self.idle_for(n) < timeout_s for n in waiting):
            return None
        return waiting[0], self.lag[waiting[0]], self.idle_for(waiting[0])


def _n(stats: Any, key: str) -> int:
    """A counter of a stage's latest stats (0 before its first report)."""
    return int(getattr(stats, key, 0))


def _counts(producer: _Stage, processor: _Stage, loader: _Stage) -> dict[str, tuple[int, int]]:
    """(progress, work waiting) per stage, from the latest stats. A draining stage that has not finished
    counts as having work waiting."""
    pr, ps, ld = producer.stats, processor.stats, loader.stats
    produced, consumed = _n(pr, "produced"), _n(ps, "consumed")
    written = _n(ld, "rows_inserted") + _n(ld, "duplicates_skipped") + _n(ld, "dead_lettered")
    plag, llag = max(produced - consumed, 0), max(_n(ps, "valid") - written, 0)
    if processor.draining and not processor.done:
        plag = max(plag, 1)
    if loader.draining and not loader.done:
        llag = max(llag, 1)
    return {"producer": (produced, 0), "processor": (consumed, plag), "loader": (written, llag)}


def _status_line(c: dict[str, tuple[int, int]], ps: Any, ld: Any, watch: _ProgressWatch,
                 last: dict[str, tuple[float, int]], start: float, before: int) -> str:
    """The one-line status: counts, rates since the last line (kept in ``last``), lag and waits."""
    now = time.monotonic()

    def rate_of(name: str, value: int) -> str:
        t0, v0 = last.get(name, (start, 0))
        last[name] = (now, value)
        r = (value - v0) / (now - t0) if now > t0 else 0.0
        return f"{r:,.0f}/s"

    (produced, _), (consumed, plag), (written, llag) = c["producer"], c["processor"], c["loader"]
    reasons = getattr(ps, "by_reason", {})
    top = ", ".join(f"{k}={v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
    return (
        f"produce {produced:,} ({rate_of('p', produced)}) | "
        f"process {consumed:,} ({rate_of('c', consumed)}, lag {plag:,}{watch.note('processor', ps)}) | "
        f"load {written:,} rows ({rate_of('l', written)}, lag {llag:,}{watch.note('loader', ld)}) | "
        f"table {before + _n(ld, 'rows_inserted'):,} rows | invalid {_n(ps, 'invalid'):,}"
        + (f" ({top})" if top else "")
    )


def _result(producer: _Stage, processor: _Stage, loader: _Stage, elapsed_s: float, interrupted: bool,
            database: str) -> PipelineResult:
    """What the run did: the stages' final stats (their last reports if a stage did not finish)."""
    pr, ps, ld = producer.result, processor.result, loader.result
    return PipelineResult(
        produced=pr.produced if pr else _n(producer.stats, "produced"),
        processed=ps.consumed if ps else _n(processor.stats, "consumed"),
        valid=ps.valid if ps else _n(processor.stats, "valid"),
        invalid=ps.invalid if ps else _n(processor.stats, "invalid"),
        invalid_by_reason=dict(ps.by_reason) if ps else {},
        rows_inserted=ld.rows_inserted if ld else _n(loader.stats, "rows_inserted"),
        duplicates_skipped=ld.duplicates_skipped if ld else 0,
        dead_lettered_by_loader=ld.dead_lettered if ld else 0,
        elapsed_s=elapsed_s,
        interrupted=interrupted,
        report=analytics_report(database),
    )


def run_pipeline(*, status: Optional[Callable[[str], None]] = None, **options: Any) -> PipelineResult:
    """Runs producer -> processor -> loader on the default topics and table until ``count`` events were
    produced (0: until ``duration_s`` or Ctrl-C), then lets the processor and loader drain and stop
    cleanly: the processor reads ``raw_events`` to its end, then the loader ``clean_events`` (with a fresh
    database that includes what earlier runs left there: PostgreSQL alone says what is loaded).

    ``options`` are those of ``ecomlogs run`` by their Python names (``ecomlogs.options("run")``: count,
    duration_s, rate, invalid_ratio, seed, the loader's batch settings, exactly_once, bootstrap_servers,
    dsn, ...); each is checked before anything is started, and one left out takes its environment variable
    or default. ``status`` receives a one-line status about once a second; a stage that makes no progress
    while records wait for it for 10 s is marked there as stuck, with what it waits for. A drain during
    which the stage it waits for does not move for ``stall_timeout_s`` raises
    :class:`~ecomlogs.exceptions.StalledError` instead of waiting forever."""
    run = _core.resolve_options("run", options)
    stage_options = {stage: _for_stage(stage, run) for stage in ("produce", "process", "load")}
    if run["count"] == 0 or run["duration_s"] is not None:
        stage_options["produce"]["count"] = None
    stage_options["produce"].update(interval_ms=0, log_each=False)
    stage_options["process"]["workers"] = run["processor_workers"]
    stage_options["load"].update(workers=run["loader_workers"], migrate=False)
    database = run["dsn"]
    api.ensure_topics([S.RAW_TOPIC, S.CLEAN_TOPIC, S.DLQ_TOPIC], **_for_stage("topics", run))
    api.migrate(database)
    before = _row_count(database)
    duration_s, stall_timeout_s = run["duration_s"], run["stall_timeout_s"]
    loader, processor, producer = stages = _start_stages(**stage_options)

    start = time.monotonic()
    interrupted = False
    last: dict[str, tuple[float, int]] = {}
    watch = _ProgressWatch(start)

    def tick() -> None:
        now = _counts(producer, processor, loader)
        watch.update(now)
        if status:
            status(_status_line(now, processor.stats, loader.stats, watch, last, start, before))
        for s in stages:
            if s.error is not None:
                raise s.error

    def drain(stage: _Stage) -> None:
        """Lets ``stage`` finish once it has read its input to the end; fails if it stops moving."""
        stage.token.drain()
        stage.draining = True
        while not stage.done:
            time.sleep(0.5)
            tick()
            stuck = watch.stalled(stall_timeout_s)
            if stuck is not None:
                name, lag, for_s = stuck
                activity = getattr({"processor": processor, "loader": loader}[name].stats, "activity", "starting")
                raise StalledError(f"the pipeline stopped draining: the {name} made no progress for {for_s:.0f} s "
                                   f"while records were waiting for it ({activity})")

    try:
        # 1. Produce until count / duration / Ctrl-C.
        while not producer.done:
            time.sleep(1.0)
            tick()
            if duration_s is not None and time.monotonic() - start >= duration_s:
                producer.token.stop()
        tick()
        # 2. Drain: the processor reads raw_events to its end, then the loader clean_events.
        drain(processor)
        drain(loader)
        tick()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("stopping: finishing the batches in flight (Ctrl-C again to abandon them)")
    except StalledError:
        # A stuck stage cannot finish its batch: it is left (uncommitted, read again at the next start).
        watch.gave_up = True
        raise
    finally:
        _stop_all((producer, processor, loader), watch.gave_up)
    for s in stages:
        if s.error is not None and not isinstance(s.error, KeyboardInterrupt):
            raise s.error
    return _result(producer, processor, loader, time.monotonic() - start, interrupted, database)

def _for_stage(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    """The options of ``run`` that ``stage`` takes under the same name (the services, the loader's batch
    settings, the producer's pace, ...)."""
    names = {o["name"] for o in _core.OPTIONS if o["command"] == stage and o["python"]}
    return {k: v for k, v in run.items() if k in names}


def _start_stages(load: dict[str, Any], process: dict[str, Any],
                  produce: dict[str, Any]) -> tuple[_Stage, _Stage, _Stage]:
    """Starts loader, processor and producer in their threads (with these keyword arguments), the consumers
    first: both join their groups while the producer already writes."""
    loader = _Stage("loader", lambda p, t: api.load(progress=p, stop=t, **load))
    processor = _Stage("processor", lambda p, t: api.process(progress=p, stop=t, **process))
    producer = _Stage("producer", lambda p, t: api.produce(progress=p, stop=t, **produce))
    for stage in (loader, processor, producer):
        stage.thread.start()
    return loader, processor, producer


def _stop_all(stages: tuple[_Stage, ...], gave_up: bool) -> None:
    """Stops every stage after its batch in flight and waits for it (briefly if the drain gave up)."""
    for s in stages:
        s.token.stop()
    for s in stages:
        s.thread.join(timeout=5 if gave_up else 120)


def _row_count(dsn: str) -> int:
    rows = api.query("SELECT count(*) AS n FROM kafka_events_silver", dsn=dsn)
    return int(str(rows[0]["n"] or 0))


REPORT_QUERIES = {
    "Funnel by day (UTC)": "SELECT day, page_views, add_to_carts, purchases, view_to_cart_rate, "
    "cart_to_purchase_rate FROM daily_funnel ORDER BY day DESC LIMIT 7",
    "Revenue by day and currency": "SELECT day, currency, purchases, revenue, average_order FROM daily_revenue "
    "ORDER BY day DESC, revenue DESC LIMIT 9",
    "Top customers": "SELECT customer_id, currency, purchases, revenue, events FROM top_customers "
    "WHERE revenue_rank <= 3 ORDER BY currency, revenue_rank LIMIT 9",
}


def analytics_report(dsn: Optional[str] = None) -> dict[str, list[dict[str, Optional[str]]]]:
    """Reads the analytics views (daily funnel, revenue by currency, top customers), as text for
    :func:`format_report` (``ecomlogs.analytics`` has them as DataFrames)."""
    database = S.dsn(dsn)
    return {title: [{k: None if v is None else str(v) for k, v in row.items()}
                    for row in api.query(sql, dsn=database)]
            for title, sql in REPORT_QUERIES.items()}


def format_report(report: dict[str, list[dict[str, Optional[str]]]]) -> str:
    """Plain-text tables of :func:`analytics_report`'s result."""
    out: list[str] = []
    for title, rows in report.items():
        out.append(f"\n{title}")
        if not rows:
            out.append("  (no rows)")
            continue
        cols = list(rows[0])
        widths = [max(len(c), *(len(r[c] or "") for r in rows)) for c in cols]
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        out.append("  " + "  ".join("-" * w for w in widths))
        def cell(v: Optional[str], w: int) -> str:
            v = v or ""
            numeric = v.replace(".", "", 1).replace("-", "", 1).isdigit()
            return v.rjust(w) if numeric else v.ljust(w)

        for r in rows:
            out.append("  " + "  ".join(cell(r[c], w) for c, w in zip(cols, widths)))
    return "\n".join(out)
