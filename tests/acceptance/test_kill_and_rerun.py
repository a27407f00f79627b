"""`kill -9` of `converge up`, `destroy`, `apply` and a scale-down at a point chosen by the
events it printed (never by sleeping), then the plain re-run: it finishes, the state and the
fake cloud agree (one server per machine, nothing half-made left), and a further `up` changes
nothing."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest

from provisioning.drivers.fake import FakeWarehouse
from provisioning.spec import machine_of_resource
from tests.cli_runner import converge, start_converge

CLUSTER = """driver: "fake:./cloud"
machines:
  web:
    count: 4
    converge:
      - file: {path: /etc/motd, content: "hi {{ machine.name }}\\n"}
      - command: {run: "echo ok > done", creates: done}
  db:
    converge:
      - directory: /srv/db
"""
ALL = ["db", "web-1", "web-2", "web-3", "web-4"]


def ok(project, *args):
    return converge(*args, cwd=project, check=True)


def kill_after(project, events: int, *args) -> None:
    """Start ``converge --output json ARGS``; SIGKILL it once it printed ``events`` events
    (or ended)."""
    proc = start_converge("--output", "json", *args, cwd=project)
    try:
        for _ in range(events):
            if not proc.stdout.readline():
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate()


def assert_state_is_reality(project, names):
    servers = FakeWarehouse(str(project / "cloud")).servers().values()
    assert sorted(machine_of_resource(s["tags"]["provisioning:name"]) for s in servers) == \
        sorted(names)
    assert FakeWarehouse(str(project / "cloud")).leftovers() == []
    status = json.loads(ok(project, "status", "--output", "json").stdout)
    saved = {m["name"]: m["state"] for m in status["machines"] if m["state"] != "not created"}
    assert saved == {n: "running" for n in names}


def _trial(project, operation, rnd):
    (project / "cluster.yml").write_text(CLUSTER)
    if operation == "up":
        kill_after(project, rnd.randrange(25), "up")
        ok(project, "up")
    elif operation == "destroy":
        ok(project, "up")
        kill_after(project, rnd.randrange(12), "destroy")
        ok(project, "destroy")
        assert_state_is_reality(project, [])
        return
    elif operation == "apply":
        ok(project, "plan", "--out", "plan.json")
        kill_after(project, rnd.randrange(25), "apply", "plan.json")
        again = converge("apply", "plan.json", cwd=project)
        if again.returncode != 0:  # the killed apply changed the state: the plan is stale
            assert again.returncode == 2 and "stale" in again.stderr, again.stderr
            ok(project, "plan", "--out", "plan.json")
            ok(project, "apply", "plan.json")
    elif operation == "scale-down":
        ok(project, "up")
        (project / "cluster.yml").write_text(CLUSTER.replace("count: 4", "count: 1"))
        kill_after(project, rnd.randrange(12), "up")
        ok(project, "up")
        assert_state_is_reality(project, ["db", "web-1"])
        return
    elif operation in MORE:
        MORE[operation](project, rnd)
    assert_state_is_reality(project, ALL)
    assert "0 changes" in ok(project, "up").stdout


def _plan(project, rnd):
    """A killed plan (why-run) leaves no state file on a new project, and changes nothing."""
    kill_after(project, rnd.randrange(12), "plan")
    assert not (project / ".provisioning").exists(), "a killed plan created the state"
    ok(project, "up")
    before = json.loads(ok(project, "state", "export").stdout)["entries"]
    kill_after(project, rnd.randrange(12), "plan")
    assert json.loads(ok(project, "state", "export").stdout)["entries"] == before


def _replace(project, rnd):
    """``up --replace`` of a create_before_destroy group killed at any point: the re-run
    leaves one server per machine (the old one destroyed, the new one kept)."""
    (project / "cluster.yml").write_text(CLUSTER.replace("count: 4", "count: 4\n    "
                                                         "create_before_destroy: true"))
    ok(project, "up")
    kill_after(project, rnd.randrange(14), "up", "--replace", "web-2")
    ok(project, "up")


def _stop(project, rnd):
    ok(project, "up")
    kill_after(project, rnd.randrange(8), "stop")
    ok(project, "up")


def _state_moves(project, rnd):
    """``state rm`` then ``import`` of the same server, each killed at any point: the re-run
    adopts or imports it; never a second server for the machine."""
    ok(project, "up")
    kill_after(project, rnd.randrange(3), "state", "rm", "db")
    kill_after(project, rnd.randrange(3), "import", "db", _server_of(project, "db"))
    ok(project, "up")


def _server_of(project, name):
    servers = FakeWarehouse(str(project / "cloud")).servers().values()
    return next(s["id"] for s in servers if s["tags"]["provisioning:name"] == name)


MORE = {"plan": _plan, "replace": _replace, "stop": _stop, "state-moves": _state_moves}
TRIALS = [(operation, seed) for seed in range(8) for operation in
          ("up", "destroy", "apply", "scale-down")][:30] + [
    (operation, seed) for seed in range(4) for operation in MORE]


@pytest.mark.parametrize("operation,seed", [
    pytest.param(op, seed, marks=[pytest.mark.slow] if seed else [])
    for op, seed in TRIALS])
def test_a_run_killed_at_a_random_event_is_finished_by_the_rerun(tmp_path, operation, seed):
    _trial(tmp_path, operation, random.Random(f"{operation}-{seed}"))
