"""Machine processes: boot detached in an own cgroup, liveness, orderly stop, kill.

A machine is one ``systemd-nspawn -b`` process, started through ``setsid`` so it outlives the
command that started it, moved first into its own cgroup (with ``--keep-unit`` all machines
would otherwise share one), with the overlay root mounted in a private mount namespace (the
mount vanishes by itself when the machine ends). Its PID and kernel start time are recorded:
a PID only counts as the machine while its start time matches.

Liveness is read from ``/proc/PID/stat``, never ``kill -0``: PID 1 on these hosts reaps orphans
slowly, and a zombie is a dead machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Sequence

from provisioning.drivers.nspawn_host.host import PROVIDER, require_binary
from provisioning.errors import ProviderError
from provisioning.inputs.records import record

__all__ = ["Booted", "boot", "alive", "start_time", "stop", "kill_all", "cgroup_dirs",
           "remove_cgroups", "cgroup_pids", "console_tail"]

CGROUP_HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")

#: runs detached as the machine: joins its cgroups, then mounts the overlay in a private mount
#: namespace and execs systemd-nspawn, keeping one PID throughout
_LAUNCH = r"""
cg=$1; opts=$2; merged=$3; shift 3
for f in $cg; do echo $$ > "$f" || exit 71; done
exec unshare --mount --propagation private sh -c \
  'mount -t overlay overlay -o "$1" "$2" || exit 70; shift 2; exec "$@"' mount "$opts" "$merged" "$@"
"""
_DETACH = 'setsid sh -c "$PROV_LAUNCH" launch "$@" </dev/null >>"$PROV_LOG" 2>&1 & echo $!'


@record(frozen=True)
class Booted:
    pid: int
    start_time: int | None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int | None, started: int | None = None) -> bool:
    """The process exists, is not a zombie, and (when known) started when we recorded."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X", "x"):
        return False
    return started is None or (len(fields) > 19 and int(fields[19]) == started)


def cgroup_dirs(name: str) -> list[str]:
    """This machine's cgroup in every hierarchy that takes processes here."""
    return [os.path.join(root, name) for root in CGROUP_HIERARCHIES
            if os.path.exists(os.path.join(root, "cgroup.procs"))]


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        for directory, _, files in os.walk(top):
            if "cgroup.procs" not in files:
                continue
            try:
                with open(os.path.join(directory, "cgroup.procs"), encoding="ascii") as handle:
                    pids.update(int(line) for line in handle if line.strip())
            except OSError:
                continue
    return pids


def remove_cgroups(name: str) -> None:
    """rmdir the machine's cgroups bottom-up (they must be empty), and empty parents we made."""
    for top in cgroup_dirs(name):
        if not os.path.isdir(top):
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for _ in range(50):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the kernel frees an emptied cgroup a moment later
        parent = os.path.dirname(top)
        try:
            os.rmdir(parent)  # "provisioning/", when no other machine uses it
        except OSError:
            pass


def console_tail(log: str, lines: int = 15) -> str:
    try:
        with open(log, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:]).strip()
    except OSError:
        return ""


def boot(*, lower: str, upper: str, work: str, merged: str, netns_path: str, hostname: str,
         cgroup: str, log: str, machine: str | None = None,
         binds: Sequence[tuple[str, str]] = ()) -> Booted:
    """Start the machine detached; returns its PID at once (it boots in the background).
    ``binds``: (host directory, path in the machine) pairs, bind-mounted read-write."""
    nspawn = require_binary("systemd-nspawn")
    files = []
    for directory in cgroup_dirs(cgroup):
        os.makedirs(directory, exist_ok=True)
        files.append(os.path.join(directory, "cgroup.procs"))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    argv = [nspawn, "-q", "-D", merged, "-M", hostname, "--register=no", "--keep-unit",
            "--console=passive", f"--network-namespace-path={netns_path}",
            *(f"--bind={_escape(source)}:{_escape(target)}" for source, target in binds), "-b"]
    env = dict(os.environ, PROV_LAUNCH=_LAUNCH, PROV_LOG=log, SYSTEMD_LOG_COLOR="0")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"--- boot at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    done = subprocess.run(["sh", "-c", _DETACH, "detach", " ".join(files), options, merged, *argv],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, check=False)
    try:
        pid = int(done.stdout.strip())
    except ValueError as exc:
        raise ProviderError(f"could not start systemd-nspawn: {done.stderr.strip()}",
                            provider=PROVIDER, machine=machine) from exc
    return Booted(pid, start_time(pid))


def _escape(path: str) -> str:
    """systemd-nspawn separates --bind parts with ':'; a ':' inside a path is written '\\:'."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def stop(pid: int | None, started: int | None, cgroup: str, *, timeout: float) -> bool:
    """Power off cleanly (SIGTERM makes systemd-nspawn shut the machine down); after ``timeout``
    kill everything left. Returns True when the clean shutdown finished in time."""
    clean = True
    if alive(pid, started):
        try:
            os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while alive(pid, started) and time.monotonic() < deadline:
            time.sleep(0.02)
        clean = not alive(pid, started)
    kill_all(pid, started, cgroup)
    return clean


def kill_all(pid: int | None, started: int | None, cgroup: str, *, timeout: float = 15.0) -> None:
    """SIGKILL the machine's process and everything in its cgroups; wait until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        victims = cgroup_pids(cgroup)
        if alive(pid, started):
            victims.add(pid)  # type: ignore[arg-type]
        victims = {p for p in victims if alive(p)}
        if not victims:
            return
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise ProviderError(f"processes {sorted(victims)} of cgroup {cgroup} survived "
                                f"SIGKILL for {timeout:g} s (stuck in the kernel?)",
                                provider=PROVIDER)
        time.sleep(0.02)
