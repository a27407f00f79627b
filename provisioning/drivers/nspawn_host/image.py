"""Images: the read-only lower layer every machine's overlay root starts from.

``debian:SUITE`` is built once with ``debootstrap --variant=minbase`` from the mirror apt on this
host already uses (read from ``/etc/apt/sources.list.d/*.sources`` and ``/etc/apt/sources.list``;
never a hard-coded host), under a file lock so parallel runs build it once, into
``CACHE/debian-SUITE/rootfs``. A local rootfs directory is used as it is; a tarball is unpacked
into the cache once. No SSH host keys stay in an image: each machine gets its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import time
from typing import Callable, Iterator

from provisioning.drivers.nspawn_host import frozen
from provisioning.drivers.nspawn_host.host import PROVIDER, require_binary, run
from provisioning.errors import ConfigError, ProviderError
from provisioning.inputs.records import record
from provisioning.inputs.schema import closest

__all__ = ["Image", "AptSource", "apt_sources", "pick_mirror", "resolve_image", "ensure_image",
           "debootstrap_suites", "DEFAULT_IMAGE", "DEBIAN_RELEASES", "PACKAGES"]

DEFAULT_IMAGE = "debian:bookworm"
#: the Debian releases the driver is tested with: ``image: debian:RELEASE`` builds one base
#: image per release, once, into ``CACHE/debian-RELEASE/rootfs``
DEBIAN_RELEASES = ("bullseye", "bookworm", "trixie")
DEBOOTSTRAP_SCRIPTS = "/usr/share/debootstrap/scripts"
#: what every machine needs: systemd as PID 1, sshd, sudo and python for convergence, ip
PACKAGES = ("openssh-server", "systemd-sysv", "dbus", "sudo", "python3-minimal", "iproute2")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tar.bz2")
_SUITE_RE = re.compile(r"^[a-z][a-z0-9.-]*$")


@record(frozen=True)
class Image:
    """A resolved image: ``name`` as the user wrote it, ``rootfs`` the lower directory once
    built (for ``layered``, a machine image, the overlay lower chain ``layer:base``), ``kind``
    one of debootstrap, directory, tarball, layered."""

    name: str
    kind: str
    rootfs: str
    source: str = ""

    @property
    def ready(self) -> bool:
        if self.kind == "directory":
            return os.path.isdir(self.rootfs)
        if self.kind == "layered":  # rootfs: the lower chain, top layer first
            return bool(self.rootfs) and all(os.path.isdir(p) for p in self.rootfs.split(":"))
        return os.path.exists(os.path.join(os.path.dirname(self.rootfs), ".complete"))


@record(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    keyring: str | None
    origin: str


# -- apt sources ---------------------------------------------------------------------------------
def _deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    last = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, last = {}, None
            continue
        if raw[0] in " \t" and last:
            fields[last] += "\n" + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if sep:
            last = key.strip().lower()
            fields[last] = value.strip()


def _one_line_sources(text: str, origin: str) -> Iterator[AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        keyring = None
        rest = line[4:].strip()
        if rest.startswith("["):
            options, _, rest = rest[1:].partition("]")
            for option in options.split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    keyring = value
        parts = rest.split()
        if len(parts) >= 2:
            yield AptSource(parts[0], (parts[1],), tuple(parts[2:]), keyring, origin)


def apt_sources(root: str = "/") -> list[AptSource]:
    """Every enabled binary (``deb``) source apt on this host is configured with, in apt's order."""
    found: list[AptSource] = []
    etc = os.path.join(root, "etc/apt")
    one_line = [os.path.join(etc, "sources.list"),
                *sorted(glob.glob(os.path.join(etc, "sources.list.d/*.list")))]
    deb822 = sorted(glob.glob(os.path.join(etc, "sources.list.d/*.sources")))
    for path in deb822:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            for fields in _deb822_paragraphs(text):
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                keyring = fields.get("signed-by")
                if keyring and "\n" in keyring:  # an inline key block, not a path
                    keyring = None
                for uri in fields.get("uris", "").split():
                    found.append(AptSource(uri, tuple(fields.get("suites", "").split()),
                                           tuple(fields.get("components", "").split()),
                                           keyring, path))
    for path in one_line:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with open(path, encoding="utf-8") as handle:
                found.extend(_one_line_sources(handle.read(), path))
    return found


