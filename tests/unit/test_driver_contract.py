"""The two paths of the driver contract: the warehouse hooks (the base class owns
adopt-or-create, why-run, fault points and the reference save) and the five methods a driver
overrides itself. The hooks' behaviour is proven by the conformance suite on the drivers built
on them (fake, examples/driver-outside, the scaffold); these tests pin what lies around it."""

from __future__ import annotations

import os
import shutil

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.driver import Driver
from provisioning.lifecycle import Provisioner
from provisioning.store.memory import MemoryStore


class _Nothing(Driver):
    scheme = "nothing"


class _OldStyle(Driver):
    """A driver written before the hooks: it overrides the five methods and nothing else."""

    scheme = "old-style"

    def allocate_machine(self, action_handler, machine_spec, machine_options):
        def record():
            machine_spec.reference = self.base_reference(thing="one")
            machine_spec.save()
        action_handler.perform_action("make the thing", record)

    def ready_machine(self, action_handler, machine_spec, machine_options):
        return None

    def connect_to_machine(self, machine_spec, machine_options):
        raise NotImplementedError

    def stop_machine(self, action_handler, machine_spec, machine_options):
        pass

    def destroy_machine(self, action_handler, machine_spec, machine_options):
        action_handler.perform_action("remove the thing", lambda: None)


def test_a_driver_with_neither_hooks_nor_methods_cannot_be_built(tmp_path):
    with pytest.raises(TypeError, match="create_resource.*resource_state.*open_machine"):
        _Nothing("nothing:", Config(base_dir=str(tmp_path)))
    assert _Nothing.missing_methods() == ["create_resource", "resource_state", "open_machine",
                                          "delete_resource"]


def test_a_driver_overriding_the_five_methods_works_unchanged(tmp_path):
    assert _OldStyle.missing_methods() == []
    driver = _OldStyle("old-style:", Config(base_dir=str(tmp_path)))
    handler = RecordingActionHandler()
    provisioner = Provisioner(MemoryStore(), config=driver.config, action_handler=handler)
    spec = provisioner.allocate(driver, "web-1")
    assert spec.reference == {"driver_url": "old-style:", "driver_version": "1", "thing": "one"}
    assert driver.machine_state(spec) == "unknown"  # it declares no resource_state
    provisioner.destroy("web-1", {}, driver)
    assert [a.description for a in handler.actions(performed=True)] == [
        "make the thing", "remove the thing"]


def test_the_idempotency_token_depends_on_store_and_name_only():
    from provisioning.spec import MachineSpec

    one = MachineSpec(name="web-1", reference={"a": 1})
    assert Driver.idempotency_token(one) == Driver.idempotency_token(MachineSpec(name="web-1"))
    assert Driver.idempotency_token(one) != Driver.idempotency_token(MachineSpec(name="web-2"))


class _OldImages(_OldStyle):
    """A driver that captured images before the image hooks: it overrides the three methods."""

    def allocate_image(self, action_handler, image_spec, image_options, machine_spec,
                       machine_options):
        def capture():
            image_spec.reference = self.base_reference(image_id="img-old")
            image_spec.save()
        action_handler.perform_action("capture the thing", capture)

    def ready_image(self, action_handler, image_spec, image_options):
        action_handler.report_progress("image ready")

    def destroy_image(self, action_handler, image_spec, image_options):
        action_handler.perform_action("remove the image", lambda: None)


def test_a_driver_overriding_the_image_methods_works_unchanged(tmp_path):
    driver = _OldImages("old-style:", Config(base_dir=str(tmp_path)))
    store = MemoryStore()
    handler = RecordingActionHandler()
    provisioner = Provisioner(store, config=driver.config, action_handler=handler)
    builder = provisioner.allocate(driver, "builder")
    image = store.get_or_new("image", "base")
    driver.allocate_image(handler, image, {}, builder, {})
    driver.ready_image(handler, image, {})
    driver.destroy_image(handler, image, {})
    assert store.get("image", "base").reference["image_id"] == "img-old"
    assert [a.description for a in handler.actions(performed=True)][1:] == [
        "capture the thing", "remove the image"]


def test_a_driver_without_image_hooks_refuses_images(tmp_path):
    from provisioning.errors import UnsupportedOperation

    driver = _OldStyle("old-style:", Config(base_dir=str(tmp_path)))
    image = MemoryStore().get_or_new("image", "base")
    for call in (lambda h: driver.allocate_image(h, image, {}, image, {}),
                 lambda h: driver.ready_image(h, image, {}),
                 lambda h: driver.destroy_image(h, image, {})):
        for why_run in (False, True):
            with pytest.raises(UnsupportedOperation, match="images=False"):
                call(RecordingActionHandler(why_run=why_run))


