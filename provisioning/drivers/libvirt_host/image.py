"""Base disks: one qcow2 per Debian release, built here from Debian packages only.

``debian:SUITE`` starts from the same debootstrap root the ``nspawn:`` driver caches (built once,
from the mirror apt on this host uses), copies it, installs ``linux-image-cloud-amd64`` into the
copy inside a private mount namespace (nothing leaks into the host's mounts), configures DHCP on
the virtio NIC, sshd with one ed25519 host key, and the seed unit (``seed.py``) that installs
each machine's own keys at boot. The root is then turned into an ext4 filesystem without
mounting anything (``mkfs.ext4 -d``) and converted to qcow2; the kernel and initrd go beside it
for direct kernel boot. Cached as ``CACHE/qcow2-vN-debian-SUITE/{base.qcow2,vmlinuz,initrd.img}``,
built under a file lock, so parallel runs build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import time
from typing import Callable, Iterator

from provisioning.drivers.libvirt_host.host import run
from provisioning.drivers.libvirt_host.seed import GUEST_FILES
from provisioning.drivers.nspawn_host import image as rootfs_images
from provisioning.drivers.nspawn_host.image import apt_sources, pick_mirror, resolve_image
from provisioning.drivers.nspawn_host.rootfs import MASKED_UNITS
from provisioning.errors import ConfigError, ProviderError
from provisioning.inputs.records import record

__all__ = ["BaseImage", "resolve_base", "ensure_base", "DEFAULT_IMAGE", "KERNEL_PACKAGE"]

DEFAULT_IMAGE = "debian:bookworm"
KERNEL_PACKAGE = "linux-image-cloud-amd64"
#: virtual size of the root filesystem (sparse: the qcow2 holds only what is written)
ROOT_SIZE = "4G"
#: bumped whenever what goes into a base disk changes: a new version is built beside the old
LAYOUT = 2
#: modules the initramfs needs to find the root disk on virtio
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")


@record(frozen=True)
class BaseImage:
    """A base disk (built or to build): ``disk`` qcow2, ``kernel`` and ``initrd`` beside it."""

    name: str
    suite: str
    home: str

    @property
    def disk(self) -> str:
        return os.path.join(self.home, "base.qcow2")

    @property
    def kernel(self) -> str:
        return os.path.join(self.home, "vmlinuz")

    @property
    def initrd(self) -> str:
        return os.path.join(self.home, "initrd.img")

    @property
    def ready(self) -> bool:
        return os.path.exists(os.path.join(self.home, ".complete"))

    def info(self) -> dict:
        try:
            with open(os.path.join(self.home, ".complete"), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}


def resolve_base(name: str, cache_dir: str) -> BaseImage:
    """Where the base of ``name`` lives; ConfigError for names that are not ``debian:SUITE``."""
    if not isinstance(name, str) or not name.startswith("debian:"):
        raise ConfigError(f"image {name!r}: the libvirt: driver builds its disks from Debian "
                          "packages; use debian:SUITE (for example debian:bookworm)",
                          key="machine_options.image")
    rootfs = resolve_image(name, cache_dir)  # validates the suite name
    return BaseImage(name, rootfs.source,
                     os.path.join(cache_dir, f"qcow2-v{LAYOUT}-debian-{rootfs.source}"))


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_base(base: BaseImage, *, rootfs_cache: str, mirror: str | None = None,
                report: Callable[[str], None] = lambda text: None) -> BaseImage:
    """Build the base disk unless it is cached. Safe across processes; progress to ``report``."""
    if base.ready:
        return base
    with _file_lock(base.home + ".lock"):
        if base.ready:  # another run built it while we waited
            return base
        staging = base.home + ".building"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(base.home, ignore_errors=True)
        os.makedirs(staging, mode=0o755)
        laps: dict[str, float] = {}
        started = time.monotonic()
        root = _root_from_debootstrap(base, rootfs_cache, mirror, report, staging, laps)
        _lap(laps, "kernel", lambda: _install_kernel(root, base.suite, mirror, report))
        _lap(laps, "configure", lambda: _configure(root))
        _lap(laps, "disk", lambda: _make_disk(root, staging, report))
        shutil.rmtree(root)
        laps["total"] = round(time.monotonic() - started, 1)
        with open(os.path.join(staging, ".complete"), "w", encoding="utf-8") as handle:
            json.dump({"image": base.name, "built_at": time.time(), "seconds": laps}, handle,
                      indent=1)
        os.rename(staging, base.home)
        report(f"image {base.name} built in {laps['total']:.0f} s")
    return base


def _lap(laps: dict[str, float], name: str, fn: Callable[[], object]) -> None:
    started = time.monotonic()
    fn()
    laps[name] = round(time.monotonic() - started, 1)


def _root_from_debootstrap(base: BaseImage, rootfs_cache: str, mirror: str | None,
                           report: Callable[[str], None], staging: str,
                           laps: dict[str, float]) -> str:
    started = time.monotonic()
    source = rootfs_images.ensure_image(rootfs_images.resolve_image(base.name, rootfs_cache),
                                        mirror=mirror, report=report)
    laps["debootstrap"] = round(time.monotonic() - started, 1)
    report(f"building disk image {base.name}: copying the Debian root")
    root = os.path.join(staging, "root")
    _lap(laps, "copy", lambda: run(["cp", "-a", "--reflink=auto", source.rootfs, root],
                                   timeout=900, what="copying the Debian root"))
    return root


def _mirror_for(suite: str, mirror: str | None) -> str:
    return mirror or pick_mirror(suite, apt_sources()).uri


def _install_kernel(root: str, suite: str, mirror: str | None,
                    report: Callable[[str], None]) -> None:
    """apt-get inside the copy, in a private mount namespace (its mounts die with it)."""
    archive = _mirror_for(suite, mirror)
    report(f"building disk image debian:{suite}: installing {KERNEL_PACKAGE} from {archive} "
           "(about a minute, once)")
    _write(os.path.join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", 0o755)
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    _write(os.path.join(root, "etc/apt/sources.list"), f"deb {archive} {suite} main\n")
    _write(os.path.join(root, "etc/initramfs-tools/modules"),
           "".join(f"{module}\n" for module in INITRAMFS_MODULES))
    script = (
        "set -e; r=$1; mount -t proc proc $r/proc; mount -t sysfs sysfs $r/sys; "
        "mount --rbind /dev $r/dev; "
        "chroot $r env DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3 update; "
        "chroot $r env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Acquire::Retries=3 "
        f"install --no-install-recommends {KERNEL_PACKAGE} initramfs-tools; "
        "chroot $r apt-get clean")
    run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", root],
        timeout=1800, what=f"installing {KERNEL_PACKAGE} into the image")
    for leftover in ("usr/sbin/policy-rc.d", "etc/resolv.conf"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, leftover))
    for path in glob.glob(os.path.join(root, "var/lib/apt/lists/*_Packages")):
        os.unlink(path)


def _configure(root: str) -> None:
    """What every machine booted from this disk shares; its own identity comes from the seed."""
    _write(os.path.join(root, "etc/fstab"), "/dev/vda / ext4 defaults,noatime 0 1\n")
    _write(os.path.join(root, "etc/systemd/network/10-dhcp.network"),
           "[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n")
    for path, text, mode in GUEST_FILES:
        _write(os.path.join(root, path), text, mode)
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    for unit, target in (("systemd-networkd.service", "/lib/systemd/system/systemd-networkd.service"),
                         ("provisioning-seed.service",
                          "/etc/systemd/system/provisioning-seed.service")):
        link = os.path.join(wants, unit)
        if not os.path.lexists(link):
            os.symlink(target, link)
    units = os.path.join(root, "etc/systemd/system")
    for unit in (*MASKED_UNITS, "systemd-networkd-wait-online.service",
                 "serial-getty@ttyS0.service"):
        link = os.path.join(units, unit)
        if not os.path.lexists(link):
            os.symlink("/dev/null", link)
    for path in glob.glob(os.path.join(root, "etc/ssh/ssh_host_*")):
        os.unlink(path)
    _write(os.path.join(root, "etc/machine-id"), "", 0o444)  # first boot makes a unique one


def _make_disk(root: str, staging: str, report: Callable[[str], None]) -> None:
    report("building disk image: ext4 filesystem and qcow2")
    boot = os.path.join(root, "boot")
    kernels = sorted(glob.glob(os.path.join(boot, "vmlinuz-*")))
    initrds = sorted(glob.glob(os.path.join(boot, "initrd.img-*")))
    if not kernels or not initrds:
        raise ProviderError(f"the image has no kernel or initrd in {boot} after installing "
                            f"{KERNEL_PACKAGE}", provider="libvirt")
    shutil.copyfile(kernels[-1], os.path.join(staging, "vmlinuz"))
    shutil.copyfile(initrds[-1], os.path.join(staging, "initrd.img"))
    raw = os.path.join(staging, "base.raw")
    run(["truncate", "-s", ROOT_SIZE, raw], what="allocating the image")
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-E", "lazy_itable_init=1,lazy_journal_init=1",
         "-d", root, raw], timeout=900, what="making the image's ext4 filesystem")
    run(["qemu-img", "convert", "-O", "qcow2", raw, os.path.join(staging, "base.qcow2")],
        timeout=900, what="converting the image to qcow2")
    os.unlink(raw)


def _write(path: str, text: str | bytes, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
