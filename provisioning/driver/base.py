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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from provisioning.driver.options import DriverDescription, OptionField, raise_problems, validate_options
from provisioning.parallel import BatchResult, Parallelizer

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.config import Config
    from provisioning.keys import PrivateKey
    from provisioning.machine.base import Machine
    from provisioning.spec import MachineSpec

__all__ = ["Driver", "Capabilities", "SpecsAndOptions"]

#: what the batch methods take: (spec, machine_options) pairs
SpecsAndOptions = Sequence[tuple["MachineSpec", Mapping[str, Any]]]


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do. The conformance suite runs the matching cases, and reports a case
    a driver declares it cannot do as not applicable, never as a silent skip."""

    connectable: bool = True        # ready_machine returns a machine that runs commands
    stoppable: bool = True          # stop then ready brings the same machine back
    cross_process: bool = True      # state and resources are visible to other processes
    crash_safe: bool = True         # a crash between create and save is adopted on re-run
    detects_lost: bool = True       # a resource deleted behind our back is noticed

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


class Driver(abc.ABC):
    """Base class of every driver. Subclasses set ``scheme`` and implement the abstract methods."""

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
        if self.driver_option_fields:
            raise_problems(validate_options(self.driver_option_fields, self.options_with_secrets(),
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
                                 file: str | None = None) -> list:
        """Problems with one machine's options (the cluster loader collects them all)."""
        return validate_options(self.machine_option_fields, machine_options, where=where,
                                file=file, strict=bool(self.machine_option_fields))

    # -- the contract ------------------------------------------------------------------------
    @abc.abstractmethod
    def allocate_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                         machine_options: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def ready_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                      machine_options: Mapping[str, Any]) -> "Machine | None": ...

    @abc.abstractmethod
    def connect_to_machine(self, machine_spec: "MachineSpec",
                           machine_options: Mapping[str, Any]) -> "Machine": ...

    @abc.abstractmethod
    def stop_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                     machine_options: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def destroy_machine(self, action_handler: "ActionHandler", machine_spec: "MachineSpec",
                        machine_options: Mapping[str, Any]) -> None: ...

    def machine_state(self, machine_spec: "MachineSpec") -> str:
        """What the warehouse says of the machine now: 'running', 'stopped', 'missing',
        'unknown'. Changes nothing. Used by ``status``."""
        return "unknown" if machine_spec.reference else "missing"

    # -- batches: per machine through the parallelizer; bulk APIs override --------------------
    def _batch(self, method: str, action_handler: "ActionHandler", specs_and_options: SpecsAndOptions,
               parallelizer: Parallelizer | None) -> BatchResult:
        parallelizer = parallelizer or Parallelizer(int(self.config.get("parallel", 10)))
        fn = getattr(self, method)
        return parallelizer.run(
            (spec.name, (lambda s=spec, o=opts: fn(action_handler.for_machine(s.name), s, o)))
            for spec, opts in specs_and_options)

    def allocate_machines(self, action_handler, specs_and_options: SpecsAndOptions,
                          parallelizer: Parallelizer | None = None) -> BatchResult:
        return self._batch("allocate_machine", action_handler, specs_and_options, parallelizer)

    def ready_machines(self, action_handler, specs_and_options: SpecsAndOptions,
                       parallelizer: Parallelizer | None = None) -> BatchResult:
        return self._batch("ready_machine", action_handler, specs_and_options, parallelizer)

    def stop_machines(self, action_handler, specs_and_options: SpecsAndOptions,
                      parallelizer: Parallelizer | None = None) -> BatchResult:
        return self._batch("stop_machine", action_handler, specs_and_options, parallelizer)

    def destroy_machines(self, action_handler, specs_and_options: SpecsAndOptions,
                         parallelizer: Parallelizer | None = None) -> BatchResult:
        return self._batch("destroy_machine", action_handler, specs_and_options, parallelizer)

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

    def get_private_key(self, name: str) -> "PrivateKey":
        from provisioning.keys import find_private_key

        return find_private_key(self.config, name)

    def base_reference(self, **fields: Any) -> dict[str, Any]:
        """A new reference with the fields every driver must record."""
        return {"driver_url": self.driver_url, "driver_version": self.version, **fields}
