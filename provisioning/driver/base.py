"""Driver: one machine warehouse (a cloud account and region, a pool of hosts, nspawn machines).

Contract (the conformance suite in ``provisioning.testing.conformance`` checks it):

- ``allocate_machine`` reserves fast and records ``machine_spec.reference`` (with ``driver_url``,
  ``driver_version`` and the provider's id), saving it *before* waiting on anything. Where it can,
  it tags the resource with the spec's name and store id and adopts a tagged resource instead of
  creating a second one, so a crash at any point leaves nothing a re-run cannot find.
- ``ready_machine`` boots if needed and waits until connectable; returns a ``Machine``. Under
  why-run, for a machine that does not exist, it reports what it would wait for and returns None.
- ``connect_to_machine`` changes nothing and waits for nothing.
- ``stop_machine`` powers off but keeps the machine; ``destroy_machine`` is idempotent and works
  on a reference whose resource is already gone.
- Every change goes through ``action_handler.perform_action``.
- A reference whose resource no longer exists is reported and re-created, never silently kept;
  a wish that differs from the machine (size, image) is moved safely or reported.
"""

from __future__ import annotations

import abc
import functools
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from provisioning.driver.capabilities import Capabilities
from provisioning.driver.image_contract import ImageContract
from provisioning.driver.local_features import (
    Snapshot,
    check_local_options,
    copy_folder,
    synced_folders,
    unsupported,
)
from provisioning.driver.options import (
    LOCAL_OPTION_KEYS,
    DriverDescription,
    OptionField,
    driver_option_problems,
    raise_problems,
    validate_options,
)
from provisioning.driver.resources import ResourceContract
from provisioning.errors import ConfigProblem, UnsupportedOperation, error_message
from provisioning.keys import find_private_key
from provisioning.parallel import BatchResult, Parallelizer

if TYPE_CHECKING:  # pragma: no cover
    import socket

    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.keys import PrivateKey
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["Driver", "Capabilities", "SpecsAndOptions"]

#: what the batch methods take: (spec, machine_options) pairs
SpecsAndOptions = Sequence[tuple["MachineSpec", Mapping[str, Any]]]


