"""Importing a running nspawn machine: it keeps running (its systemd-nspawn process is found in
its cgroup and recorded), its pinned host key is the one the driver generated, and readying it
boots nothing."""

from __future__ import annotations

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster.state_ops import import_resource
from provisioning.lifecycle import Provisioner
from provisioning.store.sqlite import SQLiteStore

from .conftest import IMAGE

pytestmark = pytest.mark.slow


def test_a_running_machine_is_imported_without_a_reboot(tmp_path, nspawn_driver, nspawn_config):
    options = {"image": IMAGE}
    elsewhere = SQLiteStore(tmp_path / "elsewhere.db")
    ours = SQLiteStore(tmp_path / "ours.db")
    try:
        machine = Provisioner(elsewhere, config=nspawn_config).up(nspawn_driver, "src", options)
        machine.execute_always("echo before > /root/marker")
        machine.disconnect()
        source = elsewhere.get("machine", "src").reference
        handler = RecordingActionHandler()
        provisioner = Provisioner(ours, config=nspawn_config, action_handler=handler)
        spec = import_resource(provisioner, nspawn_driver, "adopted", source["machine_id"],
                               options)
        assert spec.reference["pid"] == source["pid"]
        assert spec.reference["host_key"] == source["host_key"]
        assert [r.name for r in nspawn_driver.warehouse.records()] == ["adopted"]
        performed = len(handler.actions(performed=True))
        machine = provisioner.up(nspawn_driver, "adopted", options)
        assert len(handler.actions(performed=True)) == performed, "it was booted again"
        assert machine.execute_always("cat /root/marker").stdout.strip() == "before"
        machine.disconnect()
        provisioner.destroy("adopted", options, nspawn_driver)
        assert nspawn_driver.warehouse.records() == []
    finally:
        elsewhere.close()
        ours.close()
