"""WindowsMachine over WinRM against the test server: every Machine method in PowerShell, why-run,
attributes as ACL owner/group and the read-only flag, and the machine_for factory."""

from __future__ import annotations

import os
import time

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.errors import AuthenticationError, CommandFailed, ConfigError, UnsupportedOperation
from provisioning.machine.factory import pin_on_first_use
from provisioning.machine.windows import WindowsMachine
from provisioning.spec import MachineSpec
from provisioning.store.memory import MemoryStore
from provisioning.transports.winrm import certificate_thumbprints, winrm_transport_from_options

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def machine(https_server, make_transport):
    handler = RecordingActionHandler()
    return WindowsMachine("win-1", make_transport(https_server, "ntlm"), action_handler=handler)


def _planned(machine: WindowsMachine) -> list[str]:
    return machine.action_handler.parent.descriptions()


def test_files_and_directories(machine, https_server):
    base = "C:\\Work\\m1"
    assert machine.file_exists(base) is False and machine.is_directory(base) is False
    assert machine.create_dir(base) is True
    assert machine.create_dir(base) is False  # idempotent
    assert machine.is_directory(base) and machine.file_exists(base)
    path = base + "\\motd.txt"
    assert machine.write_file(path, "Welcome\r\n") is True
    assert machine.write_file(path, "Welcome\r\n") is False
    assert machine.read_file(path) == b"Welcome\r\n"
    assert machine.file_exists(path) and not machine.is_directory(path)
    assert machine.files_different(path, content=b"Welcome\r\n") is False
    assert machine.files_different(path, content=b"Other") is True
    assert machine.delete_file(path) is True
    assert machine.delete_file(path) is False
    assert not os.path.exists(https_server.host_path(path))
    assert any("create directory C:\\Work\\m1" in d for d in _planned(machine))


def test_why_run_changes_nothing(https_server, make_transport):
    handler = RecordingActionHandler(why_run=True)
    machine = WindowsMachine("win-2", make_transport(https_server, "basic"), action_handler=handler)
    assert machine.create_dir("C:\\WhyRun\\dir", owner="Administrators") is True
    assert machine.write_file("C:\\WhyRun\\a.txt", "x", mode="0444") is True
    assert machine.execute("Write-Output 'side effect'") is None
    assert not os.path.exists(https_server.host_path("C:\\WhyRun"))
    planned = handler.descriptions()
    assert any("would create directory C:\\WhyRun\\dir" in d for d in planned)
    # a new file is one action that makes it with its attributes (0444: read-only on Windows)
    assert any("would create C:\\WhyRun\\a.txt (mode 0444)" in d for d in planned), planned


def test_attributes_owner_group_and_read_only(machine, https_server):
    path = "C:\\Attr\\file.txt"
    machine.write_file(path, b"content")
    attributes = machine.get_attributes(path)
    assert attributes["mode"] is None
    assert attributes["owner"] == "BUILTIN\\Administrators" and attributes["read_only"] is False
    assert machine.get_attributes("C:\\Attr\\missing.txt") is None

    assert machine.set_attributes(path, owner=USER) is True
    assert machine.get_attributes(path)["owner"] == f"WINTEST\\{USER}"
    assert machine.set_attributes(path, owner=f"wintest\\{USER}") is False  # same account
    assert machine.set_attributes(path, group="Users") is True
    assert machine.get_attributes(path)["group"] == "BUILTIN\\Users"

    assert machine.set_attributes(path, mode="0444") is True
    assert machine.get_attributes(path)["read_only"] is True
    assert not os.stat(https_server.host_path(path)).st_mode & 0o200
    assert machine.set_attributes(path, mode="0444") is False
    progress = [str(e) for e in machine.action_handler.parent.events if e.kind == "progress"]
    assert any("other bits are ignored" in p for p in progress)
    # a read-only file can still be replaced by write_file (the flag is cleared, then reapplied)
    assert machine.write_file(path, b"new content", mode="0444") is True
    assert machine.read_file(path) == b"new content"
    assert machine.get_attributes(path)["read_only"] is True
    assert machine.set_attributes(path, read_only=False) is True
    assert machine.get_attributes(path)["read_only"] is False
    with pytest.raises(ConfigError):
        machine.set_attributes(path, mode="0644", read_only=True)
    with pytest.raises(CommandFailed, match="could not be translated"):
        machine.set_attributes(path, owner="NOSUCHDOMAIN\\nobody")


def test_commands_and_os(machine):
    assert machine.detect_os() == ("windows", "10.0.20348", "x86_64")
    result = machine.execute("Write-Output 'ran'", sudo=True)  # sudo has no meaning: ignored
    assert result.stdout.strip() == "ran"
    with pytest.raises(CommandFailed) as caught:
        machine.execute("Write-Error 'nope'; exit 5")
    assert caught.value.exit_status == 5 and "nope" in str(caught.value)
    assert machine.execute("exit 5", check=False).exit_status == 5
    with pytest.raises(UnsupportedOperation):
        machine.make_url_available_to_remote("http://127.0.0.1:8080/")


