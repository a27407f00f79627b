"""A machine's own files, written into its overlay's upper layer before the first boot.

The driver generates the machine's ed25519 host key here, so the key is pinned in the reference
before anyone connects (no trust on first use). The image stays untouched: a local rootfs
directory works as an image as it is.
"""

from __future__ import annotations

import os
import secrets

__all__ = ["prepare_upper", "host_public_key", "write_file", "MASKED_UNITS", "HOST_KEY"]

HOST_KEY = "etc/ssh/ssh_host_ed25519_key"

#: units a short-lived test machine does not need at boot (periodic maintenance, gettys);
#: masking them makes boot measurably shorter and quieter
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "systemd-pstore.service", "getty@tty1.service",
    "console-getty.service", "systemd-tmpfiles-clean.timer",
)

SSHD_CONFIG = """\
# written by the provisioning nspawn: driver
HostKey /{host_key}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


JOURNALD_CONFIG = """\
# written by the provisioning nspawn: driver: logs in memory (no 8 MB journal file per machine
# on disk); the host keeps each machine's console in DIR/machines/ID/console.log
[Journal]
Storage=volatile
RuntimeMaxUse=16M
"""


def write_file(path: str, text: str | bytes, mode: int = 0o644) -> None:
    """Write a file of the machine's own layer (parents made, mode set even when it existed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def host_public_key(upper: str) -> str | None:
    """The machine's host public key line, when one was generated."""
    try:
        with open(os.path.join(upper, HOST_KEY + ".pub"), encoding="ascii") as handle:
            parts = handle.read().split()
    except OSError:
        return None
    return f"{parts[0]} {parts[1]}" if len(parts) >= 2 else None


def _generate_host_key(upper: str, hostname: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    write_file(os.path.join(upper, HOST_KEY), private, 0o600)
    write_file(os.path.join(upper, HOST_KEY + ".pub"), f"{public} root@{hostname}\n", 0o644)
    return public


def prepare_upper(upper: str, *, hostname: str, address: str, authorized_key: str,
                  mask_units: bool = True) -> str:
    """Write hostname, hosts, machine-id, the host key, sshd settings and authorized_keys.

    Idempotent: an existing host key and machine-id are kept (a re-run adopting a half-made
    machine must not change the key it may already have pinned). Returns the host public key."""
    write_file(os.path.join(upper, "etc/hostname"), hostname + "\n")
    write_file(os.path.join(upper, "etc/hosts"),
           f"127.0.0.1\tlocalhost\n{address}\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    machine_id = os.path.join(upper, "etc/machine-id")
    if not os.path.exists(machine_id):
        write_file(machine_id, secrets.token_hex(16) + "\n", 0o444)
    public = host_public_key(upper) or _generate_host_key(upper, hostname)
    write_file(os.path.join(upper, "etc/ssh/sshd_config.d/10-provisioning.conf"),
           SSHD_CONFIG.format(host_key=HOST_KEY))
    if mask_units:
        write_file(os.path.join(upper, "etc/systemd/journald.conf.d/10-provisioning.conf"),
               JOURNALD_CONFIG)
    ssh_dir = os.path.join(upper, "root/.ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    write_file(os.path.join(ssh_dir, "authorized_keys"), authorized_key.strip() + "\n", 0o600)
    os.chmod(os.path.join(upper, "root"), 0o700)
    if mask_units:
        units = os.path.join(upper, "etc/systemd/system")
        os.makedirs(units, exist_ok=True)
        for unit in MASKED_UNITS:
            link = os.path.join(units, unit)
            if not os.path.lexists(link):
                os.symlink("/dev/null", link)
    return public.split()[0] + " " + public.split()[1]
