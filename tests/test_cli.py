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


BROKER = ["--bootstrap-servers", "127.0.0.1:1"]  # never reached: the flags fail first


@pytest.mark.parametrize("script,flags,words", [
    ("psqlConsumer.py", ["--until-idle", "inf"], ["until_idle_s"]),
    ("psqlConsumer.py", ["--until-idle", "1e300"], ["until_idle_s"]),
    ("psqlConsumer.py", ["--until-idle", "-1"], ["until_idle_s"]),
    ("psqlConsumer.py", ["--batch-size", "18446744073709551617"], ["batch_size", "18446744073709551617"]),
    ("psqlConsumer.py", ["--batch-size", "0"], ["batch_size", "between 1 and"]),
    ("psqlConsumer.py", ["--workers", "0"], ["workers"]),
    ("psqlConsumer.py", ["--workers", "1000"], ["workers", "between 1 and 64"]),
    ("psqlConsumer.py", ["--topic", "same", "--dlq-topic", "same"], ["dead-letter topic"]),
    ("streamProcessor.py", ["--workers", "1000"], ["workers"]),
    ("streamProcessor.py", ["--group-id", ""], ["group id cannot be empty"]),
    ("streamProcessor.py", ["--output-topic", "raw_events"], ["input topic raw_events"]),
    ("streamProcessor.py", ["--input-topic", "bad name"], ["not a legal Kafka topic name"]),
    ("streamProcessor.py", ["--dlq-topic", "x" * 250], ["not a legal Kafka topic name"]),
    ("producer.py", ["--topic", ""], ["not a legal Kafka topic name"]),
    ("producer.py", ["--topic", ".."], ["not a legal Kafka topic name"]),
    ("producer.py", ["--count", "-1"], ["count"]),
    ("producer.py", ["--rate", "0"], ["rate"]),
    ("producer.py", ["--invalid-ratio", "nan"], ["invalid_ratio"]),
    ("producer.py", ["--extra-config", "no.such.setting=1"], ["no.such.setting"]),
    ("producer.py", ["--extra-config", "linger.ms=soon"], ["linger.ms"]),
    ("producer.py", ["--replication-factor", "0"], ["replication_factor", "between 1 and"]),
    ("psqlConsumer.py", ["--replication-factor", "40000"], ["replication_factor"]),
    ("psqlConsumer.py", ["--unreadable-timeout", "0"], ["unreadable_timeout_s"]),
    ("streamProcessor.py", ["--unreadable-timeout", "nan"], ["unreadable_timeout_s"]),
    ("psqlConsumer.py", ["--dsn", "postgresql://h/db?sslmode=verify-full"], ["sslrootcert"]),
    ("psqlConsumer.py", ["--dsn", "host=h sslmode=allow"], ["sslmode=allow"]),
])
def test_bad_values_are_one_line_and_exit_2(script: str, flags: list[str], words: list[str]) -> None:
    assert_bad_flag(run([script, *BROKER, *flags]), *words)


@pytest.mark.parametrize("call", [
    lambda: ecomlogs.load(until_idle_s=-1),
    lambda: ecomlogs.load(until_idle_s=float("inf")),
    lambda: ecomlogs.load(batch_size=0),
    lambda: ecomlogs.load(batch_size=2**64 + 1),
    lambda: ecomlogs.process(workers=0),
    lambda: ecomlogs.process(workers=1000),
    lambda: ecomlogs.produce(1, invalid_ratio=2.0),
    lambda: ecomlogs.produce(1, extra_config={"no.such.setting": 1}),
    lambda: ecomlogs.ensure_topics([""]),
    lambda: ecomlogs.ensure_topics(["t"], replication_factor=0),
    lambda: ecomlogs.process(unreadable_timeout_s=-1),
    lambda: ecomlogs.load(replication_factor=2**15),
    lambda: ecomlogs.query("SELECT 1", "postgresql://h/db?sslmode=verify-ca&sslrootcert=/no/such/file"),
])
def test_the_python_api_raises_config_error_for_the_same(call: Any) -> None:
    with pytest.raises(ecomlogs.ConfigError):
        call()