def pick_mirror(suite: str, sources: list[AptSource]) -> AptSource:
    """The mirror to debootstrap ``suite`` from: a source that lists the suite itself, else the
    first main-archive source (security and updates pockets are never a base)."""
    def is_base(source: AptSource) -> bool:
        return (source.uri.startswith(("http://", "https://", "file:/"))
                and "security" not in source.uri
                and not all(s.endswith(("-security", "-updates", "-backports")) for s in source.suites))

    candidates = [s for s in sources if is_base(s)]
    for source in candidates:
        if suite in source.suites:
            return source
    if candidates:
        return candidates[0]
    where = ", ".join(sorted({s.origin for s in sources})) or "/etc/apt/sources.list(.d)"
    raise ConfigError(f"no Debian mirror found in apt's sources ({where}) to debootstrap "
                      f"{suite!r} from; set the nspawn driver option 'mirror' to a Debian mirror URL",
                      key="driver_options.mirror")


# -- resolving and building ----------------------------------------------------------------------
def debootstrap_suites(scripts_dir: str = DEBOOTSTRAP_SCRIPTS) -> frozenset[str] | None:
    """The suites this host's debootstrap has a script for; None when debootstrap is not
    installed (building then fails with the apt-get line that installs it)."""
    try:
        return frozenset(os.listdir(scripts_dir))
    except OSError:
        return None


def _check_suite(name: str, suite: str, scripts_dir: str) -> None:
    if not _SUITE_RE.match(suite):
        raise ConfigError(f"image {name!r}: {suite!r} is not a Debian suite name "
                          "(for example debian:bookworm)", key="machine_options.image")
    known = debootstrap_suites(scripts_dir)
    if known is not None and suite not in known:
        releases = [r for r in DEBIAN_RELEASES if r in known]
        close = closest(suite, sorted(known))
        raise ConfigError(f"image {name!r}: this host's debootstrap cannot build {suite!r} "
                          f"(no script in {scripts_dir}); Debian releases it builds: "
                          f"{', '.join('debian:' + r for r in releases) or 'none'}"
                          f"{f' (did you mean debian:{close[0]}?)' if close else ''}; a newer "
                          "debootstrap knows newer releases", key="machine_options.image")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")[:60]


