"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary directory, ``postgres``
started as a child process on a free loopback port, stopped by its PID at the end.

It runs as an unprivileged user (PostgreSQL refuses root): as root we create ``provtest`` if it
is missing and run the server as that user; otherwise as the current user. Host connections use
scram-sha-256 with a random password, so tests exercise real password handling.

pytest fixtures (import them into a conftest): ``postgres_server`` (one server per session) and
``postgres_url`` (a fresh, empty database per test).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator

__all__ = ["PostgresServer", "find_postgres_bindir", "postgres_server", "postgres_url", "query",
           "TEST_USER"]

#: the unprivileged system user the server runs as when the tests run as root
TEST_USER = "provtest"


def find_postgres_bindir() -> str | None:
    """The directory holding ``initdb`` and ``postgres`` (Debian hides them off the PATH)."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return os.path.dirname(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return os.path.dirname(candidates[-1])
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        bindir = out.stdout.strip()
        if out.returncode == 0 and os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


class PostgresServer:
    """One server. ``url(db)`` gives a connection URL with the password in it."""

    def __init__(self, bindir: str | None = None, *, user: str = TEST_USER,
                 ssl: bool = False) -> None:
        found = bindir or find_postgres_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL server binaries not found; install the Debian package "
                               "'postgresql' (apt-get install postgresql)")
        self.bindir: str = found
        self.password = "pw-" + secrets.token_hex(12)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._run_as: pwd.struct_passwd | None = _ensure_user(user) if os.geteuid() == 0 else None
        self.user = self._run_as.pw_name if self._run_as else pwd.getpwuid(os.getuid()).pw_name
        self.root = tempfile.mkdtemp(prefix="provisioning-pg-")
        self.data_dir = os.path.join(self.root, "data")
        self.socket_dir = os.path.join(self.root, "sock")
        self.log_path = os.path.join(self.root, "postgres.log")
        self._counter = 0
        self.ssl = ssl  # also accept SSL connections (a self-signed certificate)

    # -- process control ---------------------------------------------------------------------
    def _as_user(self) -> dict:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        os.makedirs(self.socket_dir)
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as handle:
            handle.write(self.password + "\n")
        if self._run_as:
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        os.chmod(self.root, 0o700)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data_dir, "-U", self.user,
                        "-E", "UTF8", "--locale=C", "--auth-local=trust",
                        "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
                       check=True, capture_output=True, env=env, cwd=self.root, **self._as_user())
        os.unlink(pwfile)
        options = self._certificate() if self.ssl else []
        self.port = _free_port()
        log = open(self.log_path, "ab")
        if self._run_as:
            os.chown(self.log_path, self._run_as.pw_uid, self._run_as.pw_gid)
        self.process = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", self.data_dir, "-p", str(self.port),
             "-k", self.socket_dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300", "-c", "shared_buffers=32MB", *options],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
            start_new_session=True, **self._as_user())
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            if self._accepting():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start in {timeout:g} s: {self.log_tail()}")
            time.sleep(0.1)

    def _certificate(self) -> list[str]:
        """A self-signed certificate in the data directory (openssl); the server's options."""
        key, cert = (os.path.join(self.data_dir, name) for name in ("server.key", "server.crt"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        for path in (key, cert):
            os.chmod(path, 0o600)
            if self._run_as:
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]

    def _accepting(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.url("postgres"), connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL if it lingers; then remove every file."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- databases ---------------------------------------------------------------------------
    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> None:
        query(self.url(database), sql)

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database; returns its URL (password included)."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}_{secrets.token_hex(3)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` (one statement, or several separated by ``;``) on its own connection, in
    autocommit mode; the last statement's rows ([] when it returns none). For tests and
    benchmarks that look at or damage a state from outside the store."""
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        conn.autocommit = True
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []
    finally:
        conn.close()


try:  # fixtures, when pytest is importable (it is only a test dependency)
    import pytest as _pt

    @_pt.fixture(scope="session")
    def postgres_server() -> Iterator[PostgresServer]:
        """One throwaway PostgreSQL server for the test session."""
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            _pt.skip("psycopg2 is not installed: pip install 'provisioning[postgres]'")
        if find_postgres_bindir() is None:
            _pt.skip("PostgreSQL server binaries not found: apt-get install postgresql")
        server = PostgresServer().start()
        try:
            yield server
        finally:
            server.stop()

    @_pt.fixture
    def postgres_url(postgres_server: PostgresServer) -> str:
        """A fresh empty database on the session's server; the URL carries the password."""
        return postgres_server.new_database()
except ImportError:  # pragma: no cover - library use without pytest
    pass
