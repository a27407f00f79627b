"""The matrix (platforms x suites), ``after``, ``machines`` in templates, outputs and the
test-kitchen commands, on the ``fake:`` driver through the real ``converge`` script."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from provisioning.cluster import parse_cluster
from provisioning.errors import ConfigError
from tests.integration.cli.helpers import converge, json_lines

MATRIX = """\
driver: "fake:"
platforms:
  alpha: {machine_options: {size: small}}
  beta: {machine_options: {size: medium}}
suites:
  default:
    converge:
      - command: {run: "echo {{ machine.name }} on {{ options.size }} > hello.txt", creates: hello.txt}
    verify: ["grep -q 'on' hello.txt"]
  app:
    includes: [alpha]
    machines:
      db:
        converge: [{file: {path: db.txt, content: "db\\n"}}]
      web:
        count: 2
        after: [db]
        converge:
          - command: {run: "echo {{ machines.db[0].name }} {{ machines.db[0].facts.os }} > db-host.txt", creates: db-host.txt}
        verify: ["grep -q '^app-alpha-db [a-z]' db-host.txt", "test -f missing.txt"]
outputs:
  db: "{{ machines['app-alpha-db'][0].name }}"
  sizes: "{% for m in machines['default-beta'] %}{{ m.name }}{% endfor %}"
