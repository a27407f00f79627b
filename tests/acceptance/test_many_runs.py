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
        spec = cluster.store.get("machine", "web")
        facts = record_facts(cluster.store, machine, "fake:", {"server_id": "srv-new"},
                             known=read, along=spec)
        spec.save()  # the facts go with the machine's save, over whatever version is left
        saved = cluster.store.get(FACTS_KIND, "web")
        assert saved is not None and saved.reference["facts"] == facts


def test_a_cluster_sharing_the_state_never_touches_the_others_machines(tmp_path):
    """Two cluster files (alpha, beta) on one state and one fake cloud, with machines of the
    same names: every command of beta is refused for alpha's machines and leaves their
    entries exactly as they were (``sync`` synced them, ``converge`` and ``test`` wrote
    their ClusterConflict into alpha's entries as last_error)."""
    import sqlite3

    from tests.cli_runner import converge

    for name, body in (("alpha", "  web: {count: 2}\n"), ("beta", "  web: {count: 3}\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cluster.yml").write_text(
            f'name: {name}\nstate: ../shared.db\ndriver: "fake:../cloud"\nmachines:\n{body}')
    converge("up", cwd=tmp_path / "alpha", check=True)

    def alphas():
        with sqlite3.connect(tmp_path / "shared.db") as db:
            return db.execute("SELECT name, version, data FROM entries WHERE kind = 'machine' "
                              "AND json_extract(data, '$.cluster') = 'alpha' ORDER BY name"
                              ).fetchall()
    before = alphas()
    for command in (("up",), ("destroy",), ("stop",), ("sync",), ("converge",), ("verify",),
                    ("test",), ("snapshot", "save", "web-1", "s"), ("state", "rm", "web-1"),
                    ("exec", "web-1", "touch", "/from-beta")):
        result = converge(*command, cwd=tmp_path / "beta")
        assert result.returncode != 0, command
        assert "belongs to cluster 'alpha'" in result.stdout + result.stderr, (command, result)
        assert alphas() == before, f"beta's {' '.join(command)} changed alpha's entries"


def test_a_plan_racing_a_destroy_of_its_machine_does_not_fail(tmp_path):
    """Seen with ``plan`` and ``destroy web`` started together: the plan's rehearsal found the
    server when it rehearsed allocate, the destroy removed it, and the rehearsed ready raised
    MachineNotFound ("is gone; run up to re-create it"): exit 1 for a command that changes
    nothing. The destroy lands here exactly between the two (a driver whose compare_with_wish,
    asked by allocate, lets another run's destroy through)."""
    from provisioning.drivers.fake import FakeDriver
    from provisioning.registry import register_driver

    class DestroyedMeanwhile(FakeDriver):
        scheme = "racedfake"

        @classmethod
        def canonicalize_url(cls, url, config):
            return "racedfake:" + FakeDriver.canonicalize_url("fake:" + url.split(":", 1)[1],
                                                              config).split(":", 1)[1]

        def compare_with_wish(self, action_handler, machine_spec, machine_options):
            super().compare_with_wish(action_handler, machine_spec, machine_options)
            if action_handler.why_run:   # the other run's destroy, between allocate and ready
                self.delete_resource(action_handler, machine_spec)
                self.finish_delete(action_handler, machine_spec)

    register_driver("racedfake", DestroyedMeanwhile)
    (tmp_path / "cluster.yml").write_text('driver: "racedfake:./cloud"\nmachines:\n  web: {}\n')
    with Cluster.load(str(tmp_path / "cluster.yml")) as cluster:
        assert cluster.up().ok
        plan = cluster.plan()
    [web] = plan.machines
    assert web.action in ("create", "nothing"), plan.summary()  # as the plan saw it first
