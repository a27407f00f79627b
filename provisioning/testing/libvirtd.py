"""libvirt daemons for tests: used when one runs, else started here and stopped by PID.

Where no ``libvirtd`` (or ``virtqemud``) runs, ``LibvirtDaemons.start`` creates a private
network namespace and starts ``virtlogd`` and ``libvirtd`` inside it with ``nsenter --net=``
(``ip netns exec`` would remount /sys and hide the cgroup hierarchies libvirtd needs). Whatever
libvirtd sets up for its networks then lands in that namespace, never in the host's; the driver
reaches its machines' forwarded ports there. ``stop`` kills exactly the PIDs it started, waits
for them, and deletes the namespace. PID 1 is not assumed to be systemd.

pytest fixture: ``libvirt_daemons`` (one per session).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from typing import Iterator

import pytest

__all__ = ["LibvirtDaemons", "libvirt_daemons", "why_no_libvirt"]

DAEMONS = ("virtlogd", "libvirtd")


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def why_no_libvirt() -> str | None:
    """Why libvirt machines cannot run here, or None."""
    if os.geteuid() != 0:
        return "libvirt machines need root (qemu:///system)"
    for binary, package in (("libvirtd", "libvirt-daemon-system"), ("virtlogd",
                            "libvirt-daemon-system"), ("qemu-system-x86_64", "qemu-system-x86"),
                            ("qemu-img", "qemu-utils"), ("nsenter", "util-linux"),
                            ("ip", "iproute2"), ("debootstrap", "debootstrap")):
        if not _binary(binary):
            return f"{binary} is missing: apt-get install {package}"
    try:
        import libvirt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "libvirt-python is missing: pip install 'provisioning[libvirt]'"
    return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return False


class LibvirtDaemons:
    """The daemons a test session talks to (``uri``), started here only when none runs."""

    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self.netns: str | None = None
        self.pids: dict[str, int] = {}
        self.started = False
        self.run_dir = "/run/provisioning-test-libvirt"
        self._kvm_mode: tuple[int, int, int] | None = None

    def start(self, timeout: float = 180.0) -> "LibvirtDaemons":
        from provisioning.drivers.libvirt_host.netns import daemon_pid

        if daemon_pid() is not None:
            self._wait_ready(timeout)
            return self
        self.started = True
        self._kvm_like_udev()
        self.netns = f"prov-libvirt-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        os.makedirs(self.run_dir, exist_ok=True)
        for daemon in DAEMONS:
            pidfile = os.path.join(self.run_dir, f"{daemon}.pid")
            if os.path.exists(pidfile):
                os.unlink(pidfile)
            subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", _binary(daemon) or daemon,
                            "-d", "-p", pidfile], check=True, capture_output=True, timeout=60)
            self.pids[daemon] = self._read_pid(pidfile, timeout=30)
        self._wait_ready(timeout)
        return self

    def _kvm_like_udev(self) -> None:
        """Give /dev/kvm the owner and mode Debian's udev rule gives it (root:kvm 0660) when no
        udev did. Otherwise libvirtd's probe of qemu (as root) and its later check (as the qemu
        user) disagree about KVM, and it probes qemu again at every domain definition (over a
        minute each here). Restored by ``stop``."""
        import grp

        try:
            info = os.stat("/dev/kvm")
            kvm_gid = grp.getgrnam("kvm").gr_gid
        except (OSError, KeyError):
            return
        if info.st_gid == kvm_gid and info.st_mode & 0o660 == 0o660:
            return
        self._kvm_mode = (info.st_uid, info.st_gid, info.st_mode & 0o7777)
        os.chown("/dev/kvm", 0, kvm_gid)
        os.chmod("/dev/kvm", 0o660)

    @staticmethod
    def _read_pid(pidfile: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(pidfile, encoding="ascii") as handle:
                    text = handle.read().strip()
                if text.isdigit():
                    return int(text)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no PID in {pidfile} after {timeout:g} s")
            time.sleep(0.1)

    def _wait_ready(self, timeout: float) -> None:
        """Until the daemon answers (it probes qemu's capabilities first: seconds)."""
        import libvirt  # type: ignore[import-not-found]

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = libvirt.open(self.uri)
                conn.getCapabilities()
                conn.close()
                return
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        if not self.started:
            return
        for daemon in reversed(DAEMONS):
            pid = self.pids.get(daemon)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        if self._kvm_mode is not None:
            uid, gid, mode = self._kvm_mode
            os.chown("/dev/kvm", uid, gid)
            os.chmod("/dev/kvm", mode)
            self._kvm_mode = None
        self.started = False


@pytest.fixture(scope="session")
def libvirt_daemons() -> Iterator[LibvirtDaemons]:
    reason = why_no_libvirt()
    if reason:
        pytest.skip(reason)
    daemons = LibvirtDaemons().start()
    try:
        yield daemons
    finally:
        daemons.stop()
