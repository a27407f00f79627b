"""Clusters: a cluster file's machines created, converged, watched and destroyed together.

- ``file``: the cluster file (load, validate, expand counts): ``ClusterFile``;
- ``view``: what ``converge status`` reads (the file, the store, each driver's state query):
  ``ClusterView``, which the runner extends;
- ``runner``: the pipeline per machine (allocate, ready, converge, healthcheck) through the
  ``Provisioner``; ``claims``: many runners sharing one store split the work;
- ``healthcheck``: is a converged machine serving; ``watch``: keep groups healthy;
- ``api``: ``Cluster``, the public entry point the CLI and scripts use.

The names below are imported on first use (``provisioning.lazy``), so a module of the package
(``file``, ``view``) loads without ``api``'s plan, apply and kitchen.
"""

from provisioning.lazy import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it alike)
if TYPE_CHECKING:  # pragma: no cover
    from provisioning.cluster.api import Cluster
    from provisioning.cluster.file import (
        DEFAULT_CLUSTER_FILE,
        ClusterFile,
        MachineDefinition,
        VerifyItem,
        load_cluster,
        parse_cluster,
    )
    from provisioning.cluster.runner import ClusterRunner
    from provisioning.cluster.view import ClusterView

__all__ = ["Cluster", "ClusterFile", "ClusterRunner", "ClusterView", "MachineDefinition",
           "VerifyItem", "load_cluster", "parse_cluster", "DEFAULT_CLUSTER_FILE"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Cluster": "provisioning.cluster.api",
    "ClusterFile": "provisioning.cluster.file",
    "MachineDefinition": "provisioning.cluster.file",
    "VerifyItem": "provisioning.cluster.file",
    "load_cluster": "provisioning.cluster.file",
    "parse_cluster": "provisioning.cluster.file",
    "DEFAULT_CLUSTER_FILE": "provisioning.cluster.file",
    "ClusterRunner": "provisioning.cluster.runner",
    "ClusterView": "provisioning.cluster.view",
}, __all__)
