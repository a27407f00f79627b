"""File transfer over SSH: atomic, sha256-verified, skipped when unchanged; directories."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from provisioning.errors import TransferError
from provisioning.transports.base import sha256_file


@pytest.fixture
def remote_dir(tmp_path):
    """A directory the "remote" side writes into (the sshd runs on this host)."""
    path = tmp_path / "remote"
    path.mkdir()
    return path


def _leftovers(directory) -> list[str]:
    return [n for n in os.listdir(directory) if "provisioning" in n]


@pytest.mark.slow
def test_50_mib_upload_and_download_with_sha256(sshd_host, connect, tmp_path, remote_dir):
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        handle.write(os.urandom(50 * 1024 * 1024))
    transport = connect(sshd_host, transfer_timeout=120)
    target = remote_dir / "big.bin"
    assert transport.upload_file(str(source), str(target)) is True
    assert sha256_file(target) == sha256_file(source)
    assert transport.remote_sha256(str(target)) == sha256_file(source)
    assert _leftovers(remote_dir) == []
    back = tmp_path / "back" / "big.bin"
    transport.download_file(str(target), str(back))
    assert sha256_file(back) == sha256_file(source)
    assert _leftovers(back.parent) == []
    # unchanged: skipped without copying
    before = os.stat(target).st_mtime_ns
    assert transport.upload_file(str(source), str(target), skip_unchanged=True) is False
    assert os.stat(target).st_mtime_ns == before


def test_write_and_read_file(sshd_host, connect, remote_dir):
    transport = connect(sshd_host)
    path = remote_dir / "deep" / "er" / "hello.txt"  # parents are created
    transport.write_file(str(path), b"hello\n", mode=0o640)
    assert path.read_bytes() == b"hello\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert transport.read_file(str(path)) == b"hello\n"
    assert transport.read_file(str(remote_dir / "missing")) is None
    binary = bytes(range(256)) * 10
    transport.write_file(str(path), binary)
    assert transport.read_file(str(path)) == binary
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, "replacing keeps the old file's mode"
    assert _leftovers(path.parent) == []


def test_write_is_atomic_replace(sshd_host, connect, remote_dir):
    transport = connect(sshd_host)
    path = remote_dir / "config"
    path.write_text("old")
    inode = os.stat(path).st_ino
    transport.write_file(str(path), b"new")
    assert path.read_text() == "new"
    assert os.stat(path).st_ino != inode, "a new file is renamed over the old one"


def test_transfer_errors(sshd_host, connect, tmp_path, remote_dir):
    transport = connect(sshd_host)
    (remote_dir / "afile").write_text("x")
    with pytest.raises(TransferError) as caught:
        transport.write_file(str(remote_dir / "afile" / "below"), b"data")
    assert caught.value.host == transport.host
    with pytest.raises(TransferError, match="no such file"):
        transport.download_file(str(remote_dir / "missing"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(TransferError, match="cannot read the local file"):
        transport.upload_file(str(tmp_path / "nope"), str(remote_dir / "nope"))


def test_sha256_mismatch_discards_the_copy(sshd_host, connect, remote_dir):
    """The remote side checks what it stored against the sha256 we sent."""
    transport = connect(sshd_host)
    script = transport._write_script(str(remote_dir / "f"), "0" * 64, None, "t1")
    result = transport.execute(script, input=b"payload")
    assert result.exit_status == 97
    assert not (remote_dir / "f").exists() and _leftovers(remote_dir) == []


def test_directory_upload(sshd_host, connect, tmp_path, remote_dir):
    local = tmp_path / "tree"
    (local / "sub" / "deeper").mkdir(parents=True)
    (local / "a.txt").write_text("alpha")
    (local / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (local / "sub" / "deeper" / "c.txt").write_text("gamma")
    (local / "empty").mkdir()
    target = remote_dir / "site"
    transport = connect(sshd_host)
    assert transport.upload_directory(str(local), str(target)) is True
    for rel in ("a.txt", "sub/b.bin", "sub/deeper/c.txt"):
        assert sha256_file(target / rel) == sha256_file(local / rel)
    assert (target / "empty").is_dir()
    assert transport.upload_directory(str(local), str(target)) is False, "unchanged: skipped"
    # a changed tree replaces the old one (files gone locally are gone remotely)
    (local / "a.txt").unlink()
    (local / "new.txt").write_text("new")
    assert transport.upload_directory(str(local), str(target)) is True
    assert not (target / "a.txt").exists() and (target / "new.txt").read_text() == "new"
    assert _leftovers(remote_dir) == []
    digest = hashlib.sha256((local / "sub" / "b.bin").read_bytes()).hexdigest()
    assert transport.remote_sha256(str(target / "sub" / "b.bin")) == digest


def _landed(directory, deadline: float = 60.0):
    """The staged file, once bytes have arrived in it (waits on the file, not on a clock)."""
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for name in os.listdir(directory):
            path = directory / name
            if name.endswith(".tmp") and path.stat().st_size > 0:
                return path
        time.sleep(0.01)
    raise AssertionError(f"no bytes arrived in {directory}: {os.listdir(directory)}")


class _HeldSource:
    """File-like stdin for an upload: the first block, then it waits until released (so the
    test can look at the half-written file on the "remote" side, which is this host)."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        import threading

        self.blocks = [first, rest]
        self.first_sent = threading.Event()
        self.release = threading.Event()

    def read(self, size: int = -1) -> bytes:
        if not self.blocks:
            return b""
        if len(self.blocks) == 1:
            self.first_sent.set()
            assert self.release.wait(60)
        return self.blocks.pop(0)


