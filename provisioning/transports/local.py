"""LocalTransport: commands as subprocesses on this host (the fake driver, localhost).

The process and file-copy modules (subprocess, signal, shutil) are imported on first use: a
command such as ``converge status`` builds fake machines but runs nothing on them."""

from __future__ import annotations

import os
import threading
import time
from typing import Mapping

from provisioning.errors import CommandResult, CommandTimeout, TransferError, TransportError
from provisioning.transports.base import DEFAULT_COMMAND_TIMEOUT, Transport, check_sha256, sha256_file
from provisioning.transports.confine import confined_path
from provisioning.transports.forkguard import FORK_GUARD

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    """Runs ``sh -c`` in ``cwd``; relative file paths are relative to ``cwd`` too."""

    @property
    def runs_here(self) -> bool:
        """True unless a subclass runs its commands somewhere else."""
        return type(self).execute is LocalTransport.execute

    def __init__(self, cwd: str | None = None, *, env: Mapping[str, str] | None = None,
                 default_timeout: float = DEFAULT_COMMAND_TIMEOUT, confine: bool = False) -> None:
        """``confine``: ``cwd`` is the machine's whole filesystem; every path (absolute, or
        with ``..``) maps inside it and none can leave it (the ``fake:`` driver)."""
        self.cwd = os.path.abspath(cwd or os.getcwd())
        self.confine = confine
        self.base_env = dict(env or {})
        self.default_timeout = default_timeout
        self.host = f"localhost:{self.cwd}"
        self._closed = False

    def _path(self, path: str) -> str:
        self._check_open()
        return self.resolve_path(path)

    def resolve_path(self, path: str) -> str:
        if not self.confine:
            return os.path.join(self.cwd, path)
        return confined_path(self.cwd, path, host=self.host)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("transport was disconnected; ask the driver for a new machine",
                                 host=self.host)

    def execute(self, command, *, timeout=None, stream=None, env=None, sudo=False, input=None,
                pty=False) -> CommandResult:
        self._check_open()
        timeout = self.default_timeout if timeout is None else timeout
        full_env = dict(os.environ, **self.base_env, **(env or {}))
        argv = ["sh", "-c", command]
        if sudo and os.geteuid() != 0:
            argv = ["sudo", "-n", "--"] + argv
        import signal
        import subprocess

        started = time.monotonic()
        try:
            with FORK_GUARD.starting():  # no child of ours holds a file being written
                proc = subprocess.Popen(argv, cwd=self.cwd, env=full_env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True)
        except OSError as exc:
            raise TransportError(f"cannot start a shell in {self.cwd}: {exc}", host=self.host) from exc
        chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

        def pump(name: str, pipe) -> None:
            for block in iter(lambda: pipe.read1(65536), b""):
                chunks[name].append(block)
                if stream is not None:
                    stream(name, block.decode(errors="replace"))

        readers = [threading.Thread(target=pump, args=(n, p), daemon=True)
                   for n, p in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for reader in readers:
            reader.start()
        try:
            assert proc.stdin is not None  # started with stdin=PIPE
            if input is not None:
                proc.stdin.write(input.encode() if isinstance(input, str) else input)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for reader in readers:
                reader.join(timeout=1)
            raise CommandTimeout(command, timeout, host=self.host,
                                 stdout=b"".join(chunks["stdout"]).decode(errors="replace"),
                                 stderr=b"".join(chunks["stderr"]).decode(errors="replace")) from None
        for reader in readers:
            reader.join()
        return CommandResult(command=command, exit_status=status,
                             stdout=b"".join(chunks["stdout"]).decode(errors="replace"),
                             stderr=b"".join(chunks["stderr"]).decode(errors="replace"),
                             host=self.host, duration=time.monotonic() - started)

    def read_file(self, path):
        try:
            with open(self._path(path), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def remote_sha256(self, path):
        target = self._path(path)
        return sha256_file(target) if os.path.isfile(target) else None

    def write_file(self, path, content, *, mode=None):
        target = self._path(path)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        tmp = f"{target}.provisioning-tmp-{os.getpid()}-{threading.get_ident()}"
        with FORK_GUARD.writing(), open(tmp, "wb") as handle:
            handle.write(content)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)

    def _copy(self, source: str, target: str, what: str) -> None:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        tmp = f"{target}.provisioning-tmp-{os.getpid()}-{threading.get_ident()}"
        import shutil

        try:
            with FORK_GUARD.writing():
                shutil.copyfile(source, tmp)
            check_sha256(sha256_file(source), sha256_file(tmp), what=what, host=self.host)
            os.replace(tmp, target)
        except OSError as exc:
            raise TransferError(f"{what}: {exc}", host=self.host) from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def upload_file(self, local_path, remote_path):
        self._copy(local_path, self._path(remote_path), f"upload {local_path} -> {remote_path}")

    def download_file(self, remote_path, local_path):
        self._copy(self._path(remote_path), os.path.abspath(local_path),
                   f"download {remote_path} -> {local_path}")

    def available(self) -> bool:
        return not self._closed and os.path.isdir(self.cwd)

    def forward_remote(self, local_url: str) -> str:
        return local_url

    def disconnect(self) -> None:
        self._closed = True
