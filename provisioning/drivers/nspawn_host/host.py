"""Host commands and checks: one place turns a failed host command into ``ProviderError``.

Preflight runs once per process and warehouse: root, ``systemd-nspawn``, ``ip``, ``unshare``
and a real overlay mount (some kernels and container runtimes refuse overlayfs). Each failure
names the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from typing import Sequence

from provisioning.errors import ProviderError

__all__ = ["run", "require_root", "require_binary", "check_overlay", "preflight",
           "raise_inotify_limit", "PROVIDER"]

PROVIDER = "nspawn"

#: Debian packages that provide each binary the driver runs
PACKAGES = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap",
            "ip": "iproute2", "unshare": "util-linux", "mount": "mount"}

_checked: set[str] = set()
_checked_lock = threading.Lock()


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0,
        machine: str | None = None, what: str | None = None) -> str:
    """Run a host command; a non-zero exit is a ProviderError carrying its stderr."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise _missing(argv[0], machine) from exc
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"{what or argv[0]} took longer than {timeout:g} s: {' '.join(argv)}",
                            provider=PROVIDER, machine=machine) from exc
    if done.returncode != 0:
        stderr = done.stderr.strip()
        raise ProviderError(f"{what or 'host command'} failed (exit {done.returncode}): "
                            f"{' '.join(argv)}: {stderr[-800:]}", provider=PROVIDER,
                            provider_message=stderr, machine=machine)
    return done.stdout


def _missing(binary: str, machine: str | None = None) -> ProviderError:
    package = PACKAGES.get(os.path.basename(binary), os.path.basename(binary))
    return ProviderError(f"{binary} is not installed on this host; install it with: "
                         f"apt-get install {package}", provider=PROVIDER, machine=machine)


def require_root() -> None:
    if os.geteuid() != 0:
        raise ProviderError("the nspawn: driver must run as root (it boots systemd-nspawn "
                            "machines, mounts overlays and creates network namespaces); run it "
                            "with sudo or as root", provider=PROVIDER)


def require_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
        None)
    if path is None:
        raise _missing(name)
    return path


def check_overlay(directory: str) -> None:
    """Mount a tiny overlay in a throwaway mount namespace under ``directory``."""
    os.makedirs(directory, exist_ok=True)
    probe = tempfile.mkdtemp(prefix=".overlay-probe-", dir=directory)
    try:
        for part in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(probe, part))
        options = (f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work")
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay",
             "overlay", "-o", options, f"{probe}/merged"],
            capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise ProviderError(
                f"the kernel refused an overlay mount in {directory} ({done.stderr.strip()}); "
                "the nspawn: driver needs overlayfs: load it with 'modprobe overlay', put the "
                "warehouse on a filesystem that supports it as an upper layer (ext4, xfs; not "
                "overlayfs or NFS), or run privileged if this is a container",
                provider=PROVIDER, provider_message=done.stderr.strip())
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def preflight(warehouse_dir: str) -> None:
    """Everything the driver needs from this host, checked once per process and warehouse."""
    with _checked_lock:
        if warehouse_dir in _checked:
            return
    require_root()
    for binary in ("systemd-nspawn", "ip", "unshare", "mount"):
        require_binary(binary)
    check_overlay(os.path.join(warehouse_dir, "machines"))
    with _checked_lock:
        _checked.add(warehouse_dir)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_LIMITS = {
    # systemd in each machine holds several inotify instances; ~30 machines exhaust 128
    "fs.inotify.max_user_instances": lambda n: 128 + 8 * n,
    "fs.inotify.max_user_watches": lambda n: 8192 + 1024 * n,
    "kernel.keys.maxkeys": lambda n: 200 + 20 * n,
}


def raise_inotify_limit(machines: int) -> list[str]:
    """Raise the kernel limits that many systemd instances exhaust ("Too many open files").

    Returns one message per change (or per limit we could not raise), for the caller to report;
    limits are only ever raised, never lowered."""
    messages = []
    machines = -(-max(machines, 1) // 100) * 100  # in steps of 100: one raise, one report
    for key, want_for in _LIMITS.items():
        path = "/proc/sys/" + key.replace(".", "/")
        current = _read_int(path)
        want = want_for(machines)
        if current is None or current >= want:
            continue
        try:
            with open(path, "w", encoding="ascii") as handle:
                handle.write(str(want))
            messages.append(f"raised {key} from {current} to {want} for {machines} machines")
        except OSError as exc:
            messages.append(f"could not raise {key} from {current} to {want} ({exc.strerror}); "
                            f"systemd in many machines may fail with 'Too many open files': run "
                            f"'sysctl -w {key}={want}' on the host")
    return messages
