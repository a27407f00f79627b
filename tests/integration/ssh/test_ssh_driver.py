"""The ssh: driver's own behaviour: URLs, references, ready's error handling, stop, destroy."""

from __future__ import annotations

import socket

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostKeyMismatch,
    InvalidDriverURL,
    MachineNotFound,
)
from provisioning.keys import generate_private_key
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url


@pytest.fixture
def config(client_key, tmp_path):
    return Config({"private_keys": {"client": client_key.path}}, base_dir=str(tmp_path))


@pytest.fixture
def provisioner(store, config, handler):
    return Provisioner(store, config=config, action_handler=handler)


def _options(host, **extra):
    transport = {"host": host.host, "port": host.port, "key_name": "client",
                 "connect_timeout": 3, **extra.pop("transport", {})}
    return {"transport": transport, "ready_timeout": 10, **extra}


def test_urls(config):
    assert driver_for_url("ssh:", config).driver_url == "ssh:"
    assert driver_for_url("ssh", config).driver_url == "ssh:"
    assert driver_for_url("ssh:rack-7", config).driver_url == "ssh:rack-7"
    with pytest.raises(InvalidDriverURL):
        driver_for_url("ssh:bad/pool", config)


def test_options_are_declared_and_checked(config):
    driver = driver_for_url("ssh:", config)
    described = driver.describe().to_dict()
    names = {f["name"] for f in described["machine_options"]}
    assert {"transport.host", "transport.key_name", "allow_shutdown", "cleanup_commands",
            "ready_timeout"} <= names
    problems = driver.validate_machine_options({"transport": {"host": "h"}, "allow_shutdwn": True},
                                               where="machines.web.machine_options")
    assert any("did you mean 'allow_shutdown'" in str(p) for p in problems)
    with pytest.raises(ConfigError, match="needs the host"):
        driver.allocate_machine(RecordingActionHandler(), _spec(), {"transport": {}})


def _spec():
    from provisioning.spec import MachineSpec

    return MachineSpec(name="loose")


def test_allocate_records_where_and_ready_pins_host_key(sshd_host, provisioner, store, handler):
    driver = driver_for_url("ssh:", provisioner.config)
    options = _options(sshd_host)
    spec = provisioner.allocate(driver, "web", options)
    saved = store.get("machine", "web").reference
    assert saved["driver_url"] == "ssh:" and "driver_version" in saved
    assert (saved["host"], saved["port"], saved["username"], saved["key_name"]) == \
        ("127.0.0.1", sshd_host.port, "root", "client")
    assert "host_key" not in saved
    machine = provisioner.ready(driver, "web", options)
    assert machine.execute("hostname").ok
    machine.disconnect()
    assert store.get("machine", "web").reference["host_key"] == sshd_host.host_key
    assert any("pin host key" in e.description for e in handler.actions(performed=True))
    # connecting needs only the reference (no options)
    again = provisioner.connect("web", {})
    assert again.execute_always("echo hi").stdout == "hi\n"
    again.disconnect()
    assert spec.name == "web"


def test_moved_host_drops_the_old_pin(sshd_host, tmp_path, client_key, provisioner, store):
    from provisioning.testing.sshd import start_sshd

    driver = driver_for_url("ssh:", provisioner.config)
    provisioner.up(driver, "web", _options(sshd_host)).disconnect()
    assert store.get("machine", "web").reference["host_key"] == sshd_host.host_key
    other = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh])
    try:
        machine = provisioner.up(driver, "web", _options(other))
        assert machine.execute("true").ok
        machine.disconnect()
        reference = store.get("machine", "web").reference
        assert reference["port"] == other.port and reference["host_key"] == other.host_key
    finally:
        other.stop()


def waited(handler) -> bool:
    """True when ready retried (it says it is waiting before its first retry)."""
    return any("waiting up to" in d for d in handler.descriptions("progress"))


def test_ready_fails_at_once_on_changed_host_key(sshd_host, provisioner, handler):
    driver = driver_for_url("ssh:", provisioner.config)
    provisioner.up(driver, "web", _options(sshd_host)).disconnect()
    sshd_host.restart_with_new_host_key()
    with pytest.raises(HostKeyMismatch):
        provisioner.ready(driver, "web", _options(sshd_host, ready_timeout=60))
    assert not waited(handler)  # failed on the first attempt, no retry
    assert "HostKeyMismatch" in provisioner.spec("web").last_error


