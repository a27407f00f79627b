"""``converge import NAME CONTAINER`` for the ``docker:`` driver (a mixin of ``DockerDriver``).

``CONTAINER`` is what the engine accepts: a container name, its id or a unique id prefix;
``resource_id`` records the full id (a name can change, the id cannot). Import renames the
container to the name the driver gives this machine's containers (``prov-NAME-DIGEST``, unique
per state store): an engine cannot change a container's labels, so its name is what marks it as
this machine's (and what a re-run adopts it by). A container the driver made for another
``docker:`` URL is refused: import it through that URL.

What is read back from the engine: the image, the hostname, the ports and bind mounts it was
created with, and whether it runs. An SSH machine (``init: systemd``, the default) needs SSH
published (a container's published ports cannot change after it is made) and an ed25519 host
key in its files: that key is read through the engine, the channel the driver wrote it through
for the containers it makes, never learnt from the network; a container without one is refused
with the way out. The machine's login key is added to root's ``authorized_keys`` through the
engine. An ``init: process`` machine needs neither: it is reached through the engine's exec API.
"""

from __future__ import annotations

import io
import tarfile
from typing import Any, Callable, Mapping

from provisioning.drivers.docker_engine import container as containers
from provisioning.drivers.docker_engine.client import PROVIDER, engine_errors
from provisioning.drivers.docker_engine.image import LOCAL_REPOSITORY
from provisioning.errors import ConfigError, MachineNotFound, ProviderError

__all__ = ["DockerImports", "AUTHORIZED_KEYS"]

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"


class DockerImports:
    """import_machine and resource_id for ``DockerDriver`` (client, _options, _key...)."""

    client: Any
    driver_url: str
    endpoint: str
    ssh_host: str
    # the driver's own methods these use
    _options: Callable[[Mapping[str, Any], str], Any]
    _key: Callable[[str], Any]
    base_reference: Callable[..., dict[str, Any]]

    def resource_id(self, reference: Mapping[str, Any]) -> str | None:
        return reference.get("container_id")

    def resolve_resource_id(self, resource_id: str, machine: str) -> str:
        return str(self._container(resource_id, machine).id)  # a name or prefix: the full id

    def import_machine(self, action_handler, machine_spec, machine_options, resource_id):
        """Adopt container ``resource_id``: every check happens before the one change (the
        rename and the authorized key), so why-run reports what would be refused."""
        name = machine_spec.name
        opts = self._options(machine_options, name)
        found = self._container(resource_id, name)
        made_for = (found.labels or {}).get(containers.LABEL_URL)
        if made_for and made_for != self.driver_url:
            raise ConfigError(f"container {found.name} was made by the driver {made_for}, not "
                              f"{self.driver_url}; import it with a machine whose driver is "
                              f"{made_for}", key="import", machine=name)
        ssh = opts.init == "systemd"
        host_key = self._pinnable_host_key(found, name) if ssh else None
        target = containers.container_name(name, machine_spec.store_id)
        config = found.attrs.get("Config") or {}
        image_ref = str(config.get("Image") or found.image.id)
        running = found.status == "running"
        fields = dict(
            container_id=found.id, container_name=target, image=_wished_form(image_ref),
            image_ref=image_ref, key_name=opts.key_name, host_key=host_key,
            hostname=config.get("Hostname") or containers.hostname_for(name),
            transport="ssh" if ssh else "docker", endpoint=self.endpoint,
            state="running" if running else "stopped", address=None, port=None,
            create_options=_create_options(found), imported_from=found.name)

        def adopt() -> None:
            with engine_errors(f"importing container {found.name}", machine=name):
                if ssh:
                    self._authorize(found, self._key(opts.key_name).public_openssh)
                if found.name != target:
                    found.rename(target)
            machine_spec.reference = self.base_reference(**fields)
        renamed = f", renamed {target}" if found.name != target else ""
        action_handler.perform_action(
            f"import container {found.name} ({image_ref}, {found.status}{renamed})", adopt)

    def _container(self, resource_id: str, machine: str) -> Any:
        import docker.errors

        with engine_errors(f"looking up container {resource_id}", machine=machine):
            try:
                return self.client.containers.get(resource_id)
            except docker.errors.NotFound:
                pass
            listed = [c.name for c in self.client.containers.list(all=True)[:5]]
        raise MachineNotFound(f"no container {resource_id!r} on {self.endpoint} (give its name "
                              f"or id; containers: {', '.join(listed) or 'none'})",
                              machine=machine)

    def _pinnable_host_key(self, found: Any, machine: str) -> str:
        """The ed25519 host key in the container's files, read through the engine; the
        container must publish SSH for the driver to reach it."""
        bindings = (found.attrs.get("HostConfig") or {}).get("PortBindings") or {}
        if not bindings.get(f"{containers.SSH_PORT}/tcp"):
            raise ProviderError(
                f"container {found.name} does not publish SSH ({containers.SSH_PORT}/tcp), and "
                "a container's published ports cannot change; import it with the machine "
                "option init: process (reached through the engine, no SSH)", provider=PROVIDER,
                machine=machine)
        with engine_errors(f"reading the host key of container {found.name}", machine=machine):
            host_key = containers.read_host_key(found)
        if host_key is None:
            raise ProviderError(
                f"container {found.name} has no {containers.HOST_KEY}.pub: its SSH host key "
                "cannot be verified (it is read through the engine, never accepted from the "
                f"network); make one (docker exec {found.name} ssh-keygen -A) and import "
                "again, or import it with the machine option init: process", provider=PROVIDER,
                machine=machine)
        return host_key

    @staticmethod
    def _authorize(found: Any, public_key: str) -> None:
        """Add the machine's login key to root's authorized_keys (kept if it is there)."""
        import docker.errors

        try:
            chunks, _ = found.get_archive(AUTHORIZED_KEYS)
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                member = tar.next()
                handle = tar.extractfile(member) if member is not None else None
                text = handle.read().decode("utf-8", "replace") if handle else ""
        except docker.errors.NotFound:
            text = ""
        if public_key.strip() in (line.strip() for line in text.splitlines()):
            return
        data = (text + ("" if not text or text.endswith("\n") else "\n")
                + public_key.strip() + "\n").encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, mode, body in (("root/.ssh", 0o700, None),
                                     (AUTHORIZED_KEYS.lstrip("/"), 0o600, data)):
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid = mode, 0, 0
                if body is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        found.put_archive("/", buffer.getvalue())


