"""Plan and apply on the fake driver through the real ``converge`` script: a vanished resource
is planned as create, a stopped machine as start, a saved plan is applied exactly or refused as
stale, a lower count destroys the highest-numbered machines unless prevent_destroy forbids it."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from provisioning.drivers.fake import FakeDriver, FakeWarehouse
from tests.integration.cli.helpers import converge, json_lines

CLUSTER = """name: shop
driver: "fake:./cloud"
machines:
  web:
    count: {count}
    {extra}
    converge:
      - file: {{path: motd, content: "{motd}\\n", mode: "0644"}}
"""


def write(project: Path, count: int = 2, motd: str = "hello", extra: str = "") -> None:
    (project / "cluster.yml").write_text(CLUSTER.format(count=count, motd=motd, extra=extra))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path)
    assert run(tmp_path, "up").returncode == 0
    return tmp_path


def run(project: Path, *args: str):
    return converge(*args, cwd=project)


def plan_of(project: Path, *args: str) -> dict:
    done = run(project, "--output", "json", "plan", *args)
    assert done.returncode == 0, done.stderr
    [document] = json_lines(done.stdout)
    return document


def actions(document: dict) -> dict[str, str]:
    return {m["name"]: m["action"] for m in document["machines"]}


def warehouse(project: Path) -> FakeWarehouse:
    return FakeWarehouse(str(project / "cloud"))


def server(project: Path, name: str) -> dict:
    return next(s for s in warehouse(project).servers().values() if s["name"] == name)


def test_a_resource_deleted_behind_our_back_is_planned_as_create(project):
    warehouse(project).delete(server(project, "web-1")["id"])
    before = warehouse(project).counters()
    why = run(project, "up", "--why-run")
    assert why.returncode == 0, why.stderr  # was: exit 1, "gone; run up to re-create it"
    assert "[web-1] create: its resource is gone" in why.stdout
    assert "plan: 1 to create, 1 unchanged" in why.stdout
    document = plan_of(project)
    assert actions(document) == {"web-1": "create", "web-2": "nothing"}
    assert warehouse(project).counters() == before  # touched nothing
    assert run(project, "up").returncode == 0
    assert actions(plan_of(project)) == {"web-1": "nothing", "web-2": "nothing"}


def test_a_stopped_machine_is_planned_as_start_with_its_steps_checked_after(project):
    assert run(project, "stop", "web-2").returncode == 0
    document = plan_of(project)
    web2 = next(m for m in document["machines"] if m["name"] == "web-2")
    assert web2["action"] == "start" and web2["observed"] == "stopped"
    assert [s["why"] for s in web2["steps"]] == ["checked after start"]
    assert server(project, "web-2")["state"] == "stopped"  # planning did not start it
    applied = run(project, "--output", "json", "up")
    changed = [e for e in json_lines(applied.stdout)
               if e.get("event") == "action" and e["machine"] == "web-2"]
    assert [e["description"] for e in changed] == [f"start server {server(project, 'web-2')['id']}"]


def test_apply_performs_exactly_the_saved_plan(project):
    write(project, count=3, motd="changed")
    os.remove(os.path.join(server(project, "web-2")["dir"], "motd"))
    document = plan_of(project, "--out", "plan.json")
    assert actions(document) == {"web-1": "converge", "web-2": "converge", "web-3": "create"}
    assert document["version"] == 1 and document["summary"]["steps"] == 2
    assert (project / "plan.json").stat().st_mode & 0o777 == 0o600
    saved = json.loads((project / "plan.json").read_text())
    assert actions(saved) == actions(document)
    applied = run(project, "--output", "json", "apply", "plan.json")
    assert applied.returncode == 0, applied.stderr
    performed = {}
    for event in json_lines(applied.stdout):
        if event.get("event") == "action":
            performed.setdefault(event["machine"], []).append(event["description"])
    planned = {m["name"]: [s["description"] for s in m["steps"]] for m in saved["machines"]}
    assert performed["web-1"] == planned["web-1"] == ["update motd (sha256 differs)"]
    assert performed["web-2"] == planned["web-2"] == ["create motd (mode 0644)"]
    # a new machine's steps are planned from the file (there is nothing to read yet)
    assert performed["web-3"][0] == planned["web-3"][0] == "create server (small, fake-linux)"
    assert len(performed["web-3"]) == len(planned["web-3"]) == 2
    assert actions(plan_of(project)) == {f"web-{i}": "nothing" for i in (1, 2, 3)}
    again = run(project, "apply", "plan.json")
    assert again.returncode == 2 and "the plan is stale" in again.stderr
    assert "machine 'web-3' changed in the state" in again.stderr


def test_a_plan_is_stale_once_the_cluster_file_changes(project):
    plan_of(project, "--out", "plan.json")
    write(project, count=2, motd="other")
    refused = run(project, "apply", "plan.json")
    assert refused.returncode == 2
    assert "the cluster file" in refused.stderr and "changed" in refused.stderr
    assert Path(server(project, "web-1")["dir"], "motd").read_text() == "hello\n"


def test_lowering_count_destroys_the_highest_numbered_machines(project):
    write(project, count=3)
    assert run(project, "up").returncode == 0
    write(project, count=1)
    assert actions(plan_of(project)) == {"web-1": "nothing", "web-2": "destroy",
                                         "web-3": "destroy"}
    done = run(project, "up")
    assert done.returncode == 0, done.stderr
    assert sorted(s["name"] for s in warehouse(project).servers().values()) == ["web-1"]
    assert actions(plan_of(project)) == {"web-1": "nothing"}


def test_prevent_destroy_turns_a_planned_destroy_into_an_error(project):
    write(project, count=1, extra="prevent_destroy: true")
    for args in (("plan",), ("up",), ("up", "--replace", "web-1")):
        refused = run(project, *args)
        assert refused.returncode == 2, (args, refused.stdout)
        assert "machines.web.prevent_destroy" in refused.stderr
    assert len(warehouse(project).servers()) == 2


def test_replace_destroys_then_creates_one_machine(project):
    old = server(project, "web-1")["id"]
    assert actions(plan_of(project, "--replace", "web-1")) == {"web-1": "replace",
                                                               "web-2": "nothing"}
    assert run(project, "up", "--replace", "web-1").returncode == 0
    assert server(project, "web-1")["id"] != old
    assert Path(server(project, "web-1")["dir"], "motd").read_text() == "hello\n"
    assert warehouse(project).counters() == {"creates": 3, "destroys": 1}


def test_status_refresh_reports_drift(project):
    warehouse(project).delete(server(project, "web-1")["id"])
    assert run(project, "stop", "web-2").returncode == 0
    shown = run(project, "--output", "json", "status", "--refresh")
    rows = {r["name"]: r["drift"] for r in json_lines(shown.stdout)[-1]["machines"]}
    assert rows == {"web-1": ["missing: its resource is gone at the provider"],
                    "web-2": ["stopped"]}


def test_a_tagged_resource_missing_from_the_state_is_planned_as_adopt(project):
    kept = server(project, "web-2")["id"]
    assert run(project, "state", "rm", "web-2").returncode == 0  # the server stays, tagged
    document = plan_of(project, "--out", "plan.json")
    web2 = next(m for m in document["machines"] if m["name"] == "web-2")
    assert web2["action"] == "adopt", web2
    assert web2["steps"][0]["description"] == f"adopt server {kept} tagged for this machine"
    assert document["summary"]["adopt"] == 1 and document["summary"]["create"] == 0
    applied = run(project, "--output", "json", "apply", "plan.json")
    assert applied.returncode == 0, applied.stderr
    assert server(project, "web-2")["id"] == kept
    assert warehouse(project).counters() == {"creates": 2, "destroys": 0}
    assert actions(plan_of(project)) == {"web-1": "nothing", "web-2": "nothing"}


def test_a_size_the_resource_cannot_take_is_shown_by_plan_not_hidden(project):
    """``up`` reports that a server's size differs from the file and changes nothing for it;
    ``plan`` says the same instead of "up to date", and applying that plan changes nothing."""
    write(project, extra="machine_options: {size: large}")
    before = warehouse(project).counters()
    document = plan_of(project, "--out", "plan.json")
    assert actions(document) == {"web-1": "nothing", "web-2": "nothing"}
    web1 = next(m for m in document["machines"] if m["name"] == "web-1")
    [found] = web1["drift"]
    assert f"server {server(project, 'web-1')['id']} is size small, wished large" in found
    assert "--replace web-1" in web1["reason"]
    shown = run(project, "plan")
    assert f"[web-2] ! server {server(project, 'web-2')['id']} is size small" in shown.stdout
    applied = run(project, "apply", "plan.json")
    assert applied.returncode == 0, applied.stderr
    assert warehouse(project).counters() == before
    assert {s["size"] for s in warehouse(project).servers().values()} == {"small"}


class _ComparingFake(FakeDriver):
    """The fake driver, counting its ``compare_with_wish`` calls per machine."""

    scheme = "comparingfake"
    compared: Counter = Counter()

    def compare_with_wish(self, action_handler, machine_spec, machine_options):
        type(self).compared[machine_spec.name] += 1
        super().compare_with_wish(action_handler, machine_spec, machine_options)


def test_plan_compares_each_existing_machine_with_the_file_once(tmp_path: Path):
    """The drift ``plan`` shows and the rehearsal of ``up`` come from one compare."""
    from provisioning.cluster import Cluster
    from provisioning.registry import register_driver

    register_driver(_ComparingFake.scheme, _ComparingFake)
    (tmp_path / "cluster.yml").write_text(CLUSTER.format(count=2, motd="hi", extra="").replace(
        '"fake:./cloud"', f'"{_ComparingFake.scheme}:./cloud"'))
    with Cluster.load(str(tmp_path / "cluster.yml")) as cluster:
        assert cluster.up().ok
    (tmp_path / "cluster.yml").write_text((tmp_path / "cluster.yml").read_text().replace(
        "count: 2", "count: 2\n    machine_options: {size: large}"))
    _ComparingFake.compared.clear()
    with Cluster.load(str(tmp_path / "cluster.yml")) as cluster:
        planned = {m.name: m for m in cluster.plan().machines}
    assert _ComparingFake.compared == {"web-1": 1, "web-2": 1}
    for machine in planned.values():
        [drift] = machine.drift  # reported once, not lost
        assert "is size small, wished large" in drift and machine.action == "nothing"
