"""The package proxy: apt inside nspawn machines reaches the host's package archives, nothing else.

Machines have no route out of their hub (no NAT; nothing is added to the host's interfaces,
routes or firewall). While a converge process works with a warehouse, it serves an HTTP proxy on
the hub's gateway address, port ``PORT``: the listening socket is created inside the hub's
network namespace (``netns.socket_in_netns``), while the threads that serve it, and the sockets
they open to the archive, belong to the host's namespace. Machines find it through the apt
setting the driver writes into each machine (``APT_CONF``).

Only the archives apt on the host is configured with are reachable (every ``deb`` URI of
``/etc/apt/sources.list(.d)``, plus the driver options ``mirror`` and ``package_archives``):
``GET``/``HEAD`` of ``http://`` URLs under one of them, ``CONNECT`` to the host and port of an
``https://`` one. Anything else is answered ``403`` with the reason. One request per connection
(``Connection: close``; apt reconnects). Listeners use ``SO_REUSEPORT``, so concurrent runs on
one warehouse share the port; the proxy lives as long as the process that serves it.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from typing import Iterable
from urllib.parse import urlsplit

from provisioning.drivers.nspawn_host import netns
from provisioning.inputs.records import record

__all__ = ["Archive", "PackageProxy", "archives_from", "serve_hub", "stop_hub", "apt_conf",
           "APT_CONF", "PORT"]

PORT = 3142
#: where the driver writes the proxy setting inside each machine
APT_CONF = "etc/apt/apt.conf.d/80provisioning-package-proxy"
_HEAD_LIMIT = 64 * 1024
_DROPPED = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


@record(frozen=True)
class Archive:
    """One package archive machines may fetch from: scheme, host, port and path prefix."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def from_uri(cls, uri: str) -> "Archive | None":
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname.lower(), port, "/" + parts.path.strip("/"))

    def allows(self, scheme: str, host: str, port: int, path: str | None) -> bool:
        if (scheme, host.lower(), port) != (self.scheme, self.host, self.port):
            return False
        if path is None:  # CONNECT: the tunnel reaches this host only
            return True
        prefix = self.path.rstrip("/")
        return path == prefix or path.startswith(prefix + "/")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


def archives_from(uris: Iterable[str]) -> tuple[Archive, ...]:
    """Archives from apt source URIs (file:, cdrom: and others are not reachable by a proxy)."""
    found = []
    for uri in uris:
        archive = Archive.from_uri(uri)
        if archive is not None and archive not in found:
            found.append(archive)
    return tuple(found)


def apt_conf(gateway: str, port: int = PORT) -> str:
    """The apt setting that sends a machine's downloads through the package proxy."""
    url = f"http://{gateway}:{port}/"
    return ("// written by the provisioning nspawn: driver: machines have no route out; apt\n"
            "// reaches the host's package archives through the proxy a converge run serves on\n"
            "// the hub gateway (docs/nspawn.md, \"Packages\")\n"
            f'Acquire::http::Proxy "{url}";\n'
            f'Acquire::https::Proxy "{url}";\n'
            'Acquire::http::Pipeline-Depth "0";\n'
            'Acquire::Retries "3";\n')


