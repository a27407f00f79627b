"""One base image per Debian release: ``image: debian:RELEASE`` builds once and boots.

Each release the host's debootstrap knows is built once into the shared image cache (about a
minute each, the first time on a machine; later runs reuse it) and booted side by side.
"""

from __future__ import annotations

import json
import os

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.drivers.nspawn_host import image
from provisioning.lifecycle import Provisioner
from provisioning.store.sqlite import SQLiteStore

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


def test_each_debian_release_builds_once_and_boots(tmp_path, release_images, nspawn_config,
                                                   nspawn_driver):
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

    store = SQLiteStore(tmp_path / "state.db")
    provisioner = Provisioner(store, config=nspawn_config, action_handler=RecordingActionHandler(),
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
            machine.disconnect()
        assert {f"debian:{r}" for r in RELEASES} <= set(nspawn_driver.list_choices()["images"])
    finally:
        for _, name, options in requests:
            provisioner.destroy(name, options, nspawn_driver)
        store.close()