def test_machine_for_builds_a_windows_machine(https_server, certs, monkeypatch):
    from provisioning.machine.factory import machine_for

    monkeypatch.setenv("WINRM_TEST_PASSWORD", PASSWORD)
    store = MemoryStore()
    spec = MachineSpec(name="win-3", reference={"driver_url": "fake:", "address": "127.0.0.1"},
                       store=store)
    options = {"transport": {"kind": "winrm", "port": https_server.port, "scheme": "https",
                             "auth": "ntlm", "username": USER, "password_env": "WINRM_TEST_PASSWORD",
                             "ca_bundle": certs.ca, "command_timeout": 30}}
    machine = machine_for(spec, options, Config())
    try:
        assert isinstance(machine, WindowsMachine)
        assert machine.detect_os()[0] == "windows"
        assert machine.transport.default_timeout == 30
    finally:
        machine.disconnect()


def test_options_password_sources_and_refusals(https_server, certs, monkeypatch):
    spec = MachineSpec(name="win-4", reference={"driver_url": "fake:"})
    base = {"kind": "winrm", "host": "127.0.0.1", "port": https_server.port, "scheme": "https",
            "username": USER, "ca_bundle": certs.ca}
    config = Config({"credentials": {"winrm:127.0.0.1": {"password": PASSWORD}}})
    transport = winrm_transport_from_options({"transport": base}, spec, config)
    try:
        assert transport.execute("exit 0").ok  # password from config credentials
    finally:
        transport.disconnect()
    with pytest.raises(ConfigError, match="no password"):
        winrm_transport_from_options({"transport": base}, spec, Config())
    with pytest.raises(ConfigError, match="refusing a password"):
        winrm_transport_from_options({"transport": dict(base, password=PASSWORD)}, spec, config)
    with pytest.raises(ConfigError, match="did you mean 'connect_timeout'"):
        winrm_transport_from_options({"transport": dict(base, conect_timeout=3)}, spec, config)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        winrm_transport_from_options({"transport": dict(base, password_env="NOT_SET_ANYWHERE")},
                                     spec, config)
    with pytest.raises(ConfigError, match="no host"):
        winrm_transport_from_options({"transport": {"kind": "winrm"}},
                                     MachineSpec(name="x", reference={}), config)
    monkeypatch.setenv("WRONG_PASSWORD_ENV", "wrong")
    bad = winrm_transport_from_options({"transport": dict(base, password_env="WRONG_PASSWORD_ENV")},
                                       spec, config)
    try:
        with pytest.raises(AuthenticationError):  # password_env wins over config credentials
            bad.execute("exit 0")
    finally:
        bad.disconnect()


def test_certificate_pinned_from_the_reference_and_trusted_on_first_use(rogue_server, certs):
    store = MemoryStore()
    spec = MachineSpec(name="win-5", reference={"driver_url": "fake:", "address": "127.0.0.1"},
                       store=store)
    spec.save()
    config = Config({"credentials": {"fake:": {"winrm_password": PASSWORD}}})
    options = {"transport": {"kind": "winrm", "port": rogue_server.port, "scheme": "https",
                             "username": USER, "cert_trust": "first_use"}}
    handler = RecordingActionHandler()
    transport = winrm_transport_from_options(options, spec, config,
                                             on_new_host_key=pin_on_first_use(spec, handler))
    try:
        assert transport.execute("exit 0").ok
    finally:
        transport.disconnect()
    expected = certificate_thumbprints(certs.rogue_der)["sha256"]
    assert spec.reference["cert_thumbprint"] == expected
    assert store.get("machine", "win-5").reference["cert_thumbprint"] == expected
    assert any("trust WinRM certificate" in d for d in handler.descriptions())
    assert PASSWORD not in str(store.get("machine", "win-5").to_dict())

    # later runs pin what was recorded, without trust-on-first-use
    options["transport"].pop("cert_trust")
    again = winrm_transport_from_options(options, spec, config)
    try:
        assert again.cert_thumbprint == expected.lower()
        assert again.execute("exit 0").ok
    finally:
        again.disconnect()


def test_available(https_server, make_transport):
    transport = make_transport(https_server, "basic")
    assert transport.available() is True


def test_wait_until_connectable(https_server, make_transport):
    import socket

    from provisioning.errors import ConnectError
    from provisioning.transports.wait import wait_until_connectable
    from provisioning.transports.winrm import WinRMTransport

    transport = make_transport(https_server, "ntlm")
    wait_until_connectable(transport, timeout=20, action_handler=None, what="win-6")
    assert transport.stats["shells"] == 1
    sleeps: list[float] = []  # a retry would wait first
    with pytest.raises(AuthenticationError):  # fails at once, no waiting
        wait_until_connectable(make_transport(https_server, "ntlm", password="wrong"), timeout=60,
                               action_handler=None, what="win-6", sleep=sleeps.append)
    assert sleeps == []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = WinRMTransport("127.0.0.1", port, USER, password=PASSWORD, scheme="http")
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)
    with pytest.raises(ConnectError, match="within 1.5 s"):
        wait_until_connectable(closed, timeout=1.5, action_handler=None, what="win-7",
                               first_delay=0.1, sleep=sleep)
    assert sleeps and sum(sleeps) <= 1.5  # retried, never waiting past its timeout
    closed.disconnect()
