"""A tiny local apt archive for tests and benchmarks: real .deb packages, served over HTTP.

``build_archive(dir, {"provtest-a": "1.0"})`` makes one small ``Architecture: all`` package per
name with ``dpkg-deb`` (each installs ``/usr/share/provtest/NAME``), and a flat archive index
(``Packages``, ``Release``) beside them. ``serve_archive(dir)`` serves it on 127.0.0.1 and
yields its URL; machines use it with ``deb [trusted=yes] URL ./``. Nothing leaves the host.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import subprocess
import tempfile
import threading
import time
from typing import Iterator, Mapping

__all__ = ["build_archive", "serve_archive", "sources_line"]


def _deb(directory: str, name: str, version: str) -> str:
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "DEBIAN"))
        with open(os.path.join(root, "DEBIAN/control"), "w", encoding="utf-8") as handle:
            handle.write(f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                         "Maintainer: provisioning tests <tests@example.invalid>\n"
                         "Section: misc\nPriority: optional\n"
                         f"Description: test package {name}\n a package built by the test suite\n")
        share = os.path.join(root, "usr/share/provtest")
        os.makedirs(share)
        with open(os.path.join(share, name), "w", encoding="utf-8") as handle:
            handle.write(f"{name} {version}\n")
        out = os.path.join(directory, f"{name}_{version}_all.deb")
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out],
                       check=True, capture_output=True)
    return out


def build_archive(directory: str | os.PathLike, packages: Mapping[str, str]) -> str:
    """Build the packages (name -> version) and the archive index; returns the directory."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    entries = []
    for name, version in sorted(packages.items()):
        deb = _deb(directory, name, version)
        control = subprocess.run(["dpkg-deb", "-f", deb], check=True, capture_output=True,
                                 text=True).stdout.strip()
        with open(deb, "rb") as handle:
            data = handle.read()
        entries.append(f"{control}\nFilename: ./{os.path.basename(deb)}\nSize: {len(data)}\n"
                       f"MD5sum: {hashlib.md5(data).hexdigest()}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    index = "\n".join(entries).encode()
    with open(os.path.join(directory, "Packages"), "wb") as handle:
        handle.write(index)
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
    with open(os.path.join(directory, "Release"), "w", encoding="utf-8") as handle:
        handle.write(f"Origin: provisioning-tests\nLabel: provisioning-tests\nDate: {date}\n"
                     f"SHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} Packages\n")
    return directory


def sources_line(url: str) -> str:
    """The apt sources line for a served archive."""
    return f"deb [trusted=yes] {url} ./\n"


@contextlib.contextmanager
def serve_archive(directory: str | os.PathLike) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 while the block runs; yields the URL."""
    handler = functools.partial(_QuietHandler, directory=os.fspath(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="apt-archive")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/archive"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the directory under /archive/ (so the URL has a path prefix, like a mirror)."""

    def translate_path(self, path: str) -> str:
        if path.startswith("/archive/"):
            path = path[len("/archive"):]
        else:
            path = "/.not-served"
        return super().translate_path(path)

    def log_message(self, format: str, *args: object) -> None:
        pass