def resolve_image(name: str, cache_dir: str, *, scripts_dir: str = DEBOOTSTRAP_SCRIPTS) -> Image:
    """Where ``name`` lives (or will live once built); raises ConfigError for what it cannot be."""
    if not isinstance(name, str) or not name:
        raise ConfigError("image must be 'debian:SUITE', a rootfs directory or a tarball",
                          key="machine_options.image")
    if name.startswith("debian:"):
        suite = name.split(":", 1)[1]
        _check_suite(name, suite, scripts_dir)
        return Image(name, "debootstrap", os.path.join(cache_dir, f"debian-{suite}", "rootfs"), suite)
    path = os.path.abspath(os.path.expanduser(name))
    if frozen.is_image_dir(path):  # a machine image this driver built (allocate_image)
        lowers = (frozen.manifest(path) or {}).get("lowers") or []
        return Image(name, "layered", ":".join(lowers), path)
    if os.path.isdir(path):
        for needed in ("usr/sbin/sshd", "usr/lib/systemd/systemd"):
            if not os.path.exists(os.path.join(path, needed)) and not os.path.exists(
                    os.path.join(path, needed.replace("usr/lib", "lib"))):
                raise ConfigError(f"image directory {path} has no /{needed}; a machine needs "
                                  "systemd and openssh-server", key="machine_options.image")
        return Image(name, "directory", path, path)
    if path.endswith(TARBALL_SUFFIXES):
        if not os.path.isfile(path):
            raise ConfigError(f"image tarball {path} does not exist", key="machine_options.image")
        stat = os.stat(path)
        digest = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        slug = f"tar-{_slug(os.path.basename(path))}-{digest[:12]}"
        return Image(name, "tarball", os.path.join(cache_dir, slug, "rootfs"), path)
    raise ConfigError(f"image {name!r} is neither 'debian:SUITE', an existing rootfs directory, "
                      f"nor a tarball ({', '.join(TARBALL_SUFFIXES)})", key="machine_options.image")


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(image: Image, *, mirror: str | None = None,
                 report: Callable[[str], None] = lambda text: None) -> Image:
    """Build (or unpack) the image unless it is already in the cache. Safe across processes."""
    if image.ready:
        return image
    if image.kind == "directory":
        raise ConfigError(f"image directory {image.rootfs} does not exist",
                          key="machine_options.image")
    if image.kind == "layered":
        raise ConfigError(f"machine image {image.source} is incomplete (a layer of "
                          f"{image.rootfs} is gone); build it again (converge image build)",
                          key="machine_options.image")
    home = os.path.dirname(image.rootfs)
    with _file_lock(home + ".lock"):
        if image.ready:  # another run built it while we waited
            return image
        staging = image.rootfs + ".building"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(image.rootfs, ignore_errors=True)
        os.makedirs(home, exist_ok=True)
        started = time.monotonic()
        if image.kind == "debootstrap":
            info = _debootstrap(image.source, staging, mirror, report)
        else:
            report(f"unpacking image {image.source}")
            os.makedirs(staging)
            run(["tar", "-C", staging, "--numeric-owner", "-xf", image.source], timeout=1800,
                what="unpacking the image tarball")
            info = {"tarball": image.source}
        _strip(staging)
        os.rename(staging, image.rootfs)
        info.update(image=image.name, built_at=time.time(),
                    seconds=round(time.monotonic() - started, 1))
        with open(os.path.join(home, ".complete"), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=1)
    return image


def _debootstrap(suite: str, target: str, mirror: str | None,
                 report: Callable[[str], None]) -> dict:
    binary = require_binary("debootstrap")
    keyring = None
    if not mirror:
        source = pick_mirror(suite, apt_sources())
        mirror, keyring = source.uri, source.keyring
    argv = [binary, "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    if keyring and os.path.isfile(keyring):
        argv.append(f"--keyring={keyring}")
    argv += [suite, target, mirror]
    report(f"building image debian:{suite} with debootstrap from {mirror} (about a minute, once)")
    try:
        run(argv, timeout=1800, what="debootstrap")
    except ProviderError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ProviderError(f"building image debian:{suite} failed: debootstrap from {mirror} "
                            f"exited with an error; check that the mirror is reachable and "
                            f"serves {suite!r} (set the driver option 'mirror' to another one); "
                            f"{exc.provider_message or exc}"[:2000], provider=PROVIDER,
                            provider_message=exc.provider_message) from exc
    return {"suite": suite, "mirror": mirror, "packages": list(PACKAGES)}


def _strip(rootfs: str) -> None:
    """What no image keeps: host keys (each machine has its own), machine-id, package cache."""
    for path in glob.glob(os.path.join(rootfs, "etc/ssh/ssh_host_*")):
        os.unlink(path)
    for path in glob.glob(os.path.join(rootfs, "var/cache/apt/archives/*.deb")):
        os.unlink(path)
    for name in ("etc/machine-id", "var/lib/dbus/machine-id"):
        path = os.path.join(rootfs, name)
        if os.path.lexists(path) and not os.path.islink(path):
            with open(path, "w", encoding="ascii"):
                pass
