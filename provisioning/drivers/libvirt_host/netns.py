"""Sockets in the network namespace qemu runs in.

With user-mode networking, a machine's forwarded ports are bound by its qemu process, in
whatever network namespace libvirtd started it (the host's, normally; a private one where the
daemon was started inside one, as the test suite does so that nothing touches the host's
network). A socket belongs to the namespace it is created in, so the driver creates its sockets
there (``socket_in_netns`` of the nspawn driver: a helper thread enters the namespace).
"""

from __future__ import annotations

import os
import socket

from provisioning.drivers.nspawn_host.netns import socket_in_netns
from provisioning.errors import ConnectError

__all__ = ["namespace_of", "free_port", "connect", "daemon_pid", "ssh_banner"]

DAEMONS = ("libvirtd", "virtqemud")
QEMU_PID_DIR = "/run/libvirt/qemu"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def daemon_pid() -> int | None:
    """The PID of the running libvirt daemon (libvirtd, or virtqemud for modular daemons)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _read(f"/proc/{entry}/comm") in DAEMONS:
            stat = _read(f"/proc/{entry}/stat") or ""
            if stat.rpartition(")")[2].split()[:1] != ["Z"]:
                return int(entry)
    return None


def _ns_of_pid(pid: int | None) -> str | None:
    if pid is None:
        return None
    path = f"/proc/{pid}/ns/net"
    try:
        if os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino:
            return None  # our own namespace: plain sockets
    except OSError:
        return None
    return path


def namespace_of(domain: str | None) -> str | None:
    """Path of the namespace the domain's qemu (or else the daemon) runs in; None when it is
    this process's own namespace."""
    if domain:
        pid = _read(os.path.join(QEMU_PID_DIR, f"{domain}.pid"))
        if pid and pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            return _ns_of_pid(int(pid))
    return _ns_of_pid(daemon_pid())


def _socket(ns_path: str | None) -> socket.socket:
    return socket_in_netns(ns_path) if ns_path else socket.socket()


def free_port(ns_path: str | None) -> int:
    """A TCP port free on 127.0.0.1 in that namespace now."""
    with _socket(ns_path) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect(address: str, port: int, timeout: float, ns_path: str | None, *,
            machine: str | None = None) -> socket.socket:
    """A TCP connection to ``address:port`` made inside the namespace."""
    try:
        sock = _socket(ns_path)
    except OSError as exc:
        raise ConnectError(f"cannot enter the network namespace of libvirt's qemu ({ns_path}): "
                           f"{exc.strerror or exc}", host=f"{address}:{port}",
                           machine=machine) from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect((address, port))
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot connect to {address}:{port}: {exc.strerror or exc}",
                           host=f"{address}:{port}", machine=machine) from exc
    return sock


def ssh_banner(factory, timeout: float = 30.0) -> bool:
    """True when an SSH server greets through ``factory`` (user-mode NAT accepts the TCP
    connection before the guest listens, so only the banner proves sshd is up). A guest starved
    of CPU (TCG on a busy host) takes seconds to greet: wait up to ``timeout`` for the banner
    rather than hang up and try again, which only piles up unanswered connections."""
    try:
        sock = factory(5.0)
    except (ConnectError, OSError):
        return False
    try:
        sock.settimeout(timeout)
        return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False
    finally:
        sock.close()
