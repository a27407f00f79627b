"""What the nspawn: driver promises beyond the conformance suite, on real machines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.drivers.nspawn_host import netns, proc
from provisioning.errors import ProviderError
from provisioning.lifecycle import Provisioner
from provisioning.store.sqlite import SQLiteStore


@pytest.fixture
def provisioner(tmp_path, nspawn_config, nspawn_driver):
    store = SQLiteStore(tmp_path / "state.db")
    handler = RecordingActionHandler()
    provisioner = Provisioner(store, config=nspawn_config, action_handler=handler, parallel=4)
    yield provisioner
    for spec in store.list("machine"):
        Provisioner(store, config=nspawn_config).destroy(spec.name, {}, nspawn_driver)
    store.close()


def _mounts() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return handle.read()


def _netns_names() -> set[str]:
    try:
        return set(os.listdir(netns.NETNS_DIR))
    except FileNotFoundError:
        return set()


def test_file_written_before_stop_is_there_after_ready(provisioner, nspawn_driver):
    machine = provisioner.up(nspawn_driver, "keeper")
    machine.execute_always("echo persisted-$((40+2)) > /var/tmp/keep.txt && sync")
    first_boot = provisioner.spec("keeper").reference["pid"]
    machine.disconnect()
    provisioner.stop("keeper", {}, nspawn_driver)
    spec = provisioner.spec("keeper")
    assert nspawn_driver.machine_state(spec) == "stopped"
    assert not proc.alive(first_boot)
    machine = provisioner.ready(nspawn_driver, "keeper")
    assert provisioner.spec("keeper").reference["pid"] != first_boot, "ready must boot again"
    assert machine.execute_always("cat /var/tmp/keep.txt").stdout.strip() == "persisted-42"
    # systemd is PID 1 inside and the machine has its own hostname
    assert machine.execute_always("cat /proc/1/comm").stdout.strip() == "systemd"
    assert machine.execute_always("hostname").stdout.strip() == "keeper"
    machine.disconnect()


def test_two_machines_reach_each_other_over_ssh_by_address(provisioner, nspawn_driver):
    results = provisioner.run_many("up", [(nspawn_driver, n, {}) for n in ("left", "right")])
    assert results.ok, results.failures
    left, right = results["left"].value, results["right"].value
    right_ref = provisioner.spec("right").reference
    assert left.address != right.address
    key = nspawn_driver._key(right_ref["key_name"])
    # the client side: the machine key and right's pinned host key, strict checking
    left.transport.write_file("/root/.ssh/id_ed25519", key.private_openssh(), mode=0o600)
    left.transport.write_file("/root/.ssh/known_hosts",
                              f"{right.address} {right_ref['host_key']}\n".encode(), mode=0o644)
    result = left.execute_always(
        f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes root@{right.address} "
        "'hostname; cat /etc/machine-id'", check=False)
    assert result.ok, result.stderr
    name, machine_id = result.stdout.split()
    assert name == "right"
    assert machine_id == right.execute_always("cat /etc/machine-id").stdout.strip()
    assert machine_id != left.execute_always("cat /etc/machine-id").stdout.strip()
    for machine in (left, right):
        machine.disconnect()


def test_destroy_leaves_nothing_behind(provisioner, nspawn_driver):
    netns_before = _netns_names()
    machine = provisioner.up(nspawn_driver, "doomed")
    ref = dict(provisioner.spec("doomed").reference)
    machine.execute_always("echo x > /root/x")
    machine.disconnect()
    pids = proc.cgroup_pids(ref["cgroup"])
    assert ref["pid"] in pids and len(pids) > 3, "the machine runs in its own cgroup"
    assert {ref["netns"], ref["hub_netns"]} <= _netns_names()
    provisioner.destroy("doomed", {}, nspawn_driver)
    assert provisioner.store.get("machine", "doomed") is None
    assert not [p for p in pids if proc.alive(p)], "a machine process survived destroy"
    assert not any(os.path.exists(d) for d in proc.cgroup_dirs(ref["cgroup"]))
    assert _netns_names() == netns_before, "namespaces (machine and hub) must go"
    assert ref["directory"] not in _mounts() and ref["netns"] not in _mounts()
    assert not os.path.exists(ref["directory"])
    assert nspawn_driver.find_machines("doomed") == []
    # idempotent, even on a reference whose every piece is gone
    handler = RecordingActionHandler()
    from provisioning.spec import MachineSpec

    nspawn_driver.destroy_machine(handler.for_machine("doomed"), MachineSpec("doomed", ref), {})
    assert not handler.actions(performed=True)


def test_partial_leftovers_are_destroyed(provisioner, nspawn_driver):
    """Destroy finishes whatever is left: here the directory went, the namespace stayed."""
    provisioner.allocate(nspawn_driver, "half")
    ref = dict(provisioner.spec("half").reference)
    import shutil

    shutil.rmtree(ref["directory"])
    assert netns.netns_exists(ref["netns"])
    provisioner.destroy("half", {}, nspawn_driver)
    assert not os.path.lexists(netns.netns_path(ref["netns"]))
    assert not os.path.lexists(netns.netns_path(ref["hub_netns"]))


def test_killed_machine_is_detected_and_readied_again(provisioner, nspawn_driver):
    machine = provisioner.up(nspawn_driver, "victim")
    machine.execute_always("touch /root/before-kill")
    machine.disconnect()
    ref = provisioner.spec("victim").reference
    for pid in proc.cgroup_pids(ref["cgroup"]):  # behind the driver's back: kill -9 everything
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # exited on its own since the listing (a closing session)
            pass
    deadline = time.monotonic() + 60  # a guard only
    while proc.alive(ref["pid"], ref["start_time"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    spec = provisioner.spec("victim")
    assert nspawn_driver.machine_state(spec) == "stopped"
    handler = provisioner.action_handler
    handler.events.clear()
    machine = provisioner.ready(nspawn_driver, "victim")
    assert any("killed behind our back" in e.description for e in handler.events), \
        [str(e) for e in handler.events]
    assert provisioner.spec("victim").reference["pid"] != ref["pid"]
    assert machine.execute_always("test -e /root/before-kill && echo ok").stdout.strip() == "ok"
    machine.disconnect()


def test_lost_namespace_is_made_again_on_ready(provisioner, nspawn_driver):
    provisioner.allocate(nspawn_driver, "nsless")
    ref = provisioner.spec("nsless").reference
    subprocess.run(["ip", "netns", "del", ref["netns"]], check=True)
    machine = provisioner.ready(nspawn_driver, "nsless")
    assert machine.execute_always("ip -o -4 addr show dev eth0").stdout.count(ref["address"]) == 1
    machine.disconnect()


def test_crash_during_ready_is_readied_by_a_rerun(tmp_path, provisioner, nspawn_driver,
                                                  nspawn_config):
    """A runner killed while waiting for SSH leaves a booted, recorded machine that the next
    run adopts without booting a second one."""
    import json

    job = {"url": nspawn_driver.driver_url, "config": dict(nspawn_config.to_data(), lock_ttl=1.0),
           "base_dir": str(tmp_path), "state": str(tmp_path / "state.db"), "name": "interrupted"}
    code = ("import json, sys\n"
            "from provisioning.config import Config\n"
            "from provisioning.lifecycle import Provisioner\n"
            "from provisioning.registry import driver_for_url\n"
            "from provisioning.store.sqlite import SQLiteStore\n"
            "job = json.loads(sys.argv[1])\n"
            "config = Config(job['config'], base_dir=job['base_dir'])\n"
            "Provisioner(SQLiteStore(job['state']), config=config).up(\n"
            "    driver_for_url(job['url'], config), job['name'])\n")
    env = dict(os.environ, PROVISIONING_FAULT="during_ready:crash")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 86, done.stderr
    ref = provisioner.spec("interrupted").reference
    assert proc.alive(ref["pid"], ref["start_time"]), "the booted machine was recorded"
    provisioner.lock_wait = 30  # the crashed runner's lease expires after its lock_ttl
    machine = provisioner.ready(nspawn_driver, "interrupted")
    assert provisioner.spec("interrupted").reference["pid"] == ref["pid"]
    assert machine.execute_always("true").ok
    machine.disconnect()
    assert len(nspawn_driver.find_machines("interrupted")) == 1


def test_host_key_is_pinned_before_first_boot(provisioner, nspawn_driver):
    spec = provisioner.allocate(nspawn_driver, "pinned")
    ref = provisioner.spec("pinned").reference
    assert ref["host_key"].startswith("ssh-ed25519 ") and ref["pid"] is None
    machine = provisioner.ready(nspawn_driver, "pinned")
    served = machine.execute_always("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub")
    assert served.stdout.strip() == ref["host_key"]
    assert machine.execute_always("ls /etc/ssh/").stdout.split().count(
        "ssh_host_rsa_key") == 0, "no image host keys"
    machine.disconnect()
    assert spec.name == "pinned"


def test_batch_of_machines_through_driver_batches(tmp_path, nspawn_driver, nspawn_config):
    from provisioning.spec import MachineSpec

    store = SQLiteStore(tmp_path / "batch.db")
    handler = RecordingActionHandler()
    specs = []
    for i in range(4):
        spec = store.get_or_new("machine", f"b{i}")
        specs.append((spec, {}))
    try:
        allocated = nspawn_driver.allocate_machines(handler, specs)
        assert allocated.ok, allocated.failures
        readied = nspawn_driver.ready_machines(handler, specs)
        assert readied.ok, readied.failures
        addresses = set()
        for name, outcome in readied.items():
            out = outcome.value.execute_always("hostname; ip -o -4 addr show dev eth0").stdout
            assert out.split()[0] == name
            addresses.add(outcome.value.address)
            outcome.value.disconnect()
        assert len(addresses) == 4
    finally:
        destroyed = nspawn_driver.destroy_machines(handler, specs)
        store.close()
    assert destroyed.ok, destroyed.failures
    assert isinstance(specs[0][0], MachineSpec)


def test_inotify_limit_is_raised_for_many_machines():
    from provisioning.drivers.nspawn_host.host import raise_inotify_limit

    path = "/proc/sys/fs/inotify/max_user_instances"
    before = int(open(path).read())
    messages = raise_inotify_limit(250)
    after = int(open(path).read())
    assert after >= 128 + 8 * 250
    assert bool(messages) == (before < 128 + 8 * 250) or any("could not" in m for m in messages)
    assert raise_inotify_limit(10) == [], "limits are never lowered, and reported only when raised"


def test_overlay_refused_is_a_clear_error(tmp_path):
    from provisioning.drivers.nspawn_host.host import check_overlay

    parts = {p: tmp_path / p for p in ("l", "u", "w", "m")}
    for path in parts.values():
        path.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={parts['l']},upperdir={parts['u']},workdir={parts['w']}",
                    str(parts["m"])], check=True)
    try:
        with pytest.raises(ProviderError, match="overlay"):
            check_overlay(str(parts["m"] / "warehouse"))
    finally:
        subprocess.run(["umount", str(parts["m"])], check=True)
    check_overlay(str(tmp_path / "fine"))  # ext4/tmpfs: accepted


def test_missing_binary_and_not_root_errors_name_the_fix(tmp_path):
    from provisioning.drivers.nspawn_host import host

    with pytest.raises(ProviderError, match="apt-get install systemd-container"):
        host.run(["/nonexistent/systemd-nspawn", "--version"])
    # imported as root, then checked as nobody (a separate process: euid is process-wide)
    code = ("import os\n"
            "from provisioning.drivers.nspawn_host.host import require_root\n"
            "os.seteuid(65534)\n"
            "try:\n    require_root()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=60)
    assert "ProviderError" in done.stdout and "root" in done.stdout, done.stdout + done.stderr


def test_machines_have_no_address_on_host_interfaces(provisioner, nspawn_driver):
    machine = provisioner.up(nspawn_driver, "isolated")
    address = machine.address
    host_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert address not in host_addrs and "198.18." not in host_addrs
    machine.disconnect()


def test_stop_kills_a_machine_that_does_not_power_off_in_time(provisioner, nspawn_driver):
    machine = provisioner.up(nspawn_driver, "stubborn")
    machine.disconnect()
    ref = dict(provisioner.spec("stubborn").reference)
    pids = proc.cgroup_pids(ref["cgroup"])
    provisioner.action_handler.events.clear()
    provisioner.stop("stubborn", {"stop_timeout": 0.001}, nspawn_driver)
    assert any("killed it" in e.description for e in provisioner.action_handler.events)
    # a killed process leaves its cgroup a moment before the kernel finishes its exit
    deadline = time.monotonic() + 60  # a guard only
    while [p for p in pids if proc.alive(p)] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if proc.alive(p)]
    assert nspawn_driver.machine_state(provisioner.spec("stubborn")) == "stopped"
    machine = provisioner.ready(nspawn_driver, "stubborn")
    assert machine.execute_always("true").ok
    machine.disconnect()
