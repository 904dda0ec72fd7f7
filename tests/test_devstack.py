"""Integration tests of the dev stack (tools/devstack.py, a dev tool outside the package) against real processes
(a Tansu broker, PostgreSQL), through its public functions only: no mocks.

Two stacks are involved:

* the session ``stack`` (conftest.py) on the default ports, reused if it already runs and never
  stopped unless this session started it;
* a private stack in a temporary state folder on free ports, which these tests start, stop and
  restart freely without disturbing anyone else.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient

import devstack
from devstack import DevStackError

# The private stack is module-scoped: keep this module's tests on one worker, one after the other.
pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("devstack")]


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((devstack.HOST, 0))
        return int(sock.getsockname()[1])


def _query(dsn: str, sql: str) -> object:
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone() if cur.description else None
        conn.commit()
        return row[0] if row else None
    finally:
        conn.close()


def _list_topics(bootstrap: str) -> dict[str, object]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    metadata = admin.list_topics(timeout=10)
    assert metadata.brokers, "the broker returned no broker metadata"
    return dict(metadata.topics)


# --------------------------------------------------------------------------------------------------
# The session stack


def test_broker_accepts_tcp_and_kafka_metadata(kafka_bootstrap: str) -> None:
    with socket.create_connection(_host_port(kafka_bootstrap), timeout=5):
        pass
    _list_topics(kafka_bootstrap)


def test_postgres_serves_ecom_kafka(dsn: str) -> None:
    assert _query(dsn, "SELECT current_database()") == "ecom_kafka"
    assert _query(dsn, "SELECT current_user") == "postgres"


def test_defaults_match_the_original_system(stack: devstack.StackInfo) -> None:
    bootstrap = os.environ.get(devstack.ENV_BOOTSTRAP, "localhost:29092")
    if bootstrap not in ("localhost:29092", "127.0.0.1:29092"):
        pytest.skip(f"{devstack.ENV_BOOTSTRAP} points at another broker")
    if os.environ.get(devstack.ENV_BROKER_PORT) or os.environ.get(devstack.ENV_PG_PORT):
        pytest.skip("ports overridden in the environment")
    assert _host_port(stack.bootstrap_servers)[1] == 29092
    assert stack.dsn.startswith("postgresql://postgres")
    assert stack.dsn.endswith("@127.0.0.1:5432/ecom_kafka")


def test_up_twice_is_harmless(stack: devstack.StackInfo) -> None:
    again = devstack.up(timeout=60)
    assert (again.bootstrap_servers, again.dsn) == (stack.bootstrap_servers, stack.dsn)
    assert (again.broker.ours, again.postgres.ours) == (stack.broker.ours, stack.postgres.ours)
    assert not again.broker.started_now and not again.postgres.started_now
    assert again.pids == stack.pids
    _list_topics(again.bootstrap_servers)
    assert _query(again.dsn, "SELECT current_database()") == "ecom_kafka"


def test_status_reports_running(stack: devstack.StackInfo) -> None:
    info = devstack.status()
    assert info.running and info.broker.running and info.postgres.running
    assert info.bootstrap_servers == stack.bootstrap_servers
    assert info.dsn.split("@")[1] == stack.dsn.split("@")[1]
    assert info.pids == stack.pids
    if info.broker.ours:
        assert info.broker.log == devstack.state_dir() / "broker.log"
        assert info.broker.log.is_file()


# --------------------------------------------------------------------------------------------------
# A private stack: free ports, temporary state folder


@dataclass(frozen=True)
class Private:
    folder: Path
    broker_port: int
    pg_port: int

    def apply(self, mp: pytest.MonkeyPatch) -> None:
        mp.setenv(devstack.ENV_STATE_DIR, str(self.folder))
        mp.setenv(devstack.ENV_BROKER_PORT, str(self.broker_port))
        mp.setenv(devstack.ENV_PG_PORT, str(self.pg_port))
        mp.delenv(devstack.ENV_BOOTSTRAP, raising=False)

    def env(self) -> dict[str, str]:
        with pytest.MonkeyPatch.context() as mp:
            self.apply(mp)
            return dict(os.environ)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """Settings of a private stack; stopped and removed at the end of the module."""
    settings = Private(tmp_path_factory.mktemp("devstack"), _free_port(), _free_port())
    yield settings
    with pytest.MonkeyPatch.context() as mp:
        settings.apply(mp)
        pg_base = devstack.status().postgres_data_dir.parent
        devstack.down(timeout=30)
    if pg_base.name.startswith("ecomlogs-devstack-"):  # the /tmp fallback used when running as root
        shutil.rmtree(pg_base, ignore_errors=True)


@pytest.fixture()
def private_env(private: Private, monkeypatch: pytest.MonkeyPatch) -> Private:
    """Point the devstack API at the private stack for one test."""
    private.apply(monkeypatch)
    return private


def _pg_accepts(dsn: str) -> bool:
    try:
        _query(dsn, "SELECT 1")
    except psycopg2.OperationalError:
        return False
    return True


def test_private_up_starts_both_services(private_env: Private) -> None:
    assert devstack.status().broker.running is False
    info = devstack.up(timeout=90)
    assert info.broker.started_now and info.postgres.started_now
    assert info.broker.ours and info.postgres.ours
    assert info.bootstrap_servers == f"127.0.0.1:{private_env.broker_port}"
    assert info.dsn == f"postgresql://postgres@127.0.0.1:{private_env.pg_port}/ecom_kafka"
    assert set(info.pids) == {"broker", "postgres"}
    assert info.state_dir == private_env.folder
    assert (private_env.folder / "broker.pid").read_text().split()[0] == str(info.broker.pid)
    assert info.broker.log.is_file() and info.postgres.log.is_file()
    _list_topics(info.bootstrap_servers)
    assert _query(info.dsn, "SELECT current_database()") == "ecom_kafka"
    assert _query(info.dsn, "SHOW listen_addresses") == "127.0.0.1"

    again = devstack.up(timeout=60)
    assert not again.broker.started_now and not again.postgres.started_now
    assert again.pids == info.pids


def test_private_postgres_stop_start_round_trip(private_env: Private) -> None:
    info = devstack.up(timeout=90)
    _query(info.dsn, "CREATE TABLE IF NOT EXISTS survives_restart (n int); "
                     "INSERT INTO survives_restart VALUES (42)")

    assert devstack.down(timeout=30, only="postgres") == ["postgres"]
    assert not _pg_accepts(info.dsn)
    stopped = devstack.status()
    assert not stopped.postgres.running and stopped.postgres.pid is None
    assert stopped.broker.running, "stopping PostgreSQL must leave the broker alone"
    assert devstack.down(timeout=30, only="postgres") == []  # already stopped: a no-op

    started = devstack.up(timeout=60, only="postgres")
    assert started.postgres.started_now and not started.broker.started_now
    assert started.broker.pid == info.broker.pid, "starting PostgreSQL must leave the broker alone"
    assert devstack.status().postgres.running
    assert _query(info.dsn, "SELECT max(n) FROM survives_restart") == 42

    assert devstack.up(timeout=60, only="postgres").postgres.started_now is False  # already running: a no-op
    assert _query(info.dsn, "SELECT count(*) FROM survives_restart") == 1


def test_private_cli_status_and_errors(private_env: Private) -> None:
    devstack.up(timeout=90)
    env = private_env.env()
    cli = [sys.executable, devstack.__file__]

    helped = subprocess.run([*cli, "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    for word in ("up", "down", "status", devstack.ENV_STATE_DIR, devstack.ENV_TANSU_BIN):
        assert word in helped.stdout

    shown = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{private_env.broker_port}" in shown.stdout.splitlines()
    assert (f"DATABASE_URL=postgresql://postgres@127.0.0.1:{private_env.pg_port}/ecom_kafka"
            in shown.stdout.splitlines())

    # A fresh stack with a broken broker binary: one readable line and exit code 1, no traceback.
    env[devstack.ENV_STATE_DIR] = str(private_env.folder / "broken")
    env[devstack.ENV_BROKER_PORT] = str(_free_port())
    env[devstack.ENV_TANSU_BIN] = str(private_env.folder / "no-such-tansu")
    failed = subprocess.run([*cli, "up", "--timeout", "30"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if "error" in line]
    missing = env[devstack.ENV_TANSU_BIN]
    assert errors == [f"devstack: error: {devstack.ENV_TANSU_BIN}={missing} does not exist"]


def test_private_down_stops_what_it_started(private_env: Private) -> None:
    info = devstack.up(timeout=90)
    devstack.down(timeout=30)
    after = devstack.status()
    assert not after.broker.running and not after.postgres.running
    assert after.pids == {}
    assert not (private_env.folder / "broker.pid").exists()
    assert not _pg_accepts(info.dsn)
    devstack.down(timeout=30)  # nothing left to stop: harmless


# --------------------------------------------------------------------------------------------------
# Ports held by someone else


def test_reuses_services_it_did_not_start(stack: devstack.StackInfo, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A second devstack (another state folder) on the session stack's ports uses them as they are."""
    host, broker_port = _host_port(stack.bootstrap_servers)
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("the session broker is not on loopback")
    pg_port = int(stack.dsn.rsplit(":", 1)[1].split("/")[0])
    Private(tmp_path / "other", broker_port, pg_port).apply(monkeypatch)

    info = devstack.up(timeout=60)
    assert not info.broker.ours and not info.postgres.ours
    assert not info.broker.started_now and not info.postgres.started_now
    assert info.pids == {}
    assert info.bootstrap_servers == f"127.0.0.1:{broker_port}"
    assert info.dsn.endswith(f"@127.0.0.1:{pg_port}/ecom_kafka")
    assert len(info.notes) == 2  # both say "not started by devstack"

    assert devstack.down(timeout=10, only="postgres") == []  # not ours: left alone
    assert devstack.down(timeout=10) == []
    _list_topics(stack.bootstrap_servers)
    assert _query(stack.dsn, "SELECT current_database()") == "ecom_kafka"


