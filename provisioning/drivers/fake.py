"""The ``fake:`` driver: a simulated warehouse for tests and dry experiments.

``fake:[DIR]`` keeps its "cloud" in DIR (default ``.provisioning/fake`` beside the state): its
servers in an append-only journal (``fake_journal``), so it survives across processes and counts
every create, and a directory per server. That directory is the machine's whole filesystem: its
machine runs commands on this host through ``LocalTransport`` in it, and every path of a file
step or a command's ``cwd`` (absolute, relative, with ``..``) lands inside it; a symbolic link
leading out is refused.
Commands themselves still run on this host: the simulation confines paths, it is no jail.

Fault points (``provisioning.faults``): ``after_create``, ``before_save``, ``during_ready``,
``during_destroy`` (also between the halves of a batch destroy, ``delete_resources``),
``after_capture``. What a killed run leaves is finished or removed by the next (fake_reclaim;
an image a killed capture made: ``find_image``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from provisioning.driver import Capabilities, Driver, ImageCapture
from provisioning.driver.options import OptionField
from provisioning.drivers.fake_journal import ServerJournal
from provisioning.drivers.fake_reclaim import leftovers, reclaim, removing_dir, staging_dir
from provisioning.errors import ConfigError, MachineNotFound, ProviderError
from provisioning.inputs.userfiles import directory_problem, name_problem
from provisioning.keys import random_hex
from provisioning.machine.unix import UnixMachine
from provisioning.transports.local import LocalTransport

__all__ = ["FakeDriver", "FakeWarehouse"]

SIZES = ["small", "medium", "large"]
_IMAGE_ID = re.compile(r"^img-[0-9a-f]{12}$")
IMAGES = ["fake-linux"]
DEFAULT_DIR = os.path.join(".provisioning", "fake")
#: seconds ``hold_ready_until`` waits at most for its file
HOLD_LIMIT = 600.0


class FakeWarehouse:
    """The simulated cloud in a directory: the server records in one append-only journal
    (``servers/journal``, see ``fake_journal``), a directory per server (``machines/ID``: the
    machine's files), and the create/destroy counters (``creates.log`` / ``destroys.log``).

    Creating a batch of servers is one journal line and a directory each, made under the
    warehouse's flock so a run killed in between leaves nothing the next cannot tell apart
    (``fake_reclaim``). A cloud written by an older version (one ``servers.json``, or a JSON
    file per server with a tag index) is moved into the journal the first time it is opened.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: the counters: a baseline (carried over from the old layout) plus one byte appended
        #: to creates.log / destroys.log per server, so counting takes no lock
        self.path = os.path.join(directory, "counters.json")
        self.legacy_path = os.path.join(directory, "servers.json")  # the old one-file layout
        self.servers_dir = os.path.join(directory, "servers")
        self.tags_dir = os.path.join(directory, "tags")  # the per-file layout's tag index
        self.machines_dir = os.path.join(directory, "machines")
        self.journal = ServerJournal(os.path.join(self.servers_dir, "journal"),
                                     os.path.join(directory, ".lock"))
        self._ready = False

    # -- files -------------------------------------------------------------------------------
    def _absent(self) -> bool:
        """No warehouse yet: readers see it empty and do not create it (why-run, status)."""
        return not self._ready and not os.path.isdir(self.directory)

    def check_place(self) -> None:
        """ConfigError when no directory can be made where the URL points, found without
        writing: asked before the state opens."""
        problem = name_problem(self.directory) or directory_problem(self.directory)
        if problem:
            self._unusable(problem)

    def _unusable(self, why: str) -> None:
        raise ConfigError(f"cannot use {self.directory[:200]} as the fake cloud: {why}; give a "
                          "directory you can write (driver: fake:DIR)", key="driver")

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            for path in (self.directory, self.servers_dir, self.machines_dir):
                os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:  # the URL names a place no directory can be made
            self._unusable(str(exc.strerror or exc))
        with self.journal.locked() as journal:
            self._migrate(journal)
            reclaim(self.directory, self.servers_dir, journal)  # what killed runs left behind
            journal.compact()
        self._ready = True

    def _migrate(self, journal: ServerJournal) -> None:
        """Older layouts into the journal: records first, then the old files go."""
        import shutil  # with its archive modules: only to copy or remove a tree

        if os.path.exists(self.legacy_path):
            with open(self.legacy_path, encoding="utf-8") as handle:
                old = json.load(handle)
            journal.append(put=old.get("servers", {}).values())
            with self._counters() as counters:
                counters.update(old.get("counters", {}))
            os.unlink(self.legacy_path)
        files = [e for e in os.listdir(self.servers_dir) if e.endswith(".json")]
        if files:
            servers = []
            for entry in files:
                with contextlib.suppress(FileNotFoundError, ValueError), \
                        open(os.path.join(self.servers_dir, entry), encoding="utf-8") as handle:
                    servers.append(json.load(handle))
            journal.append(put=servers)
            for entry in files:
                os.unlink(os.path.join(self.servers_dir, entry))
        shutil.rmtree(self.tags_dir, ignore_errors=True)

    @staticmethod
    def _write_json(path: str, value: Any) -> None:
        tmp = f"{path}.tmp-{os.getpid()}-{random_hex(6)}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle, sort_keys=True)
        os.replace(tmp, path)

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
        """The counters' baseline (``counters.json``); callers hold the warehouse's lock or
        only read."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                counters = json.load(handle)
        except FileNotFoundError:
            counters = {"creates": 0, "destroys": 0}
        before = dict(counters)
        yield counters
        if counters != before:
            self._write_json(self.path, counters)

    def _read(self) -> bool:
        """Bring the journal up to date; False when there is no warehouse (nothing is made)."""
        if self._absent():
            return False
        self._prepare()
        self.journal.refresh()
        return True

    def states(self, server_ids: Iterable[str | None]) -> dict[str | None, str]:
        """id -> state ("missing" when gone) for many servers, from one look at the journal
        and without finishing what killed runs left (``status`` writes nothing)."""
        if os.path.exists(self.journal.path):
            self.journal.refresh()
        elif not self._read():
            return {}
        return {i: self.journal.state(i) if i else "missing" for i in server_ids}

    # -- reading -----------------------------------------------------------------------------
    def get(self, server_id: str) -> dict[str, Any] | None:
        return self.journal.get(server_id) if self._read() else None

    def servers(self) -> dict[str, dict[str, Any]]:
        if not self._read():
            return {}
        found = (self.journal.get(i) for i in self.journal.ids())
        return {server["id"]: server for server in found if server is not None}

    def counters(self) -> dict[str, int]:
        if self._absent():
            return {"creates": 0, "destroys": 0}
        self._prepare()
        return self._tally()

    def find_tagged(self, name: str, store_id: str | None) -> dict[str, Any] | None:
        return self.journal.tagged(name, store_id or "") if self._read() else None

    # -- changing ----------------------------------------------------------------------------
    def create(self, name: str, tags: dict[str, str], size: str, image: str) -> dict[str, Any]:
        return self.create_many([(name, tags, size, image)])[0]

    def create_many(self, wishes: list[tuple[str, dict[str, str], str, str]]
                    ) -> list[dict[str, Any]]:
        """Create one server per (name, tags, size, image): one journal line for the batch
        and a directory per server, all under the lock (see ``fake_reclaim``)."""
        import shutil  # with its archive modules: only to copy or remove a tree

        self._prepare()
        made: list[dict[str, Any]] = []
        staged: list[tuple[str, str]] = []
        for name, tags, size, image in wishes:
            server_id = "srv-" + random_hex(12)
            machine_dir = os.path.join(self.machines_dir, server_id)
            captured = self.image(image)
            if captured is not None:  # a machine image: its files are the server's first files
                # copied under a name tagged with this process (outside the lock), renamed
                # once the server is recorded
                staging = staging_dir(self.machines_dir, server_id)
                shutil.copytree(captured["dir"], staging, symlinks=True)
                staged.append((staging, machine_dir))
            made.append({"id": server_id, "name": name, "tags": tags, "size": size,
                         "image": image, "state": "running", "dir": machine_dir,
                         "created_at": time.time()})
        images = {machine_dir for _, machine_dir in staged}
        with self.journal.locked() as journal:
            for server in made:  # before the record: a crash leaves directories of no server
                if server["dir"] not in images:
                    os.mkdir(server["dir"], 0o700)
            journal.append(put=made)
            for staging, machine_dir in staged:
                os.rename(staging, machine_dir)
            self._count("creates", len(made))
        return made

    def _change(self, server_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Record the server with the fields ``change`` returns for its current record, read
        under the lock (two processes changing one server never lose each other's change)."""
        self._prepare()
        with self.journal.locked() as journal:
            server = journal.get(server_id)
            if server is None:
                raise MachineNotFound(f"fake server {server_id} does not exist")
            journal.append(put=[{**server, **change(server)}])

    def tag(self, server_id: str, tags: dict[str, str]) -> None:
        """Add or change tags of a server (an older tag no longer finds it)."""
        self._change(server_id, lambda server: {"tags": {**server.get("tags", {}), **tags}})

    def set_state(self, server_id: str, state: str) -> None:
        self._change(server_id, lambda server: {"state": state})

    # -- machine images: a copy of a server's files (images/ID/files, images/ID.json) ------
    @staticmethod
    def new_image_id() -> str:
        return "img-" + random_hex(12)

    def capture(self, server_id: str, name: str, image_id: str | None = None) -> dict[str, Any]:
        """Copy the server's files as image ``image_id`` (a new id when None): the files
        first, ``image.json`` last (an image without it is one a killed capture left)."""
        import shutil  # with its archive modules: only to copy or remove a tree

        server = self.get(server_id)
        if server is None:
            raise MachineNotFound(f"fake server {server_id} does not exist")
        image_id = image_id or self.new_image_id()
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

    def image_files(self, image_id: str) -> bool:
        """True when anything of image ``image_id`` is there (also half a capture)."""
        return _IMAGE_ID.match(image_id) is not None and os.path.isdir(
            os.path.join(self.directory, "images", image_id))

    def delete_image(self, image_id: str) -> bool:
        """Remove the image, also one a killed capture left half made; False when there
        was nothing."""
        import shutil  # with its archive modules: only to copy or remove a tree

        if not self.image_files(image_id):
            return False
        image_dir = os.path.join(self.directory, "images", image_id)
        with contextlib.suppress(FileNotFoundError):  # unusable first, then removed
            os.unlink(os.path.join(image_dir, "image.json"))
        shutil.rmtree(image_dir, ignore_errors=True)
        return True

    def delete(self, server_id: str) -> bool:
        """Destroy a server at once (both halves: ``forget``, then ``remove_files``); False
        when there is none."""
        if not self.forget(server_id):
            return False
        self.remove_files(server_id)
        return True

    def forget(self, server_id: str) -> bool:
        """A destroy's first half: the server's files moved aside, then the server out of the
        journal (and counted). ``remove_files`` is the second; a destroy killed between them
        leaves ``files_left``, which the next destroy (or the next opening) removes."""
        return bool(self.forget_many([server_id]))

    def forget_many(self, server_ids: Iterable[str]) -> list[str]:
        """``forget`` of many servers in one request: each one's files moved aside, then all of
        them out of the journal in one line (and counted once). Returns the ids forgotten here
        (not those unknown, or forgotten by another process first)."""
        if not self._read():
            return []
        known = [(i, server["dir"]) for i in server_ids
                 if (server := self.journal.get(i)) is not None]
        for server_id, directory in known:  # first out of the way, then forgotten
            with contextlib.suppress(FileNotFoundError):
                os.rename(directory, removing_dir(self.machines_dir, server_id))
        with self.journal.locked() as journal:
            gone = [i for i, _ in known if i in journal]  # another process may have been first
            journal.append(delete=gone)
        if gone:
            self._count("destroys", len(gone))
        return gone

    def files_left(self, server_id: str) -> bool:
        return os.path.isdir(removing_dir(self.machines_dir, server_id))

    def remove_files(self, server_id: str) -> None:
        import shutil  # with its archive modules: only to copy or remove a tree

        shutil.rmtree(removing_dir(self.machines_dir, server_id), ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Files and directories that belong to no server (what a killed run left)."""
        if not self._read():
            return []
        return leftovers(self.directory, self.servers_dir, self.journal)


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

    def validate_driver_options(self):
        super().validate_driver_options()
        self.warehouse.check_place()

    # -- the warehouse hooks (the base class owns adopt-or-create, why-run, fault points) ----
    resource_kind = "server"
    #: a batch's servers come from one warehouse request, each reported as its own create
    report_each_creation = True

    def _server(self, spec) -> dict[str, Any] | None:
        server_id = spec.reference.get("server_id")
        return self.warehouse.get(server_id) if server_id else None

    def find_resource(self, machine_spec):
        tagged = self.warehouse.find_tagged(machine_spec.resource_name, machine_spec.store_id)
        return {"server_id": tagged["id"]} if tagged else None

    def describe_create(self, machine_spec, machine_options):
        return (f"create server ({machine_options.get('size', 'small')}, "
                f"{machine_options.get('image', 'fake-linux')})")

    def prepare_create(self, action_handler, machine_spec, machine_options):
        """Check the image; every new server of a call shares one warehouse request."""
        problem = self.image_problem(machine_options.get("image", "fake-linux"))
        if problem:
            raise ConfigError(problem, key="machine_options.image", machine=machine_spec.name)
        creation = super().prepare_create(action_handler, machine_spec, machine_options)
        creation.group = "servers"
        return creation

    def image_problem(self, image):
        if image in IMAGES or self.warehouse.image(image) is not None:
            return None
        return f"fake image {image!r} does not exist; use fake-linux or a captured image"

    def create_resources(self, action_handler, creations):
        """The fake cloud's bulk create: one journal line for all of them."""
        return self.warehouse.create_many([
            (c.machine_spec.name, self._tags(c.machine_spec),
             c.machine_options.get("size", "small"), c.machine_options.get("image", "fake-linux"))
            for c in creations])

    def record_created(self, creation, made):
        return {"server_id": made["id"]}

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
        self.warehouse.forget(machine_spec.reference["server_id"])

    def delete_resources(self, action_handler, machine_specs):
        """The fake cloud's bulk delete: one journal line for all of them."""
        self.warehouse.forget_many([s.reference["server_id"] for s in machine_specs])

    def finish_delete(self, action_handler, machine_spec):
        self.warehouse.remove_files(machine_spec.reference["server_id"])

    def unfinished_delete(self, machine_spec):
        server_id = machine_spec.reference.get("server_id")
        if server_id and self.warehouse.files_left(server_id):
            return f"the files of server {server_id}"
        return None

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
        server = self._existing(resource_id, machine_spec.name)

        def adopt() -> None:
            self.warehouse.tag(resource_id, self._tags(machine_spec))
            machine_spec.reference = self.base_reference(server_id=resource_id)
        action_handler.perform_action(f"import server {resource_id} ({server['size']}, "
                                      f"{server['image']}, {server['state']})", adopt)

    def resource_id(self, reference):
        return reference.get("server_id")

    def resolve_resource_id(self, resource_id, machine):
        self._existing(resource_id, machine)
        return resource_id

    def _existing(self, resource_id: str, machine: str) -> dict[str, Any]:
        server = self.warehouse.get(resource_id) if "/" not in resource_id else None
        if server is None:
            known = ", ".join(sorted(self.warehouse.servers())[:5]) or "none"
            raise MachineNotFound(f"fake server {resource_id!r} does not exist in "
                                  f"{self.warehouse.directory} (servers: {known})",
                                  machine=machine)
        return server

    # -- batches: the fake cloud's bulk calls ------------------------------------------------
    def machine_states(self, machine_specs, parallelizer=None):
        """One look at the warehouse's journal for all machines."""
        found = self.warehouse.states(s.reference.get("server_id") for s in machine_specs)
        return {s.name: found.get(s.reference.get("server_id"), "missing")
                for s in machine_specs}

    def list_choices(self):
        return {"sizes": list(SIZES), "images": list(IMAGES), "locations": ["local"]}

    # -- machine images: the base class's allocate/ready/destroy_image, through these hooks ----
    def prepare_capture(self, action_handler, image_spec, image_options, machine_spec,
                        machine_options):
        server = self._server(machine_spec)
        if server is None:
            raise MachineNotFound(f"builder server of image {image_spec.name!r} is gone",
                                  machine=machine_spec.name)
        image_id = self.warehouse.new_image_id()  # recorded before the capture (pending)
        return ImageCapture(image_spec, image_options, machine_spec, machine_options,
                            f"capture server {server['id']} as image {image_spec.name}",
                            plan=(server["id"], image_id), pending={"capturing": image_id})

    def capture_image(self, action_handler, capture):
        server_id, image_id = capture.plan
        made = self.warehouse.capture(server_id, capture.image_spec.name, image_id)
        return {"image_id": made["id"]}

    def find_image(self, image_spec):
        image_id = image_spec.reference.get("capturing")
        if image_id and self.warehouse.image_files(image_id):
            return {"image_id": image_id}
        return None

    def delete_image(self, action_handler, image_spec):
        self.warehouse.delete_image(image_spec.reference["image_id"])

    def image_state(self, image_spec):
        image_id = image_spec.reference.get("image_id")
        return "available" if image_id and self.warehouse.image(image_id) else "missing"
