"""The machine-image methods of the driver contract, and the image hooks behind them.

The core (``provisioning.images.builder``) builds a machine from the image's base, converges it,
then calls ``allocate_image`` and ``ready_image``, and destroys the builder machine. A driver
that can capture images sets ``Capabilities.images`` and implements the *image hooks*: capture
the converged builder and return the image's reference fields (``capture_image``), tell the
image's state (``image_state``), delete it (``delete_image``). This class owns what every
driver used to repeat around them: the why-run branch (every change through
``perform_action``), the save of the image entry, and the "already gone" of an idempotent
destroy. A driver written before the hooks overrides ``allocate_image``/``ready_image``/
``destroy_image`` itself and keeps working unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from provisioning.errors import MachineNotFound, UnsupportedOperation
from provisioning.inputs.records import record

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.spec import ImageSpec, MachineSpec

__all__ = ["ImageContract", "ImageCapture"]


@record
class ImageCapture:
    """One image's capture, prepared before the capture action (``prepare_capture``)."""

    image_spec: "ImageSpec"
    image_options: Mapping[str, Any]
    #: the converged builder machine, and its options
    machine_spec: "MachineSpec"
    machine_options: Mapping[str, Any]
    #: the capture action's description
    description: str
    #: the driver's own: whatever its ``capture_image`` needs (never saved)
    plan: Any = None


class ImageContract:
    """The image methods of ``Driver`` (one of its base classes)."""

    scheme: ClassVar[str]
    driver_url: str
    base_reference: Any  # ResourceContract's
    resource_label: Any  # ResourceContract's

    # -- the contract ------------------------------------------------------------------------
    def allocate_image(self, action_handler: "ActionHandler", image_spec: "ImageSpec",
                       image_options: Mapping[str, Any], machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> None:
        """Capture the converged machine ``machine_spec`` as image ``image_spec.name`` and
        save ``image_spec.reference`` (``driver_url``, ``driver_version`` and what
        ``capture_image`` returned: ``image_id``, the value this driver's ``image`` machine
        option takes to boot from it) before any wait. Under why-run: the plan only."""
        if not self._uses_image_hooks():
            raise self._no_images("capture machine images")
        capture = self.prepare_capture(action_handler, image_spec, image_options, machine_spec,
                                       machine_options)

        def capture_and_save() -> None:
            fields = self.capture_image(action_handler, capture)
            if not fields.get("image_id"):
                raise TypeError(f"{type(self).__name__}.capture_image returned no image_id: "
                                "it must return the reference fields of the image it made")
            image_spec.reference = self.base_reference(**fields)
            image_spec.save()
        action_handler.perform_action(capture.description, capture_and_save)

    def ready_image(self, action_handler: "ActionHandler", image_spec: "ImageSpec",
                    image_options: Mapping[str, Any]) -> None:
        """Wait until the image can boot machines (``wait_for_image``). Under why-run an image
        whose capture was only planned is reported ("would wait for ...")."""
        if not self._uses_image_hooks():
            raise self._no_images("wait for machine images")
        if not image_spec.reference.get("image_id"):
            if action_handler.why_run:
                action_handler.report_progress(
                    f"would wait for {self.describe_image_ready(image_spec)}")
                return
            raise MachineNotFound(f"image {image_spec.name!r} was never captured; build it "
                                  "(converge image build)", machine=image_spec.name)
        self.wait_for_image(action_handler, image_spec, image_options)

    def destroy_image(self, action_handler: "ActionHandler", image_spec: "ImageSpec",
                      image_options: Mapping[str, Any]) -> None:
        """``delete_image`` unless the image is already gone (idempotent)."""
        if not self._uses_image_hooks():
            raise self._no_images("destroy machine images")
        description = self.plan_image_delete(image_spec)
        if description is None:
            action_handler.report_progress(
                f"image {image_spec.reference.get('image_id') or image_spec.name} is already "
                "gone")
            return
        action_handler.perform_action(description,
                                      lambda: self.delete_image(action_handler, image_spec))

    def image_state(self, image_spec: "ImageSpec") -> str:
        """What the warehouse says of the image: 'available', 'pending', 'missing' or
        'unknown'. Changes nothing. A cached image that is 'missing' is built again."""
        return "unknown" if image_spec.reference else "missing"

    # -- the image hooks: what a driver with Capabilities.images implements --------------------
    def capture_image(self, action_handler: "ActionHandler",
                      capture: ImageCapture) -> dict[str, Any]:
        """Make the image from the converged builder (you may stop or consume it: the core
        destroys it next) and return the fields its reference records: ``image_id`` at
        least. Called only in a real run, inside the capture action; the base saves them."""
        raise self._no_images("capture machine images")

    def delete_image(self, action_handler: "ActionHandler", image_spec: "ImageSpec") -> None:
        """Remove the image. Called only in a real run, only when ``plan_image_delete``
        returned a description."""
        raise self._no_images("destroy machine images")

    def prepare_capture(self, action_handler: "ActionHandler", image_spec: "ImageSpec",
                        image_options: Mapping[str, Any], machine_spec: "MachineSpec",
                        machine_options: Mapping[str, Any]) -> ImageCapture:
        """Check what capturing needs before the capture action, also under why-run (the
        builder exists: else ``MachineNotFound``), and choose what the action says and
        ``capture_image`` gets (``ImageCapture.plan``). Default: "capture machine m-1 as
        image NAME"."""
        label = self.resource_label(machine_spec.reference)
        return ImageCapture(image_spec, image_options, machine_spec, machine_options,
                            f"capture {label} as image {image_spec.name}")

    def wait_for_image(self, action_handler: "ActionHandler", image_spec: "ImageSpec",
                       image_options: Mapping[str, Any]) -> None:
        """Until the captured image can boot machines (a failed one is a ``ProviderError``).
        Default: ``image_state`` must say 'available' (else ``MachineNotFound``): for
        warehouses whose capture is done when ``capture_image`` returns."""
        state = self.image_state(image_spec)
        if state != "available":
            raise MachineNotFound(f"image {image_spec.name!r} "
                                  f"({image_spec.reference.get('image_id')}) is {state}; build "
                                  "it again", machine=image_spec.name)

    def plan_image_delete(self, image_spec: "ImageSpec") -> str | None:
        """The destroy action's description ("destroy image IMG-1"), or None when the image
        is already gone. Changes nothing; raise (a ``ProviderError`` naming them) when
        machines still boot from it and removing it would break them. Default: None when
        ``image_state`` says 'missing'."""
        if self.image_state(image_spec) == "missing":
            return None
        return f"destroy image {image_spec.reference.get('image_id') or image_spec.name}"

    def describe_image_ready(self, image_spec: "ImageSpec") -> str:
        """What ``ready_image`` would wait for when why-run only planned the capture."""
        return "the new image to be available"

    # -- helpers -----------------------------------------------------------------------------
    def _uses_image_hooks(self) -> bool:
        return type(self).capture_image is not ImageContract.capture_image

    def _no_images(self, what: str) -> Exception:
        return UnsupportedOperation(f"the {self.scheme}: driver ({self.driver_url}) cannot "
                                    f"{what} (its capabilities say images=False); boot machines "
                                    "from a base image and converge them instead")
