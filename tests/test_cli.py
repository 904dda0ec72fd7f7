"""Edges of the command line and the Python API: every number is checked once, with its range; every
error is one readable line (exit 2 for a bad flag, 1 for a service); defaults are defined once."""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import ecomlogs
from ecomlogs import _core
from helpers import ROOT, finish, unique


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_bad_flag(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr, p.stderr
    assert "error" in lines[-1] and all(w in lines[-1] for w in words), p.stderr


NOWHERE = ["--bootstrap-servers", "127.0.0.1:1"]  # never reached: the flags fail first
NO_DB = ["--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"]
SECRET = "topsecret-4711"

# (argv after `python`, words the one error line must hold). Every command, every kind of bad value:
# numbers and durations out of range, unknown reason codes, unknown librdkafka keys (their values never
# shown), malformed URLs, names Kafka does not allow; each refused before anything is connected to.
BAD = [
    (["psqlConsumer.py", *NOWHERE, "--until-idle", "inf"], ["--until-idle"]),
    (["psqlConsumer.py", *NOWHERE, "--until-idle", "1e300"], ["--until-idle"]),
    (["psqlConsumer.py", *NOWHERE, "--until-idle", "-1"], ["--until-idle"]),
    (["psqlConsumer.py", *NOWHERE, "--batch-size", "18446744073709551617"], ["--batch-size", "18446744073709551617"]),
    (["psqlConsumer.py", *NOWHERE, "--batch-size", "0"], ["--batch-size", "between 1 and"]),
    (["psqlConsumer.py", *NOWHERE, "--batch-size", "many"], ["--batch-size", "whole number"]),
    (["psqlConsumer.py", *NOWHERE, "--workers", "0"], ["--workers"]),
    (["psqlConsumer.py", *NOWHERE, "--workers", "1000"], ["--workers", "between 1 and 64"]),
    (["psqlConsumer.py", *NOWHERE, *NO_DB, "--topic", "same", "--dlq-topic", "same"], ["dead-letter topic"]),
    (["psqlConsumer.py", *NOWHERE, "--replication-factor", "40000"], ["--replication-factor"]),
    (["psqlConsumer.py", *NOWHERE, "--unreadable-timeout", "0"], ["--unreadable-timeout"]),
    (["psqlConsumer.py", *NOWHERE, "--max-backoff", "nan"], ["--max-backoff"]),
    (["psqlConsumer.py", *NOWHERE, "--dsn", "postgresql://h/db?sslmode=verify-full"], ["sslrootcert"]),
    (["psqlConsumer.py", *NOWHERE, "--dsn", "host=h sslmode=allow"], ["sslmode=allow"]),
    (["psqlConsumer.py", *NOWHERE, "--metrics-port", "70000"], ["--metrics-port", "65535"]),
    (["psqlConsumer.py", *NOWHERE, "--extra-config", f"sasl.pasword={SECRET}"], ["sasl.pasword=***"]),
    (["psqlConsumer.py", *NOWHERE, "--extra-config", f"sasl.password:{SECRET}"], ["--extra-config expects KEY=VALUE"]),
    (["psqlConsumer.py", "--bootstrap-servers", "localhost"], ["--bootstrap-servers", "host:port"]),
    (["streamProcessor.py", *NOWHERE, "--workers", "1000"], ["--workers"]),
    (["streamProcessor.py", *NOWHERE, "--group-id", ""], ["group id cannot be empty"]),
    (["streamProcessor.py", *NOWHERE, "--output-topic", "raw_events"], ["input topic raw_events"]),
    (["streamProcessor.py", *NOWHERE, "--input-topic", "bad name"], ["not a legal Kafka topic name"]),
    (["streamProcessor.py", *NOWHERE, "--dlq-topic", "x" * 250], ["not a legal Kafka topic name"]),
    (["streamProcessor.py", *NOWHERE, "--unreadable-timeout", "nan"], ["--unreadable-timeout"]),
    (["streamProcessor.py", *NOWHERE, "--threads", "-1"], ["--threads"]),
    (["producer.py", *NOWHERE, "--topic", ""], ["not a legal Kafka topic name"]),
    (["producer.py", *NOWHERE, "--topic", ".."], ["not a legal Kafka topic name"]),
    (["producer.py", *NOWHERE, "--count", "-1"], ["--count"]),
    (["producer.py", *NOWHERE, "--rate", "0"], ["--rate"]),
    (["producer.py", *NOWHERE, "--invalid-ratio", "nan"], ["--invalid-ratio"]),
    (["producer.py", *NOWHERE, "--extra-config", "no.such.setting=1"], ["no.such.setting"]),
    (["producer.py", *NOWHERE, "--extra-config", "linger.ms=soon"], ["linger.ms"]),
    (["producer.py", *NOWHERE, "--replication-factor", "0"], ["--replication-factor", "between 1 and"]),
    (["producer.py", *NOWHERE, "--seed", "-5"], ["--seed"]),
    (["-m", "ecomlogs", "run", *NOWHERE, *NO_DB, "--count", "-1"], ["--count"]),
    (["-m", "ecomlogs", "run", *NOWHERE, *NO_DB, "--duration", "0"], ["--duration"]),
    (["-m", "ecomlogs", "run", *NOWHERE, *NO_DB, "--stall-timeout", "inf"], ["--stall-timeout"]),
    (["-m", "ecomlogs", "run", *NOWHERE, *NO_DB, "--count", "5", "--duration", "5"], ["not allowed with"]),
    (["-m", "ecomlogs", "run", *NOWHERE, *NO_DB, "--extra-config", f"ssl.key.pasword={SECRET}"], ["=***"]),
    (["-m", "ecomlogs", "migrate", "--dsn", "postgresql://x:notaport/db"], ["port"]),
    (["-m", "ecomlogs", "migrate", "--dsn", ""], ["--dsn cannot be empty"]),
    (["-m", "ecomlogs", "dlq", "inspect", *NOWHERE, "--since", "99999999d"], ["since", "before the year 1"]),
    (["-m", "ecomlogs", "dlq", "inspect", *NOWHERE, "--since", "9999999999999999999999s"], ["since"]),
    (["-m", "ecomlogs", "dlq", "inspect", *NOWHERE, "--since", "yesterday"], ["since", "ISO 8601"]),
    (["-m", "ecomlogs", "dlq", "inspect", *NOWHERE, "--samples", "-1"], ["--samples"]),
    (["-m", "ecomlogs", "dlq", "replay", *NOWHERE, "--reason", "no_such_reason"],
     ["no_such_reason", "the known ones are", "database_rejected", "missing_currency"]),
    (["-m", "ecomlogs", "dlq", "replay", *NOWHERE, "--stage", "producer"], ["--stage", "processor, loader"]),
    (["-m", "ecomlogs", "dlq", "replay", *NOWHERE, "--until-idle", "-5"], ["--until-idle"]),
    (["-m", "ecomlogs", "dlq", "replay", *NOWHERE, "--rate", "0"], ["--rate"]),
    (["-m", "ecomlogs", "dlq", "replay", *NOWHERE, "--dlq-topic", ""], ["not a legal Kafka topic name"]),
    (["-m", "ecomlogs", "dlq", "replay", *NOWHERE, "--extra-config", f"sasl.password={SECRET}",
      "--extra-config", "no.such.prop=1"], ["no.such.prop=***"]),
    (["-m", "ecomlogs", "dashboard", *NOWHERE, "--metrics-url", "http://[::1"], ["--metrics-url", "not a valid URL"]),
    (["-m", "ecomlogs", "dashboard", *NOWHERE, "--extra-config", "no.such.prop=1"], ["no.such.prop"]),
    (["-m", "ecomlogs", "dashboard", *NOWHERE, "--dlq-topic", ""], ["not a legal Kafka topic name"]),
    (["-m", "ecomlogs", "dashboard", *NOWHERE, "--interval", "0"], ["--interval"]),
    (["-m", "ecomlogs", "dashboard", *NOWHERE, "--port", "70000"], ["--port"]),
    (["streamProcessor.py", *NOWHERE, "--contract", "/dev/null"], ["--contract /dev/null", "not JSON"]),
    (["streamProcessor.py", *NOWHERE, "--contract", "no/such/contract.json"], ["cannot read the contract"]),
    (["streamProcessor.py", *NOWHERE, "--contract", "tests"], ["--contract tests", "cannot read"]),
    (["-m", "ecomlogs", "run", *NOWHERE, *NO_DB, "--contract", "README.md"], ["README.md", "not JSON"]),
    (["-m", "ecomlogs", "contract", "check", "pyproject.toml"], ["pyproject.toml", "not JSON"]),
    (["-m", "ecomlogs", "contract", "check", "contracts/default.json", *NOWHERE, "--sample-topic", "a b"],
     ["not a legal Kafka topic name"]),
    (["-m", "ecomlogs", "contract", "check", "contracts/default.json", *NOWHERE, "--sample-size", "0"],
     ["--sample-size"]),
    (["-m", "ecomlogs", "contract", "check", "contracts/default.json", *NOWHERE, "--current-contract", "/dev/null"],
     ["--current-contract /dev/null", "not JSON"]),
    (["-m", "ecomlogs", "nosuchcommand"], ["invalid choice"]),
    (["-m", "ecomlogs", "load", "--no-such-flag"], ["unrecognized arguments"]),
]


@pytest.mark.parametrize("argv,words", BAD, ids=lambda v: " ".join(v)[-60:] if isinstance(v, list) and v and
                         isinstance(v[0], str) and v[0] != "--count" else None)
def test_every_bad_input_is_one_line_and_exit_2_before_connecting(argv: list[str], words: list[str]) -> None:
    began = time.monotonic()
    p = run(argv, timeout=60)
    took = time.monotonic() - began
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr, p.stderr
    assert "error" in lines[0] and all(w in lines[0] for w in words), p.stderr
    assert SECRET not in p.stderr + p.stdout
    assert took < 15, f"{took:.1f} s: something was connected to first"


@pytest.mark.parametrize("var,value,script", [
    ("ECOMLOGS_REPLICATION_FACTOR", "three", "producer.py"),
    ("ECOMLOGS_INVALID_RATIO", "2", "producer.py"),
    ("ECOMLOGS_METRICS_PORT", "99999", "psqlConsumer.py"),
    ("ECOMLOGS_LOG_FORMAT", "xml", "streamProcessor.py"),
    ("KAFKA_BOOTSTRAP_SERVERS", "no-port-here", "streamProcessor.py"),
    ("ECOMLOGS_CONTRACT", "/dev/null", "streamProcessor.py"),
])
def test_a_bad_value_in_the_environment_is_a_bad_flag_naming_the_variable(var: str, value: str, script: str) -> None:
    import os

    p = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, var: value})
    assert_bad_flag(p, var)


