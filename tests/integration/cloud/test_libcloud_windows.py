"""ready_machine for Windows nodes (transport kind winrm): an RSA key pair, the Administrator
password fetched with GetPasswordData from a real moto server and decrypted with the machine's
key, kept out of state, events and logs, and WinRM waited for on the WS-Management test server
(unmodified pywinrm) that the node's ``address`` option points at."""

from __future__ import annotations

import base64
import glob
import json
import logging
import os
import uuid

import pytest

from provisioning.config import Config
from provisioning.errors import AuthenticationError, ConfigError, ProviderError
from provisioning.keys import find_private_key, generate_private_key
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from tests.integration.cloud.conftest import URL, cloud_config, machine_options
from tests.integration.cloud.moto_adapter import WINDOWS_PASSWORDS, serve_windows_password
from tests.integration.winrm.conftest import PASSWORD, USER, certs, https_server  # noqa: F401

pytest.importorskip("winrm", reason="pywinrm is not installed: pip install 'provisioning[winrm]'")
pytestmark = pytest.mark.timeout(180)

#: moto's AMIs: a Windows Server image (moto serves password data for it) and a Linux one
WINDOWS_IMAGE = "ami-12c6146b"
LINUX_IMAGE = "ami-760aaa0f"


@pytest.fixture(autouse=True)
def _forget_served_passwords():
    yield
    WINDOWS_PASSWORDS.clear()


@pytest.fixture
def capture_logs(caplog):
    caplog.set_level(logging.DEBUG)          # every logger, libcloud/urllib3/pywinrm included
    return caplog


def _windows_options(server, ca: str, **extra) -> dict:
    transport = {"kind": "winrm", "port": server.port, "scheme": "https", "auth": "ntlm",
                 "username": USER, "ca_bundle": ca, "connect_timeout": 2}
    transport.update(extra.pop("transport", {}))
    extra.setdefault("image", WINDOWS_IMAGE)
    return machine_options(wait_for_ssh=True, address="127.0.0.1", transport=transport, **extra)


def _provisioner(store, config, handler) -> Provisioner:
    return Provisioner(store, config=config, action_handler=handler, lock_wait=30)


def _assert_secret_nowhere(secret: str, *, tmp_path, handler, caplog) -> None:
    """Neither the password nor its base64 form in state files, events or captured logs."""
    forms = [secret.encode(), base64.b64encode(secret.encode())]
    for path in glob.glob(str(tmp_path / "state.db*")):
        with open(path, "rb") as handle:
            data = handle.read()
        assert data and not any(f in data for f in forms), f"password found in {path}"
    events = json.dumps([e.to_dict() for e in handler.events], default=str).encode()
    assert b"Administrator password" in events or b"password" in events  # events were seen
    assert not any(f in events for f in forms), "password found in events"
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert caplog.records, "nothing was logged: the log capture is not working"
    assert not any(f in logged for f in forms), "password found in the logs"


