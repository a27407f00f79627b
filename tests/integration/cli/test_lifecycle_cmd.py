"""``converge test``: create, converge, verify, destroy, honouring --destroy; and the pytest
plugin (``--cluster``, ``cluster`` and ``machine`` fixtures, ``--keep``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.cli.helpers import (
    converge,
    json_lines,
    saved_machines,
    warehouse_counters,
    warehouse_servers,
)

CLUSTER = """\
driver: "fake:"
machines:
  good:
    converge:
      - file: {path: hello.txt, content: "hello\\n"}
    verify:
      - grep -qx hello hello.txt
  bad:
    converge:
      - file: {path: hello.txt, content: "bye\\n"}
    verify:
      - test -d .
      - grep -qx hello hello.txt
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    return tmp_path


@pytest.mark.parametrize("policy,destroyed,kept", [
    ("passing", ["good"], ["bad"]),
    ("always", ["good", "bad"], []),
    ("never", [], ["good", "bad"]),
])
def test_destroy_policy(project: Path, policy: str, destroyed: list[str], kept: list[str]):
    result = converge("test", "--destroy", policy, "--output", "json", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    events = json_lines(result.stdout)
    summary = events[-1]
    assert summary["event"] == "summary" and summary["command"] == "test"
    assert summary["machines"]["good"]["ok"] is True
    assert summary["machines"]["bad"]["ok"] is False
    assert "grep -qx hello hello.txt" in summary["machines"]["bad"]["error"]
    assert sorted(summary["destroyed"]) == sorted(destroyed)
    assert sorted(saved_machines(project)) == sorted(kept)
    assert len(warehouse_servers(project)) == len(kept)
    assert warehouse_counters(project)["creates"] == 2
    results = [e for e in events if e["event"] == "result" and e["machine"] == "good"]
    assert any(e["description"] == "verify passed" for e in results)


def test_all_passing_exits_zero_and_destroys(project: Path):
    result = converge("test", "good", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[good] verify 'grep -qx hello hello.txt': passed" in result.stdout
    assert "[good] destroy server" in result.stdout
    assert saved_machines(project) == [] and warehouse_servers(project) == {}


def test_kept_machine_can_be_fixed_and_retested(project: Path):
    assert converge("test", "bad", "--destroy", "never", cwd=project).returncode == 1
    cluster = project / "cluster.yml"
    cluster.write_text(cluster.read_text().replace('content: "bye\\n"', 'content: "hello\\n"'))
    again = converge("test", "bad", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[bad] update hello.txt (sha256 differs)" in again.stdout
    assert warehouse_counters(project)["creates"] == 1


PLUGIN_TESTS = '''
import os

def test_motd(machine):
    m = machine("web-1")
    assert m.read_file("motd") == b"hi web-1\\n"

def test_default_machine(machine, cluster):
    name = os.environ.get("PROVISIONING_MACHINE")
    expected = name or "web-1"
    assert machine().name == expected
    assert machine().execute_always("cat motd").stdout == f"hi {expected}\\n"
    assert set(cluster.machines) <= {"web-1", "web-2"}
'''


def _plugin_project(tmp_path: Path, verify_dir: bool = False) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_on_machine.py").write_text(PLUGIN_TESTS)
    (tmp_path / "motd.j2").write_text("hi {{ machine.name }}\n")
    verify = "\n    verify: [{pytest: tests}]" if verify_dir else ""
    (tmp_path / "cluster.yml").write_text(textwrap.dedent("""\
        driver: "fake:"
        machines:
          web:
            count: 2
            converge: [{file: {path: motd, template: motd.j2}}]""") + verify + "\n")
    return tmp_path


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PROVISIONING_MACHINE"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def test_pytest_plugin_provisions_once_and_destroys(tmp_path: Path):
    project = _plugin_project(tmp_path)
    result = _pytest(project, "--cluster", "cluster.yml", "--cluster-machine", "web-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert warehouse_counters(project) == {"creates": 1, "destroys": 1}
    assert saved_machines(project) == []


def test_pytest_plugin_keep(tmp_path: Path):
    project = _plugin_project(tmp_path)
    result = _pytest(project, "--cluster", "cluster.yml", "--keep")
    assert result.returncode == 1  # machine() with two machines up asks which one
    assert "which machine?" in result.stdout
    assert sorted(saved_machines(project)) == ["web-1", "web-2"]
    assert warehouse_counters(project)["destroys"] == 0


def test_pytest_plugin_without_cluster_skips(tmp_path: Path):
    project = _plugin_project(tmp_path)
    result = _pytest(project, "-rs")
    assert result.returncode == 0 and "2 skipped" in result.stdout
    assert "run pytest with --cluster FILE" in result.stdout


def test_converge_test_runs_a_pytest_directory_against_each_machine(tmp_path: Path):
    project = _plugin_project(tmp_path, verify_dir=True)
    result = converge("test", "--output", "json", cwd=project, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    events = json_lines(result.stdout)
    passed = [e for e in events if e["event"] == "progress" and "passed:" in e["description"]]
    assert {e["machine"] for e in passed} == {"web-1", "web-2"}
    assert warehouse_counters(project) == {"creates": 2, "destroys": 2}
    broken = (project / "tests" / "test_on_machine.py")
    broken.write_text(broken.read_text().replace('b"hi web-1\\n"', 'b"nope"'))
    failing = converge("test", "--destroy", "never", cwd=project, timeout=300)
    assert failing.returncode == 1
    assert "verify: pytest" in failing.stderr and "failed" in failing.stderr
