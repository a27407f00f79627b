"""Forwarded ports of an nspawn machine: a small relay process on the host that listens on the
host side (loopback unless the cluster file says otherwise) and, for every connection, opens a
socket inside the machine's network namespace to the guest port. No host interface, route or
firewall rule is touched.

``python -m provisioning.drivers.nspawn_host.portfwd NETNS_PATH ADDRESS SPEC...`` where SPEC is
``HOST_ADDRESS:HOST_PORT:GUEST_PORT``; it prints ``ready`` once every port listens (or
``error: ...`` and exits 1), then serves until killed. ``start()`` runs it detached.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
from typing import Sequence

from provisioning.drivers.nspawn_host.host import PROVIDER
from provisioning.drivers.nspawn_host.netns import socket_in_netns
from provisioning.errors import ProviderError

__all__ = ["start", "serve"]


def start(netns_path: str, address: str, ports: Sequence[str], *, log: str,
          machine: str | None = None) -> int:
    """Start the relay detached; returns its PID once every port listens."""
    with open(log, "ab") as errors:
        proc = subprocess.Popen([sys.executable, "-m", __name__, netns_path, address, *ports],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                start_new_session=True, close_fds=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()
    proc.stdout.close()
    if line != "ready":
        proc.wait(timeout=10)
        raise ProviderError(f"forwarding ports {', '.join(ports)} failed: "
                            f"{line or 'the relay exited'}", provider=PROVIDER, machine=machine)
    return proc.pid


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, netns_path: str, address: str, port: int) -> None:
    try:
        upstream = socket_in_netns(netns_path)
        upstream.settimeout(10)
        upstream.connect((address, port))
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _listener(spec: str) -> tuple[socket.socket, int]:
    host, _, rest = spec.rpartition(":")
    host, _, host_port = host.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(host_port)))
    sock.listen(64)
    return sock, int(rest)


def serve(netns_path: str, address: str, specs: Sequence[str]) -> int:
    selector = selectors.DefaultSelector()
    try:
        for spec in specs:
            sock, guest = _listener(spec)
            selector.register(sock, selectors.EVENT_READ, guest)
    except (OSError, ValueError) as exc:
        print(f"error: cannot listen on {spec}: {getattr(exc, 'strerror', None) or exc}",
              flush=True)
        return 1
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    while True:
        for key, _ in selector.select():
            try:
                client, _ = key.fileobj.accept()  # type: ignore[union-attr]
            except OSError:
                continue
            threading.Thread(target=_relay, args=(client, netns_path, address, key.data),
                             daemon=True).start()


if __name__ == "__main__":  # pragma: no cover - runs as the relay process
    if len(sys.argv) < 4:
        print("usage: python -m provisioning.drivers.nspawn_host.portfwd NETNS_PATH ADDRESS "
              "HOST_ADDRESS:HOST_PORT:GUEST_PORT...", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(sys.argv[1], sys.argv[2], sys.argv[3:]))
