"""The command line: ``ecomlogs <command> ...`` and the three original entry points at the repo root.

Every stage shares one vocabulary of flags and environment variables (see ``--help``); flags win over the
environment, the environment over the defaults, which come from the Rust core (``_core.DEFAULTS``), as do
the ranges every number is checked against (a value out of range is one line and exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

from ecomlogs import _core, logs
from ecomlogs import settings as S
from ecomlogs.exceptions import ConfigError, EcomlogsError

log = logging.getLogger("ecomlogs.cli")
D = S.DEFAULTS
Stats = TypeVar("Stats")


# ---------------------------------------------------------------------------------------------- helpers
def _number(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type that only parses; ranges are checked once, by the core."""

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    return parse


_int = _number(int, "a whole number")
_float = _number(float, "a number")


def _env_help(var: str, default: object) -> str:
    return f"(env {var}; default {default})"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"ecomlogs {_core.__version__}")
    p.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        default=None,
        help="Kafka bootstrap servers " + _env_help("KAFKA_BOOTSTRAP_SERVERS", S.DEFAULT_BOOTSTRAP_SERVERS),
    )
    p.add_argument(
        "--extra-config",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a librdkafka setting passed as is, wins over ours (repeatable), e.g. security.protocol=SSL",
    )
    p.add_argument(
        "--partitions",
        type=_int,
        default=D["partitions"],
        help="partitions for topics this stage creates when missing (default %(default)s)",
    )
    p.add_argument(
        "--replication-factor",
        type=_int,
        default=None,
        help="copies of each partition for topics this stage creates when missing; 3 on a production cluster "
        + _env_help("ECOMLOGS_REPLICATION_FACTOR", D["replication_factor"]),
    )
    _add_verbosity(p)


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors (env ECOMLOGS_LOG=warning)")
    g.add_argument("--verbose", "-v", action="store_true", help="debug output (env ECOMLOGS_LOG=debug)")
    p.add_argument("--log-format", choices=logs.FORMATS, default=None,
                   help="text for people, json for log pipelines: one object per line " + _env_help("ECOMLOGS_LOG_FORMAT", "text"))


def _add_metrics(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=_int, default=None, metavar="PORT",
                   help="serve Prometheus /metrics and /healthz on this port; 0 = a free one, logged "
                   "(env ECOMLOGS_METRICS_PORT; default: off)")
    p.add_argument("--metrics-host", default=None, metavar="HOST",
                   help="address to serve metrics on " + _env_help("ECOMLOGS_METRICS_HOST", "127.0.0.1"))


def _add_dsn(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dsn",
        default=None,
        help="PostgreSQL URL or key=value string (env DATABASE_URL, then the standard PG* variables; default "
        f"{S.DEFAULT_DSN}). A password comes only from here or PGPASSWORD.",
    )


def _add_finish(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--until-idle",
        metavar="SECONDS",
        type=_float,
        default=None,
        help="finish, commit and exit 0 once no input came for this long (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--until-caught-up",
        action="store_true",
        help="finish, commit and exit 0 once every assigned partition has been read to its end",
    )


def _add_unreadable(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unreadable-timeout", metavar="SECONDS", type=_float, default=D["unreadable_timeout_s"],
        help="fail (exit 1) when records that cannot be fetched or decoded (a corrupt batch, a permission the "
        "broker refuses) still block the input after this long; each attempt is logged with topic, partition "
        "and offset (default %(default)s)")


def _add_workers(p: argparse.ArgumentParser, what: str, default: Any = D["workers"],
                 shown: Optional[str] = None) -> None:
    p.add_argument("--workers", type=_int, default=default,
                   help=f"consumer threads in this process, sharing the partitions, {what} (default "
                   f"{shown or '%(default)s'})")


