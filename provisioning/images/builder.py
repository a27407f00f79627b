"""ImageBuilder: build each image once, reuse it while its definition is unchanged.

Building image NAME (under the store's lock ``image:NAME``, so concurrent runs build it once):
the builder machine ``image-builder-NAME`` is created from the image's base and readied through
the ``Provisioner`` like any machine, converged with the image's packages and steps, captured by
the driver (``allocate_image``, ``ready_image``), then destroyed, also when a step failed. The
image's entry (kind ``image``) keeps the driver's reference plus ``key`` (the definition's
digest), ``built_at`` and ``build_seconds``. A previous build is destroyed after the new one is
ready unless machines still boot from it (then it is kept under ``retired`` and retried later).

Under why-run nothing is created: each image reports whether it would be built and why.

Readers and writers: a run booting machines from image NAME (``up``, ``kitchen create``)
holds a lease ``image-user:NAME:...`` of its own, taken under ``image:NAME`` and kept until
the run ends (``close``), so many runs share the image. A rebuild or a destroy of NAME, under
``image:NAME``, refuses with a ``StateError`` naming the runs holding such leases: replacing
the image under them would fail the machines they have yet to create.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from provisioning.convergence.steps import StepContext, StepsConvergence
from provisioning.errors import ConfigError, ProviderError, ProvisioningError, StateError
from provisioning.images.definition import BUILDER_PREFIX
from provisioning.inputs.records import record
from provisioning.inputs.schema import did_you_mean
from provisioning.keys import random_hex
from provisioning.spec import ImageSpec

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.driver import Driver
    from provisioning.images.definition import ImageDefinition
    from provisioning.lifecycle import Provisioner
    from provisioning.store import Lock

__all__ = ["ImageBuilder", "ImageStatus", "boot_from_images", "LOCK_PREFIX", "READER_PREFIX",
           "check_image_name"]

LOCK_PREFIX = "image:"
#: leases of the runs booting machines from an image: ``image-user:NAME:RANDOM``
READER_PREFIX = "image-user:"
#: seconds a run waits for another run building the same image
BUILD_LOCK_WAIT = 3600.0


@record(frozen=True)
class ImageStatus:
    """Where one image stands: ``state`` is 'built', 'outdated', 'missing' or 'not built'."""

    name: str
    state: str
    key: str
    image_id: str | None
    built_at: float | None
    build_seconds: float | None
    driver_url: str

    @property
    def needs_build(self) -> bool:
        return self.state != "built"

    def reason(self) -> str:
        return {"not built": "never built", "outdated": "its definition changed",
                "missing": "the driver no longer has it"}.get(self.state, "up to date")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "key": self.key[:12],
                "image_id": self.image_id, "built_at": self.built_at,
                "build_seconds": self.build_seconds, "driver_url": self.driver_url}


class ImageBuilder:
    """The images of one cluster, built through one ``Provisioner`` and its drivers."""

    def __init__(self, images: Mapping[str, "ImageDefinition"], provisioner: "Provisioner",
                 driver_for: Any) -> None:
        self.images = dict(images)
        self.provisioner = provisioner
        self.store = provisioner.store
        self.driver_for = driver_for  # url -> Driver (the runner's, one per URL)
        #: this run's shared holds of the images it boots machines from (``ensure(use=True)``)
        self._readers: list["Lock"] = []

    @property
    def handler(self) -> "ActionHandler":
        return self.provisioner.action_handler

    def definition(self, name: str) -> "ImageDefinition":
        check_image_name(name, self.images)
        return self.images[name]

    def spec(self, name: str) -> ImageSpec:
        return self.store.get_or_new("image", name)  # type: ignore[return-value]

    # -- reading -----------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """The image's cache key; an image built ``from`` another includes that one's key."""
        import hashlib

        definition = self.definition(name)
        own = definition.cache_key()
        if definition.base in self.images:
            own = hashlib.sha256(f"{own}\0{self.key(definition.base)}".encode()).hexdigest()
        return own

    def status(self, name: str) -> ImageStatus:
        definition = self.definition(name)
        key = self.key(name)
        spec = self.spec(name)
        ref = spec.reference
        if not ref.get("image_id"):
            state = "not built"
        elif ref.get("key") != key:
            state = "outdated"
        else:
            driver = self.driver_for(definition.driver_url)
            state = "built" if driver.image_state(spec) == "available" else "missing"
        return ImageStatus(name, state, key, ref.get("image_id"), ref.get("built_at"),
                           ref.get("build_seconds"), ref.get("driver_url")
                           or definition.driver_url)

    def image_id(self, name: str) -> str | None:
        return self.spec(name).reference.get("image_id")

    def stand_in(self, name: str) -> str:
        """What a machine booting from image ``name``, not built yet, is planned with (why-run,
        plan): the first built image below it, else the driver's own image at the bottom (an
        image of the file is no image the driver has)."""
        seen = {name}
        while name in self.images:
            name = self.images[name].base
            if name in seen:
                break
            seen.add(name)
            built = self.image_id(name) if name in self.images else None  # one store read
            if built:
                return built
        return name

    # -- building ----------------------------------------------------------------------------
    def ensure(self, names: Iterable[str], *, force: bool = False,
               use: bool = False) -> dict[str, str | None]:
        """Build the named images that need it (all of them with ``force``); returns each
        image's id (None under why-run for an image that would be built). ``use``: this run
        boots machines from them; each is held shared until ``close``."""
        out = {}
        for name in dict.fromkeys(names):
            out[name] = self._ensure_one(name, force=force, use=use)
        return out

    def close(self) -> None:
        """Let go of the images this run booted machines from (rebuilds may replace them)."""
        readers, self._readers = self._readers, []
        for lease in readers:
            lease.release()

    def _users(self, name: str) -> None:
        """StateError naming the runs booting machines from image ``name`` (other than this
        one), asked under its lock before it is rebuilt or destroyed."""
        prefix = f"{READER_PREFIX}{name}:"
        mine = {lease.name for lease in self._readers}
        users = [holder for lease, holder in sorted(self.store.locks().items())
                 if lease.startswith(prefix) and lease not in mine]
        if users:
            who = "; ".join(", ".join(f"{k} {h[k]}" for k in ("host", "pid", "command", "since")
                                      if h.get(k)) or "unknown holder" for h in users)
            raise StateError(f"image {name} is in use by {len(users)} run"
                             f"{'s' if len(users) != 1 else ''} booting machines from it "
                             f"({who}); rebuild or destroy it once they finish (if one died, its "
                             "hold frees when its lease expires)")

    def _ensure_one(self, name: str, *, force: bool, use: bool = False) -> str | None:
        handler = self.handler.for_machine(LOCK_PREFIX + name)
        parent = self.definition(name).base
        if parent in self.images:  # built from another image of the file: that one first
            self._ensure_one(parent, force=False)
        status = self.status(name)
        if not status.needs_build and not force and (not use or self.handler.why_run):
            handler.report_progress(f"image {name} is up to date ({status.key[:12]}): reused")
            return status.image_id
        why = "rebuild requested" if not status.needs_build else status.reason()
        if self.handler.why_run:
            definition = self.definition(name)
            handler.perform_action(f"build image {name} ({definition.summary()}; {why})",
                                   data={"image": name, "key": status.key})
            return status.image_id
        with self.store.lock(LOCK_PREFIX + name, wait=BUILD_LOCK_WAIT):
            fresh = self.status(name)  # another run may have built it while we waited
            image_id: str | None
            if fresh.needs_build or force:
                self._users(name)
                image_id = self._build(name, fresh, why, handler)
            else:
                handler.report_progress(f"image {name} is up to date ({fresh.key[:12]}): reused"
                                        if fresh == status else
                                        f"image {name} was built by another run: reused")
                image_id = fresh.image_id
            if use:
                self._readers.append(self.store.lock(f"{READER_PREFIX}{name}:{random_hex(16)}"))
            return image_id

    def _build(self, name: str, status: ImageStatus, why: str, handler: "ActionHandler") -> str:
        definition = self.definition(name)
        driver: "Driver" = self.driver_for(definition.driver_url)
        spec = self.spec(name)
        previous = dict(spec.reference)
        handler.report_progress(f"building image {name} ({definition.summary()}; {why}) in "
                                f"builder machine {definition.builder}")
        started = time.monotonic()
        options = definition.builder_options()
        if definition.base in self.images:
            options["image"] = self.image_id(definition.base)
        if self.provisioner.spec(definition.builder).exists:  # an interrupted build's builder
            handler.report_progress(f"destroying builder machine {definition.builder} left by "
                                    "an interrupted build")
            self.provisioner.destroy(definition.builder, options, driver)
        strategy = StepsConvergence(definition.all_steps(), StepContext(
            definition.base_dir, None, {"image": {"name": name, "from": definition.base}}))

        def build(d, h, machine_spec, o):
            d.allocate_machine(h, machine_spec, o)
            machine_spec.last_action = "ready"
            machine = d.ready_machine(h, machine_spec, o)
            machine_spec.last_action = "converge"
            machine.action_handler = h
            machine.convergence = strategy
            machine.setup_convergence()
            try:
                machine.converge()
            finally:
                machine.cleanup_convergence()
                machine.disconnect()
            machine_spec.last_action = "capture image"
            h.report_progress(f"capturing the builder as image {name}")
            d.allocate_image(handler, spec, {}, machine_spec, o)
            d.ready_image(handler, spec, {})

        try:
            self.provisioner.run_locked("image build", driver, definition.builder, options, build)
        except BaseException:
            try:  # never leave a builder behind; the build's own error is what matters
                self.provisioner.destroy(definition.builder, options, driver)
            except ProvisioningError as exc:
                handler.report_progress(f"builder machine {definition.builder} was not "
                                        f"destroyed: {exc}")
            raise
        self.provisioner.destroy(definition.builder, options, driver)
        spec.reference.update(key=status.key, built_at=time.time(),
                              build_seconds=round(time.monotonic() - started, 1),
                              definition=definition.summary())
        retired = [r for r in previous.get("retired", []) if r.get("image_id")]
        if previous.get("image_id") and previous.get("image_id") != spec.reference["image_id"]:
            retired.append({k: v for k, v in previous.items() if k != "retired"})
        spec.reference["retired"] = self._destroy_retired(driver, name, retired, handler)
        spec.last_action, spec.last_error = "build", None
        spec.save()
        handler.report_result(f"image {name} built in {spec.reference['build_seconds']:g} s "
                              f"({spec.reference['image_id']})",
                              data={"image": name, "seconds": spec.reference["build_seconds"]})
        return spec.reference["image_id"]

    def _destroy_retired(self, driver: "Driver", name: str, retired: list[dict[str, Any]],
                         handler: "ActionHandler") -> list[dict[str, Any]]:
        """Destroy earlier builds; keep (and return) those machines still boot from."""
        kept = []
        for reference in retired:
            old = ImageSpec(name=name, reference=dict(reference))
            try:
                driver.destroy_image(handler, old, {})
            except ProviderError as exc:
                handler.report_progress(f"kept the previous build {reference.get('image_id')}: "
                                        f"{exc.message}")
                kept.append(reference)
        return kept

    # -- destroying --------------------------------------------------------------------------
    def destroy(self, name: str) -> None:
        """Destroy the image (and earlier builds kept for machines) and forget it; also the
        builder machine of a build killed before the image's entry was first saved."""
        handler = self.handler.for_machine(LOCK_PREFIX + name)
        spec = self.spec(name)
        builder = self.provisioner.spec(BUILDER_PREFIX + name)
        if not spec.exists and not builder.exists:
            handler.report_progress(f"image {name} is not built: nothing to destroy")
            return
        definition = self.images.get(name)
        driver = self.driver_for(spec.reference.get("driver_url") or builder.driver_url
                                 or (definition.driver_url if definition else None))
        if self.handler.why_run:
            if builder.exists:
                self.provisioner.destroy(builder.name, {}, driver)
            if spec.exists:
                driver.destroy_image(handler, spec, {})
            return
        with self.store.lock(LOCK_PREFIX + name, wait=60):
            self._users(name)
            if self.provisioner.spec(builder.name).exists:  # a killed build's
                handler.report_progress(f"destroying builder machine {builder.name} left by an "
                                        "interrupted build")
                self.provisioner.destroy(builder.name, {}, driver)
            spec = self.spec(name)
            if not spec.exists:  # the build was killed before its entry was saved
                return
            kept = self._destroy_retired(driver, name, list(spec.reference.get("retired", [])),
                                         handler)
            if kept:
                spec.reference["retired"] = kept
                spec.save()
                raise ProviderError(f"image {name}: earlier builds are still the root of "
                                    "machines; destroy those machines first",
                                    provider=driver.scheme)
            driver.destroy_image(handler, spec, {})
            spec.delete()

    def saved_names(self) -> list[str]:
        """Images in the store (also those no longer in the file)."""
        return [entry.name for entry in self.store.list("image")]


def boot_from_images(definitions: Iterable[Any], builder: ImageBuilder) -> list[Any]:
    """Machine definitions whose ``image`` names a cluster image, pointed at its built id
    (built first when needed). Under why-run an image not built yet stands in as its base."""
    from dataclasses import replace

    definitions = list(definitions)
    wanted = [d.machine_options.get("image") for d in definitions
              if d.machine_options.get("image") in builder.images]
    if not wanted:
        return definitions
    built = builder.ensure(wanted, use=True)
    out = []
    for definition in definitions:
        name = definition.machine_options.get("image")
        if name in built:
            image = built[name] or builder.stand_in(name)
            definition = replace(definition,
                                 machine_options={**definition.machine_options, "image": image})
        out.append(definition)
    return out


def check_image_name(name: str, images: Mapping[str, Any]) -> None:
    """ConfigError (with a did-you-mean) when the cluster file defines no image ``name``;
    asked before the state opens, so a mistyped name writes nothing."""
    if name not in images:
        raise ConfigError(f"no image {name!r} in this cluster file"
                          f"{did_you_mean(name, images)}", key=f"images.{name}")
