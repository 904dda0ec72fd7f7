"""docker-compose.yml: structure checks (Docker is not needed; `docker compose config` runs if present)."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.timeout(60)

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with open(COMPOSE_FILE) as handle:
        data = yaml.safe_load(handle)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    """The environment block as a dict, whichever of the two compose forms it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default}, with nothing set in the environment."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)


def _published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host ip, host port), from the short or the long port syntax."""
    ports: dict[int, tuple[str, int]] = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = (str(entry.get("host_ip", "0.0.0.0")), int(entry["published"]))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 3:
            ports[int(parts[2])] = (parts[0], int(parts[1]))
        elif len(parts) == 2:
            ports[int(parts[1])] = ("0.0.0.0", int(parts[0]))
        else:
            pytest.fail(f"port {entry!r} is not published on the host")
    return ports


def _kafka_setting(env: dict[str, str], name: str) -> str:
    """A Kafka property from apache/kafka (KAFKA_X) or bitnami/kafka (KAFKA_CFG_X) style variables."""
    for key in (f"KAFKA_{name}", f"KAFKA_CFG_{name}"):
        if key in env:
            return env[key]
    raise AssertionError(f"kafka sets neither KAFKA_{name} nor KAFKA_CFG_{name}")


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}."""
    found = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def test_services_and_the_app_profile(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "kafka-ui", "postgres", "producer", "processor", "loader", "prometheus",
                             "grafana"}
    for name in ("kafka", "kafka-ui", "postgres"):
        assert "profiles" not in services[name], "the services start without a profile"
    assert services["kafka"]["image"].split(":")[0] in ("apache/kafka", "bitnami/kafka")
    assert services["kafka-ui"]["image"].split(":")[0] == "provectuslabs/kafka-ui"
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "15"
    assert services["postgres"]["image"].startswith("postgres:")


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    for name in ("producer", "processor", "loader"):
        assert not services[name].get("ports"), f"{name} serves nothing"
    kafka, ui, pg = (_published(services[name]) for name in ("kafka", "kafka-ui", "postgres"))
    assert 29092 in [port for _, port in kafka.values()]
    assert ui[8080][1] == 8080
    assert pg[5432][1] == 5432
    for ports in (kafka, ui, pg):
        for host_ip, _ in ports.values():
            assert host_ip == "127.0.0.1", "dev passwords: publish on loopback only"


