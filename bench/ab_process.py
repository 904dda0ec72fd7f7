"""A/B of the stream processor: another checkout with its own build (say, the commit before a change)
against this one, on one raw topic of N events, alternating; prints events/s (partition assignment -> the
last output record's CreateTime, as the ``process`` section measures) and CPU µs per event of each run.

    git worktree add /tmp/before <commit> && (cd /tmp/before && ./dev build)
    python bench/ab_process.py /tmp/before [N [RUNS]]      # defaults: 1,000,000 events, 4 runs each

Uses the dev stack's broker (``./dev stack up``)."""
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
OTHER = Path(sys.argv[1]).resolve()
SIDES = {
    "before": (str(OTHER / ".venv" / "bin" / "python"), OTHER),
    "today": (sys.executable, HERE),
}
N = int(float(sys.argv[2])) if len(sys.argv) > 2 else 1_000_000
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
cfg = B.BenchConfig(events=N, produce_events=N, repeat=1, bootstrap_servers=B.S.DEFAULT_BOOTSTRAP_SERVERS,
                    dsn=B.S.DEFAULT_DSN, out=Path("/tmp/ab"), sections=(),
                    small=False, keep_topics=False, repo_root=HERE, process_events=N)
ws = B.Workspace(cfg)
raw, n = B.shared_raw_topic(cfg, ws)
res = {k: [] for k in SIDES}
try:
    for i in range(RUNS):
        for name in (list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]):
            py, root = SIDES[name]
            clean, dlq = ws.new_topics(f"ab_clean_{name}", f"ab_dlq_{name}")
            cmd = [py, str(root / "streamProcessor.py"), "--input-topic", raw, "--output-topic", clean,
                   "--group-id", ws.name("ab_group"), "--until-idle", str(cfg.until_idle_s),
                   "--bootstrap-servers", cfg.bootstrap_servers, "--dlq-topic", dlq]
            run = B.run_child(cmd, cwd=root)
            B._check_exit(run, name)
            counts = B.parse_processed(run.stderr)
            out = B.topic_stats(cfg.bootstrap_servers, clean, counts["valid"])
            dead = B.topic_stats(cfg.bootstrap_servers, dlq, counts["invalid"])
            start = B.first_assignment_time(run.stderr)
            end = max(s for s in (out.max_ts_ms, dead.max_ts_ms) if s is not None) / 1000
            rate = n / (end - start)
            res[name].append((rate, run.cpu_s / n * 1e6))
            print(f"{name:7s} run {i+1}: {rate/1000:.1f}k events/s, {run.cpu_s / n * 1e6:.2f} µs CPU/event", flush=True)
            ws.drop_topics([clean, dlq])
    for name, r in res.items():
        print(f"{name:7s} median: {statistics.median(x for x, _ in r)/1000:.1f}k events/s, "
              f"{statistics.median(y for _, y in r):.2f} µs CPU/event")
    ratios = [t[0] / b[0] for t, b in zip(res["today"], res["before"])]
    print("today/before throughput per run:", [round(x, 3) for x in ratios], "median", round(statistics.median(ratios), 3))
finally:
    ws.drop_topics(list(ws.topics))
