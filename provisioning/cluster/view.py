"""``ClusterView``: a cluster file bound to its state store, read-only: what the file wishes,
what the state holds and what each driver says now. ``converge status`` needs no more.

``ClusterRunner`` extends it with everything that changes machines (the ``Provisioner``,
plans, claims, images), so ``status`` loads none of that::

    with ClusterView.load("cluster.yml") as view:
        rows = view.status(refresh=True)
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Sequence, cast

from provisioning.cluster.file import load_cluster
from provisioning.cluster.status import all_clusters_status, cluster_status
from provisioning.errors import MachineNotFound, ProvisioningError, error_message
from provisioning.parallel import Parallelizer
from provisioning.registry import canonical_url, driver_for_url
from provisioning.store import open_store

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.file import ClusterFile
    from provisioning.config import Config
    from provisioning.driver import Driver
    from provisioning.spec import MachineSpec
    from provisioning.store.base import ManagedEntryStore

__all__ = ["ClusterView"]


class ClusterView:
    """The machines of one cluster file as its state store and drivers see them; changes
    nothing (a state file that does not exist is not created by ``load``)."""

    def __init__(self, cluster: "ClusterFile", *, store: "ManagedEntryStore", config: "Config",
                 parallel: int | None = None) -> None:
        self.cluster = cluster
        self.store = store
        self.config = config
        self.parallelizer = Parallelizer(parallel or int(config.get("parallel", 10)))
        self._drivers: dict[str, "Driver"] = {}
        self._drivers_lock = threading.Lock()
        self._canonical: dict[str, str] = {}

    @classmethod
    def load(cls, path: str = "cluster.yml", *, state: str | None = None,
             parallel: int | None = None) -> "ClusterView":
        """Validate the cluster file (``ConfigError`` listing every problem) and open its state
        store without creating it (``state`` wins over the file's ``state`` and
        $PROVISIONING_STATE)."""
        file = load_cluster(path)
        config = file.config()
        store = open_store(file.state_url(state, config), base_dir=file.base_dir, create=False)
        return cls(file, store=store, config=config, parallel=parallel)

    @property
    def file(self) -> "ClusterFile":
        return self.cluster

    def driver(self, url: str) -> "Driver":
        """One driver per URL for the whole run."""
        with self._drivers_lock:
            if url not in self._drivers:
                self._drivers[url] = driver_for_url(url, self.config)
            return self._drivers[url]

    def driver_for(self, spec: "MachineSpec") -> "Driver":
        """The driver that owns a saved machine (from its reference)."""
        if not spec.driver_url:
            raise MachineNotFound(f"machine {spec.name!r} has no saved driver URL and none was "
                                  "given", machine=spec.name)
        return self.driver(spec.driver_url)

    def canonical_url(self, url: str) -> str:
        """``url``'s one spelling (as saved for created machines), without building its
        driver; the URL as given when it cannot be worked out (an unknown scheme: status
        still lists the machine)."""
        with self._drivers_lock:
            if url not in self._canonical:
                try:
                    self._canonical[url] = canonical_url(url, self.config)
                except ProvisioningError:
                    self._canonical[url] = url
            return self._canonical[url]

    # -- cluster boundaries ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The cluster's name in the state store."""
        return self.cluster.name

    def owns(self, spec: "MachineSpec") -> bool:
        """This cluster's entries, and entries saved before clusters had names (no cluster)
        that this file names: those are claimed by the next change."""
        return spec.cluster == self.name or (spec.cluster is None
                                            and spec.name in self.cluster.machines)

    def entries(self) -> dict[str, "MachineSpec"]:
        """This cluster's saved machines by name (never another cluster's)."""
        return {e.name: e for e in self.store.list("machine") if self.owns(e)}  # type: ignore

    # -- what is there ---------------------------------------------------------------------
    def status(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """One row per machine of this cluster (in the file or saved in the state); see
        ``provisioning.cluster.status``."""
        return cluster_status(self, refresh=refresh)

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every machine of every cluster in this cluster's state store (from the state)."""
        return all_clusters_status(self.store)

    def states(self, specs: Sequence[Any]) -> dict[str, str]:
        """name -> what its driver says now, asking each driver once for all its machines."""
        states: dict[str, str] = {}
        groups: dict[str, tuple["Driver", list[Any]]] = {}
        for spec in specs:
            try:
                driver = self.driver_for(spec)
            except ProvisioningError as exc:
                states[spec.name] = f"unknown ({exc.message[:60]})"
                continue
            groups.setdefault(driver.driver_url, (driver, []))[1].append(spec)
        parallelizer = self.parallelizer
        results = parallelizer.run(
            (url, functools.partial(driver.machine_states, group, parallelizer))
            for url, (driver, group) in groups.items())
        for url, outcome in results.items():
            group = groups[url][1]
            if outcome.ok:
                states.update(cast("dict[str, str]", outcome.value))
            else:
                text = error_message(outcome.error)[:60]
                states.update({spec.name: f"unknown ({text})" for spec in group})
        return states

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "ClusterView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
