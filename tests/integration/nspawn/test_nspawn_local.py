"""The nspawn: driver's local-machine features on a real machine: a synced folder is a live bind
mount, a forwarded port answers on this host's loopback (through a relay into the machine's
namespace) and stops with the machine, and a snapshot restores exactly the saved files."""

from __future__ import annotations

import socket

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.drivers.nspawn_host import proc
from provisioning.lifecycle import Provisioner
from provisioning.store.sqlite import SQLiteStore

SERVER = ("import socket\n"
          "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', 80)); s.listen(8)\n"
          "while True:\n"
          "    c,_=s.accept(); c.sendall(b'hello from the machine\\n'); c.close()\n")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sums(machine, path: str) -> str:
    return machine.execute_always(f"cd {path} && find . -type f -exec sha256sum {{}} + | sort").stdout


def _hello(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = b""
        while not received.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            received += chunk
    return received


@pytest.fixture
def box(tmp_path, nspawn_config, nspawn_driver):
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "index.html").write_text("v1\n")
    port = _free_port()
    options = {"sync": [{"from": str(folder), "to": "/srv/app", "mode": "auto"}],
               "ports": [f"127.0.0.1:{port}:80/tcp"]}
    store = SQLiteStore(tmp_path / "state.db")
    handler = RecordingActionHandler()
    provisioner = Provisioner(store, config=nspawn_config, action_handler=handler)
    machine = provisioner.up(nspawn_driver, "box", options)
    yield provisioner, machine, folder, port, options
    machine.disconnect()
    provisioner.destroy("box", options, nspawn_driver)
    store.close()


def test_synced_folder_port_and_snapshot(box, nspawn_driver):
    provisioner, machine, folder, port, options = box
    # synced folder: a live bind mount, both ways
    assert machine.execute_always("cat /srv/app/index.html").stdout == "v1\n"
    (folder / "index.html").write_text("v2 from the host\n")
    assert machine.execute_always("cat /srv/app/index.html").stdout == "v2 from the host\n"
    machine.execute_always("echo from the machine > /srv/app/note.txt")
    assert (folder / "note.txt").read_text() == "from the machine\n"

    # forwarded port: this host's loopback reaches the machine's port 80
    machine.write_file("/usr/local/bin/probe-server.py", SERVER)
    machine.execute_always("systemd-run --unit=probe-server python3 /usr/local/bin/probe-server.py")
    machine.execute_always("for i in $(seq 100); do python3 -c 'import socket; socket.create_"
                           "connection((\"127.0.0.1\", 80), 1)' 2>/dev/null && exit 0; sleep 0.1; "
                           "done; exit 1")
    assert _hello(port) == b"hello from the machine\n"

    # snapshot: save, change, restore (the machine is stopped and booted again), compare
    machine.execute_always("mkdir -p /srv/data && cd /srv/data && echo one > a.txt && "
                           "echo two > b.txt && head -c 100000 /dev/urandom > blob.bin")
    saved = _sums(machine, "/srv/data") + _sums(machine, "/etc")
    handler = RecordingActionHandler().for_machine("box")
    assert nspawn_driver.save_snapshot(handler, provisioner.spec("box"), "before").name == "before"
    machine.execute_always("cd /srv/data && echo changed > a.txt && rm b.txt && echo new > c.txt "
                           "&& echo junk >> /etc/motd && rm /etc/issue")
    assert _sums(machine, "/srv/data") + _sums(machine, "/etc") != saved
    machine.disconnect()
    provisioner.run_locked("snapshot restore", nspawn_driver, "box", options,
                           lambda d, h, s, o: d.restore_snapshot(h, s, "before"))
    machine = provisioner.ready(nspawn_driver, "box", options)
    assert _sums(machine, "/srv/data") + _sums(machine, "/etc") == saved
    assert [s.name for s in nspawn_driver.list_snapshots(provisioner.spec("box"))] == ["before"]
    nspawn_driver.delete_snapshot(handler, provisioner.spec("box"), "before")
    assert nspawn_driver.list_snapshots(provisioner.spec("box")) == []

    # the relay stops with the machine: nothing listens on the port afterwards
    relay = provisioner.spec("box").reference["forwarder"]
    assert proc.alive(relay["pid"], relay["start_time"])
    machine.disconnect()
    provisioner.stop("box", options, nspawn_driver)
    assert not proc.alive(relay["pid"], relay["start_time"])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
