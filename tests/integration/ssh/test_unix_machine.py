"""Every Machine method of UnixMachine over SSH (machine_for), as root and as a non-root login
with sudo."""

from __future__ import annotations

import os

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.errors import CommandFailed, ConfigError
from provisioning.machine.factory import machine_for
from provisioning.machine.unix import UnixMachine
from provisioning.spec import MachineSpec
from provisioning.transports.ssh import SSHTransport


@pytest.fixture
def config(client_key, tmp_path):
    return Config({"private_keys": {"client": client_key.path}}, base_dir=str(tmp_path))


def _machine(host, config, handler=None, **transport):
    spec = MachineSpec(name="box", reference={"driver_url": "ssh:"})
    options = {"transport": {"host": host.host, "port": host.port, "key_name": "client",
                             "username": host.user, **transport}}
    return machine_for(spec, options, config, action_handler=handler)


def test_machine_for_picks_ssh_by_default_and_rejects_unknown_kinds(sshd_host, config):
    machine = _machine(sshd_host, config)
    assert isinstance(machine, UnixMachine) and isinstance(machine.transport, SSHTransport)
    assert machine.options == {"sudo": False}
    machine.disconnect()
    with pytest.raises(ConfigError, match="unknown transport kind 'telnet'"):
        machine_for(MachineSpec(name="x"), {"transport": {"kind": "telnet"}}, config)


def _exercise(machine, workdir: str, local_tmp) -> None:
    """Every Machine method, checked through the machine itself and through plain commands."""
    handler = machine.action_handler.parent
    assert machine.execute("echo $((2+3))").stdout == "5\n"
    with pytest.raises(CommandFailed) as caught:
        machine.execute("echo bad >&2; exit 9")
    assert caught.value.exit_status == 9 and "bad" in str(caught.value)
    assert machine.execute_always("exit 9", check=False).exit_status == 9

    directory = f"{workdir}/app/conf"
    assert machine.create_dir(directory, mode="0750") is True
    assert machine.is_directory(directory) and machine.create_dir(directory, mode="0750") is False
    assert machine.get_attributes(directory)["mode"] == "0750"

    path = f"{directory}/app.ini"
    assert machine.write_file(path, "a=1\n", mode="0640") is True
    assert machine.write_file(path, "a=1\n", mode="0640") is False, "unchanged: nothing to do"
    assert machine.read_file(path) == b"a=1\n"
    assert machine.file_exists(path) and not machine.is_directory(path)
    assert not machine.files_different(path, content=b"a=1\n")
    assert machine.files_different(path, content=b"a=2\n")
    attrs = machine.get_attributes(path)
    assert attrs["mode"] == "0640"
    assert machine.set_attributes(path, mode="0600", owner="root", group="root") is True
    assert machine.get_attributes(path) == {"mode": "0600", "owner": "root", "group": "root"}
    assert machine.set_attributes(path, mode="0600") is False
    assert machine.get_attributes(f"{workdir}/nope") is None

    local = local_tmp / "upload.bin"
    local.write_bytes(os.urandom(100_000))
    remote = f"{workdir}/upload.bin"
    assert machine.upload_file(str(local), remote, mode="0644") is True
    assert machine.upload_file(str(local), remote) is False
    assert not machine.files_different(remote, local_path=str(local))
    back = local_tmp / "back.bin"
    assert machine.download_file(remote, str(back)) is True
    assert back.read_bytes() == local.read_bytes()
    assert machine.download_file(remote, str(back)) is False

    assert machine.delete_file(remote) is True
    assert machine.delete_file(remote) is False and not machine.file_exists(remote)

    platform, version, arch = machine.detect_os()
    with open("/etc/os-release") as handle:
        fields = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
    assert platform == fields["ID"].strip('"')
    assert version == (fields.get("VERSION_ID", "").strip('"') or os.uname().release)
    assert arch == os.uname().machine
    assert handler.actions(performed=True)


def test_every_machine_method_as_root(sshd_host, config, tmp_path):
    handler = RecordingActionHandler()
    machine = _machine(sshd_host, config, handler)
    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        _exercise(machine, str(workdir), tmp_path)
    finally:
        machine.disconnect()


def test_every_machine_method_as_non_root_with_sudo(user_host, config, tmp_path, root_only_dir):
    handler = RecordingActionHandler()
    machine = _machine(user_host, config, handler)
    assert machine.options == {"sudo": True} and machine.transport.sudo
    assert machine.execute("id -un").stdout.strip() == user_host.user
    try:
        _exercise(machine, str(root_only_dir), tmp_path)
    finally:
        machine.disconnect()


def test_why_run_over_ssh_changes_nothing(sshd_host, config, tmp_path):
    planner = RecordingActionHandler(why_run=True)
    machine = _machine(sshd_host, config, planner)
    target = tmp_path / "planned.txt"
    try:
        assert machine.write_file(str(target), "x", mode="0600") is True
        assert machine.create_dir(str(tmp_path / "planned-dir")) is True
        assert machine.execute("touch " + str(tmp_path / "touched")) is None
    finally:
        machine.disconnect()
    assert not target.exists() and not (tmp_path / "planned-dir").exists()
    assert not (tmp_path / "touched").exists()
    assert planner.actions() and not planner.actions(performed=True)


def test_make_url_available_to_remote(sshd_host, config):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    machine = _machine(sshd_host, config)
    try:
        url = machine.make_url_available_to_remote(f"http://127.0.0.1:{server.server_address[1]}/")
        assert url.startswith("http://127.0.0.1:") and str(server.server_address[1]) not in url
        code = machine.execute_always(
            f"python3 -c \"import urllib.request as u; print(u.urlopen('{url}').status)\"",
            timeout=30)
        assert code.stdout.strip() == "200"
    finally:
        machine.disconnect()
        server.shutdown()
        server.server_close()


def test_machine_for_winrm_kind_builds_a_windows_machine(config, monkeypatch):
    """The factory's other branch: built lazily, nothing connects."""
    monkeypatch.setenv("PROVISIONING_TEST_WINRM_PW", "not-used")
    machine = machine_for(MachineSpec(name="win"),
                          {"transport": {"kind": "winrm", "host": "127.0.0.1",
                                         "username": "Administrator",
                                         "password_env": "PROVISIONING_TEST_WINRM_PW"}}, config)
    assert type(machine).__name__ == "WindowsMachine"
    assert type(machine.transport).__name__ == "WinRMTransport"


@pytest.mark.parametrize("name", ["new\nline.txt", "back\\slash.txt", "both\\n\nx"])
def test_odd_file_names_are_compared_right_and_quoted_in_logs(sshd_host, config, tmp_path,
                                                              name):
    from provisioning.actions import RecordingActionHandler

    handler = RecordingActionHandler()
    machine = _machine(sshd_host, config, handler.for_machine("box"))
    remote = tmp_path / "remote"
    remote.mkdir()
    local = tmp_path / "source.txt"
    local.write_text("payload\n")
    target = str(remote / name)
    try:
        assert machine.write_file(target, "hello\n") is True
        assert machine.write_file(target, "hello\n") is False  # same sha256: not written again
        assert machine.upload_file(str(local), target + ".up") is True
        assert machine.upload_file(str(local), target + ".up") is False
    finally:
        machine.disconnect()
    assert (remote / name).read_text() == "hello\n"
    descriptions = [e.description for e in handler.events
                    if e.kind == "action" and "remote" in e.description]
    assert len(descriptions) == 2
    assert all("\n" not in d for d in descriptions), descriptions
    assert all('"' in d for d in descriptions), descriptions
