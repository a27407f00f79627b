"""The fake: driver passes the whole conformance suite, against real SQLite, across processes."""

from __future__ import annotations

from provisioning.drivers.fake import FakeWarehouse
from provisioning.spec import machine_of_resource
from provisioning.testing.conformance import DriverConformance


class TestFakeDriverConformance(DriverConformance):
    def driver_url(self, tmp_path):
        return f"fake:{tmp_path / 'warehouse'}"

    def count_machines(self, driver, name):
        warehouse = FakeWarehouse(driver.driver_url.split(":", 1)[1])
        return sum(1 for s in warehouse.servers().values()
                   if machine_of_resource(s["tags"].get("provisioning:name", "")) == name)

    def image_of(self, driver, spec):
        return driver._server(spec)["image"]

    def leftovers(self, driver):
        return driver.warehouse.leftovers()