@pytest.mark.parametrize("mode, existing", [(0o600, None), (0o640, 0o644), (None, 0o600)])
def test_new_file_has_its_final_mode_before_any_byte(sshd_host, connect, remote_dir, mode,
                                                     existing):
    import threading

    target = remote_dir / "secret"
    if existing is not None:
        target.write_bytes(b"old")
        target.chmod(existing)
    transport = connect(sshd_host)
    first, rest = b"A" * 70000, b"B" * 10
    source = _HeldSource(first, rest)
    sha = hashlib.sha256(first + rest).hexdigest()
    done = threading.Thread(target=transport._upload_stream,
                            args=(source, sha, str(target), "test upload", mode))
    done.start()
    try:
        assert source.first_sent.wait(60)
        staged = _landed(remote_dir)  # the first bytes are in the file
        wanted = mode if mode is not None else existing
        assert stat.S_IMODE(staged.stat().st_mode) == wanted
    finally:
        source.release.set()
        done.join(60)
    assert target.read_bytes() == first + rest
    assert stat.S_IMODE(target.stat().st_mode) == (mode if mode is not None else existing)


def test_a_file_step_reads_mode_with_the_sha256_and_rereads_after_a_copy(sshd_host, connect,
                                                                          remote_dir):
    """One command reads sha256 and attributes of an unchanged file; after a copy the
    attributes are read again (the copy may have changed them), never taken from before."""
    from provisioning.actions import RecordingActionHandler
    from provisioning.machine.unix import UnixMachine

    path = remote_dir / "motd"
    path.write_bytes(b"old\n")
    os.chmod(path, 0o600)
    handler = RecordingActionHandler()
    machine = UnixMachine("m", connect(sshd_host), action_handler=handler)
    commands: list[str] = []
    original = machine.transport.execute

    def counting(command, **kwargs):
        commands.append(command)
        return original(command, **kwargs)
    machine.transport.execute = counting  # type: ignore[method-assign]
    assert machine.write_file(str(path), "new\n", mode="0644") is True
    assert path.read_bytes() == b"new\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [e.description.split(" ")[0] for e in handler.actions()] == ["update", "change"]
    commands.clear()
    assert machine.write_file(str(path), "new\n", mode="0644") is False
    assert len(commands) == 1, commands  # sha256 and mode in one command
    os.chmod(path, 0o600)
    assert machine.write_file(str(path), "new\n", mode="0644") is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    machine.disconnect()
