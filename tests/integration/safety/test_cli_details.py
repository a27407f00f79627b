"""Smaller CLI promises: exec options after the machine name, -vv on an internal error, config
show honouring --parallel, the private-key permission rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.safety.helpers import converge_here

CLUSTER = 'driver: "fake:"\nmachines: {web: {}}\n'


def _up(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    assert converge_here("up", cwd=tmp_path).code == 0
    return tmp_path


def test_exec_options_after_the_machine_are_options_not_the_command(tmp_path):
    cwd = _up(tmp_path)
    run = converge_here("--output", "json", "exec", "web", "--sudo", "--timeout", "30", "--",
                        "echo", "hello", cwd=cwd)
    assert run.code == 0, run.text
    record = json.loads(run.out.splitlines()[-1])
    assert record["stdout"] == "hello\n"
    assert "--sudo" not in record["command"]
    run = converge_here("exec", "web", "--", "echo", "--sudo", cwd=cwd)  # after '--': the command's
    assert run.code == 0 and run.out == "--sudo\n"


def test_vv_shows_the_type_and_traceback_of_an_internal_error(tmp_path):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    env = {"PROVISIONING_FAULT": "during_ready:bug"}
    quiet = converge_here("up", cwd=tmp_path, env=env)
    assert quiet.code == 1
    assert "Traceback" not in quiet.text
    loud = converge_here("-vv", "up", cwd=tmp_path, env=env)
    assert loud.code == 1
    assert "RuntimeError" in loud.err and "Traceback (most recent call last)" in loud.err
    assert "faults.py" in loud.err


def test_config_show_honours_the_global_parallel_flag(tmp_path):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    run = converge_here("--parallel", "7", "config", "show", cwd=tmp_path)
    assert run.code == 0, run.text
    line = next(l for l in run.out.splitlines() if l.startswith("parallel "))
    assert "7" in line and "--parallel" in line


def _key(path: Path, mode: int) -> None:
    from provisioning.keys import generate_private_key

    generate_private_key(str(path))
    path.chmod(mode)


def test_world_readable_private_key_is_refused_with_the_fix(tmp_path):
    _key(tmp_path / "id", 0o644)
    (tmp_path / "cluster.yml").write_text(
        'driver: "ssh:"\nprivate_keys: {k: ./id}\nmachines: {web: {machine_options: '
        '{transport: {host: 127.0.0.1, key_name: k}}}}\n')
    run = converge_here("up", cwd=tmp_path)
    assert run.code == 2, run.text
    assert "unprotected" in run.err and f"chmod 600 {tmp_path / 'id'}" in run.err
    assert not (tmp_path / ".provisioning").exists()  # refused before anything was registered
    os.chmod(tmp_path / "id", 0o600)
    run = converge_here("up", "--why-run", cwd=tmp_path)
    assert "unprotected" not in run.text