def test_config_error_is_also_a_value_error_and_every_error_an_ecomlogs_error() -> None:
    assert issubclass(ecomlogs.ConfigError, ValueError)
    for cls in (ecomlogs.KafkaError, ecomlogs.DatabaseError, ecomlogs.ResourceError, ecomlogs.InternalError,
                ecomlogs.StalledError):
        assert issubclass(cls, ecomlogs.EcomlogsError)


def test_kafka_error_code_is_librdkafkas_name() -> None:
    with pytest.raises(ecomlogs.KafkaError) as caught:
        ecomlogs.ensure_topics([unique("t")], bootstrap_servers="127.0.0.1:1", timeout_s=3)
    assert caught.value.code == "_TRANSPORT", (caught.value.code, str(caught.value))


# ------------------------------------------------------------------------------------ declared once
PY_FUNCTIONS = {"produce": ecomlogs.produce, "process": ecomlogs.process, "load": ecomlogs.load,
                "topics": ecomlogs.ensure_topics, "migrate": ecomlogs.migrate, "dlq inspect": _core.dlq_inspect,
                "dlq replay": _core.dlq_replay, "dead letters": _core.dlq_read, "retention": ecomlogs.retention,
                "rebuild-rollups": ecomlogs.rebuild_rollups}
NOT_OPTIONS = {"progress", "progress_every_s", "stop", "topics", "timeout_s", "since_ms"}


