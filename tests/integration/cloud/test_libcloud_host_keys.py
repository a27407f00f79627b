"""Cloud nodes' SSH host keys are known before the first connection (docs/ssh.md, "Cloud nodes").

moto runs no sshd for its nodes: a real sshd on 127.0.0.1 stands in for the node (the
``address`` option points there). What moto can show is checked there: the userdata it holds
(DescribeInstanceAttribute), and the console text a node "printed" (served by the test adapter
in cloud-init's format).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from provisioning.config import Config
from provisioning.drivers.libcloud_parts.hostkeys import console_host_keys, verify_against_console
from provisioning.errors import ConfigError, HostKeyMismatch
from provisioning.keys import fingerprint
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.testing.sshd import client_key, sshd_host  # noqa: F401 - pytest fixtures
from tests.integration.cloud.conftest import (
    REPO,
    URL,
    cloud_config,
    machine_options,
    node_userdata,
    userdata_parts,
)
from tests.integration.cloud.moto_adapter import serve_console

NO_CONSOLE_ADAPTER = "tests.integration.cloud.moto_adapter:NoConsoleEC2NodeDriver"


def _console(*public_lines: str, keys_block: bool = False, host: str = "ip-10-0-0-5") -> str:
    """A console text as cloud-init's cc_keys_to_console writes it at the end of a boot."""
    out = ["[   12.345678] cloud-init[612]: Cloud-init v. 23.4 running 'modules:final'",
           "ci-info: no authorized SSH keys fingerprints found for user admin.",
           "<14>Dec  1 13:00:00 cloud-init: " + "#" * 61,
           "<14>Dec  1 13:00:00 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----"]
    for line in public_lines:
        out.append(f"<14>Dec  1 13:00:00 cloud-init: 256 {fingerprint(line)} root@{host} (ED25519)")
    out += ["<14>Dec  1 13:00:00 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
            "<14>Dec  1 13:00:00 cloud-init: " + "#" * 61]
    if keys_block:
        out += ["-----BEGIN SSH HOST KEY KEYS-----", *[f"{p} root@{host}" for p in public_lines],
                "-----END SSH HOST KEY KEYS-----"]
    return "\n".join(out + ["Cloud-init v. 23.4 finished. Up 14.02 seconds", ""])


@pytest.fixture
def ssh_config(moto, tmp_path, client_key):  # noqa: F811
    data = cloud_config(moto, tmp_path, private_keys={client_key.name: client_key.path})
    return Config(data, base_dir=str(tmp_path))


def _reach(sshd, key, **extra):
    return machine_options(key_name=key.name, address="127.0.0.1",
                           transport={"port": sshd.port, "username": "root"}, **extra)


def _secret_line(private: str) -> str:
    """A line of an OpenSSH private key that holds key material (the first is a fixed header)."""
    return private.splitlines()[3]


def _state_bytes(tmp_path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.rglob("state.db*"))


# -- cloud-init: the key is made here ----------------------------------------------------------
def test_new_node_gets_its_own_host_key_in_userdata_pinned_before_creation(
        provisioner, driver, handler, store, tmp_path):
    spec = provisioner.allocate(driver, "hk-1", machine_options())
    pinned = spec.reference["host_key"]
    config, others = userdata_parts(node_userdata(driver, spec.reference["node_id"]))
    assert others == []
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == []
    assert config["ssh_keys"]["ed25519_public"] == pinned
    private = config["ssh_keys"]["ed25519_private"]
    assert "OPENSSH PRIVATE KEY" in private
    # the private half is nowhere but in the userdata: not in the state, events or reference
    body = _secret_line(private)
    assert body.encode() not in _state_bytes(tmp_path)
    assert not any(body in json.dumps(e.to_dict()) for e in handler.events)
    assert any(fingerprint(pinned) in e.description for e in handler.events)
    # a second machine gets another key, in a request of its own
    other = provisioner.allocate(driver, "hk-2", machine_options())
    assert other.reference["host_key"] != pinned


def test_user_userdata_is_kept_beside_the_host_key(provisioner, driver, store):
    script = "#!/bin/sh\necho {{ name }} > /etc/role\n"
    spec = provisioner.allocate(driver, "hk-script", machine_options(userdata=script))
    config, others = userdata_parts(node_userdata(driver, spec.reference["node_id"]))
    assert config["ssh_keys"]["ed25519_public"] == spec.reference["host_key"]
    assert others == [("text/x-shellscript", "#!/bin/sh\necho hk-script > /etc/role\n")]
    cloud = "#cloud-config\npackages: [nginx]\n"
    spec = provisioner.allocate(driver, "hk-cc", machine_options(userdata=cloud))
    config, others = userdata_parts(node_userdata(driver, spec.reference["node_id"]))
    assert others == [] and config["packages"] == ["nginx"]
    assert config["ssh_keys"]["ed25519_public"] == spec.reference["host_key"]


