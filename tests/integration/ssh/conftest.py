"""Fixtures for the SSH tests: real sshd processes on 127.0.0.1 (provisioning.testing.sshd)."""

from __future__ import annotations

import pytest

from provisioning.testing.sshd import client_key, sshd_host, sudo_user  # noqa: F401 (fixtures)
from provisioning.transports.ssh import SSHTransport


@pytest.fixture
def connect(client_key):
    """Build transports to test hosts (pinned to the host's key unless told otherwise);
    all are disconnected at the end."""
    made: list[SSHTransport] = []

    def build(host, *, pin: bool = True, **kwargs) -> SSHTransport:
        kwargs.setdefault("private_key", client_key)
        kwargs.setdefault("connect_timeout", 5.0)
        if pin and "host_key" not in kwargs and "known_hosts" not in kwargs:
            kwargs["host_key"] = host.host_key
        transport = SSHTransport(host.host, host.port, kwargs.pop("username", host.user), **kwargs)
        made.append(transport)
        return transport

    yield build
    for transport in made:
        transport.disconnect()


@pytest.fixture
def user_host(tmp_path, client_key, sudo_user):
    """An sshd for the non-root login ``sudo_user`` (passwordless sudo)."""
    from provisioning.testing.sshd import start_sshd

    host = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh], user=sudo_user.name)
    yield host
    host.stop()


@pytest.fixture
def root_only_dir(tmp_path):
    """A root-owned directory a non-root login cannot write to (or even enter)."""
    import os

    path = tmp_path / "root-only"
    path.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    return path
