"""The ``fake:`` driver: a simulated warehouse for tests and dry experiments.

``fake:[DIR]`` keeps its "cloud" in DIR (default ``.provisioning/fake`` beside the state), as a
JSON file guarded by a file lock, so it survives across processes and counts every create. Each
server is a directory, the machine's whole filesystem: its machine runs commands on this host
through ``LocalTransport`` in that directory, and every path of a file step or a command's
``cwd`` (absolute, relative, with ``..``) lands inside it; a symbolic link leading out is refused.
Commands themselves still run on this host: the simulation confines paths, it is no jail.

Fault points (``provisioning.faults``): ``after_create``, ``before_save``, ``during_ready``,
``during_destroy``. What a killed run leaves is finished or removed by the next (fake_reclaim).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from typing import Any, Iterator

from provisioning.driver import Capabilities, Driver
from provisioning.driver.options import OptionField
from provisioning.drivers.fake_reclaim import leftovers, reclaim, removing_dir, staging_dir
from provisioning.errors import ConfigError, MachineNotFound, ProviderError
from provisioning.faults import checkpoint
from provisioning.machine.unix import UnixMachine
from provisioning.parallel import BatchResult, Outcome
from provisioning.transports.local import LocalTransport

__all__ = ["FakeDriver", "FakeWarehouse"]

SIZES = ["small", "medium", "large"]
IMAGES = ["fake-linux"]
DEFAULT_DIR = os.path.join(".provisioning", "fake")
#: seconds ``hold_ready_until`` waits at most for its file
HOLD_LIMIT = 600.0


class FakeWarehouse:
    """The simulated cloud in a directory: one JSON file per server (``servers/ID.json``), a
    tag index (``tags/``) so finding a machine's server costs one read however many there are,
    and the create/destroy counters in ``counters.json`` under an exclusive flock.

    Every file is replaced atomically. A cloud written by an older version (one
    ``servers.json``) is split into this layout the first time it is opened.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: the counters: a baseline (carried over from the old layout) plus one byte appended
        #: to creates.log / destroys.log per server, so counting takes no lock
        self.path = os.path.join(directory, "counters.json")
        self.legacy_path = os.path.join(directory, "servers.json")  # the old one-file layout
        self.servers_dir = os.path.join(directory, "servers")
        self.tags_dir = os.path.join(directory, "tags")
        self._ready = False

    # -- files -------------------------------------------------------------------------------
    def _absent(self) -> bool:
        """No warehouse yet: readers see it empty and do not create it (why-run, status)."""
        return not self._ready and not os.path.isdir(self.directory)

    def _prepare(self) -> None:
        if self._ready:
            return
        for path in (self.directory, self.servers_dir, self.tags_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        if os.path.exists(self.legacy_path):
            with self._counters() as counters:
                if os.path.exists(self.legacy_path):  # another process may have split it
                    with open(self.legacy_path, encoding="utf-8") as handle:
                        old = json.load(handle)
                    for server in old.get("servers", {}).values():
                        self._write_server(server)
                    counters.update(old.get("counters", {}))
                    os.unlink(self.legacy_path)
        reclaim(self.directory, self.servers_dir)  # what killed runs left behind
        self._ready = True

    @staticmethod
    def _write_json(path: str, value: Any) -> None:
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle, sort_keys=True)
        os.replace(tmp, path)

    def _tag_path(self, name: str, store_id: str | None) -> str:
        import hashlib  # OpenSSL's digests load on first use, not at start-up

        digest = hashlib.sha256(f"{store_id or ''}\0{name}".encode()).hexdigest()[:32]
        return os.path.join(self.tags_dir, digest)

    def _write_server(self, server: dict[str, Any]) -> None:
        tags = server.get("tags", {})
        if "provisioning:name" in tags:  # index first: a crash in between leaves no orphan
            with open(self._tag_path(tags["provisioning:name"], tags.get("provisioning:store")),
                      "w", encoding="utf-8") as handle:
                handle.write(server["id"])
        self._write_json(os.path.join(self.servers_dir, server["id"] + ".json"), server)

    def _count(self, event: str, n: int = 1) -> None:
        """Add ``n`` to a counter: one O_APPEND write, atomic without a lock (10,000 parallel
        destroys no longer queue on one counters file)."""
        fd = os.open(os.path.join(self.directory, f"{event}.log"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"." * n)
        finally:
            os.close(fd)

    def _tally(self) -> dict[str, int]:
        with self._counters() as baseline:
            counters = dict(baseline)
        for event in ("creates", "destroys"):
            with contextlib.suppress(FileNotFoundError):
                counters[event] = counters.get(event, 0) + os.path.getsize(
                    os.path.join(self.directory, f"{event}.log"))
        return counters

    @contextlib.contextmanager
    def _counters(self) -> Iterator[dict[str, int]]:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self.path
        with open(os.path.join(self.directory, ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    with open(path, encoding="utf-8") as handle:
                        counters = json.load(handle)
                except FileNotFoundError:
                    counters = {"creates": 0, "destroys": 0}
                before = dict(counters)
                yield counters
                if counters != before:
                    self._write_json(path, counters)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- reading -----------------------------------------------------------------------------
    def get(self, server_id: str) -> dict[str, Any] | None:
        if self._absent():
            return None
        self._prepare()
        try:
            with open(os.path.join(self.servers_dir, server_id + ".json"),
                      encoding="utf-8") as handle:
                return json.load(handle)
        except (FileNotFoundError, ValueError):
            return None

    def servers(self) -> dict[str, dict[str, Any]]:
        if self._absent():
            return {}
        self._prepare()
        out = {}
        for entry in sorted(os.listdir(self.servers_dir)):
            if entry.endswith(".json"):
                server = self.get(entry[:-5])
                if server is not None:
                    out[server["id"]] = server
        return out

    def counters(self) -> dict[str, int]:
        if self._absent():
            return {"creates": 0, "destroys": 0}
        self._prepare()
        return self._tally()

    def find_tagged(self, name: str, store_id: str | None) -> dict[str, Any] | None:
        if self._absent():
            return None
        self._prepare()
        try:
            with open(self._tag_path(name, store_id), encoding="utf-8") as handle:
                server = self.get(handle.read().strip())
        except FileNotFoundError:
            return None
        tags = (server or {}).get("tags", {})
        if tags.get("provisioning:name") == name and tags.get("provisioning:store") == store_id:
            return server
        return None

    # -- changing ----------------------------------------------------------------------------
    def create(self, name: str, tags: dict[str, str], size: str, image: str) -> dict[str, Any]:
        return self.create_many([(name, tags, size, image)])[0]

    def create_many(self, wishes: list[tuple[str, dict[str, str], str, str]]
                    ) -> list[dict[str, Any]]:
        """Create one server per (name, tags, size, image), counted under one lock."""
        import shutil  # with its archive modules: only to copy or remove a tree

        self._prepare()
        made = []
        for name, tags, size, image in wishes:
            server_id = "srv-" + uuid.uuid4().hex[:12]
            machine_dir = os.path.join(self.directory, "machines", server_id)
            # made under a name tagged with this process, renamed once the server is recorded:
            # a run killed in between leaves nothing the next run cannot finish or remove
            staging = staging_dir(os.path.dirname(machine_dir), server_id)
            os.makedirs(os.path.dirname(machine_dir), mode=0o700, exist_ok=True)
            captured = self.image(image)
            if captured is not None:  # a machine image: its files are the server's first files
                shutil.copytree(captured["dir"], staging, symlinks=True)
            else:
                os.makedirs(staging, mode=0o700)
            server = {"id": server_id, "name": name, "tags": tags, "size": size,
                      "image": image, "state": "running", "dir": machine_dir,
                      "created_at": time.time()}
            self._write_server(server)
            os.rename(staging, machine_dir)
            made.append(server)
        self._count("creates", len(made))
        return made

    def tag(self, server_id: str, tags: dict[str, str]) -> None:
        """Add or change tags of a server (an older tag index entry no longer matches it)."""
        server = self.get(server_id)
        if server is None:
            raise MachineNotFound(f"fake server {server_id} does not exist")
        server["tags"] = {**server.get("tags", {}), **tags}
        self._write_server(server)

    def set_state(self, server_id: str, state: str) -> None:
        server = self.get(server_id)
        if server is None:
            raise MachineNotFound(f"fake server {server_id} does not exist")
        server["state"] = state
        self._write_json(os.path.join(self.servers_dir, server_id + ".json"), server)

    # -- machine images: a copy of a server's files (images/ID/files, images/ID.json) ------
    def capture(self, server_id: str, name: str) -> dict[str, Any]:
        import shutil  # with its archive modules: only to copy or remove a tree

        server = self.get(server_id)
        if server is None:
            raise MachineNotFound(f"fake server {server_id} does not exist")
        image_id = "img-" + uuid.uuid4().hex[:12]
        image_dir = os.path.join(self.directory, "images", image_id)
        shutil.copytree(server["dir"], os.path.join(image_dir, "files"), symlinks=True)
        image = {"id": image_id, "name": name, "dir": os.path.join(image_dir, "files"),
                 "created_at": time.time()}
        self._write_json(os.path.join(image_dir, "image.json"), image)
        return image

    def image(self, image_id: str) -> dict[str, Any] | None:
        if not image_id.startswith("img-") or "/" in image_id:
            return None
        try:
            with open(os.path.join(self.directory, "images", image_id, "image.json"),
                      encoding="utf-8") as handle:
                return json.load(handle)
        except (FileNotFoundError, ValueError):
            return None

    def delete_image(self, image_id: str) -> bool:
        import shutil  # with its archive modules: only to copy or remove a tree

        if self.image(image_id) is None:
            return False
        image_dir = os.path.join(self.directory, "images", image_id)
        os.unlink(os.path.join(image_dir, "image.json"))
        shutil.rmtree(image_dir, ignore_errors=True)
        return True

    def delete(self, server_id: str) -> bool:
        import shutil  # with its archive modules: only to copy or remove a tree

        server = self.get(server_id)
        if server is None:
            return False
        trash = removing_dir(os.path.dirname(server["dir"]), server_id)
        with contextlib.suppress(FileNotFoundError):  # first out of the way, then forgotten
            os.rename(server["dir"], trash)
        try:
            os.unlink(os.path.join(self.servers_dir, server_id + ".json"))
        except FileNotFoundError:
            return False  # another process deleted it first
        checkpoint("during_destroy", machine=server.get("name"))
        tags = server.get("tags", {})
        if "provisioning:name" in tags:
            tag = self._tag_path(tags["provisioning:name"], tags.get("provisioning:store"))
            with contextlib.suppress(FileNotFoundError):
                with open(tag, encoding="utf-8") as handle:
                    points_here = handle.read().strip() == server_id
                if points_here:
                    os.unlink(tag)
        self._count("destroys")
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def leftovers(self) -> list[str]:
        """Files and directories that belong to no server (what a killed run left)."""
        return leftovers(self.directory, self.servers_dir) if not self._absent() else []


class FakeDriver(Driver):
    scheme = "fake"
    capabilities = Capabilities(images=True, crash_safe_destroy=True, imports=True,
                                create_before_destroy=True)
    machine_option_fields = (
        OptionField("size", default="small", choices=SIZES, help="simulated server size"),
        OptionField("image", default="fake-linux",
                    help="simulated image: fake-linux, or the image_id of a captured image"),
        OptionField("transport", type="dict", default={}, help="ignored: fake machines are local"),
        OptionField("ready_delay", type="float", default=0.0,
                    help="seconds ready_machine waits, to simulate a slow boot"),
        OptionField("hold_ready_until", help="a file: ready_machine waits until it exists "
                                             "(tests hold runners mid-run, then let them go)"),
    )

    @classmethod
    def canonicalize_url(cls, url, config):
        rest = url.split(":", 1)[1]
        directory = rest or os.path.join(config.base_dir, DEFAULT_DIR)
        return f"{cls.scheme}:" + os.path.abspath(os.path.join(config.base_dir,
                                                             os.path.expanduser(directory)))

    def __init__(self, driver_url, config):
        super().__init__(driver_url, config)
        self.warehouse = FakeWarehouse(driver_url.split(":", 1)[1])
        #: the server record resource_state read last, per thread (one read per ready)
        self._read = threading.local()

    # -- the warehouse hooks (the base class owns adopt-or-create, why-run, fault points) ----
    resource_kind = "server"

    def _server(self, spec) -> dict[str, Any] | None:
        server_id = spec.reference.get("server_id")
        return self.warehouse.get(server_id) if server_id else None

    def allocate_machine(self, action_handler, machine_spec, machine_options):
        image = machine_options.get("image", "fake-linux")
        if image not in IMAGES and self.warehouse.image(image) is None:
            raise ConfigError(f"fake image {image!r} does not exist; use fake-linux or a "
                              "captured image", key="machine_options.image",
                              machine=machine_spec.name)
        super().allocate_machine(action_handler, machine_spec, machine_options)

    def find_resource(self, machine_spec):
        tagged = self.warehouse.find_tagged(machine_spec.resource_name, machine_spec.store_id)
        return {"server_id": tagged["id"]} if tagged else None

    def describe_create(self, machine_spec, machine_options):
        return (f"create server ({machine_options.get('size', 'small')}, "
                f"{machine_options.get('image', 'fake-linux')})")

    def create_resource(self, action_handler, machine_spec, machine_options):
        server = self.warehouse.create(machine_spec.name, self._tags(machine_spec),
                                       machine_options.get("size", "small"),
                                       machine_options.get("image", "fake-linux"))
        return {"server_id": server["id"]}

    @staticmethod
    def _tags(spec) -> dict[str, str]:
        return {"provisioning:name": spec.resource_name, "provisioning:store": spec.store_id or ""}

    def _just_read(self, spec) -> dict[str, Any] | None:
        """The server record this thread's ``resource_state`` read last, if it is ``spec``'s
        (the base class calls ``compare_with_wish`` and ``wait_for_machine`` right after it):
        one read of the warehouse per step instead of two."""
        server = getattr(self._read, "server", None)
        return server if server and server["id"] == spec.reference.get("server_id") else None

    def compare_with_wish(self, action_handler, machine_spec, machine_options):
        server = self._just_read(machine_spec) or self._server(machine_spec)
        size = machine_options.get("size", "small")
        if server is not None and server["size"] != size:
            action_handler.report_progress(
                f"server {server['id']} is size {server['size']}, wished {size}: the fake "
                "cloud cannot resize; destroy and re-create to change it")

    def resource_state(self, machine_spec):
        server = self._server(machine_spec)
        self._read.server = server  # ready's wait_for_machine builds the machine from it
        return server["state"] if server else "missing"

    def start_resource(self, action_handler, machine_spec, machine_options):
        self.warehouse.set_state(machine_spec.reference["server_id"], "running")

    def stop_resource(self, action_handler, machine_spec, machine_options):
        self.warehouse.set_state(machine_spec.reference["server_id"], "stopped")

    def delete_resource(self, action_handler, machine_spec):
        self.warehouse.delete(machine_spec.reference["server_id"])

    def open_machine(self, machine_spec, machine_options, action_handler=None) -> UnixMachine:
        return self._machine(machine_spec, machine_options, action_handler)

    def _machine(self, spec, options, action_handler=None, server=None) -> UnixMachine:
        """``server``: its record, just read (else read here)."""
        server = server or self._server(spec)
        if server is None:
            raise MachineNotFound(f"fake server for {spec.name!r} is gone; run up to re-create it",
                                  machine=spec.name)
        return UnixMachine(spec.name, LocalTransport(server["dir"], confine=True), spec=spec,
                           options=options, action_handler=action_handler)

    def wait_for_machine(self, action_handler, machine_spec, machine_options, *,
                         started=True):
        """Ready at once, unless the options ask to simulate a slow boot or to be held."""
        delay = float(machine_options.get("ready_delay", 0) or 0)
        if delay and not action_handler.why_run:
            time.sleep(delay)
        hold = machine_options.get("hold_ready_until")
        if hold and not action_handler.why_run:
            self._wait_for_file(machine_spec.name, hold)
        waited = (delay or hold) and not action_handler.why_run  # it may be gone since
        just_read = None if waited else self._just_read(machine_spec)
        return self._machine(machine_spec, machine_options, action_handler, server=just_read)

    @staticmethod
    def _wait_for_file(name: str, path: str, limit: float = HOLD_LIMIT) -> None:
        deadline = time.monotonic() + limit
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise ProviderError(f"held for {limit:.0f} s and {path} never appeared (the "
                                    "machine option hold_ready_until)", machine=name,
                                    provider="fake")
            time.sleep(0.02)

    # -- import ------------------------------------------------------------------------------
    def import_machine(self, action_handler, machine_spec, machine_options, resource_id):
        """Adopt server ``resource_id`` (``srv-...``), tagging it for this machine and store."""
        server = self.warehouse.get(resource_id) if "/" not in resource_id else None
        if server is None:
            known = ", ".join(sorted(self.warehouse.servers())[:5]) or "none"
            raise MachineNotFound(f"fake server {resource_id!r} does not exist in "
                                  f"{self.warehouse.directory} (servers: {known})",
                                  machine=machine_spec.name)

        def adopt() -> None:
            self.warehouse.tag(resource_id, self._tags(machine_spec))
            machine_spec.reference = self.base_reference(server_id=resource_id)
        action_handler.perform_action(f"import server {resource_id} ({server['size']}, "
                                      f"{server['image']}, {server['state']})", adopt)

    def resource_id(self, reference):
        return reference.get("server_id")

    # -- batches: the fake cloud's bulk calls ------------------------------------------------
    def machine_states(self, machine_specs, parallelizer=None):
        """One pass over the warehouse for all machines."""
        return {spec.name: self.resource_state(spec) for spec in machine_specs}

    def allocate_machines(self, action_handler, specs_and_options, parallelizer=None):
        """Machines with no server (and none tagged for them) are created in one warehouse
        call; the others go through ``allocate_machine`` as usual."""
        results = BatchResult((spec.name, Outcome(spec.name)) for spec, _ in specs_and_options)
        fresh, others = [], []
        for spec, options in specs_and_options:
            new = (not action_handler.why_run and self._server(spec) is None
                   and self.warehouse.find_tagged(spec.resource_name, spec.store_id) is None)
            (fresh if new else others).append((spec, options))
        if others:
            results.update(super().allocate_machines(action_handler, others, parallelizer))
        if not fresh:
            return results
        wishes = [(spec.name, self._tags(spec), options.get("size", "small"),
                   options.get("image", "fake-linux"))
                  for spec, options in fresh]
        try:
            servers = self.warehouse.create_many(wishes)
        except Exception as exc:  # the bulk call failed: every machine in it failed
            for spec, _ in fresh:
                results[spec.name].error = exc
            return results
        for (spec, _options), server in zip(fresh, servers):
            def record(spec=spec, server=server) -> None:
                self.save_reference(spec, {"server_id": server["id"]}, created=True)
            try:
                action_handler.for_machine(spec.name).perform_action(
                    f"create server ({server['size']}, {server['image']})", record)
            except Exception as exc:
                results[spec.name].error = exc
        return results

    def list_choices(self):
        return {"sizes": list(SIZES), "images": list(IMAGES), "locations": ["local"]}

    # -- machine images ----------------------------------------------------------------------
    def allocate_image(self, action_handler, image_spec, image_options, machine_spec,
                       machine_options):
        server = self._server(machine_spec)
        if server is None:
            raise MachineNotFound(f"builder server of image {image_spec.name!r} is gone",
                                  machine=machine_spec.name)

        def capture() -> None:
            image = self.warehouse.capture(server["id"], image_spec.name)
            image_spec.reference = self.base_reference(image_id=image["id"])
            image_spec.save()
        action_handler.perform_action(f"capture server {server['id']} as image "
                                      f"{image_spec.name}", capture)

    def ready_image(self, action_handler, image_spec, image_options):
        if not image_spec.reference and action_handler.why_run:
            return
        if self.image_state(image_spec) != "available":
            raise MachineNotFound(f"fake image of {image_spec.name!r} is gone; build it again",
                                  machine=image_spec.name)

    def destroy_image(self, action_handler, image_spec, image_options):
        image_id = image_spec.reference.get("image_id")
        if not image_id or self.warehouse.image(image_id) is None:
            action_handler.report_progress(f"image {image_spec.name} is already gone")
            return
        action_handler.perform_action(f"destroy image {image_id}",
                                      lambda: self.warehouse.delete_image(image_id))

    def image_state(self, image_spec):
        image_id = image_spec.reference.get("image_id")
        return "available" if image_id and self.warehouse.image(image_id) else "missing"
