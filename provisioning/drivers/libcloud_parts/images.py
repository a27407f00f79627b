"""The libcloud: driver's machine-image methods (``Capabilities.images``), kept apart from the
node lifecycle in ``libcloud.py``.

``allocate_image`` asks the provider to create an image from the converged builder node (EC2
``CreateImage``, with a unique name ``IMAGE-TOKEN``) and saves the image id at once;
``ready_image`` polls until the image is ``available`` (``failed`` is a ProviderError);
``destroy_image`` deregisters it. The core destroys the builder node afterwards. The image id is
what the ``image`` machine option takes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping

from provisioning.errors import ConfigError, MachineNotFound, ProviderError

__all__ = ["LibcloudImages"]


class LibcloudImages:
    """Mixed into ``LibcloudDriver``: uses its ops, error mapping, polling and timeouts."""

    def _image(self, image_id: str) -> Any | None:
        """The provider's image, or None when it does not exist (any more)."""
        driver = self.ops.driver  # type: ignore[attr-defined]
        try:
            with self._errors(f"look up image {image_id}", options={"image": image_id}):  # type: ignore[attr-defined]
                if self.provider == "ec2":  # type: ignore[attr-defined]
                    found = driver.list_images(ex_image_ids=[image_id])
                    return found[0] if found else None
                return driver.get_image(image_id)
        except ConfigError as exc:  # the provider says no such image
            if (exc.key or "").endswith("image"):
                return None
            raise

    @staticmethod
    def _image_status(image: Any) -> str:
        return str((image.extra or {}).get("state") or "available").lower()

    def allocate_image(self, action_handler, image_spec, image_options: Mapping[str, Any],
                       machine_spec, machine_options: Mapping[str, Any]) -> None:
        node = self._node(machine_spec)  # type: ignore[attr-defined]
        if node is None:
            raise MachineNotFound(f"builder node of image {image_spec.name!r} no longer exists; "
                                  "build the image again", machine=machine_spec.name)
        name = f"{image_spec.name}-{uuid.uuid4().hex[:8]}"

        def create() -> None:
            with self._errors(f"create image {name} from node {node.id}", machine_spec):  # type: ignore[attr-defined]
                image = self.ops.driver.create_image(  # type: ignore[attr-defined]
                    node, name, description=f"provisioning image {image_spec.name}")
            image_spec.reference = self.base_reference(  # type: ignore[attr-defined]
                image_id=image.id, image_name=name, builder_node=node.id,
                region=self.region)  # type: ignore[attr-defined]
            image_spec.save()
        action_handler.perform_action(f"create image {name} from node {node.id}", create)

    def ready_image(self, action_handler, image_spec, image_options: Mapping[str, Any]) -> None:
        image_id = image_spec.reference.get("image_id")
        if not image_id:
            if action_handler.why_run:
                action_handler.report_progress("would wait for the new image to be available")
                return
            raise MachineNotFound(f"image {image_spec.name!r} was never created; build it",
                                  machine=image_spec.name)
        timeout = float(image_options.get("wait_timeout")
                        or self.driver_options.get("wait_timeout") or 600.0)  # type: ignore[attr-defined]
        started = time.monotonic()
        while True:
            image = self._image(image_id)
            status = "gone" if image is None else self._image_status(image)
            if status == "available":
                action_handler.report_progress(f"image {image_id} available after "
                                               f"{time.monotonic() - started:.0f} s")
                return
            if status in ("gone", "failed", "deregistered", "invalid"):
                raise ProviderError(f"image {image_id} of {image_spec.name!r} is {status}; "
                                    "build it again", provider=self.provider)  # type: ignore[attr-defined]
            if time.monotonic() - started > timeout:
                raise ProviderError(f"image {image_id} is still {status} after {timeout:g} s; "
                                    "check it in the provider's console, or raise wait_timeout",
                                    provider=self.provider)  # type: ignore[attr-defined]
            self.sleep(self._interval)  # type: ignore[attr-defined]

    def destroy_image(self, action_handler, image_spec, image_options: Mapping[str, Any]) -> None:
        image_id = image_spec.reference.get("image_id")
        image = self._image(image_id) if image_id else None
        if image is None:
            action_handler.report_progress(f"image {image_id or image_spec.name} is already gone")
            return

        def delete() -> None:
            with self._errors(f"delete image {image_id}"):  # type: ignore[attr-defined]
                self.ops.driver.delete_image(image)  # type: ignore[attr-defined]
        action_handler.perform_action(f"delete image {image_id}", delete)

    def image_state(self, image_spec) -> str:
        image_id = image_spec.reference.get("image_id")
        image = self._image(image_id) if image_id else None
        if image is None:
            return "missing"
        status = self._image_status(image)
        return status if status in ("available", "pending") else "missing"