def test_ready_fails_at_once_on_a_refused_key(sshd_host, provisioner, handler, tmp_path):
    generate_private_key(str(tmp_path / "keys" / "other"), name="other")
    config = provisioner.config.with_data({"private_key_paths": [str(tmp_path / "keys")]})
    driver = driver_for_url("ssh:", config)
    options = _options(sshd_host, transport={"key_name": "other"}, ready_timeout=60)
    provisioner.config = config
    with pytest.raises(AuthenticationError):
        provisioner.up(driver, "web", options)
    assert not waited(handler)  # failed on the first attempt, no retry


def test_ready_on_an_unreachable_host_waits_then_says_so(provisioner, handler):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    driver = driver_for_url("ssh:", provisioner.config)
    options = {"transport": {"host": "127.0.0.1", "port": port, "key_name": "client",
                             "connect_timeout": 1}, "ready_timeout": 2}
    with pytest.raises(ConnectError, match=r"did not accept SSH within 2 s \(\d+ attempts\)"):
        provisioner.up(driver, "late", options)
    assert any("waiting up to 2 s" in d for d in handler.descriptions("progress"))


def test_stop_only_with_allow_shutdown(sshd_host, provisioner, handler, tmp_path):
    driver = driver_for_url("ssh:", provisioner.config)
    flag = tmp_path / "shut-down"
    options = _options(sshd_host, shutdown_command=f"touch {flag}")
    provisioner.up(driver, "web", options).disconnect()
    provisioner.stop("web", options, driver)
    assert not flag.exists()
    assert any("left root@127.0.0.1" in d for d in handler.descriptions("progress"))
    provisioner.stop("web", dict(options, allow_shutdown=True), driver)
    assert flag.exists()


def test_destroy_runs_cleanup_then_forgets(sshd_host, provisioner, store, tmp_path):
    driver = driver_for_url("ssh:", provisioner.config)
    flag = tmp_path / "cleaned"
    options = _options(sshd_host, cleanup_commands=[f"touch {flag}"])
    provisioner.up(driver, "web", options).disconnect()
    provisioner.destroy("web", options, driver)
    assert flag.exists() and store.get("machine", "web") is None
    assert sshd_host.process is not None, "the host itself is left alone"
    provisioner.destroy("web", options, driver)  # idempotent


def test_destroy_of_an_unreachable_host_still_forgets(sshd_host, provisioner, store, handler,
                                                     tmp_path):
    driver = driver_for_url("ssh:", provisioner.config)
    options = _options(sshd_host, cleanup_commands=["true"])
    provisioner.up(driver, "web", options).disconnect()
    sshd_host.stop()
    provisioner.destroy("web", options, driver)
    assert store.get("machine", "web") is None
    assert any("cleanup commands not run" in d for d in handler.descriptions("progress"))


def test_why_run_and_unallocated(sshd_host, store, config):
    planner = RecordingActionHandler(why_run=True)
    driver = driver_for_url("ssh:", config)
    assert Provisioner(store, config=config, action_handler=planner).up(
        driver, "web", _options(sshd_host)) is None
    assert any("would wait for root@127.0.0.1" in d for d in planner.descriptions("progress"))
    assert store.get("machine", "web") is None
    with pytest.raises(MachineNotFound):
        driver.connect_to_machine(_spec(), {})


def test_gateway_is_recorded_and_used_by_connect(tmp_path, client_key, provisioner, store):
    from provisioning.testing.sshd import sshd_hosts, stop_all

    gateway, target = sshd_hosts(2, tmp_path, [client_key.public_openssh])
    try:
        assert gateway.port != target.port and gateway.pid != target.pid
        driver = driver_for_url("ssh:", provisioner.config)
        options = _options(target, transport={"gateway": {"host": gateway.host,
                                                          "port": gateway.port}})
        provisioner.up(driver, "inner", options).disconnect()
        reference = store.get("machine", "inner").reference
        assert reference["gateway"] == {"host": "127.0.0.1", "port": gateway.port}
        assert reference["gateway_host_keys"] == {f"127.0.0.1:{gateway.port}": gateway.host_key}
        machine = provisioner.connect("inner", {})  # no options: all from the reference
        assert machine.transport.gateway is not None
        assert machine.execute_always("echo via").stdout == "via\n"
        machine.disconnect()
    finally:
        stop_all([gateway, target])
    assert gateway.process is None and target.process is None