def test_userdata_setting_ssh_keys_itself_is_refused_before_creating(provisioner, driver, store):
    clash = "#cloud-config\nssh_keys:\n  ed25519_private: x\n"
    with pytest.raises(ConfigError) as info:
        provisioner.allocate(driver, "hk-clash", machine_options(userdata=clash))
    assert "ssh_keys" in str(info.value) and "cloud_init: false" in str(info.value)
    assert driver.find_nodes("hk-clash") == []
    assert store.get("machine", "hk-clash") is None


def test_first_connection_verifies_the_generated_key_and_refuses_another(
        ssh_config, sshd_host, client_key, store, handler):  # noqa: F811
    driver = driver_for_url(URL, ssh_config)
    provisioner = Provisioner(store, config=ssh_config, action_handler=handler)
    options = _reach(sshd_host, client_key, wait_for_ssh=True)
    spec = provisioner.allocate(driver, "hk-impostor", options)
    pinned = spec.reference["host_key"]
    # the sshd still serves its own key: someone else answers at the node's address
    with pytest.raises(HostKeyMismatch):
        provisioner.ready(driver, "hk-impostor", options)
    assert store.get("machine", "hk-impostor").reference["host_key"] == pinned
    config, _ = userdata_parts(node_userdata(driver, spec.reference["node_id"]))
    sshd_host.restart_with_host_key(config["ssh_keys"]["ed25519_private"])
    machine = provisioner.ready(driver, "hk-impostor", options)
    try:
        assert machine.execute_always("true").ok
    finally:
        machine.disconnect()


