"""Repairs of the state by hand (``state mv``, ``state rm``) followed by ordinary runs: every
entry keeps a resource of its own, and what ``up`` reports is what the warehouse holds."""

from __future__ import annotations

import json

from tests.cli_runner import converge


def test_a_new_machine_never_adopts_the_resource_an_entry_renamed_by_state_mv_records(tmp_path):
    """``state mv db-1 db-9`` leaves db-9's server tagged for db-1. The next ``up`` made db-1
    adopt that server (two entries, one server), then scaled db-9 down by destroying it: ``up``
    said ok, and db-1 was missing."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  db: {count: 2}\n')
    converge("up", cwd=tmp_path, check=True)
    converge("state", "mv", "db-1", "db-9", cwd=tmp_path, check=True)
    up = converge("up", cwd=tmp_path, check=True)
    assert "recorded as machine 'db-9'" in up.stdout, up.stdout
    status = json.loads(converge("status", "--output", "json", cwd=tmp_path, check=True).stdout)
    states = {m["name"]: m["state"] for m in status["machines"]}
    assert states == {"db-1": "running", "db-2": "running"}, status
    plan = converge("plan", cwd=tmp_path, check=True)
    assert plan.stdout.strip().splitlines()[-1] == "plan: 2 unchanged", plan.stdout


def test_a_state_mv_stopped_half_way_leaves_one_entry_not_two(tmp_path):
    """``state mv`` saved the new entry, then deleted the old one, in two transactions: a run
    stopped between them (here the file refuses the delete) left both entries recording one
    server; the next ``up`` kept db-1 and scaled db-9 down by destroying that server."""
    import sqlite3

    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  db: {count: 2}\n')
    converge("up", cwd=tmp_path, check=True)
    state = tmp_path / ".provisioning" / "state.db"
    with sqlite3.connect(state) as db:
        db.execute("CREATE TRIGGER keep_db1 BEFORE DELETE ON entries WHEN old.name = 'db-1' "
                   "BEGIN SELECT RAISE(ABORT, 'the disk went away'); END")
    db.close()
    moved = converge("state", "mv", "db-1", "db-9", cwd=tmp_path)
    assert moved.returncode != 0 and "the disk went away" in moved.stderr, moved
    with sqlite3.connect(state) as db:
        names = [row[0] for row in db.execute("SELECT name FROM entries WHERE kind = 'machine' "
                                              "ORDER BY name")]
        db.execute("DROP TRIGGER keep_db1")
    db.close()
    assert names == ["db-1", "db-2"], "the stopped move must leave the old entry alone"
    converge("up", cwd=tmp_path, check=True)
    status = json.loads(converge("status", "--output", "json", cwd=tmp_path, check=True).stdout)
    assert {m["name"]: m["state"] for m in status["machines"]} == \
        {"db-1": "running", "db-2": "running"}, status
