"""What the dashboard shows, gathered in the background: PostgreSQL (rows, today's funnel and revenue, the
loader's stored offsets), the topics (offsets, the processor group's position, the dead letters read
incrementally from the dead-letter topic) and, where given, the stages' Prometheus endpoints. Each source
has its own thread, so a source that hangs never holds up the others; a source that fails is reported
on the page and tried again at the next tick. Nothing here writes anywhere."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import urllib.request
from collections import deque
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Optional

from ecomlogs import _core
from ecomlogs import settings as S
from ecomlogs.exceptions import DatabaseError, EcomlogsError

log = logging.getLogger("ecomlogs.dashboard")

RATE_WINDOW_S = 5.0
"""Rates are measured over this many seconds of samples."""

_TODAY = "(now() AT TIME ZONE 'UTC')::date"
# Nothing here reads the events themselves (history grows; the page asks every second): rows loaded come
# from the rollups the loader keeps in its transactions, the last load from the offsets it stores.
_SQL_TABLE = ("SELECT coalesce((SELECT sum(events) FROM ecomlogs_daily_rollup), 0)::bigint AS rows, "
              "(SELECT max(updated_at) AT TIME ZONE 'UTC' FROM ecomlogs_kafka_offsets) AS last_loaded, "
              f"{_TODAY} AS today")
_SQL_TYPES = ("SELECT NULLIF(event_type, '') AS event_type, sum(events)::bigint AS n FROM ecomlogs_daily_rollup "
              "GROUP BY 1 ORDER BY 1")
_SQL_FUNNEL = ("SELECT page_views, add_to_carts, purchases, view_to_cart_rate, cart_to_purchase_rate, "
               f"view_to_purchase_rate FROM daily_funnel WHERE day = {_TODAY}")
_SQL_REVENUE = ("SELECT currency, purchases, revenue, average_order FROM daily_revenue "
                f"WHERE day = {_TODAY} ORDER BY currency")
_SQL_OFFSETS = "SELECT partition, next_offset FROM ecomlogs_kafka_offsets WHERE group_id = $1 AND topic = $2"


def jsonable(v: Any) -> Any:
    """Values for JSON: exact decimals as text, dates and times as ISO 8601, NaN and infinities (which
    a metrics endpoint may report; JSON has no word for them) as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


