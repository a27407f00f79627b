"""``create_before_destroy`` on real nspawn machines through the ``converge`` script: a replace
killed after the new machine was made but before it was saved leaves the old machine deposed,
and the next ``up`` adopts the new machine (tagged with its generation, ``web~1``), never the
old one, then destroys the old one."""

from __future__ import annotations

import json

import pytest

from provisioning.faults import CRASH_EXIT_CODE, FAULT_ENV
from tests.cli_runner import converge

from .conftest import IMAGE

pytestmark = pytest.mark.slow


def test_a_replace_killed_before_the_save_is_finished_by_the_next_up(tmp_path, warehouse_url,
                                                                     image_cache,
                                                                     nspawn_driver):
    (tmp_path / "cluster.yml").write_text(json.dumps({
        "name": "cbd", "driver": warehouse_url,
        "driver_options": {warehouse_url: {"image_cache": image_cache}},
        "machines": {"web": {"create_before_destroy": True, "machine_options": {"image": IMAGE},
                             "converge": [{"file": {"path": "/etc/cbd", "content": "x\n"}}]}}}))
    try:
        converge("up", cwd=tmp_path, check=True, timeout=600)
        [old] = nspawn_driver.find_machines("web")
        killed = converge("up", "--replace", "web", cwd=tmp_path, timeout=600,
                          env={FAULT_ENV: "before_save:crash"})
        assert killed.returncode == CRASH_EXIT_CODE, killed.stderr
        assert sorted(r.name for r in nspawn_driver.find_machines("web")) == ["web", "web~1"]
        planned = converge("--output", "json", "plan", cwd=tmp_path, check=True, timeout=600)
        [web] = json.loads(planned.stdout.strip().splitlines()[-1])["machines"]
        assert web["action"] == "adopt" and len(web["deposed"]) == 1, web
        converge("up", cwd=tmp_path, check=True, timeout=600)
        [new] = nspawn_driver.find_machines("web")
        assert (new.name, new.id != old.id) == ("web~1", True)
        shown = converge("exec", "web", "--", "cat", "/etc/cbd", cwd=tmp_path, check=True)
        assert shown.stdout.strip() == "x"
    finally:
        converge("destroy", cwd=tmp_path, timeout=600)