def _wished_form(image_ref: str) -> str:
    """The ``image`` option that makes ``image_ref``: ``debian:SUITE`` for the driver's own
    Debian images (Podman names them with a registry in front), else the reference itself."""
    repository, _, tag = image_ref.rpartition(":")
    if tag and (repository == LOCAL_REPOSITORY or repository.endswith("/" + LOCAL_REPOSITORY)):
        return "debian:" + tag
    return image_ref


def _create_options(found: Any) -> dict[str, Any]:
    """The ``ports`` and ``sync`` a container was created with, in machine_options form (a
    snapshot restore re-creates the container with them)."""
    host = found.attrs.get("HostConfig") or {}
    ports = []
    for guest, bindings in sorted((host.get("PortBindings") or {}).items()):
        number, _, protocol = guest.partition("/")
        if number == str(containers.SSH_PORT) and protocol == "tcp":
            continue
        for binding in bindings or []:
            if binding.get("HostPort"):
                address = binding.get("HostIp") or "0.0.0.0"
                address = f"[{address}]" if ":" in address else address
                ports.append(f"{address}:{binding['HostPort']}:{number}/{protocol or 'tcp'}")
    sync = [{"from": m["Source"], "to": m["Destination"], "mode": "mount"}
            for m in found.attrs.get("Mounts") or []
            if m.get("Type") == "bind" and m.get("Destination") != containers.CGROUP_V1_SYSTEMD]
    options: dict[str, Any] = {}
    if ports:
        options["ports"] = ports
    if sync:
        options["sync"] = sync
    return options
