"""Fixtures: the WS-Management test server (a subprocess on 127.0.0.1, stopped by its PID),
certificates made with ``cryptography``, and transports that are disconnected after each test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest

USER = "vagrant"
PASSWORD = "S3cret-Pa55phrase"
OTHER_USER = "deployer"
OTHER_PASSWORD = "an0ther-Secret"
SERVER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server")


@dataclass
class Certs:
    ca: str            # CA certificate (PEM path): the ca_bundle that makes `good` trusted
    good: str          # server certificate signed by the CA, for 127.0.0.1 and localhost
    good_key: str
    rogue: str         # self-signed certificate for the same names, trusted by nobody
    rogue_key: str
    good_der: bytes
    rogue_der: bytes


def _make_certs(directory: str) -> Certs:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write_key(key, path: str) -> str:
        with open(path, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        os.chmod(path, 0o600)
        return path

    def leaf(subject_key, issuer_name, issuer_key, common_name: str) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(issuer_name)
                .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                    critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(issuer_key, hashes.SHA256()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name("provisioning test CA"))
               .issuer_name(name("provisioning test CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    good_key = ec.generate_private_key(ec.SECP256R1())
    good = leaf(good_key, ca_cert.subject, ca_key, "127.0.0.1")
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = leaf(rogue_key, name("127.0.0.1"), rogue_key, "127.0.0.1")

    def write_cert(cert, path: str) -> str:
        with open(path, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        return path

    return Certs(
        ca=write_cert(ca_cert, os.path.join(directory, "ca.pem")),
        good=write_cert(good, os.path.join(directory, "good.pem")),
        good_key=write_key(good_key, os.path.join(directory, "good.key")),
        rogue=write_cert(rogue, os.path.join(directory, "rogue.pem")),
        rogue_key=write_key(rogue_key, os.path.join(directory, "rogue.key")),
        good_der=good.public_bytes(serialization.Encoding.DER),
        rogue_der=rogue.public_bytes(serialization.Encoding.DER),
    )


@dataclass
class WinRMTestServer:
    """A running test server: ``port``, ``scheme``, the directory behind drive C:, its log."""

    process: subprocess.Popen
    port: int
    scheme: str
    root: str
    log_path: str
    stderr_path: str
    _stopped: bool = field(default=False)

    def host_path(self, windows_path: str) -> str:
        """Where a ``C:\\...`` path of the server lives on this host (same letter case)."""
        drive, rest = windows_path[0].upper(), windows_path[3:]
        return os.path.join(self.root, drive, *[p for p in rest.replace("/", "\\").split("\\") if p])

    def events(self, since: float = 0.0, event: str | None = None) -> list[dict]:
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        return [r for r in rows if r["time"] >= since and (event is None or r["event"] == event)]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.process.terminate()  # our own child, by PID
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(directory: str, *, cert: str | None = None, key: str | None = None,
                 auth: str = "basic,ntlm", allow_unencrypted: bool = False,
                 max_envelope_kb: int = 150) -> WinRMTestServer:
    root = os.path.join(directory, "root")
    os.makedirs(root, exist_ok=True)
    users = os.path.join(directory, "users")
    with open(users, "w", encoding="utf-8") as handle:
        handle.write(f"{USER}:{PASSWORD}\n{OTHER_USER}:{OTHER_PASSWORD}\n")
    os.chmod(users, 0o600)
    log_path = os.path.join(directory, "requests.jsonl")
    stderr_path = os.path.join(directory, "server.stderr")
    argv = [sys.executable, SERVER_DIR, "--root", root, "--users", users, "--auth", auth,
            "--log", log_path, "--max-envelope-kb", str(max_envelope_kb)]
    if cert:
        argv += ["--cert", cert, "--key", key]
    if allow_unencrypted:
        argv.append("--allow-unencrypted")
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if not line or not line[0].startswith(b"READY "):
        process.kill()
        process.wait()
        with open(stderr_path, encoding="utf-8", errors="replace") as handle:
            raise RuntimeError(f"WinRM test server did not start: {handle.read()[-2000:]}")
    return WinRMTestServer(process, int(line[0].split()[1]), "https" if cert else "http", root,
                           log_path, stderr_path)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    return _make_certs(str(tmp_path_factory.mktemp("winrm-certs")))


@pytest.fixture(scope="session")
def http_server(tmp_path_factory):
    """Plain HTTP, Basic allowed unencrypted (a lab host with AllowUnencrypted=true)."""
    server = start_server(str(tmp_path_factory.mktemp("winrm-http")), allow_unencrypted=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def strict_http_server(tmp_path_factory):
    """Plain HTTP with Windows' defaults: no Basic, no unencrypted messages."""
    server = start_server(str(tmp_path_factory.mktemp("winrm-strict")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def https_server(tmp_path_factory, certs):
    """HTTPS with a certificate signed by the test CA."""
    server = start_server(str(tmp_path_factory.mktemp("winrm-https")), cert=certs.good,
                          key=certs.good_key)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rogue_server(tmp_path_factory, certs):
    """HTTPS with a self-signed certificate nobody trusts."""
    server = start_server(str(tmp_path_factory.mktemp("winrm-rogue")), cert=certs.rogue,
                          key=certs.rogue_key)
    yield server
    server.stop()


ENDPOINTS = [("http", "basic"), ("http", "ntlm"), ("https", "basic"), ("https", "ntlm")]


@pytest.fixture
def make_transport(request, certs):
    """``make_transport(server, auth=..., **kwargs)``: a WinRMTransport to a test server (trusting
    the test CA over HTTPS), disconnected after the test."""
    from provisioning.transports.winrm import WinRMTransport

    made = []

    def make(server: WinRMTestServer, auth: str = "ntlm", **kwargs) -> WinRMTransport:
        kwargs.setdefault("username", USER)
        kwargs.setdefault("password", PASSWORD)
        if server.scheme == "https" and "cert_thumbprint" not in kwargs:
            kwargs.setdefault("ca_bundle", certs.ca)
        if server.scheme == "http" and auth == "basic":
            kwargs.setdefault("allow_unencrypted", True)
        transport = WinRMTransport("127.0.0.1", server.port, scheme=server.scheme, auth=auth,
                                   **kwargs)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.disconnect()


@pytest.fixture
def endpoint(request, http_server, https_server):
    """(server, auth) for the parametrized ``scheme-auth`` combination."""
    scheme, auth = request.param
    return (http_server if scheme == "http" else https_server), auth