def test_crash_after_create_adopts_the_node_with_the_key_its_userdata_carries(moto, tmp_path,
                                                                             store):
    """Killed right after RunInstances: the pending reference pins the public key (and holds
    no private one). The re-run adopts the tagged node with the key read back from the node's
    userdata, even when a retried request had pinned another one meanwhile."""
    from provisioning.keys import generate_host_key

    data = cloud_config(moto, tmp_path)
    script = (
        "import json, sys\n"
        "from provisioning.config import Config\n"
        "from provisioning.lifecycle import Provisioner\n"
        "from provisioning.registry import driver_for_url\n"
        "from provisioning.store.sqlite import SQLiteStore\n"
        "job = json.loads(sys.argv[1])\n"
        "config = Config(job['config'], base_dir=job['base'])\n"
        "Provisioner(SQLiteStore(job['state']), config=config).allocate("
        "driver_for_url(job['url'], config), 'hk-crash', job['options'])\n")
    job = {"config": data, "base": str(tmp_path), "state": str(tmp_path / "state.db"),
           "url": URL, "options": machine_options()}
    env = dict(os.environ, PYTHONPATH=REPO, PROVISIONING_FAULT="after_create:crash")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 86, done.stderr
    crashed = store.get("machine", "hk-crash")
    generated = crashed.reference["host_key"]
    assert generated and not crashed.reference["node_id"]
    assert "PRIVATE" not in json.dumps(crashed.reference)
    crashed.reference["host_key"] = generate_host_key()[1]    # as a retried request leaves it
    crashed.save()
    config = Config(data, base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    spec = Provisioner(store, config=config).allocate(driver, "hk-crash", machine_options())
    assert len(driver.find_nodes("hk-crash", store.store_id)) == 1
    assert spec.reference["host_key"] == generated
    served, _ = userdata_parts(node_userdata(driver, spec.reference["node_id"]))
    assert served["ssh_keys"]["ed25519_public"] == generated
    assert _secret_line(served["ssh_keys"]["ed25519_private"]).encode() not in \
        _state_bytes(tmp_path)


# -- the console: fingerprints printed by the node ------------------------------------------
def test_console_fingerprints_verify_the_first_connection(ssh_config, sshd_host, client_key,
                                                          store, handler):  # noqa: F811
    driver = driver_for_url(URL, ssh_config)
    provisioner = Provisioner(store, config=ssh_config, action_handler=handler)
    options = _reach(sshd_host, client_key, cloud_init=False, wait_for_ssh=True)
    spec = provisioner.allocate(driver, "hk-console", options)
    assert "host_key" not in spec.reference
    assert "ssh_keys" not in node_userdata(driver, spec.reference["node_id"])
    serve_console("hk-console", _console(sshd_host.host_key))
    machine = provisioner.ready(driver, "hk-console", options)
    machine.disconnect()
    assert store.get("machine", "hk-console").reference["host_key"] == sshd_host.host_key
    pins = [a.description for a in handler.actions() if "pin host key" in a.description]
    assert len(pins) == 1 and "printed to its console" in pins[0], pins


def test_console_showing_other_fingerprints_refuses_the_host(ssh_config, sshd_host, client_key,
                                                             store):  # noqa: F811
    from provisioning.keys import generate_host_key

    driver = driver_for_url(URL, ssh_config)
    provisioner = Provisioner(store, config=ssh_config)
    options = _reach(sshd_host, client_key, cloud_init=False, wait_for_ssh=True)
    provisioner.allocate(driver, "hk-other", options)
    serve_console("hk-other", _console(generate_host_key()[1]))
    with pytest.raises(HostKeyMismatch) as info:
        provisioner.ready(driver, "hk-other", options)
    assert "printed to its console" in str(info.value)
    assert "host_key" not in store.get("machine", "hk-other").reference


def test_trust_first_use_only_when_opted_in_and_said_so(ssh_config, sshd_host, client_key,
                                                       store, handler):  # noqa: F811
    """moto's own console has no fingerprint block: without the opt-in the key is refused
    (once ready has waited its wait_timeout for the block); with it, pinned, and the event
    says it was trusted on first use."""
    driver = driver_for_url(URL, ssh_config)
    provisioner = Provisioner(store, config=ssh_config, action_handler=handler)
    refused = _reach(sshd_host, client_key, cloud_init=False, wait_for_ssh=True, wait_timeout=1.0)
    provisioner.allocate(driver, "hk-tofu", refused)
    with pytest.raises(HostKeyMismatch) as info:
        provisioner.ready(driver, "hk-tofu", refused)
    assert "trust-first-use" in str(info.value)
    assert "host_key" not in store.get("machine", "hk-tofu").reference
    with pytest.raises(HostKeyMismatch):      # connect without a handler refuses the same way
        provisioner.connect("hk-tofu", refused, driver).execute_always("true")
    opted = _reach(sshd_host, client_key, cloud_init=False, wait_for_ssh=True,
                   host_key_policy="trust-first-use")
    machine = provisioner.ready(driver, "hk-tofu", opted)
    try:
        assert machine.execute_always("true").ok
    finally:
        machine.disconnect()
    assert store.get("machine", "hk-tofu").reference["host_key"] == sshd_host.host_key
    pins = [a.description for a in handler.actions() if "pin host key" in a.description]
    assert len(pins) == 1 and "host_key_policy: trust-first-use" in pins[0], pins


def test_no_way_to_verify_is_refused_before_creating(moto, tmp_path, store):
    data = cloud_config(moto, tmp_path, driver_options={"driver_class": NO_CONSOLE_ADAPTER})
    config = Config(data, base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    with pytest.raises(ConfigError) as info:
        Provisioner(store, config=config).allocate(driver, "hk-blind",
                                                   machine_options(cloud_init=False))
    text = str(info.value)
    assert "host_key_policy" in text and "cloud_init: true" in text and "transport.host_key" in text
    assert driver.find_nodes("hk-blind") == [] and store.get("machine", "hk-blind") is None
    spec = Provisioner(store, config=config).allocate(
        driver, "hk-blind", machine_options(cloud_init=False, host_key_policy="trust-first-use"))
    assert spec.reference["node_id"]


# -- the console parser and the comparison ---------------------------------------------------
def test_console_parser_reads_the_last_complete_block():
    from provisioning.keys import generate_host_key

    old, new, other = (generate_host_key()[1] for _ in range(3))
    text = _console(old) + _console(new, keys_block=True)
    printed = console_host_keys(text)
    assert printed.fingerprints == {fingerprint(new)}
    assert printed.keys == {new}
    assert verify_against_console(new, printed, host="n") == "its public key"
    with pytest.raises(HostKeyMismatch):
        verify_against_console(old, printed, host="n")
    fprint_only = console_host_keys(_console(new))
    assert verify_against_console(new + " root@x", fprint_only, host="n").startswith("fingerprint")
    with pytest.raises(HostKeyMismatch):
        verify_against_console(other, fprint_only, host="n")
    # a block still being written, or none at all, vouches for nothing
    half = _console(new).split("-----END")[0]
    assert not console_host_keys(half) and not console_host_keys("Linux version 6.1\n")
    assert not console_host_keys(None)


def test_console_parser_accepts_md5_fingerprints_of_older_cloud_init():
    import base64
    import hashlib

    from provisioning.keys import generate_host_key

    public = generate_host_key()[1]
    digest = hashlib.md5(base64.b64decode(public.split()[1])).hexdigest()
    md5 = ":".join(digest[i:i + 2] for i in range(0, 32, 2))
    text = ("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
            f"ec2: 256 {md5} root@ip (ED25519)\n"
            "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n")
    assert verify_against_console(public, console_host_keys(text), host="n") == f"fingerprint MD5:{md5}"
