"""What the docker: driver promises beyond the conformance suite, on Docker and on Podman:
the host key is the one we wrote (and a different one is refused), synced folders are live,
forwarded ports answer on loopback only, a snapshot restores exactly the saved files, and
destroy leaves no container, network or volume behind. One machine per engine is shared by the
tests that only look at it."""

from __future__ import annotations

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.drivers.docker_engine import container as containers
from provisioning.errors import HostKeyMismatch
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore

from .conftest import driver_options, sweep

SERVER = ("import socket,sys\n"
          "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', 80)); s.listen(8)\n"
          "while True:\n"
          "    c,_=s.accept(); c.sendall(b'hello from the machine\\n'); c.close()\n")


class Box:
    """One machine on one engine, with a synced folder and a forwarded port."""

    def __init__(self, engine, directory) -> None:
        self.engine = engine
        self.folder = directory / "app"
        self.folder.mkdir()
        (self.folder / "index.html").write_text("v1\n")
        self.config = Config({"driver_options": {engine.driver_url: driver_options(engine, directory)}},
                             base_dir=str(directory))
        self.driver = driver_for_url(engine.driver_url, self.config)
        self.store = SQLiteStore(directory / "state.db")
        self.handler = RecordingActionHandler()
        self.provisioner = Provisioner(self.store, config=self.config, action_handler=self.handler)
        self.options = {"sync": [{"from": str(self.folder), "to": "/srv/app", "mode": "auto"}],
                        "ports": ["127.0.0.1:18080:80/tcp"]}
        self.machine = self.provisioner.up(self.driver, "box", self.options)

    def spec(self):
        return self.provisioner.spec("box")

    def close(self) -> None:
        self.machine.disconnect()
        self.provisioner.destroy("box", self.options, self.driver)
        self.store.close()


@pytest.fixture(scope="module")
def box(engine, tmp_path_factory):
    made = Box(engine, tmp_path_factory.mktemp(f"box-{engine.kind}"))
    yield made
    made.close()
    assert not sweep(made.driver)


def _sums(machine, path: str) -> str:
    """Checksums of every file under ``path`` but the three the engine writes for each
    container (hosts, hostname, resolv.conf: its network settings, not the machine's files)."""
    return machine.execute_always(
        f"cd {path} && find . -type f ! -name hosts ! -name hostname ! -name resolv.conf "
        "-exec sha256sum {} + | sort").stdout


