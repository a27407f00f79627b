"""The local-machine API every driver shares: ``sync:``/``ports:`` in the cluster file, the
``converge sync`` and ``converge snapshot`` commands, and the generic copy mode, through the
real console script and the fake: driver (whose machines run on this host in a directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.cluster import parse_cluster
from provisioning.driver import Capabilities
from provisioning.drivers.fake import FakeDriver
from provisioning.errors import ConfigError
from provisioning.registry import register_driver
from tests.integration.cli.helpers import converge, json_lines, warehouse_servers


class LocalFakeDriver(FakeDriver):
    """The fake: driver declaring every local-machine feature (parsing needs no more)."""

    scheme = "localfake"
    capabilities = Capabilities(snapshots=True, mounts_folders=True, forwards_ports=True)


register_driver("localfake", LocalFakeDriver)


def _cluster(tmp_path: Path, body: str) -> Path:
    (tmp_path / "cluster.yml").write_text(body)
    return tmp_path


def test_sync_and_ports_reach_the_driver_as_machine_options(tmp_path):
    (tmp_path / "app").mkdir()
    cluster = parse_cluster({"driver": "localfake:", "machines": {"web": {
        "sync": [{"from": "./app", "to": "/srv/app/"}],
        "ports": ["8080:80", "0.0.0.0:8443:443"]}}}, str(tmp_path / "cluster.yml"))
    options = cluster.machines["web"].machine_options
    assert options["sync"] == [{"from": str(tmp_path / "app"), "to": "/srv/app", "mode": "auto"}]
    assert options["ports"] == ["127.0.0.1:8080:80/tcp", "0.0.0.0:8443:443/tcp"]


@pytest.mark.parametrize("machine,key,text", [
    ({"sync": [{"from": "./missing", "to": "/srv"}]}, "machines.web.sync[0].from",
     "is not a directory"),
    ({"sync": [{"from": ".", "to": "srv"}]}, "machines.web.sync[0].to", "absolute path"),
    ({"sync": [{"from": ".", "to": "/srv", "mode": "rsynk"}]}, "machines.web.sync[0].mode",
     "did you mean 'rsync'"),
    ({"sync": [{"form": ".", "to": "/srv"}]}, "machines.web.sync[0].form", "did you mean 'from'"),
    ({"ports": ["8080"]}, "machines.web.ports[0]", "HOST_PORT:GUEST_PORT"),
    ({"ports": ["70000:80"]}, "machines.web.ports[0]", "1 to 65535"),
    ({"ports": ["8080:80", "8080:81"]}, "machines.web.ports[1]", "forwarded twice"),
    ({"count": 2, "ports": ["8080:80"]}, "machines.web.ports", "cannot all bind"),
])
def test_bad_sync_and_ports_name_the_key(tmp_path, machine, key, text):
    with pytest.raises(ConfigError) as caught:
        parse_cluster({"driver": "localfake:", "machines": {"web": machine}},
                      str(tmp_path / "cluster.yml"))
    assert any(p.key == key and text in p.message for p in caught.value.problems), \
        caught.value.problems


def test_a_driver_that_cannot_forward_or_mount_says_so(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse_cluster({"driver": "fake:", "machines": {"web": {
            "ports": ["8080:80"], "sync": [{"from": ".", "to": "/srv", "mode": "mount"}]}}},
            str(tmp_path / "cluster.yml"))
    messages = {p.key: p.message for p in caught.value.problems}
    assert "cannot forward ports" in messages["machines.web.ports"]
    assert "cannot mount host folders" in messages["machines.web.sync[0].mode"]


def test_up_copies_synced_folders_and_sync_pushes_changes(tmp_path):
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "index.html").write_text("v1\n")
    (app / "conf" / "site.conf").write_text("listen 80\n")
    (app / "run.sh").write_text("#!/bin/sh\n")
    (app / "run.sh").chmod(0o755)
    project = _cluster(tmp_path, """\
driver: "fake:"
machines:
  web:
    sync: [{from: ./app, to: /srv/app}]
""")
    first = converge("up", "--output", "json", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    # a fake machine's files live in its server directory (its whole filesystem)
    (server,) = warehouse_servers(project).values()
    target = Path(server["dir"]) / "srv" / "app"
    assert (target / "index.html").read_text() == "v1\n"
    assert (target / "conf" / "site.conf").read_text() == "listen 80\n"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755

    (app / "index.html").write_text("v2\n")
    planned = converge("sync", "--why-run", "--output", "json", cwd=project)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (target / "index.html").read_text() == "v1\n", "why-run must copy nothing"
    assert any("1 file to send" in e.get("description", "") for e in json_lines(planned.stdout))

    pushed = converge("sync", "web", "--output", "json", cwd=project)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert (target / "index.html").read_text() == "v2\n"
    assert json_lines(pushed.stdout)[-1]["machines"]["web"]["changes"] == 1

    again = converge("up", "--output", "json", cwd=project)
    assert json_lines(again.stdout)[-1]["machines"]["web"]["changes"] == 0
    converge("destroy", cwd=project)


def test_snapshot_on_a_driver_without_snapshots_is_an_unsupported_operation(tmp_path):
    project = _cluster(tmp_path, 'driver: "fake:"\nmachines:\n  web: {}\n')
    assert converge("up", cwd=project).returncode == 0
    result = converge("snapshot", "save", "web", "first", cwd=project)
    assert result.returncode != 0
    assert "cannot save snapshots" in result.stderr and "Traceback" not in result.stderr
    listed = converge("snapshot", "list", "web", cwd=project)
    assert "cannot list snapshots" in listed.stderr
    bad = converge("snapshot", "save", "web", "no/slash", cwd=project)
    assert bad.returncode == 2 and "invalid snapshot name" in bad.stderr
    missing = converge("snapshot", "save", "wbe", cwd=project)
    assert missing.returncode == 2 and "did you mean 'web'" in missing.stderr
    converge("destroy", cwd=project)
