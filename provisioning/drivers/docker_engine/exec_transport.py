"""The ``docker`` transport kind: commands through the engine's exec API and files through its
archive API, for machines made from images without sshd (``init: process``).

What it supports, compared with SSH: commands (``sh -c``, environment, input, streaming,
timeouts through the image's ``timeout`` command), file reads, writes, uploads and downloads
(tar archives through the engine: no tool needed in the image for reads and writes; uploads and
downloads are checked with ``sha256sum`` when the image has it). Not supported: ``converge
ssh`` (use ``converge exec``), pseudo-terminals, forwarding a URL to the machine, sudo (commands
run as the container's user, root by default).
"""

from __future__ import annotations

import io
import os
import posixpath
import shlex
import tarfile
import threading
import time
from typing import Any

from provisioning.drivers.docker_engine.client import engine_errors
from provisioning.errors import CommandResult, CommandTimeout, ProviderError, TransferError, TransportError
from provisioning.keys import random_hex
from provisioning.transports.base import DEFAULT_COMMAND_TIMEOUT, Transport, check_sha256, sha256_file

__all__ = ["DockerExecTransport"]


class DockerExecTransport(Transport):
    """One container, reached through the engine (``client``: a docker.DockerClient)."""

    def __init__(self, client: Any, container_id: str, *, machine: str | None = None,
                 command_timeout: float = DEFAULT_COMMAND_TIMEOUT) -> None:
        self.client = client
        self.container_id = container_id
        self.machine = machine
        self.command_timeout = float(command_timeout or DEFAULT_COMMAND_TIMEOUT)
        self.host = f"docker-exec:{container_id[:12]}"
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("transport was disconnected; ask the driver for the machine "
                                 "again", host=self.host, machine=self.machine)

    def _engine(self, doing: str):
        return engine_errors(f"{doing} on {self.host}", machine=self.machine)

    # -- commands ------------------------------------------------------------------------------
    def execute(self, command, *, timeout=None, stream=None, env=None, sudo=False, input=None,
                pty=False) -> CommandResult:
        self._check_open()
        timeout = self.command_timeout if timeout is None else float(timeout)
        script = command
        staged = None
        if input is not None:
            staged = f"/tmp/.provisioning-input-{random_hex()}"
            self._put(staged, input.encode() if isinstance(input, str) else input, 0o600)
            script = f"( {command} ) < {staged}; status=$?; rm -f {staged}; exit $status"
        seconds = max(1, int(timeout + 0.999))
        quoted = shlex.quote(script)
        # the image's timeout command bounds the run where it has one (exec replaces the shell,
        # so the second branch runs only when timeout is missing)
        argv = ["sh", "-c", f"command -v timeout >/dev/null 2>&1 && exec timeout -s KILL "
                            f"{seconds} sh -c {quoted}; exec sh -c {quoted}"]
        started = time.monotonic()
        api = self.client.api
        chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        with self._engine("running a command"):
            exec_id = api.exec_create(self.container_id, argv,
                                      environment=dict(env or {}) or None)["Id"]
            output = api.exec_start(exec_id, stream=True, demux=True)
            for out, err in output:
                for name, block in (("stdout", out), ("stderr", err)):
                    if block:
                        chunks[name].append(block)
                        if stream is not None:
                            stream(name, block.decode(errors="replace"))
            status = api.exec_inspect(exec_id).get("ExitCode")
        stdout = b"".join(chunks["stdout"]).decode(errors="replace")
        stderr = b"".join(chunks["stderr"]).decode(errors="replace")
        elapsed = time.monotonic() - started
        if status == 137 and elapsed >= timeout:
            raise CommandTimeout(command, timeout, host=self.host, stdout=stdout, stderr=stderr)
        return CommandResult(command=command, exit_status=int(status if status is not None else -1),
                             stdout=stdout, stderr=stderr, host=self.host, duration=elapsed)

    # -- files ---------------------------------------------------------------------------------
    def _put(self, path: str, content: bytes, mode: int) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(posixpath.basename(path))
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
        with self._engine(f"writing {path}"):
            if not self.client.api.put_archive(self.container_id, posixpath.dirname(path) or "/",
                                               buffer.getvalue()):
                raise ProviderError(f"the engine refused to write {path}", machine=self.machine)

    def read_file(self, path: str) -> bytes | None:
        import docker.errors

        self._check_open()
        with self._engine(f"reading {path}"):
            try:
                chunks, _ = self.client.api.get_archive(self.container_id, path)
            except docker.errors.NotFound:
                return None
            data = b"".join(chunks)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None and member.isfile() else None
            return handle.read() if handle is not None else None

    def write_file(self, path: str, content: bytes, *, mode: int | None = None) -> None:
        self._check_open()
        tmp = f"{path}.provisioning-tmp-{random_hex(8)}"
        self._put(tmp, content, 0o644 if mode is None else mode)
        done = self.execute(f"mv -f -- {shlex.quote(tmp)} {shlex.quote(path)}", timeout=60)
        if not done.ok:
            raise TransferError(f"writing {path}: {done.stderr.strip()}", host=self.host)

    def upload_file(self, local_path: str, remote_path: str) -> None:
        with open(local_path, "rb") as handle:
            content = handle.read()
        mode = os.stat(local_path).st_mode & 0o777
        self.write_file(remote_path, content, mode=mode)
        check_sha256(sha256_file(local_path), self.remote_sha256(remote_path),
                     what=f"upload {local_path} -> {remote_path}", host=self.host)

    def download_file(self, remote_path: str, local_path: str) -> None:
        content = self.read_file(remote_path)
        if content is None:
            raise TransferError(f"download {remote_path}: no such file", host=self.host)
        target = os.path.abspath(local_path)
        tmp = f"{target}.provisioning-tmp-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "wb") as handle:
            handle.write(content)
        os.replace(tmp, target)

    def available(self) -> bool:
        try:
            return not self._closed and self.execute("true", timeout=10).ok
        except TransportError:
            return False
        except ProviderError:
            return False

    def disconnect(self) -> None:
        self._closed = True

