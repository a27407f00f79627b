"""UnixMachine: the Machine contract in POSIX sh (Linux, BSD), over any transport."""

from __future__ import annotations

import shlex

from provisioning.machine.base import FileAttributes, Machine, normalize_mode

__all__ = ["UnixMachine"]

q = shlex.quote


class UnixMachine(Machine):
    """Machine methods as sh commands. ``sudo`` (an option, or a non-root login) prefixes
    every command that changes files with ``sudo -n``."""

    @property
    def use_sudo(self) -> bool:
        return bool(self.options.get("sudo", False))

    def _path(self, path: str) -> str:
        """A path for a shell command: where the transport says it lands, quoted."""
        return q(self.transport.resolve_path(path))

    def _check(self, command: str) -> bool:
        return self.execute_always(command, check=False, sudo=self.use_sudo).ok

    def file_exists(self, path: str) -> bool:
        return self._check(f"test -e {self._path(path)}")

    def is_directory(self, path: str) -> bool:
        return self._check(f"test -d {self._path(path)}")

    def create_dir(self, path: str, *, mode: str | int | None = None, owner: str | None = None,
                   group: str | None = None) -> bool:
        if not self.is_directory(path):
            return self._create(f"create directory {self.shown_path(path)}",
                                lambda: self.execute_always(f"mkdir -p -- {self._path(path)}",
                                                            sudo=self.use_sudo),
                                path, mode=mode, owner=owner, group=group)
        return self.set_attributes(path, mode=mode, owner=owner, group=group)

    def delete_file(self, path: str) -> bool:
        if not self.file_exists(path):
            return False
        self.action_handler.perform_action(
            f"delete {self.shown_path(path)}",
            lambda: self.execute_always(f"rm -f -- {self._path(path)}", sudo=self.use_sudo))
        return True

    def get_attributes(self, path: str) -> FileAttributes | None:
        result = self.execute_always(f"stat -c '%a %U %G' -- {self._path(path)}", check=False,
                                     sudo=self.use_sudo)
        if not result.ok:
            return None
        mode, owner, group = result.stdout.split()
        return {"mode": normalize_mode(mode), "owner": owner, "group": group}

    def set_attributes(self, path: str, *, mode: str | int | None = None, owner: str | None = None,
                       group: str | None = None,
                       _exists: bool = True) -> bool:
        wanted_mode = normalize_mode(mode)
        if wanted_mode is None and owner is None and group is None:
            return False
        current = self.get_attributes(path) if _exists else None
        current = current or {"mode": None, "owner": None, "group": None}
        changed = False
        if wanted_mode is not None and current["mode"] != wanted_mode:
            self.action_handler.perform_action(
                f"change mode of {self.shown_path(path)} from {current['mode'] or '(new)'} to {wanted_mode}",
                lambda: self.execute_always(f"chmod {wanted_mode} -- {self._path(path)}", sudo=self.use_sudo))
            changed = True
        if (owner is not None and current["owner"] != owner) or (
                group is not None and current["group"] != group):
            spec = f"{owner or ''}{':' + group if group else ''}"
            self.action_handler.perform_action(
                f"change owner of {self.shown_path(path)} to {spec}",
                lambda: self.execute_always(f"chown {q(spec)} -- {self._path(path)}", sudo=self.use_sudo))
            changed = True
        return changed

    def detect_os(self) -> tuple[str, str, str]:
        result = self.execute_always(
            "uname -s; uname -m; cat /etc/os-release 2>/dev/null || true", check=False)
        lines = result.stdout.splitlines()
        kernel = lines[0].strip().lower() if lines else "unknown"
        arch = lines[1].strip() if len(lines) > 1 else "unknown"
        fields: dict[str, str] = {}
        for line in lines[2:]:
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        platform = fields.get("ID", kernel)
        version = fields.get("VERSION_ID", "")
        if not version:
            version = self.execute_always("uname -r", check=False).stdout.strip()
        return platform, version, arch
