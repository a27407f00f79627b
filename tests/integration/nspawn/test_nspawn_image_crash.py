"""An ``nspawn:`` image build killed (kill -9, through the ``converge`` script) after the
builder's layer was frozen into the image directory but before the image entry was saved:
the entry recorded the directory it was freezing into, so the next build removes that
directory before freezing anew, and ``image destroy`` of an entry left so removes it too.
Nothing is left in the warehouse's image directory but what the state names. A build killed
earlier, while its builder readied, leaves no builder machine behind ``image destroy`` either."""

from __future__ import annotations

import json
import os

import pytest

from provisioning.faults import CRASH_EXIT_CODE, FAULT_ENV
from tests.cli_runner import converge

from .conftest import IMAGE

pytestmark = pytest.mark.slow


def _images(tmp_path) -> dict:
    listed = converge("image", "list", "--output", "json", cwd=tmp_path, check=True)
    return {row["name"]: row for row in json.loads(listed.stdout)["images"]}


def _write_baked_cluster(tmp_path, warehouse_url: str, image_cache: str) -> None:
    """One image, ``baked``, built from IMAGE with one file, and one machine."""
    (tmp_path / "cluster.yml").write_text(json.dumps({
        "driver": warehouse_url,
        "driver_options": {warehouse_url: {"image_cache": image_cache}},
        "images": {"baked": {"from": IMAGE,
                             "converge": [{"file": {"path": "/etc/baked", "content": "x\n"}}]}},
        "machines": {"web": {"machine_options": {"image": IMAGE}}}}))


def test_an_image_build_killed_after_the_freeze_leaks_no_image(tmp_path, warehouse_url,
                                                               image_cache, nspawn_driver):
    _write_baked_cluster(tmp_path, warehouse_url, image_cache)
    images_dir = nspawn_driver.images_dir()
    try:
        killed = converge("image", "build", cwd=tmp_path, timeout=600,
                          env={FAULT_ENV: "after_capture:crash"})
        assert killed.returncode == CRASH_EXIT_CODE, killed.stdout + killed.stderr
        [leftover] = os.listdir(images_dir)
        assert _images(tmp_path)["baked"]["state"] == "not built"
        built = converge("image", "build", cwd=tmp_path, timeout=600, check=True)
        assert f"destroy image {os.path.join(images_dir, leftover)}, made by a capture" in \
            built.stdout
        image_id = _images(tmp_path)["baked"]["image_id"]
        assert [os.path.join(images_dir, d) for d in os.listdir(images_dir)] == [image_id]

        killed = converge("image", "build", "--force", cwd=tmp_path, timeout=600,
                          env={FAULT_ENV: "after_capture:crash"})
        assert killed.returncode == CRASH_EXIT_CODE, killed.stdout + killed.stderr
        assert len(os.listdir(images_dir)) == 2  # the recorded build, the unrecorded one
        converge("image", "destroy", "baked", cwd=tmp_path, timeout=600, check=True)
        assert os.listdir(images_dir) == []
        assert [r.name for r in nspawn_driver.warehouse.records()] == []
    finally:
        converge("image", "destroy", "baked", cwd=tmp_path, timeout=600)


def test_image_destroy_after_a_build_killed_before_its_entry_leaks_no_builder(
        tmp_path, warehouse_url, image_cache, nspawn_driver):
    """kill -9 while the builder machine readies (no image entry saved yet): ``image
    destroy`` finds the builder machine the killed build left and removes it."""
    _write_baked_cluster(tmp_path, warehouse_url, image_cache)
    try:
        killed = converge("image", "build", cwd=tmp_path, timeout=600,
                          env={FAULT_ENV: "during_ready:crash"})
        assert killed.returncode == CRASH_EXIT_CODE, killed.stdout + killed.stderr
        assert _images(tmp_path)["baked"]["state"] == "not built"
        assert [r.name for r in nspawn_driver.warehouse.records()] == ["image-builder-baked"]
        gone = converge("image", "destroy", "baked", cwd=tmp_path, timeout=600, check=True)
        assert "destroying builder machine image-builder-baked" in gone.stdout
        assert [r.name for r in nspawn_driver.warehouse.records()] == []
    finally:
        converge("image", "destroy", "baked", cwd=tmp_path, timeout=600)
