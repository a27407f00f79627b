"""``create_before_destroy: true`` on the fake driver through the real ``converge`` script: a
replace makes the new machine first and destroys the old one once the new one is up; why-run
plans it and creates nothing; a run killed anywhere in between leaves the old resource deposed
in the state, and the next run finishes the replace; a driver that cannot do it is refused
before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.cluster import replace
from provisioning.faults import CRASH_EXIT_CODE, FAULT_ENV
from provisioning.store.sqlite import SQLiteStore
from tests.integration.cli.helpers import converge, json_lines

from .test_boundaries import state  # noqa: F401  (SQLite and PostgreSQL states)
from .test_plan import actions, plan_of, run, server, warehouse, write

CBD = "create_before_destroy: true"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path, extra=CBD)
    assert run(tmp_path, "up").returncode == 0
    return tmp_path


def entry(project: Path, name: str):
    store = SQLiteStore(project / ".provisioning" / "state.db")
    try:
        return store.get("machine", name)
    finally:
        store.close()


def tags(project: Path) -> dict[str, str]:
    """machine name -> the name its server is tagged with."""
    return {s["name"]: s["tags"]["provisioning:name"]
            for s in warehouse(project).servers().values()}


def test_why_run_plans_create_before_destroy_and_creates_nothing(project):
    state = (project / ".provisioning" / "state.db").read_bytes()
    before = warehouse(project).counters()
    why = run(project, "up", "--why-run", "--replace", "web-1")
    assert why.returncode == 0, why.stderr
    assert "-/+ [web-1] replace (create before destroy)" in why.stdout
    assert "plan: 1 to replace, 1 unchanged" in why.stdout
    document = plan_of(project, "--replace", "web-1")
    [web1] = [m for m in document["machines"] if m["name"] == "web-1"]
    assert (web1["action"], web1["create_before_destroy"]) == ("replace", True)
    steps = [s["description"] for s in web1["steps"]]
    assert steps[0] == "create it anew, beside the old one"
    assert steps[-1] == "destroy the old one (deposed)"
    assert warehouse(project).counters() == before
    assert (project / ".provisioning" / "state.db").read_bytes() == state


def test_apply_creates_the_new_machine_before_destroying_the_old(project):
    old = server(project, "web-1")["id"]
    plan_of(project, "--replace", "web-1", "--out", "plan.json")
    applied = run(project, "--output", "json", "apply", "plan.json")
    assert applied.returncode == 0, applied.stderr
    done = [e["description"] for e in json_lines(applied.stdout)
            if e.get("event") == "action" and e["machine"] == "web-1"]
    assert done == ["create server (small, fake-linux)", "create motd (mode 0644)",
                    f"destroy server {old}"]
    new = server(project, "web-1")
    assert new["id"] != old and warehouse(project).get(old) is None
    assert Path(new["dir"], "motd").read_text() == "hello\n"
    assert tags(project) == {"web-1": "web-1~1", "web-2": "web-2"}
    saved = entry(project, "web-1")
    assert (saved.generation, saved.deposed, saved.reference["server_id"]) == (1, [], new["id"])
    assert warehouse(project).counters() == {"creates": 3, "destroys": 1}
    assert actions(plan_of(project)) == {"web-1": "nothing", "web-2": "nothing"}
    # the next replace is the next generation; a plain up adopts nothing old
    assert run(project, "up", "--replace", "web-1").returncode == 0
    assert tags(project) == {"web-1": "web-1~2", "web-2": "web-2"}
    assert warehouse(project).counters() == {"creates": 4, "destroys": 2}


@pytest.mark.parametrize("fault", ["after_create", "before_save", "before_destroy_deposed",
                                   "during_destroy"])
def test_a_replace_killed_midway_is_finished_by_the_next_run(project, fault):
    old = server(project, "web-1")["id"]
    killed = converge("up", "--replace", "web-1", cwd=project,
                      env={FAULT_ENV: f"{fault}:crash"})
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr
    assert [r["server_id"] for r in entry(project, "web-1").deposed] == [old]  # still ours
    status = run(project, "status")
    assert "deposed" in status.stdout
    planned = plan_of(project)
    [web1] = [m for m in planned["machines"] if m["name"] == "web-1"]
    assert web1["deposed"] == [f"server {old}"] and planned["summary"]["deposed"] == 1
    # the new server the killed run made (if it got that far) is adopted, never created twice
    assert web1["action"] == ("adopt" if fault in ("after_create", "before_save") else
                              "nothing")
    finished = run(project, "up")
    assert finished.returncode == 0, finished.stderr
    assert warehouse(project).get(old) is None
    assert tags(project) == {"web-1": "web-1~1", "web-2": "web-2"}
    assert entry(project, "web-1").deposed == []
    assert warehouse(project).counters()["creates"] == 3
    assert actions(plan_of(project)) == {"web-1": "nothing", "web-2": "nothing"}


def test_destroy_destroys_the_deposed_resources_too(project):
    killed = converge("up", "--replace", "web-1", cwd=project,
                      env={FAULT_ENV: "before_destroy_deposed:crash"})
    assert killed.returncode == CRASH_EXIT_CODE
    assert len(warehouse(project).servers()) == 3
    assert run(project, "destroy").returncode == 0
    assert warehouse(project).servers() == {}


def test_a_driver_that_cannot_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "cluster.yml").write_text(f"""name: shop
machines:
  web:
    driver: "ssh:"
    {CBD}
    machine_options: {{transport: {{host: 127.0.0.1}}}}
