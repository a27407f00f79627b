"""The docker: driver passes the whole driver conformance suite on Docker and on Podman, with
real SSH into real systemd containers, crash points in separate processes included."""

from __future__ import annotations

import pytest

from provisioning.testing.conformance import DriverConformance

from .conftest import driver_options, sweep


class _DockerConformance(DriverConformance):
    worker_timeout = 300.0
    engine_fixture = ""

    @pytest.fixture(autouse=True)
    def _engine(self, request):
        self.engine = request.getfixturevalue(self.engine_fixture)
        driver = request.getfixturevalue("driver")
        yield
        # the concurrent-allocate case destroys nothing itself: no test leaves a container
        sweep(driver)

    def driver_url(self, tmp_path) -> str:
        return self.engine.driver_url

    def config_data(self, tmp_path):
        return {"driver_options": {self.engine.driver_url: driver_options(self.engine, tmp_path)}}

    def count_machines(self, driver, name) -> int:
        return len(driver.find_containers(name))

    def present_other_host_key(self, driver, store, name):
        """The real thing: the container's own host key file is replaced."""
        from provisioning.drivers.docker_engine.container import HOST_KEY

        return self.rotate_host_key_on_machine(driver, store, name, HOST_KEY)

    def leftovers(self, driver) -> list[str]:
        """Snapshot images of containers that no longer exist (a destroy killed midway)."""
        from provisioning.drivers.docker_engine.container import LABEL_SNAPSHOT_OF

        client = driver.client
        names = {c.name for c in client.containers.list(all=True)}
        return [f"snapshot image {image.id[:19]} of {image.labels[LABEL_SNAPSHOT_OF]}"
                for image in client.images.list(filters={"label": LABEL_SNAPSHOT_OF})
                if image.labels.get(LABEL_SNAPSHOT_OF) not in names]

    def cleanup(self, driver) -> None:
        left = sweep(driver)
        assert not left, f"conformance case left containers behind: {left}"


class TestDockerConformance(_DockerConformance):
    engine_fixture = "docker_engine"


class TestPodmanConformance(_DockerConformance):
    engine_fixture = "podman_engine"
