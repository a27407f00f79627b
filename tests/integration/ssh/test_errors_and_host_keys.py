"""Typed errors within their timeouts, and host key pinning (never blindly accepted)."""

from __future__ import annotations

import inspect
import socket
import threading

import pytest

from provisioning.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostKeyMismatch,
    ProvisioningError,
    TransferError,
    TransportError,
)
from provisioning.keys import fingerprint, generate_private_key
from provisioning.transports.ssh import translate_ssh_error


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_closed_port_is_connect_error_within_the_connect_timeout(client_key):
    from provisioning.transports.ssh import SSHTransport

    port = _closed_port()
    transport = SSHTransport("127.0.0.1", port, private_key=client_key, connect_timeout=2,
                             on_new_host_key=lambda line: None)
    with pytest.raises(ConnectError) as caught:
        transport.execute("true")
    assert caught.value.host == f"root@127.0.0.1:{port}"
    assert "refused" in str(caught.value) and "check" in str(caught.value)


def test_silent_server_is_connect_error_at_the_connect_timeout(client_key):
    """A port that accepts TCP but never speaks SSH must not hang."""
    from provisioning.transports.ssh import SSHTransport

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        transport = SSHTransport("127.0.0.1", port, private_key=client_key, connect_timeout=1.5,
                                 on_new_host_key=lambda line: None)
        caught: list[BaseException] = []

        def attempt() -> None:
            try:
                transport.execute("true")
            except BaseException as exc:  # handed to the test thread
                caught.append(exc)
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(120)  # a guard only: the connect timeout is 1.5 s
        assert not worker.is_alive(), "a silent server made the connection hang"
        assert len(caught) == 1 and isinstance(caught[0], ConnectError), caught


def test_wrong_key_is_authentication_error(sshd_host, connect, tmp_path):
    stranger = generate_private_key(str(tmp_path / "stranger"), name="stranger")
    transport = connect(sshd_host, private_key=stranger)
    with pytest.raises(AuthenticationError) as caught:
        transport.execute("true")
    assert caught.value.host == transport.host
    assert "authorized_keys" in str(caught.value)


def test_wrong_user_is_authentication_error(sshd_host, connect):
    with pytest.raises(AuthenticationError):
        connect(sshd_host, username="nobody-here").execute("true")


def test_first_use_reports_the_key_then_pins_it(sshd_host, connect):
    seen: list[str] = []
    transport = connect(sshd_host, pin=False, on_new_host_key=seen.append)
    assert transport.execute("true").ok
    assert seen == [sshd_host.host_key]
    # a second transport pinned to the recorded key connects without asking
    again = connect(sshd_host, host_key=seen[0], on_new_host_key=seen.append)
    assert again.execute("true").ok
    assert len(seen) == 1


def test_unknown_key_without_callback_is_refused(sshd_host, connect):
    with pytest.raises(HostKeyMismatch) as caught:
        connect(sshd_host, pin=False).execute("true")
    assert caught.value.seen == sshd_host.host_key


def test_changed_host_key_is_mismatch_even_after_reconnect(sshd_host, connect):
    transport = connect(sshd_host)
    assert transport.execute("true").ok
    old = sshd_host.host_key
    new = sshd_host.restart_with_new_host_key()
    assert new != old
    with pytest.raises(HostKeyMismatch) as caught:
        transport.execute("true")  # the old connection died; the reconnect meets the new key
    assert caught.value.expected == old and caught.value.seen == new
    assert fingerprint(old) in str(caught.value) and fingerprint(new) in str(caught.value)
    with pytest.raises(HostKeyMismatch):
        connect(sshd_host, host_key=old).execute("true")


def test_known_hosts_file(sshd_host, connect, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_host.known_hosts_line + "\n")
    before = known.read_text()
    assert connect(sshd_host, known_hosts=str(known)).execute("true").ok
    sshd_host.restart_with_new_host_key()
    with pytest.raises(HostKeyMismatch):
        connect(sshd_host, known_hosts=str(known)).execute("true")
    other = tmp_path / "other_known_hosts"
    other.write_text("[127.0.0.1]:1 " + sshd_host.host_key + "\n")
    with pytest.raises(HostKeyMismatch, match="not in the known_hosts"):
        connect(sshd_host, known_hosts=str(other)).execute("true")
    assert known.read_text() == before, "nothing writes known_hosts"
    with pytest.raises(ConfigError):
        connect(sshd_host, known_hosts=str(tmp_path / "missing")).execute("true")


def _backend_exception_classes():
    import paramiko
    from paramiko import ssh_exception

    classes = {cls for _, cls in inspect.getmembers(ssh_exception, inspect.isclass)
               if issubclass(cls, BaseException)}
    classes |= {paramiko.hostkeys.InvalidHostKey, paramiko.SFTPError, socket.timeout, EOFError, ConnectionRefusedError,
                ConnectionResetError, OSError}
    return sorted(classes, key=lambda c: c.__name__)


def _instance(cls):
    import paramiko

    if cls.__name__ == "BadHostKeyException":
        key = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
        if key is None:
            import io

            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ed25519

            pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption()).decode()
            key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
        return cls("example", key, key)
    if cls.__name__ == "NoValidConnectionsError":
        return cls({("127.0.0.1", 22): ConnectionRefusedError("refused")})
    if cls.__name__ in ("BadAuthenticationType", "PartialAuthentication"):
        return cls("no", ["publickey"]) if cls.__name__ == "BadAuthenticationType" else cls(["x"])
    if cls.__name__ == "ChannelException":
        return cls(2, "Connect failed")
    if cls.__name__ == "ProxyCommandFailure":
        return cls("ssh -W", "failed")
    if cls.__name__ == "CouldNotCanonicalize":
        return cls()
    if cls.__name__ == "InvalidHostKey":
        return cls("h ssh-ed25519 AAAA", ValueError("bad base64"))
    if cls.__name__ == "ConfigParseError":
        return cls("bad line")
    return cls("boom")


@pytest.mark.parametrize("cls", _backend_exception_classes(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("phase", ["connect", "command", "transfer"])
def test_every_backend_exception_is_mapped(cls, phase):
    error = translate_ssh_error(_instance(cls), host="root@h:22", phase=phase, what="do it")
    assert isinstance(error, ProvisioningError)
    if isinstance(error, TransportError):
        assert error.host == "root@h:22"


def test_mapping_is_most_specific_first():
    import paramiko

    def mapped(exc, phase="command"):
        return type(translate_ssh_error(exc, host="h", phase=phase, what="x"))

    assert mapped(paramiko.AuthenticationException("no")) is AuthenticationError
    assert mapped(paramiko.BadAuthenticationType("no", ["password"])) is AuthenticationError
    assert mapped(paramiko.ChannelException(2, "refused")) is ConnectError
    assert mapped(paramiko.SSHException("x"), "transfer") is TransferError
    assert mapped(TimeoutError(), "connect") is ConnectError
    assert mapped(ConnectionRefusedError(), "connect") is ConnectError
