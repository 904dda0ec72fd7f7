"""TLS for the tests: certificates made by the test (a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate, and a second CA that signed none of them), a broker of the test's own
behind a TLS-terminating proxy (stunnel; the broker advertises the proxy's address, so every connection
a client makes goes through TLS), and the private PostgreSQL cluster with ``ssl=on``."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from private_services import HOST, MemoryBroker, PrivatePostgres, free_port, wait_port


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    #: Signed by the CA too, but names only "localhost" (not 127.0.0.1): for host-name checks.
    localhost_cert: Path
    localhost_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: Optional[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
          ca: bool = False, server: bool = False, with_ip: bool = True) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer[0].subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        if with_ip:
            names.append(x509.IPAddress(ipaddress.ip_address(HOST)))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256())


def make_certs(folder: Path) -> Certs:
    """A CA, a server certificate it signed (localhost, 127.0.0.1), a client certificate it signed, and
    an unrelated CA, as PEM files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key, other_key = _key(), _key()
    ca = _cert("ecomlogs test CA", ca_key, None, ca=True)
    other = _cert("some other CA", other_key, None, ca=True)
    server_key, client_key, localhost_key = _key(), _key(), _key()
    server = _cert("localhost", server_key, (ca, ca_key), server=True)
    localhost = _cert("localhost", localhost_key, (ca, ca_key), server=True, with_ip=False)
    client = _cert("ecomlogs", client_key, (ca, ca_key))
    certs = Certs(ca=folder / "ca.pem", server_cert=folder / "server.pem", server_key=folder / "server.key",
                  client_cert=folder / "client.pem", client_key=folder / "client.key",
                  other_ca=folder / "other-ca.pem", localhost_cert=folder / "localhost.pem",
                  localhost_key=folder / "localhost.key")
    certs.localhost_cert.write_bytes(localhost.public_bytes(pem))
    _write_key(localhost_key, certs.localhost_key)
    certs.ca.write_bytes(ca.public_bytes(pem))
    certs.other_ca.write_bytes(other.public_bytes(pem))
    certs.server_cert.write_bytes(server.public_bytes(pem))
    certs.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(server_key, certs.server_key)
    _write_key(client_key, certs.client_key)
    return certs


def _stunnel() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if not found:
        raise RuntimeError("stunnel is not installed (./dev test installs the Debian package stunnel4)")
    return found


class TlsBroker(MemoryBroker):
    """A memory broker that clients reach only through TLS: stunnel listens on ``bootstrap_servers``
    and forwards to the broker's plain port on loopback, and the broker advertises stunnel's address.
    With ``client_certs`` the proxy also requires a client certificate signed by the CA (mTLS)."""

    def __init__(self, folder: Path, certs: Certs, client_certs: bool = False) -> None:
        super().__init__(folder)
        self.certs = certs
        self.client_certs = client_certs
        self.plain_port = free_port()
        self.proxy: Optional[subprocess.Popen] = None

    def start(self) -> "TlsBroker":
        conf = self.folder / "stunnel.conf"
        lines = ["foreground = yes", "pid =", "debug = notice", f"output = {self.folder / 'stunnel.log'}",
                 "[kafka]", f"accept = {HOST}:{self.port}", f"connect = {HOST}:{self.plain_port}",
                 f"cert = {self.certs.server_cert}", f"key = {self.certs.server_key}"]
        if self.client_certs:
            lines += [f"CAfile = {self.certs.ca}", "verifyChain = yes"]
        conf.write_text("\n".join(lines) + "\n")
        log = self.folder / "stunnel.out"
        with open(log, "ab") as out:
            self.proxy = subprocess.Popen([_stunnel(), str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        wait_port(self.port, self.proxy, log)
        self._start_broker()
        return self

    def _start_broker(self) -> None:
        log = self.folder / "broker.log"
        cmd = [str(_tansu()), "broker", "--listener-url", f"tcp://{HOST}:{self.plain_port}",
               "--advertised-listener-url", f"tcp://{HOST}:{self.port}", "--storage-engine", self.storage]
        with open(log, "ab") as out:
            self.broker = subprocess.Popen(cmd, env=self._env(), stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        wait_port(self.plain_port, self.broker, log)

    def client_config(self, ca: Optional[Path] = None, client_cert: bool = False) -> dict[str, str]:
        """librdkafka settings for this broker (``ca``: another CA file than the right one)."""
        conf = {"security.protocol": "SSL", "ssl.ca.location": str(ca or self.certs.ca)}
        if client_cert:
            conf["ssl.certificate.location"] = str(self.certs.client_cert)
            conf["ssl.key.location"] = str(self.certs.client_key)
        return conf

    def close(self) -> None:
        super().close()
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(10)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait(10)


def _tansu() -> Path:
    import devstack

    return devstack.tansu_bin()


def enable_ssl(pg: PrivatePostgres, cert: Path, key: Path) -> None:
    """Turns TLS on in a running private cluster (a reload is enough) with this certificate and key: its
    own copies in the data folder, owned by the server's account, as PostgreSQL requires."""
    import devstack

    with pg._pointed():
        data = devstack.status().postgres_data_dir
    owner = data.stat()
    for name, source in (("server.crt", cert), ("server.key", key)):
        target = data / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        os.chown(target, owner.st_uid, owner.st_gid)
    import psycopg2

    conn = psycopg2.connect(pg.dsn, connect_timeout=10)
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
        c.execute("ALTER SYSTEM SET ssl_key_file = 'server.key'")
        c.execute("ALTER SYSTEM SET ssl = on")
        c.execute("SELECT pg_reload_conf()")
    conn.close()


def require_client_certs(pg: PrivatePostgres, certs: Certs) -> None:
    """With TLS on: every TCP connection must use TLS and show a client certificate signed by the CA."""
    import devstack

    with pg._pointed():
        data = devstack.status().postgres_data_dir
    owner = data.stat()
    target = data / "ca.crt"
    shutil.copyfile(certs.ca, target)
    os.chown(target, owner.st_uid, owner.st_gid)
    hba = data / "pg_hba.conf"
    hba.write_text(f"hostssl all all {HOST}/32 trust clientcert=verify-ca\n"
                   f"host all all {HOST}/32 reject\n" + hba.read_text())
    import psycopg2

    # The new rules apply from the reload on: this connection is made under the old ones.
    conn = psycopg2.connect(pg.dsn, connect_timeout=10)
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute("ALTER SYSTEM SET ssl_ca_file = 'ca.crt'")
        c.execute("SELECT pg_reload_conf()")
    conn.close()
