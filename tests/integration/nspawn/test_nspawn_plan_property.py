"""Property test of plan/apply on real nspawn machines: a short seeded random walk (edit count,
delete a machine behind our back, stop one, change a step, plan --out then apply) and a last
create-before-destroy replace, at most two machines, checking after every apply that the performed actions equal the plan and the state
equals reality (``provisioning.testing.plan_walk``). Kept small: each create boots Debian."""

from __future__ import annotations

from collections import Counter

import pytest

from provisioning.actions import ActionHandler
from provisioning.spec import MachineSpec
from provisioning.testing.plan_walk import PlanWalk

from .conftest import IMAGE

pytestmark = pytest.mark.slow


def test_a_random_walk_keeps_plan_apply_and_reality_equal(tmp_path, warehouse_url,
                                                          image_cache, nspawn_driver):
    def resources() -> Counter:
        return Counter(r.name for r in nspawn_driver.warehouse.records())

    def delete(cluster, name: str) -> None:
        loose = MachineSpec(name=name, reference=dict(cluster.store.get("machine", name).reference))
        nspawn_driver.destroy_machine(ActionHandler().for_machine(name), loose, {})

    walk = PlanWalk(str(tmp_path), warehouse_url, seed=30, max_count=2,
                    step_path="/etc/plan-walk", resources=resources, delete=delete,
                    top={"driver_options": {warehouse_url: {"image_cache": image_cache}}},
                    machine_options={"image": IMAGE}, create_before_destroy=True)
    try:
        walk.run(6)
        walk.step("replace")  # one create-before-destroy replace: one more boot
        walk.step("apply")
        print("\n".join(walk.log))  # pytest -s shows what the walk did
        assert walk.applies >= 3
        # seed 30 was chosen so that six steps do each operation on a machine that exists
        assert {line.split()[0] for line in walk.log} >= {"delete", "stop", "count", "step",
                                                         "replace"}
        assert "'replace'" in walk.log[-1], walk.log[-1]
    finally:
        with walk.cluster() as cluster:
            cluster.destroy(orphans=True)