def _table(command: str, surface: str) -> list[str]:
    return [o["name"] for o in _core.OPTIONS if o["command"] == command and o[surface]]


@pytest.mark.parametrize("command", sorted(PY_FUNCTIONS))
def test_each_python_signature_takes_exactly_its_commands_options_with_none_for_default(command: str) -> None:
    """Options are declared once (the core's table); a signature names them and takes None for "use the
    environment or the default", which the table resolves."""
    fn = PY_FUNCTIONS[command]
    params = inspect.signature(fn).parameters
    names = [n for n in params if n not in NOT_OPTIONS or n in _table(command, "python")]
    assert sorted(names) == sorted(_table(command, "python")), command
    assert all(params[n].default is None for n in names), command


def test_the_stub_writes_ellipsis_for_every_option_default() -> None:
    import ast

    tree = ast.parse((ROOT / "python" / "ecomlogs" / "_core.pyi").read_text())
    stubs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for command, fn in PY_FUNCTIONS.items():
        args = stubs[fn.__name__].args
        defaults = dict(zip([a.arg for a in args.kwonlyargs], args.kw_defaults))
        defaults.update(zip([a.arg for a in args.args][-len(args.defaults):] if args.defaults else [], args.defaults))
        for name in _table(command, "python"):
            d = defaults[name]
            assert isinstance(d, ast.Constant) and d.value is Ellipsis, (fn.__name__, name)


