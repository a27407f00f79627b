"""``converge import NAME RESOURCE_ID`` on the fake driver through the real ``converge`` script:
why-run touches nothing, an import tags the server and records it, the next plan converges it
instead of creating, and every wrong import is refused before anything changes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.cli.helpers import json_lines
from tests.integration.cluster.test_plan import (
    actions,
    plan_of,
    project,  # noqa: F401
    run,
    server,
    warehouse,
    write,
)


def outside(project: Path) -> str:
    """A server made in the same fake cloud by someone else (not in our state)."""
    return warehouse(project).create("legacy", {"owner": "ops"}, "medium", "fake-linux")["id"]


def test_import_adopts_a_server_made_outside_the_state(project):
    srv = outside(project)
    write(project, count=3)
    why = run(project, "import", "web-3", srv, "--why-run")
    assert why.returncode == 0, why.stderr
    assert f"import server {srv}" in why.stdout + why.stderr
    assert warehouse(project).get(srv)["tags"] == {"owner": "ops"}  # why-run tagged nothing
    assert actions(plan_of(project))["web-3"] == "create"
    done = run(project, "--output", "json", "import", "web-3", srv)
    assert done.returncode == 0, done.stderr
    [record] = [e for e in json_lines(done.stdout) if e.get("event") == "import"]
    assert record["machine"] == "web-3" and record["resource_id"] == srv
    assert warehouse(project).get(srv)["tags"]["provisioning:name"] == "web-3"
    planned = next(m for m in plan_of(project)["machines"] if m["name"] == "web-3")
    assert planned["action"] == "converge"
    assert [s["description"] for s in planned["steps"]] == ["create motd (mode 0644)"]
    creates = warehouse(project).counters()["creates"]
    assert run(project, "up").returncode == 0
    assert warehouse(project).counters()["creates"] == creates  # adopted, not created
    assert Path(warehouse(project).get(srv)["dir"], "motd").read_text() == "hello\n"


def test_wrong_imports_are_refused_before_any_change(project):
    write(project, count=4)
    srv = outside(project)
    assert run(project, "import", "web-3", srv).returncode == 0
    taken = run(project, "import", "web-3", outside(project))
    assert taken.returncode == 2 and "'web-3' is already in the state" in taken.stderr
    twice = run(project, "import", "web-4", srv)
    assert twice.returncode == 2
    assert f"{srv} is already in the state as machine 'web-3'" in twice.stderr
    ours = run(project, "import", "web-4", server(project, "web-1")["id"])
    assert ours.returncode == 2 and "as machine 'web-1'" in ours.stderr
    unknown = run(project, "import", "db-1", srv)
    assert unknown.returncode == 2 and "db-1" in unknown.stderr
    group = run(project, "import", "web", srv)
    assert group.returncode == 2 and "one machine at a time" in group.stderr
    missing = run(project, "import", "web-4", "srv-nothere")
    assert missing.returncode == 1 and "srv-nothere" in missing.stderr
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert actions(plan_of(project))["web-4"] == "create"
    assert json.loads(json.dumps(warehouse(project).get(srv)["tags"]))["provisioning:name"] \
        == "web-3"


def test_import_why_run_in_a_new_project_creates_no_state(tmp_path):
    write(tmp_path, count=1)
    srv = outside(tmp_path)
    why = run(tmp_path, "import", "web-1", srv, "--why-run")
    assert why.returncode == 0, why.stderr
    assert f"would import {srv} as web-1" in why.stdout + why.stderr
    assert not list(tmp_path.rglob("*.db")), "why-run must not even create the state file"
    assert warehouse(tmp_path).get(srv)["tags"] == {"owner": "ops"}
