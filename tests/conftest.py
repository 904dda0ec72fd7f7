"""Shared fixtures: the local dev stack (tools/devstack.py, a dev tool outside the package) and its settings.

The stack is started once per session. Whatever was already running is reused and left running;
at the end only what this session started is stopped.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from devstack import StackInfo

STACK_UP_TIMEOUT = 90.0
STACK_STOP_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    """The running dev stack (``devstack.StackInfo``): a Kafka broker and PostgreSQL."""
    # Imported here so that a missing dev dependency never breaks collection of unrelated tests.
    import devstack

    with pytest.MonkeyPatch.context() as mp:
        # Pin the state folder so that a test changing the working directory cannot point the
        # teardown at another folder.
        mp.setenv(devstack.ENV_STATE_DIR, str(devstack.state_dir()))
        info = devstack.up(timeout=STACK_UP_TIMEOUT)
        # Under pytest-xdist, other workers may still be using what this one started: whoever started
        # the run (./dev test) stops the stack at the end.
        owner = "PYTEST_XDIST_WORKER" not in os.environ
        try:
            yield info
        finally:
            for name, service in (("broker", info.broker), ("postgres", info.postgres)):
                if owner and service.started_now:
                    devstack.down(timeout=STACK_STOP_TIMEOUT, only=name)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: StackInfo) -> str:
    """``bootstrap.servers`` of the dev stack's broker, e.g. ``127.0.0.1:29092``."""
    return stack.bootstrap_servers


@pytest.fixture(scope="session")
def dsn(stack: StackInfo) -> str:
    """libpq URL of the dev stack's ``ecom_kafka`` database."""
    return stack.dsn



@pytest.fixture()
def db(dsn: str) -> Iterator[str]:
    """A fresh database per test on the dev stack's server, so tests never see each other's rows."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(dsn, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as c:
        c.execute(f"CREATE DATABASE {name}")
    admin.close()
    try:
        yield dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        # PostgreSQL may be restarting after an outage test: retry briefly.
        for attempt in range(5):
            try:
                admin = psycopg2.connect(dsn, connect_timeout=10)
                admin.autocommit = True
                with admin.cursor() as c:
                    c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                admin.close()
                break
            except psycopg2.OperationalError:
                time.sleep(2)


@pytest.fixture()
def memory_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of the test's own (memory storage, like the dev stack's), for tests that restart it."""
    from private_services import MemoryBroker

    broker = MemoryBroker(tmp_path_factory.mktemp("broker")).start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture()
def durable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of the test's own that keeps its topics across restarts (Tansu on a local S3 server)."""
    from private_services import DurableBroker

    broker = DurableBroker(tmp_path_factory.mktemp("durable")).start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture()
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL cluster of the test's own, for tests that stop it."""
    from private_services import PrivatePostgres

    pg = PrivatePostgres(tmp_path_factory.mktemp("pg")).start()
    try:
        yield pg
    finally:
        pg.close()
