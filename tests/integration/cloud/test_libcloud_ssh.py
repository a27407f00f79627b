"""ready_machine's SSH path: a moto node whose address option points at a real OpenSSH sshd on
127.0.0.1 (the same option serves private networks, NAT and bastion setups)."""

from __future__ import annotations

import pytest

from provisioning.config import Config
from provisioning.errors import ConnectError
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.testing.sshd import client_key, sshd_host  # noqa: F401 - pytest fixtures
from tests.integration.cloud.conftest import (
    URL,
    cloud_config,
    machine_options,
    node_userdata,
    userdata_parts,
)


@pytest.fixture
def ssh_config(moto, tmp_path, client_key):  # noqa: F811
    data = cloud_config(moto, tmp_path, private_keys={client_key.name: client_key.path})
    return Config(data, base_dir=str(tmp_path))


def test_ready_waits_for_ssh_and_returns_a_working_machine(ssh_config, sshd_host, client_key,
                                                           store, handler):  # noqa: F811
    """The node's host key is generated here, handed over in the userdata and pinned before the
    first connection: the sshd standing in for the node serves the key cloud-init would
    install from that userdata, and the first connection is verified, not trusted."""
    driver = driver_for_url(URL, ssh_config)
    options = machine_options(wait_for_ssh=True, key_name=client_key.name, address="127.0.0.1",
                              transport={"port": sshd_host.port, "username": "root"})
    provisioner = Provisioner(store, config=ssh_config, action_handler=handler)
    spec = provisioner.allocate(driver, "reachable", options)
    pinned = spec.reference["host_key"]
    cloud_config, _ = userdata_parts(node_userdata(driver, spec.reference["node_id"]))
    assert sshd_host.restart_with_host_key(cloud_config["ssh_keys"]["ed25519_private"]) == pinned
    machine = provisioner.up(driver, "reachable", options)
    try:
        result = machine.execute_always("echo from-$((40+2))")
        assert result.ok and result.stdout.strip() == "from-42"
    finally:
        machine.disconnect()
    spec = store.get("machine", "reachable")
    assert spec.reference["address"] == "127.0.0.1"
    assert spec.reference["key_pair"].startswith(client_key.name + "-")
    assert spec.reference["host_key"] == pinned
    assert not [a for a in handler.actions() if "pin host key" in a.description]
    again = provisioner.connect("reachable", options, driver)
    try:
        assert again.execute_always("true").ok
    finally:
        again.disconnect()


def test_ready_gives_up_at_its_deadline_when_ssh_never_answers(ssh_config, sshd_host,
                                                                client_key, store):  # noqa: F811
    driver = driver_for_url(URL, ssh_config)
    port = sshd_host.port
    sshd_host.stop()                          # nothing listens there any more
    options = machine_options(wait_for_ssh=True, key_name=client_key.name, address="127.0.0.1",
                              wait_timeout=2.0, cloud_init=False,
                              transport={"port": port, "username": "root", "connect_timeout": 1})
    with pytest.raises(ConnectError) as info:
        Provisioner(store, config=ssh_config).up(driver, "unreachable", options)
    assert "did not accept SSH" in str(info.value)
