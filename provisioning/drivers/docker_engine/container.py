"""One ``docker:`` machine's container: its name and labels, how it is created (systemd as PID 1,
synced folders as bind mounts, SSH and forwarded ports published on loopback), and the files
written into it before its first start (host key, authorized key, sshd settings).

Labels make every container findable again after a crash (adopt, never create twice): the
machine's name, the state store's id, the driver URL. The host key is generated here, written
into the container through the engine, and read back through the engine when a run adopts a
container: it is pinned from what we wrote, never learned over the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
from typing import Any, Mapping

from provisioning.driver.local_features import forwarded_ports, synced_folders
from provisioning.drivers.nspawn_host.rootfs import prepare_upper

__all__ = ["container_name", "named_for", "labels", "create_kwargs", "machine_files", "read_host_key",
           "LABEL_NAME", "LABEL_STORE", "LABEL_URL", "SSH_PORT"]

LABEL_NAME = "io.provisioning.name"
LABEL_STORE = "io.provisioning.store"
LABEL_URL = "io.provisioning.driver-url"
LABEL_SNAPSHOT_OF = "io.provisioning.snapshot-of"
SSH_PORT = 22
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
CGROUP_V1_SYSTEMD = "/sys/fs/cgroup/systemd"
#: PID 1 of an ``init: process`` machine: sleeps until stopped (and stops at once on SIGTERM)
KEEP_ALIVE = ("sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done")


def container_name(machine: str, store_id: str | None) -> str:
    """Unique per (store, machine): the engine refuses a second container of that name, which
    makes two racing creates end with one container."""
    digest = hashlib.sha256((store_id or "no-store").encode()).hexdigest()[:10]
    return f"{name_prefix(machine)}{digest}"


def name_prefix(machine: str) -> str:
    """What the names of ``machine``'s containers start with (of every store)."""
    return f"prov-{machine}-"


def named_for(container: str, machine: str, store_id: str | None = None) -> bool:
    """Whether ``container`` has the name ``container_name`` gives ``machine``'s containers
    (of one store if given; the engine may report it with a leading '/')."""
    container = container.lstrip("/")
    if store_id is not None:
        return container == container_name(machine, store_id)
    return re.fullmatch(re.escape(name_prefix(machine)) + "[0-9a-f]{10}", container) is not None


def labels(machine: str, store_id: str | None, driver_url: str) -> dict[str, str]:
    return {LABEL_NAME: machine, LABEL_STORE: store_id or "", LABEL_URL: driver_url}


def hostname_for(machine: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", machine.lower())[:63].strip("-") or "machine"


def create_kwargs(*, name: str, image: str, hostname: str, machine_labels: Mapping[str, str],
                  machine_options: Mapping[str, Any], publish_address: str,
                  systemd_cgroup_mount: bool, is_podman: bool,
                  init: str = "systemd") -> dict[str, Any]:
    """Arguments of ``client.containers.create``: a systemd machine reached over SSH, or
    (``init="process"``) a plain process kept alive, reached through the engine's exec API."""
    from docker.types import Mount

    mounts = [Mount(target=f.target, source=f.source, type="bind")
              for f in synced_folders(machine_options) if f.mounted_by(True)]
    forwarded = {f"{p.guest_port}/{p.protocol}": (p.host_address, p.host_port)
                 for p in forwarded_ports(machine_options)}
    if init == "process":
        return {"image": image, "name": name, "hostname": hostname,
                "labels": dict(machine_labels), "command": list(KEEP_ALIVE), "detach": True,
                "mounts": mounts, "ports": forwarded}
    if systemd_cgroup_mount and not is_podman:
        # systemd needs the name=systemd hierarchy writable on cgroup v1 hosts; never all of
        # /sys/fs/cgroup (systemd would then write into the host's cgroup tree)
        mounts.append(Mount(target=CGROUP_V1_SYSTEMD, source=CGROUP_V1_SYSTEMD, type="bind"))
    ports: dict[str, Any] = {f"{SSH_PORT}/tcp": (publish_address, None), **forwarded}
    return {
        "image": image, "name": name, "hostname": hostname, "labels": dict(machine_labels),
        "command": ["/sbin/init"], "detach": True, "tty": True,
        "environment": {"container": "docker"}, "stop_signal": "SIGRTMIN+3",
        "tmpfs": {"/run": "rw,exec,mode=755", "/run/lock": "rw,mode=1777", "/tmp": "rw,exec"},
        "mounts": mounts, "ports": ports,
    }


def machine_files(*, hostname: str, authorized_key: str, mask_units: bool) -> tuple[bytes, str]:
    """A tar (owned by root) of what the machine needs before its first start, and the host
    public key in it. The same files as an nspawn machine: one writer for both."""
    with tempfile.TemporaryDirectory(prefix="provisioning-docker-") as upper:
        public = prepare_upper(upper, hostname=hostname, address="127.0.1.1",
                               authorized_key=authorized_key, mask_units=mask_units)
        for managed in ("etc/hostname", "etc/hosts"):  # the engine manages these two
            os.unlink(os.path.join(upper, managed))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                return info
            for entry in sorted(os.listdir(upper)):
                tar.add(os.path.join(upper, entry), arcname=entry, filter=owned_by_root)
    return buffer.getvalue(), public


def read_host_key(container) -> str | None:
    """The host public key in the container (through the engine), or None if not written."""
    import docker.errors

    try:
        chunks, _ = container.get_archive(HOST_KEY + ".pub")
    except docker.errors.NotFound:
        return None
    data = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        if handle is None:
            return None
        parts = handle.read().decode("ascii", "replace").split()
    return f"{parts[0]} {parts[1]}" if len(parts) >= 2 else None


def published_port(container, port: int = SSH_PORT) -> tuple[str, int] | None:
    """(address, port) where the engine publishes ``port`` of a running container."""
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(f"{port}/tcp") or []:
        if binding.get("HostPort"):
            return binding.get("HostIp") or "127.0.0.1", int(binding["HostPort"])
    return None