def test_ready_fetches_the_password_and_returns_a_working_windows_machine(
        moto, tmp_path, store, handler, https_server, certs, capture_logs):  # noqa: F811
    from provisioning.machine.windows import WindowsMachine

    config = Config(cloud_config(moto, tmp_path), base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    # the node "posts" its password only on the third request, as Windows does minutes after boot
    served = serve_windows_password("win-1", PASSWORD, empty_answers=2)
    provisioner = _provisioner(store, config, handler)
    machine = provisioner.up(driver, "win-1", _windows_options(https_server, certs.ca))
    try:
        assert isinstance(machine, WindowsMachine)
        token = uuid.uuid4().hex
        result = machine.execute_always("Write-Output $env:TOKEN", env={"TOKEN": token})
        assert result.ok and result.stdout.strip() == token
        assert machine.execute_always("exit 3", check=False).exit_status == 3
    finally:
        machine.disconnect()
    assert served.requests == 3                      # retried while the data was empty
    # an RSA key was generated for the Windows node (EC2: 2048 bits), apart from the SSH default
    key = find_private_key(config, "provisioning-rsa")
    assert key.kind == "rsa" and key.key.key_size == 2048
    assert os.stat(key.path).st_mode & 0o777 == 0o600
    spec = store.get("machine", "win-1")
    assert spec.reference["key_pair"].startswith("provisioning-rsa-")
    assert spec.reference["address"] == "127.0.0.1"
    progress = [e.description for e in handler.events]
    assert any("waiting for node" in d and "Windows password" in d for d in progress)

    # a later connect fetches the password again (it was never stored)
    again = provisioner.connect("win-1", _windows_options(https_server, certs.ca), driver)
    try:
        assert isinstance(again, WindowsMachine)
        assert again.execute_always("Write-Output 'again'").stdout.strip() == "again"
    finally:
        again.disconnect()
    assert served.requests == 4
    _assert_secret_nowhere(PASSWORD, tmp_path=tmp_path, handler=handler, caplog=capture_logs)


@pytest.mark.parametrize("source", ["credentials", "password_env"])
def test_a_configured_password_wins_over_fetching(moto, tmp_path, store, handler, https_server,
                                                  certs, monkeypatch, source):  # noqa: F811
    from provisioning.machine.windows import WindowsMachine

    data = cloud_config(moto, tmp_path)
    extra_transport = {}
    if source == "credentials":
        data["credentials"]["winrm:127.0.0.1"] = {"password": PASSWORD}
    else:
        monkeypatch.setenv("WIN_TEST_PASSWORD", PASSWORD)
        extra_transport["password_env"] = "WIN_TEST_PASSWORD"
    config = Config(data, base_dir=str(tmp_path))
    served = serve_windows_password("win-2", "not-the-password")   # would fail if fetched
    machine = _provisioner(store, config, handler).up(
        driver_for_url(URL, config), "win-2",
        _windows_options(https_server, certs.ca, transport=extra_transport))
    try:
        assert isinstance(machine, WindowsMachine)
        assert machine.execute_always("exit 0").ok
    finally:
        machine.disconnect()
    assert served.requests == 0


def test_a_wrong_fetched_password_fails_at_once_with_authentication_error(
        moto, tmp_path, store, handler, https_server, certs):  # noqa: F811
    config = Config(cloud_config(moto, tmp_path), base_dir=str(tmp_path))
    served = serve_windows_password("win-3", "Wr0ng-Passw0rd")
    with pytest.raises(AuthenticationError):
        _provisioner(store, config, handler).up(driver_for_url(URL, config), "win-3",
                                                _windows_options(https_server, certs.ca))
    assert served.requests == 1
    # not retried until the 30 s deadline: a retry would first say it is waiting
    assert not any("waiting up to" in d for d in handler.descriptions("progress"))


def test_moto_password_data_for_a_linux_image_never_comes(moto, tmp_path, store, handler,
                                                          https_server, certs):  # noqa: F811
    """moto's real answer for a non-Windows AMI is empty: ready waits, then says why."""
    config = Config(cloud_config(moto, tmp_path), base_dir=str(tmp_path))
    options = _windows_options(https_server, certs.ca, image=LINUX_IMAGE, wait_timeout=1.0)
    with pytest.raises(ProviderError) as info:
        _provisioner(store, config, handler).up(driver_for_url(URL, config), "win-4", options)
    assert "still not available" in str(info.value) and "password_env" in str(info.value)


def test_moto_random_password_data_is_refused_as_undecryptable(moto, tmp_path, store, handler,
                                                               https_server, certs):  # noqa: F811
    """moto's real answer for a Windows AMI is random text, not encrypted with our key."""
    config = Config(cloud_config(moto, tmp_path), base_dir=str(tmp_path))
    with pytest.raises(ConfigError) as info:
        _provisioner(store, config, handler).up(driver_for_url(URL, config), "win-5",
                                                _windows_options(https_server, certs.ca))
    assert "cannot decrypt" in str(info.value) and info.value.key == "machine_options.key_name"


def test_decrypt_password_data_matches_ec2_encryption(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import padding

    from provisioning.drivers.libcloud_parts.windows import decrypt_password_data

    key = generate_private_key(str(tmp_path / "rsa"), kind="rsa", bits=2048)
    other = generate_private_key(str(tmp_path / "other"), kind="rsa", bits=2048)
    secret = "p@ss-wörd;%$(1)"
    data = base64.b64encode(key.key.public_key().encrypt(secret.encode(), padding.PKCS1v15()))
    # EC2 wraps long base64 over lines; whitespace is not part of the data
    wrapped = "\n".join(data.decode()[i:i + 64] for i in range(0, len(data), 64))
    assert decrypt_password_data(wrapped, key) == secret
    with pytest.raises(ConfigError) as info:
        decrypt_password_data(data.decode(), other)
    assert secret not in str(info.value)
    with pytest.raises(ProviderError):
        decrypt_password_data("not base64 !!", key)


def test_an_ed25519_key_is_refused_for_a_windows_node_before_any_node_exists(
        moto, tmp_path, store, handler, https_server, certs):  # noqa: F811
    ed = generate_private_key(str(tmp_path / "given" / "ed"), name="ed", kind="ed25519")
    config = Config(cloud_config(moto, tmp_path, private_keys={"ed": ed.path}),
                    base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    with pytest.raises(ConfigError) as info:
        _provisioner(store, config, handler).up(
            driver, "win-6", _windows_options(https_server, certs.ca, key_name="ed"))
    assert info.value.key == "machine_options.key_name"
    assert "ed25519" in str(info.value) and "RSA" in str(info.value)
    assert driver.find_nodes("win-6") == []


def test_ssh_remains_the_default_transport(moto, tmp_path, store, handler):
    from provisioning.machine.unix import UnixMachine
    from provisioning.transports.ssh import SSHTransport

    config = Config(cloud_config(moto, tmp_path), base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    served = serve_windows_password("lin-1", PASSWORD)
    provisioner = _provisioner(store, config, handler)
    provisioner.up(driver, "lin-1", machine_options(image=LINUX_IMAGE))
    machine = provisioner.connect("lin-1", machine_options(image=LINUX_IMAGE), driver)
    assert isinstance(machine, UnixMachine) and isinstance(machine.transport, SSHTransport)
    key = find_private_key(config, "provisioning")
    assert key.kind == "ed25519"                     # no RSA key for SSH nodes
    spec = store.get("machine", "lin-1")
    assert spec.reference["key_pair"].startswith("provisioning-")
    assert not spec.reference["key_pair"].startswith("provisioning-rsa")
    assert served.requests == 0                      # no password fetched for SSH nodes
