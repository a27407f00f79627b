"""Host commands of the ``libvirt:`` driver: one place turns a failed command into ProviderError
naming the Debian package to install when the binary is missing."""

from __future__ import annotations

import os
import subprocess
from typing import Sequence

from provisioning.errors import ProviderError

__all__ = ["run", "PROVIDER", "PACKAGES"]

PROVIDER = "libvirt"

#: Debian packages that provide each binary the driver runs
PACKAGES = {"qemu-img": "qemu-utils", "mkfs.ext4": "e2fsprogs", "qemu-system-x86_64":
            "qemu-system-x86", "unshare": "util-linux", "debootstrap": "debootstrap",
            "libvirtd": "libvirt-daemon-system", "virtlogd": "libvirt-daemon-system"}


def run(argv: Sequence[str], *, timeout: float = 120.0, machine: str | None = None,
        what: str | None = None) -> str:
    """Run a host command; a non-zero exit is a ProviderError carrying its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        package = PACKAGES.get(os.path.basename(argv[0]), os.path.basename(argv[0]))
        raise ProviderError(f"{argv[0]} is not installed on this host; install it with: "
                            f"apt-get install {package}", provider=PROVIDER,
                            machine=machine) from exc
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"{what or argv[0]} took longer than {timeout:g} s: "
                            f"{' '.join(argv)}", provider=PROVIDER, machine=machine) from exc
    if done.returncode != 0:
        stderr = (done.stderr.strip() or done.stdout.strip())
        raise ProviderError(f"{what or 'host command'} failed (exit {done.returncode}): "
                            f"{' '.join(argv)}: {stderr[-800:]}", provider=PROVIDER,
                            provider_message=stderr, machine=machine)
    return done.stdout
