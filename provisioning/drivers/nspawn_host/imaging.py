"""The nspawn: driver's machine-image methods (``Capabilities.images``), kept apart from the
machine lifecycle in ``nspawn.py``: freeze a converged builder machine, check, destroy.

The image's ``image_id`` is its directory; ``image: <that directory>`` boots a machine from it
(``image.resolve_image`` reads its ``image.json``). An image machines still boot from is not
destroyed: the error names them. These are the image hooks of ``ImageContract``: the base class
owns why-run and saves the image entry.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Mapping

from provisioning.driver.image_contract import ImageCapture
from provisioning.drivers.nspawn_host import frozen, host, proc
from provisioning.errors import MachineNotFound, ProviderError

__all__ = ["NspawnImages"]


class NspawnImages:
    """Mixed into ``NspawnDriver``: uses its warehouse, directory and machine helpers."""

    def images_dir(self) -> str:
        return os.path.join(self.directory, frozen.IMAGES_DIR)  # type: ignore[attr-defined]

    def prepare_capture(self, action_handler, image_spec, image_options: Mapping[str, Any],
                        machine_spec, machine_options: Mapping[str, Any]) -> ImageCapture:
        record = self._record(machine_spec)  # type: ignore[attr-defined]
        if record is None:
            raise MachineNotFound(f"builder machine {machine_spec.name!r} of image "
                                  f"{image_spec.name!r} does not exist in {self.directory}; "  # type: ignore[attr-defined]
                                  "build the image again", machine=machine_spec.name)
        image_dir = os.path.join(self.images_dir(), f"{image_spec.name}-{secrets.token_hex(4)}")
        opts = self._options(machine_options, machine_spec.name)  # type: ignore[attr-defined]
        return ImageCapture(image_spec, image_options, machine_spec, machine_options,
                            f"freeze machine {record.id} as image {image_spec.name} "
                            f"({image_dir})", plan=(record, image_dir, opts),
                            pending={"capturing": image_dir})

    def find_image(self, image_spec) -> dict[str, Any] | None:
        """The image directory a killed freeze made (complete or not), by the pending one."""
        image_dir = image_spec.reference.get("capturing")
        if not image_dir or os.path.dirname(image_dir) != self.images_dir() \
                or not os.path.isdir(image_dir):
            return None
        return {"image_id": image_dir, "directory": image_dir}

    def capture_image(self, action_handler, capture: ImageCapture) -> dict[str, Any]:
        """Power the builder off and freeze its overlay layer onto the image's chain."""
        record, image_dir, opts = capture.plan
        ref = capture.machine_spec.reference
        if proc.alive(ref.get("pid"), ref.get("start_time")):
            action_handler.report_progress(f"powering off builder machine {record.id}")
            proc.stop(ref.get("pid"), ref.get("start_time"), record.cgroup,
                      timeout=opts.stop_timeout)
        proc.kill_all(None, None, record.cgroup)
        proc.remove_cgroups(record.cgroup)
        ref.update(state="stopped", pid=None, start_time=None)
        upper = os.path.join(self.warehouse.machine_dir(record.id), "upper")  # type: ignore[attr-defined]
        chain = frozen.freeze(upper, image_dir, record.lower.split(":"),
                              name=capture.image_spec.name, base=record.image, builder=record.id)
        return {"image_id": image_dir, "directory": image_dir, "lowers": chain,
                "base": record.image}

    def wait_for_image(self, action_handler, image_spec, image_options: Mapping[str, Any]) -> None:
        """A frozen image is ready at once: check that every layer is there."""
        if self.image_state(image_spec) != "available":
            raise ProviderError(f"image {image_spec.name!r} in "
                                f"{image_spec.reference.get('directory')} is incomplete (a "
                                "layer is gone); build it again", provider=host.PROVIDER)
        layers = len(image_spec.reference.get("lowers") or [])
        action_handler.report_progress(f"image {image_spec.name} ready: {layers} layers")

    def describe_image_ready(self, image_spec) -> str:
        return "the new image to be checked"

    def plan_image_delete(self, image_spec) -> str | None:
        """None when its directory is gone; a ``ProviderError`` while machines boot from it."""
        directory = image_spec.reference.get("directory")
        if not directory or not os.path.isdir(directory):
            return None
        layer = os.path.join(directory, "layer")
        users = sorted(r.name for r in self.warehouse.records()  # type: ignore[attr-defined]
                       if r.lower.split(":")[0] == layer)
        if users:
            raise ProviderError(f"image {image_spec.name!r} ({directory}) is the root of "
                                f"machines {', '.join(users)}; destroy them first",
                                provider=host.PROVIDER)
        return f"destroy image {image_spec.name} ({directory})"

    def delete_image(self, action_handler, image_spec) -> None:
        frozen.remove(image_spec.reference["directory"])

    def image_state(self, image_spec) -> str:
        directory = image_spec.reference.get("directory")
        if not directory:
            return "missing"
        facts = frozen.manifest(directory)
        if facts is None:
            return "missing"
        return "available" if all(os.path.isdir(p) for p in facts.get("lowers") or ()) \
            else "missing"
