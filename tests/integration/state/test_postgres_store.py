"""PostgreSQL-only behaviour: schema versions, passwords (URL, PGPASSWORD, pgpass) never shown,
leases that die with their session on any host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("psycopg2", reason="needs psycopg2: pip install 'provisioning[postgres]'")

from provisioning.errors import StateError, StateLocked
from provisioning.spec import MachineSpec
from provisioning.store import open_store
from provisioning.store.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from provisioning.testing.postgres import query

from .test_store_conformance import worker

pytestmark = pytest.mark.postgres


def tables(url: str) -> set[str]:
    return {r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_schema_is_created_and_versioned(postgres_url):
    with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        assert store.schema_version() == SCHEMA_VERSION
    assert {"provisioning_schema", "provisioning_entries", "provisioning_locks",
            "provisioning_runs", "provisioning_work"} <= tables(postgres_url)
    rows = query(postgres_url, "SELECT version, description FROM provisioning_schema "
                               "ORDER BY version")
    assert rows == [(v, d) for v, d, _ in MIGRATIONS]
    open_store(postgres_url).close()  # opening again applies nothing twice


def test_older_schema_is_upgraded_keeping_entries(postgres_url):
    query(postgres_url,  # a state from version 1
          "CREATE TABLE provisioning_schema (version integer PRIMARY KEY, "
          "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
          + MIGRATIONS[0][2] +
          "; INSERT INTO provisioning_schema (version, description) VALUES (1, 'v1');"
          "INSERT INTO provisioning_entries (kind, name, data, version) VALUES "
          "('machine', 'old-1', '{\"reference\": {\"driver_url\": \"fake:/o\"}}', 3)")
    assert "provisioning_work" not in tables(postgres_url)
    with open_store(postgres_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
        old = store.get("machine", "old-1")
        assert old.reference == {"driver_url": "fake:/o"} and old.version == 3
    assert "provisioning_work" in tables(postgres_url)


def test_newer_schema_is_refused_clearly(postgres_url):
    open_store(postgres_url).close()
    query(postgres_url, "INSERT INTO provisioning_schema (version, description) VALUES (99, 'x')")
    with pytest.raises(StateError) as info:
        open_store(postgres_url)
    text = str(info.value)
    assert "schema version 99" in text and "upgrade provisioning" in text
    assert ":***@" in text and postgres_url.split(":")[2].split("@")[0] not in text


def test_many_stores_opening_at_once_migrate_once(postgres_url):
    code = ("import os; from provisioning.store import open_store; "
            "s = open_store(os.environ['STORE_URL']); print(s.schema_version())")
    env = dict(os.environ, STORE_URL=postgres_url)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [o[0].strip() for o in outs] == [str(SCHEMA_VERSION)] * 6, [o[1] for o in outs]
    assert query(postgres_url, "SELECT count(*) FROM provisioning_schema") == [(len(MIGRATIONS),)]


def test_password_is_masked_in_url_and_errors(postgres_server, postgres_url):
    password = postgres_server.password
    with open_store(postgres_url) as store:
        assert password not in store.url and password not in repr(store)
        assert store.url == postgres_url.replace(password, "***")
    wrong = postgres_url.replace(password, "not-the-password-42")
    with pytest.raises(StateError) as info:
        open_store(wrong)
    assert "password authentication failed" in str(info.value)
    assert "not-the-password-42" not in str(info.value) and ":***@" in str(info.value)
    unreachable = postgres_url.replace(f":{postgres_server.port}/", ":1/")
    with pytest.raises(StateError) as info:
        open_store(unreachable)
    assert password not in str(info.value) and "check host, port" in str(info.value)
    query = postgres_server.url(postgres_url.rsplit("/", 1)[1], password=False) + \
        f"?password={password}"
    with open_store(query) as store:
        assert password not in store.url and "password=***" in store.url


def test_password_from_pgpassword_and_pgpass(postgres_server, postgres_url, tmp_path,
                                             monkeypatch):
    bare = postgres_url.replace(":" + postgres_server.password + "@", "@")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StateError, match="password"):
        open_store(bare)
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    with open_store(bare) as store:
        MachineSpec("via-env", {"driver_url": "fake:/x"}, store=store).save()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres_server.port}:*:{postgres_server.user}:"
                      f"{postgres_server.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with open_store(bare) as store:
        assert store.get("machine", "via-env") is not None


def test_lease_of_a_killed_runner_on_another_host_frees_at_once(postgres_url):
    """The holder claims another host (so no PID check can help) and an hour's lease; killing
    it closes its session, and the lease frees long before the TTL (waiting for the TTL would
    outlast the wait below and raise ``StateLocked``)."""
    with open_store(postgres_url) as store:
        proc = worker(postgres_url, "hold-lock", "far", "3600", "far-away-host")
        assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
        with pytest.raises(StateLocked, match="far-away-host"):
            store.lock("far", 60)
        assert store.locks()["far"]["host"] == "far-away-host"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with store.lock("far", 60, wait=120):
            assert store.locks()["far"]["host"] != "far-away-host"
        proc.stdout.close()
        proc.stderr.close()


def test_lost_connection_is_reopened(postgres_url):
    with open_store(postgres_url) as store:
        MachineSpec("a", {"driver_url": "fake:/x"}, store=store).save()
        old_key = store.session_key
        # the second argument: wait (up to 60 s) until each session has really ended
        query(postgres_url, "SELECT pg_terminate_backend(pid, 60000) FROM pg_stat_activity "
                            "WHERE application_name = 'provisioning' AND datname = "
                            "current_database() AND pid <> pg_backend_pid()")
        assert store.get("machine", "a").reference == {"driver_url": "fake:/x"}
        with store.lock("a", 10):  # a new session key, and leases work on it
            assert store.session_key != old_key and "a" in store.locks()


def test_nul_in_a_name_is_a_clear_error(postgres_url):
    with open_store(postgres_url) as store:
        with pytest.raises(StateError, match="NUL"):
            MachineSpec("bad\x00name", {"driver_url": "fake:/x"}, store=store).save()


def test_a_state_written_before_the_psycopg2_port_is_read_and_worked_on_unchanged(postgres_url):
    """A state of schema 4 written by the psycopg 3 client (restored from its dump) opens
    without any migration, its entries, run and holders read as they were written, and the
    run goes on: the pending and the abandoned machines are claimed and finished here."""
    dump = os.path.join(os.path.dirname(__file__), "data", "schema-4-psycopg3.sql")
    with open(dump) as handle:
        query(postgres_url, handle.read())
    schema = "SELECT version, description, applied_at FROM provisioning_schema ORDER BY version"
    before = query(postgres_url, schema)
    with open_store(postgres_url) as store:
        assert store.schema_version() == SCHEMA_VERSION == 4
        assert store.get("machine", "web-2").reference == {"driver_url": "fake:/srv/cloud",
                                                           "id": "fake-2"}
        old_holder = {"pid": 4242, "host": "old-host", "since": "T0", "command": "converge up"}
        progress = store.run_progress("up:oldrun", 1)
        assert {n: (p["state"], p["holder"], p["error"], p["live"]) for n, p in
                progress.items()} == {
            "web-1": ("done", old_holder, None, False),
            "web-2": ("failed", old_holder, "ProvisioningError: it broke", False),
            "web-3": ("claimed", old_holder, None, False),  # its runner's session is gone
            "web-4": ("pending", None, None, False)}
        assert store.locks() == {}  # the old lock's session is gone: free
        with store.lock("web-3", 60):
            assert "web-3" in store.locks()
        holder = {"host": "h", "pid": 1, "command": "test", "since": "T1"}
        assert store.claim_work("up:oldrun", 1, "tok-new", holder, 60.0, 5) == ["web-4"]
        assert store.claim_work("up:oldrun", 1, "tok-new", holder, 60.0, 5) == ["web-3"]
        assert store.finish_work("up:oldrun", 1, "tok-new", {"web-3": None, "web-4": None}) == \
            {"web-3", "web-4"}
        assert store.runs() == []  # the run ended with its last machines
    assert query(postgres_url, schema) == before  # no migration ran


@pytest.mark.parametrize("other_thread", [False, True])
def test_ssl_connections_work_without_pythons_ssl_module(tmp_path, other_thread):
    """The store loads psycopg2 without Python's ``ssl`` module (a third of its import); libpq
    then sets up its own OpenSSL, and a connection that requires SSL still gets it. A process
    with a thread of its own running (which could be importing ``ssl`` at that moment) gets
    psycopg2 loaded as it comes, ``ssl`` and all."""
    from provisioning.testing.postgres import PostgresServer, find_postgres_bindir

    if find_postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    thread = ("import threading; stop = threading.Event(); "
              "threading.Thread(target=stop.wait, daemon=True).start(); ") if other_thread else ""
    code = (thread + "import sys; from provisioning.store import open_store; "
            "store = open_store(sys.argv[1]); "
            "print(store.schema_version(), store._conn.info.ssl_in_use, 'ssl' in sys.modules)")
    with PostgresServer(ssl=True) as server:
        url = server.new_database() + "?sslmode=require"
        out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(SCHEMA_VERSION), "True", str(other_thread)]
