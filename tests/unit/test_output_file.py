"""``check_output_file``: ``--out`` may replace only an earlier file of ours, however big."""

from __future__ import annotations

import json

import pytest

from provisioning.errors import ConfigError
from provisioning.inputs.userfiles import MAX_CONFIG_BYTES, check_output_file


def test_a_big_earlier_plan_may_be_replaced_and_a_users_file_may_not(tmp_path):
    plan = tmp_path / "plan.json"  # bigger than a cluster file may be: 40,000 machines or so
    plan.write_text(json.dumps({"format": "provisioning-plan", "pad": "x" * MAX_CONFIG_BYTES}))
    check_output_file(str(plan), what="plan", fmt="provisioning-plan")
    missing = tmp_path / "new.json"
    check_output_file(str(missing), what="plan", fmt="provisioning-plan")
    for other in ({"format": "provisioning-state"}, ["a", "list"]):
        mine = tmp_path / "mine.json"
        mine.write_text(json.dumps(other))
        with pytest.raises(ConfigError, match="is not a plan written by provisioning"):
            check_output_file(str(mine), what="plan", fmt="provisioning-plan")
    with pytest.raises(ConfigError, match="is a directory"):
        check_output_file(str(tmp_path), what="plan", fmt="provisioning-plan")
