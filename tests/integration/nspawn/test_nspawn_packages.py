"""The ``package`` step inside a running nspawn machine, through the driver's package proxy.

The archive is the suite's own (``provisioning.testing.apt_archive``, served on the host's
loopback), added to the proxy's allowed archives with the driver option ``package_archives``:
no traffic leaves the host, and the machine still has no route out.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.convergence.steps import StepContext, StepsConvergence, parse_steps
from provisioning.inputs.schema import Problems
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore
from provisioning.testing.apt_archive import build_archive, serve_archive, sources_line

from .conftest import sweep

PACKAGES = ["provtest-hello", "provtest-extra"]


def _host_network() -> dict[str, str]:
    """The host's interfaces, routes and firewall rules (packet counters masked)."""
    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rules = "\n".join(line for line in run("iptables-save").splitlines()
                      if not line.startswith("#"))
    return {"link": re.sub(r"\s+", " ", run("ip", "-o", "link", "show")),
            "route": run("ip", "route", "show", "table", "all"),
            "iptables": re.sub(r"\[\d+:\d+\]", "[-]", rules)}


def _steps(base_dir: str, *items) -> StepsConvergence:
    problems = Problems(None)
    steps = parse_steps(list(items), "converge", problems, base_dir)
    problems.raise_if_any()
    return StepsConvergence(steps, StepContext(base_dir))


def _dpkg(machine, name: str) -> str:
    return machine.execute_always(f"dpkg-query -W -f='${{db:Status-Status}}' {name}",
                                  check=False).stdout.strip()


@pytest.fixture
def archive_url(tmp_path):
    build_archive(tmp_path / "archive", {name: "1.0" for name in PACKAGES})
    with serve_archive(tmp_path / "archive") as url:
        yield url


def test_package_step_installs_and_removes_idempotently_without_touching_host_network(
        tmp_path, warehouse_url, image_cache, archive_url):
    before = _host_network()
    config = Config({"driver_options": {warehouse_url: {"image_cache": image_cache,
                                                        "package_archives": [archive_url]}}},
                    base_dir=str(tmp_path))
    driver = driver_for_url(warehouse_url, config)
    store = SQLiteStore(tmp_path / "state.db")
    handler = RecordingActionHandler()
    provisioner = Provisioner(store, config=config, action_handler=handler)
    try:
        machine = provisioner.up(driver, "pkg")
        # only the suite's archive: nothing reaches the internet
        machine.execute_always("rm -f /etc/apt/sources.list.d/* && cat > /etc/apt/sources.list",
                               input=sources_line(archive_url))
        install = _steps(str(tmp_path), {"package": {"name": PACKAGES}})

        planner = RecordingActionHandler(why_run=True)
        machine.action_handler = planner.for_machine("pkg")
        assert install.converge(machine) is True  # why-run: planned, not done
        assert [a.description for a in planner.actions()] == [
            "install packages provtest-hello, provtest-extra (apt-get)"]
        assert not planner.actions(performed=True) and _dpkg(machine, PACKAGES[0]) != "installed"

        machine.action_handler = handler.for_machine("pkg")
        assert install.converge(machine) is True
        for name in PACKAGES:
            assert _dpkg(machine, name) == "installed"
            assert machine.execute_always(f"cat /usr/share/provtest/{name}").stdout == \
                f"{name} 1.0\n"
        performed = len(handler.actions(performed=True))
        assert install.converge(machine) is False, "installed packages must not be installed again"
        assert len(handler.actions(performed=True)) == performed

        remove = _steps(str(tmp_path), {"package": {"name": "provtest-extra", "state": "absent"}})
        assert remove.converge(machine) is True
        assert _dpkg(machine, "provtest-extra") != "installed"
        assert _dpkg(machine, "provtest-hello") == "installed"
        assert remove.converge(machine) is False

        # the proxy reaches the listed archives only; the machine itself has no route out
        gateway = provisioner.spec("pkg").reference["gateway"]
        ask = ("import socket; s = socket.create_connection(('%s', 3142)); "
               "s.sendall(b'GET %s HTTP/1.1\\r\\n\\r\\n'); print(s.recv(200).split()[1].decode())")
        for url, status in ((f"{archive_url}/Packages", "200"), ("http://example.com/", "403"),
                            (f"{archive_url}/../secret", "403")):
            answer = machine.execute_always(f'python3 -c "{ask % (gateway, url)}"').stdout
            assert answer.strip() == status, url
        routes = machine.execute_always("ip route").stdout
        assert routes.startswith(f"default via {gateway}")  # the hub: no route beyond it
        machine.disconnect()
    finally:
        for spec in store.list("machine"):
            provisioner.destroy(spec.name, {}, driver)
        store.close()
        assert not sweep(driver)
    assert _host_network() == before
