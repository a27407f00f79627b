"""Transports built from machine options: first-use pinning into the reference, waiting with
backoff, jump hosts (options and ProxyJump), ssh_config, ssh-agent, remote forwarding."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.errors import AuthenticationError, ConfigError, ConnectError, HostKeyMismatch
from provisioning.keys import generate_private_key
from provisioning.machine.factory import pin_on_first_use
from provisioning.spec import MachineSpec
from provisioning.store.memory import MemoryStore
from provisioning.testing.sshd import start_sshd
from provisioning.transports.ssh import ssh_transport_from_options, wait_until_connectable


@pytest.fixture
def config(client_key, tmp_path):
    return Config({"private_keys": {"client": client_key.path}}, base_dir=str(tmp_path))


def _build(options, spec, config, **extra):
    """A transport that pins first-use keys in ``spec.reference`` (saved when it has a store)."""
    return ssh_transport_from_options(options, spec, config,
                                      on_new_host_key=pin_on_first_use(spec, None), **extra)


def _options(host, **extra):
    return {"transport": {"host": host.host, "port": host.port, "key_name": "client",
                          "connect_timeout": 5, **extra}}


def test_first_use_records_host_key_in_reference_and_reports_it(sshd_host, config):
    store = MemoryStore()
    spec = store.get_or_new("machine", "web")
    spec.reference = {"driver_url": "ssh:", "host": sshd_host.host}
    spec.save()
    handler = RecordingActionHandler()
    transport = ssh_transport_from_options(
        _options(sshd_host), spec, config,
        on_new_host_key=pin_on_first_use(spec, handler.for_machine("web")))
    try:
        assert transport.execute("true").ok
    finally:
        transport.disconnect()
    assert spec.reference["host_key"] == sshd_host.host_key
    assert store.get("machine", "web").reference["host_key"] == sshd_host.host_key
    [action] = handler.actions(performed=True)
    assert "pin host key SHA256:" in action.description and action.machine == "web"
    # next time the pinned key is used, and a changed key is refused
    sshd_host.restart_with_new_host_key()
    again = ssh_transport_from_options(_options(sshd_host), spec, config,
                                       on_new_host_key=pin_on_first_use(spec, handler))
    with pytest.raises(HostKeyMismatch):
        again.execute("true")
    again.disconnect()
    assert len(handler.actions(performed=True)) == 1


def test_bad_options_are_config_errors_naming_the_key(config):
    spec = MachineSpec(name="m")
    with pytest.raises(ConfigError) as caught:
        _build({"transport": {"host": "h", "prot": 22, "port": "22"}},
                                   spec, config)
    text = str(caught.value)
    assert "machine_options.transport.prot" in text and "did you mean 'port'" in text
    assert "machine_options.transport.port" in text
    with pytest.raises(ConfigError, match="no host"):
        _build({"transport": {}}, spec, config)
    with pytest.raises(ConfigError, match="private key 'nope' not found"):
        _build({"transport": {"host": "h", "key_name": "nope"}}, spec, config)
    with pytest.raises(ConfigError, match="NOT_SET_PW"):
        _build({"transport": {"host": "h", "password_env": "NOT_SET_PW"}},
                                   spec, config)


def test_sudo_defaults_to_non_root_logins(config):
    spec = MachineSpec(name="m")
    assert _build({"transport": {"host": "h", "username": "ops"}},
                                      spec, config).sudo is True
    assert _build({"transport": {"host": "h"}}, spec, config).sudo is False


def test_wait_until_connectable_backs_off_then_succeeds(tmp_path, client_key, config):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = MachineSpec(name="late")
    transport = _build(
        {"transport": {"host": "127.0.0.1", "port": port, "key_name": "client",
                       "connect_timeout": 2}}, spec, config)
    started_host = []
    handler = RecordingActionHandler()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the machine comes up during the third wait
        sleeps.append(seconds)
        if len(sleeps) == 3:
            started_host.append(start_sshd(tmp_path, authorized_keys=[client_key.public_openssh],
                                           port=port))
    try:
        wait_until_connectable(transport, timeout=20, action_handler=handler, what="machine late",
                               sleep=sleep)
        assert transport.execute("echo up").stdout == "up\n"
    finally:
        transport.disconnect()
        for host in started_host:
            host.stop()
    assert sleeps[:3] == [0.25, 0.5, 1.0], "exponential backoff"
    assert any("waiting up to 20 s" in d for d in handler.descriptions("progress"))


def test_wait_gives_up_with_connect_error_saying_how_long(client_key):
    from provisioning.transports.ssh import SSHTransport

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = SSHTransport("127.0.0.1", port, private_key=client_key, connect_timeout=1,
                             on_new_host_key=lambda line: None)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)
    with pytest.raises(ConnectError) as caught:
        wait_until_connectable(transport, timeout=1.5, action_handler=None, what="machine x",
                               sleep=sleep)
    assert sleeps and sum(sleeps) <= 1.5  # it never waits past its timeout
    assert "within 1.5 s" in str(caught.value) and "refused" in str(caught.value)


def test_wait_fails_at_once_on_auth_and_host_key(sshd_host, connect, tmp_path):
    stranger = generate_private_key(str(tmp_path / "stranger"), name="stranger")
    sleeps: list[float] = []  # a retry would wait first
    with pytest.raises(AuthenticationError):
        wait_until_connectable(connect(sshd_host, private_key=stranger), timeout=30,
                               action_handler=None, what="m", sleep=sleeps.append)
    other = stranger.public_openssh  # a valid key, but not this host's
    with pytest.raises(HostKeyMismatch):
        wait_until_connectable(connect(sshd_host, host_key=other), timeout=30,
                               action_handler=None, what="m", sleep=sleeps.append)
    with pytest.raises(ConfigError, match="not an OpenSSH public key"):
        wait_until_connectable(connect(sshd_host, host_key="ssh-ed25519 AAAAnotbase64"),
                               timeout=30, action_handler=None, what="m", sleep=sleeps.append)
    assert sleeps == [], "auth and host key failures must not be retried"


@pytest.fixture
def gateway_and_target(tmp_path, client_key):
    gateway = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh])
    target = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh])
    yield gateway, target
    gateway.stop()
    target.stop()


def test_jump_host_from_options(gateway_and_target, config):
    gateway, target = gateway_and_target
    spec = MachineSpec(name="behind", reference={})
    options = _options(target, gateway={"host": gateway.host, "port": gateway.port})
    transport = _build(options, spec, config)
    try:
        assert transport.gateway is not None and transport.gateway.port == gateway.port
        assert transport.execute("echo through").stdout == "through\n"
        assert transport.upload_file(__file__, str(gateway.directory) + "/copied.py")
    finally:
        transport.disconnect()
    assert spec.reference["host_key"] == target.host_key
    assert spec.reference["gateway_host_keys"] == {f"127.0.0.1:{gateway.port}": gateway.host_key}


def test_jump_host_refusing_forwarding_is_connect_error(tmp_path, client_key, config):
    """Proves the route: a gateway that forbids forwarding stops the connection."""
    gateway = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh],
                         extra_config="AllowTcpForwarding no\n")
    target = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh])
    try:
        spec = MachineSpec(name="behind")
        options = _options(target, gateway={"host": gateway.host, "port": gateway.port})
        transport = _build(options, spec, config)
        with pytest.raises(ConnectError) as caught:
            transport.execute("true")
        assert "ChannelException" in str(caught.value)
        transport.disconnect()
    finally:
        gateway.stop()
        target.stop()


def test_ssh_config_alias_with_proxyjump(gateway_and_target, config, client_key, tmp_path):
    gateway, target = gateway_and_target
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"""
Host web-alias
    HostName 127.0.0.1
    Port {target.port}
    User root
    IdentityFile {client_key.path}
    ProxyJump root@127.0.0.1:{gateway.port}
