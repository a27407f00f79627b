"""The machine-image cases of the conformance suite (``DriverConformance`` inherits them): the
image contract of ``provisioning.driver.image_contract`` for a driver that declares
``Capabilities(images=True)``.

- capture: a converged builder captured (``allocate_image`` + ``ready_image``) saves a plain-JSON
  entry naming the driver and an ``image_id`` that boots machines holding the builder's files;
- list: ``image_state`` tells each image apart (``missing`` before its capture and after its
  destroy, ``available`` between), and destroying one image leaves another untouched;
- why-run: a capture only planned saves nothing and waits for nothing;
- destroy: idempotent, planned only under why-run;
- pending capture and ``find_image``: a process killed (``after_capture:crash``) between the
  capture and the save of its entry leaves an entry whose ``capture_pending`` is true; the
  driver's ``find_image`` finds the image that capture made, ``destroy_image`` of the entry
  removes it (why-run only plans it), and the next ``allocate_image`` removes it before it
  captures anew, so no image is leaked. A driver without ``find_image`` (optional in the
  contract: the entry then tells the user to look) has this case skipped, the hook named.

A driver without images gets ``UnsupportedOperation`` from ``allocate_image`` and
``destroy_image`` (checked); its other image cases are skipped as not applicable.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.driver.image_contract import ImageContract
from provisioning.errors import UnsupportedOperation
from provisioning.faults import CRASH_EXIT_CODE

__all__ = ["ImageConformance"]

#: what the builder of a connectable driver writes, to be found on machines booted from it
MARK_FILE = "/etc/conformance-image"
MARK = "baked-into-the-image"


class ImageConformance:
    """Mixed into ``DriverConformance``; not used on its own."""

    # the hooks and helpers DriverConformance defines
    machine_options: Any
    count_machines: Any
    image_of: Any
    require: Any
    worker_timeout: float
    _up: Any
    _worker: Any

    # -- helpers -------------------------------------------------------------------------------
    def _builder(self, provisioner, driver, caps, name: str):
        """Up the builder machine of image ``name`` (marked, when connectable); its spec."""
        builder = f"{name}-builder"
        machine = self._up(provisioner, caps, driver, builder)
        if machine is not None:
            machine.execute_always(f"echo {MARK} > {MARK_FILE}")
            machine.disconnect()
        return provisioner.spec(builder)

    def _capture_from(self, builder, driver, store, handler, name: str):
        """Capture ``builder`` as image ``name`` through the contract; the saved entry."""
        image = store.get_or_new("image", name)
        driver.allocate_image(handler.for_machine(name), image, {}, builder,
                              self.machine_options(builder.name))
        saved = store.get("image", name)
        assert saved is not None, "allocate_image must save the image reference"
        assert saved.reference["driver_url"] == driver.driver_url and saved.reference["image_id"]
        assert not driver.capture_pending(saved), "a recorded capture is no longer pending"
        json.dumps(saved.reference)  # plain JSON
        driver.ready_image(handler.for_machine(name), image, {})
        return image

    def _capture(self, provisioner, driver, caps, store, handler, name: str):
        """Up a builder, capture it as image ``name``, destroy the builder."""
        builder = self._builder(provisioner, driver, caps, name)
        image = self._capture_from(builder, driver, store, handler, name)
        provisioner.destroy(builder.name, self.machine_options(builder.name), driver)
        return image

    @staticmethod
    def _found_spec(driver, image, found: dict[str, Any]):
        """An entry naming what ``find_image`` found, to ask ``image_state`` about it."""
        return type(image)(name=image.name, reference=driver.base_reference(**found))

    # -- the cases -----------------------------------------------------------------------------
    def test_image_from_a_converged_machine_boots_machines(self, provisioner, driver, caps,
                                                            store, handler):
        if not caps.images:
            image = store.get_or_new("image", "conf-noimage")
            with pytest.raises(UnsupportedOperation):
                driver.allocate_image(handler, image, {}, provisioner.spec("conf-x"), {})
            return
        image = self._capture(provisioner, driver, caps, store, handler, "conf-image")
        assert driver.image_state(image) == "available"
        image_id = image.reference["image_id"]
        name = "conf-from-image"
        options = {**self.machine_options(name), "image": image_id}
        machine = (provisioner.up(driver, name, options) if caps.connectable
                   else provisioner.allocate(driver, name, options) and None)
        assert self.count_machines(driver, name) == 1
        booted = self.image_of(driver, provisioner.spec(name))
        assert booted == image_id, (
            f"image_of(driver, spec) says the machine booted from {booted!r}, not {image_id!r}: "
            "record the image in the reference as 'image', or override the hook image_of")
        if machine is not None:
            assert machine.execute_always(f"cat {MARK_FILE}").stdout.strip() == MARK
            machine.disconnect()
        provisioner.destroy(name, options, driver)

    def test_image_state_tells_each_captured_image_apart(self, provisioner, driver, caps,
                                                         store, handler):
        """What ``converge image list`` shows: missing before the capture, two captures are
        two images, destroying one leaves the other available."""
        self.require(caps, "images")
        assert driver.image_state(store.get_or_new("image", "conf-list-a")) != "available"
        first = self._capture(provisioner, driver, caps, store, handler, "conf-list-a")
        second = self._capture(provisioner, driver, caps, store, handler, "conf-list-b")
        assert first.reference["image_id"] != second.reference["image_id"]
        assert [driver.image_state(i) for i in (first, second)] == ["available", "available"]
        for image in (first, second):
            assert driver.image_problem(image.reference["image_id"]) is None, \
                "image_problem must accept the id of an image the driver captured"
        driver.destroy_image(handler.for_machine(first.name), first, {})
        assert driver.image_state(first) == "missing"
        assert driver.image_state(second) == "available", "destroying one image took another"

    def test_image_capture_under_why_run_changes_nothing(self, provisioner, driver, caps, store):
        """Through the image contract: why-run plans the capture, saves no image entry, and
        ready_image of the image only planned says what it would wait for. Without images,
        why-run is refused too (UnsupportedOperation), not planned."""
        image = store.get_or_new("image", "conf-image-plan")
        planner = RecordingActionHandler(why_run=True)
        if not caps.images:
            with pytest.raises(UnsupportedOperation):
                driver.allocate_image(planner, image, {}, provisioner.spec("conf-x"), {})
            assert store.get("image", image.name) is None
            return
        builder = "conf-image-plan-builder"
        self._up(provisioner, caps, driver, builder)
        driver.allocate_image(planner.for_machine(image.name), image, {},
                              provisioner.spec(builder), self.machine_options(builder))
        assert planner.actions() and not planner.actions(performed=True)
        assert store.get("image", image.name) is None and not image.reference
        driver.ready_image(planner.for_machine(image.name), image, {})
        assert any("would wait for" in d for d in planner.descriptions("progress"))
        assert not planner.actions(performed=True)
        provisioner.destroy(builder, self.machine_options(builder), driver)

    def test_destroy_image_is_idempotent(self, provisioner, driver, caps, store, handler):
        if not caps.images:
            with pytest.raises(UnsupportedOperation):
                driver.destroy_image(handler, store.get_or_new("image", "conf-noimage"), {})
            return
        image = self._capture(provisioner, driver, caps, store, handler, "conf-image-gone")
        planner = RecordingActionHandler(why_run=True)
        driver.destroy_image(planner, image, {})
        assert not planner.actions(performed=True) and driver.image_state(image) == "available"
        driver.destroy_image(handler, image, {})
        assert driver.image_state(image) == "missing"
        driver.destroy_image(handler, image, {})  # already gone: reported, no error
        assert driver.image_state(image) == "missing"

    def test_a_capture_killed_before_its_save_leaks_no_image(self, tmp_path, conformance_config,
                                                             provisioner, driver, caps, store,
                                                             handler):
        """kill -9 at ``after_capture`` (the image made, its entry still pending), twice:
        ``destroy_image`` of the pending entry finds and removes what the first made (why-run
        only plans it), and the next capture removes what the second made before it
        captures anew."""
        self.require(caps, "images")
        self.require(caps, "cross_process")
        if type(driver).find_image is ImageContract.find_image:
            pytest.skip("not applicable: the driver has no find_image, so an image a killed "
                        "capture made cannot be found (implement find_image)")
        name = "conf-pending"
        for destroy in (True, False):  # the second finds the entry the destroy left
            builder = self._builder(provisioner, driver, caps, f"{name}-{int(destroy)}")
            worker = self._worker(tmp_path, conformance_config, driver, builder.name,
                                  operation="capture", image=name, fault="after_capture:crash")
            out, err = worker.communicate(timeout=self.worker_timeout)
            assert worker.returncode == CRASH_EXIT_CODE, (
                f"the capture never reached fault point 'after_capture' (exit "
                f"{worker.returncode}): {err}")
            provisioner.destroy(builder.name, self.machine_options(builder.name), driver)
            pending = store.get("image", name)
            assert pending is not None and driver.capture_pending(pending), \
                "allocate_image must save a pending entry before it captures"
            found = driver.find_image(pending)
            assert found and found.get("image_id"), \
                "find_image must find the image the killed capture made"
            leftover = self._found_spec(driver, pending, found)
            assert driver.image_state(leftover) in ("available", "pending")
            if destroy:
                planner = RecordingActionHandler(why_run=True)
                driver.destroy_image(planner.for_machine(name), pending, {})
                assert not planner.actions(performed=True)
                assert driver.image_state(leftover) in ("available", "pending")
                driver.destroy_image(handler.for_machine(name), pending, {})
                assert not driver.capture_pending(store.get("image", name))
            else:  # a new builder, as a rebuild makes: the capture may consume its builder
                self._capture(provisioner, driver, caps, store, handler, name)
                assert store.get("image", name).reference["image_id"] != found["image_id"]
            assert driver.image_state(leftover) == "missing", \
                f"the image the killed capture made ({found['image_id']}) was leaked"
