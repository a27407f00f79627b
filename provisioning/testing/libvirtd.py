"""libvirt daemons for tests: used when one runs, else started here and stopped by PID.

Where no ``libvirtd`` (or ``virtqemud``) runs, ``LibvirtDaemons.start`` creates a private
network namespace and starts ``virtlogd`` and ``libvirtd`` inside it with ``nsenter --net=``
(``ip netns exec`` would remount /sys and hide the cgroup hierarchies libvirtd needs), libvirtd
in its own mount namespace with a private /dev/kvm node (see ``_kvm_node``). Whatever
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
import stat
import subprocess
import time
from typing import Iterator

import pytest

from provisioning.drivers.libvirt_host.netns import daemon_pid

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
        import libvirt  # noqa: F401
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

    def start(self, timeout: float = 180.0) -> "LibvirtDaemons":
        if daemon_pid() is not None:
            self._wait_ready(timeout)
            return self
        self.started = True
        self.netns = f"prov-libvirt-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        os.makedirs(self.run_dir, exist_ok=True)
        kvm = self._kvm_node()
        for daemon in DAEMONS:
            pidfile = os.path.join(self.run_dir, f"{daemon}.pid")
            if os.path.exists(pidfile):
                os.unlink(pidfile)
            argv = [_binary(daemon) or daemon, "-d", "-p", pidfile]
            if daemon == "libvirtd" and kvm:
                argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount --bind "$0" /dev/kvm && exec "$@"', kvm, *argv]
            subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", *argv], check=True,
                           capture_output=True, timeout=60)
            self.pids[daemon] = self._read_pid(pidfile, timeout=30)
        self._wait_ready(timeout)
        return self

    def _kvm_node(self) -> str | None:
        """A private /dev/kvm node for libvirtd (root:kvm 0660, as Debian's udev rule makes it),
        or None. libvirtd probes qemu as root but later checks KVM as its qemu user; when the two
        disagree (``/dev/kvm`` 0600 root, as on hosts without udev, or another owner set by
        someone else meanwhile) it probes qemu again at every domain definition, over a minute
        each. The node is bind-mounted over /dev/kvm in libvirtd's own mount namespace only:
        the host's /dev/kvm is left as it is."""
        import grp

        try:
            info = os.stat("/dev/kvm")
            kvm_gid = grp.getgrnam("kvm").gr_gid
        except (OSError, KeyError):
            return None
        node = os.path.join(self.run_dir, "kvm")
        if os.path.lexists(node):
            os.unlink(node)
        os.mknod(node, 0o660 | stat.S_IFCHR, info.st_rdev)
        os.chown(node, 0, kvm_gid)
        os.chmod(node, 0o660)
        return node

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
        import libvirt

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
