"""Logged in as a non-root user: sudo -n for commands and for files in root-owned places."""

from __future__ import annotations

import os
import stat
import time

import pytest

from provisioning.errors import AuthenticationError, CommandTimeout, TransferError
from provisioning.testing.sshd import ensure_test_user, start_sshd


def test_sudo_runs_as_root(user_host, connect, sudo_user):
    transport = connect(user_host)
    assert transport.execute("whoami").stdout.strip() == sudo_user.name
    assert transport.execute("whoami", sudo=True).stdout.strip() == "root"
    assert transport.execute('echo "$X"', sudo=True, env={"X": "a b"}).stdout == "a b\n"
    assert transport.execute("cat", sudo=True, input="via sudo").stdout == "via sudo"
    assert transport.execute("exit 4", sudo=True).exit_status == 4


def test_file_operations_with_sudo(user_host, connect, root_only_dir, tmp_path):
    plain = connect(user_host)
    target = root_only_dir / "etc" / "app.conf"
    with pytest.raises(TransferError):
        plain.write_file(str(target), b"x")
    transport = connect(user_host, sudo=True)
    transport.write_file(str(target), b"setting=1\n", mode="0600")
    assert target.read_bytes() == b"setting=1\n"
    assert os.stat(target).st_uid == 0 and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert transport.read_file(str(target)) == b"setting=1\n"
    assert transport.read_file(str(root_only_dir / "missing")) is None
    with pytest.raises(TransferError, match="sudo"):
        plain.read_file(str(target))  # exists, but not for this user: not "missing"
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(2_000_000))
    assert transport.upload_file(str(source), str(root_only_dir / "payload.bin"))
    assert transport.upload_file(str(source), str(root_only_dir / "payload.bin"),
                                 skip_unchanged=True) is False
    back = tmp_path / "back.bin"
    transport.download_file(str(root_only_dir / "payload.bin"), str(back))
    assert back.read_bytes() == source.read_bytes()
    local_tree = tmp_path / "tree"
    local_tree.mkdir()
    (local_tree / "f").write_text("f")
    assert transport.upload_directory(str(local_tree), str(root_only_dir / "tree"))
    assert (root_only_dir / "tree" / "f").read_text() == "f"


def test_sudo_timeout_kills_root_processes(user_host, connect):
    transport = connect(user_host)
    with pytest.raises(CommandTimeout):
        transport.execute("sleep 32.5", sudo=True, timeout=1)
    deadline = time.monotonic() + 20  # gone well before the command would have ended
    while transport.execute("pgrep -fx 'sleep 32.5' || true").stdout.strip():
        assert time.monotonic() < deadline, "the timed-out root command was left running"
        time.sleep(0.05)
    assert transport.execute("true", sudo=True).ok


def test_sudo_that_needs_a_password_is_a_clear_error(tmp_path, client_key, connect, sudo_user):
    user = ensure_test_user("provsshpw", sudo="password")
    host = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh], user=user.name)
    try:
        transport = connect(host)
        assert transport.execute("whoami").stdout.strip() == "provsshpw"
        with pytest.raises(AuthenticationError, match="needs a password") as caught:
            transport.execute("true", sudo=True)
        assert "NOPASSWD" in str(caught.value) and caught.value.host == transport.host
    finally:
        host.stop()
        user.remove()


def test_password_login(tmp_path, connect, sudo_user):
    """Password auth when asked for (here a user whose sudo also wants that password)."""
    import subprocess

    user = ensure_test_user("provsshpw", sudo="password")
    subprocess.run(["chpasswd"], input=f"{user.name}:correct horse\n", text=True, check=True)
    host = start_sshd(tmp_path, authorized_keys=[], user=user.name,
                      extra_config="PasswordAuthentication yes\n")
    try:
        transport = connect(host, private_key=None, password="correct horse")
        assert transport.execute("id -un").stdout.strip() == user.name
        with pytest.raises(AuthenticationError):
            connect(host, private_key=None, password="wrong").execute("true")
        with pytest.raises(AuthenticationError, match="needs a password"):
            transport.execute("true", sudo=True)
    finally:
        host.stop()
        user.remove()
