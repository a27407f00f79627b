"""Cluster boundaries: two cluster files sharing one state (SQLite and PostgreSQL) never see,
plan for, or destroy each other's machines; an old state is migrated and claimed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from provisioning.cluster import Cluster
from provisioning.drivers.fake import FakeWarehouse
from provisioning.errors import ClusterConflict
from tests.integration.cli.helpers import converge, json_lines

pytestmark = pytest.mark.slow


def write(directory: Path, body: str, name: str = "cluster.yml") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(body)
    return str(path)


@pytest.fixture(params=["sqlite", "postgres"])
def state(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "shared" / "state.db")
    pytest.importorskip("psycopg2")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def two_clusters(tmp_path, state):
    """Cluster 'shop' (web x3) and 'erp' (db x2) up in one state, on one fake warehouse."""
    cloud = tmp_path / "cloud"
    shop = write(tmp_path / "shop", f'name: shop\ndriver: "fake:{cloud}"\n'
                                    "machines:\n  web: {count: 3}\n")
    erp = write(tmp_path / "erp", f'driver: "fake:{cloud}"\nmachines:\n  db: {{count: 2}}\n')
    for path in (shop, erp):
        with Cluster.load(path, state=state) as cluster:
            cluster.destroy(orphans=True)  # the PostgreSQL server is shared by the session
            assert cluster.up().ok
    return shop, erp, state, FakeWarehouse(str(cloud))


def test_default_name_comes_from_the_directory_and_stem(tmp_path):
    erp = write(tmp_path / "erp", 'driver: "fake:"\nmachines: {db: {}}\n')
    other = write(tmp_path / "erp", 'driver: "fake:"\nmachines: {db: {}}\n', "Stage.yml")
    with Cluster.load(erp, state="memory:") as one, Cluster.load(other, state="memory:") as two:
        assert (one.name, two.name) == ("erp", "erp-stage")


def test_each_cluster_sees_only_its_own_machines(two_clusters):
    shop, erp, state, warehouse = two_clusters
    with Cluster.load(erp, state=state) as cluster:
        assert {r["name"] for r in cluster.status()} == {"db-1", "db-2"}
        assert cluster.runner.orphans() == []
        plan = cluster.plan()
        assert {m.name: m.action for m in plan.machines} == {"db-1": "nothing", "db-2": "nothing"}
        every = {(r["cluster"], r["name"]) for r in cluster.all_clusters()}
        assert {("shop", "web-1"), ("shop", "web-2"), ("shop", "web-3"), ("erp", "db-1"),
                ("erp", "db-2")} <= every
    # the CLI: destroy --orphans of a file with no orphans names none of the other's machines
    why = converge("-f", erp, "--state", state, "--output", "json", "destroy", "--orphans",
                   "--why-run", cwd=Path(erp).parent)
    assert why.returncode == 0, why.stderr
    assert set(json_lines(why.stdout)[-1]["machines"]) == {"db-1", "db-2"}
    shown = converge("-f", shop, "--state", state, "status", cwd=Path(shop).parent)
    assert "web-3" in shown.stdout and "db-" not in shown.stdout
    # shrink shop to one machine and drop erp's file: erp's machines survive shop's runs
    Path(shop).write_text(Path(shop).read_text().replace("count: 3", "count: 1"))
    done = converge("-f", shop, "--state", state, "--output", "json", "destroy", "--orphans",
                    cwd=Path(shop).parent)
    assert done.returncode == 0, done.stderr
    assert set(json_lines(done.stdout)[-1]["machines"]) == {"web-1", "web-2", "web-3"}
    names = sorted(s["name"] for s in warehouse.servers().values())
    assert names == ["db-1", "db-2"]


def test_a_machine_of_another_cluster_is_never_taken_over(two_clusters, tmp_path):
    shop, erp, state, warehouse = two_clusters
    thief = write(tmp_path / "thief", f'name: thief\ndriver: "fake:{tmp_path / "cloud"}"\n'
                                      "machines:\n  db: {count: 2}\n")
    with Cluster.load(thief, state=state) as cluster:
        for attempt in (cluster.plan, cluster.up, cluster.destroy, cluster.stop):
            with pytest.raises(ClusterConflict) as caught:
                attempt()
            assert caught.value.owner == "erp" and caught.value.exit_code == 2
    code = converge("-f", thief, "--state", state, "destroy", cwd=tmp_path)
    assert code.returncode == 2 and "belongs to cluster 'erp'" in code.stderr
    assert sorted(s["name"] for s in warehouse.servers().values()) == \
        ["db-1", "db-2", "web-1", "web-2", "web-3"]


def test_state_rm_and_mv_touch_only_the_state(two_clusters):
    shop, erp, state, warehouse = two_clusters
    cwd = Path(shop).parent
    why = converge("-f", shop, "--state", state, "state", "rm", "web-3", "--why-run", cwd=cwd)
    assert why.returncode == 0 and (why.stdout + why.stderr).count("would forget web-3") == 1
    with Cluster.load(shop, state=state) as cluster:
        assert "web-3" in cluster.runner.entries()
    assert converge("-f", shop, "--state", state, "state", "rm", "web-3", cwd=cwd).returncode == 0
    refused = converge("-f", shop, "--state", state, "state", "rm", "db-1", cwd=cwd)
    assert refused.returncode == 2 and "belongs to cluster 'erp'" in refused.stderr
    typo = converge("-f", shop, "--state", state, "state", "rm", "web-1", "web-22", cwd=cwd)
    assert typo.returncode == 2 and "'web-22' is not in the state" in typo.stderr
    assert "did you mean 'web-2'" in typo.stderr and "Traceback" not in typo.stderr
    moved = converge("-f", shop, "--state", state, "state", "mv", "web-2", "web-9", cwd=cwd)
    assert moved.returncode == 0, moved.stderr
    with Cluster.load(shop, state=state) as cluster:
        assert sorted(cluster.runner.entries()) == ["web-1", "web-9"]  # web-1 kept: all or none
        assert cluster.runner.orphans() == ["web-9"]
    assert len(warehouse.servers()) == 5  # nothing was destroyed


def test_an_old_state_is_migrated_and_its_machines_claimed(tmp_path):
    """A schema-1 SQLite state (entries without a cluster) opens without loss; the file that
    names a machine claims it on its next change; others never see unclaimed machines."""
    cloud = tmp_path / "cloud"
    path = write(tmp_path / "old", f'driver: "fake:{cloud}"\nmachines:\n  web: {{count: 2}}\n')
    state = tmp_path / "state.db"
    with Cluster.load(path, state=str(state)) as cluster:
        assert cluster.up().ok
    db = sqlite3.connect(state)  # turn it back into what provisioning 0.1.0 wrote
    for name, data in db.execute("SELECT name, data FROM entries WHERE kind='machine'").fetchall():
        body = json.loads(data)
        body.pop("cluster"), body.pop("group")
        db.execute("UPDATE entries SET data=? WHERE kind='machine' AND name=?",
                   (json.dumps(body), name))
    db.execute("DROP INDEX entries_cluster")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    other = write(tmp_path / "other", f'driver: "fake:{cloud}"\nmachines:\n  app: {{}}\n')
    with Cluster.load(other, state=str(state)) as cluster:
        assert cluster.store.schema_version() == 2
        assert [r["name"] for r in cluster.status()] == ["app"]
        assert cluster.runner.orphans() == []
        assert [r["cluster"] for r in cluster.all_clusters()] == [None, None]
    with Cluster.load(path, state=str(state)) as cluster:
        assert {m.name: m.action for m in cluster.plan().machines} == {"web-1": "nothing",
                                                                       "web-2": "nothing"}
        assert cluster.up().ok
        assert {r["cluster"] for r in cluster.all_clusters()} == {"old"}
    assert FakeWarehouse(str(cloud)).counters()["creates"] == 2


def test_an_old_postgres_state_is_migrated_and_its_machines_claimed(tmp_path, postgres_url):
    """A PostgreSQL state of schema 2 (entries without a cluster, saved by provisioning 0.1.0)
    is migrated on first open without loss; the file that names its machines claims them on
    its next change; another cluster never sees them."""
    pytest.importorskip("psycopg2")
    from provisioning.store.postgres import SCHEMA_VERSION
    from provisioning.testing.postgres import query

    cloud = tmp_path / "cloud"
    path = write(tmp_path / "old", f'driver: "fake:{cloud}"\nmachines:\n  web: {{count: 2}}\n')
    with Cluster.load(path, state=postgres_url) as cluster:
        assert cluster.up().ok
    rows = query(postgres_url, "SELECT name, data, version FROM provisioning_entries "
                               "WHERE kind = 'machine'")
    before = {}
    for name, data, version in rows:  # back to what 0.1.0 wrote
        body = json.loads(data)
        body.pop("cluster"), body.pop("group")
        before[name] = (body["reference"], version)
        query(postgres_url, "UPDATE provisioning_entries SET data = %s WHERE kind = 'machine' "
                            "AND name = %s", (json.dumps(body), name))
    query(postgres_url, "DROP INDEX provisioning_work_open; "
                        "DELETE FROM provisioning_schema WHERE version > 2")
    other = write(tmp_path / "other", f'driver: "fake:{cloud}"\nmachines:\n  app: {{}}\n')
    with Cluster.load(other, state=postgres_url) as cluster:
        assert cluster.store.schema_version() == SCHEMA_VERSION
        assert {e.name: (e.reference, e.version) for e in cluster.store.list("machine")} == \
            before  # nothing lost
        assert [r["name"] for r in cluster.status()] == ["app"]
        assert cluster.runner.orphans() == []
        assert [r["cluster"] for r in cluster.all_clusters()] == [None, None]
        assert {m.name: m.action for m in cluster.plan().machines} == {"app": "create"}
    with Cluster.load(path, state=postgres_url) as cluster:
        assert {m.name: m.action for m in cluster.plan().machines} == {"web-1": "nothing",
                                                                       "web-2": "nothing"}
        assert cluster.up().ok
        assert {r["cluster"] for r in cluster.all_clusters()} == {"old"}
    assert FakeWarehouse(str(cloud)).counters()["creates"] == 2
