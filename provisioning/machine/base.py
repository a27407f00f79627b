"""Machine: a ready, connectable machine. Runs commands and moves files through its transport.

Every method that changes the machine goes through the action handler, so under why-run it
reports what it would do ("would update /etc/motd (sha256 differs)") and changes nothing.
Reads (``read_file``, ``file_exists``, ``get_attributes``...) always run: a plan needs them.
"""

from __future__ import annotations

import abc
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from provisioning.actions import ActionHandler
from provisioning.errors import CommandFailed, CommandResult
from provisioning.transports.base import StreamCallback, Transport, sha256_file
from provisioning.transports.wait import wait_until_connectable

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.spec import MachineSpec

__all__ = ["Machine", "FileAttributes", "Convergence", "normalize_mode"]


class Convergence(Protocol):
    """What a machine needs of its convergence strategy (``provisioning.convergence``'s
    ``ConvergenceStrategy``, a layer above, implements it)."""

    def setup(self, machine: "Machine") -> None: ...

    def converge(self, machine: "Machine") -> bool: ...

    def cleanup(self, machine: "Machine") -> None: ...

#: attributes a machine can report and set on a path:
#: {"mode": "0644", "owner": "root", "group": "root"} (None where unknown; Windows adds
#: "read_only": bool)
FileAttributes = dict[str, Any]


