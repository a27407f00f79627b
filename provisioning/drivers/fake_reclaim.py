"""What a killed ``fake:`` run leaves in its warehouse, found and finished on the next run.

Runs it under the warehouse's lock, which every create holds from its first directory to its
journal line, so what it finds is either finished or left by a dead process:

* ``machines/ID`` of a server the journal does not know: made by a create killed before it
  wrote its journal line. Deleted.
* ``machines/.new-PID-ID``: a server's directory being copied from a machine image by process
  PID, renamed into place once the server is recorded. PID gone: renamed into place when the
  journal knows the server, else deleted.
* ``machines/.removing-ID``: a server being destroyed (renamed first, then removed from the
  journal, then deleted). Deleted once the journal no longer knows the server.
* ``*.tmp-PID-...``: a file being replaced by process PID. PID gone: deleted.
"""

from __future__ import annotations

import os
import re
from typing import Container

__all__ = ["reclaim", "leftovers", "staging_dir", "removing_dir"]

_NEW = re.compile(r"^\.new-(\d+)-(srv-[0-9a-f]+)$")
_REMOVING = re.compile(r"^\.removing-(srv-[0-9a-f]+)$")
_SERVER = re.compile(r"^srv-[0-9a-f]+$")
_TMP = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")


def staging_dir(machines_dir: str, server_id: str) -> str:
    return os.path.join(machines_dir, f".new-{os.getpid()}-{server_id}")


def removing_dir(machines_dir: str, server_id: str) -> str:
    return os.path.join(machines_dir, f".removing-{server_id}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listing(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def _remove_tree(path: str) -> None:
    import shutil  # with its archive modules: only when something is left to remove

    shutil.rmtree(path, ignore_errors=True)


def reclaim(directory: str, servers_dir: str, servers: Container[str]) -> list[str]:
    """Finish or remove what dead runs left in the warehouse at ``directory`` (``servers``:
    the ids the journal knows; hold the warehouse's lock); returns what was done (for tests
    and progress)."""
    done: list[str] = []
    machines_dir = os.path.join(directory, "machines")
    for entry in _listing(machines_dir):
        path = os.path.join(machines_dir, entry)
        new, removing = _NEW.match(entry), _REMOVING.match(entry)
        if new and not _alive(int(new.group(1))):
            server_id = new.group(2)
            if server_id in servers:
                os.rename(path, os.path.join(machines_dir, server_id))
                done.append(f"finished creating {server_id}")
            else:
                _remove_tree(path)
                done.append(f"removed half-made {server_id}")
        elif removing and removing.group(1) not in servers:
            _remove_tree(path)
            done.append(f"removed half-destroyed {removing.group(1)}")
        elif _SERVER.match(entry) and entry not in servers:
            _remove_tree(path)
            done.append(f"removed unrecorded {entry}")
    for folder in (directory, servers_dir):
        for entry in _listing(folder):
            match = _TMP.search(entry)
            if match and not _alive(int(match.group(1))):
                try:
                    os.unlink(os.path.join(folder, entry))
                    done.append(f"removed {entry}")
                except (FileNotFoundError, IsADirectoryError):
                    pass
    return done


def leftovers(directory: str, servers_dir: str, servers: Container[str]) -> list[str]:
    """Everything in the warehouse that belongs to no server (the conformance suite asks)."""
    machines_dir = os.path.join(directory, "machines")
    found = [os.path.join(machines_dir, e) for e in _listing(machines_dir) if e not in servers]
    for folder in (directory, servers_dir):
        found += [os.path.join(folder, e) for e in _listing(folder) if _TMP.search(e)]
    return found
