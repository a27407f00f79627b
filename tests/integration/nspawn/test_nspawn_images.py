"""``images:`` on nspawn: machines: an image with two packages and a file step, built once in a
builder machine, frozen, reused by a second run, rebuilt when a step changes.

Packages come from the suite's own archive on loopback (``provisioning.testing.apt_archive``),
reached through the package proxy: nothing leaves the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.cluster import Cluster
from provisioning.testing.apt_archive import build_archive, serve_archive, sources_line

from .conftest import sweep

pytestmark = pytest.mark.slow
PACKAGES = ("provtest-hello", "provtest-extra")


def _cluster_text(url: str, cache: str, archive: str, conf: str) -> str:
    return f"""\
driver: "{url}"
driver_options: {{"{url}": {{image_cache: {cache}, package_archives: ["{archive}"]}}}}
images:
  local-apt:                     # the base, pointed at the suite's archive only
    from: "debian:bookworm"
    converge:
      - command: {{run: "rm -f /etc/apt/sources.list.d/*",
                   onlyif: "ls /etc/apt/sources.list.d/* >/dev/null 2>&1"}}
      - file: {{path: /etc/apt/sources.list, content: "{sources_line(archive).strip()}\\n"}}
  web:
    from: local-apt
    packages: [{", ".join(PACKAGES)}]
    converge:
      - file: {{path: /etc/provtest.conf, content: "{conf}\\n"}}
machines:
  web:
    count: 2
    machine_options: {{image: web}}
"""


@pytest.fixture
def archive(tmp_path):
    build_archive(tmp_path / "archive", {name: "1.0" for name in PACKAGES})
    with serve_archive(tmp_path / "archive") as url:
        yield url


def _load(path: Path, handler: RecordingActionHandler) -> Cluster:
    return Cluster.load(str(path), listeners=[handler.events.append])


def test_image_with_packages_and_a_file_step_is_built_once_and_rebuilt_on_change(
        tmp_path, warehouse_url, image_cache, archive):
    path = tmp_path / "cluster.yml"
    path.write_text(_cluster_text(warehouse_url, image_cache, archive, "v1"))
    events = RecordingActionHandler()
    cluster = _load(path, events)
    try:
        results = cluster.up()
        assert results.ok, results.failures
        for name in ("web-1", "web-2"):
            machine = results[name].value
            for package in PACKAGES:
                status = machine.execute_always(f"dpkg-query -W -f='${{db:Status-Status}}' "
                                                f"{package}").stdout
                assert status == "installed"
            assert machine.execute_always("cat /etc/provtest.conf").stdout == "v1\n"
            # the image keeps no machine's identity: each has its own host key and machine-id
            assert machine.execute_always("hostname").stdout.strip() == name
            machine.disconnect()
        ids = {m: cluster.connect(m).execute_always("cat /etc/machine-id").stdout
               for m in ("web-1", "web-2")}
        assert len(set(ids.values())) == 2
        built = {row["name"]: row for row in cluster.image_status()}
        assert {r["state"] for r in built.values()} == {"built"}
        texts = [str(e) for e in events.events]
        assert sum("building image" in t for t in texts) == 2  # local-apt, then web
        assert not [s for s in cluster.store.list("machine") if s.name.startswith("image-")], \
            "builder machines are destroyed after the capture"
    finally:
        cluster.close()

    # a second run reuses both images: nothing is built, nothing changes
    again = RecordingActionHandler()
    cluster = _load(path, again)
    try:
        results = cluster.up()
        assert results.ok, results.failures
        assert not any("building image" in str(e) for e in again.events)
        assert [e for e in again.events if e.kind == "action"] == []
        assert {r["image_id"] for r in cluster.image_status()} == \
            {r["image_id"] for r in built.values()}
        for outcome in results.values():
            outcome.value.disconnect()
    finally:
        cluster.close()

    # a changed step rebuilds that image only (its base is reused)
    path.write_text(_cluster_text(warehouse_url, image_cache, archive, "v2"))
    changed = RecordingActionHandler()
    cluster = _load(path, changed)
    try:
        assert {r["name"]: r["state"] for r in cluster.image_status()} == {
            "local-apt": "built", "web": "outdated"}
        new_ids = cluster.build_images(["web"])
        assert new_ids["web"] != built["web"]["image_id"]
        texts = [str(e) for e in changed.events]
        assert sum("building image" in t for t in texts) == 1
        assert any("kept the previous build" in t for t in texts), \
            "machines still boot from the old build: it must stay"
        results = cluster.destroy()
        assert results.ok, results.failures
        cluster.destroy_images()  # the kept earlier build goes now too
        assert [e.name for e in cluster.store.list("image")] == []
        driver = cluster.runner.driver(warehouse_url)
        import os

        assert os.listdir(driver.images_dir()) == []
        assert not sweep(driver)
    finally:
        cluster.close()
