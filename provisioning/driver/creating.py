"""Making resources through the warehouse hooks: adopt-or-create one machine's
(``settle_allocation``, ``make_resources``), or many in one request (``allocate_together``, for a
driver that overrides ``create_resources``), and the references saved around the request: the
pending reference a create request killed half-way leaves (``save_pending_reference``,
``create_pending``) and the references saved once it is made (``save_references``). The fault
points ``after_create`` (after the request) and ``before_save`` (before each save) are passed
here. A mixin of ``ResourceContract``, which joins it to the other hooks.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Hashable, Mapping, Sequence

from provisioning.errors import ConfigError, ProviderError
from provisioning.faults import checkpoint
from provisioning.inputs.records import record
from provisioning.parallel import BatchResult, Outcome

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.spec import MachineSpec

__all__ = ["CreateContract", "Creation", "PENDING_MARK"]

#: the references ``save_pending_reference`` replaced during this thread's create request
_pending = threading.local()
#: the reference field that marks a pending reference (``create_pending``)
PENDING_MARK = "create_pending"


#: the batch whose machines this thread settles now (``allocate_together``): its index of
#: the state's recorded resources, read once for the whole batch
_batch = threading.local()


class _RecordedResources:
    """Which entry of the state records a resource, by every hashable field of each entry's
    reference: a batch lists the state once, however many of its machines find a resource
    (a re-run after a crash finds every machine of the chunks the crash left unsaved)."""

    def __init__(self, entries: Any) -> None:
        self._all = [(entry.name, entry.reference or {}) for entry in entries]
        self._by_field: dict[tuple[str, Any], list[tuple[str, Mapping[str, Any]]]] = {}
        for name, reference in self._all:
            for key, value in reference.items():
                if isinstance(value, Hashable):
                    self._by_field.setdefault((key, value), []).append((name, reference))

    def owner(self, name: str, found: Mapping[str, Any], driver_url: str) -> str | None:
        key, value = next(iter(found.items()))
        candidates = self._by_field.get((key, value), ()) if isinstance(value, Hashable) \
            else self._all
        for other, reference in candidates:
            if other != name and reference.get("driver_url") in (None, driver_url) and \
                    all(reference.get(k) == v for k, v in found.items()):
                return other
        return None


def _recorded_elsewhere(machine_spec: "MachineSpec", found: Mapping[str, Any],
                        driver_url: str) -> str | None:
    """The name of another entry of the state whose reference records the resource
    ``find_resource`` found for ``machine_spec`` (every field of ``found``, same driver URL):
    adopting it would give two entries one resource, and destroying either would leave the
    other recording a resource that is gone. Asked only when something was found (a re-run
    after a crash, or a name an entry was renamed from); the state is listed once per batch."""
    store = machine_spec.store
    if store is None or not found:
        return None
    index = getattr(_batch, "recorded", None)
    if index is None or index[0] is not store:
        index = (store, _RecordedResources(store.list(machine_spec.kind)))
        if getattr(_batch, "active", False):
            _batch.recorded = index
    return index[1].owner(machine_spec.name, found, driver_url)


#: per thread, while an overridden ``allocate_machine`` runs: whether it went through
#: ``settle_allocation`` (the hooks' own adoption check) or not
_allocating = threading.local()
#: reference fields every driver records: they say nothing of which resource it is
_BOOKKEEPING = ("driver_url", "driver_version")


def _adoption_checked(allocate: Any) -> Any:
    """``allocate`` (a driver's own ``allocate_machine``) followed by the check the hooks make
    in ``settle_allocation``: a reference it records that another entry of the state records
    too (a resource tagged for a name ``state mv`` moved) is not kept. As there, the machine
    tries once more under a new generation (a new ``resource_name``); a driver that finds the
    same resource again gets a ProviderError, and the entry keeps its earlier reference."""
    @functools.wraps(allocate)
    def allocate_machine(self: Any, action_handler: "ActionHandler",
                         machine_spec: "MachineSpec", machine_options: Mapping[str, Any]) -> Any:
        if getattr(_allocating, "settled", None) is not None:  # an outer override checks
            return allocate(self, action_handler, machine_spec, machine_options)
        before = dict(machine_spec.reference)
        for attempt in (1, 2):
            _allocating.settled = False
            try:
                result = allocate(self, action_handler, machine_spec, machine_options)
                settled = _allocating.settled
            finally:
                _allocating.settled = None
            reference = machine_spec.reference
            if settled or action_handler.why_run or not reference or reference == before:
                return result
            found = {k: v for k, v in reference.items() if k not in _BOOKKEEPING}
            owner = _recorded_elsewhere(machine_spec, found, self.driver_url)
            if owner is None:
                return result
            machine_spec.reference = dict(before)
            if attempt == 1:
                action_handler.report_progress(
                    f"the resource {self.driver_url} recorded for this machine is recorded as "
                    f"machine {owner!r} in the state; trying again under a new tag "
                    f"({machine_spec.name}~{machine_spec.generation + 1})")
                machine_spec.generation += 1
        raise ProviderError(
            f"the {self.scheme}: driver ({self.driver_url}) gave machine {machine_spec.name!r} "
            f"the resource the state records as machine {owner!r}, twice: two entries would "
            "share one resource (destroying either would take it from the other); it was not "
            "recorded. The driver's allocate_machine must tag what it makes with "
            "machine_spec.resource_name and adopt only what carries that tag",
            provider=self.scheme)
    allocate_machine._adoption_checked = True  # type: ignore[attr-defined]
    return allocate_machine


@record
class Creation:
    """One machine's create, prepared before the create action (``prepare_create``)."""

    machine_spec: "MachineSpec"
    machine_options: Mapping[str, Any]
    #: the machine's handler (its actions carry its name)
    action_handler: "ActionHandler"
    #: the create action's description and event data
    description: str
    data: dict[str, Any] | None = None
    #: creations with the same group (not None) may be made in one request
    group: Hashable | None = None
    #: the driver's own: whatever its ``create_resources`` needs (never saved)
    plan: Any = None


class CreateContract:
    """The create half of ``ResourceContract``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A driver overriding ``allocate_machine`` (the advanced path) gets the adoption
        check of the hooks' path around it (``_adoption_checked``)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("allocate_machine")
        if own is not None and cls.__module__ != "provisioning.driver.resources" and \
                not getattr(own, "_adoption_checked", False):
            cls.allocate_machine = _adoption_checked(own)  # type: ignore[attr-defined]

    scheme: ClassVar[str]
    resource_kind: ClassVar[str]
    # ResourceContract's
    base_reference: Any
    resource_state: Any
    compare_with_wish: Any
    report_lost: Any
    find_resource: Any
    resource_label: Any
    driver_url: str
    adopt_resource: Any
    create_resource: Any
    describe_create: Any
    create_event_data: Any

    def settle_allocation(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                          machine_options: Mapping[str, Any]) -> "Creation | None":
        """The first half of ``allocate_machine``: keep, or adopt, the machine's resource;
        the ``Creation`` to make when there is none (``prepare_create``), else None."""
        if getattr(_allocating, "settled", None) is False:
            _allocating.settled = True  # an overridden allocate_machine came through the hooks
        if machine_spec.exists and not self.create_pending(machine_spec):
            if self.resource_state(machine_spec) != "missing":
                self.compare_with_wish(action_handler, machine_spec, machine_options)
                return None
            self.report_lost(action_handler, machine_spec)
        found = self.find_resource(machine_spec)
        owner = found is not None and _recorded_elsewhere(machine_spec, found, self.driver_url)
        if owner:  # renamed by 'state mv': its resource keeps this machine's tag
            action_handler.report_progress(
                f"{self.resource_label(found)} tagged for this machine is recorded as machine "
                f"{owner!r} in the state; making a new one (tagged {machine_spec.name}"
                f"~{machine_spec.generation + 1})")
            machine_spec.generation += 1  # a new tag and token: never that resource again
            found = self.find_resource(machine_spec)  # what a killed run made under it
            owner = found is not None and _recorded_elsewhere(machine_spec, found,
                                                              self.driver_url)
        if found is not None and not owner:
            self.adopt_resource(action_handler, machine_spec, machine_options, found)
            return None
        return self.prepare_create(action_handler, machine_spec, machine_options)

    def make_resources(self, action_handler: "ActionHandler", creations: Sequence["Creation"],
                       saved: set[str] | None = None) -> None:
        """The second half: one create action for ``creations`` (one machine's, or a group
        ``create_resources`` makes in one request). The fault point ``after_create`` follows
        the request, ``before_save`` precedes each save. A ``ConfigError`` from the request
        means nothing was made: pending references (``save_pending_reference``) are taken
        back. ``saved`` collects the names of the machines whose reference was saved."""
        single = len(creations) == 1
        handler = creations[0].action_handler if single else action_handler
        made: list[Any] = []
        saved = saved if saved is not None else set()

        def request() -> None:
            _pending.saved = []
            try:
                made[:] = self.create_resources(handler, creations)
            except ConfigError:
                for spec, old in _pending.saved:
                    self._take_back(spec, old)
                raise
            finally:
                _pending.saved = None
            checkpoint("after_create",
                       machine=creations[0].machine_spec.name if single else None)
            if len(made) != len(creations):
                raise ProviderError(f"asked the {self.scheme}: warehouse for {len(creations)} "
                                    f"resources in one request, got {len(made)}",
                                    provider=self.scheme)

        def save_all() -> None:
            """Every reference, ``before_save`` for each, then one save for all of them."""
            ready: list[MachineSpec] = []
            try:
                for creation, result in zip(creations, made):
                    self._record_reference(creation.machine_spec,
                                           self.record_created(creation, result))
                    checkpoint("before_save", machine=creation.machine_spec.name)
                    ready.append(creation.machine_spec)
            finally:
                self.save_references(ready, saved)

        def create() -> None:
            request()
            save_all()
        if single:
            handler.perform_action(creations[0].description, create, data=creations[0].data)
        elif not self.report_each_creation:
            handler.perform_action(self.describe_creations(creations), create)
        else:  # one request, then each machine's create reported as its own action
            failed: Exception | None = None
            if not handler.why_run:
                request()
                try:
                    save_all()
                except Exception as exc:  # reported below each machine that was saved
                    failed = exc
            for creation in creations:
                if handler.why_run or creation.machine_spec.name in saved:
                    creation.action_handler.perform_action(  # made and saved above
                        creation.description, lambda: None, data=creation.data)
            if failed is not None:
                raise failed

    def allocate_together(self, action_handler: "ActionHandler",
                          specs_and_options: Sequence[tuple["MachineSpec", Mapping[str, Any]]],
                          ) -> BatchResult:
        """``allocate_machines`` of a driver that makes many resources in one request: each
        machine is settled one by one (kept, adopted, or prepared), then the creations of
        each ``Creation.group`` are made in one ``make_resources``. One outcome per machine:
        a failure hides no other machine's."""
        results = BatchResult((spec.name, Outcome(spec.name)) for spec, _ in specs_and_options)
        groups: dict[Any, list[Creation]] = {}
        _batch.active, _batch.recorded = True, None
        try:
            for spec, options in specs_and_options:
                try:
                    creation = self.settle_allocation(action_handler.for_machine(spec.name),
                                                      spec, options)
                except Exception as exc:  # this machine's outcome; the others go on
                    results[spec.name].error = exc
                    continue
                if creation is not None:
                    key = creation.group if creation.group is not None else id(creation)
                    groups.setdefault(key, []).append(creation)
        finally:
            _batch.active, _batch.recorded = False, None
        saved: set[str] = set()
        for members in groups.values():
            try:
                self.make_resources(action_handler, members, saved)
            except Exception as exc:
                for creation in members:
                    name = creation.machine_spec.name
                    if results[name].error is None and name not in saved:
                        results[name].error = exc
        return results

    #: True: creations ``create_resources`` makes in one request are reported as one create
    #: action per machine (its own description, as if made alone) instead of one action
    #: described by ``describe_creations``; the request is made before the first is reported
    report_each_creation: ClassVar[bool] = False

    def prepare_create(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any]) -> "Creation":
        """Check and prepare what creating needs, before the create action (also under
        why-run): validate, import a key pair or open a port (each through
        ``perform_action``). Default: a ``Creation`` described by ``describe_create`` and
        ``create_event_data``, in no group."""
        return Creation(machine_spec, machine_options, action_handler,
                        self.describe_create(machine_spec, machine_options),
                        self.create_event_data(machine_spec, machine_options))

    def create_resources(self, action_handler: "ActionHandler",
                         creations: Sequence["Creation"]) -> list[Any]:
        """Make the resources of ``creations`` (one, or a group that shares one request) and
        return what was made for each, in order (``record_created`` turns it into reference
        fields). Called only in a real run. Default: ``create_resource`` of each."""
        return [self.create_resource(c.action_handler, c.machine_spec, c.machine_options)
                for c in creations]

    def record_created(self, creation: "Creation", made: Any) -> dict[str, Any]:
        """The reference fields of what ``create_resources`` made for ``creation`` (after
        the ``after_create`` fault point: tag a resource made in a shared request with its
        machine here). Default: ``made`` itself."""
        return dict(made)

    def describe_creations(self, creations: Sequence["Creation"]) -> str:
        """The action's description when ``create_resources`` makes several in one request."""
        names = ", ".join(c.machine_spec.name for c in creations)
        return f"create a {self.resource_kind} for each of {names} in one request"

    def save_reference(self, machine_spec: "MachineSpec", fields: Mapping[str, Any], *,
                       created: bool = False) -> None:
        """Record ``fields`` (with ``driver_url`` and ``driver_version``) as the machine's
        reference and save it, passing the fault points ``after_create`` (when ``created``)
        and ``before_save``: the one place the short path saves a reference."""
        if created:
            checkpoint("after_create", machine=machine_spec.name)
        self._record_reference(machine_spec, fields)
        checkpoint("before_save", machine=machine_spec.name)
        machine_spec.save()

    def _record_reference(self, machine_spec: "MachineSpec", fields: Mapping[str, Any]) -> None:
        """``fields`` as the machine's whole reference (a pending mark dropped: made now)."""
        machine_spec.reference = self.base_reference(
            **{k: v for k, v in fields.items() if k != PENDING_MARK})

    @staticmethod
    def save_references(specs: Sequence["MachineSpec"], saved: set[str] | None = None) -> None:
        """Save machines whose reference was just recorded, each store's in one ``save_many``
        (a batch create's hundred saves in one transaction). ``saved`` collects the names
        saved; the first error is raised once every store was tried."""
        failed: Exception | None = None
        stores: dict[int, list[MachineSpec]] = {}
        for spec in specs:
            stores.setdefault(id(spec.store), []).append(spec)
        for group in stores.values():
            try:
                if group[0].store is None:
                    continue  # an entry of no store: nothing to write
                group[0].store.save_many(group)
            except Exception as exc:
                failed = failed or exc
            finally:
                if saved is not None:
                    saved.update(s.name for s in group if s.store is None or s.unchanged())
        if failed is not None:
            raise failed

    def save_pending_reference(self, machine_spec: "MachineSpec",
                               fields: Mapping[str, Any]) -> None:
        """Inside ``create_resources``, before the request: record ``fields`` (an idempotency
        token, a batch id, a host key made for the resource) so a crash during the request
        leaves a trace the re-run finds. No fault point; a ``ConfigError`` from the request
        takes it back (nothing was made)."""
        saved = getattr(_pending, "saved", None)
        if saved is not None and all(spec is not machine_spec for spec, _ in saved):
            saved.append((machine_spec, dict(machine_spec.reference)))
        machine_spec.reference = self.base_reference(**{**fields, PENDING_MARK: True})
        machine_spec.save()

    def create_pending(self, machine_spec: "MachineSpec") -> bool:
        """True while the reference records only what ``save_pending_reference`` saved before
        a create request (a run killed during the request: the resource may or may not exist,
        and the next real allocate finds it or creates it). Allocate then skips the lost-resource
        report, and ready plans ("would wait for the new ...") or, in a real run, asks for
        ``up``. Default: the mark ``save_pending_reference`` leaves; override when your
        references tell it themselves (no provider id yet)."""
        return bool(machine_spec.reference.get(PENDING_MARK))

    @staticmethod
    def _take_back(machine_spec: "MachineSpec", before: dict[str, Any]) -> None:
        if before:
            machine_spec.reference = before
            machine_spec.save()
        else:
            machine_spec.delete()

