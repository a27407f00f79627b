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

Crash safety: before the capture the entry records a *pending* reference (``capture_pending``,
with ``ImageCapture.pending``: what the driver needs to find the image again), and the fault
point ``after_capture`` falls between the capture and the save of its result. A run killed in
between leaves an image the entry does not name; the next capture or destroy of that image
finds it (``find_image``) and destroys it before going on. The build replaced by a capture is
kept under ``retired`` in both references, so a kill never loses it either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from provisioning.errors import MachineNotFound, UnsupportedOperation
from provisioning.faults import checkpoint
from provisioning.inputs.records import record

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.spec import ImageSpec, MachineSpec

__all__ = ["ImageContract", "ImageCapture", "CAPTURE_MARK"]

#: the reference field that marks a capture begun but not recorded (``capture_pending``)
CAPTURE_MARK = "capture_pending"


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
    #: what the entry records before the capture (plain JSON, saved): what ``find_image``
    #: needs to find the image a capture killed half-way made (its directory, its unique name)
    pending: dict[str, Any] | None = None


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
        self.settle_pending_capture(action_handler, image_spec)
        capture = self.prepare_capture(action_handler, image_spec, image_options, machine_spec,
                                       machine_options)

        def capture_and_save() -> None:
            kept = _kept_builds(image_spec.reference)
            image_spec.reference = self.base_reference(
                **(capture.pending or {}), **{CAPTURE_MARK: True}, **kept)
            image_spec.save()  # what a run killed during the capture leaves: see find_image
            fields = self.capture_image(action_handler, capture)
            checkpoint("after_capture", machine=image_spec.name)
            if not fields.get("image_id"):
                raise TypeError(f"{type(self).__name__}.capture_image returned no image_id: "
                                "it must return the reference fields of the image it made")
            image_spec.reference = self.base_reference(**fields, **kept)
            image_spec.save()
        action_handler.perform_action(capture.description, capture_and_save)

    def settle_pending_capture(self, action_handler: "ActionHandler",
                               image_spec: "ImageSpec") -> None:
        """An entry whose capture was killed before its image was recorded
        (``capture_pending``): the image that capture made (``find_image``) is destroyed, then
        the entry keeps only the earlier builds (``retired``). Under why-run only planned."""
        if not self.capture_pending(image_spec):
            return
        found = self.find_image(image_spec)
        if found is not None:
            leftover = type(image_spec)(name=image_spec.name,
                                        reference=self.base_reference(**found))
            action_handler.perform_action(
                f"destroy image {found.get('image_id')}, made by a capture of "
                f"{image_spec.name} that was stopped before it was recorded",
                lambda: self.delete_image(action_handler, leftover))
        elif type(self).find_image is ImageContract.find_image:
            action_handler.report_progress(
                f"a capture of image {image_spec.name} was stopped before it was recorded; "
                f"the {self.scheme}: driver cannot look for what it made (no find_image): "
                "check the warehouse for an image nothing records")
        if not action_handler.why_run:
            image_spec.reference = self.base_reference(
                **_kept_builds(image_spec.reference, pending=True))
            image_spec.save()

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
        if self.capture_pending(image_spec):  # it names no image but one a killed capture made
            self.settle_pending_capture(action_handler, image_spec)
            return
        if not image_spec.reference.get("image_id"):
            action_handler.report_progress(f"image {image_spec.name} was never captured: "
                                           "nothing to destroy")
            return
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
        returned a description, or for an image ``find_image`` found. Idempotent."""
        raise self._no_images("destroy machine images")

    def find_image(self, image_spec: "ImageSpec") -> dict[str, Any] | None:
        """Optional: the reference fields (``image_id`` at least) of the image a capture made
        but a kill kept from being recorded, found by what the pending reference records
        (``ImageCapture.pending``: its directory, its unique name), or None when it made none.
        Changes nothing. ``delete_image`` then removes it. Default: None (nothing found: the
        entry then tells the user to look)."""
        return None

    def capture_pending(self, image_spec: "ImageSpec") -> bool:
        """True while the entry records only what was saved before a capture (a run killed
        during the capture, or before its result was saved)."""
        return bool(image_spec.reference.get(CAPTURE_MARK))

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


def _kept_builds(reference: Mapping[str, Any], *, pending: bool = False) -> dict[str, Any]:
    """The earlier builds a reference keeps (``retired``), with the build it records itself
    when it records one (a new capture replaces it) unless it is a ``pending`` one."""
    retired = [r for r in reference.get("retired") or () if r.get("image_id")]
    if reference.get("image_id") and not pending:
        retired.append({k: v for k, v in reference.items() if k != "retired"})
    return {"retired": retired} if retired else {}