class PackageProxy:
    """Serves connections accepted on a listening socket, one thread each."""

    def __init__(self, archives: Iterable[Archive], *, connect_timeout: float = 30.0) -> None:
        self.archives = tuple(archives)
        self.connect_timeout = connect_timeout
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def serve(self, listener: socket.socket) -> None:
        """Accept on ``listener`` (already bound and listening) in a daemon thread."""
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="package-proxy")
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None
        return self._listener.getsockname()[:2]

    def allowed(self, scheme: str, host: str, port: int, path: str | None) -> bool:
        return any(a.allows(scheme, host, port, path) for a in self.archives)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve_one, args=(client,), daemon=True,
                             name="package-proxy-conn").start()

    # -- one connection ----------------------------------------------------------------------
    def _serve_one(self, client: socket.socket) -> None:
        try:
            client.settimeout(120)
            head = _read_head(client)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                _refuse(client, 400, "Bad Request", "not an HTTP request line")
                return
            if method == "CONNECT":
                self._tunnel(client, target)
            elif method in ("GET", "HEAD"):
                self._forward(client, method, target, lines[1:])
            else:
                _refuse(client, 405, "Method Not Allowed",
                        f"the package proxy serves GET, HEAD and CONNECT, not {method}")
        except OSError:
            pass
        finally:
            client.close()

    def _forward(self, client: socket.socket, method: str, target: str,
                 header_lines: list[str]) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            _refuse(client, 400, "Bad Request", f"expected an absolute http:// URL, got {target}")
            return
        port = parts.port or 80
        path = parts.path or "/"
        if ".." in path.split("/") or "%2e%2e" in path.lower():
            _refuse(client, 403, "Forbidden", f"{target}: '..' segments are refused")
            return
        if not self.allowed("http", parts.hostname, port, path):
            _refuse(client, 403, "Forbidden", self._why_not(target))
            return
        headers = [h for h in header_lines
                   if h and h.split(":", 1)[0].strip().lower() not in _DROPPED]
        if not any(h.lower().startswith("host:") for h in headers):
            headers.append(f"Host: {parts.netloc}")
        request = "\r\n".join([f"{method} {path}{'?' + parts.query if parts.query else ''} "
                               "HTTP/1.1", *headers, "Connection: close", "", ""])
        upstream = self._connect(client, parts.hostname, port)
        if upstream is None:
            return
        with upstream:
            upstream.sendall(request.encode("latin-1"))  # no half-close: CDNs drop those
            while True:
                data = upstream.recv(65536)
                if not data:
                    return
                client.sendall(data)

    def _tunnel(self, client: socket.socket, target: str) -> None:
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit():
            _refuse(client, 400, "Bad Request", f"CONNECT needs HOST:PORT, got {target}")
            return
        if not self.allowed("https", host, int(port_text), None):
            _refuse(client, 403, "Forbidden", self._why_not(f"https://{target}/"))
            return
        upstream = self._connect(client, host, int(port_text))
        if upstream is None:
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _pump(client, upstream)

    def _connect(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        try:
            return socket.create_connection((host, port), timeout=self.connect_timeout)
        except OSError as exc:
            _refuse(client, 502, "Bad Gateway",
                    f"the host cannot reach {host}:{port}: {exc.strerror or exc}")
            return None

    def _why_not(self, target: str) -> str:
        listed = ", ".join(str(a) for a in self.archives) or "none"
        return (f"{target} is not in the host's package archives ({listed}); the package "
                "proxy only reaches archives apt on the host uses, or the nspawn driver "
                "option package_archives")


def _read_head(client: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > _HEAD_LIMIT:
            _refuse(client, 431, "Request Header Fields Too Large", "request head over 64 KiB")
            return None
    return data.split(b"\r\n\r\n", 1)[0]


def _refuse(client: socket.socket, code: int, reason: str, message: str) -> None:
    body = (message + "\n").encode("utf-8", "replace")
    head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1")
    try:
        client.sendall(head + body)
    except OSError:
        pass


def _pump(left: socket.socket, right: socket.socket) -> None:
    """Copy both ways until both sides have closed their sending half."""
    left.settimeout(None)
    right.settimeout(None)
    selector = selectors.DefaultSelector()
    peers = {left: right, right: left}
    for end in peers:
        selector.register(end, selectors.EVENT_READ, end)
    open_ends = 2
    while open_ends:
        events = selector.select(timeout=300)
        if not events:
            break  # both sides idle for five minutes
        for key, _ in events:
            sock: socket.socket = key.data
            data = sock.recv(65536)
            if data:
                peers[sock].sendall(data)
                continue
            selector.unregister(sock)
            open_ends -= 1
            try:
                peers[sock].shutdown(socket.SHUT_WR)
            except OSError:
                pass
    selector.close()


# -- one proxy per hub namespace per process -----------------------------------------------------
_served: dict[str, tuple[int, PackageProxy]] = {}
_served_lock = threading.Lock()


def serve_hub(hub: str, gateway: str, archives: Iterable[Archive],
              port: int = PORT) -> PackageProxy:
    """Serve the package proxy on ``gateway:port`` inside hub namespace ``hub`` unless this
    process already does (a hub made again after its last machine went gets a new listener)."""
    path = netns.netns_path(hub)
    inode = os.stat(path).st_ino
    with _served_lock:
        current = _served.get(hub)
        if current is not None and current[0] == inode:
            return current[1]
        if current is not None:
            current[1].close()
        listener = netns.socket_in_netns(path)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((gateway, port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        proxy = PackageProxy(archives)
        proxy.serve(listener)
        _served[hub] = (inode, proxy)
        return proxy


def stop_hub(hub: str) -> None:
    """Stop serving a hub (before it is deleted: the listener would keep its namespace alive)."""
    with _served_lock:
        current = _served.pop(hub, None)
    if current is not None:
        current[1].close()
