"""A driver written from docs/driver-guide.md alone: the drivers the guide, `converge new-driver`
and examples/driver-outside hand an outside author keep a machine's files inside the machine."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import provisioning.driver
from provisioning.config import Config
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url, register_driver
from provisioning.scaffold import new_driver

REPO = Path(__file__).resolve().parents[2]


def _guide_box_driver(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "driver-guide.md").read_text(),
                        flags=re.S)
    block = next(b for b in blocks if "class BoxDriver" in b)
    namespace = {name: getattr(provisioning.driver, name) for name in provisioning.driver.__all__}
    exec(compile(block, "driver-guide.md BoxDriver", "exec"), namespace)
    return "box", namespace["BoxDriver"]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_slots_driver(tmp_path):
    module = _load(REPO / "examples" / "driver-outside" / "provisioning_slots" / "driver.py",
                   "acceptance_slots_driver")
    return "slots", module.SlotsDriver


def _scaffolded_driver(tmp_path):
    made = new_driver("accbox", tmp_path / "scaffold")
    path = next(Path(made.root).rglob("driver.py"))
    return "accbox", _load(path, "acceptance_accbox_driver").AccboxDriver


@pytest.mark.parametrize("source", [_guide_box_driver, _example_slots_driver, _scaffolded_driver],
                         ids=["guide", "example", "new-driver"])
def test_a_machine_file_step_with_an_absolute_path_stays_inside_the_machine(
        tmp_path, store, handler, source):
    scheme, cls = source(tmp_path)
    register_driver(scheme, cls)
    config = Config({}, base_dir=str(tmp_path))
    driver = driver_for_url(f"{scheme}:{tmp_path / 'warehouse'}", config)
    machine = Provisioner(store, config=config, action_handler=handler).up(driver, "web", {})
    on_the_host = tmp_path / "host" / "motd"   # a path of this host a file step names
    machine.write_file(str(on_the_host), "from the machine\n")
    assert not on_the_host.exists(), "a file step of a directory machine wrote the host's file"
    assert machine.read_file(str(on_the_host)) == b"from the machine\n"
    inside = [p for p in (tmp_path / "warehouse").rglob("motd")]
    assert len(inside) == 1 and inside[0].read_text() == "from the machine\n"


def test_actions_name_a_resource_by_its_id_after_the_reference_is_read_back(
        tmp_path, store, handler):
    """The default label was the reference's first field; read back from the store, the keys
    come sorted, so a reference with an ``address`` named the box by its address."""
    _, box = _guide_box_driver(tmp_path)

    class AddressedBoxDriver(box):
        def create_resource(self, action_handler, machine_spec, machine_options):
            return {**super().create_resource(action_handler, machine_spec, machine_options),
                    "address": "192.0.2.7"}

    register_driver("box", AddressedBoxDriver)
    config = Config({}, base_dir=str(tmp_path))
    driver = driver_for_url(f"box:{tmp_path / 'warehouse'}", config)
    provisioner = Provisioner(store, config=config, action_handler=handler)
    provisioner.allocate(driver, "web", {})
    box_id = store.get("machine", "web").reference["box_id"]
    provisioner.destroy("web", {}, driver)
    performed = [a.description for a in handler.actions(performed=True)]
    assert performed == ["create box", f"destroy box {box_id}"], performed


def _run_guide_box_conformance(tmp_path, driver_body: str, keyword: str):
    """Run the conformance cases matching ``keyword`` on a subclass of the guide's BoxDriver
    (scheme ``sub``) whose class body is ``driver_body``, in a pytest of its own."""
    import subprocess
    import sys

    (tmp_path / "test_sub_box.py").write_text(f'''
import json, os, re, shutil
import provisioning.driver
from provisioning.registry import register_driver
from provisioning.testing.conformance import DriverConformance

GUIDE = {str(REPO / "docs" / "driver-guide.md")!r}
block = next(b for b in re.findall(r"```python\\n(.*?)```", open(GUIDE).read(), flags=re.S)
             if "class BoxDriver" in b)
names = {{n: getattr(provisioning.driver, n) for n in provisioning.driver.__all__}}
exec(compile(block, "driver-guide.md BoxDriver", "exec"), names)


class SubBoxDriver(names["BoxDriver"]):
    scheme = "sub"

    @classmethod
    def canonicalize_url(cls, url, config):
        return "sub:" + names["BoxDriver"].canonicalize_url(url, config).split(":", 1)[1]
{driver_body}

register_driver("sub", SubBoxDriver)


class TestSubBox(DriverConformance):
    def driver_url(self, tmp_path):
        return f"sub:{{tmp_path / 'boxes'}}"

    def count_machines(self, driver, name):
        return sum(b["name"] == name for b in driver.boxes())
''')
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-k", keyword, str(tmp_path / "test_sub_box.py")],
                          cwd=tmp_path, capture_output=True, text=True)


def test_the_conformance_suite_catches_a_batch_delete_that_leaves_machines(tmp_path):
    """The guide's BoxDriver with a ``delete_resources`` that removes only the first machine it
    is handed (``converge destroy`` leaves the rest running, their entries gone) passed every
    conformance case: none destroyed a batch."""
    run = _run_guide_box_conformance(tmp_path, """
    def delete_resources(self, action_handler, machine_specs):
        self.delete_resource(action_handler, machine_specs[0])
""", "batch")
    assert run.returncode == 1, run.stdout + run.stderr   # 0: the suite let the bug through
    assert "1 failed" in run.stdout and "delete_resources got them all" in run.stdout, run.stdout


def test_a_slot_driver_that_re_creates_a_lost_machine_under_the_same_id_passes(tmp_path):
    """A warehouse of slots or a pool of hosts hands a re-created machine the same id (the slot
    named for it, the first free host): the lost-resource case demanded another reference and
    failed such a driver (an SSH host pool written from the guide hit it)."""
    run = _run_guide_box_conformance(tmp_path, """
    def create_resource(self, action_handler, machine_spec, machine_options):
        box = {"id": "slot-" + machine_spec.name, "name": machine_spec.name, "state": "running",
               "token": self.idempotency_token(machine_spec)}
        os.makedirs(os.path.join(self.root, box["id"], "root"))
        with open(os.path.join(self.root, box["id"], "box.json"), "w") as handle:
            json.dump(box, handle)
        return {"box_id": box["id"]}
""", "lost")
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_machine_option_the_drivers_own_check_refuses_is_refused_before_the_state_file(
        tmp_path, monkeypatch):
    """The guide says ``validate_machine_options`` is what the cluster loader uses for each
    machine; the loader checked only the declared fields, so an outside driver's own check
    (override, calling ``super()``) ran first at allocate, after the state file was made."""
    from provisioning.cluster import Cluster
    from provisioning.errors import ConfigError, ConfigProblem

    _, box = _guide_box_driver(tmp_path)

    class SoldOutBoxDriver(box):
        def validate_machine_options(self, machine_options, *, where, file=None):
            found = super().validate_machine_options(machine_options, where=where, file=file)
            if machine_options.get("size") == "large":
                found.append(ConfigProblem("large boxes are sold out; use size: small",
                                           key=f"{where}.size", file=file))
            return found

    register_driver("box", SoldOutBoxDriver)
    (tmp_path / "cluster.yml").write_text(
        'driver: "box:./boxes"\nmachines:\n  web: {count: 2, machine_options: {size: large}}\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        Cluster.load(str(tmp_path / "cluster.yml"))
    assert [(p.key, p.message) for p in refused.value.problems] == [
        ("machines.web.machine_options.size", "large boxes are sold out; use size: small")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]
