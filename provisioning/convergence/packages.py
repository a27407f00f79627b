"""Debian packages on a machine: the ``package`` step's checks and changes.

``dpkg-query`` says what is installed (a read: it runs under why-run too); only what differs is
changed, through the machine's action handler: ``apt-get install`` (after ``apt-get update``) for
missing packages, ``apt-get remove`` for unwanted ones. Machines without dpkg get an
``UnsupportedOperation`` naming the step. nspawn machines reach the host's archives through the
driver's package proxy (docs/nspawn.md); other machines use their own apt sources.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable, Sequence

from provisioning.errors import UnsupportedOperation

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.machine.base import Machine

__all__ = ["NAME_RE", "STATES", "installed", "converge_packages", "summary"]

#: a Debian package name (policy 5.6.1), optionally with an architecture qualifier
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
STATES = ("present", "absent")
_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
_APT = "apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"


def installed(machine: "Machine", names: Iterable[str], *, sudo: bool = False,
              key: str = "package") -> set[str]:
    """The packages of ``names`` that dpkg has installed (a read, also under why-run)."""
    names = list(names)
    query = machine.execute_always(
        "command -v dpkg-query >/dev/null || exit 127; "
        "dpkg-query -W -f='${Package}\\t${db:Status-Status}\\n' " + " ".join(names),
        check=False, sudo=sudo)
    if query.exit_status == 127:
        raise UnsupportedOperation(f"{key}: machine {machine.name!r} has no dpkg-query; the "
                                   "package step manages Debian packages with apt (use a command "
                                   "step for other package managers)")
    found = set()
    for line in query.stdout.splitlines():
        package, _, status = line.partition("\t")
        if status.strip() == "installed":
            found.add(package.strip())
    wanted = {name.split(":")[0] for name in names}
    return {name for name in names if name.split(":")[0] in found & wanted}


def summary(names: Sequence[str], state: str) -> str:
    verb = "install" if state == "present" else "remove"
    return f"{verb} package{'s' if len(names) != 1 else ''} {', '.join(names)} (apt-get)"


def converge_packages(machine: "Machine", names: Sequence[str], state: str, *,
                      key: str = "package") -> bool:
    """Install (``present``) or remove (``absent``) what differs; True when it changed."""
    sudo = True  # package changes need root; a root login runs them without sudo
    have = installed(machine, names, sudo=sudo, key=key)
    if state == "present":
        todo = [n for n in names if n not in have]
        command = f"{_APT} update && {_APT} install --no-install-recommends " + " ".join(todo)
    else:
        todo = [n for n in names if n in have]
        command = f"{_APT} remove " + " ".join(todo)
    if not todo:
        machine.action_handler.report_progress(
            f"package{'s' if len(names) != 1 else ''} {', '.join(names)} "
            f"{'installed' if state == 'present' else 'absent'}: nothing to change")
        return False
    machine.execute(command, sudo=sudo, env=_ENV, description=summary(todo, state))
    return True
