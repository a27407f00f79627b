"""The nspawn: driver passes the whole driver conformance suite, with real SSH into real
systemd-nspawn machines."""

from __future__ import annotations

import pytest

from provisioning.testing.conformance import DriverConformance


@pytest.mark.slow
class TestNspawnConformance(DriverConformance):
    worker_timeout = 300.0

    @pytest.fixture(autouse=True)
    def _image(self, image_cache, sweeper):
        self._cache = image_cache
        self._sweep = sweeper

    def driver_url(self, tmp_path) -> str:
        return f"nspawn:{tmp_path / 'warehouse'}"

    def config_data(self, tmp_path):
        return {"driver_options": {self.driver_url(tmp_path): {"image_cache": self._cache}}}

    def count_machines(self, driver, name) -> int:
        return len(driver.find_machines(name))

    def cleanup(self, driver) -> None:
        left = self._sweep(driver)
        assert not left, f"conformance case left machines behind: {left}"