class _TwoHalves(Driver):
    """A directory per machine: delete renames it aside, finish deletes what was renamed."""

    scheme = "halves"
    resource_kind = "dir"

    def _path(self, spec, suffix=""):
        return self.config.base_dir + f"/{spec.name}{suffix}"

    def create_resource(self, action_handler, machine_spec, machine_options):
        os.mkdir(self._path(machine_spec))
        return {"dir_id": machine_spec.name}

    def resource_state(self, machine_spec):
        return "running" if os.path.isdir(self._path(machine_spec)) else "missing"

    def open_machine(self, machine_spec, machine_options, action_handler=None):
        raise NotImplementedError

    def delete_resource(self, action_handler, machine_spec):
        os.rename(self._path(machine_spec), self._path(machine_spec, ".removing"))

    def finish_delete(self, action_handler, machine_spec):
        shutil.rmtree(self._path(machine_spec, ".removing"), ignore_errors=True)

    def unfinished_delete(self, machine_spec):
        return "its files" if os.path.isdir(self._path(machine_spec, ".removing")) else None


def test_a_destroy_stopped_between_the_halves_is_finished_by_the_next(tmp_path, monkeypatch):
    """The base places during_destroy between delete_resource and finish_delete; the next
    destroy finishes (why-run only plans it) and forgets the machine."""
    driver = _TwoHalves("halves:", Config(base_dir=str(tmp_path)))
    store = MemoryStore()
    provisioner = Provisioner(store, config=driver.config)
    provisioner.allocate(driver, "web-1")
    monkeypatch.setenv("PROVISIONING_FAULT", "during_destroy:fail")
    with pytest.raises(Exception, match="injected failure at during_destroy"):
        provisioner.destroy("web-1", {}, driver)
    monkeypatch.delenv("PROVISIONING_FAULT")
    assert os.listdir(tmp_path) == ["web-1.removing"] and store.get("machine", "web-1")
    planner = RecordingActionHandler(why_run=True)
    Provisioner(store, config=driver.config, action_handler=planner).destroy("web-1", {}, driver)
    assert [a.description for a in planner.actions(performed=False)] == [
        "finish destroying dir web-1: remove its files"]
    assert os.listdir(tmp_path) == ["web-1.removing"]
    provisioner.destroy("web-1", {}, driver)
    assert os.listdir(tmp_path) == [] and store.get("machine", "web-1") is None


class _BulkHalves(_TwoHalves):
    """The same directories, taken aside many in one request (a warehouse's bulk delete)."""

    scheme = "bulk-halves"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests: list[list[str]] = []

    def delete_resources(self, action_handler, machine_specs):
        self.requests.append([spec.name for spec in machine_specs])
        for spec in machine_specs:
            os.rename(self._path(spec), self._path(spec, ".removing"))


def test_a_bulk_delete_removes_many_in_one_request_and_a_stop_between_its_halves_is_finished(
        tmp_path, monkeypatch):
    """destroy_machines of a driver with delete_resources: one request for the machines that
    exist (one already gone is reported), during_destroy after it, each machine's finish in its
    own action; stopped there, every machine of the request fails and the next destroy
    finishes them all. Why-run requests nothing."""
    driver = _BulkHalves("bulk-halves:", Config(base_dir=str(tmp_path)))
    assert driver.destroys_together()
    assert not _TwoHalves("halves:", Config(base_dir=str(tmp_path))).destroys_together()
    store = MemoryStore()
    provisioner = Provisioner(store, config=driver.config)
    names = ["web-1", "web-2", "web-3"]
    for name in names:
        provisioner.allocate(driver, name)
    os.rmdir(tmp_path / "web-3")  # gone behind our back
    specs = [(store.get("machine", name), {}) for name in names]
    planner = RecordingActionHandler(why_run=True)
    assert all(o.ok for o in driver.destroy_machines(planner, specs).values())
    assert driver.requests == [] and sorted(os.listdir(tmp_path)) == ["web-1", "web-2"]
    assert [a.description for a in planner.actions(performed=False)] == [
        "destroy dir web-1", "destroy dir web-2"]
    monkeypatch.setenv("PROVISIONING_FAULT", "during_destroy:fail")
    results = driver.destroy_machines(RecordingActionHandler(), specs)
    monkeypatch.delenv("PROVISIONING_FAULT")
    assert driver.requests == [["web-1", "web-2"]]
    assert {n: str(o.error) for n, o in results.items() if not o.ok} == {
        "web-1": "injected failure at during_destroy (PROVISIONING_FAULT)",
        "web-2": "injected failure at during_destroy (PROVISIONING_FAULT)"}
    assert sorted(os.listdir(tmp_path)) == ["web-1.removing", "web-2.removing"]
    handler = RecordingActionHandler()
    assert all(o.ok for o in driver.destroy_machines(handler, specs).values())
    assert driver.requests == [["web-1", "web-2"]]  # nothing left to request: only finished
    assert [a.description for a in handler.actions(performed=True)] == [
        "finish destroying dir web-1: remove its files",
        "finish destroying dir web-2: remove its files"]
    assert os.listdir(tmp_path) == []
    for name in ("web-4", "web-5"):
        provisioner.allocate(driver, name)
    handler = RecordingActionHandler()
    fresh = [(store.get("machine", name), {}) for name in ("web-4", "web-5")]
    assert all(o.ok for o in driver.destroy_machines(handler, fresh).values())
    assert driver.requests[-1] == ["web-4", "web-5"] and os.listdir(tmp_path) == []
    assert sorted(a.description for a in handler.actions(performed=True)) == [
        "destroy dir web-4", "destroy dir web-5"]  # finished on worker threads: any order