def test_host_key_is_the_one_we_wrote_and_another_is_refused(box):
    spec = box.spec()
    found = box.driver.client.containers.get(spec.reference["container_id"])
    assert containers.read_host_key(found) == spec.reference["host_key"]
    assert spec.reference["host_key"].startswith("ssh-ed25519 ")
    offered = box.machine.execute_always("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    assert " ".join(offered[:2]) == spec.reference["host_key"]

    from provisioning.keys import generate_private_key

    other = generate_private_key(str(box.config.base_dir) + "/other-host-key", name="other")
    spec.reference["host_key"] = other.public_openssh
    stranger = box.driver.connect_to_machine(spec, box.options)
    with pytest.raises(HostKeyMismatch):
        stranger.execute_always("true")
    stranger.disconnect()


def test_synced_folder_is_live_both_ways(box):
    assert box.machine.execute_always("cat /srv/app/index.html").stdout == "v1\n"
    (box.folder / "index.html").write_text("v2 from the host\n")
    assert box.machine.execute_always("cat /srv/app/index.html").stdout == "v2 from the host\n"
    box.machine.execute_always("echo from the machine > /srv/app/note.txt")
    assert (box.folder / "note.txt").read_text() == "from the machine\n"


def test_forwarded_port_answers_on_loopback_only(box):
    found = box.driver.client.containers.get(box.spec().reference["container_id"])
    bindings = found.attrs["NetworkSettings"]["Ports"]["80/tcp"]
    assert {(b["HostIp"], b["HostPort"]) for b in bindings} == {("127.0.0.1", "18080")}
    ssh = found.attrs["NetworkSettings"]["Ports"]["22/tcp"]
    assert {b["HostIp"] for b in ssh} == {"127.0.0.1"}
    box.machine.write_file("/usr/local/bin/probe-server.py", SERVER)
    box.machine.execute_always("systemd-run --unit=probe-server python3 "
                               "/usr/local/bin/probe-server.py")
    box.machine.execute_always("for i in $(seq 100); do python3 -c 'import socket; "
                               "socket.create_connection((\"127.0.0.1\", 80), 1)' 2>/dev/null "
                               "&& exit 0; sleep 0.1; done; exit 1")
    sock = box.driver.open_connection(box.spec(), "127.0.0.1", 18080, 10.0)
    try:
        received = b""
        while not received.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    assert received == b"hello from the machine\n"


def test_snapshot_restore_returns_exactly_the_saved_files(box):
    machine = box.machine
    machine.execute_always("mkdir -p /srv/data && cd /srv/data && echo one > a.txt && "
                           "echo two > b.txt && head -c 100000 /dev/urandom > blob.bin")
    saved = _sums(machine, "/srv/data") + _sums(machine, "/etc")
    snapshot = box.driver.save_snapshot(box.handler.for_machine("box"), box.spec(), "before")
    assert snapshot.name == "before"
    assert [s.name for s in box.driver.list_snapshots(box.spec())] == ["before"]

    machine.execute_always("cd /srv/data && echo changed > a.txt && rm b.txt && "
                           "echo new > c.txt && echo junk >> /etc/motd")
    assert _sums(machine, "/srv/data") + _sums(machine, "/etc") != saved
    machine.disconnect()
    box.provisioner.run_locked("snapshot restore", box.driver, "box", box.options,
                               lambda d, h, s, o: d.restore_snapshot(h, s, "before"))
    box.machine = box.provisioner.ready(box.driver, "box", box.options)
    assert _sums(box.machine, "/srv/data") + _sums(box.machine, "/etc") == saved
    # the restored machine keeps its synced folder and host key
    assert box.machine.execute_always("cat /srv/app/index.html").stdout.startswith("v")

    box.driver.delete_snapshot(box.handler.for_machine("box"), box.spec(), "before")
    assert box.driver.list_snapshots(box.spec()) == []


def test_destroy_leaves_no_container_network_or_volume(engine, tmp_path):
    config = Config({"driver_options": {engine.driver_url: driver_options(engine, tmp_path)}},
                    base_dir=str(tmp_path))
    driver = driver_for_url(engine.driver_url, config)
    client = driver.client

    def inventory():
        return ({c.id for c in client.containers.list(all=True)},
                {v.id for v in client.volumes.list()},
                {n.id for n in client.networks.list()},
                {i.id for i in client.images.list()})
    before = inventory()
    store = SQLiteStore(tmp_path / "state.db")
    provisioner = Provisioner(store, config=config)
    machine = provisioner.up(driver, "gone", {})
    machine.disconnect()
    driver.save_snapshot(RecordingActionHandler(), provisioner.spec("gone"), "s1")
    assert inventory() != before
    provisioner.destroy("gone", {}, driver)
    store.close()
    assert inventory() == before


def test_a_process_machine_is_reached_through_the_engine(engine, tmp_path):
    """``init: process``: no systemd, no sshd; commands and files through the exec and archive
    APIs (transport kind docker), snapshots too."""
    config = Config({"driver_options": {engine.driver_url: driver_options(engine, tmp_path)}},
                    base_dir=str(tmp_path))
    driver = driver_for_url(engine.driver_url, config)
    store = SQLiteStore(tmp_path / "state.db")
    provisioner = Provisioner(store, config=config)
    options = {"init": "process"}
    try:
        machine = provisioner.up(driver, "plain", options)
        spec = provisioner.spec("plain")
        assert spec.reference["transport"] == "docker" and spec.reference["host_key"] is None
        assert machine.execute_always("cat /proc/1/cmdline | tr '\\0' ' '").stdout.startswith("sh -c")
        result = machine.execute_always("echo out; echo err >&2; exit 4", check=False)
        assert (result.exit_status, result.stdout, result.stderr) == (4, "out\n", "err\n")
        assert machine.execute_always("cat", input="fed through stdin").stdout == "fed through stdin"
        assert machine.execute_always("echo $GREETING", env={"GREETING": "hi"}).stdout == "hi\n"
        assert machine.write_file("/srv/hello.txt", "hello\n", mode="0640")
        assert not machine.write_file("/srv/hello.txt", "hello\n", mode="0640")
        assert machine.read_file("/srv/hello.txt") == b"hello\n"
        assert machine.execute_always("stat -c %a /srv/hello.txt").stdout.strip() == "640"
        assert machine.read_file("/srv/missing") is None
        local = tmp_path / "blob.bin"
        local.write_bytes(bytes(range(256)) * 400)
        machine.upload_file(str(local), "/srv/blob.bin")
        back = tmp_path / "back.bin"
        machine.download_file("/srv/blob.bin", str(back))
        assert back.read_bytes() == local.read_bytes()
        machine.disconnect()
        provisioner.stop("plain", options, driver)
        assert driver.machine_state(provisioner.spec("plain")) == "stopped"
        machine = provisioner.ready(driver, "plain", options)
        assert machine.read_file("/srv/hello.txt") == b"hello\n"
        machine.disconnect()
    finally:
        provisioner.destroy("plain", options, driver)
        store.close()