"""


def _parse(text: str, tmp_path: Path):
    import yaml

    return parse_cluster(yaml.safe_load(text), str(tmp_path / "cluster.yml"))


def test_matrix_expands_to_instances(tmp_path):
    cluster = _parse(MATRIX, tmp_path)
    assert cluster.instances == {
        "default-alpha": ["default-alpha"], "default-beta": ["default-beta"],
        "app-alpha": ["app-alpha-db", "app-alpha-web-1", "app-alpha-web-2"]}
    beta = cluster.machines["default-beta"]
    assert beta.machine_options["size"] == "medium" and beta.instance == "default-beta"
    web = cluster.machines["app-alpha-web-2"]
    assert (web.role, web.group, web.after, web.index) == ("web", "app-alpha-web", ("db",), 2)
    assert [d.name for d in cluster.choose(["beta$"])] == ["default-beta"]
    assert [d.name for d in cluster.choose(["app-alpha"])] == cluster.instances["app-alpha"]
    with pytest.raises(ConfigError, match="did you mean 'default-alpha'"):
        cluster.choose(["default-alpah"])


@pytest.mark.parametrize("text,key,words", [
    ("driver: 'fake:'\nplatforms: {a: {}}\nsuites: {s: {excludes: [b]}}\n",
     "suites.s.excludes[0]", "no platform 'b'"),
    ("driver: 'fake:'\nplatforms: {a: {}}\nsuites: {s: {}}\nmachines: {m: {}}\n",
     "machines", "not both"),
    ("driver: 'fake:'\nplatforms: {a: {}}\n", "suites", "required with platforms"),
    ("driver: 'fake:'\nplatforms: {a: {drivr: x}}\nsuites: {s: {}}\n", "platforms.a.drivr",
     "did you mean 'driver'"),
    ("driver: 'fake:'\nmachines: {db: {after: [web]}, web: {after: [db]}}\n", "machines.db.after",
     "cycle: db -> web -> db"),
    ("driver: 'fake:'\nmachines: {web: {after: [dbb]}, db: {}}\n", "machines.web.after[0]",
     "no group 'dbb'; did you mean 'db'"),
    ("driver: 'fake:'\nmachines: {web: {converge: {ansibel: {}}}}\n",
     "machines.web.converge.ansibel", "did you mean 'ansible'"),
    ("driver: 'fake:'\nmachines: {web: {converge: {ansible: {extra_vars: 3}}}}\n",
     "machines.web.converge.ansible.playbook", "required"),
    ("driver: 'fake:'\nmachines: {web: {verify: [{testinfra: nowhere/}]}}\n",
     "machines.web.verify[0].testinfra", "does not exist"),
])
def test_bad_matrix_and_order_are_config_errors(tmp_path, text, key, words):
    with pytest.raises(ConfigError) as caught:
        _parse(text, tmp_path)
    found = [p for p in caught.value.problems if p.key == key]
    assert found and words in found[0].message, caught.value.problems


def test_plain_machines_files_are_unchanged(tmp_path):
    cluster = _parse("driver: 'fake:'\nmachines: {web: {count: 2, converge: [{command: ls}]}}\n",
                     tmp_path)
    assert cluster.instances == {} and list(cluster.machines) == ["web-1", "web-2"]
    web = cluster.machines["web-1"]
    assert (web.strategy, web.instance, web.role, len(web.steps)) == ("steps", None, "web", 1)


@pytest.fixture
def matrix(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yml").write_text(MATRIX)
    return tmp_path


def test_test_command_runs_the_matrix_and_list_shows_verify_results(matrix):
    run = converge("test", "-c", "4", "--output", "json", cwd=matrix)
    assert run.returncode == 1, run.stdout + run.stderr
    events = json_lines(run.stdout)
    summary = events[-1]
    assert {n for n, m in summary["machines"].items() if not m["ok"]} == {
        "app-alpha-web-1", "app-alpha-web-2"}
    # the failing instance is kept, whole (its db too); the passing ones are destroyed
    assert sorted(summary["kept"]) == ["app-alpha-db", "app-alpha-web-1", "app-alpha-web-2"]
    assert sorted(summary["destroyed"]) == ["default-alpha", "default-beta"]
    # web machines came after db and saw its name and facts
    db_done = min(i for i, e in enumerate(events) if e.get("machine") == "app-alpha-db"
                  and e["event"] == "result")
    web_start = min(i for i, e in enumerate(events) if e.get("machine", "").startswith(
        "app-alpha-web"))
    assert db_done < web_start
    os_id = platform.freedesktop_os_release()["ID"]  # a fake machine is this host
    assert any(e["event"] == "action" and e["description"] ==
               f"run 'echo app-alpha-db {os_id} > db-host.txt'" for e in events)

    listed = json_lines(converge("list", "--output", "json", cwd=matrix).stdout)[-1]
    rows = {r["instance"]: r for r in listed["instances"]}
    assert rows["default-alpha"]["verify"] is True and rows["default-beta"]["verify"] is True
    assert rows["app-alpha"]["verify"] is False
    assert "test -f missing.txt" in rows["app-alpha"]["verify_summary"]
    assert rows["default-alpha"]["last_action"] == "destroy"
    assert rows["app-alpha"]["state"] == "running" and rows["app-alpha"]["verified_at"]
    text = converge("list", cwd=matrix).stdout
    assert "app-alpha" in text and "failed" in text and "passed" in text

    assert converge("output", "db", cwd=matrix).stdout.strip() == "app-alpha-db"
    again = converge("destroy", "app", cwd=matrix)
    assert again.returncode == 0, again.stderr


def test_separate_steps_on_existing_instances(matrix):
    created = converge("create", "default", "--output", "json", cwd=matrix)
    assert created.returncode == 0, created.stderr
    assert not any(e["event"] == "action" and e["description"].startswith("run")
                   for e in json_lines(created.stdout))  # create does not converge
    verified = converge("verify", "default-alpha", cwd=matrix)  # not converged yet: fails
    assert verified.returncode == 1
    assert converge("converge", "default", cwd=matrix).returncode == 0
    assert converge("verify", "default", cwd=matrix).returncode == 0
    rows = {r["instance"]: r for r in json_lines(converge(
        "list", "default", "--output", "json", cwd=matrix).stdout)[-1]["instances"]}
    assert set(rows) == {"default-alpha", "default-beta"}
    assert rows["default-alpha"]["last_action"] == "verify" and rows["default-alpha"]["verify"]
    why = converge("converge", "app", "--why-run", cwd=matrix)
    assert why.returncode == 0 and "would" in why.stdout
    assert converge("destroy", "-c", "2", cwd=matrix).returncode == 0
    assert "not created" in converge("list", cwd=matrix).stdout


def test_outputs_and_schema(matrix):
    import jsonschema
    import yaml

    outputs = json_lines(converge("output", "--output", "json", cwd=matrix).stdout)[-1]
    assert outputs["outputs"]["db"] == "app-alpha-db"
    missing = converge("output", "dbb", cwd=matrix)
    assert missing.returncode == 2 and "did you mean 'db'" in missing.stderr

    schema = json.loads(converge("schema", cwd=matrix).stdout)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(MATRIX))) == []
    assert list(validator.iter_errors({"machines": {"web": {"convrege": []}}}))
    assert list(validator.iter_errors({"machines": {"web": {"converge": [{"fiel": {}}]}}}))
