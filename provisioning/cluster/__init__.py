"""Clusters: a cluster file's machines created, converged, watched and destroyed together.

- ``file``: the cluster file (load, validate, expand counts): ``ClusterFile``;
- ``runner``: the pipeline per machine (allocate, ready, converge, healthcheck) through the
  ``Provisioner``; ``claims``: many runners sharing one store split the work;
- ``healthcheck``: is a converged machine serving; ``watch``: keep groups healthy;
- ``api``: ``Cluster``, the public entry point the CLI and scripts use.
"""

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

__all__ = ["Cluster", "ClusterFile", "ClusterRunner", "MachineDefinition", "VerifyItem",
           "load_cluster", "parse_cluster", "DEFAULT_CLUSTER_FILE"]
