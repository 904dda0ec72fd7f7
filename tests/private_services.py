"""Services of a test's own, for tests that stop or restart them (so that every other test can run at
the same time on the shared dev stack): a memory broker, a broker that keeps its data across restarts
(the bundled Tansu with its S3 storage engine on a local S3 server, moto), and a PostgreSQL cluster.
Each listens on free loopback ports; everything stops at the end.

Known limit of the S3 engine (measured, see the README): it loses acknowledged records when an
idempotent producer's retry meets a restarted broker, and after a restart its watermarks can disagree
with the records it serves. Tests built on it compare the stages' outputs with what the broker holds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import devstack

HOST = "127.0.0.1"
BUCKET = "tansu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited during start-up: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout:.0f} s: {log.read_text()[-2000:]}")


class MemoryBroker:
    """Tansu with memory storage, as the dev stack runs it: a restart empties every topic (a reset log).
    ``bootstrap_servers`` stays the same across :meth:`restart`."""

    storage = "memory://tansu/"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.bootstrap_servers = f"{HOST}:{self.port}"
        self.broker: Optional[subprocess.Popen] = None
        self.restarts = 0

    def start(self) -> "MemoryBroker":
        self._start_broker()
        return self

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _start_broker(self) -> None:
        log = self.folder / "broker.log"
        url = f"tcp://{HOST}:{self.port}"
        cmd = [str(devstack.tansu_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage]
        with open(log, "ab") as out:  # the child keeps its own descriptor
            self.broker = subprocess.Popen(cmd, env=self._env(), stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        wait_port(self.port, self.broker, log)

    def stop_broker(self) -> None:
        # SIGINT stops it at once (SIGTERM lets connections drain for up to 5 s first).
        if self.broker is not None and self.broker.poll() is None:
            self.broker.send_signal(signal.SIGINT)
            try:
                self.broker.wait(15)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait(10)
        self.broker = None

    def restart(self, downtime_s: float = 0.5) -> None:
        self.stop_broker()
        time.sleep(downtime_s)
        self._start_broker()
        self.restarts += 1

    def close(self) -> None:
        self.stop_broker()


class DurableBroker(MemoryBroker):
    """Tansu on S3 (moto)."""

    storage = f"s3://{BUCKET}/"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.s3_port = free_port()
        self.s3: Optional[subprocess.Popen] = None

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def s3_client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def start(self) -> "DurableBroker":  # type: ignore[override]
        log = self.folder / "moto.log"
        moto = Path(sys.executable).with_name("moto_server")
        with open(log, "ab") as out:  # the child keeps its own descriptor
            self.s3 = subprocess.Popen([str(moto), "-H", HOST, "-p", str(self.s3_port)], stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.s3_port, self.s3, log)
        self.s3_client().create_bucket(Bucket=BUCKET)
        self._start_broker()
        return self

    def _env(self) -> dict[str, str]:
        return dict(os.environ, AWS_ENDPOINT=self.s3_endpoint, AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="test",
                    AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")

    def close(self) -> None:
        self.stop_broker()
        if self.s3 is not None and self.s3.poll() is None:
            self.s3.kill()
            self.s3.wait(10)


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (the dev stack's, in another state folder and on another port)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.dsn = f"postgresql://postgres@{HOST}:{self.port}/ecom_kafka"

    @contextlib.contextmanager
    def _pointed(self) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in (devstack.ENV_STATE_DIR, devstack.ENV_PG_PORT)}
        os.environ[devstack.ENV_STATE_DIR] = str(self.folder)
        os.environ[devstack.ENV_PG_PORT] = str(self.port)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, timeout: float = 90.0) -> "PrivatePostgres":
        with self._pointed():
            devstack.up(timeout=timeout, only="postgres")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        with self._pointed():
            devstack.down(timeout=timeout, only="postgres")

    def close(self) -> None:
        with self._pointed():
            data = devstack.status().postgres_data_dir
            devstack.down(timeout=30, only="postgres")
        if data.parent.name.startswith("ecomlogs-devstack-"):  # the /tmp fallback used as root
            shutil.rmtree(data.parent, ignore_errors=True)
