"""WindowsMachine: the Machine contract in PowerShell, over WinRM (or any transport that can
start ``powershell.exe``).

Windows has no mode bits, so attributes are mapped to what NTFS has:

* ``owner`` and ``group`` are the owner and primary group of the file's ACL (``DOMAIN\\name``);
* ``mode``: only the owner-write bit has a Windows meaning; a mode without it (``0444``) sets the
  read-only flag, a mode with it (``0644``) clears the flag; the other bits are ignored and a
  progress event says so; ``get_attributes`` reports ``mode`` as None and ``read_only`` instead.
* ``sudo`` is meaningless: commands run with the login's token.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from provisioning.errors import CommandFailed, CommandResult, ConfigError
from provisioning.machine.base import FileAttributes, Machine, normalize_mode, shown_path
from provisioning.transports import powershell as ps
from provisioning.transports.base import StreamCallback
from provisioning.transports.winrm.connection import WinRMConnection

__all__ = ["WindowsMachine"]

q = ps.ps_quote

_ARCHITECTURES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "x86": "i686",
                  "ia64": "ia64", "arm": "arm"}


class WindowsMachine(Machine):
    """Machine methods as PowerShell scripts."""

    def shown_path(self, path: str) -> str:
        return shown_path(path, backslash_is_separator=True)

    def _ps(self, script: str, functions: tuple[str, ...] = (), *, check: bool = False,
            timeout: float | None = None) -> CommandResult:
        """Run a PowerShell script even under why-run (reads, and the bodies of actions)."""
        if isinstance(self.transport, WinRMConnection):
            result = self.transport.run_powershell(script, functions=functions, timeout=timeout)
        else:  # e.g. OpenSSH on Windows: start powershell.exe ourselves
            argv = ps.powershell_argv(ps.script_with(functions, script))
            result = self.transport.execute(" ".join(argv), timeout=timeout)
        if check and not result.ok:
            raise CommandFailed(result, machine=self.name)
        return result

    def _bool(self, script: str) -> bool:
        result = self._ps(script, check=True)
        answer = result.stdout.strip().splitlines()[-1:] or [""]
        return answer[0].strip().lower() == "true"

    def execute_always(self, command: str, *, check: bool = True, timeout: float | None = None,
                       stream: StreamCallback | None = None, env: Mapping[str, str] | None = None,
                       sudo: bool = False, input: bytes | str | None = None,
                       pty: bool = False) -> CommandResult:
        # sudo and pty have no meaning on Windows; drop them rather than failing generic steps
        return super().execute_always(command, check=check, timeout=timeout, stream=stream,
                                      env=env, sudo=False, input=input, pty=False)

    # -- files -----------------------------------------------------------------------------
    def file_exists(self, path: str) -> bool:
        return self._bool(f"Test-Path -LiteralPath {q(path)}")

    def is_directory(self, path: str) -> bool:
        return self._bool(f"Test-Path -LiteralPath {q(path)} -PathType Container")

    def create_dir(self, path: str, *, mode: str | int | None = None, owner: str | None = None,
                   group: str | None = None) -> bool:
        if not self.is_directory(path):
            return self._create(
                f"create directory {self.shown_path(path)}",
                lambda: self._ps(f"New-Item -ItemType Directory -Force -Path {q(path)} | Out-Null",
                                 check=True),
                path, mode=mode, owner=owner, group=group)
        return self.set_attributes(path, mode=mode, owner=owner, group=group)

    def delete_file(self, path: str) -> bool:
        if not self._bool(f"Test-Path -LiteralPath {q(path)} -PathType Leaf"):
            return False
        self.action_handler.perform_action(
            f"delete {self.shown_path(path)}",
            lambda: self._ps(f"Remove-Item -LiteralPath {q(path)} -Force", check=True))
        return True

    def get_attributes(self, path: str) -> FileAttributes | None:
        """``owner``/``group`` from the ACL, ``read_only``/``hidden`` flags; ``mode`` is None."""
        result = self._ps(f"Get-ProvisioningAttributes -Path {q(path)}",
                          ("Get-ProvisioningAttributes",), check=True)
        text = result.stdout.strip()
        if text == "missing":
            return None
        try:
            data = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise CommandFailed(result, machine=self.name) from exc
        return {"mode": None, "owner": data.get("owner"), "group": data.get("group"),
                "read_only": bool(data.get("read_only")), "hidden": bool(data.get("hidden")),
                "directory": bool(data.get("directory"))}

    def set_attributes(self, path: str, *, mode: str | int | None = None, owner: str | None = None,
                       group: str | None = None,
                       read_only: bool | None = None, _exists: bool = True) -> bool:
        """Apply owner/group (ACL) and the read-only flag (from ``read_only`` or ``mode``)."""
        wanted_mode = normalize_mode(mode)
        if wanted_mode is not None:
            bits = int(wanted_mode, 8)
            from_mode = not bits & 0o200
            if read_only is not None and read_only != from_mode:
                raise ConfigError(f"{path}: mode {wanted_mode} and read_only={read_only} disagree; "
                                  "give one of them", key="mode")
            read_only = from_mode
            self.action_handler.report_progress(
                f"mode {wanted_mode} on {path}: Windows keeps only the owner-write bit (as the "
                f"read-only flag: {'set' if read_only else 'clear'}); the other bits are ignored")
        if read_only is None and owner is None and group is None:
            return False
        current = (self.get_attributes(path) if _exists else None) or {}
        changes: dict[str, str] = {}
        if read_only is not None and current.get("read_only") != read_only:
            changes["ReadOnly"] = "true" if read_only else "false"
        if owner is not None and not _same_account(current.get("owner"), owner):
            changes["Owner"] = owner
        if group is not None and not _same_account(current.get("group"), group):
            changes["Group"] = group
        if not changes:
            return False
        described = ", ".join(
            f"read-only {'on' if value == 'true' else 'off'}" if key == "ReadOnly"
            else f"{key.lower()} {value}" for key, value in changes.items())
        args = " ".join(f"-{key} {q(value)}" for key, value in changes.items())
        self.action_handler.perform_action(
            f"set {described} on {self.shown_path(path)}",
            lambda: self._ps(f"Set-ProvisioningAttributes -Path {q(path)} {args}",
                             ("Set-ProvisioningAttributes",), check=True))
        return True

    def detect_os(self) -> tuple[str, str, str]:
        """("windows", Win32_OperatingSystem.Version such as "10.0.20348", "x86_64")."""
        result = self._ps("Get-ProvisioningOS", ("Get-ProvisioningOS",), check=True)
        try:
            data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise CommandFailed(result, machine=self.name) from exc
        arch = str(data.get("architecture") or "").lower()
        return "windows", str(data.get("version") or ""), _ARCHITECTURES.get(arch, arch or "unknown")


def _same_account(current: str | None, wanted: str) -> bool:
    """``BUILTIN\\Administrators`` matches ``Administrators``; names compare case-insensitively."""
    if current is None:
        return False
    a, b = current.lower(), wanted.lower()
    return a == b or a.rsplit("\\", 1)[-1] == b or b.rsplit("\\", 1)[-1] == a
