"""The application image, without a Docker engine: the Dockerfile's structure (a build stage, a slim
runtime stage, a user that is not root), the build context (.dockerignore lets in what the build copies
and nothing else), and its steps as far as they run here: the wheel its build stage builds, installed
as its runtime stage installs it into a fresh environment, runs the whole pipeline."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
    return found


def test_two_stages_a_slim_runtime_and_no_root() -> None:
    build, runtime = stages()
    assert re.fullmatch(r"\S+ AS build", build[0][1], re.I), build[0]
    assert "slim" in runtime[0][1].split()[0] and runtime[0][1].startswith("python:")
    assert ("COPY", "--from=build /wheels /wheels") in runtime
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime runs as an unprivileged user"
    words = [word for word, _ in runtime]
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["ecomlogs"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.replace("**/", "")) \
                or path.startswith(pat + "/"):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_build_copies_and_no_local_state() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    build = stages()[0]
    copied = [src for word, rest in build if word == "COPY" and not rest.startswith("--from")
              for src in rest.split()[:-1]]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not _ignored(src.rstrip("/"), patterns), f"{src} is copied but not in the build context"
    for local in (".venv", ".devstack", "target", "python/ecomlogs/_core.abi3.so", ".env", "tests", "bench"):
        assert _ignored(local, patterns), f"{local} would be sent to the Docker daemon"


def _run_step(command: str) -> list[str]:
    """A RUN line of the build stage that calls maturin, as a command for this machine."""
    args = shlex.split(command)
    at = next(i for i, a in enumerate(args) if a.endswith("maturin"))
    return args[at:]


@pytest.mark.timeout(900)
def test_the_wheel_the_image_builds_installs_and_runs_the_pipeline(tmp_path: Path, memory_broker: Any,
                                                                    db: str) -> None:
    build = stages()[0]
    step = next(rest for word, rest in build if word == "RUN" and "maturin build" in rest)
    args = _run_step(step)
    out = args.index("--out")
    args[out + 1] = str(tmp_path / "wheels")
    args[0] = str(Path(sys.executable).with_name("maturin"))
    built = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = list((tmp_path / "wheels").glob("*.whl"))
    assert len(wheels) == 1, wheels
    # No debug info: the wheel stays small (27 MB of .so with it).
    assert wheels[0].stat().st_size < 12 * 2**20, wheels[0].stat().st_size

    # The runtime stage: a clean Python with nothing but the wheel (its own dependencies: none).
    venv = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = next(rest for word, rest in stages()[1] if word == "RUN" and "pip install" in rest)
    assert "/wheels/*.whl" in install
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", "-q", str(wheels[0])], check=True,
                   timeout=300)
    entry = venv / "bin" / "ecomlogs"
    version = subprocess.run([str(entry), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("ecomlogs "), version
    p = subprocess.run([str(entry), "run", "--count", "3000", "--seed", "5", "--quiet",
                        "--bootstrap-servers", memory_broker.bootstrap_servers, "--dsn", db],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"produced ([\d,]+) events .*?; ([\d,]+) valid -> ([\d,]+) new rows", p.stdout)
    assert m, p.stdout
    produced, valid, rows = (int(g.replace(",", "")) for g in m.groups())
    assert produced == 3000 and rows == valid > 0
