"""The slots: driver passes provisioning's conformance suite (install the package first:
the suite's worker processes find it through its entry point)."""


from provisioning.testing.conformance import DriverConformance


class TestSlotsConformance(DriverConformance):
    def driver_url(self, tmp_path):
        return f"slots:{tmp_path / 'pool'}"

    def count_machines(self, driver, name):
        return sum(1 for c in driver.pool.claims().values() if c.get("name") == name)
