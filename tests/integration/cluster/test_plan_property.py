"""Property test of plan/apply on the fake driver: seeded random walks (edit count, delete a
server behind our back, stop a machine, change a step, replace a machine, create-before-destroy
on odd seeds, plan --out then apply) and, after every
apply, the performed actions equal the plan and the state equals reality
(``provisioning.testing.plan_walk``)."""

from __future__ import annotations

from collections import Counter

import pytest

from provisioning.drivers.fake import FakeWarehouse
from provisioning.testing.plan_walk import WITH_REPLACE, PlanWalk

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", range(8))
def test_random_walks_keep_plan_apply_and_reality_equal(tmp_path, seed):
    cloud = FakeWarehouse(str(tmp_path / "cloud"))

    def resources() -> Counter:
        return Counter(s["tags"].get("provisioning:name") for s in cloud.servers().values())

    def delete(cluster, name: str) -> None:
        cloud.delete(cluster.store.get("machine", name).reference["server_id"])

    walk = PlanWalk(str(tmp_path), f"fake:{tmp_path / 'cloud'}", seed=seed, max_count=3,
                    step_path="motd", resources=resources, delete=delete,
                    operations=WITH_REPLACE, create_before_destroy=seed % 2 == 1)
    walk.run(10)
    assert walk.applies >= 5
    if seed in (1, 2, 5, 6):  # these seeds apply a replace (1, 5: create before destroy)
        assert any("'replace'" in line for line in walk.log if line.startswith("apply")), \
            walk.log
