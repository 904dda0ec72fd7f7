"""Where the CPU goes in one e2e run (the ``e2e`` section of ``bench/bench.py``), per process.

    .venv/bin/python bench/profile_e2e.py [--e2e-events 1000000] [--sides ecomlogs,baseline] [--out FILE]

Runs one e2e run per side (``bench.e2e_once``: producer, stream processor and loader at the same time,
fresh topics and database) while a sampler thread reads ``/proc`` every 100 ms: CPU ticks of the producer, the
processor, the loader (the stage processes themselves, not their launchers), the broker, PostgreSQL (postmaster
+ children + exited children) and the whole machine (``/proc/stat``). It prints, per side, CPU seconds and
average cores per process over the throughput window (producer start -> last row committed) and a timeline in
0.5 s steps, and writes everything to ``bench/results/profile_e2e.json``. The figures feed ``bench/PROFILE.md``.
Best effort and Linux only; it never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import bench as B  # bench/bench.py (this folder is on sys.path when run as a script)

CLK = os.sysconf("SC_CLK_TCK")
STAGES = {"producer.py": "producer", "streamProcessor.py": "processor", "psqlConsumer.py": "loader"}
CLASSES = ("producer", "processor", "loader", "broker", "postgres")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class Sampler(threading.Thread):
    """Cumulative CPU seconds per process class, every ``interval`` seconds (a process that exits keeps its
    last reading, so sums never go down)."""

    def __init__(self, pids: dict[str, Optional[int]], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float], float]] = []  # (time, per class, machine busy s)
        self._halt = threading.Event()
        self._last: dict[int, tuple[str, float]] = {}  # stage pid -> (class, cpu s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    @staticmethod
    def _machine_busy() -> float:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(x) for x in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values[:8]) - idle) / CLK

    def _sample(self) -> None:
        now = time.time()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid not in self._last:
                argv = _cmdline(pid)
                # The stage itself is "python <script> ..."; its launcher is "python -c <code> <report> python <script>".
                if len(argv) < 2 or argv[1] == "-c":
                    continue
                name = next((cls for script, cls in STAGES.items() if argv[1].endswith(script)), None)
                if name is None:
                    continue
                self._last[pid] = (name, 0.0)
            stat = B._proc_stat(pid)
            if stat:
                self._last[pid] = (self._last[pid][0], (int(stat[11]) + int(stat[12])) / CLK)
        per = {c: 0.0 for c in CLASSES}
        for cls, cpu in self._last.values():
            per[cls] += cpu
        servers = B.server_cpu(self.pids)
        per["broker"] = servers["broker"] or 0.0
        per["postgres"] = servers["postgres"] or 0.0
        self.samples.append((now, per, self._machine_busy()))

    def run(self) -> None:
        while not self._halt.is_set():
            self._sample()
            time.sleep(self.interval)

    def at(self, t: float) -> tuple[dict[str, float], float]:
        """The sample closest to time ``t``."""
        best = min(self.samples, key=lambda s: abs(s[0] - t))
        return best[1], best[2]


def profile_side(cfg: B.BenchConfig, ws: B.Workspace, side: str) -> dict[str, Any]:
    sampler = Sampler(ws.server_pids())
    sampler.start()
    try:
        sample = B.e2e_once(cfg, ws, side)
    finally:
        sampler.stop()
    t0, t_end = sample.extra["t0_epoch"], sample.extra["t_end_epoch"]
    window = t_end - t0
    start, machine0 = sampler.at(t0)
    end, machine1 = sampler.at(t_end)
    cpu = {c: round(end[c] - start[c], 3) for c in CLASSES}
    timeline = []
    step = 0.5
    t = t0
    while t < t_end + 1e-9:
        a, ma = sampler.at(t)
        b, mb = sampler.at(min(t + step, t_end))
        span = max(min(t + step, t_end) - t, 1e-6)
        timeline.append({"t": round(t - t0, 2), **{c: round((b[c] - a[c]) / span, 2) for c in CLASSES},
                         "machine": round((mb - ma) / span, 2)})
        t += step
    return {
        "side": side,
        "events": sample.count,
        "window_s": round(window, 3),
        "raw_events_per_s": round(sample.events_per_s, 1),
        "cpu_s_in_window": cpu,
        "cores_in_window": {c: round(v / window, 2) for c, v in cpu.items()},
        "machine_busy_cores": round((machine1 - machine0) / window, 2),
        "cpus": os.cpu_count(),
        "timeline": timeline,
        "sample": asdict(sample),
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--e2e-events", type=int, default=B.DEFAULT_E2E_EVENTS)
    p.add_argument("--sides", default="ecomlogs,baseline")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--processor-workers", type=int, default=3, help="as `ecomlogs run`: one per partition")
    p.add_argument("--loader-workers", type=int, default=1)
    args = p.parse_args(argv)
    B.restore_sigint()
    parser = B.build_parser()
    cfg = B.config_from_args(parser.parse_args(["--sections", "e2e", "--e2e-events", str(args.e2e_events),
                                                "--repeat", "1",
                                                "--processor-workers", str(args.processor_workers),
                                                "--loader-workers", str(args.loader_workers)]), parser)
    out = args.out or cfg.repo_root / "bench" / "results" / "profile_e2e.json"
    ws = B.Workspace(cfg)
    results = []
    try:
        B.predicted_baseline_valid(cfg, ws, cfg.e2e_events)
        for side in args.sides.split(","):
            B.progress(f"profile: e2e {side}, {cfg.e2e_events:,} raw events")
            results.append(profile_side(cfg, ws, side))
    finally:
        ws.close()
    out.write_text(json.dumps({"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "host": B.host_info(), "runs": results}, indent=2) + "\n", encoding="utf-8")
    for r in results:
        print(f"\n## {r['side']}: {r['events']:,} raw events in {r['window_s']:.2f} s "
              f"({r['raw_events_per_s']:,.0f}/s); machine busy {r['machine_busy_cores']:.2f} of {r['cpus']} cores")
        print("| process | CPU s in window | avg cores |\n|---|---:|---:|")
        for c in CLASSES:
            print(f"| {c} | {r['cpu_s_in_window'][c]:.2f} | {r['cores_in_window'][c]:.2f} |")
        print("\n| t (s) | " + " | ".join(CLASSES) + " | machine |\n|---:|" + "---:|" * (len(CLASSES) + 1))
        for row in r["timeline"]:
            print(f"| {row['t']:.1f} | " + " | ".join(f"{row[c]:.2f}" for c in CLASSES) + f" | {row['machine']:.2f} |")
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