def _setup_logging(args: argparse.Namespace) -> None:
    env = os.environ.get("ECOMLOGS_LOG", "").strip().lower()
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
    if args.quiet:
        level = logging.WARNING
    elif args.verbose:
        level = logging.DEBUG
    elif env:
        if env not in levels:
            raise ConfigError(f"ECOMLOGS_LOG must be debug, info, warning or error, got {env!r}")
        level = levels[env]
    else:
        level = logging.INFO
    fmt = args.log_format or os.environ.get("ECOMLOGS_LOG_FORMAT", "").strip().lower() or "text"
    if fmt not in logs.FORMATS:
        raise ConfigError(f"ECOMLOGS_LOG_FORMAT must be text or json, got {fmt!r}")
    logs.configure(level, fmt)
    _core.reset_log_cache()


def _metrics_server(args: argparse.Namespace) -> Optional[_core.MetricsServer]:
    """Starts the metrics endpoint when asked for (flag, else ECOMLOGS_METRICS_PORT)."""
    port: Optional[int] = getattr(args, "metrics_port", None)
    env = os.environ.get("ECOMLOGS_METRICS_PORT", "").strip()
    if port is None and env and hasattr(args, "metrics_port"):
        try:
            port = int(env)
        except ValueError:
            raise ConfigError(f"ECOMLOGS_METRICS_PORT must be a port number, got {env!r}") from None
    if port is None:
        return None
    host = args.metrics_host or os.environ.get("ECOMLOGS_METRICS_HOST", "").strip() or "127.0.0.1"
    return _core.serve_metrics(port, host)


class _Stopper:
    """Ctrl-C and SIGTERM stop a stage cleanly: the first asks it (through its StopToken) to finish the
    batch in flight, commit and exit 0, without an exception landing in the middle of whatever Python
    code runs at that moment (a log line, say); a second one interrupts at once."""

    def __init__(self) -> None:
        self.token = _core.StopToken()
        self.signals = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.signals += 1
        if self.signals > 1 or self.token.stopped:
            raise KeyboardInterrupt
        self.token.stop()


STOP = _Stopper()


