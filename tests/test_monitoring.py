"""The monitoring stack, as far as it runs here: a real Prometheus server (Debian's `prometheus`, installed
by ./dev) scrapes a running loader and answers with the stage's counters; every query of the provisioned
Grafana dashboard is valid PromQL that this Prometheus evaluates over the stage's metrics."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import prom
from helpers import ROOT, loader_cmd, produce_clean, start, unique, wait_for
from private_services import free_port

MONITORING = ROOT / "monitoring"


def _dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads((MONITORING / "grafana" / "dashboards" / "ecomlogs.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


class Prometheus:
    def __init__(self, folder: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "the prometheus server is missing: ./dev test installs it (apt-get install prometheus)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        # The shipped config with the test's target instead of the compose services.
        shipped = (MONITORING / "prometheus.yml").read_text()
        assert '"producer:9464", "processor:9464", "loader:9464"' in shipped
        config.write_text(shipped.replace('"producer:9464", "processor:9464", "loader:9464"', f'"{target}"')
                          .replace("scrape_interval: 5s", "scrape_interval: 1s"))
        self.log = (folder / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, expr: str) -> Any:
        status, body = prom.get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {body}"
        return answer["data"]["result"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def test_prometheus_scrapes_a_running_loader_and_the_dashboard_queries_evaluate(
        kafka_bootstrap: str, db: str, tmp_path: Path) -> None:
    clean = unique("clean")
    expected = produce_clean(kafka_bootstrap, clean, 3000, seed=71)
    proc = start([*loader_cmd(kafka_bootstrap, clean, db, unique("g")), "--metrics-port", "0"])
    lines: list[str] = []
    follower = prom.StderrFollower(proc, lines)
    server = None
    try:
        url = follower.endpoint()
        server = Prometheus(tmp_path, url.removeprefix("http://"))

        def stored() -> bool:
            try:
                got = server.query("ecomlogs_rows_inserted_total")
            except OSError:  # Prometheus still starting
                return False
            return bool(got) and float(got[0]["value"][1]) == len(expected)

        wait_for("Prometheus to scrape every stored row", stored, timeout_s=60, every_s=0.5)
        by_stage = {r["metric"]["stage"]: float(r["value"][1])
                    for r in server.query("ecomlogs_events_consumed_total")}
        assert by_stage == {"loader": len(expected)}
        assert float(server.query("ecomlogs_stage_up")[0]["value"][1]) == 1

        # rate() needs two scrapes inside its window: wait for a third sample before evaluating the panels.
        time.sleep(2.5)
        answered = {title: server.query(expr) for title, expr in _dashboard_queries()}
        for title in ("Stages up", "Throughput per stage (events/s)", "Consumer lag (messages)",
                      "Batch duration p50 / p95", "Event to row p50 / p99", "Memory (RSS)"):
            assert answered[title], f"the panel {title!r} has no data from a running loader"
    finally:
        if server is not None:
            server.close()
        code = follower.stop(signal.SIGTERM, timeout=60)
    assert code == 0, "".join(lines)[-3000:]


def test_dashboard_uses_only_exported_metrics() -> None:
    """Every metric a dashboard query names is one the stages register (src/metrics) or the process
    collector exports: a renamed metric breaks this test, not the dashboard in production."""
    import ecomlogs

    registered = set(re.findall(r'"(ecomlogs_[a-z_]+)"', (ROOT / "src" / "metrics" / "mod.rs").read_text()))
    assert {"ecomlogs_events_consumed_total", "ecomlogs_consumer_lag_seconds", "ecomlogs_event_to_row_seconds",
            "ecomlogs_batch_duration_seconds"} <= registered
    registered |= {name for (name, _labels) in prom.parse(ecomlogs.metrics_text()) if name.startswith("process_")}
    for title, expr in _dashboard_queries():
        names = set(re.findall(r"\b((?:ecomlogs|process)_[a-z_]+)\b", expr))
        assert names, f"{title}: {expr}"
        for n in names:
            stem = re.sub(r"_(bucket|sum|count)$", "", n)
            assert n in registered or stem in registered, f"panel {title!r} uses {n}, which nothing exports"
    provisioning = (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: ecomlogs-prometheus" in provisioning
    assert all(p["datasource"]["uid"] == "ecomlogs-prometheus" for p in
               json.loads((MONITORING / "grafana" / "dashboards" / "ecomlogs.json").read_text())["panels"])
