"""Fixtures for the speed tests: real sshd hosts on 127.0.0.1 and transports pinned to them."""

from __future__ import annotations

import pytest

from provisioning.testing.sshd import client_key, sshd_host, sudo_user  # noqa: F401 (fixtures)
from provisioning.transports.ssh import SSHTransport


@pytest.fixture
def transport(sshd_host, client_key):
    """An SSHTransport to a fresh sshd (host key pinned), disconnected at the end."""
    t = SSHTransport(sshd_host.host, sshd_host.port, "root", private_key=client_key,
                     host_key=sshd_host.host_key, connect_timeout=10.0, command_timeout=30.0)
    yield t
    t.disconnect()


@pytest.fixture
def session(transport):
    return transport.shell_session()
