"""UnixMachine: the Machine contract in POSIX sh (Linux, BSD), over any transport."""

from __future__ import annotations

import functools
import os
import shlex

from provisioning.machine.base import FileAttributes, Machine, normalize_mode

__all__ = ["UnixMachine"]

q = shlex.quote
_OS_RELEASE = "/etc/os-release"


def _facts(uname: list[str], os_release: str) -> dict[str, str]:
    """Facts from ``uname -snrm`` (POSIX order: system, node, release, machine) and the text
    of os-release: ``os`` is its ID (else the kernel's name), ``version`` its VERSION_ID (else
    the kernel's release)."""
    kernel, hostname, release, arch = (uname + ["unknown"] * 4)[:4] if uname else \
        ("unknown", "", "", "unknown")
    fields: dict[str, str] = {}
    for line in os_release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return {"os": fields.get("ID", kernel.lower()), "version": fields.get("VERSION_ID", release),
            "arch": arch, "hostname": hostname}


@functools.lru_cache(maxsize=1)
def _this_host_facts() -> dict[str, str]:
    """This host's facts, as the command in ``UnixMachine.facts`` would print them."""
    info = os.uname()
    try:
        with open(_OS_RELEASE, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        text = ""
    return _facts([info.sysname, info.nodename, info.release, info.machine], text)


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

    def _current_sha256(self, path: str, *, attributes: bool) -> str | None:
        """Over a remote transport, the attributes come with the sha256 in one command (a
        plan or up of many unchanged machines runs half the commands)."""
        if not attributes or self.transport.runs_here or \
                self.transport.sudo != self.use_sudo:
            return super()._current_sha256(path, attributes=attributes)
        target = self._path(path)
        result = self.execute_always(f"stat -c '%a %U %G' -- {target} && sha256sum < {target}",
                                     check=False, sudo=self.use_sudo)
        lines = result.stdout.splitlines()
        if not result.ok or len(lines) < 2 or len(lines[0].split()) != 3 or not lines[1].split():
            return None
        mode, owner, group = lines[0].split()
        self._read_ahead[path] = {"mode": normalize_mode(mode), "owner": owner, "group": group}
        return lines[1].split()[0]

    def _forget_attributes(self, path: str) -> None:
        self._read_ahead.pop(path, None)

    @property
    def _read_ahead(self) -> dict[str, FileAttributes]:
        """Attributes ``_current_sha256`` read with a sha256, until ``get_attributes`` takes them."""
        found: dict[str, FileAttributes] | None = self.__dict__.get("_attributes_read_ahead")
        if found is None:
            found = self.__dict__["_attributes_read_ahead"] = {}
        return found

    def get_attributes(self, path: str) -> FileAttributes | None:
        ahead = self._read_ahead.pop(path, None)
        if ahead is not None:
            return ahead
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
        facts = self.facts()
        return facts["os"], facts["version"], facts["arch"]

    def facts(self) -> dict[str, str]:
        """One command (``uname`` and ``/etc/os-release``); none at all when the transport
        runs commands on this very host (``fake:``, local machines): read here, once."""
        if self.transport.runs_here:
            return dict(_this_host_facts())
        result = self.execute_always(f"uname -snrm; cat {_OS_RELEASE} 2>/dev/null || true",
                                     check=False)
        first, _, rest = result.stdout.partition("\n")
        return _facts(first.split(), rest)
