"""Steps convergence on a real machine over the local transport: idempotence and why-run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.file import parse_cluster
from provisioning.errors import CommandFailed, CommandTimeout, ConfigError
from provisioning.machine.unix import UnixMachine
from provisioning.transports.local import LocalTransport


def machine_in(root: Path, handler: RecordingActionHandler, name: str = "m") -> UnixMachine:
    root.mkdir(exist_ok=True)
    return UnixMachine(name, LocalTransport(str(root)), action_handler=handler)


def converge_once(project: Path, root: Path, *, why_run: bool = False,
                  steps: str) -> tuple[RecordingActionHandler, bool]:
    cluster = parse_cluster({"driver": "fake:", "machines": {"m": {"converge": steps}}},
                            str(project / "cluster.yml"))
    handler = RecordingActionHandler(why_run=why_run)
    machine = machine_in(root, handler)
    strategy = cluster.convergence(cluster.machines["m"])
    machine.convergence = strategy
    machine.setup_convergence()
    changed = machine.converge()
    machine.cleanup_convergence()
    return handler, changed


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "motd.j2").write_text("hello {{ machine.name }} size={{ options.get('size', 'none') }}\n")
    (tmp_path / "source.txt").write_text("from a local file\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho \"$1 $GREETING\" > script-out.txt\n")
    return tmp_path


STEPS = [
    {"file": {"path": "etc/motd", "template": "motd.j2", "mode": "0600"}},
    {"file": {"path": "copy.txt", "source": "source.txt"}},
    {"file": {"path": "inline.txt", "content": "inline\n", "mode": 0o640}},
    {"directory": {"path": "srv/www", "mode": "0750"}},
    {"command": {"run": "echo ran >> command.log", "creates": "command.log"}},
    {"command": {"run": "echo unless >> unless.log", "unless": "test -f unless.log"}},
    {"command": {"run": "echo never >> onlyif.log", "onlyif": "test -f no-such-file"}},
    {"command": {"run": "echo \"$WHO\" > env.txt", "env": {"WHO": "me"}, "cwd": "srv/www",
                 "creates": "srv/www/env.txt"}},
    {"script": {"source": "run.sh", "args": ["hi"], "env": {"GREETING": "there"},
                "creates": "script-out.txt"}},
]


def test_steps_apply_then_change_nothing(project: Path, tmp_path: Path):
    root = tmp_path / "machine"
    handler, changed = converge_once(project, root, steps=STEPS)
    assert changed
    assert (root / "etc/motd").read_text() == "hello m size=none\n"
    assert oct((root / "etc/motd").stat().st_mode & 0o777) == "0o600"
    assert (root / "copy.txt").read_text() == "from a local file\n"
    assert oct((root / "inline.txt").stat().st_mode & 0o777) == "0o640"
    assert oct((root / "srv/www").stat().st_mode & 0o777) == "0o750"
    assert (root / "command.log").read_text() == "ran\n"
    assert (root / "unless.log").read_text() == "unless\n"
    assert not (root / "onlyif.log").exists()
    assert (root / "srv/www/env.txt").read_text() == "me\n"
    assert (root / "script-out.txt").read_text() == "hi there\n"
    done = handler.descriptions()
    assert "[m] create etc/motd (mode 0600)" in done  # one action: made with its mode
    assert not any(d.startswith("[m] change mode of") for d in done)
    assert any(d.startswith("[m] upload and run script run.sh") for d in done)

    again, changed = converge_once(project, root, steps=STEPS)
    assert not changed
    assert again.actions() == []
    progress = again.descriptions("progress")
    assert "[m] file etc/motd is up to date" in progress
    assert "[m] skip 'echo ran >> command.log': command.log exists" in progress
    assert "[m] skip 'echo never >> onlyif.log': onlyif 'test -f no-such-file' exited 1" in progress
    assert "[m] converged: 9 steps, nothing to change" in progress
    assert (root / "command.log").read_text() == "ran\n"


def test_why_run_reports_and_changes_nothing(project: Path, tmp_path: Path):
    root = tmp_path / "machine"
    handler, changed = converge_once(project, root, why_run=True, steps=STEPS)
    assert changed
    assert sorted(os.listdir(root)) == []
    planned = [str(e) for e in handler.actions(performed=False)]
    assert "[m] would create etc/motd (mode 0600)" in planned
    assert "[m] would create directory srv/www (mode 0750)" in planned
    assert "[m] would run 'echo ran >> command.log'" in planned
    assert not any("onlyif.log" in p for p in planned)
    assert handler.actions(performed=True) == []


def test_why_run_on_changed_file_says_sha256_differs(project: Path, tmp_path: Path):
    root = tmp_path / "machine"
    converge_once(project, root, steps=STEPS[:1])
    (root / "etc/motd").write_text("edited\n")
    os.chmod(root / "etc/motd", 0o644)
    handler, _ = converge_once(project, root, why_run=True, steps=STEPS[:1])
    planned = [str(e) for e in handler.actions()]
    assert planned == ["[m] would update etc/motd (sha256 differs)",
                       "[m] would change mode of etc/motd from 0644 to 0600"]
    assert (root / "etc/motd").read_text() == "edited\n"


def test_failing_command_stops_the_steps(project: Path, tmp_path: Path):
    root = tmp_path / "machine"
    steps = [{"command": {"run": "echo bad >&2; exit 4"}}, {"file": {"path": "after", "content": ""}}]
    with pytest.raises(CommandFailed) as info:
        converge_once(project, root, steps=steps)
    assert info.value.exit_status == 4 and "bad" in str(info.value)
    assert not (root / "after").exists()


def test_command_timeout(project: Path, tmp_path: Path):
    with pytest.raises(CommandTimeout):
        converge_once(project, tmp_path / "machine",
                      steps=[{"command": {"run": "sleep 5", "timeout": 0.3}}])


def test_undefined_template_variable_names_the_step(project: Path, tmp_path: Path):
    (project / "typo.j2").write_text("{{ machine.nmae }}\n")
    with pytest.raises(ConfigError) as info:
        converge_once(project, tmp_path / "machine",
                      steps=[{"command": "true"}, {"file": {"path": "x", "template": "typo.j2"}}])
    assert info.value.key == "machines.m.converge[1].file.template"
    assert "nmae" in str(info.value) and info.value.file == str(project / "cluster.yml")


def test_package_step_checks_dpkg_and_plans_only_what_differs(project: Path, tmp_path: Path):
    """On this host (read-only: why-run): dpkg itself is installed, a made-up name is not."""
    steps = [{"package": ["dpkg", "provtest-never-installed"]},
             {"package": {"name": "dpkg", "state": "present"}},
             {"package": {"name": "provtest-never-installed", "state": "absent"}}]
    handler, changed = converge_once(project, tmp_path / "machine", why_run=True, steps=steps)
    assert changed
    assert [str(e) for e in handler.actions()] == [
        "[m] would install package provtest-never-installed (apt-get)"]
    assert handler.actions(performed=True) == []
    progress = handler.descriptions("progress")
    assert "[m] package dpkg installed: nothing to change" in progress
    assert "[m] package provtest-never-installed absent: nothing to change" in progress


def test_package_step_input_errors_name_their_keys(project: Path):
    steps = [{"package": {"name": ["nginx", "Not Valid"], "state": "gone"}},
             {"package": {"state": "present"}}, {"package": []}, {"package": {"name": 3}}]
    with pytest.raises(ConfigError) as info:
        parse_cluster({"driver": "fake:", "machines": {"m": {"converge": steps}}},
                      str(project / "cluster.yml"))
    problems = {p.key: p.message for p in info.value.problems}
    assert "not a Debian package name" in problems["machines.m.converge[0].package.name"]
    assert "present or absent" in problems["machines.m.converge[0].package.state"]
    assert "required" in problems["machines.m.converge[1].package.name"]
    assert "at least one" in problems["machines.m.converge[2].package.name"]
    assert "expected a list of strings" in problems["machines.m.converge[3].package.name"]