class Machine(abc.ABC):
    """A machine reached through one transport."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        action_handler: ActionHandler | None = None,
        spec: "MachineSpec | None" = None,
        options: Mapping[str, Any] | None = None,
        convergence: Convergence | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.action_handler: ActionHandler = (action_handler or ActionHandler()).for_machine(name)
        self.spec = spec
        self.options = dict(options or {})
        self.convergence = convergence

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} via {self.transport.host}>"

    @property
    def address(self) -> str | None:
        """The address other machines and healthchecks use, when the driver knows one."""
        if self.spec is not None:
            return self.spec.reference.get("address")
        return None

    # -- commands --------------------------------------------------------------------------
    def execute(self, command: str, *, description: str | None = None,
                **options: Any) -> CommandResult | None:
        """Run a command as a change: ``execute_always`` (same ``options``) unless why-run, where
        it is only planned and None comes back. Raises ``CommandFailed`` on a non-zero exit
        unless ``check=False``."""
        result: CommandResult | None = self.action_handler.perform_action(
            description or f"run {command!r}", lambda: self.execute_always(command, **options))
        return result

    def execute_always(
        self,
        command: str,
        *,
        check: bool = True,
        timeout: float | None = None,
        stream: StreamCallback | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        input: bytes | str | None = None,
        pty: bool = False,
    ) -> CommandResult:
        """Run a command even under why-run (for reads: ``test -f``, ``uname``)."""
        result = self.transport.execute(command, timeout=timeout, stream=stream, env=env,
                                        sudo=sudo, input=input, pty=pty)
        if check and not result.ok:
            raise CommandFailed(result, machine=self.name)
        return result

    def execute_many(
        self,
        commands: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        description: str | None = None,
    ) -> list[CommandResult] | None:
        """Run a sequence of commands as one change, in order, each with its own exit status,
        output and ``timeout``; over SSH they share one persistent shell (one round trip for
        all, instead of a channel and a login shell each). With ``check`` the sequence stops
        at the first failure and raises ``CommandFailed`` for it. None under why-run."""
        commands = list(commands)

        def run() -> list[CommandResult]:
            results = self.transport.execute_many(commands, timeout=timeout, env=env, sudo=sudo,
                                                  stop_on_error=check)
            if check and results and not results[-1].ok:
                raise CommandFailed(results[-1], machine=self.name)
            return results

        return self.action_handler.perform_action(
            description or f"run {len(commands)} commands ({commands[0]!r}"
                           f"{' ...' if len(commands) > 1 else ''})" if commands else "run nothing",
            run)

    # -- files -----------------------------------------------------------------------------
    def read_file(self, path: str) -> bytes | None:
        return self.transport.read_file(path)

    def remote_sha256(self, path: str) -> str | None:
        return self.transport.remote_sha256(path)

    def _current_sha256(self, path: str, *, attributes: bool) -> str | None:
        """The sha256 a file step compares against. ``attributes``: the step compares the
        path's mode/owner/group next, so a machine may read them in the same round trip (and
        hand them to ``get_attributes``); by default it does not."""
        return self.remote_sha256(path)

    def _forget_attributes(self, path: str) -> None:
        """Drop attributes read ahead by ``_current_sha256`` (the file was just rewritten)."""

    def shown_path(self, path: str) -> str:
        """How this machine's paths are written in action descriptions and logs."""
        return shown_path(path)

    def files_different(self, path: str, *, local_path: str | None = None,
                        content: bytes | None = None) -> bool:
        """True when the remote file is missing or its sha256 differs from the local one."""
        import hashlib  # OpenSSL's digests load on first use, not at start-up

        if local_path is not None:
            wanted = sha256_file(local_path)
        elif content is not None:
            wanted = hashlib.sha256(content).hexdigest()
        else:
            raise ValueError("files_different needs local_path or content")
        return self.remote_sha256(path) != wanted

    def write_file(self, path: str, content: bytes | str, *, mode: str | int | None = None,
                   owner: str | None = None, group: str | None = None) -> bool:
        """Write ``content`` unless the file already holds it; then apply attributes.
        Returns True when something changed (or would change under why-run)."""
        import hashlib  # OpenSSL's digests load on first use, not at start-up

        data = content.encode() if isinstance(content, str) else content
        return self._put(path, hashlib.sha256(data).hexdigest(), "create", "",
                         lambda: self.transport.write_file(path, data), {},
                         mode=mode, owner=owner, group=group)

    def upload_file(self, local_path: str, path: str, *, mode: str | int | None = None,
                    owner: str | None = None, group: str | None = None) -> bool:
        """Upload a local file unless the remote copy has the same sha256."""
        size = os.path.getsize(local_path)
        return self._put(path, sha256_file(local_path), "upload",
                         f" from {local_path} ({size} bytes)",
                         lambda: self.transport.upload_file(local_path, path), {"bytes": size},
                         mode=mode, owner=owner, group=group)

    def _put(self, path: str, wanted: str, verb: str, detail: str, copy: Callable[[], object],
             data: dict[str, Any], *, mode: str | int | None, owner: str | None, group: str | None) -> bool:
        """The one way a file lands: copy unless the sha256 matches, then fix attributes."""
        current = self._current_sha256(path, attributes=not (mode is None and owner is None
                                                             and group is None))
        changed = current != wanted
        if current is None:
            return self._create(f"{verb} {self.shown_path(path)}{detail}", copy, path, mode=mode, owner=owner,
                                group=group, data={"path": path, "sha256": wanted, **data})
        if changed:
            why, reason = (verb, "") if current is None else ("update", " (sha256 differs)")
            self.action_handler.perform_action(f"{why} {self.shown_path(path)}{detail}{reason}", copy,
                                               data={"path": path, "sha256": wanted, **data})
            if not self.action_handler.why_run:
                self._forget_attributes(path)  # the copy may have changed them
        # under why-run a file that does not exist yet has no attributes to compare
        exists = not (current is None and self.action_handler.why_run)
        return self.set_attributes(path, mode=mode, owner=owner, group=group,
                                   _exists=exists) or changed

    def _create(self, description: str, make: Callable[[], object], path: str, *,
                mode: str | int | None, owner: str | None, group: str | None,
                data: dict[str, Any] | None = None) -> bool:
        """A new file or directory: one action that makes it with its attributes, worded the
        same under why-run and for real (so a plan lists exactly what apply then does)."""
        attrs = ", ".join(f"{k} {v}" for k, v in (("mode", mode), ("owner", owner),
                                                    ("group", group)) if v is not None)
        handler = self.action_handler

        def create() -> None:
            make()
            if attrs:
                self.action_handler = ActionHandler()  # the attributes belong to this action
                try:
                    self.set_attributes(path, mode=mode, owner=owner, group=group)
                finally:
                    self.action_handler = handler
        handler.perform_action(f"{description} ({attrs})" if attrs else description, create,
                               data=data or {})
        return True

    def download_file(self, path: str, local_path: str) -> bool:
        """Download unless the local copy already has the remote sha256. Changes only this host,
        so it runs under why-run too."""
        if os.path.exists(local_path) and self.remote_sha256(path) == sha256_file(local_path):
            return False
        self.transport.download_file(path, local_path)
        return True

    @abc.abstractmethod
    def create_dir(self, path: str, *, mode: str | int | None = None, owner: str | None = None,
                   group: str | None = None) -> bool:
        """Create a directory (and parents) unless it exists; returns True on a change."""

    @abc.abstractmethod
    def delete_file(self, path: str) -> bool:
        """Remove a file if present; returns True on a change."""

    @abc.abstractmethod
    def is_directory(self, path: str) -> bool: ...

    @abc.abstractmethod
    def file_exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def get_attributes(self, path: str) -> FileAttributes | None:
        """``{"mode", "owner", "group"}`` of a path, or None when it does not exist."""

    @abc.abstractmethod
    def set_attributes(self, path: str, *, mode: str | int | None = None, owner: str | None = None,
                       group: str | None = None, _exists: bool = True) -> bool:
        """Apply the attributes that differ; returns True on a change."""

    @abc.abstractmethod
    def detect_os(self) -> tuple[str, str, str]:
        """(platform, version, architecture), e.g. ("debian", "12", "x86_64")."""

    def facts(self) -> dict[str, str]:
        """What the machine is, for templates and outputs: ``os``, ``version``, ``arch``,
        ``hostname``. Subclasses answer in one round trip where they can (a fleet asks each
        of its machines once)."""
        family, version, arch = self.detect_os()
        hostname = self.execute_always("hostname", check=False).stdout.strip()
        return {"os": family, "version": version, "arch": arch, "hostname": hostname}

    def make_url_available_to_remote(self, local_url: str) -> str:
        """A URL on this host, reachable from the machine (through the transport's forwarding)."""
        return self.transport.forward_remote(local_url)

    # -- convergence -----------------------------------------------------------------------
    def setup_convergence(self) -> None:
        if self.convergence is not None:
            self.convergence.setup(self)

    def converge(self) -> bool:
        """Run the machine's convergence strategy; True when something changed."""
        if self.convergence is None:
            return False
        return self.convergence.converge(self)

    def cleanup_convergence(self) -> None:
        if self.convergence is not None:
            self.convergence.cleanup(self)

    def disconnect(self) -> None:
        self.transport.disconnect()

    def wait_until_connectable(self, timeout: float, action_handler: ActionHandler) -> None:
        """Wait until the transport accepts a connection (``timeout`` seconds at most); on any
        failure or interruption disconnect first, so no half-open session outlives it."""
        try:
            wait_until_connectable(self.transport, timeout=timeout,
                                   action_handler=action_handler, what=f"machine {self.name}")
        except BaseException:
            self.disconnect()
            raise

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def shown_path(path: str, *, backslash_is_separator: bool = False) -> str:
    """A path as written in a log line: quoted and escaped when it holds a control character
    (a newline would split the line) or a backslash, as is otherwise. On Windows the backslash
    is the path separator, not an odd character, so ``backslash_is_separator`` leaves it be."""
    odd = "\x7f" if backslash_is_separator else "\\\x7f"
    if any(ord(c) < 32 or c in odd for c in path):
        import json

        return json.dumps(path, ensure_ascii=False)
    return path


def normalize_mode(mode: str | int | None) -> str | None:
    """'644', 0o644, '0644' -> '0644'; raises ValueError on anything else."""
    if mode is None:
        return None
    if isinstance(mode, int):
        value = mode
    else:
        text = str(mode).strip()
        if not text or any(c not in "01234567" for c in text) or len(text) > 5:
            raise ValueError(f"mode must be octal digits like '0644', got {mode!r}")
        value = int(text, 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(f"mode out of range: {mode!r}")
    return f"{value:04o}"
