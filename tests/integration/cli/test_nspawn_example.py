"""The README's main job for real: examples/cluster.yml on nspawn: machines (root only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.integration.cli.helpers import EXAMPLES, converge, json_lines

pytestmark = [pytest.mark.nspawn, pytest.mark.slow]
IMAGE_CACHE = os.environ.get("PROVISIONING_NSPAWN_IMAGE_CACHE",
                             "/var/cache/provisioning-test-images")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "nspawn machines need root"
    try:
        import provisioning.drivers.nspawn  # noqa: F401
    except ImportError as exc:
        return f"the nspawn driver is not available: {exc}"
    for binary in ("systemd-nspawn", "debootstrap", "ip", "ssh"):
        if not (shutil.which(binary) or os.path.exists(f"/usr/sbin/{binary}")):
            return f"{binary} is not installed"
    return None


@pytest.fixture
def nspawn_example(tmp_path: Path):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    target = tmp_path / "example"
    shutil.copytree(EXAMPLES, target)
    cluster = target / "cluster.yml"
    url = f"nspawn:{tmp_path / 'warehouse'}"
    text = cluster.read_text().replace('driver: "nspawn:"', f'driver: "{url}"\n'
                                       f'driver_options: {{"{url}": {{image_cache: {IMAGE_CACHE}}}}}')
    cluster.write_text(text)
    yield target
    converge("destroy", "-q", cwd=target, timeout=300)
    converge("image", "destroy", "-q", cwd=target, timeout=300)


def test_example_cluster_on_nspawn(nspawn_example: Path):
    up = converge("up", cwd=nspawn_example, timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "[web-1] update /etc/motd (sha256 differs)" in up.stdout
    # the site machine boots from the nginx image, built once, and serves its page
    assert "building image web-server" in up.stdout
    assert "[site] healthcheck http http://198.18." in up.stdout
    page = converge("exec", "site", "--", "cat", "/var/www/html/index.html", cwd=nspawn_example)
    assert "served by nginx from the web-server image" in page.stdout

    motd = converge("exec", "web-1", "--", "cat", "/etc/motd", cwd=nspawn_example)
    assert motd.returncode == 0, motd.stderr
    assert "Welcome to web-1, machine 1 of 2" in motd.stdout
    assert converge("exec", "web-2", "--", "false", cwd=nspawn_example).returncode == 1

    again = converge("up", "--output", "json", cwd=nspawn_example, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [e for e in json_lines(again.stdout) if e["event"] == "action"] == []
    assert any("image web-server is up to date" in e["description"]
               for e in json_lines(again.stdout) if e["event"] == "progress")

    over_ssh = converge("ssh", "web-2", "--", "cat", "/srv/www/host.txt", cwd=nspawn_example)
    assert over_ssh.returncode == 0, over_ssh.stderr
    via_exec = converge("exec", "web-2", "--", "cat", "/srv/www/host.txt", cwd=nspawn_example)
    assert over_ssh.stdout == via_exec.stdout and over_ssh.stdout.strip()
    refused = converge("ssh", "web-2", "--", "exit", "5", cwd=nspawn_example)
    assert refused.returncode == 5

    status = json.loads(converge("status", "--output", "json", cwd=nspawn_example).stdout)
    assert {m["state"] for m in status["machines"]} == {"running"}
    assert all(m["address"] for m in status["machines"])

    verify = converge("test", "--destroy", "always", cwd=nspawn_example, timeout=600)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    after = json.loads(converge("status", "--output", "json", cwd=nspawn_example).stdout)
    assert {m["state"] for m in after["machines"]} == {"not created"}