def test_config_error_is_also_a_value_error_and_every_error_an_ecomlogs_error() -> None:
    assert issubclass(ecomlogs.ConfigError, ValueError)
    for cls in (ecomlogs.KafkaError, ecomlogs.DatabaseError, ecomlogs.ResourceError, ecomlogs.InternalError,
                ecomlogs.StalledError, ecomlogs.DevStackError):
        assert issubclass(cls, ecomlogs.EcomlogsError)


def test_a_bad_replication_factor_in_the_environment_is_a_bad_flag() -> None:
    import os

    p = subprocess.run([sys.executable, "producer.py", *BROKER], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "ECOMLOGS_REPLICATION_FACTOR": "three"})
    assert_bad_flag(p, "ECOMLOGS_REPLICATION_FACTOR", "three")


def test_kafka_error_code_is_librdkafkas_name() -> None:
    with pytest.raises(ecomlogs.KafkaError) as caught:
        ecomlogs.ensure_topics([unique("t")], bootstrap_servers="127.0.0.1:1", timeout_s=3)
    assert caught.value.code == "_TRANSPORT", (caught.value.code, str(caught.value))


def test_defaults_in_every_signature_are_the_cores() -> None:
    """Defaults are defined once (the Rust core's ``config::defaults``, exported as ``DEFAULTS``); the
    literals in the functions' signatures, which ``help()`` and the stubs show, must be those."""
    d = _core.DEFAULTS

    def default(fn: Any, name: str) -> Any:
        return inspect.signature(fn).parameters[name].default

    pairs = [
        (ecomlogs.produce, "topic", d["raw_topic"]), (ecomlogs.produce, "invalid_ratio", d["invalid_ratio"]),
        (ecomlogs.produce, "partitions", d["partitions"]),
        (ecomlogs.process, "input_topic", d["raw_topic"]), (ecomlogs.process, "output_topic", d["clean_topic"]),
        (ecomlogs.process, "dlq_topic", d["dlq_topic"]), (ecomlogs.process, "group_id", d["processor_group"]),
        (ecomlogs.process, "batch_max", d["batch_max"]), (ecomlogs.process, "workers", d["workers"]),
        (ecomlogs.load, "topic", d["clean_topic"]), (ecomlogs.load, "group_id", d["loader_group"]),
        (ecomlogs.load, "dlq_topic", d["dlq_topic"]), (ecomlogs.load, "batch_size", d["batch_size"]),
        (ecomlogs.load, "flush_interval_ms", d["flush_interval_ms"]),
        (ecomlogs.load, "max_backoff_s", d["max_backoff_s"]), (ecomlogs.load, "workers", d["workers"]),
        (ecomlogs.ensure_topics, "partitions", d["partitions"]),
        (ecomlogs.ensure_topics, "replication_factor", d["replication_factor"]),
        (ecomlogs.produce, "replication_factor", d["replication_factor"]),
        (ecomlogs.process, "replication_factor", d["replication_factor"]),
        (ecomlogs.load, "replication_factor", d["replication_factor"]),
        (ecomlogs.process, "unreadable_timeout_s", d["unreadable_timeout_s"]),
        (ecomlogs.load, "unreadable_timeout_s", d["unreadable_timeout_s"]),
        (_core.generate_events, "invalid_ratio", d["invalid_ratio"]),
    ]
    for fn, name, want in pairs:
        assert default(fn, name) == want, (fn.__name__, name)


def test_help_and_version() -> None:
    for script in ("producer.py", "streamProcessor.py", "psqlConsumer.py"):
        p = run([script, "--version"])
        assert p.returncode == 0 and p.stdout.strip() == f"ecomlogs {ecomlogs.__version__}", p
    p = run(["-m", "ecomlogs", "--version"])
    assert p.returncode == 0 and ecomlogs.__version__ in p.stdout
    p = run(["psqlConsumer.py", "--help"])
    assert p.returncode == 0
    for text in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "--until-caught-up", "50000", "postgres-loader"):
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
