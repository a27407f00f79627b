"""The libcloud: driver's machine-image methods (``Capabilities.images``), kept apart from the
node lifecycle in ``libcloud.py``.

``allocate_image`` asks the provider to create an image from the converged builder node (EC2
``CreateImage``, with a unique name ``IMAGE-TOKEN``) and saves the image id at once;
``ready_image`` polls until the image is ``available`` (``failed`` is a ProviderError);
``destroy_image`` deregisters it. The core destroys the builder node afterwards. The image id is
what the ``image`` machine option takes. These are the image hooks of ``ImageContract``: the base
class owns why-run and saves the image entry.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from provisioning.driver.image_contract import ImageCapture
from provisioning.errors import ConfigError, MachineNotFound, ProviderError
from provisioning.keys import random_hex

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

    def prepare_capture(self, action_handler, image_spec, image_options: Mapping[str, Any],
                        machine_spec, machine_options: Mapping[str, Any]) -> ImageCapture:
        node = self._node(machine_spec)  # type: ignore[attr-defined]
        if node is None:
            raise MachineNotFound(f"builder node of image {image_spec.name!r} no longer exists; "
                                  "build the image again", machine=machine_spec.name)
        name = f"{image_spec.name}-{random_hex(8)}"
        return ImageCapture(image_spec, image_options, machine_spec, machine_options,
                            f"create image {name} from node {node.id}", plan=(node, name),
                            pending={"capturing": name})

    def find_image(self, image_spec) -> dict[str, Any] | None:
        """The image a killed capture asked for, by the unique name its pending entry
        recorded (EC2: owned by this account and so named)."""
        name = image_spec.reference.get("capturing")
        if not name:
            return None
        driver = self.ops.driver  # type: ignore[attr-defined]
        with self._errors(f"look for image {name}"):  # type: ignore[attr-defined]
            if self.provider == "ec2":  # type: ignore[attr-defined]
                found = driver.list_images(ex_owner="self", ex_filters={"name": name})
            else:
                found = [i for i in driver.list_images() if i.name == name]
        return {"image_id": found[0].id, "image_name": name} if found else None

    def capture_image(self, action_handler, capture: ImageCapture) -> dict[str, Any]:
        node, name = capture.plan
        with self._errors(f"create image {name} from node {node.id}", capture.machine_spec):  # type: ignore[attr-defined]
            image = self.ops.driver.create_image(  # type: ignore[attr-defined]
                node, name, description=f"provisioning image {capture.image_spec.name}")
        return {"image_id": image.id, "image_name": name, "builder_node": node.id,
                "region": self.region}  # type: ignore[attr-defined]

    def wait_for_image(self, action_handler, image_spec, image_options: Mapping[str, Any]) -> None:
        """Poll until the provider says ``available``."""
        image_id = image_spec.reference["image_id"]
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

    def plan_image_delete(self, image_spec) -> str | None:
        """Any image the provider still lists (a failed one too) is deleted."""
        image_id = image_spec.reference.get("image_id")
        image = self._image(image_id) if image_id else None
        self._local.image = image  # type: ignore[attr-defined]  # delete_image's, unlooked-up
        return f"delete image {image_id}" if image is not None else None

    def delete_image(self, action_handler, image_spec) -> None:
        image_id = image_spec.reference["image_id"]
        image = getattr(self._local, "image", None)  # type: ignore[attr-defined]
        if image is None or image.id != image_id:
            image = self._image(image_id)
        with self._errors(f"delete image {image_id}"):  # type: ignore[attr-defined]
            if image is not None:
                self.ops.driver.delete_image(image)  # type: ignore[attr-defined]

    def image_state(self, image_spec) -> str:
        image_id = image_spec.reference.get("image_id")
        image = self._image(image_id) if image_id else None
        if image is None:
            return "missing"
        status = self._image_status(image)
        return status if status in ("available", "pending") else "missing"