class Driver(ResourceContract, ImageContract, abc.ABC):
    """Base class of every driver. Subclasses set ``scheme`` and implement either the
    warehouse hooks of ``ResourceContract`` or the five contract methods (see there); a
    driver that captures machine images, the image hooks of ``ImageContract``."""

    scheme: ClassVar[str]
    #: the pip extra that provides this driver's dependencies (for MissingExtra errors)
    extra: ClassVar[str | None] = None
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: typed option declarations: validation, describe(), CLI help and the wizard read these
    driver_option_fields: ClassVar[Sequence[OptionField]] = ()
    machine_option_fields: ClassVar[Sequence[OptionField]] = ()
    version: ClassVar[str] = "1"

    def __init__(self, driver_url: str, config: "Config") -> None:
        self.driver_url = driver_url
        self.config = config
        self.driver_options: dict[str, Any] = config.driver_options_for(driver_url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.driver_url}>"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def canonicalize_url(cls, url: str, config: "Config") -> str:
        """The URL every runner would use for this warehouse (absolute paths, resolved
        profiles, default regions), never containing credentials."""
        return url

    @classmethod
    def from_url(cls, url: str, config: "Config") -> "Driver":
        driver = cls(url, config)
        driver.validate_driver_options()
        return driver

    def validate_driver_options(self) -> None:
        raise_problems(driver_option_problems(type(self), self.options_with_secrets(),
                                              where=f"driver_options[{self.driver_url!r}]"))

    def options_with_secrets(self) -> dict[str, Any]:
        """``driver_options`` plus the secret fields found in the config's ``credentials`` for
        this URL (where ``converge init`` puts them: never in cluster files or state). Use it
        to read a password or API key; never log or save what it returns."""
        secret = {f.name.split(".")[0] for f in self.driver_option_fields if f.secret}
        found = {k: v for k, v in self.config.credentials_for(self.driver_url).items()
                 if k in secret}
        return {**self.driver_options, **found}

    def validate_machine_options(self, machine_options: Mapping[str, Any], *, where: str,
                                 file: str | None = None) -> list[ConfigProblem]:
        """Problems with one machine's options (the cluster loader collects them all). The
        local-machine keys (``sync``, ``ports``) are checked here for every driver, against its
        capabilities, and never reach the driver's own option fields."""
        local = [k for k in LOCAL_OPTION_KEYS if k in machine_options]
        own = {k: v for k, v in machine_options.items() if k not in local}
        found = validate_options(self.machine_option_fields, own, where=where,
                                 file=file, strict=bool(self.machine_option_fields))
        if local:  # most machines have neither
            found += check_local_options(machine_options, self.capabilities, where=where,
                                         file=file, driver_url=self.driver_url)
        return found

    # -- batches: per machine through the parallelizer; bulk APIs override --------------------
    def _batch(self, method: str, action_handler: "ActionHandler", specs_and_options: SpecsAndOptions,
               parallelizer: Parallelizer | None) -> BatchResult:
        parallelizer = parallelizer or Parallelizer(int(self.config.get("parallel", 10)))
        fn = getattr(self, method)
        return parallelizer.run(
            (spec.name, functools.partial(fn, action_handler.for_machine(spec.name), spec, opts))
            for spec, opts in specs_and_options)

    def allocate_machines(self, action_handler: "ActionHandler", specs_and_options: SpecsAndOptions,
                          parallelizer: Parallelizer | None = None) -> BatchResult:
        """Per machine, in parallel; a driver whose ``create_resources`` makes many in one
        request gets ``allocate_together`` instead."""
        if self._uses_hooks("create_resources"):
            return self.allocate_together(action_handler, specs_and_options)
        return self._batch("allocate_machine", action_handler, specs_and_options, parallelizer)

    def ready_machines(self, action_handler: "ActionHandler", specs_and_options: SpecsAndOptions,
                       parallelizer: Parallelizer | None = None) -> BatchResult:
        return self._batch("ready_machine", action_handler, specs_and_options, parallelizer)

    def stop_machines(self, action_handler: "ActionHandler", specs_and_options: SpecsAndOptions,
                      parallelizer: Parallelizer | None = None) -> BatchResult:
        return self._batch("stop_machine", action_handler, specs_and_options, parallelizer)

    def destroy_machines(self, action_handler: "ActionHandler", specs_and_options: SpecsAndOptions,
                         parallelizer: Parallelizer | None = None) -> BatchResult:
        """Per machine, in parallel; a driver whose ``delete_resources`` removes many in one
        request gets ``destroy_together`` instead."""
        if self._uses_hooks("delete_resources"):
            return self.destroy_together(action_handler, specs_and_options, parallelizer or
                                         Parallelizer(int(self.config.get("parallel", 10))))
        return self._batch("destroy_machine", action_handler, specs_and_options, parallelizer)

    def destroys_together(self) -> bool:
        """True when ``destroy_machines`` removes many machines in fewer requests than one
        each (the driver overrides ``delete_resources`` or ``destroy_machines``): ``converge
        destroy`` then hands it the machines a chunk at a time."""
        return self._uses_hooks("delete_resources") or \
            type(self).destroy_machines is not Driver.destroy_machines

    # -- fleet scale: one call for many machines ----------------------------------------------
    #: most machines ``converge up`` hands to one ``allocate_machines`` call (bulk APIs cap a
    #: request; a driver without one still gets its per-machine calls in parallel)
    allocate_chunk_size: ClassVar[int] = 100

    def machine_states(self, machine_specs: Sequence["MachineSpec"],
                       parallelizer: Parallelizer | None = None) -> dict[str, str]:
        """``machine_state`` of many machines, name -> state: ``status`` asks each driver once
        for all its machines. The default asks one by one (in parallel); drivers whose
        warehouse lists many machines in one request override it."""
        parallelizer = parallelizer or Parallelizer(int(self.config.get("parallel", 10)))
        results = parallelizer.run((spec.name, functools.partial(self.machine_state, spec))
                                   for spec in machine_specs)
        return {name: str(outcome.value) if outcome.ok else
                f"unknown ({error_message(outcome.error)[:60]})"
                for name, outcome in results.items()}

    def image_problem(self, image: str) -> str | None:
        """Why a new machine cannot boot from ``image`` (its ``image`` machine option), told
        without changing anything; None when it can, or when the driver cannot tell before
        acting (the default). ``converge`` asks it for every machine not in the state yet
        before it writes anything, so a typo'd image creates no state file."""
        return None

    # -- import: adopt a resource made outside the state (``converge import``) ----------------
    # A driver that can sets Capabilities.imports and overrides both methods.
    def import_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                       machine_options: Mapping[str, Any], resource_id: str) -> None:
        """Record the existing resource ``resource_id`` (the form ``resource_id()`` returns:
        a cloud node id, an nspawn machine name, an ssh ``host[:port]``...) as
        ``machine_spec.reference`` and save it, through ``action_handler.perform_action`` so
        why-run changes nothing. Raise ``MachineNotFound`` when there is no such resource.
        Pin its host key the way ``ready_machine`` pins one of a machine it made (never
        accept one blindly), and tag it as ours where the driver tags. The caller holds the
        machine's lock and has checked that neither the name nor the resource is in the
        state yet."""
        raise UnsupportedOperation(
            f"the {self.scheme}: driver ({self.driver_url}) cannot import existing resources "
            "(its capabilities say imports=False); let 'converge up' create the machine "
            "instead", machine=machine_spec.name)

    def resource_id(self, reference: Mapping[str, Any]) -> str | None:
        """The id ``import_machine`` takes for the resource ``reference`` records (None: the
        reference names none). ``converge import`` uses it to refuse a resource the state
        already records under another name."""
        return None

    def resolve_resource_id(self, resource_id: str, machine: str) -> str:
        """The form ``resource_id()`` returns of the resource the user named ``resource_id``
        (a container's name for its id, a UUID for a domain name, ``host`` for ``host:22``),
        read without changing anything: ``converge import`` refuses a resource the state
        records before ``import_machine`` tags or renames it. Raise ``MachineNotFound`` when
        nothing has that id. Default: ``resource_id`` itself (ids with one form only)."""
        return resource_id

    # -- local-machine features: snapshots, synced folders, forwarded ports -------------------
    # Declared here once (docs/driver-guide.md); a driver that can, sets the matching
    # Capabilities flag and overrides them. Under why-run they report and change nothing.
    def save_snapshot(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                      name: str) -> "Snapshot":
        """Save the machine's files (running or stopped) as snapshot ``name``; saving an
        existing name replaces it."""
        raise unsupported(self, "save snapshots")

    def restore_snapshot(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         name: str) -> None:
        """Return the machine's files to exactly snapshot ``name``; a machine that was running
        runs again afterwards (ready it to get a connection)."""
        raise unsupported(self, "restore snapshots")

    def list_snapshots(self, machine_spec: "MachineSpec") -> "list[Snapshot]":
        """The machine's snapshots, oldest first. Changes nothing."""
        raise unsupported(self, "list snapshots")

    def delete_snapshot(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                        name: str) -> None:
        """Remove snapshot ``name``; MachineNotFound-free: a missing name is reported."""
        raise unsupported(self, "delete snapshots")

    def sync_folders(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                     machine_options: Mapping[str, Any], machine: "Machine | None" = None) -> int:
        """Bring the machine's copied folders (``machine_options["sync"]`` that this driver
        does not mount) up to date over its transport; returns the files sent. Mounted folders
        are live and need nothing. ``up`` calls it after ready; so does ``converge sync``."""
        copied = [f for f in synced_folders(machine_options)
                  if not f.mounted_by(self.capabilities.mounts_folders)]
        if not copied:
            return 0
        own = machine is None
        machine = machine or self.connect_to_machine(machine_spec, machine_options)
        try:
            previous, machine.action_handler = machine.action_handler, action_handler
            try:
                return sum(copy_folder(machine, folder, action_handler) for folder in copied)
            finally:
                machine.action_handler = previous
        finally:
            if own:
                machine.disconnect()

    # -- helpers -----------------------------------------------------------------------------
    def describe(self) -> DriverDescription:
        """Option fields, and the warehouse's choices (images, sizes, ...) where it has any."""
        choices = dict(self.list_choices())
        for item in (*self.driver_option_fields, *self.machine_option_fields):
            if callable(item.choices_from):
                choices[item.name] = list(item.choices_from(self))
        return DriverDescription(scheme=self.scheme, driver_url=self.driver_url,
                                 driver_options=list(self.driver_option_fields),
                                 machine_options=list(self.machine_option_fields),
                                 choices=choices,
                                 capabilities=self.capabilities.to_dict())

    def list_choices(self) -> dict[str, list[Any]]:
        """images, sizes, locations, networks, security_groups: whatever the warehouse lists."""
        return {}

    def choices_for(self, field: OptionField,
                    listed: Mapping[str, Sequence[Any]] | None = None) -> list[Any] | None:
        """The values ``field`` accepts: its fixed ``choices``, else what the warehouse lists
        for its ``choices_from`` (a ``list_choices()`` key, or a function of this driver).
        None: any value of its type. Pass ``listed`` to reuse one ``list_choices()`` call."""
        if field.choices is not None:
            return list(field.choices)
        source = field.choices_from
        if source is None:
            return None
        if callable(source):
            return list(source(self))
        listed = self.list_choices() if listed is None else listed
        return list(listed[source]) if source in listed else None

    # -- routes to a machine ------------------------------------------------------------------
    def open_connection(self, machine_spec: "MachineSpec", host: str, port: int,
                        timeout: float) -> "socket.socket":
        """A TCP connection to ``host:port`` as the machine's network sees it (network
        healthchecks use it). Default: straight from this host. Drivers whose machines live in
        their own network namespace (nspawn, docker) open it there."""
        import socket  # only for a network healthcheck: not on every start-up

        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def get_private_key(self, name: str) -> "PrivateKey":
        return find_private_key(self.config, name)
