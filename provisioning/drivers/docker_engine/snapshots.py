"""Snapshots of ``docker:`` machines: ``docker commit`` of the machine's container, tagged
``provisioning-snapshot/CONTAINER:NAME`` and labelled with the container's name so that
destroying the machine removes them. Restore replaces the container by one created from the
snapshot image with the same name, labels, mounts and ports. Engine-managed files
(``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``) belong to each container, not to
the snapshot. A mixin of ``DockerDriver``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from provisioning.driver.local_features import Snapshot
from provisioning.drivers.docker_engine import container as containers
from provisioning.drivers.docker_engine.client import engine_errors
from provisioning.errors import ConfigError, MachineNotFound

__all__ = ["DockerSnapshots", "SNAPSHOT_REPOSITORY", "BASE_TAG"]

SNAPSHOT_REPOSITORY = "provisioning-snapshot"
#: tag of the snapshot image a restored container runs on (never a snapshot name: those start
#: with a letter or digit)
BASE_TAG = "_base"


class DockerSnapshots:
    """save/restore/list/delete_snapshot for ``DockerDriver`` (client, _get, _options...)."""

    client: Any
    endpoint: str
    # the driver's own methods these use
    _get: Callable[[Any], Any]
    _options: Callable[[Mapping[str, Any], str], Any]
    _create_kwargs: Callable[..., dict[str, Any]]

    def _snapshot_repository(self, container_name: str) -> str:
        return f"{SNAPSHOT_REPOSITORY}/{container_name}"

    def _snapshot_images(self, container_name: str | None) -> list[Any]:
        if not container_name:
            return []
        with engine_errors(f"listing snapshots of {container_name}"):
            return self.client.images.list(
                filters={"label": f"{containers.LABEL_SNAPSHOT_OF}={container_name}"})

    def _snapshot_tags(self, container_name: str | None) -> dict[str, Any]:
        """Snapshot name -> image. A snapshot is a tag ``provisioning-snapshot/CONTAINER:NAME``
        (Podman prefixes a registry); ``BASE_TAG`` marks the image the container now runs on
        after a restore, so deleting that snapshot's name only removes its tag."""
        repository = self._snapshot_repository(container_name or "")
        found: dict[str, Any] = {}
        for image in self._snapshot_images(container_name):
            for tag in image.tags or []:
                repo, _, name = tag.rpartition(":")
                if (repo == repository or repo.endswith("/" + repository)) and name != BASE_TAG:
                    found[name] = image
        return found

    def list_snapshots(self, machine_spec) -> list[Snapshot]:
        tags = self._snapshot_tags(machine_spec.reference.get("container_name"))
        out = [Snapshot(name, _created(image.attrs.get("Created")), image.attrs.get("Size"))
               for name, image in tags.items()]
        return sorted(out, key=lambda s: (s.created_at, s.name))

    def _snapshot_image(self, spec, name: str) -> Any:
        tags = self._snapshot_tags(spec.reference.get("container_name"))
        if name not in tags:
            raise ConfigError(f"machine {spec.name!r} has no snapshot {name!r} (it has: "
                              f"{', '.join(sorted(tags)) or 'none'})", key="snapshot")
        return tags[name]

    def _require(self, spec) -> Any:
        found = self._get(spec)
        if found is None:
            raise MachineNotFound(f"machine {spec.name!r} has no container on {self.endpoint}; "
                                  "run up first", machine=spec.name)
        return found

    def save_snapshot(self, action_handler, machine_spec, name: str) -> Snapshot:
        found = self._require(machine_spec)
        container_name = machine_spec.reference["container_name"]
        repository = self._snapshot_repository(container_name)

        def commit() -> None:
            # committing a name again moves its tag; the image it leaves untagged is removed
            # with the machine (or now, when nothing runs on it)
            previous = self._snapshot_tags(container_name).get(name)
            with engine_errors(f"committing container {container_name}",
                               machine=machine_spec.name):
                found.commit(repository=repository, tag=name, changes=[
                    f'LABEL {containers.LABEL_SNAPSHOT_OF}="{container_name}"'])
                if previous is not None:
                    self._discard(previous)
        action_handler.perform_action(f"save snapshot {name} of container {container_name} "
                                      "(commit)", commit)
        return next((s for s in self.list_snapshots(machine_spec) if s.name == name),
                    Snapshot(name, time.time()))

    def _discard(self, image) -> None:
        """Remove an image no tag and no container needs any more; keep it otherwise."""
        import docker.errors

        try:
            image.reload()
            if not image.tags:
                self.client.images.remove(image.id, force=False)
        except (docker.errors.NotFound, docker.errors.APIError):
            pass  # still in use: it goes with the machine

    def restore_snapshot(self, action_handler, machine_spec, name: str) -> None:
        found = self._require(machine_spec)
        image = self._snapshot_image(machine_spec, name)
        process = machine_spec.reference.get("transport") == "docker"
        opts = self._options({"init": "process"} if process else {},
                             machine_spec.name)
        was_running = found.status == "running"

        def restore() -> None:
            import docker.errors

            ref = machine_spec.reference
            options = ref.get("create_options") or {}
            kwargs = self._create_kwargs(machine_spec, opts, options, image.id,
                                         ref["container_name"])
            kwargs["hostname"] = ref.get("hostname") or kwargs["hostname"]
            with engine_errors(f"replacing container {ref['container_name']}",
                               machine=machine_spec.name):
                image.tag(self._snapshot_repository(ref["container_name"]), BASE_TAG)
                try:
                    found.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass
                fresh = self.client.containers.create(**kwargs)
                ref.update(container_id=fresh.id, state="allocated", port=None)
                machine_spec.save()
                if was_running:
                    fresh.start()
                    ref.update(state="running")
        action_handler.perform_action(
            f"restore snapshot {name}: replace container {found.name} with one made from it",
            restore)

    def delete_snapshot(self, action_handler, machine_spec, name: str) -> None:
        image = self._snapshot_image(machine_spec, name)
        repository = self._snapshot_repository(machine_spec.reference["container_name"])

        def remove() -> None:
            with engine_errors(f"removing snapshot {name}", machine=machine_spec.name):
                tag = next(t for t in image.tags if t.rpartition(":")[2] == name
                           and t.rpartition(":")[0].endswith(repository))
                self.client.images.remove(tag, force=False)  # the tag; the image if unused
        action_handler.perform_action(f"delete snapshot {name}", remove)


def _created(value: Any) -> float:
    """An image's creation time: seconds (list API) or an RFC 3339 string (inspect API)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        from datetime import datetime

        text = value.rstrip("Z")
        if "." in text:
            head, frac = text.split(".", 1)
            text = f"{head}.{frac[:6]}"
        try:
            return datetime.fromisoformat(text + "+00:00").timestamp()
        except ValueError:
            return 0.0
    return 0.0
