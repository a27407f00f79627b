"""Many ``converge up`` runners on one cluster sharing a PostgreSQL state split the work: each
machine is created exactly once (the fake cloud counts creates), nothing is lost, four runners
are faster than one, and a runner killed with SIGKILL does not hold the others up."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import pytest

pytest.importorskip("psycopg2", reason="needs psycopg2: pip install 'provisioning[postgres]'")

from provisioning.drivers.fake import FakeWarehouse
from provisioning.store import open_store
from provisioning.testing.postgres import query
from tests.cli_runner import start_converge

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def write_cluster(directory, count: int, ready_delay: float = 0.0, hold: str | None = None
                  ) -> str:
    """A cluster of ``count`` fake machines; with ``hold``, each machine's ready waits until
    that file exists (the test decides when runners may go on)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "cluster.yml")
    options = f"ready_delay: {ready_delay}" + (f", hold_ready_until: '{hold}'" if hold else "")
    with open(path, "w") as handle:
        handle.write(f"driver: fake:./cloud\nmachines:\n  node:\n    count: {count}\n"
                     f"    machine_options: {{{options}}}\n")
    return path


def wait_for(predicate, what: str, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Poll ``predicate`` until true; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        running = [p for p in procs if p.poll() is None]
        if time.monotonic() > deadline or len(running) < len(procs):
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            outs = finish(procs, timeout=30)
            raise AssertionError(f"never saw {what}: {outs}")
        time.sleep(0.05)


def claimed_by(url: str) -> dict[str, int]:
    """pid -> machines it claims now (live claims of the open run)."""
    with open_store(url) as store:
        runs = store.runs()
    out: dict[str, int] = {}
    for run in runs:
        for holder in run["claimed"].values():
            out[str(holder["pid"])] = out.get(str(holder["pid"]), 0) + 1
    return out


def converge(cluster: str, url: str, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.Popen:
    """A runner process: ``converge -f CLUSTER --state URL ARGS``."""
    # output to files: a pipe read only after another runner finished could fill up and
    # stall this runner, and the other one waits for this runner's machines
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = start_converge("-f", cluster, "--state", url, *args, env=env, stdout=out,
                          stderr=err, cwd=os.path.dirname(cluster))
    proc.logs = (out, err)  # type: ignore[attr-defined]
    return proc


def finish(procs: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str, str]]:
    """Wait for each runner (the timeout is a guard); (exit status, stdout, stderr) each."""
    outs = []
    for proc in procs:
        proc.wait(timeout=timeout)
        texts = []
        for handle in proc.logs:  # type: ignore[attr-defined]
            handle.seek(0)
            texts.append(handle.read())
        outs.append((proc.returncode, texts[0], texts[1]))
    return outs


def claims_by_runner(url: str) -> dict[str, int]:
    rows = query(url, "SELECT holder->>'pid', count(*) FROM provisioning_work w JOIN "
                      "provisioning_runs r USING (run_key, generation) WHERE "
                      "w.state = 'done' AND r.generation = (SELECT max(generation) FROM "
                      "provisioning_runs r2 WHERE r2.run_key = r.run_key) GROUP BY 1")
    return {pid: n for pid, n in rows}


def test_four_runners_split_forty_machines(tmp_path, postgres_server):
    """Each of four runners takes a share: every machine is held in ready until all four
    runners hold claims, so the split does not depend on how fast each one starts."""
    count, parallel = 40, 4
    url = postgres_server.new_database()
    release = tmp_path / "release"
    shared = write_cluster(tmp_path / "four", count, hold=str(release))
    procs = [converge(shared, url, "up", "--parallel", str(parallel)) for _ in range(4)]
    wait_for(lambda: len(claimed_by(url)) == 4, "all four runners holding claims", procs)
    release.touch()
    results = finish(procs)
    for code, out, err in results:
        assert code == 0, out + err
        assert "StateLocked" not in out + err and "is locked by" not in out + err

    warehouse = FakeWarehouse(str(tmp_path / "four" / "cloud"))
    assert warehouse.counters()["creates"] == count  # each machine created exactly once
    servers = warehouse.servers().values()
    assert sorted(s["name"] for s in servers) == sorted(f"node-{i}" for i in range(1, count + 1))
    with open_store(url) as store:
        entries = store.list("machine")
        assert len(entries) == count  # no state entry lost
        by_server = {s["id"]: s["name"] for s in servers}
        assert all(by_server[e.reference["server_id"]] == e.name for e in entries)
        assert all(e.last_action == "up" and e.last_error is None for e in entries)
        assert store.locks() == {}
    split = claims_by_runner(url)
    assert sum(split.values()) == count and len(split) == 4, split  # every runner took a share
    assert set(split) == {str(p.pid) for p in procs}
    for _code, out, err in results:  # each reports all 40: its own and the others'
        text = out + err
        assert all(f"node-{i}" in text for i in range(1, count + 1)), text
    # Speed-up is measured in bench/many_runners.py, not asserted here: CI machines are loaded.


def test_runner_killed_holding_locks_does_not_stop_the_others(tmp_path, postgres_server):
    """A runner killed (SIGKILL) while it holds claims and locks: its database session ends,
    and another runner takes its machines over at once. The lease is an hour, so a takeover
    that waited for it would never come (the timeout of ``finish`` turns that into a failure)."""
    url = postgres_server.new_database()
    env = {"PROVISIONING_LOCK_TTL": "3600"}
    release = tmp_path / "release"
    cluster = write_cluster(tmp_path, 12, hold=str(release))
    victim = converge(cluster, url, "up", "--parallel", "3", env=env)
    with open_store(url) as store:
        def victim_holds_three() -> bool:  # its 3 workers' machines (and a batch claimed ahead)
            held = {n for n, h in store.locks().items() if h.get("pid") == victim.pid}
            return len(held) >= 3
        wait_for(victim_holds_three, "the victim holding 3 locks, held in ready", [victim])
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
        release.touch()
        [(code, out, err)] = finish([converge(cluster, url, "up", "--parallel", "12", env=env)])
        assert code == 0, out + err
        entries = store.list("machine")
        assert sorted(e.name for e in entries) == sorted(f"node-{i}" for i in range(1, 13))
        assert all(e.last_action == "up" and e.last_error is None for e in entries)
        assert store.locks() == {}
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    # what the victim created was found again, not duplicated: one server per machine (the
    # kill may land inside a batch create, before the victim counted it: at most 12 counted)
    names = sorted(s["name"] for s in warehouse.servers().values())
    assert names == sorted(f"node-{i}" for i in range(1, 13))
    assert warehouse.counters()["creates"] <= 12


def test_a_failure_in_one_runner_fails_the_run_everywhere(tmp_path, postgres_server):
    """The healthy runner holds one machine in ready (and the next one, claimed ahead) while
    the broken one fails all the others; then the healthy one finishes and reports the
    others' failures as its own."""
    url = postgres_server.new_database()
    release = tmp_path / "release"
    cluster = write_cluster(tmp_path, 6, hold=str(release))
    healthy = converge(cluster, url, "up", "--parallel", "1")
    share = {"healthy": 0}
    with open_store(url) as store:
        wait_for(lambda: len(store.locks()) >= 1, "the healthy runner at work", [healthy])
        broken = converge(cluster, url, "up", "--parallel", "1",
                          env={"PROVISIONING_FAULT": "during_ready:fail"})

        def all_others_failed() -> bool:
            share["healthy"] = claimed_by(url).get(str(healthy.pid), 0)
            failed = sum(1 for e in store.list("machine") if e.last_error)
            return share["healthy"] > 0 and failed == 6 - share["healthy"]
        wait_for(all_others_failed, "the broken runner failing all the others",
                 [healthy, broken])
    release.touch()
    (hcode, hout, herr), (bcode, bout, berr) = finish([healthy, broken])
    assert bcode == 1 and hcode == 1, (bout, berr, hout, herr)
    assert "injected failure at during_ready" in bout + berr
    assert "failed in another runner" in hout + herr
    with open_store(url) as store:
        failed = [e.name for e in store.list("machine") if e.last_error]
        ok = [e.name for e in store.list("machine") if not e.last_error]
    assert len(ok) == share["healthy"] and len(failed) == 6 - len(ok) >= 4
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
