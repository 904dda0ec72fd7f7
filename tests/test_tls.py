"""TLS for real, with certificates made by the test: the whole pipeline over Kafka TLS (a broker of the
test's own that clients reach only through a TLS-terminating proxy, with a CA file; also with client
certificates), and the loader over PostgreSQL TLS (a private cluster with ssl=on) in libpq's sslmodes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any, Iterator

import psycopg2
import pytest

import ecomlogs
from helpers import ROOT, assert_exact, produce_clean, unique, wait_for
from tls_services import Certs, TlsBroker, enable_ssl, make_certs, require_client_certs

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture()
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsBroker]:
    broker = TlsBroker(tmp_path_factory.mktemp("tls_broker"), certs).start()
    try:
        yield broker
    finally:
        broker.close()


def extra(conf: dict[str, str]) -> list[str]:
    return [arg for key, value in conf.items() for arg in ("--extra-config", f"{key}={value}")]


def one_error_line(p: subprocess.CompletedProcess[str], code: int) -> str:
    assert p.returncode == code, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert ": error: " in lines[-1], lines[-1]
    return lines[-1]


# ---------------------------------------------------------------------------------------------- Kafka
def test_the_pipeline_runs_over_kafka_tls(tls_broker: TlsBroker, db: str) -> None:
    conf = tls_broker.client_config()
    p = subprocess.run(
        [sys.executable, "-m", "ecomlogs", "run", "--count", "5000", "--seed", "4", "--quiet",
         "--bootstrap-servers", tls_broker.bootstrap_servers, "--dsn", db, *extra(conf)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"produced ([\d,]+) events .*?; ([\d,]+) valid -> ([\d,]+) new rows", p.stdout)
    assert m, p.stdout
    produced, valid, rows = (int(g.replace(",", "")) for g in m.groups())
    assert produced == 5000 and rows == valid > 0
    with psycopg2.connect(db) as conn, conn.cursor() as c:
        c.execute("SELECT count(DISTINCT event_id) FROM kafka_events_silver")
        assert c.fetchone() == (valid,)
    # Every connection went through the proxy, in TLS: a client that speaks plain Kafka to the advertised
    # address gets nowhere, and the proxy saw our clients' TLS sessions.
    assert "accepted connection" in (tls_broker.folder / "stunnel.log").read_text()
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": tls_broker.bootstrap_servers}).list_topics(timeout=3)


def test_a_wrong_ca_is_one_readable_line(tls_broker: TlsBroker, certs: Certs) -> None:
    conf = tls_broker.client_config(ca=certs.other_ca)
    p = subprocess.run(
        [sys.executable, "streamProcessor.py", "--bootstrap-servers", tls_broker.bootstrap_servers,
         "--until-idle", "1", *extra(conf)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = one_error_line(p, 1)
    assert "cannot reach the broker" in line and "certificate verify failed" in line, line


def test_mutual_tls(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> None:
    broker = TlsBroker(tmp_path_factory.mktemp("mtls_broker"), certs, client_certs=True).start()
    try:
        topic = unique("raw_mtls")
        with_cert = broker.client_config(client_cert=True)
        st = ecomlogs.produce(200, bootstrap_servers=broker.bootstrap_servers, topic=topic, seed=2,
                              extra_config=with_cert)
        assert st.delivered == 200
        processed = ecomlogs.process(bootstrap_servers=broker.bootstrap_servers, input_topic=topic,
                                     output_topic=unique("clean"), dlq_topic=unique("dlq"), group_id=unique("g"),
                                     until_caught_up=True, extra_config=with_cert)
        assert processed.consumed == 200
        # Without a client certificate the proxy ends every handshake.
        with pytest.raises(ecomlogs.KafkaError) as caught:
            ecomlogs.ensure_topics([unique("t")], bootstrap_servers=broker.bootstrap_servers, timeout_s=5,
                                   extra_config=broker.client_config())
        assert "cannot reach the broker" in str(caught.value)
    finally:
        broker.close()


# ---------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture()
def ssl_pg(private_pg: Any, certs: Certs) -> Any:
    enable_ssl(private_pg, certs.server_cert, certs.server_key)
    wait_for("PostgreSQL to accept TLS", lambda: _accepts_tls(private_pg.dsn), timeout_s=30)
    return private_pg


def _accepts_tls(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn, sslmode="require", connect_timeout=5).close()
        return True
    except psycopg2.OperationalError:
        return False


SSL_IN_USE = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def tls_in_use(dsn: str) -> bool:
    return ecomlogs.query(SSL_IN_USE, dsn=dsn) == [{"ssl": "true"}]


def with_params(dsn: str, **params: str) -> str:
    return dsn + "?" + "&".join(f"{k}={v}" for k, v in params.items())


def test_sslmodes_are_libpqs(ssl_pg: Any, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    monkeypatch.setenv("HOME", str(ssl_pg.folder))  # no ~/.postgresql/root.crt of the machine's
    dsn = ssl_pg.dsn
    assert tls_in_use(dsn)  # prefer, libpq's default, takes TLS when the server offers it
    assert tls_in_use(with_params(dsn, sslmode="require"))
    assert not tls_in_use(with_params(dsn, sslmode="disable"))
    assert tls_in_use(with_params(dsn, sslmode="verify-ca", sslrootcert=str(certs.ca)))
    assert tls_in_use(with_params(dsn, sslmode="verify-full", sslrootcert=str(certs.ca)))
    # The key=value form too.
    kv = f"host=127.0.0.1 port={ssl_pg.port} user=postgres dbname=ecom_kafka sslmode=verify-full " \
         f"sslrootcert='{certs.ca}'"
    assert tls_in_use(kv)
    # A root certificate that does not match fails under every mode that checks.
    for mode in ("verify-ca", "verify-full", "require"):
        with pytest.raises(ecomlogs.DatabaseError, match="certificate verify failed"):
            ecomlogs.query("SELECT 1", dsn=with_params(dsn, sslmode=mode, sslrootcert=str(certs.other_ca)))
    with pytest.raises(ecomlogs.ConfigError, match="sslrootcert"):
        ecomlogs.query("SELECT 1", dsn=with_params(dsn, sslmode="verify-full"))


def test_the_loader_over_postgres_tls_verify_full(ssl_pg: Any, certs: Certs, kafka_bootstrap: str) -> None:
    topic = unique("clean_tls")
    expected = produce_clean(kafka_bootstrap, topic, 400, seed=21)
    dsn = with_params(ssl_pg.dsn, sslmode="verify-full", sslrootcert=str(certs.ca))
    st = ecomlogs.load(bootstrap_servers=kafka_bootstrap, dsn=dsn, topic=topic, group_id=unique("l"),
                       dlq_topic=unique("dlq"), until_caught_up=True)
    assert st.rows_inserted == len(expected)
    assert_exact(ssl_pg.dsn, expected)


def test_a_wrong_ca_for_postgres_is_one_readable_line(ssl_pg: Any, certs: Certs, kafka_bootstrap: str) -> None:
    dsn = with_params(ssl_pg.dsn, sslmode="verify-full", sslrootcert=str(certs.other_ca))
    p = subprocess.run(
        [sys.executable, "psqlConsumer.py", "--bootstrap-servers", kafka_bootstrap, "--dsn", dsn,
         "--topic", unique("clean"), "--until-idle", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = one_error_line(p, 1)
    assert "connecting to PostgreSQL" in line and "certificate verify failed" in line, line
    assert "sslmode=verify-full" in line


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PGSSL")}


def test_pgsslmode_and_pgsslrootcert_from_the_environment(ssl_pg: Any, certs: Certs) -> None:
    env = {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(certs.ca), "HOME": str(ssl_pg.folder)}
    ok = subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", "--dsn", ssl_pg.dsn], cwd=ROOT,
                        capture_output=True, text=True, timeout=60, env={**_env(), **env})
    assert ok.returncode == 0, ok.stderr
    env["PGSSLROOTCERT"] = str(certs.other_ca)
    bad = subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", "--dsn", ssl_pg.dsn], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env={**_env(), **env})
    assert "certificate verify failed" in one_error_line(bad, 1)


def test_verify_full_checks_the_host_name_and_verify_ca_does_not(private_pg: Any, certs: Certs) -> None:
    # This certificate names "localhost" only, not 127.0.0.1.
    enable_ssl(private_pg, certs.localhost_cert, certs.localhost_key)
    wait_for("PostgreSQL to accept TLS", lambda: _accepts_tls(private_pg.dsn), timeout_s=30)
    by_ip = private_pg.dsn
    by_name = by_ip.replace("127.0.0.1", "localhost")
    ca = str(certs.ca)
    assert tls_in_use(with_params(by_ip, sslmode="verify-ca", sslrootcert=ca))
    assert tls_in_use(with_params(by_name, sslmode="verify-full", sslrootcert=ca))
    with pytest.raises(ecomlogs.DatabaseError, match="certificate verify failed"):
        ecomlogs.query("SELECT 1", dsn=with_params(by_ip, sslmode="verify-full", sslrootcert=ca))



def test_a_client_certificate_for_postgres(ssl_pg: Any, certs: Certs) -> None:
    require_client_certs(ssl_pg, certs)
    base = with_params(ssl_pg.dsn, sslmode="verify-full", sslrootcert=str(certs.ca))

    def refused() -> bool:
        try:
            ecomlogs.query("SELECT 1", dsn=base)
            return False
        except ecomlogs.DatabaseError as e:
            return "certificate" in str(e)

    wait_for("the server to ask for client certificates", refused, timeout_s=30)
    with_cert = f"{base}&sslcert={certs.client_cert}&sslkey={certs.client_key}"
    assert tls_in_use(with_cert)
    env = {"PGSSLCERT": str(certs.client_cert), "PGSSLKEY": str(certs.client_key)}
    ok = subprocess.run([sys.executable, "-m", "ecomlogs", "migrate", "--dsn", base], cwd=ROOT,
                        capture_output=True, text=True, timeout=60, env={**_env(), **env})
    assert ok.returncode == 0, ok.stderr
