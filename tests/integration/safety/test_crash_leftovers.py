"""What a killed ``fake:`` run leaves (a half-made server directory, a half-written JSON file, a
half-destroyed server) is finished or removed by the next run, and nothing a live run is still
working on is touched (everything is tagged with its process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli_runner import converge
from tests.integration.safety.helpers import converge_here

CLUSTER = 'driver: "fake:"\nmachines: {web: {}}\n'


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_runs_are_reclaimed_and_live_ones_kept(tmp_path: Path):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    assert converge_here("up", cwd=tmp_path).code == 0
    cloud = tmp_path / ".provisioning" / "fake"
    machines, servers = cloud / "machines", cloud / "servers"
    dead, live = _dead_pid(), os.getpid()
    half_made = machines / f".new-{dead}-srv-0123456789ab"
    half_made.mkdir()
    being_made = machines / f".new-{live}-srv-ba9876543210"
    being_made.mkdir()
    half_removed = machines / ".removing-srv-00000000aaaa"
    half_removed.mkdir()
    torn = servers / f"srv-x.json.tmp-{dead}-abcdef"
    torn.write_text("{")
    (tmp_path / "cluster.yml").write_text(CLUSTER.replace("web: {}", "web: {}, db: {}"))
    assert converge_here("up", cwd=tmp_path).code == 0
    assert not half_made.exists() and not half_removed.exists() and not torn.exists()
    assert being_made.exists()  # its process is alive: not ours to judge
    from provisioning.drivers.fake import FakeWarehouse

    assert FakeWarehouse(str(cloud)).leftovers() == [str(being_made)]


def test_killed_destroy_is_finished_by_the_next_destroy(tmp_path: Path):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    assert converge_here("up", cwd=tmp_path).code == 0
    killed = converge("destroy", cwd=tmp_path, env={"PROVISIONING_FAULT": "during_destroy:crash"})
    assert killed.returncode == 86, killed.stderr
    machines = tmp_path / ".provisioning" / "fake" / "machines"
    assert [p.name for p in machines.iterdir()][0].startswith(".removing-")
    run = converge_here("destroy", cwd=tmp_path)
    assert run.code == 0, run.text
    assert list(machines.iterdir()) == []
    from provisioning.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / ".provisioning" / "state.db")
    try:
        assert store.list("machine") == []
    finally:
        store.close()
