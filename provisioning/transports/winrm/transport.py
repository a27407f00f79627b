"""WinRMTransport: commands and files over WS-Management, for Windows machines.

Files travel as base64 lines on the command's stdin (upload) or stdout (download), hashed with
SHA-256 on both sides, written under a temporary name and moved into place on the remote side.
Directories travel as one zip. Connecting and commands: ``WinRMConnection`` (connection.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from typing import IO, Any, Iterator

from provisioning.errors import CommandTimeout, TransferError
from provisioning.keys import random_hex
from provisioning.transports import powershell as ps
from provisioning.transports.base import check_sha256, sha256_file
from provisioning.transports.winrm.connection import LineSink, WinRMConnection

__all__ = ["WinRMTransport"]


class WinRMTransport(WinRMConnection):
    """A WinRM connection to one Windows machine, with file transfer. Thread-safe: commands
    run one at a time through the one shell. ``sudo`` and ``pty`` have no meaning over WinRM and
    are ignored: a command runs with the token of the login user (use an administrator account)."""

    # -- files -------------------------------------------------------------------------------
    def remote_sha256(self, path: str) -> str | None:
        result = self.run_powershell(f"Get-ProvisioningSha256 -Path {ps.ps_quote(path)}",
                                     functions=("Get-ProvisioningSha256",), timeout=self.transfer_timeout)
        words = result.stdout.split()
        if result.ok and len(words) == 2 and words[0] == "sha256":
            return words[1].lower()
        if result.ok and words == ["missing"]:
            return None
        raise TransferError(f"cannot hash {path} on {self.host}: "
                            f"{(result.stderr or result.stdout).strip()[:300]}",
                            host=self.host, machine=self.machine)

    def _upload(self, source: IO[bytes], size: int, sha256: str, remote_path: str, *,
                expand: bool = False, what: str) -> None:
        def lines() -> Iterator[bytes]:
            for block in iter(lambda: source.read(self.chunk_size), b""):
                yield base64.b64encode(block) + b"\r\n"

        call = (f"$input | Receive-ProvisioningFile -Path {ps.ps_quote(remote_path)} "
                f"-Sha256 {ps.ps_quote(sha256)}" + (" -Expand" if expand else ""))
        stdin = lines() if size else iter([b""])
        try:
            result = self.run_powershell(call, functions=("Receive-ProvisioningFile",),
                                         stdin=stdin, timeout=self.transfer_timeout)
        except CommandTimeout as exc:
            raise TransferError(f"{what}: timed out after {self.transfer_timeout:g} s; raise "
                                "transfer_timeout", host=self.host, machine=self.machine) from exc
        words = result.stdout.split()
        seen = words[1] if result.ok and len(words) >= 2 and words[0] == "sha256" else None
        if seen is None:
            raise TransferError(f"{what}: failed on {self.host} (exit {result.exit_status}): "
                                f"{(result.stderr or result.stdout).strip()[:300]}",
                                host=self.host, machine=self.machine)
        check_sha256(sha256, seen, what=what, host=self.host)

    def write_file(self, path: str, content: bytes, *, mode: int | None = None) -> None:
        """Write ``content`` atomically. ``mode`` is ignored here (Windows has no mode bits;
        ``WindowsMachine.set_attributes`` maps it to the read-only flag)."""
        self._upload(io.BytesIO(content), len(content), hashlib.sha256(content).hexdigest(), path,
                     what=f"write {path}")

    def upload_file(self, local_path: str, remote_path: str) -> None:
        if os.path.isdir(local_path):
            self.upload_directory(local_path, remote_path)
            return
        what = f"upload {local_path} -> {remote_path}"
        try:
            size = os.path.getsize(local_path)
            digest = sha256_file(local_path)
            with open(local_path, "rb") as source:
                self._upload(source, size, digest, remote_path, what=what)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc

    def upload_directory(self, local_dir: str, remote_dir: str) -> None:
        """Replace ``remote_dir`` with a copy of ``local_dir`` (one zip, extracted beside the
        target, then moved into its place)."""
        what = f"upload directory {local_dir} -> {remote_dir}"
        with tempfile.TemporaryFile() as archive:
            try:
                _zip_directory(local_dir, archive)
            except OSError as exc:
                raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc
            size = archive.tell()
            archive.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: archive.read(1 << 20), b""):
                digest.update(block)
            archive.seek(0)
            self._upload(archive, size, digest.hexdigest(), remote_dir, expand=True, what=what)

    def _download(self, remote_path: str, sink: IO[bytes], what: str) -> str | None:
        """Stream ``remote_path`` into ``sink``; returns the kind ("file" or "zip"), or None when
        the path does not exist. Verifies the sha256 of what arrived."""
        state: dict[str, Any] = {"kind": None, "size": None, "sha256": None, "missing": False}
        digest = hashlib.sha256()
        received = 0

        def on_line(line: str) -> None:
            nonlocal received
            if not line:
                return
            if state["kind"] is None and not state["missing"]:
                words = line.split()
                if words == ["missing"]:
                    state["missing"] = True
                elif len(words) == 4 and words[0] == "kind" and words[2] == "size":
                    state["kind"], state["size"] = words[1], int(words[3])
                else:
                    raise TransferError(f"{what}: unexpected first line {line[:80]!r}",
                                        host=self.host, machine=self.machine)
            elif line.startswith("sha256 "):
                state["sha256"] = line.split()[1].lower()
            else:
                block = base64.b64decode(line)
                digest.update(block)
                sink.write(block)
                received += len(block)

        lines = LineSink(on_line)
        call = (f"Send-ProvisioningFile -Path {ps.ps_quote(remote_path)} "
                f"-ChunkSize {self.chunk_size}")
        try:
            result = self.run_powershell(call, functions=("Send-ProvisioningFile",), stream=lines,
                                         timeout=self.transfer_timeout, keep_stdout=False)
        except CommandTimeout as exc:
            raise TransferError(f"{what}: timed out after {self.transfer_timeout:g} s; raise "
                                "transfer_timeout", host=self.host, machine=self.machine) from exc
        lines.close()
        if state["missing"]:
            return None
        if not result.ok or state["kind"] is None or state["sha256"] is None:
            raise TransferError(f"{what}: failed on {self.host} (exit {result.exit_status}): "
                                f"{result.stderr.strip()[:300] or 'incomplete output'}",
                                host=self.host, machine=self.machine)
        if received != state["size"]:
            raise TransferError(f"{what}: received {received} of {state['size']} bytes",
                                host=self.host, machine=self.machine)
        check_sha256(state["sha256"], digest.hexdigest(), what=what, host=self.host)
        return state["kind"]

    def read_file(self, path: str) -> bytes | None:
        buffer = io.BytesIO()
        kind = self._download(path, buffer, f"read {path}")
        if kind is None:
            return None
        if kind != "file":
            raise TransferError(f"read {path}: it is a directory, not a file", host=self.host,
                                machine=self.machine)
        return buffer.getvalue()

    def download_file(self, remote_path: str, local_path: str) -> None:
        """Copy a remote file (or directory) here, atomically."""
        what = f"download {remote_path} -> {local_path}"
        target = os.path.abspath(local_path)
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=parent, prefix=".provisioning-", delete=False)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc
        try:
            with handle:
                kind = self._download(remote_path, handle, what)
            if kind is None:
                raise TransferError(f"{what}: {remote_path} does not exist on {self.host}",
                                    host=self.host, machine=self.machine)
            if kind == "zip":
                _replace_directory_from_zip(handle.name, target)
            else:
                os.replace(handle.name, target)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host, machine=self.machine) from exc
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)


def _zip_directory(local_dir: str, archive: IO[bytes]) -> None:
    """Zip a directory with stable order and timestamps (the same tree gives the same bytes)."""
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"not a directory: {local_dir}")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(local_dir):
            dirs.sort()
            rel_root = os.path.relpath(root, local_dir)
            if rel_root != "." and not files and not dirs:
                info = zipfile.ZipInfo(rel_root.replace(os.sep, "/") + "/", (1980, 1, 1, 0, 0, 0))
                zf.writestr(info, b"")
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
                info = zipfile.ZipInfo(rel, (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as source, zf.open(info, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 20)


def _replace_directory_from_zip(archive: str, target: str) -> None:
    """Extract into a sibling temporary directory, then swap it into ``target``'s place."""
    parent = os.path.dirname(target)
    staging = tempfile.mkdtemp(dir=parent, prefix=".provisioning-")
    old = None
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)  # zipfile drops absolute paths and ".." components
        if os.path.exists(target):
            old = f"{target}.provisioning-old-{random_hex()}"
            os.replace(target, old)
        os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            elif os.path.exists(old):
                os.unlink(old)
