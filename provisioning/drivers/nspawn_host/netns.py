"""Network namespaces: a hub with a bridge, one namespace per machine, sockets opened inside.

Each warehouse owns a hub namespace holding bridge ``br0`` with the subnet's first address; each
machine's namespace has ``eth0`` (one end of a veth whose other end is on the bridge) with its own
address, so machines reach each other by address. Nothing is added to the host's own interfaces.

A socket belongs to the namespace it was created in: ``socket_factory`` creates it on a
short-lived helper thread that ``setns``-es into the machine's namespace (a namespace switch
affects only the calling thread), then connects it from the caller. That is how the SSH
transport reaches a machine without a forwarder process or a host address.
``python -m provisioning.drivers.nspawn_host.netns NETNS ADDRESS PORT`` does the same for
OpenSSH's ``ProxyCommand`` (``converge ssh``).
"""

from __future__ import annotations

import ctypes
import os
import selectors
import socket
import sys
import threading
from typing import Callable

from provisioning.drivers.nspawn_host.host import run
from provisioning.errors import ConnectError, ProviderError

__all__ = ["NETNS_DIR", "netns_path", "netns_exists", "ensure_hub", "delete_hub", "create_machine_netns",
           "delete_machine_netns", "socket_in_netns", "socket_factory", "proxy_command"]

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
BRIDGE = "br0"

_libc = None


def _setns(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def netns_exists(name: str) -> bool:
    """True when ``/run/netns/NAME`` is a live namespace (a bind mount, not a stale file)."""
    path = netns_path(name)
    if not os.path.exists(path):
        return False
    try:
        return os.stat(path).st_dev != os.stat(NETNS_DIR).st_dev
    except OSError:
        return False


def ensure_hub(hub: str, gateway: str, prefix: int) -> bool:
    """Create the hub namespace and its bridge unless present; True when it created anything."""
    if netns_exists(hub):
        try:
            run(["ip", "-n", hub, "-o", "link", "show", BRIDGE], what="checking the hub bridge")
            return False
        except ProviderError:
            pass  # a crash left the namespace without its bridge: finish it below
    else:
        run(["ip", "netns", "add", hub], what="creating the hub network namespace")
    run(["ip", "-n", hub, "-force", "-batch", "-"], what="setting up the hub bridge", input=(
        "link set lo up\n"
        f"link add {BRIDGE} type bridge\n"
        f"link set {BRIDGE} up\n"
        f"addr add {gateway}/{prefix} dev {BRIDGE}\n"))
    return True


def delete_hub(hub: str) -> None:
    if os.path.lexists(netns_path(hub)):
        run(["ip", "netns", "del", hub], what="removing the hub network namespace")


def create_machine_netns(hub: str, name: str, veth: str, address: str, prefix: int,
                         gateway: str, *, machine: str | None = None) -> None:
    """The machine's namespace with eth0 on the hub bridge. Idempotent: a half-made namespace
    (a crash in the middle) is removed and made again."""
    if os.path.lexists(netns_path(name)):
        try:
            out = run(["ip", "-n", name, "-o", "addr", "show", "dev", "eth0"], machine=machine)
            if f" {address}/{prefix} " in out:
                return
        except ProviderError:
            pass
        delete_machine_netns(hub, name, veth)
    run(["ip", "netns", "add", name], machine=machine, what="creating the machine's network namespace")
    try:
        plug = (f"link add {veth} type veth peer name eth0 netns {name}\n"
                f"link set {veth} master {BRIDGE} up\n")
        try:
            run(["ip", "-n", hub, "-batch", "-"], machine=machine, input=plug,
                what="plugging the machine into the hub")
        except ProviderError as exc:
            if "File exists" not in str(exc):
                raise
            # the old namespace is still being torn down by the kernel, its veth with it
            run(["ip", "-n", hub, "link", "del", veth], machine=machine,
                what="removing the machine's old veth")
            run(["ip", "-n", hub, "-batch", "-"], machine=machine, input=plug,
                what="plugging the machine into the hub")
        run(["ip", "-n", name, "-batch", "-"], machine=machine, what="addressing the machine",
            input=("link set lo up\n"
                   f"addr add {address}/{prefix} dev eth0\n"
                   "link set eth0 up\n"
                   f"route add default via {gateway}\n"))
    except ProviderError:
        delete_machine_netns(hub, name, veth)
        raise


def delete_machine_netns(hub: str, name: str, veth: str) -> None:
    """Remove the namespace (its eth0 and so the veth pair go with it) and a leftover veth."""
    if os.path.lexists(netns_path(name)):
        try:
            run(["ip", "netns", "del", name], what="removing the machine's network namespace")
        except ProviderError:
            if os.path.lexists(netns_path(name)) and not netns_exists(name):
                os.unlink(netns_path(name))  # a stale file, no namespace behind it
            else:
                raise
    if netns_exists(hub):
        try:
            run(["ip", "-n", hub, "link", "del", veth])
        except ProviderError:
            pass  # gone with the namespace, as it should be


def socket_in_netns(path: str, family: int = socket.AF_INET,
                    kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new, unconnected socket that belongs to the network namespace at ``path``."""
    result: dict[str, object] = {}

    def inside() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result["socket"] = socket.socket(family, kind)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    helper = threading.Thread(target=inside, name="netns-socket", daemon=True)
    helper.start()
    helper.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["socket"]  # type: ignore[return-value]


def socket_factory(netns: str, address: str, port: int = 22, *,
                   machine: str | None = None) -> Callable[[float], socket.socket]:
    """What the SSH transport calls for each connection: a socket connected to
    ``address:port`` from inside namespace ``netns`` within ``timeout`` seconds."""
    path = netns_path(netns)

    def connect(timeout: float) -> socket.socket:
        try:
            sock = socket_in_netns(path)
        except FileNotFoundError as exc:
            raise ConnectError(f"network namespace {netns} is gone; ready the machine again",
                               host=f"{address}:{port}", machine=machine) from exc
        except OSError as exc:
            raise ConnectError(f"cannot enter network namespace {netns}: {exc.strerror}",
                               host=f"{address}:{port}", machine=machine) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {address}:{port} in namespace {netns}: "
                               f"{exc.strerror or exc}", host=f"{address}:{port}",
                               machine=machine) from exc
        return sock

    return connect


def port_open(netns: str, address: str, port: int = 22, timeout: float = 0.5) -> bool:
    """A plain TCP connect: is anything listening yet? (cheaper than an SSH handshake)."""
    try:
        socket_factory(netns, address, port)(timeout).close()
        return True
    except ConnectError:
        return False


def proxy_command(netns: str, address: str, port: int = 22) -> str:
    """An OpenSSH ProxyCommand reaching ``address:port`` inside ``netns``."""
    return (f"{sys.executable} -m provisioning.drivers.nspawn_host.netns "
            f"{netns} {address} {port}")


def _proxy(netns: str, address: str, port: int) -> int:
    sock = socket_factory(netns, address, port)(10.0)
    sock.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(0, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    selector.unregister(0)
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]


if __name__ == "__main__":  # pragma: no cover - exercised by converge ssh
    if len(sys.argv) != 4:
        print("usage: python -m provisioning.drivers.nspawn_host.netns NETNS ADDRESS PORT",
              file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(_proxy(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    except ConnectError as exc:
        print(exc, file=sys.stderr)
        sys.exit(255)
