"""The ``fake:`` driver: a simulated warehouse for tests and dry experiments.

``fake:[DIR]`` keeps its "cloud" in DIR (default ``.provisioning/fake`` beside the state), as a
JSON file guarded by a file lock, so it survives across processes and counts every create. Each
server is a directory; its machine runs commands on this host through ``LocalTransport`` with
that directory as the working directory (relative paths land inside it; absolute paths are this
host's own, so keep fake clusters to relative paths).

Fault points (``provisioning.driver.faults``): ``after_create``, ``before_save``, ``during_ready``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from typing import Any, Iterator

from provisioning.driver import Driver
from provisioning.driver.faults import checkpoint
from provisioning.driver.options import OptionField
from provisioning.errors import MachineNotFound, ProviderError
from provisioning.machine.unix import UnixMachine
from provisioning.transports.local import LocalTransport

__all__ = ["FakeDriver", "FakeWarehouse"]

SIZES = ["small", "medium", "large"]
IMAGES = ["fake-linux"]
DEFAULT_DIR = os.path.join(".provisioning", "fake")


class FakeWarehouse:
    """The simulated cloud: servers.json in a directory, changed under an exclusive flock."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "servers.json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with open(os.path.join(self.directory, ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    with open(self.path, encoding="utf-8") as handle:
                        data = json.load(handle)
                except FileNotFoundError:
                    data = {"servers": {}, "counters": {"creates": 0, "destroys": 0}}
                before = json.dumps(data, sort_keys=True)
                yield data
                if json.dumps(data, sort_keys=True) != before:
                    tmp = f"{self.path}.tmp-{os.getpid()}"
                    with open(tmp, "w", encoding="utf-8") as handle:
                        json.dump(data, handle, indent=1, sort_keys=True)
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def servers(self) -> dict[str, dict[str, Any]]:
        with self._locked() as data:
            return dict(data["servers"])

    def get(self, server_id: str) -> dict[str, Any] | None:
        with self._locked() as data:
            return data["servers"].get(server_id)

    def counters(self) -> dict[str, int]:
        with self._locked() as data:
            return dict(data["counters"])

    def find_tagged(self, name: str, store_id: str | None) -> dict[str, Any] | None:
        for server in self.servers().values():
            tags = server.get("tags", {})
            if tags.get("provisioning:name") == name and tags.get("provisioning:store") == store_id:
                return server
        return None

    def create(self, name: str, tags: dict[str, str], size: str, image: str) -> dict[str, Any]:
        server_id = "srv-" + uuid.uuid4().hex[:12]
        machine_dir = os.path.join(self.directory, "machines", server_id)
        os.makedirs(machine_dir, mode=0o700)
        server = {"id": server_id, "name": name, "tags": tags, "size": size, "image": image,
                  "state": "running", "dir": machine_dir, "created_at": time.time()}
        with self._locked() as data:
            data["servers"][server_id] = server
            data["counters"]["creates"] += 1
        return server

    def set_state(self, server_id: str, state: str) -> None:
        with self._locked() as data:
            if server_id not in data["servers"]:
                raise MachineNotFound(f"fake server {server_id} does not exist")
            data["servers"][server_id]["state"] = state

    def delete(self, server_id: str) -> bool:
        with self._locked() as data:
            server = data["servers"].pop(server_id, None)
            if server is not None:
                data["counters"]["destroys"] += 1
        if server is not None:
            shutil.rmtree(server["dir"], ignore_errors=True)
        return server is not None


class FakeDriver(Driver):
    scheme = "fake"
    machine_option_fields = (
        OptionField("size", default="small", choices=SIZES, help="simulated server size"),
        OptionField("image", default="fake-linux", choices=IMAGES, help="simulated image"),
        OptionField("transport", type="dict", default={}, help="ignored: fake machines are local"),
        OptionField("ready_delay", type="float", default=0.0,
                    help="seconds ready_machine waits, to simulate a slow boot"),
    )

    @classmethod
    def canonicalize_url(cls, url, config):
        rest = url.split(":", 1)[1]
        directory = rest or os.path.join(config.base_dir, DEFAULT_DIR)
        return "fake:" + os.path.abspath(os.path.join(config.base_dir, os.path.expanduser(directory)))

    def __init__(self, driver_url, config):
        super().__init__(driver_url, config)
        self.warehouse = FakeWarehouse(driver_url.split(":", 1)[1])

    # -- helpers ---------------------------------------------------------------------------
    def _server(self, spec) -> dict[str, Any] | None:
        server_id = spec.reference.get("server_id")
        return self.warehouse.get(server_id) if server_id else None

    def _machine(self, spec, options, action_handler=None) -> UnixMachine:
        server = self._server(spec)
        if server is None:
            raise MachineNotFound(f"fake server for {spec.name!r} is gone; run up to re-create it",
                                  machine=spec.name)
        return UnixMachine(spec.name, LocalTransport(server["dir"]), spec=spec, options=options,
                           action_handler=action_handler)

    # -- the contract ------------------------------------------------------------------------
    def allocate_machine(self, action_handler, machine_spec, machine_options):
        size = machine_options.get("size", "small")
        image = machine_options.get("image", "fake-linux")
        if machine_spec.exists:
            server = self._server(machine_spec)
            if server is not None:
                if server["size"] != size:
                    action_handler.report_progress(
                        f"server {server['id']} is size {server['size']}, wished {size}: the fake "
                        "cloud cannot resize; destroy and re-create to change it")
                return
            action_handler.report_progress(
                f"server {machine_spec.reference.get('server_id')} no longer exists; re-creating")
        tagged = self.warehouse.find_tagged(machine_spec.name, machine_spec.store_id)
        if tagged is not None:
            def adopt():
                machine_spec.reference = self.base_reference(server_id=tagged["id"])
                machine_spec.save()
            action_handler.perform_action(f"adopt server {tagged['id']} tagged for this machine",
                                          adopt)
            return
        tags = {"provisioning:name": machine_spec.name,
                "provisioning:store": machine_spec.store_id or ""}

        def create() -> None:
            server = self.warehouse.create(machine_spec.name, tags, size, image)
            checkpoint("after_create", machine=machine_spec.name)
            machine_spec.reference = self.base_reference(server_id=server["id"])
            checkpoint("before_save", machine=machine_spec.name)
            machine_spec.save()
        action_handler.perform_action(f"create server ({size}, {image})", create)

    def ready_machine(self, action_handler, machine_spec, machine_options):
        if not machine_spec.exists:
            if action_handler.why_run:
                action_handler.report_progress("would wait for the new server to be ready")
                return None
            raise MachineNotFound(f"machine {machine_spec.name!r} is not allocated",
                                  machine=machine_spec.name)
        server = self._server(machine_spec)
        if server is None:
            raise MachineNotFound(f"fake server for {machine_spec.name!r} is gone; run up to "
                                  "re-create it", machine=machine_spec.name)
        if server["state"] != "running":
            action_handler.perform_action(
                f"start server {server['id']}",
                lambda: self.warehouse.set_state(server["id"], "running"))
        checkpoint("during_ready", machine=machine_spec.name)
        delay = float(machine_options.get("ready_delay", 0) or 0)
        if delay and not action_handler.why_run:
            time.sleep(delay)
        return self._machine(machine_spec, machine_options, action_handler)

    def connect_to_machine(self, machine_spec, machine_options):
        server = self._server(machine_spec)
        if server is not None and server["state"] != "running":
            raise ProviderError(f"fake server {server['id']} is {server['state']}; ready it first",
                                machine=machine_spec.name, provider="fake")
        return self._machine(machine_spec, machine_options)

    def stop_machine(self, action_handler, machine_spec, machine_options):
        server = self._server(machine_spec)
        if server is None:
            action_handler.report_progress("server is gone: nothing to stop")
            return
        if server["state"] != "stopped":
            action_handler.perform_action(f"stop server {server['id']}",
                                          lambda: self.warehouse.set_state(server["id"], "stopped"))

    def destroy_machine(self, action_handler, machine_spec, machine_options):
        server = self._server(machine_spec)
        if server is None:
            action_handler.report_progress("server is already gone")
            return
        action_handler.perform_action(f"destroy server {server['id']}",
                                      lambda: self.warehouse.delete(server["id"]))

    def machine_state(self, machine_spec):
        server = self._server(machine_spec)
        return server["state"] if server else "missing"

    def list_choices(self):
        return {"sizes": list(SIZES), "images": list(IMAGES), "locations": ["local"]}
