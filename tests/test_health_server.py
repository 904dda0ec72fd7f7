"""The metrics and health endpoint of a real running stage cannot be held by its clients: /healthz answers
within a second while hundreds of connections sit idle and others announce bodies they never send; only
GET and HEAD are served; silent connections are closed by the server."""

from __future__ import annotations

import signal
import socket
import time
from typing import Iterator
from urllib.parse import urlsplit

import prom
import pytest
from helpers import loader_cmd, start, unique, wait_for

IDLE_CONNECTIONS = 300


def _address(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    assert u.hostname and u.port
    return u.hostname, u.port


def _exchange(addr: tuple[str, int], request: bytes, timeout: float = 5.0) -> bytes:
    """Sends ``request`` on a new connection and reads until the server closes it."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:  # the server may reset after answering a request it did not read
            pass
        return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture()
def loader_url(kafka_bootstrap: str, db: str) -> Iterator[str]:
    """A running loader's metrics endpoint (``http://host:port``), healthy."""
    proc = start([*loader_cmd(kafka_bootstrap, unique("clean"), db, unique("g")), "--metrics-port", "0"])
    lines: list[str] = []
    follower = prom.StderrFollower(proc, lines)
    try:
        url = follower.endpoint()
        wait_for("/healthz 200", lambda: prom.get(url + "/healthz", timeout=5)[0] == 200)
        yield url
    finally:
        code = follower.stop(signal.SIGTERM, timeout=60)
        assert code == 0, "".join(lines)[-3000:]


def test_health_answers_within_a_second_with_300_idle_connections_and_slow_clients(loader_url: str) -> None:
    addr = _address(loader_url)
    idle = [socket.create_connection(addr, timeout=15) for _ in range(IDLE_CONNECTIONS)]
    slow: list[socket.socket] = []
    try:
        # The client: 10 MiB announced, 1 KiB sent, then nothing ...
        for method in (b"POST /metrics", b"GET /healthz"):
            s = socket.create_connection(addr, timeout=5)
            s.sendall(method + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n" + b"x" * 1024)
            slow.append(s)
        # ... and one that sends its request head a line at a time, never finishing it.
        loris = socket.create_connection(addr, timeout=5)
        loris.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow.append(loris)
        for _ in range(5):
            t = time.monotonic()
            status, body = prom.get(loader_url + "/healthz", timeout=5)
            took = time.monotonic() - t
            assert took < 1.0, f"/healthz took {took:.2f} s"
            assert (status, body) == (200, "ok: loader running\n")
            loris.sendall(b"X-Slow: 1\r\n")
        t = time.monotonic()
        assert prom.value(prom.scrape(loader_url), "ecomlogs_stage_up", stage="loader") == 1
        assert time.monotonic() - t < 1.0
        # The clients announcing a body were answered at once, without it being read.
        for s in slow[:2]:
            answer = s.recv(4096)
            assert _status(answer) == 413, answer
        # A connection that sends nothing is closed by the server (its request head is due within 5 s).
        t = time.monotonic()
        assert idle[0].recv(1) == b""
        assert time.monotonic() - t < 10
    finally:
        for s in idle + slow:
            s.close()


def test_only_get_and_head_are_served(loader_url: str) -> None:
    addr = _address(loader_url)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = _exchange(addr, f"{method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert _status(answer) == 405 and b"\r\nallow: get, head" in head, answer
    for path in ("/healthz", "/metrics"):
        answer = _exchange(addr, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _status(answer) == 200 and answer.endswith(b"\r\n\r\n"), answer  # headers, no body
    # A request head over the limit is refused, and the endpoint goes on.
    answer = _exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n")
    assert _status(answer) == 431, answer[:200]
    assert prom.get(loader_url + "/healthz", timeout=5)[0] == 200