""")
    for args in (("plan",), ("up", "--why-run"), ("up",), ("up", "--replace", "web")):
        refused = run(tmp_path, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert "machines.web.create_before_destroy" in refused.stderr
        assert "ssh: driver" in refused.stderr and "group 'web'" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]


def test_watch_replaces_an_unhealthy_machine_creating_first(tmp_path):
    from provisioning.actions import RecordingActionHandler
    from provisioning.cluster import Cluster
    from provisioning.cluster.watch import Watcher

    (tmp_path / "cluster.yml").write_text(f"""name: shop
driver: "fake:./cloud"
machines:
  web:
    {CBD}
    healthcheck: {{command: "test ! -f broken", deadline: 5}}
""")
    recorder = RecordingActionHandler()
    with Cluster.load(str(tmp_path / "cluster.yml"), listeners=[recorder.emit]) as cluster:
        assert cluster.up().ok
        old = server(tmp_path, "web")
        Path(old["dir"], "broken").touch()
        definition = cluster.file.machines["web"]
        done = Watcher(cluster.runner, [definition], grace=0).tend(definition)
        assert done.verdict == "replaced", done
        performed = recorder.actions(performed=True)
        made = [a.description for a in performed].index("create server (small, fake-linux)", 1)
        gone = [a.description for a in performed].index(f"destroy server {old['id']}")
        assert made < gone, [a.description for a in performed]
        assert tags(tmp_path) == {"web": "web~1"} and warehouse(tmp_path).get(old["id"]) is None
        assert cluster.store.get("machine", "web").deposed == []


def test_replacing_a_machine_not_made_yet_plans_a_create(tmp_path):
    write(tmp_path, count=1, extra=CBD)
    document = plan_of(tmp_path, "--replace", "web-1")
    assert actions(document) == {"web-1": "create"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]


def test_state_mv_carries_the_deposed_resources_and_why_run_moves_nothing(project):
    killed = converge("up", "--replace", "web-1", cwd=project,
                      env={FAULT_ENV: "before_destroy_deposed:crash"})
    assert killed.returncode == CRASH_EXIT_CODE
    kept = entry(project, "web-1")
    why = run(project, "state", "mv", "web-1", "web-9", "--why-run")
    assert why.returncode == 0 and (why.stdout + why.stderr).count("would move web-1") == 1
    assert entry(project, "web-9") is None and entry(project, "web-1").version == kept.version
    assert run(project, "state", "mv", "web-1", "web-9").returncode == 0
    moved = entry(project, "web-9")
    assert (moved.generation, moved.deposed, moved.reference) == \
        (kept.generation, kept.deposed, kept.reference)
    assert run(project, "destroy", "--orphans", "web-2").returncode == 0
    assert warehouse(project).servers() == {}  # web-9's server and its deposed one too


def test_the_generation_and_deposed_resources_round_trip_through_each_store(tmp_path, state):
    """The library API on SQLite and PostgreSQL: a create-before-destroy replace saves the
    machine's next generation; a deposed resource saved in the entry comes back from the store
    and the next up destroys it."""
    from provisioning.cluster import Cluster

    write(tmp_path, count=1, extra=CBD)
    with Cluster.load(str(tmp_path / "cluster.yml"), state=state) as cluster:
        assert cluster.up().ok
        first = server(tmp_path, "web-1")["id"]
        assert cluster.up(replace=["web-1"]).ok
        spec = cluster.store.get("machine", "web-1")
        assert (spec.generation, spec.deposed) == (1, [])
        assert tags(tmp_path) == {"web-1": "web-1~1"} and warehouse(tmp_path).get(first) is None
        second = dict(spec.reference)
        with cluster.store.lock("web-1", 30):  # as a run killed after the move aside leaves it
            replace.depose(spec, cluster.action_handler)
        assert cluster.store.get("machine", "web-1").deposed == [second]
        assert [m.deposed for m in cluster.plan().machines] == [[f"server {second['server_id']}"]]
        assert cluster.up().ok
        assert cluster.store.get("machine", "web-1").generation == 2
        assert tags(tmp_path) == {"web-1": "web-1~2"}
