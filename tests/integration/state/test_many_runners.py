"""Many ``converge up`` runners on one cluster sharing a PostgreSQL state split the work: each
machine is created exactly once (the fake cloud counts creates), nothing is lost, four runners
are faster than one, and a runner killed with SIGKILL does not hold the others up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

psycopg = pytest.importorskip("psycopg", reason="needs psycopg: pip install 'provisioning[postgres]'")

from provisioning.drivers.fake import FakeWarehouse
from provisioning.store import open_store

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def write_cluster(directory, count: int, ready_delay: float) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "cluster.yml")
    with open(path, "w") as handle:
        handle.write(f"driver: fake:./cloud\nmachines:\n  node:\n    count: {count}\n"
                     f"    machine_options: {{ready_delay: {ready_delay}}}\n")
    return path


def converge(cluster: str, url: str, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.Popen:
    """A runner process: ``converge -f CLUSTER --state URL ARGS``."""
    full = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "provisioning.cli.main", "-f", cluster,
                             "--state", url, *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(cluster))


def finish(procs: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str, str]]:
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        outs.append((proc.returncode, out, err))
    return outs


def claims_by_runner(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT holder->>'pid', count(*) FROM provisioning_work w JOIN "
                            "provisioning_runs r USING (run_key, generation) WHERE "
                            "w.state = 'done' AND r.generation = (SELECT max(generation) FROM "
                            "provisioning_runs r2 WHERE r2.run_key = r.run_key) "
                            "GROUP BY 1").fetchall()
    return {pid: n for pid, n in rows}


def test_four_runners_split_forty_machines(tmp_path, postgres_server):
    count, delay, parallel = 40, 1.0, 4
    single_url, shared_url = postgres_server.new_database(), postgres_server.new_database()

    single = write_cluster(tmp_path / "one", count, delay)
    start = time.monotonic()
    [(code, out, err)] = finish([converge(single, single_url, "up", "--parallel",
                                          str(parallel))])
    one_runner = time.monotonic() - start
    assert code == 0, out + err
    assert FakeWarehouse(str(tmp_path / "one" / "cloud")).counters()["creates"] == count

    shared = write_cluster(tmp_path / "four", count, delay)
    start = time.monotonic()
    procs = [converge(shared, shared_url, "up", "--parallel", str(parallel)) for _ in range(4)]
    results = finish(procs)
    four_runners = time.monotonic() - start
    for code, out, err in results:
        assert code == 0, out + err
        assert "StateLocked" not in out + err and "is locked by" not in out + err

    warehouse = FakeWarehouse(str(tmp_path / "four" / "cloud"))
    assert warehouse.counters()["creates"] == count  # each machine created exactly once
    servers = warehouse.servers().values()
    assert sorted(s["name"] for s in servers) == sorted(f"node-{i}" for i in range(1, count + 1))
    with open_store(shared_url) as store:
        entries = store.list("machine")
        assert len(entries) == count  # no state entry lost
        by_server = {s["id"]: s["name"] for s in servers}
        assert all(by_server[e.reference["server_id"]] == e.name for e in entries)
        assert all(e.last_action == "up" and e.last_error is None for e in entries)
        assert store.locks() == {}
    split = claims_by_runner(shared_url)
    assert sum(split.values()) == count and len(split) == 4, split  # every runner took a share
    print(f"\n40 fake machines, ready_delay {delay} s, --parallel {parallel}: one runner "
          f"{one_runner:.2f} s, four runners {four_runners:.2f} s; split {sorted(split.values())}")
    # Speed-up is measured in bench/many_runners.py, not asserted here: CI machines are loaded.


def test_runner_killed_holding_locks_does_not_stop_the_others(tmp_path, postgres_server):
    url = postgres_server.new_database()
    ttl = 20.0
    env = {"PROVISIONING_LOCK_TTL": str(ttl)}
    cluster = write_cluster(tmp_path, 12, 3.0)
    victim = converge(cluster, url, "up", "--parallel", "3", env=env)
    with open_store(url) as store:
        deadline = time.monotonic() + 30
        while True:  # wait until the victim holds locks, in the middle of readying machines
            held = {n for n, h in store.locks().items() if h.get("pid") == victim.pid}
            if len(held) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(held) == 3, victim.communicate(timeout=5)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=10)
        killed = time.monotonic()
        [(code, out, err)] = finish([converge(cluster, url, "up", "--parallel", "12", env=env)])
        elapsed = time.monotonic() - killed
        assert code == 0, out + err
        assert elapsed < ttl, f"took {elapsed:.1f} s, the lease is {ttl} s"
        print(f"\nafter SIGKILL of a runner holding 3 locks, another finished 12 machines in "
              f"{elapsed:.2f} s (lease {ttl:g} s)")
        entries = store.list("machine")
        assert sorted(e.name for e in entries) == sorted(f"node-{i}" for i in range(1, 13))
        assert all(e.last_action == "up" and e.last_error is None for e in entries)
    counters = FakeWarehouse(str(tmp_path / "cloud")).counters()
    assert counters["creates"] == 12  # what the victim created was found again, not duplicated


def test_a_failure_in_one_runner_fails_the_run_everywhere(tmp_path, postgres_server):
    url = postgres_server.new_database()
    cluster = write_cluster(tmp_path, 6, 1.5)
    healthy = converge(cluster, url, "up", "--parallel", "1")
    with open_store(url) as store:
        deadline = time.monotonic() + 30
        while not store.locks() and time.monotonic() < deadline:  # healthy is at work
            time.sleep(0.05)
    broken = converge(cluster, url, "up", "--parallel", "1",
                      env={"PROVISIONING_FAULT": "during_ready:fail"})
    (hcode, hout, herr), (bcode, bout, berr) = finish([healthy, broken])
    assert bcode == 1 and hcode == 1, (bout, berr, hout, herr)
    assert "injected failure at during_ready" in bout + berr
    assert "failed in another runner" in hout + herr
    with open_store(url) as store:
        failed = [e.name for e in store.list("machine") if e.last_error]
        ok = [e.name for e in store.list("machine") if not e.last_error]
    assert failed and ok and len(failed) + len(ok) == 6
    lines = (hout + herr).splitlines()
    for name in failed:  # the healthy runner reports the failures it did not do itself
        assert any(name in line and "failed in another runner" in line for line in lines), hout


def test_a_finished_run_is_not_joined_by_the_next_command(tmp_path, postgres_url):
    """Right after a shared run finished, the next ``up`` does the work again (a new run)."""
    cluster = write_cluster(tmp_path, 3, 0.0)
    [(code, out, err)] = finish([converge(cluster, postgres_url, "up", "--parallel", "2")])
    assert code == 0, out + err
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    gone = next(s for s in warehouse.servers().values() if s["name"] == "node-2")
    warehouse.delete(gone["id"])  # behind our back
    [(code, out, err)] = finish([converge(cluster, postgres_url, "up", "--parallel", "2")])
    assert code == 0, out + err
    assert warehouse.counters()["creates"] == 4
    assert "node-2" in {s["name"] for s in warehouse.servers().values()}
