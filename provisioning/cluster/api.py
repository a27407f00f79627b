"""``Cluster``: a cluster file bound to its state store, the library face of ``converge``.

::

    from provisioning.cluster import Cluster

    with Cluster.load("cluster.yml") as cluster:
        cluster.import_machine("db-1", "i-0abc")  # adopt a resource made elsewhere
        plan = cluster.plan()                  # what up would do, changing nothing
        results = cluster.apply(plan)          # exactly that, or StalePlan
        print(cluster.status(refresh=True))    # with a drift report
        cluster.destroy()

The CLI is a thin layer over this class: it parses arguments and renders what comes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from provisioning.actions import ActionHandler, Event
from provisioning.cluster.apply import apply_plan, up_plan
from provisioning.cluster.file import ClusterFile, MachineDefinition, load_cluster
from provisioning.cluster.image_check import check_images
from provisioning.cluster.kitchen import Kitchen
from provisioning.cluster.plan import Plan, make_plan
from provisioning.cluster.preflight import check_templates
from provisioning.cluster.replace import check_drivers
from provisioning.cluster.runner import ClusterRunner
from provisioning.cluster.state_ops import check_import, import_into_cluster
from provisioning.cluster.topology import render_outputs
from provisioning.images.builder import check_image_name
from provisioning.images.definition import BUILDER_PREFIX
from provisioning.parallel import BatchResult, Outcome
from provisioning.store import open_store

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.config import Config
    from provisioning.spec import MachineSpec
    from provisioning.store.base import ManagedEntryStore

__all__ = ["Cluster"]


class Cluster:
    """The machines of one cluster file and the store that records them."""

    def __init__(self, file: ClusterFile, runner: ClusterRunner) -> None:
        self.file = file
        self.runner = runner

    @classmethod
    def load(cls, path: str = "cluster.yml", *, state: str | None = None,
             why_run: bool = False, parallel: int | None = None,
             listeners: Sequence[Callable[[Event], None]] = (),
             read_only: bool = False, select: Iterable[str] = (),
             choose: Iterable[str] = (), replace: Iterable[str] = (),
             boots: bool = True, images: Iterable[str] = ()) -> "Cluster":
        """Validate the cluster file and open its state store (``state`` wins over the file's
        ``state`` and $PROVISIONING_STATE). Raises ``ConfigError`` listing every problem.
        Under why-run or ``read_only`` a state file that does not exist is not created.
        ``select`` / ``choose`` / ``replace``: the names (``choose``: or patterns; ``replace``:
        machines) the caller will act on, refused when unknown before the state file is
        opened (and so before it is created). ``boots``: the caller may create machines, so
        the images they boot from are checked first; False (``destroy``, ``stop``, ``sync``,
        snapshots, ``state rm``/``mv``, ``image list``/``destroy``): nothing new is made, so a
        state file that does not exist is not created for them. ``images``: the image names
        the caller will act on, refused when unknown before the state file is opened."""
        file = load_cluster(path)
        file.select(select)
        file.choose(choose)
        file.replaceable(replace)
        for image in images:
            check_image_name(image, file.images)
        config = file.config()
        if not read_only:  # refused before the state file is written: a hostile template,
            # a group asking create_before_destroy of a driver that cannot
            check_templates(file)
            check_drivers(file)
            if boots:
                check_images(file, config, lambda names: _saved(file, state, config, names))
        store = open_store(file.state_url(state, config), base_dir=file.base_dir,
                           create=not (why_run or read_only), keep_missing=not boots)
        handler = ActionHandler(why_run=why_run, listeners=listeners)
        return cls(file, ClusterRunner(file, store=store, config=config, action_handler=handler,
                                       parallel=parallel))

    # -- what it holds ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The cluster's name in the state store (``name:``, or derived from the file)."""
        return self.file.name

    @property
    def store(self) -> "ManagedEntryStore":
        return self.runner.store

    @property
    def config(self) -> "Config":
        return self.runner.config

    @property
    def action_handler(self) -> ActionHandler:
        return self.runner.action_handler

    def select(self, names: Iterable[str] = ()) -> list[MachineDefinition]:
        """Machines by name or group (all when none given), in file order."""
        return self.file.select(names)

    def choose(self, patterns: Iterable[str] = ()) -> list[MachineDefinition]:
        """Machines by name, group, matrix instance or regular expression (all when none)."""
        return self.file.choose(patterns)

    @property
    def kitchen(self) -> "Kitchen":
        """test-kitchen's lifecycle (create, converge, verify, test, list) on this cluster."""
        return Kitchen(self.runner)

    def outputs(self) -> dict[str, str]:
        """The file's ``outputs``, rendered with what the state knows now."""
        return render_outputs(self.file, self.store)

    # -- operations ------------------------------------------------------------------------
    def plan(self, names: Iterable[str] = (), *, refresh: bool = True,
             replace: Sequence[str] = ()) -> "Plan":
        """What ``up`` would do to each machine (or group) named, all when none; changes
        nothing. ``refresh``: ask the drivers what the machines really are (the default)."""
        return make_plan(self.runner, names, refresh=refresh, replace=replace)

    def apply(self, plan: "Plan", *, source: str = "plan") -> "BatchResult":
        """Perform exactly ``plan``; ``StalePlan`` when the cluster file or a machine's state
        changed since it was made."""
        return apply_plan(self.runner, plan, source=source)

    def up(self, names: Iterable[str] = (), *, replace: Sequence[str] = ()) -> "BatchResult":
        """Plan, then apply: create (if needed), ready, converge and healthcheck each machine,
        destroy the machines a lower ``count`` leaves out; value per machine: its ``Machine``.
        Under why-run nothing is done: use ``plan()`` to see what would be."""
        plan = self.plan(names, refresh=self.runner.why_run, replace=replace)
        if self.runner.why_run:
            return BatchResult((m.name, Outcome(m.name)) for m in plan.machines)
        return up_plan(self.runner, plan)

    def import_machine(self, name: str, resource_id: str) -> "MachineSpec | None":
        """Adopt an existing resource (a cloud node id, an nspawn machine id, an ssh
        ``host[:port]``, a fake server id) as machine ``name`` of the file; the next ``up``
        converges it. Refused when ``name`` or the resource is in the state already; under
        why-run only reported. Returns the saved entry (None under why-run)."""
        return import_into_cluster(self.runner, name, resource_id)

    def check_import(self, name: str, resource_id: str) -> None:
        """Raise what ``import_machine`` would refuse before writing anything (a name that is
        not one machine, a malformed id, ``MachineNotFound``); reads only: ask it of a
        cluster loaded ``read_only`` so that a failed import creates no state file."""
        check_import(self.runner, name, resource_id)

    def stop(self, names: Iterable[str] = ()) -> "BatchResult":
        return self.runner.stop(self.select(names))

    def destroy(self, names: Iterable[str] = (), *, orphans: bool = False) -> "BatchResult":
        """Destroy machines of this cluster and forget them; ``orphans``: also this cluster's
        machines saved in the state but no longer in the file. Never another cluster's."""
        wanted = [d.name for d in self.select(names)]
        if orphans:
            wanted += [n for n in self.runner.orphans() if n not in wanted]
        return self.runner.destroy_names(wanted)

    def status(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """One row per machine of this cluster; ``refresh`` adds a drift report per machine."""
        return self.runner.status(refresh=refresh)

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every machine of every cluster in this cluster's state store (from the state)."""
        return self.runner.all_clusters()

    def connect(self, name: str):
        """A ``Machine`` for a saved machine, changing nothing."""
        return self.runner.connect(name)

    # -- images (``images:``) -----------------------------------------------------------------
    def build_images(self, names: Iterable[str] = (), *, force: bool = False) -> dict[str, Any]:
        """Build the named images (all by default) unless they are up to date (``force``:
        build anyway); returns each image's id (None for one why-run would build)."""
        return self.runner.images.ensure(self._image_names(names), force=force)

    def image_status(self, names: Iterable[str] = ()) -> list[dict[str, Any]]:
        """One row per image: name, state (built, outdated, missing, not built), key, image
        id, when it was built and how long that took."""
        return [self.runner.images.status(n).to_dict() for n in self._image_names(names)]

    def destroy_images(self, names: Iterable[str] = ()) -> list[str]:
        """Destroy the named images (all the store holds by default) and forget them."""
        saved = self.runner.images.saved_names()
        names = list(names) or saved
        known = dict.fromkeys([*self.file.images, *saved])
        for name in names:  # a typo is refused, not reported "destroyed"
            if name not in known and not self.store.get("machine", BUILDER_PREFIX + name):
                check_image_name(name, known)
        for name in names:
            self.runner.images.destroy(name)
        return names

    def _image_names(self, names: Iterable[str]) -> list[str]:
        names = list(names) or list(self.file.images)
        for name in names:
            self.runner.images.definition(name)  # ConfigError with a did-you-mean
        return names

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        if "images" in vars(self.runner):  # made (cached) only when the run used images
            self.runner.images.close()
        self.runner.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _saved(file: ClusterFile, state: str | None, config: "Config", names: list[str]) -> set[str]:
    """Which of ``names`` the state holds already, read without creating the state file."""
    store = open_store(file.state_url(state, config), base_dir=file.base_dir, create=False)
    try:
        return {n for n in names if store.get("machine", n) is not None}
    finally:
        store.close()
