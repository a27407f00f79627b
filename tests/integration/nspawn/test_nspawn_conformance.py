"""The nspawn: driver passes the whole driver conformance suite, with real SSH into real
systemd-nspawn machines."""

from __future__ import annotations

import os

import pytest

from provisioning.drivers.nspawn import IMAGE_CACHE_ENV
from provisioning.faults import CRASH_EXIT_CODE
from provisioning.testing.conformance import DriverConformance

from .conftest import DEFAULT_CACHE


@pytest.mark.slow
class TestNspawnConformance(DriverConformance):
    worker_timeout = 300.0

    @pytest.fixture(autouse=True)
    def _image(self, image_cache, sweeper, driver):
        self._sweep = sweeper
        yield
        # cases without the provisioner fixture (the concurrent-allocate one) destroy nothing
        # themselves: remove their machines too, so no test leaves anything on the host
        sweeper(driver)

    def driver_url(self, tmp_path) -> str:
        return f"nspawn:{tmp_path / 'warehouse'}"

    def config_data(self, tmp_path):
        cache = os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE  # as the image_cache fixture
        return {"driver_options": {self.driver_url(tmp_path): {"image_cache": cache}}}

    def count_machines(self, driver, name) -> int:
        return len(driver.find_machines(name))

    def leftovers(self, driver) -> list[str]:
        machines = driver.warehouse.machines_dir
        return [os.path.join(machines, e) for e in sorted(os.listdir(machines))
                if e.startswith(".")] if os.path.isdir(machines) else []

    def cleanup(self, driver) -> None:
        left = self._sweep(driver)
        assert not left, f"conformance case left machines behind: {left}"

    def present_other_host_key(self, driver, store, name):
        """The real thing: the machine's own host key file is replaced."""
        from provisioning.drivers.nspawn_host.rootfs import HOST_KEY

        return self.rotate_host_key_on_machine(driver, store, name, "/" + HOST_KEY)

    def test_crash_while_making_the_machine_directory_is_reclaimed(
            self, tmp_path, conformance_config, driver, provisioner):
        """Killed between the mkdir of a new machine directory and its record: what is left is
        tagged ``.creating-ID`` (never a machine), and the next create removes it."""
        name = "conf-crash-mkdir"
        worker = self._worker(tmp_path, conformance_config, driver, name,
                              fault="during_create:crash")
        _, err = worker.communicate(timeout=self.worker_timeout)
        assert worker.returncode == CRASH_EXIT_CODE, \
            f"the driver never reached fault point 'during_create' (exit {worker.returncode}): {err}"
        left = [os.path.basename(p) for p in self.leftovers(driver)]
        assert len(left) == 1 and left[0].startswith(".creating-"), left
        assert driver.warehouse.records() == []
        provisioner.allocate(driver, name, self.machine_options(name))
        assert self.count_machines(driver, name) == 1
        assert self.leftovers(driver) == [], "the re-run must remove what the killed run left"

