"""``converge watch``: two watchers on one PostgreSQL state replace an unhealthy machine and
re-create one deleted behind their back, each exactly once; SIGTERM stops a watcher between
actions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from provisioning.drivers.fake import FakeWarehouse
from provisioning.store import open_store
from tests.cli_runner import start_converge

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def write_cluster(directory, count: int, hold: str | None = None) -> str:
    """``count`` fake machines; each probe of a machine's health appends the probing process's
    PID to ``probes`` in the machine's directory (so a test can count a watcher's rounds);
    with ``hold``, readying a machine waits until that file exists."""
    path = os.path.join(directory, "cluster.yml")
    options = f"{{hold_ready_until: '{hold}'}}" if hold else "{}"
    with open(path, "w") as handle:
        handle.write("driver: fake:./cloud\nmachines:\n  web:\n"
                     f"    count: {count}\n    machine_options: {options}\n"
                     "    healthcheck: {command: \"echo $PPID >> probes; test ! -f broken\", "
                     "deadline: 5}\n")
    return path


def probes(server: dict, pid: int) -> int:
    """How often the process ``pid`` has probed this server's machine."""
    try:
        with open(os.path.join(server["dir"], "probes")) as handle:
            return sum(1 for line in handle if line.strip() == str(pid))
    except FileNotFoundError:
        return 0


def converge(cluster: str, url: str, *args: str) -> subprocess.Popen:
    return start_converge("-f", cluster, "--state", url, "--output", "json", *args,
                          cwd=os.path.dirname(cluster))


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def servers_by_name(warehouse: FakeWarehouse) -> dict[str, dict]:
    return {s["name"]: s for s in warehouse.servers().values()}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_watchers_mend_each_machine_once(tmp_path, postgres_url):
    cluster = write_cluster(tmp_path, 3)
    up = converge(cluster, postgres_url, "up")
    out, err = up.communicate(timeout=120)
    assert up.returncode == 0, out + err
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    before = servers_by_name(warehouse)
    assert sorted(before) == ["web-1", "web-2", "web-3"]
    assert warehouse.counters() == {"creates": 3, "destroys": 0}

    open(os.path.join(before["web-2"]["dir"], "broken"), "w").close()  # its healthcheck fails
    warehouse.delete(before["web-3"]["id"])                           # gone behind our back

    watchers = [converge(cluster, postgres_url, "watch", "--interval", "0.3", "--grace", "1.5")
                for _ in range(2)]

    def mended() -> bool:
        now = servers_by_name(warehouse)
        return ("web-3" in now and "web-2" in now
                and now["web-2"]["id"] != before["web-2"]["id"])
    try:
        wait_for(mended, 90, "the watchers to replace web-2 and re-create web-3")
        # both watchers observe the mended cluster for two more whole rounds (each round
        # probes web-1; three more probes span two rounds): nothing more may happen
        seen = {w.pid: probes(before["web-1"], w.pid) for w in watchers}
        wait_for(lambda: all(probes(before["web-1"], w.pid) >= seen[w.pid] + 3
                             for w in watchers), 90, "two more rounds of both watchers")
    finally:
        for proc in watchers:
            proc.send_signal(signal.SIGTERM)
    outs = [proc.communicate(timeout=60) for proc in watchers]
    for proc, (out, err) in zip(watchers, outs):
        assert proc.returncode == 0, out + err
    all_events = [e for out, _ in outs for e in events(out)]

    watch_actions = [(e["machine"], e["data"]["watch"]) for e in all_events
                     if e["event"] == "action" and "watch" in e.get("data", {})]
    assert sorted(watch_actions) == [("web-2", "replace"), ("web-3", "recreate")], watch_actions
    creates = [e["machine"] for e in all_events
               if e["event"] == "action" and e["description"].startswith("create server")]
    assert sorted(creates) == ["web-2", "web-3"]
    assert warehouse.counters() == {"creates": 5, "destroys": 2}  # 1 ours, 1 behind our back
    for out, _ in outs:  # each stopped cleanly
        assert events(out)[-1]["data"]["watch"] == "stop"

    now = servers_by_name(warehouse)
    assert now["web-1"]["id"] == before["web-1"]["id"]  # the healthy one was left alone
    with open_store(postgres_url) as store:
        specs = {e.name: e for e in store.list("machine")}
        assert {n: s.reference["server_id"] for n, s in specs.items()} == \
            {n: s["id"] for n, s in now.items()}
        assert all(s.last_error is None for s in specs.values())
        assert store.locks() == {}


def test_sigterm_stops_between_actions(tmp_path, postgres_url):
    """SIGTERM while the watcher is in the middle of an action (creating web-1, held in ready
    until the test lets it go): the action is finished, no new one begins."""
    release = tmp_path / "release"
    cluster = write_cluster(tmp_path, 1, hold=str(release))
    watcher = converge(cluster, postgres_url, "watch", "--interval", "0.3")
    warehouse = FakeWarehouse(str(tmp_path / "cloud"))
    with open_store(postgres_url) as store:
        wait_for(lambda: warehouse.counters().get("creates") == 1 and "web-1" in store.locks(),
                 60, "the watcher to be readying web-1")
    watcher.send_signal(signal.SIGTERM)  # in the middle of readying: held until released
    release.touch()
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, out + err
    got = events(out)
    assert [e["data"]["watch"] for e in got if e["event"] == "action" and "watch" in
            e.get("data", {})] == ["create"]  # the action finished, no new one began
    assert got[-1]["data"]["watch"] == "stop"
    with open_store(postgres_url) as store:
        spec = store.get("machine", "web-1")
        assert spec.last_action == "up" and spec.last_error is None
        assert warehouse.get(spec.reference["server_id"])["state"] == "running"
        assert store.locks() == {}


def test_a_decision_made_on_a_stale_observation_is_dropped(tmp_path, postgres_url):
    """Two watchers both saw web-1 unhealthy; the first replaces it; the second, acting on what
    it saw, finds the entry changed under the lock and does nothing."""
    from provisioning.actions import RecordingActionHandler
    from provisioning.cluster import Cluster
    from provisioning.cluster.watch import Watcher, fingerprint

    cluster = write_cluster(tmp_path, 1)
    first = Cluster.load(cluster, state=postgres_url).runner
    second = Cluster.load(cluster, state=postgres_url).runner
    try:
        assert first.up(first.cluster.select()).ok
        warehouse = FakeWarehouse(str(tmp_path / "cloud"))
        old = servers_by_name(warehouse)["web-1"]
        open(os.path.join(old["dir"], "broken"), "w").close()
        definition = first.cluster.machines["web-1"]
        seen = fingerprint(second.store.get("machine", "web-1"))
        recorder = RecordingActionHandler()
        second.action_handler.subscribe(recorder.emit)

        done = Watcher(first, [definition], grace=0).tend(definition)
        assert done.verdict == "replaced"
        late = Watcher(second, [definition], grace=0)._act(
            definition, "replace", seen, "unhealthy", second.action_handler.for_machine("web-1"))
        assert late.verdict == "skipped" and "changed it first" in late.detail
        assert recorder.actions() == []
        assert warehouse.counters() == {"creates": 2, "destroys": 1}
        assert Watcher(second, [definition], grace=0).tend(definition).verdict == "healthy"
        spec = second.store.get("machine", "web-1")
        assert spec.last_action == "up" and fingerprint(spec) != seen
    finally:
        first.close()
        second.close()
