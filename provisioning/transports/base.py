"""Transport: how commands and files reach one machine.

A transport owns one connection (opened lazily, reused for every call, thread-safe) and refuses
use after ``disconnect()``. Implementations translate their backend's exceptions into
``provisioning.errors`` at this boundary; nothing above ``transports/`` sees paramiko or pywinrm.
"""

from __future__ import annotations

import abc
import os
import shlex
import threading
from dataclasses import field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from provisioning.errors import CommandResult, TransferError, UnsupportedOperation
from provisioning.inputs.records import record

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.keys import PrivateKey

__all__ = ["Transport", "StreamCallback", "NewHostKey", "HostKeyCallback", "SSHLogin",
           "DEFAULT_COMMAND_TIMEOUT", "sha256_file", "check_sha256"]

#: callback for streamed output: (stream name "stdout" or "stderr", text chunk)
StreamCallback = Callable[[str, str], None]


@record(frozen=True)
class NewHostKey:
    """A machine's identity seen for the first time, reported by a transport to whoever pins it
    (the driver or provisioner records it in the machine's reference and saves it; transports
    never touch state). ``kind``: ``ssh`` (``key`` is an OpenSSH public line) or ``certificate``
    (``key`` is a WinRM listener certificate's SHA-256 fingerprint)."""

    host: str
    port: int
    key: str
    gateway: bool = False
    kind: str = "ssh"


#: what a transport calls with a first-use identity; see ``NewHostKey``
HostKeyCallback = Callable[[NewHostKey], None]


@record(frozen=True)
class SSHLogin:
    """How another SSH client (OpenSSH for ``converge ssh``, ansible, testinfra) logs in to the
    machine this transport reaches: where, as whom, with which key, pinning which host key."""

    host: str
    port: int
    username: str
    private_key: "PrivateKey | None" = field(default=None, repr=False)
    host_key: str | None = None


#: default per-command timeout in seconds; every command has one
DEFAULT_COMMAND_TIMEOUT = 600.0


#: sha256 of local files by (path, size, mtime, ctime, inode, device): uploading one file to many
#: machines (and checking it before each upload) hashes it once per process
_SHA_CACHE: dict[tuple[object, ...], str] = {}
_SHA_LOCKS: dict[tuple[object, ...], threading.Lock] = {}
_SHA_GUARD = threading.Lock()


def _stat_key(path: str | os.PathLike[str]) -> tuple[object, ...]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a local file, read in 1 MiB blocks (remembered while the file is unchanged;
    threads asking for the same file wait for one computation)."""
    import hashlib  # OpenSSL's digests load on first use, not at start-up

    key = _stat_key(path)
    cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    with _SHA_GUARD:
        lock = _SHA_LOCKS.setdefault(key, threading.Lock())
    with lock:
        cached = _SHA_CACHE.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        value = digest.hexdigest()
        if _stat_key(path) == key:  # not remembered if the file changed while it was read
            with _SHA_GUARD:
                if len(_SHA_CACHE) > 4096:
                    _SHA_CACHE.clear()
                    _SHA_LOCKS.clear()
                _SHA_CACHE[key] = value
        return value


class Transport(abc.ABC):
    """A connection to one machine: run commands, move files."""

    #: a human-readable address (``root@10.0.0.5:22``) used in errors and events
    host: str = "?"
    #: seconds one connection attempt may take (``wait_until_connectable`` bounds attempts by it)
    connect_timeout: float = 10.0
    #: commands and file writes go through ``sudo -n`` unless a call says otherwise
    sudo: bool = False

    @property
    def runs_here(self) -> bool:
        """True when commands run on this very host: what the host is (``uname``, os-release)
        can then be read in this process instead of by running commands."""
        return False

    @abc.abstractmethod
    def execute(
        self,
        command: str,
        *,
        timeout: float | None = None,
        stream: StreamCallback | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        input: bytes | str | None = None,
        pty: bool = False,
    ) -> CommandResult:
        """Run ``command`` through the remote shell and return its result (never raises on a
        non-zero exit; raises ``CommandTimeout`` past ``timeout``, ``TransportError`` when the
        machine cannot be reached)."""

    def execute_many(
        self,
        commands: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        stop_on_error: bool = False,
    ) -> list[CommandResult]:
        """Run commands one after another, each with its own result and ``timeout``; with
        ``stop_on_error`` the ones after the first failure are not run (nor returned).
        Transports with a cheaper way override this (SSH: one persistent shell session)."""
        results = []
        for command in commands:
            results.append(self.execute(command, timeout=timeout, env=env, sudo=sudo))
            if stop_on_error and not results[-1].ok:
                break
        return results

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes | None:
        """The file's content, or None when it does not exist."""

    @abc.abstractmethod
    def write_file(self, path: str, content: bytes, *, mode: int | None = None) -> None:
        """Write ``content`` atomically (temporary name, then rename)."""

    @abc.abstractmethod
    def upload_file(self, local_path: str, remote_path: str) -> None:
        """Copy a local file to the machine atomically and verify its sha256 there."""

    @abc.abstractmethod
    def download_file(self, remote_path: str, local_path: str) -> None:
        """Copy a remote file here atomically and verify its sha256."""

    def remote_sha256(self, path: str) -> str | None:
        """sha256 of a remote file, or None when it does not exist. Used to skip unchanged copies."""
        # from stdin: sha256sum escapes a name holding a newline or a backslash ("\\HASH")
        result = self.execute(f"sha256sum < {shlex.quote(path)} 2>/dev/null", timeout=120)
        if not result.ok or not result.stdout.strip():
            return None
        return result.stdout.split()[0]

    @abc.abstractmethod
    def available(self) -> bool:
        """True when the machine answers right now (connects and runs a trivial command)."""

    def connect(self, *, timeout: float | None = None) -> None:
        """Connect and log in now instead of on first use, raising our typed errors
        (``ConnectError`` while not reachable yet). Default: run a trivial command."""
        self.execute("true", timeout=max(1.0, timeout or self.connect_timeout))

    def ssh_login(self) -> SSHLogin | None:
        """How an SSH client logs in to this machine (``converge ssh``, inventories), or None
        when the transport is not SSH. Default: None."""
        return None

    def resolve_path(self, path: str) -> str:
        """Where a path given by the user lands on the machine. Unchanged, except for a machine
        that lives in a directory of this host (``fake:``), which maps every path inside it."""
        return path

    def forward_remote(self, local_url: str) -> str:
        """Make a URL on this host reachable from the machine; returns the URL to use there."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot forward {local_url} to the machine")

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Close the connection. The transport refuses use afterwards."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def check_sha256(expected: str, actual: str | None, *, what: str, host: str) -> None:
    """Raise ``TransferError`` unless both sides saw the same bytes."""
    if actual != expected:
        raise TransferError(
            f"{what}: sha256 differs after transfer (local {expected}, remote {actual}); "
            "the copy was discarded, retry the transfer",
            host=host,
        )
