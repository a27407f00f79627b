"""One base image per Debian release: ``image: debian:RELEASE`` builds once and boots.

Each release the host's debootstrap knows is built once into the shared image cache (about a
minute each, the first time on a machine; later runs reuse it) and booted side by side.
"""

from __future__ import annotations

import json
import os

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.config import Config
from provisioning.convergence import packages
from provisioning.drivers.nspawn_host import image
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore
from provisioning.testing.apt_archive import build_archive, serve_archive, sources_line

RELEASES = [r for r in image.DEBIAN_RELEASES if r in (image.debootstrap_suites() or ())]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def release_images(image_cache):
    """Every release built once per cache (under the image lock, shared with other runs);
    missing ones side by side (debootstrap mostly waits on the mirror and dpkg)."""
    from concurrent.futures import ThreadPoolExecutor

    def build(release: str):
        return image.ensure_image(image.resolve_image(f"debian:{release}", image_cache))
    with ThreadPoolExecutor(max(1, len(RELEASES))) as pool:
        return dict(zip(RELEASES, pool.map(build, RELEASES)))


def test_each_debian_release_builds_once_boots_and_installs_packages(
        tmp_path, release_images, nspawn_driver):
    assert RELEASES, "this host's debootstrap knows none of the tested Debian releases"
    for release, built in release_images.items():
        assert built.ready and built.rootfs.endswith(f"/debian-{release}/rootfs")
        with open(os.path.join(os.path.dirname(built.rootfs), ".complete"), encoding="utf-8") as f:
            assert json.load(f)["suite"] == release
        # a second ensure finds it in the cache: same directory, nothing rebuilt
        before = os.stat(built.rootfs).st_ino
        assert image.ensure_image(image.resolve_image(f"debian:{release}",
                                                      nspawn_driver.image_cache)) == built
        assert os.stat(built.rootfs).st_ino == before

    build_archive(tmp_path / "archive", {"provtest-hello": "1.0"})
    served = serve_archive(tmp_path / "archive")
    archive = served.__enter__()
    config = Config({"driver_options": {nspawn_driver.driver_url: {
        "image_cache": nspawn_driver.image_cache, "package_archives": [archive]}}},
        base_dir=str(tmp_path))
    nspawn_driver = driver_for_url(nspawn_driver.driver_url, config)  # same warehouse
    store = SQLiteStore(tmp_path / "state.db")
    provisioner = Provisioner(store, config=config, action_handler=RecordingActionHandler(),
                              parallel=len(RELEASES))
    requests = [(nspawn_driver, f"on-{r}", {"image": f"debian:{r}"}) for r in RELEASES]
    try:
        results = provisioner.run_many("up", requests)
        assert results.ok, results.failures
        for release in RELEASES:
            machine = results[f"on-{release}"].value
            os_release = machine.execute_always("cat /etc/os-release").stdout
            assert f"VERSION_CODENAME={release}" in os_release
            assert machine.execute_always("cat /proc/1/comm").stdout.strip() == "systemd"
            assert provisioner.spec(f"on-{release}").reference["image"] == f"debian:{release}"
            # apt inside reaches the (suite's own) archive through the package proxy
            machine.execute_always("rm -f /etc/apt/sources.list.d/* && cat > /etc/apt/sources.list",
                                   input=sources_line(archive))
            assert packages.converge_packages(machine, ["provtest-hello"], "present") is True
            assert packages.installed(machine, ["provtest-hello"]) == {"provtest-hello"}
            machine.disconnect()
        assert {f"debian:{r}" for r in RELEASES} <= set(nspawn_driver.list_choices()["images"])
    finally:
        for _, name, options in requests:
            provisioner.destroy(name, options, nspawn_driver)
        store.close()
        served.__exit__(None, None, None)