class Rate:
    """Events per second of a growing counter, over the last few seconds (a counter that goes back,
    e.g. a broker that lost its topics, starts over)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, value: float, now: Optional[float] = None) -> None:
        if not math.isfinite(value):  # a NaN or infinite sample says nothing about the rate
            return
        now = time.monotonic() if now is None else now
        if self.samples and value < self.samples[-1][1]:
            self.samples.clear()
        self.samples.append((now, value))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()

    @property
    def value(self) -> Optional[float]:
        if len(self.samples) < 2:
            return None
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else None


def describe_database_error(e: EcomlogsError) -> str:
    if isinstance(e, DatabaseError) and e.sqlstate == "42P01":
        return ("the table kafka_events_silver or its views do not exist yet: start the loader or run "
                "`ecomlogs migrate` (" + str(e) + ")")
    return str(e)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or line.startswith("#"):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, value))
    return out


class Collector:
    """Keeps the latest view of every source; :meth:`snapshot` combines them for the page."""

    def __init__(self, *, dsn: str, bootstrap_servers: str, dlq_topic: str = S.DLQ_TOPIC,
                 metrics_urls: Optional[list[str]] = None, interval_s: float = 1.0,
                 extra_config: Optional[dict[str, str]] = None) -> None:
        self.dsn = dsn
        self.bootstrap_servers = bootstrap_servers
        self.dlq_topic = dlq_topic
        self.metrics_urls = list(metrics_urls or [])
        self.interval_s = interval_s
        self.extra_config = extra_config or None
        # One connection kept open for the database loop (a new one each second would cost the server a
        # process start each time); it reconnects by itself after an outage.
        self.database = _core.Database(dsn)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.db: dict[str, Any] = {"ok": None, "error": None}
        self.kafka: dict[str, Any] = {"ok": None, "error": None}
        self.metrics: dict[str, Any] = {"ok": None, "error": None, "urls": self.metrics_urls}
        self.rates = {name: Rate() for name in ("produced", "processed", "rows", "dead_letters",
                                                 "m_processor", "m_loader", "m_rows")}
        # Dead letters counted per partition, so that a partition whose log restarts is counted again.
        self.dlq_next: dict[int, int] = {}
        self.dlq_counts: dict[int, dict[tuple[str, str], int]] = {}
        self.dlq_recent: deque[dict[str, Any]] = deque(maxlen=12)

    # ------------------------------------------------------------------------------------ running
    def start(self) -> None:
        sources: list[tuple[str, Callable[[], None]]] = [("database", self.poll_database),
                                                         ("kafka", self.poll_kafka)]
        if self.metrics_urls:
            sources.append(("metrics", self.poll_metrics))
        for name, poll in sources:
            t = threading.Thread(target=self._loop, args=(name, poll), name=f"dashboard-{name}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops the threads and waits for them (a thread left inside the Rust core when the interpreter
        exits would abort the process)."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=timeout_s)
        self.database.close()

    def _loop(self, name: str, poll: Callable[[], None]) -> None:
        last_error: Optional[str] = None
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                poll()
                if last_error is not None:
                    log.info("%s: reachable again", name)
                last_error = None
            except Exception as e:  # noqa: BLE001 - shown on the page; the loop must survive anything
                text = describe_database_error(e) if name == "database" and isinstance(e, EcomlogsError) else str(e)
                if text != last_error:
                    log.warning("%s: %s (retrying every %g s)", name, text, self.interval_s)
                last_error = text
                with self.lock:
                    getattr(self, "db" if name == "database" else name).update(
                        ok=False, error=text, since=time.time())
            self.stopping.wait(max(0.05, self.interval_s - (time.monotonic() - started)))

    # ------------------------------------------------------------------------------------ sources
    def _q(self, sql: str, params: Optional[list[Any]] = None) -> list[dict[str, Any]]:
        columns, _types, rows = self.database.query(sql, params)
        return [dict(zip(columns, r)) for r in rows]

    def poll_database(self) -> None:
        table = self._q(_SQL_TABLE)[0]
        by_type = {r["event_type"] or "(none)": r["n"] for r in self._q(_SQL_TYPES)}
        funnel = self._q(_SQL_FUNNEL)
        revenue = self._q(_SQL_REVENUE)
        stored = {r["partition"]: r["next_offset"] for r in self._q(_SQL_OFFSETS, [S.LOADER_GROUP, S.CLEAN_TOPIC])}
        self.rates["rows"].add(float(table["rows"]))
        with self.lock:
            self.db = {
                "ok": True, "error": None, "updated": time.time(),
                "rows": table["rows"], "last_loaded": table["last_loaded"], "today": table["today"],
                "by_type": by_type,
                "funnel": funnel[0] if funnel else {"page_views": 0, "add_to_carts": 0, "purchases": 0,
                                                    "view_to_cart_rate": None, "cart_to_purchase_rate": None,
                                                    "view_to_purchase_rate": None},
                "revenue": revenue,
                "loader_offsets": stored,
            }

    def _offsets(self, topic: str, group: Optional[str] = None) -> list[tuple[int, int, int, Optional[int]]]:
        return _core.topic_offsets(topic, group_id=group, bootstrap_servers=self.bootstrap_servers,
                                   timeout_s=5.0, extra_config=self.extra_config)

    def poll_kafka(self) -> None:
        raw = self._offsets(S.RAW_TOPIC, S.PROCESSOR_GROUP)
        clean = self._offsets(S.CLEAN_TOPIC)
        records, nxt, restarted = _core.read_topic(
            self.dlq_topic, bootstrap_servers=self.bootstrap_servers, start=self.dlq_next, values=False,
            timeout_s=10.0, extra_config=self.extra_config)
        # Per partition: where the processor stands (its commit; the log start before it has one) and
        # where the log ends. The dev broker reports as high watermark the base offset of the last batch
        # plus one, short of the last record: what the processor has read is past it, so the larger counts.
        done = {p: (c if c is not None else low) for p, low, _high, c in raw}
        end = {p: max(high, done[p]) for p, _low, high, _c in raw}
        produced, processed = sum(end.values()), sum(done.values())
        self.rates["produced"].add(float(produced))
        self.rates["processed"].add(float(processed))
        with self.lock:
            for p in restarted:
                self.dlq_counts.pop(p, None)
            for partition, offset, ts, _key, _value, headers in records:
                h = {k: v.decode("utf-8", "replace") for k, v in headers if v is not None}
                key = (h.get("stage", "?"), h.get("reason", "?"))
                counts = self.dlq_counts.setdefault(partition, {})
                counts[key] = counts.get(key, 0) + 1
                self.dlq_recent.append({"time": ts, "stage": key[0], "reason": key[1], "detail": h.get("detail", ""),
                                        "source": f"{h.get('source.topic', '?')}[{h.get('source.partition', '?')}]"
                                                  f"@{h.get('source.offset', '?')}"})
            self.dlq_next = dict(nxt)
            total = sum(sum(c.values()) for c in self.dlq_counts.values())
            self.kafka = {
                "ok": True, "error": None, "updated": time.time(),
                "produced": produced, "processed": processed,
                "processor_lag": produced - processed,
                "clean": {p: (low, high) for p, low, high, _c in clean},
                "dead_letters": total,
            }
        self.rates["dead_letters"].add(float(total))

    def poll_metrics(self) -> None:
        consumed: dict[str, float] = {}
        lag: dict[str, float] = {}
        dead: dict[str, float] = {}
        rows = 0.0
        errors = []
        for url in self.metrics_urls:
            try:
                with urllib.request.urlopen(url, timeout=2.0) as r:  # noqa: S310 - the user's own endpoint
                    text = r.read().decode("utf-8", "replace")
            except OSError as e:
                errors.append(f"{url}: {e}")
                continue
            for name, labels, value in parse_prometheus(text):
                stage = labels.get("stage", "?")
                if name == "ecomlogs_events_consumed_total":
                    consumed[stage] = consumed.get(stage, 0.0) + value
                elif name == "ecomlogs_rows_inserted_total":
                    rows += value
                elif name == "ecomlogs_dead_letters_total":
                    k = f"{stage}/{labels.get('reason', '?')}"
                    dead[k] = dead.get(k, 0.0) + value
                elif name == "ecomlogs_consumer_lag_messages":
                    lag[stage] = lag.get(stage, 0.0) + value
        if len(errors) == len(self.metrics_urls):
            raise EcomlogsError("; ".join(errors))
        if "processor" in consumed:
            self.rates["m_processor"].add(consumed["processor"])
        if "loader" in consumed:
            self.rates["m_loader"].add(consumed["loader"])
        self.rates["m_rows"].add(rows)
        with self.lock:
            self.metrics = {"ok": True, "error": "; ".join(errors) or None, "updated": time.time(),
                            "urls": self.metrics_urls, "consumed": consumed, "lag": lag, "dead_letters": dead,
                            "rows_inserted": rows, "has": {"processor": "processor" in consumed,
                                                          "loader": "loader" in consumed}}

    # ------------------------------------------------------------------------------------ the view
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            db, kafka, metrics = dict(self.db), dict(self.kafka), dict(self.metrics)
            by_reason: dict[str, int] = {}
            by_stage: dict[str, int] = {}
            for counts in self.dlq_counts.values():
                for (stage, reason), n in counts.items():
                    by_reason[reason] = by_reason.get(reason, 0) + n
                    by_stage[stage] = by_stage.get(stage, 0) + n
            recent = list(self.dlq_recent)[::-1]
        r = {k: v.value for k, v in self.rates.items()}
        has = metrics.get("has", {}) if metrics.get("ok") else {}
        loader_lag = None
        if db.get("ok") and kafka.get("ok"):
            stored = db.get("loader_offsets", {})
            loader_lag = sum(max(high - stored.get(p, low), 0) for p, (low, high) in kafka["clean"].items())
            # (short by up to a batch per partition on the dev broker, whose high watermark is; 0 once drained)
        stages = {
            "producer": {"rate": r["produced"], "total": kafka.get("produced"), "lag": None,
                         "source": f"{S.RAW_TOPIC} offsets"},
            "processor": {"rate": r["m_processor"] if has.get("processor") else r["processed"],
                          "total": kafka.get("processed"),
                          "lag": metrics["lag"].get("processor") if has.get("processor") else kafka.get("processor_lag"),
                          "source": "metrics" if has.get("processor") else f"{S.PROCESSOR_GROUP} commits"},
            "loader": {"rate": r["m_loader"] if has.get("loader") else r["rows"],
                       "total": db.get("rows"),
                       "lag": metrics["lag"].get("loader") if has.get("loader") else loader_lag,
                       "source": "metrics" if has.get("loader") else "table rows"},
        }
        db.pop("loader_offsets", None)
        kafka.pop("clean", None)
        view: dict[str, Any] = jsonable({
            "time": time.time(), "interval_s": self.interval_s,
            "dsn": S.redact(self.dsn), "bootstrap_servers": self.bootstrap_servers, "dlq_topic": self.dlq_topic,
            "database": db, "kafka": kafka, "metrics": metrics, "stages": stages,
            "dead_letters": {"total": kafka.get("dead_letters"), "rate": r["dead_letters"],
                             "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
                             "by_stage": by_stage, "recent": recent},
        })
        return view