def test_defaults_come_from_the_table() -> None:
    d = _core.DEFAULTS
    assert d["load"]["batch_size"] == 50_000 and d["process"]["batch_max"] == 10_000
    assert (d["process"]["input_topic"], d["load"]["topic"], d["load"]["dlq_topic"]) == (
        "raw_events", "clean_events", "dead_letter_events")
    assert (d["process"]["group_id"], d["load"]["group_id"]) == ("silver-stream-processor", "postgres-loader")
    assert d["run"]["count"] == 200_000 and d["produce"]["count"] is None
    opts = _core.resolve_options("load", {"batch_size": 500})
    assert opts["batch_size"] == 500 and opts["flush_interval_ms"] == 1000 and opts["migrate"] is True
    with pytest.raises(ecomlogs.ConfigError, match="has no option batchsize"):
        _core.resolve_options("load", {"batchsize": 500})


def test_the_readme_configuration_table_is_the_options_table() -> None:
    from ecomlogs import flags

    readme = (ROOT / "README.md").read_text()
    table = flags.markdown_table()
    assert table in readme, "README.md's configuration table differs from flags.markdown_table():\n" + table


def test_a_loader_option_is_named_in_at_most_four_source_files() -> None:
    """Adding an option is one row in the table plus its use: the table, the loader, the binding and the
    stub."""
    import re

    files = [f for f in [*(ROOT / "src").rglob("*.rs"), *(ROOT / "python").rglob("*.py"),
                         *(ROOT / "python").rglob("*.pyi")] if re.search(r"\bbatch_size\b", f.read_text())]
    assert len(files) <= 4, sorted(str(f.relative_to(ROOT)) for f in files)


def test_help_and_version() -> None:
    for script in ("producer.py", "streamProcessor.py", "psqlConsumer.py"):
        p = run([script, "--version"])
        assert p.returncode == 0 and p.stdout.strip() == f"ecomlogs {ecomlogs.__version__}", p
    p = run(["-m", "ecomlogs", "--version"])
    assert p.returncode == 0 and ecomlogs.__version__ in p.stdout
    p = run(["psqlConsumer.py", "--help"])
    assert p.returncode == 0
    for text in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "--until-caught-up", "50000", "postgres-loader",
                 "--no-migrate"):
        assert text in p.stdout, text


def test_a_stage_started_with_sigint_ignored_still_stops_on_sigint(kafka_bootstrap: str) -> None:
    """A script started in the background inherits SIGINT ignored; the stage restores it."""
    topic = unique("raw_sigint")
    proc = subprocess.Popen(
        [sys.executable, "producer.py", "--interval-ms", "20", "--topic", topic, "--quiet",
         "--bootstrap-servers", kafka_bootstrap],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 30
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique("w")})
    try:
        while time.monotonic() < deadline:  # producing: the signal handlers are in place by now
            try:
                if sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(3)):
                    break
            except KafkaException:
                pass
            time.sleep(0.1)
    finally:
        c.close()
    code, err = finish(proc, signal.SIGINT, timeout=30)
    assert code == 0 and "stopped by signal" in err, err


def test_topics_are_created_with_the_replication_factor(kafka_bootstrap: str) -> None:
    """The dev broker takes any factor and reports the replicas it was asked for."""
    import os

    from confluent_kafka.admin import AdminClient

    def replicas(topic: str) -> set[int]:
        meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(topic, timeout=10)
        return {len(p.replicas) for p in meta.topics[topic].partitions.values()}

    api_topic, flag_topic, env_topic = unique("rf_api"), unique("rf_flag"), unique("rf_env")
    ecomlogs.ensure_topics([api_topic], bootstrap_servers=kafka_bootstrap, replication_factor=3)
    assert replicas(api_topic) == {3}
    for topic, flags, env in ((flag_topic, ["--replication-factor", "2"], {}),
                              (env_topic, [], {"ECOMLOGS_REPLICATION_FACTOR": "3"})):
        p = subprocess.run([sys.executable, "producer.py", "--bootstrap-servers", kafka_bootstrap, "--topic", topic,
                            "--count", "1", "--interval-ms", "0", "--quiet", *flags],
                           cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert p.returncode == 0, p.stderr
    assert replicas(flag_topic) == {2} and replicas(env_topic) == {3}
