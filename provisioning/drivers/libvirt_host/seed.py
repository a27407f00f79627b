"""The seed disk: how a machine gets its own identity before sshd first starts.

Each machine has a small read-only ext4 disk labelled ``provseed`` holding its ed25519 host key
(generated here, so the reference pins it before anyone connects: no trust on first use), the
authorized key and its hostname. The base image carries ``provisioning-seed.service``, which
copies them into place at every boot, before ``ssh.service``. The disk is made with
``mkfs.ext4 -d`` from a private directory: nothing is mounted on the host.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from provisioning.drivers.libvirt_host.host import run
from provisioning.keys import generate_host_key as new_host_key

__all__ = ["GUEST_FILES", "SEED_LABEL", "write_seed", "generate_host_key", "write_private"]

SEED_LABEL = "provseed"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"

_SCRIPT = f"""#!/bin/sh
# written by the provisioning libvirt: driver: install this machine's identity from its seed disk
set -eu
dev=/dev/disk/by-label/{SEED_LABEL}
[ -e "$dev" ] || {{ echo "no seed disk: keeping the current keys"; exit 0; }}
mnt=$(mktemp -d)
mount -o ro "$dev" "$mnt"
install -m 600 "$mnt/host_key" {HOST_KEY}
install -m 644 "$mnt/host_key.pub" {HOST_KEY}.pub
install -d -m 700 /root/.ssh
install -m 600 "$mnt/authorized_keys" /root/.ssh/authorized_keys
name=$(cat "$mnt/hostname")
echo "$name" > /etc/hostname
hostname "$name"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n' "$name" > /etc/hosts
umount "$mnt"
rmdir "$mnt"
"""

_UNIT = f"""[Unit]
Description=Install this machine's host key, authorized key and hostname from its seed disk
DefaultDependencies=no
Wants=dev-disk-by\\x2dlabel-{SEED_LABEL}.device
After=dev-disk-by\\x2dlabel-{SEED_LABEL}.device local-fs.target
Before=ssh.service ssh.socket network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/provisioning-seed
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

_SSHD = f"""# written by the provisioning libvirt: driver
HostKey {HOST_KEY}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

_JOURNALD = """# written by the provisioning libvirt: driver: logs in memory
[Journal]
Storage=volatile
RuntimeMaxUse=16M
"""

_SYSTEMD = """# written by the provisioning libvirt: driver: under TCG on a busy host a guest may get a few
# percent of a CPU; systemd's default 90 s start timeouts then kill services that are merely slow
[Manager]
DefaultTimeoutStartSec=20min
DefaultDeviceTimeoutSec=20min
"""

_NO_WATCHDOG = """# written by the provisioning libvirt: driver: a starved guest misses watchdog pings
[Service]
WatchdogSec=0
TimeoutStartSec=20min
"""

#: files of the base image: (path inside the root, text, mode)
GUEST_FILES = (
    ("etc/systemd/system.conf.d/10-provisioning.conf", _SYSTEMD, 0o644),
    ("etc/systemd/system/systemd-journald.service.d/10-provisioning.conf", _NO_WATCHDOG, 0o644),
    ("etc/systemd/system/systemd-udevd.service.d/10-provisioning.conf", _NO_WATCHDOG, 0o644),
    ("etc/systemd/system/systemd-logind.service.d/10-provisioning.conf", _NO_WATCHDOG, 0o644),
    ("etc/systemd/system/systemd-networkd.service.d/10-provisioning.conf", _NO_WATCHDOG,
     0o644),
    ("usr/local/sbin/provisioning-seed", _SCRIPT, 0o755),
    ("etc/systemd/system/provisioning-seed.service", _UNIT, 0o644),
    ("etc/ssh/sshd_config.d/10-provisioning.conf", _SSHD, 0o644),
    ("etc/systemd/journald.conf.d/10-provisioning.conf", _JOURNALD, 0o644),
)


def generate_host_key(hostname: str) -> tuple[bytes, str]:
    """A fresh ed25519 host key for ``hostname``: (OpenSSH private key bytes, public line)."""
    return new_host_key()


def write_seed(path: str, *, host_key: bytes, host_public: str, authorized_key: str,
               hostname: str) -> None:
    """Write the seed disk image at ``path`` (mode 0600: it holds a private key)."""
    work = tempfile.mkdtemp(prefix=".seed-", dir=os.path.dirname(path))
    try:
        os.chmod(work, 0o700)
        files = {"host_key": (host_key, 0o600),
                 "host_key.pub": (f"{host_public} root@{hostname}\n".encode(), 0o644),
                 "authorized_keys": ((authorized_key.strip() + "\n").encode(), 0o600),
                 "hostname": ((hostname + "\n").encode(), 0o644)}
        os.mkdir(os.path.join(work, "seed"), 0o700)
        for name, (data, mode) in files.items():
            target = os.path.join(work, "seed", name)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        image = os.path.join(work, "seed.img")
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        run(["truncate", "-s", "4M", image], what="allocating the seed disk")
        run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-L", SEED_LABEL, "-d",
             os.path.join(work, "seed"), image], what="making the seed disk")
        os.replace(image, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode`` (never wider first)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
