"""Snapshots of an nspawn machine: copies of its overlay's upper layer (everything the machine
changed over its image), kept in ``DIR/machines/ID/snapshots/NAME`` so that destroying the
machine removes them too. Copies use reflinks where the file system has them (``cp
--reflink=auto``), and keep whiteouts, xattrs, owners and modes (``cp -a``). A running machine
is paused (SIGSTOP to every process in its cgroup) while its files are copied, so the snapshot is
one moment's state; a restore needs it stopped (the driver stops and boots it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from typing import Iterator

from provisioning.driver.local_features import Snapshot
from provisioning.drivers.nspawn_host import proc
from provisioning.drivers.nspawn_host.host import run

__all__ = ["snapshots_dir", "save", "restore", "list_snapshots", "delete", "paused"]


def snapshots_dir(machine_dir: str) -> str:
    return os.path.join(machine_dir, "snapshots")


def _copy(source: str, target: str) -> None:
    run(["cp", "-a", "--reflink=auto", "--", source, target], timeout=1800,
        what="copying a machine's files")


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


@contextlib.contextmanager
def paused(cgroup: str) -> Iterator[None]:
    """Every process of the machine stopped (SIGSTOP, not catchable) until the block ends."""
    stopped: set[int] = set()
    try:
        while True:  # until no new process appears (a fork between listing and stopping)
            fresh = {p for p in proc.cgroup_pids(cgroup) if proc.alive(p)} - stopped
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            stopped |= fresh
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def save(machine_dir: str, name: str, cgroup: str | None) -> Snapshot:
    """Copy the upper layer into snapshots/NAME (replacing one of that name)."""
    home = snapshots_dir(machine_dir)
    os.makedirs(home, mode=0o700, exist_ok=True)
    staging = os.path.join(home, f".{name}.saving-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    with paused(cgroup) if cgroup else contextlib.nullcontext():
        _copy(os.path.join(machine_dir, "upper"), os.path.join(staging, "upper"))
    snapshot = Snapshot(name, time.time(), _size(os.path.join(staging, "upper")))
    with open(os.path.join(staging, "snapshot.json"), "w", encoding="utf-8") as handle:
        json.dump(snapshot.to_dict(), handle)
    final = os.path.join(home, name)
    if os.path.exists(final):
        retired = os.path.join(home, f".{name}.old-{os.getpid()}")
        os.rename(final, retired)
        os.rename(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, final)
    return snapshot


def list_snapshots(machine_dir: str) -> list[Snapshot]:
    home = snapshots_dir(machine_dir)
    found = []
    try:
        entries = os.listdir(home)
    except OSError:
        return []
    for entry in entries:
        try:
            with open(os.path.join(home, entry, "snapshot.json"), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            continue  # a save that never finished
        found.append(Snapshot(data["name"], float(data["created_at"]), data.get("size")))
    return sorted(found, key=lambda s: (s.created_at, s.name))


def restore(machine_dir: str, name: str) -> None:
    """Replace the (stopped) machine's upper layer by a copy of snapshot NAME."""
    upper = os.path.join(machine_dir, "upper")
    staging = f"{upper}.restoring-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _copy(os.path.join(snapshots_dir(machine_dir), name, "upper"), staging)
    retired = f"{upper}.old-{os.getpid()}"
    os.rename(upper, retired)
    os.rename(staging, upper)
    shutil.rmtree(retired, ignore_errors=True)
    work = os.path.join(machine_dir, "work")
    shutil.rmtree(work, ignore_errors=True)  # overlayfs wants its work dir empty on mount
    os.makedirs(work, exist_ok=True)


def delete(machine_dir: str, name: str) -> None:
    path = os.path.join(snapshots_dir(machine_dir), name)
    retired = os.path.join(snapshots_dir(machine_dir), f".{name}.deleting-{os.getpid()}")
    os.rename(path, retired)
    shutil.rmtree(retired, ignore_errors=True)