def test_driver_options_of_a_driver_declaring_none(tmp_path):
    """A driver that declares no ``driver_option_fields`` had its ``driver_options`` unchecked:
    a typo was silently ignored. A built-in one (fake:) now refuses every key, naming it and
    the accepted ones (none); one written outside the project keeps working, warned that its
    options are unchecked; declared fields are checked as before."""
    from provisioning.driver import OptionField
    from provisioning.errors import ConfigError
    from provisioning.registry import driver_for_url

    config = Config({"driver_options": {"fake:./cloud": {"colour": "red"},
                                        "old-style:": {"colour": "red"}}},
                    base_dir=str(tmp_path))
    with pytest.raises(ConfigError) as info:
        driver_for_url("fake:./cloud", config)
    assert "'colour'" in str(info.value) and "accepted: none" in str(info.value)
    assert info.value.problems[0].key.endswith(".colour")
    assert not (tmp_path / "cloud").exists()
    with pytest.warns(DeprecationWarning, match="declares no driver_option_fields.*colour"):
        driver = _OldStyle.from_url("old-style:", config)
    assert driver.driver_options == {"colour": "red"}

    class _Declared(_OldStyle):
        driver_option_fields = (OptionField("size", "str"),)
    with pytest.raises(ConfigError, match="unknown option 'colour'.*size"):
        _Declared.from_url("old-style:", config)


class _Tagging(_OldStyle):
    """The advanced path: its own allocate_machine, adopting what carries the machine's tag
    (``resource_name``, or the bare name with ``by_name``), else making a new resource."""

    scheme = "tagging"
    by_name = False

    def __init__(self, driver_url, config):
        super().__init__(driver_url, config)
        self.tags: dict[str, str] = {}  # tag -> resource id

    def allocate_machine(self, action_handler, machine_spec, machine_options):
        if machine_spec.exists:
            return
        tag = machine_spec.name if self.by_name else machine_spec.resource_name
        if tag not in self.tags:
            self.tags[tag] = f"r{len(self.tags) + 1}"
        machine_spec.reference = self.base_reference(id=self.tags[tag])
        machine_spec.save()

    def destroy_machine(self, action_handler, machine_spec, machine_options):
        machine_spec.delete()


def _moved_by_state_mv(provisioner, old, new):
    """What ``state mv OLD NEW`` leaves: NEW records OLD's resource (still tagged OLD)."""
    moved = provisioner.spec(new)
    moved.reference = dict(provisioner.spec(old).reference)
    moved.save()
    provisioner.store.delete("machine", old)


@pytest.mark.parametrize("by_name", [False, True], ids=["tags-by-resource-name", "by-name"])
def test_a_driver_overriding_allocate_never_gives_two_entries_one_resource(tmp_path, by_name):
    """The adoption check (``_recorded_elsewhere``) ran only on the hooks' path: a driver with
    its own allocate_machine adopted the resource another entry records. Now it tries again
    under a new generation, as the hooks do; one that adopts the same again fails, recording
    nothing."""
    from provisioning.errors import ProviderError

    driver = type("_T", (_Tagging,), {"by_name": by_name})("tagging:", Config(base_dir=str(tmp_path)))
    handler = RecordingActionHandler()
    provisioner = Provisioner(MemoryStore(), config=driver.config, action_handler=handler)
    provisioner.allocate(driver, "web-1")
    _moved_by_state_mv(provisioner, "web-1", "web-9")
    if by_name:
        with pytest.raises(ProviderError, match="records as machine 'web-9'"):
            provisioner.allocate(driver, "web-1")
        assert not provisioner.spec("web-1").exists
    else:
        spec = provisioner.allocate(driver, "web-1")
        assert spec.reference["id"] == "r2" and spec.generation == 1
        assert any("recorded as machine 'web-9'" in e.description for e in handler.events)
    assert provisioner.spec("web-9").reference["id"] == "r1"