""")
    spec = MachineSpec(name="aliased")
    transport = _build(
        {"transport": {"host": "web-alias", "ssh_config": str(ssh_config)}}, spec,
        Config({}, base_dir=str(tmp_path)))
    try:
        assert (transport.hostname, transport.port) == ("127.0.0.1", target.port)
        assert transport.gateway is not None and transport.gateway.port == gateway.port
        assert transport.execute("echo aliased").stdout == "aliased\n"
    finally:
        transport.disconnect()


@pytest.mark.skipif(not shutil.which("ssh-agent"), reason="ssh-agent (openssh-client) missing")
def test_use_agent(sshd_host, tmp_path, client_key, monkeypatch, config):
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # a guard only: the agent makes its socket at start
        while not os.path.exists(sock):
            assert time.monotonic() < deadline, "ssh-agent never made its socket"
            time.sleep(0.02)
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        subprocess.run(["ssh-add", client_key.path], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        spec = MachineSpec(name="agent")
        options = {"transport": {"host": sshd_host.host, "port": sshd_host.port,
                                 "use_agent": True}}
        transport = _build(options, spec, Config({}, base_dir=str(tmp_path)))
        try:
            assert transport.private_key is None
            assert transport.execute("echo agent").stdout == "agent\n"
        finally:
            transport.disconnect()
    finally:
        agent.terminate()
        agent.wait()


def test_forward_remote_reaches_a_local_server(sshd_host, connect):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"served from the provisioning host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        transport = connect(sshd_host)
        local = f"http://127.0.0.1:{server.server_address[1]}/file.txt"
        remote = transport.forward_remote(local)
        assert remote != local and remote.startswith("http://127.0.0.1:")
        assert remote.endswith("/file.txt")
        assert transport.forward_remote(local) == remote, "one forward per local address"
        fetch = ("python3 -c \"import sys,urllib.request;"
                 "print(urllib.request.urlopen(sys.argv[1]).read().decode())\" " + remote)
        result = transport.execute(fetch, timeout=30)
        assert result.stdout.strip() == "served from the provisioning host", result.stderr
    finally:
        server.shutdown()
        server.server_close()
