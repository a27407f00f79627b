"""The quick start's cluster with ``driver: "libvirt:"`` (examples/cluster-libvirt.yml) converges
two real virtual machines through the real ``converge`` script, and a second up changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.cli.helpers import EXAMPLES, converge, json_lines


@pytest.fixture
def libvirt_example(tmp_path: Path, libvirt_daemons, libvirt_image_cache):
    target = tmp_path / "example"
    shutil.copytree(EXAMPLES, target)
    cluster = target / "cluster-libvirt.yml"
    text = cluster.read_text()
    assert 'driver: "libvirt:"' in text
    # only where its files go is added: the test's own directory and the shared image cache
    cluster.write_text(text + f'\ndriver_options:\n  "libvirt:qemu:///system":\n'
                              f'    directory: {tmp_path / "vms"}\n'
                              f'    image_cache: {libvirt_image_cache}\n')
    yield target
    converge("-f", "cluster-libvirt.yml", "destroy", "-q", cwd=target, timeout=300)


def test_example_cluster_on_libvirt(libvirt_example: Path):
    env = {"LIBVIRT_DEFAULT_URI": ""}
    up = converge("-f", "cluster-libvirt.yml", "up", cwd=libvirt_example, env=env, timeout=1800)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "[web-1] update /etc/motd (sha256 differs)" in up.stdout

    motd = converge("-f", "cluster-libvirt.yml", "exec", "web-1", "--", "cat", "/etc/motd",
                    cwd=libvirt_example, env=env)
    assert motd.returncode == 0, motd.stderr
    assert "Welcome to web-1, machine 1 of 2" in motd.stdout
    kernel = converge("-f", "cluster-libvirt.yml", "exec", "web-2", "--", "uname", "-r",
                      cwd=libvirt_example, env=env)
    assert kernel.stdout.strip().endswith("-cloud-amd64"), "a VM runs its own kernel"

    again = converge("-f", "cluster-libvirt.yml", "up", "--output", "json", cwd=libvirt_example,
                     env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert [e for e in json_lines(again.stdout) if e["event"] == "action"] == []

    status = json.loads(converge("-f", "cluster-libvirt.yml", "status", "--output", "json",
                                 cwd=libvirt_example, env=env).stdout)
    assert {m["state"] for m in status["machines"]} == {"running"}

    down = converge("-f", "cluster-libvirt.yml", "destroy", "-q", cwd=libvirt_example, env=env,
                    timeout=300)
    assert down.returncode == 0, down.stderr
    assert not list((libvirt_example.parent / "vms" / "machines").iterdir())