def test_kafka_runs_kraft_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    env = _env(kafka)
    assert not any("ZOOKEEPER" in key for key in env)
    assert set(_kafka_setting(env, "PROCESS_ROLES").split(",")) == {"broker", "controller"}

    node_id = _kafka_setting(env, "NODE_ID")
    voters = _kafka_setting(env, "CONTROLLER_QUORUM_VOTERS").split(",")
    assert len(voters) == 1, "single node: it is the only voter"
    voter_id, _, voter_address = voters[0].partition("@")
    assert voter_id == str(node_id)

    listeners = _listeners(_kafka_setting(env, "LISTENERS"))
    controller_names = _kafka_setting(env, "CONTROLLER_LISTENER_NAMES").split(",")
    assert controller_names and all(name in listeners for name in controller_names)
    voter_host, _, voter_port = voter_address.rpartition(":")
    assert voter_host in ("kafka", kafka.get("hostname", "kafka"))
    assert listeners[controller_names[0]][1] == int(voter_port)

    protocol_map = _kafka_setting(env, "LISTENER_SECURITY_PROTOCOL_MAP")
    protocols = dict(item.split(":") for item in protocol_map.split(","))
    assert set(listeners) <= set(protocols)

    advertised = _listeners(_kafka_setting(env, "ADVERTISED_LISTENERS"))
    assert not set(advertised) & set(controller_names), "controllers are not advertised to clients"
    host_listener = [name for name, address in advertised.items() if address == ("localhost", 29092)]
    assert host_listener, "clients on the host use the original's localhost:29092"
    published = _published(kafka)
    assert published[listeners[host_listener[0]][1]][1] == 29092

    for name in ("OFFSETS_TOPIC_REPLICATION_FACTOR", "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert _kafka_setting(env, name) == "1", "a single node cannot hold more replicas"

    cluster_id = env.get("CLUSTER_ID") or env.get("KAFKA_KRAFT_CLUSTER_ID")
    if cluster_id is not None:  # KRaft wants a base64 (url-safe, unpadded) 16-byte UUID
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_ui_points_at_kafka(services: dict[str, dict[str, Any]]) -> None:
    ui = services["kafka-ui"]
    env = _env(ui)
    bootstrap = env["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"]
    host, _, port = bootstrap.rpartition(":")
    assert host == "kafka"
    kafka_env = _env(services["kafka"])
    advertised = _listeners(_kafka_setting(kafka_env, "ADVERTISED_LISTENERS"))
    assert ("kafka", int(port)) in advertised.values(), "the UI must use a listener advertised as kafka:port"
    assert env.get("KAFKA_CLUSTERS_0_NAME")
    depends = ui["depends_on"]
    assert "kafka" in depends
    if isinstance(depends, dict):
        assert depends["kafka"]["condition"] == "service_healthy"


def test_postgres_matches_the_original(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    pg = services["postgres"]
    env = _env(pg)
    assert env["POSTGRES_DB"] == "ecom_kafka"
    assert env.get("POSTGRES_USER", "postgres") == "postgres"
    assert _interpolate(env["POSTGRES_PASSWORD"]) == "1234"
    for volume in pg.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
        if not source.startswith((".", "/")):
            assert source in (compose.get("volumes") or {}), f"named volume {source} is not declared"


def test_kafka_keeps_its_log_in_a_declared_volume(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    kafka = services["kafka"]
    log_dirs = _kafka_setting(_env(kafka), "LOG_DIRS").split(",")
    mounted = {}
    for volume in kafka.get("volumes", []):
        source, _, target = (volume.partition(":") if isinstance(volume, str)
                             else (volume["source"], ":", volume["target"]))
        mounted[target.split(":")[0]] = source
    for folder in log_dirs:
        assert folder in mounted, f"log dir {folder} is not on a volume"
        assert mounted[folder] in (compose.get("volumes") or {}), f"volume {mounted[folder]} is not declared"


APP = ("producer", "processor", "loader")


@pytest.mark.parametrize("name", APP)
def test_the_stages_run_commands_and_flags_that_exist(services: dict[str, dict[str, Any]], name: str) -> None:
    from ecomlogs import cli

    stage = services[name]
    assert stage["profiles"] == ["app"]
    assert stage["build"] in (".", {"context": "."}) and (COMPOSE_FILE.parent / "Dockerfile").is_file()
    command = stage["command"]
    assert command[0] == {"producer": "produce", "processor": "process", "loader": "load"}[name]
    cli.build_parser().parse_args(command)  # exits (SystemExit) on an unknown command or flag


@pytest.mark.parametrize("name", APP)
def test_the_stages_reach_the_services_by_name(services: dict[str, dict[str, Any]], name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ecomlogs import _core

    stage, env = services[name], {k: _interpolate(v) for k, v in _env(services[name]).items()}
    host, _, port = env["KAFKA_BOOTSTRAP_SERVERS"].rpartition(":")
    advertised = _listeners(_kafka_setting(_env(services["kafka"]), "ADVERTISED_LISTENERS"))
    assert (host, int(port)) in advertised.values()
    needs = stage["depends_on"]
    assert needs["kafka"]["condition"] == "service_healthy"
    if name == "loader":
        assert needs["postgres"]["condition"] == "service_healthy"
    # The database settings resolve as the stage will resolve them: the postgres service, its password.
    for key in [k for k in os.environ if k.startswith("PG") or k == "DATABASE_URL"]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dsn = _core.resolve_dsn(None)
    assert "host='postgres'" in dsn and "dbname='ecom_kafka'" in dsn
    password = _interpolate(_env(services["postgres"])["POSTGRES_PASSWORD"])
    assert f"password='{password}'" in dsn
    assert _env(services["postgres"])["POSTGRES_PASSWORD"] == _env(stage)["PGPASSWORD"], "one variable for both"
    # Every variable the stage gets is one the code reads and the README documents.
    readme = (COMPOSE_FILE.parent / "README.md").read_text()
    for key in env:
        assert f"`{key}`" in readme, f"{key} is not documented"
    assert int(env["ECOMLOGS_REPLICATION_FACTOR"]) == 1, "a single broker holds one replica"


def test_the_env_file_example_matches_the_defaults(services: dict[str, dict[str, Any]]) -> None:
    example = COMPOSE_FILE.parent / ".env.example"
    values = dict(line.split("=", 1) for line in example.read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    assert values["POSTGRES_PASSWORD"] == _interpolate(_env(services["postgres"])["POSTGRES_PASSWORD"])
    assert values["ECOMLOGS_REPLICATION_FACTOR"] == "1"
    ignored = (COMPOSE_FILE.parent / ".gitignore").read_text().split()
    assert "/.env" in ignored or ".env" in ignored, "the real .env (with the password) stays out of git"


def test_the_monitoring_profile_scrapes_the_stages_and_provisions_the_dashboard(
        services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    root = COMPOSE_FILE.parent
    prom, grafana = services["prometheus"], services["grafana"]
    assert prom["profiles"] == ["monitoring"] and grafana["profiles"] == ["monitoring"]
    for service in (prom, grafana):
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (root / source).exists(), f"{source} is mounted but missing"
            else:
                assert source in compose["volumes"]
    scrape = yaml.safe_load((root / "monitoring" / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    for name in ("producer", "processor", "loader"):
        env = _env(services[name])
        assert f"{name}:{env['ECOMLOGS_METRICS_PORT']}" in targets
        assert env["ECOMLOGS_METRICS_HOST"] == "0.0.0.0", "reachable from the Prometheus container"
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
    assert _published(prom)[9090] == ("127.0.0.1", 9090)
    assert _published(grafana)[3000] == ("127.0.0.1", 3000)


@pytest.mark.parametrize("name", ["kafka", "kafka-ui", "postgres"])
def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name]["healthcheck"]
    test = check["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    for key in ("interval", "timeout", "retries"):
        assert key in check
    if name == "postgres":
        assert "pg_isready" in test[1] and "ecom_kafka" in test[1]
    if name == "kafka":
        assert "kafka" in test[1]