class _RudeServer:
    """Accepts TCP connections on a free loopback port and closes them at once (not Kafka, not PostgreSQL)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((devstack.HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture()
def rude_server() -> Iterator[_RudeServer]:
    server = _RudeServer()
    yield server
    server.close()


def test_refuses_a_broker_port_held_by_something_else(rude_server: _RudeServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    Private(tmp_path / "state", rude_server.port, _free_port()).apply(monkeypatch)
    with pytest.raises(DevStackError, match=f"127.0.0.1:{rude_server.port}") as caught:
        devstack.up(timeout=30)
    assert isinstance(caught.value, RuntimeError)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "state" / "broker.pid").exists()
    assert not (tmp_path / "state" / "pg" / "data").exists()


def test_refuses_a_postgres_port_held_by_something_else(stack: devstack.StackInfo,
                                                        rude_server: _RudeServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    host, broker_port = _host_port(stack.bootstrap_servers)
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip("the session broker is not on loopback")
    Private(tmp_path / "state", broker_port, rude_server.port).apply(monkeypatch)
    with pytest.raises(DevStackError, match=f"127.0.0.1:{rude_server.port} is taken") as caught:
        devstack.up(timeout=30)
    assert "\n" not in str(caught.value)
    _list_topics(stack.bootstrap_servers)  # the broker it reused is left alone
