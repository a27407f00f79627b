"""examples/cluster-docker.yml for real, on the dockerd the suite starts: ``converge up``
converges both machines, a second ``up`` changes nothing, ``converge test`` creates, converges,
verifies and destroys. The file is used as shipped: ``docker:`` follows ``$DOCKER_HOST`` (as the
docker command does) and the engine's namespace is set in a provisioning.yml beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.integration.cli.helpers import EXAMPLES, converge, json_lines

from .conftest import image_cache

pytestmark = pytest.mark.slow


@pytest.fixture
def example(tmp_path: Path, docker_engine):
    target = tmp_path / "example"
    shutil.copytree(EXAMPLES, target)
    options = {**docker_engine.driver_options, "image_cache": image_cache(), "pull": False,
               "keys_dir": str(tmp_path / "keys")}
    (target / "provisioning.yml").write_text(yaml.safe_dump(
        {"driver_options": {docker_engine.driver_url: options}}))
    env = {"DOCKER_HOST": docker_engine.endpoint}
    yield target, env
    converge("-f", "cluster-docker.yml", "destroy", cwd=target, env=env, timeout=300)


def test_docker_example_up_twice_then_test(example):
    directory, env = example
    up = converge("-f", "cluster-docker.yml", "up", cwd=directory, env=env, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "[web-1] update /etc/motd (sha256 differs)" in up.stdout
    motd = converge("-f", "cluster-docker.yml", "exec", "web-2", "--", "cat", "/etc/motd",
                    cwd=directory, env=env)
    assert "Welcome to web-2, machine 2 of 2" in motd.stdout, motd.stderr
    status = json.loads(converge("-f", "cluster-docker.yml", "status", "--output", "json",
                                 cwd=directory, env=env).stdout)
    assert {m["state"] for m in status["machines"]} == {"running"}
    assert {m["driver_url"] for m in status["machines"]} == {f"docker:{env['DOCKER_HOST']}"}

    again = converge("-f", "cluster-docker.yml", "up", "--output", "json", cwd=directory,
                     env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [e for e in json_lines(again.stdout) if e["event"] == "action"] == []

    over_ssh = converge("-f", "cluster-docker.yml", "ssh", "web-1", "--", "cat",
                        "/srv/www/host.txt", cwd=directory, env=env)
    assert over_ssh.returncode == 0 and over_ssh.stdout.strip() == "web-1", over_ssh.stderr

    tested = converge("-f", "cluster-docker.yml", "test", "--output", "json", cwd=directory,
                      env=env, timeout=600)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    summary = json_lines(tested.stdout)[-1]
    assert summary["ok"] and set(summary["machines"]) == {"web-1", "web-2"}
    listed = converge("-f", "cluster-docker.yml", "status", "--output", "json", cwd=directory,
                      env=env)
    assert {m["state"] for m in json.loads(listed.stdout)["machines"]} == {"not created"}
