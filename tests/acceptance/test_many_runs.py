"""Many ``converge`` runs on one state at once: a run never fails because another one did its
part (no false failures), and what it reports is typed."""

from __future__ import annotations

from provisioning.cluster import Cluster
from provisioning.cluster.topology import FACTS_KIND, forget, record_facts


def test_facts_forgotten_by_a_finished_destroy_do_not_fail_the_next_up(tmp_path):
    """``destroy`` forgets the machines' facts once the batch is done, after their locks are
    released; an ``up`` that took a lock meanwhile read the facts before they were forgotten.
    Its save of the new facts then failed with StateConflict ("changed since it was read"):
    seen with two ``up`` and one ``destroy`` started together on one SQLite state."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web: {}\n')
    with Cluster.load(str(tmp_path / "cluster.yml")) as cluster:
        [outcome] = cluster.up().values()
        machine = outcome.value
        read = cluster.store.get(FACTS_KIND, "web")         # the up's read, under the lock
        assert read is not None and read.version == 1
        forget(cluster.store, ["web"], [FACTS_KIND])          # the destroy, finishing late
        facts = record_facts(cluster.store, machine, "fake:", {"server_id": "srv-new"},
                             known=read)
        saved = cluster.store.get(FACTS_KIND, "web")
        assert saved is not None and saved.reference["facts"] == facts
