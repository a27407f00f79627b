"""Snapshots, synced folders and forwarded ports on real libvirt machines (the session's pool:
``pool-a`` for snapshots and sync, ``pool-b``, booted with a forwarded port, for ports)."""

from __future__ import annotations

import hashlib

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.lifecycle import Provisioner

TREE = "/root/snapshot-tree"
CHECKSUMS = f"cd {TREE} && find . -type f -exec sha256sum {{}} + | sort -k2"


@pytest.fixture
def provisioner(libvirt_pool):
    return Provisioner(libvirt_pool.store, config=libvirt_pool.config, lock_wait=120)


def _locked(provisioner, pool, operation, call):
    return provisioner.run_locked(f"snapshot {operation}", pool.driver, "pool-a", {}, call)


def test_snapshot_save_change_restore_gives_the_saved_files(libvirt_pool, provisioner):
    pool, driver = libvirt_pool, libvirt_pool.driver
    machine = provisioner.up(driver, "pool-a", {})
    machine.execute_always(f"rm -rf {TREE} && mkdir -p {TREE}/sub && echo one > {TREE}/a && "
                           f"head -c 100000 /dev/urandom > {TREE}/sub/b && sync")
    saved = machine.execute_always(CHECKSUMS).stdout
    assert "./sub/b" in saved
    machine.disconnect()
    handler = RecordingActionHandler()
    snap = _locked(provisioner, pool, "save",
                   lambda d, h, s, o: d.save_snapshot(handler, s, "before"))
    assert snap.name == "before"

    machine = provisioner.up(driver, "pool-a", {})
    machine.execute_always(f"echo changed > {TREE}/a && rm {TREE}/sub/b && echo new > {TREE}/c "
                           "&& sync")
    assert machine.execute_always(CHECKSUMS).stdout != saved  # the change is real
    machine.disconnect()

    _locked(provisioner, pool, "restore",
            lambda d, h, s, o: d.restore_snapshot(handler, s, "before"))
    machine = provisioner.up(driver, "pool-a", {})
    assert machine.execute_always(CHECKSUMS).stdout == saved
    machine.disconnect()

    assert [s.name for s in driver.list_snapshots(provisioner.spec("pool-a"))] == ["before"]
    _locked(provisioner, pool, "delete",
            lambda d, h, s, o: d.delete_snapshot(handler, s, "before"))
    assert driver.list_snapshots(provisioner.spec("pool-a")) == []
    performed = [e.description for e in handler.actions(performed=True)]
    assert any("save snapshot before" in text for text in performed)
    assert any("restore snapshot before" in text for text in performed)


def test_why_run_snapshot_changes_nothing(libvirt_pool, provisioner):
    planner = RecordingActionHandler(why_run=True)
    spec = provisioner.spec("pool-a")
    libvirt_pool.driver.save_snapshot(planner, spec, "planned")
    assert "planned" not in [s.name for s in libvirt_pool.driver.list_snapshots(spec)]
    assert planner.actions() and not planner.actions(performed=True)


def test_synced_folder_changes_reach_the_machine(libvirt_pool, provisioner, tmp_path):
    source = tmp_path / "app"
    (source / "static").mkdir(parents=True)
    (source / "index.html").write_text("v1\n")
    (source / "static" / "app.js").write_text("console.log(1)\n")
    options = {"sync": [{"from": str(source), "to": "/srv/app", "mode": "rsync"}]}
    driver, spec = libvirt_pool.driver, provisioner.spec("pool-a")
    handler = RecordingActionHandler()
    provisioner.up(driver, "pool-a", {}).disconnect()
    assert driver.sync_folders(handler, spec, options) == 2
    (source / "index.html").write_text("v2\n")
    assert driver.sync_folders(handler, spec, options) == 1  # only what changed is sent
    machine = provisioner.connect("pool-a", {})
    assert machine.execute_always("cat /srv/app/index.html").stdout == "v2\n"
    remote = machine.execute_always("sha256sum /srv/app/static/app.js").stdout.split()[0]
    machine.disconnect()
    assert remote == hashlib.sha256(b"console.log(1)\n").hexdigest()


def test_forwarded_port_answers_on_loopback(libvirt_pool, provisioner):
    options = libvirt_pool.options["pool-b"]
    bind, host_port, guest_port = options["ports"][0].split(":")
    machine = provisioner.up(libvirt_pool.driver, "pool-b", options)
    server = ("import socket\n"
              "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              f"s.bind(('0.0.0.0', {guest_port})); s.listen()\n"
              "c, _ = s.accept(); c.sendall(b'hello from the guest'); c.close()\n")
    machine.write_file("/root/answer.py", server)
    machine.execute_always("setsid nohup python3 /root/answer.py >/dev/null 2>&1 < /dev/null & "
                           f"for i in $(seq 100); do ss -ltn | grep -q ':{guest_port} ' && "
                           "break; sleep 0.1; done")
    machine.disconnect()
    spec = provisioner.spec("pool-b")
    assert spec.reference["ports"] == [f"{bind}:{host_port}:{guest_port}"]
    sock = libvirt_pool.driver.socket_factory(spec, int(host_port))(10.0)
    try:
        received = b""
        while chunk := sock.recv(100):
            received += chunk
    finally:
        sock.close()
    assert received == b"hello from the guest"
