"""The package proxy on loopback: a real archive served over HTTP, real sockets, real requests."""

from __future__ import annotations

import functools
import http.server
import socket
import threading

import pytest

from provisioning.drivers.nspawn_host.package_proxy import Archive, PackageProxy, apt_conf, archives_from


@pytest.fixture
def archive(tmp_path):
    """A directory served over HTTP on 127.0.0.1: /debian/dists/x/Release and /secret.txt."""
    (tmp_path / "debian/dists/x").mkdir(parents=True)
    (tmp_path / "debian/dists/x/Release").write_text("Suite: x\n")
    (tmp_path / "secret.txt").write_text("not an archive\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _proxy(*uris: str) -> PackageProxy:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    proxy = PackageProxy(archives_from(uris))
    proxy.serve(listener)
    return proxy


def _ask(proxy: PackageProxy, request: str) -> tuple[int, bytes]:
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_archive_uris_become_host_port_and_path_prefixes():
    found = archives_from(["http://deb.debian.org/debian", "https://M.example.net:8443/debian/",
                           "file:/srv/repo", "cdrom:[x]/", "http://deb.debian.org/debian"])
    assert [str(a) for a in found] == ["http://deb.debian.org:80/debian",
                                       "https://m.example.net:8443/debian"]
    debian = found[0]
    assert debian.allows("http", "deb.debian.org", 80, "/debian/pool/main/h/hello.deb")
    assert not debian.allows("http", "deb.debian.org", 80, "/debian-other/x")
    assert not debian.allows("http", "deb.debian.org", 8080, "/debian/x")
    assert not debian.allows("https", "deb.debian.org", 80, "/debian/x")
    assert Archive.from_uri("https://m.example.net:8443/").allows("https", "m.example.net",
                                                                   8443, None)


def test_get_under_an_archive_is_forwarded_and_everything_else_refused(archive):
    proxy = _proxy(f"http://127.0.0.1:{archive}/debian")
    try:
        status, body = _ask(proxy, f"GET http://127.0.0.1:{archive}/debian/dists/x/Release "
                                   "HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Connection: keep-alive"
                                   "\r\n\r\n")
        assert (status, body) == (200, b"Suite: x\n")
        status, body = _ask(proxy, f"HEAD http://127.0.0.1:{archive}/debian/dists/x/Release "
                                   "HTTP/1.1\r\n\r\n")
        assert status == 200 and body == b""
        for target in (f"http://127.0.0.1:{archive}/secret.txt",
                       f"http://127.0.0.1:{archive}/debian/../secret.txt",
                       "http://archive.example.invalid/debian/dists/x/Release",
                       f"http://localhost:{archive}/debian/dists/x/Release"):
            status, body = _ask(proxy, f"GET {target} HTTP/1.1\r\n\r\n")
            assert status == 403, target
            assert b"not an archive" not in body
        assert b"host's package archives" in _ask(
            proxy, f"GET http://127.0.0.1:{archive}/secret.txt HTTP/1.1\r\n\r\n")[1]
        status, body = _ask(proxy, f"CONNECT 127.0.0.1:{archive} HTTP/1.1\r\n\r\n")
        assert status == 403  # no https archive on that host
        status, body = _ask(proxy, f"POST http://127.0.0.1:{archive}/debian/x HTTP/1.1\r\n\r\n")
        assert status == 405 and b"GET, HEAD and CONNECT" in body
        status, _ = _ask(proxy, "GET /debian/dists/x/Release HTTP/1.1\r\n\r\n")
        assert status == 400  # a proxy gets absolute URLs
    finally:
        proxy.close()


def test_connect_tunnels_to_an_https_archive_host(archive):
    proxy = _proxy(f"https://127.0.0.1:{archive}/")
    try:
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.sendall(f"CONNECT 127.0.0.1:{archive} HTTP/1.1\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            # the tunnel carries whatever the client speaks (TLS for apt; plain HTTP here)
            sock.sendall(b"GET /debian/dists/x/Release HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"Suite: x\n")
    finally:
        proxy.close()


def test_unreachable_archive_is_a_bad_gateway_naming_it():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = _proxy(f"http://127.0.0.1:{port}/debian")
    try:
        status, body = _ask(proxy, f"GET http://127.0.0.1:{port}/debian/x HTTP/1.1\r\n\r\n")
        assert status == 502 and f"127.0.0.1:{port}".encode() in body
    finally:
        proxy.close()


def test_apt_conf_points_both_schemes_at_the_gateway():
    text = apt_conf("198.18.77.1")
    assert 'Acquire::http::Proxy "http://198.18.77.1:3142/";' in text
    assert 'Acquire::https::Proxy "http://198.18.77.1:3142/";' in text