def _signals(command: str) -> None:
    """Installs the handlers for SIGINT and SIGTERM (SIGINT too, explicitly: a stage started in the
    background by a shell inherits it ignored). ``run`` drives its stages from the main thread, where a
    KeyboardInterrupt is what it expects."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    handler = interrupt if command in ("run", "dlq", "dashboard") else STOP
    try:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave the signals alone
        pass


class Progress:
    """A live one-line status on a terminal; a log line every ``every_s`` seconds otherwise."""

    def __init__(self, render: Callable[[Any], str], quiet: bool, every_s: float = 10.0) -> None:
        self.render = render
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.last = 0.0
        self.dirty = False

    def __call__(self, stats: Any) -> None:
        if self.quiet:
            return
        line = self.render(stats)
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
            self.dirty = True
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            log.info(line)

    def close(self) -> None:
        if self.dirty:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.dirty = False


def _report(text: str, level: int = logging.INFO) -> None:
    """A command's closing summary (or error): a plain line on stderr, or a log record with --log-format
    json (so that every line a log pipeline reads is JSON)."""
    root = logging.getLogger()
    if root.handlers and isinstance(root.handlers[0].formatter, logs.JsonFormatter):
        log.log(level, text)
    else:
        print(text, file=sys.stderr)


def _rate(n: float, secs: float) -> str:
    return f"{n / secs:,.0f}/s" if secs > 0 else "-"


def _reasons(by_reason: dict[str, int]) -> str:
    text = ", ".join(f"{k}={v:,}" for k, v in sorted(by_reason.items()))
    return f" ({text})" if text else ""


# ---------------------------------------------------------------------------------------------- produce
def _produce_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Generate synthetic e-commerce events (about 25% deliberately invalid) and produce them to Kafka, "
        "keyed by customer_id. Like the original: one event every 500 ms to raw_events, a line per event."
    )
    _add_common(p)
    _add_metrics(p)
    p.add_argument("--topic", default=S.RAW_TOPIC, help="topic to produce to (default %(default)s)")
    p.add_argument("--interval-ms", type=_float, default=D["interval_ms"],
                   help="pause between events; 0 = as fast as possible, with a progress line (default %(default)s)")
    p.add_argument("--rate", type=_float, default=None, metavar="EVENTS_PER_S",
                   help="events per second (overrides --interval-ms; e.g. 50000 for a steady load test)")
    p.add_argument("--count", type=_int, default=None, help="stop after N events (default: run until Ctrl-C)")
    p.add_argument("--invalid-ratio", type=_float, default=None,
                   help="share of deliberately invalid events " + _env_help("ECOMLOGS_INVALID_RATIO", D["invalid_ratio"]))
    p.add_argument("--seed", type=_int, default=None, help="seed for reproducible events (default: random)")


def _invalid_ratio(flag: Optional[float]) -> float:
    if flag is not None:
        return flag
    env = os.environ.get("ECOMLOGS_INVALID_RATIO", "").strip()
    if not env:
        return float(D["invalid_ratio"])
    try:
        return float(env)
    except ValueError:
        raise ConfigError(f"ECOMLOGS_INVALID_RATIO must be a number between 0 and 1, got {env!r}") from None


def _replication_factor(flag: Optional[int]) -> int:
    if flag is not None:
        return flag
    env = os.environ.get("ECOMLOGS_REPLICATION_FACTOR", "").strip()
    if not env:
        return int(D["replication_factor"])
    try:
        return int(env)
    except ValueError:
        raise ConfigError(f"ECOMLOGS_REPLICATION_FACTOR must be a whole number, got {env!r}") from None


def cmd_produce(args: argparse.Namespace) -> int:
    interval_ms = 1000.0 / args.rate if args.rate and args.rate > 0 else args.interval_ms
    paced = interval_ms > 0
    log_each = interval_ms >= 50 and not args.quiet
    servers = S.bootstrap_servers(args.bootstrap_servers)
    pace = f"{args.rate:,.6g} events/s" if args.rate else (
        f"one event every {args.interval_ms:g} ms" if paced else "as fast as possible")
    log.info("producing to %s on %s (%s)", args.topic, servers, pace)
    progress = Progress(
        lambda s: f"produced {s.produced:,} ({_rate(s.produced, s.elapsed_s)}), acknowledged {s.delivered:,}, "
        f"invalid {s.invalid:,}",
        quiet=args.quiet or log_each,
    )
    try:
        stats = _core.produce(
            args.count, bootstrap_servers=servers, topic=args.topic, interval_ms=args.interval_ms, rate=args.rate,
            invalid_ratio=_invalid_ratio(args.invalid_ratio), seed=args.seed, log_each=log_each,
            partitions=args.partitions, replication_factor=_replication_factor(args.replication_factor),
            extra_config=S.parse_extra_config(args.extra_config), progress=progress, stop=STOP.token,
        )
    finally:
        progress.close()
    _report(
        f"produced {stats.produced:,} events to {args.topic} ({stats.valid:,} valid, {stats.invalid:,} invalid) "
        f"in {stats.elapsed_s:.2f}s ({stats.events_per_s:,.0f}/s); all acknowledged"
        + ("; stopped by signal" if stats.interrupted else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------- process
def _process_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Validate every record of raw_events: valid ones go to clean_events (canonical JSON, same key), "
        "invalid ones to dead_letter_events untouched, with headers saying why. Offsets are committed only "
        "after the outputs are acknowledged (or in one transaction with --exactly-once)."
    )
    _add_common(p)
    _add_metrics(p)
    p.add_argument("--input-topic", default=S.RAW_TOPIC, help="default %(default)s")
    p.add_argument("--output-topic", default=S.CLEAN_TOPIC, help="default %(default)s")
    p.add_argument("--dlq-topic", default=S.DLQ_TOPIC, help="dead-letter topic (default %(default)s)")
    p.add_argument("--group-id", default=S.PROCESSOR_GROUP, help="consumer group (default %(default)s)")
    _add_finish(p)
    p.add_argument("--exactly-once", action="store_true",
                   help="Kafka transactions: outputs and input offsets commit together (read downstream with "
                   "isolation.level=read_committed)")
    p.add_argument("--transactional-id", default=None,
                   help="with --exactly-once: a stable id per instance, so a restart fences a crashed predecessor "
                   "at once (default: group-host-pid)")
    p.add_argument("--batch-max", type=_int, default=D["batch_max"], help="records per batch at most (default %(default)s)")
    _add_unreadable(p)
    p.add_argument("--workers", type=_int, default=D["workers"],
                   help="consumers (group members) in this process, sharing the partitions; one is enough on "
                   "one machine, as it routes on every core (default %(default)s)")
    p.add_argument("--threads", type=_int, default=0,
                   help="threads routing each large batch, whole partitions each (default: one per core)")


def cmd_process(args: argparse.Namespace) -> int:
    # No progress callback: the Rust loop logs a line per second of activity itself.
    stats = _core.process(
        bootstrap_servers=args.bootstrap_servers, input_topic=args.input_topic, output_topic=args.output_topic,
        dlq_topic=args.dlq_topic, group_id=args.group_id, until_idle_s=args.until_idle,
        until_caught_up=args.until_caught_up, exactly_once=args.exactly_once,
        transactional_id=args.transactional_id, batch_max=args.batch_max, workers=args.workers,
        threads=args.threads, log_each=args.verbose, partitions=args.partitions,
        replication_factor=_replication_factor(args.replication_factor), unreadable_timeout_s=args.unreadable_timeout,
        extra_config=S.parse_extra_config(args.extra_config), stop=STOP.token,
    )
    _report(
        f"processed {stats.consumed:,} events in {stats.elapsed_s:.2f}s ({stats.events_per_s:,.0f}/s): "
        f"{stats.valid:,} to {args.output_topic}, {stats.invalid:,} to {args.dlq_topic}"
        + _reasons(stats.by_reason) + ("; stopped by signal" if stats.interrupted else "")
    )
    return 0


# ---------------------------------------------------------------------------------------------- load
def _load_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Load clean_events into PostgreSQL kafka_events_silver, exactly once: each batch is one transaction "
        "holding a binary COPY of the rows and the consumed offsets; the loader resumes where PostgreSQL says, "
        "checked against the log. Database outages pause and retry; rows the database rejects are "
        "dead-lettered; a fault (missing table, no permission) is one line and exit 1."
    )
    _add_common(p)
    _add_metrics(p)
    p.add_argument("--topic", default=S.CLEAN_TOPIC, help="topic to load (default %(default)s)")
    p.add_argument("--group-id", default=S.LOADER_GROUP, help="consumer group (default %(default)s)")
    _add_dsn(p)
    p.add_argument("--batch-size", type=_int, default=D["batch_size"],
                   help="rows per transaction at most; fewer when the input goes quiet (default %(default)s; "
                   "500 is the original's)")
    p.add_argument("--flush-interval-ms", type=_int, default=D["flush_interval_ms"],
                   help="write a batch at the latest this long after its first record; a partial batch is "
                   "written sooner once the topic goes quiet for 50 ms (default %(default)s)")
    p.add_argument("--dlq-topic", default=S.DLQ_TOPIC, help="dead-letter topic (default %(default)s)")
    _add_finish(p)
    p.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start-up")
    _add_unreadable(p)
    _add_workers(p, "each with its own PostgreSQL connection")


def cmd_load(args: argparse.Namespace) -> int:
    stats = _core.load(
        bootstrap_servers=args.bootstrap_servers, dsn=args.dsn, topic=args.topic, group_id=args.group_id,
        dlq_topic=args.dlq_topic, batch_size=args.batch_size, flush_interval_ms=args.flush_interval_ms,
        until_idle_s=args.until_idle, until_caught_up=args.until_caught_up, partitions=args.partitions,
        migrate=not args.no_migrate, log_each=args.verbose, workers=args.workers,
        replication_factor=_replication_factor(args.replication_factor), unreadable_timeout_s=args.unreadable_timeout,
        extra_config=S.parse_extra_config(args.extra_config), stop=STOP.token,
    )
    _report(
        f"loaded {stats.rows_inserted:,} rows in {stats.elapsed_s:.2f}s ({stats.rows_per_s:,.0f}/s) from "
        f"{stats.consumed:,} records: {stats.duplicates_skipped:,} duplicates skipped, "
        f"{stats.dead_lettered:,} dead-lettered"
        + (f", {stats.db_retries} database retries" if stats.db_retries else "")
        + (f", {stats.log_resets} partitions on a new log read again" if stats.log_resets else "")
        + (f", {stats.offsets_lost:,} offsets lost to retention" if stats.offsets_lost else "")
        + ("; stopped by signal" if stats.interrupted else "")
        + (f"; {stats.unwritten:,} records left for the next start" if stats.unwritten else "")
    )
    return 0


def _migrate_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Apply pending migrations, all in one transaction (recorded in schema_migrations): a failure changes "
        "nothing. Safe to run again. A table from the original system may hold an event_id more than once; "
        "the unique key then stops the run with the counts and examples, and --move-duplicates is the fix."
    )
    _add_dsn(p)
    p.add_argument("--move-duplicates", action="store_true",
                   help="keep the row with the lowest id of each duplicated event_id and move the other copies to "
                   "kafka_events_silver_duplicates (same columns plus moved_at), in the same transaction")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be applied and which duplicates stand in the way; change nothing")
    _add_verbosity(p)


def cmd_migrate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    applied = _core.migrate(args.dsn, move_duplicates=args.move_duplicates, dry_run=args.dry_run)
    names = {version: f"{version}_{name}" for version, name, _sql in _core.migrations()}
    labels = ", ".join(names.get(v, v) for v in applied)
    if not applied:
        _report("the schema is up to date")
    elif args.dry_run:
        _report(f"dry run: would apply {labels}; nothing was changed")
    else:
        _report(f"applied {labels} in {time.monotonic() - started:.2f}s (one transaction)")
    return 0


# ---------------------------------------------------------------------------------------------- run
def _run_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run the whole pipeline in one process: producer -> processor -> loader on raw_events, clean_events "
        "and kafka_events_silver, with a live status line (events/s and lag per stage, rows, invalid by "
        "reason), then drain and print an analytics report from the views. Start the local stack first "
        "(python -m ecomlogs.devstack up) or point at your own Kafka and PostgreSQL."
    )
    _add_common(p)
    _add_metrics(p)
    _add_dsn(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--count", type=_int, default=200_000,
                   help="events to produce; 0 = until Ctrl-C or --duration (default %(default)s)")
    g.add_argument("--duration", type=_float, default=None, metavar="SECONDS", help="produce for this long")
    p.add_argument("--rate", type=_float, default=None, metavar="EVENTS_PER_S",
                   help="events per second (default: as fast as possible; 2 = the original's pace)")
    p.add_argument("--invalid-ratio", type=_float, default=None,
                   help="share of deliberately invalid events " + _env_help("ECOMLOGS_INVALID_RATIO", D["invalid_ratio"]))
    p.add_argument("--seed", type=_int, default=None, help="seed for reproducible events")
    p.add_argument("--batch-size", type=_int, default=D["batch_size"],
                   help="loader rows per transaction at most (default %(default)s)")
    p.add_argument("--flush-interval-ms", type=_int, default=D["flush_interval_ms"],
                   help="loader time bound per batch (default %(default)s)")
    p.add_argument("--exactly-once", action="store_true", help="transactional processor")
    p.add_argument("--stall-timeout", type=_float, default=60.0, metavar="SECONDS",
                   help="while draining, fail (exit 1, naming the stage) if the stage waited on makes no progress "
                   "for this long (default %(default)s)")


def cmd_run(args: argparse.Namespace) -> int:
    from ecomlogs.pipeline import _print_status, format_report, run_pipeline

    count = None if (args.count == 0 or args.duration is not None) else args.count
    if not args.verbose:
        # The status line says it all; the stages' own per-second lines would scroll it away.
        for name in ("ecomlogs.processor", "ecomlogs.loader", "ecomlogs.kafka", "ecomlogs.producer",
                     "ecomlogs.stage"):
            logging.getLogger(name).setLevel(logging.WARNING)
        _core.reset_log_cache()
    result = run_pipeline(
        count=count, duration_s=args.duration, rate=args.rate, bootstrap_servers=args.bootstrap_servers,
        dsn=args.dsn, invalid_ratio=_invalid_ratio(args.invalid_ratio), seed=args.seed, batch_size=args.batch_size,
        flush_interval_ms=args.flush_interval_ms, exactly_once=args.exactly_once, partitions=args.partitions,
        replication_factor=_replication_factor(args.replication_factor),
        extra_config=S.parse_extra_config(args.extra_config), status=None if args.quiet else _print_status,
        stall_timeout_s=args.stall_timeout,
    )
    if sys.stderr.isatty() and not args.quiet:
        sys.stderr.write("\n")
    print(
        f"\npipeline: produced {result.produced:,} events in {result.elapsed_s:.1f}s; "
        f"{result.valid:,} valid -> {result.rows_inserted:,} new rows"
        + (f" ({result.duplicates_skipped:,} duplicates skipped)" if result.duplicates_skipped else "")
        + f"; {result.invalid:,} dead-lettered" + _reasons(result.invalid_by_reason)
        + ("; stopped by signal" if result.interrupted else "")
    )
    print(format_report(result.report))
    return 0


# ---------------------------------------------------------------------------------------------- dlq
def _dlq_parser(p: argparse.ArgumentParser) -> None:
    from ecomlogs.dlq_cli import configure

    configure(p, _add_verbosity, _env_help)


def cmd_dlq(args: argparse.Namespace) -> int:
    from ecomlogs.dlq_cli import run

    return run(args)


# ---------------------------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "produce": ("generate events into raw_events (producer.py)", _produce_parser, cmd_produce),
    "process": ("validate raw_events into clean_events + dead letters (streamProcessor.py)", _process_parser,
                cmd_process),
    "load": ("load clean_events into PostgreSQL, exactly once (psqlConsumer.py)", _load_parser, cmd_load),
    "migrate": ("apply the database migrations", _migrate_parser, cmd_migrate),
    "run": ("the whole pipeline in one process, with live status and a report", _run_parser, cmd_run),
    "dlq": ("inspect dead letters, or replay them to the topic they came from", _dlq_parser, cmd_dlq),
    "dashboard": ("a live web page of the pipeline and its numbers (local, read-only)",
                  lambda p: _dashboard().configure_parser(p), lambda a: _dashboard().command(a)),
}


def _dashboard() -> Any:
    import ecomlogs.dashboard

    return ecomlogs.dashboard


def build_parser(prog: str = "ecomlogs") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ecomlogs: e-commerce event logs from Kafka through validation into PostgreSQL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ecomlogs {_core.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (helptext, configure, _run) in COMMANDS.items():
        configure(sub.add_parser(name, help=helptext))
    return parser


def _execute(label: str, args: argparse.Namespace) -> int:
    """Runs a parsed command; errors become one readable line and an exit code, never a traceback."""
    try:
        _setup_logging(args)
        _signals(args.command)
        server = _metrics_server(args)
        try:
            return COMMANDS[args.command][2](args)
        finally:
            if server is not None:
                server.close()
    except ConfigError as e:
        _report(f"{label}: error: {e}", logging.ERROR)
        return 2
    except EcomlogsError as e:
        _report(f"{label}: error: {e}", logging.ERROR)
        return 1
    except KeyboardInterrupt:
        print(f"{label}: stopped", file=sys.stderr)
        return 0


def main(argv: Optional[Sequence[str]] = None, prog: str = "ecomlogs") -> int:
    """``ecomlogs COMMAND [flags]``; returns the process exit code."""
    args = build_parser(prog).parse_args(argv)
    return _execute(f"{prog} {args.command}", args)


def entry_point(command: str) -> None:
    """For the root scripts: ``python producer.py [flags]`` is ``ecomlogs produce [flags]``."""
    prog = os.path.basename(sys.argv[0]) or command
    parser = argparse.ArgumentParser(prog=prog)
    COMMANDS[command][1](parser)
    args = parser.parse_args(sys.argv[1:])
    args.command = command
    sys.exit(_execute(prog, args))


if __name__ == "__main__":
    sys.exit(main())
