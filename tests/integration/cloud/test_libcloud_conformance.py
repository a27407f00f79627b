"""The libcloud: driver passes the driver conformance suite against a real moto EC2 server.

moto's nodes have no network behind them, so the run declares ``connectable=False``; the SSH path
of ready_machine is covered in test_libcloud_ssh.py against a real sshd.
"""

from __future__ import annotations

import pytest

from provisioning.driver import Capabilities
from provisioning.testing.conformance import DriverConformance
from tests.integration.cloud.conftest import REPO, URL, cloud_config, machine_options


class TestLibcloudEC2Conformance(DriverConformance):
    capabilities = Capabilities(connectable=False, images=True, imports=True)

    @pytest.fixture(autouse=True)
    def _moto(self, moto):
        self.moto = moto

    def driver_url(self, tmp_path):
        return URL

    def config_data(self, tmp_path):
        return cloud_config(self.moto, tmp_path)

    def machine_options(self, name):
        return machine_options()

    def worker_env(self):
        return {"PYTHONPATH": REPO}

    def count_machines(self, driver, name):
        # every test has its own state store, hence its own provisioning:store tag; the name
        # alone would also count nodes left by earlier tests' machines of the same name
        return len(driver.find_nodes(name, self.store_id))

    @pytest.fixture(autouse=True)
    def _remember_store(self, store):
        self.store_id = store.store_id

    def image_of(self, driver, spec):
        return driver.ops.node_image(driver._node(spec))
