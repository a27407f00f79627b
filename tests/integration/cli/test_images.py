"""``images:`` through the real CLI on the fake: driver: built once, reused, rebuilt on change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from provisioning.errors import ConfigError
from tests.integration.cli.helpers import converge, json_lines, warehouse_counters

CLUSTER = """\
driver: "fake:"
images:
  site:
    from: fake-linux
    converge:
      - file: {path: site/index.html, source: index.html}
      - command: {run: "echo baked >> baked.log", creates: baked.log}
machines:
  web:
    count: 2
    machine_options: {image: site}
    converge:
      - command: {run: "echo $PWD > site/who.txt", creates: site/who.txt}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    (tmp_path / "index.html").write_text("<h1>v1</h1>\n")
    return tmp_path


def _machine_dir(project: Path, name: str) -> Path:
    from provisioning.drivers.fake import FakeWarehouse

    warehouse = FakeWarehouse(str(project / ".provisioning" / "fake"))
    return Path(next(s["dir"] for s in warehouse.servers().values() if s["name"] == name))


def _images(project: Path) -> dict[str, dict]:
    listed = converge("image", "list", "--output", "json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    return {row["name"]: row for row in json.loads(listed.stdout)["images"]}


def test_image_is_built_once_reused_and_rebuilt_when_a_file_it_reads_changes(project: Path):
    assert _images(project)["site"]["state"] == "not built"
    plan = converge("up", "--why-run", cwd=project)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "would build image site (from fake-linux, 2 steps; never built)" in plan.stdout
    assert warehouse_counters(project)["creates"] == 0, "why-run must create nothing"
    assert not (project / ".provisioning" / "fake" / "images").exists()

    first = converge("up", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "building image site" in first.stdout and "image site built in" in first.stdout
    counters = warehouse_counters(project)
    assert counters == {"creates": 3, "destroys": 1}  # the builder, then web-1 and web-2
    for name in ("web-1", "web-2"):
        files = _machine_dir(project, name)
        assert (files / "site/index.html").read_text() == "<h1>v1</h1>\n"  # from the image
        assert (files / "baked.log").read_text() == "baked\n"  # the step ran once, in the image
        assert (files / "site/who.txt").read_text() == f"{files}\n"  # the machine's own step
    built = _images(project)["site"]
    assert built["state"] == "built" and built["image_id"].startswith("img-")

    again = converge("up", "--output", "json", cwd=project)
    assert again.returncode == 0, again.stderr
    events = json_lines(again.stdout)
    assert [e for e in events if e["event"] == "action"] == []
    assert any("image site is up to date" in e["description"] for e in events
               if e["event"] == "progress")
    assert warehouse_counters(project) == counters, "a second up must not rebuild the image"

    (project / "index.html").write_text("<h1>v2</h1>\n")
    assert _images(project)["site"]["state"] == "outdated"
    rebuilt = converge("image", "build", cwd=project)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "its definition changed" in rebuilt.stdout
    after = _images(project)["site"]
    assert after["state"] == "built" and after["image_id"] != built["image_id"]
    assert converge("image", "build", cwd=project).stdout.count("up to date") == 1

    gone = converge("image", "destroy", cwd=project)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert _images(project)["site"]["state"] == "not built"
    assert converge("destroy", "-q", cwd=project).returncode == 0


def test_bad_image_definitions_are_config_errors_naming_the_key(tmp_path: Path):
    from provisioning.cluster import parse_cluster

    data = {"driver": "fake:", "images": {"Bad": {"from": "x"}, "ok": {"packages": ["Nope!"],
                                                                    "colour": 1},
                                          "pinned": {"from": "fake-linux",
                                                     "machine_options": {"image": "x"}},
                                          "loop-a": {"from": "loop-b"},
                                          "loop-b": {"from": "loop-a"}},
            "machines": {"m": {"machine_options": {"image": "ok"}, "driver": "fake:other"}}}
    with pytest.raises(ConfigError) as info:
        parse_cluster(data, str(tmp_path / "cluster.yml"))
    problems = {p.key: p.message for p in info.value.problems}
    assert "invalid image name 'Bad'" in problems["images.Bad"]
    assert "required" in problems["images.ok.from"]
    assert "not a Debian package name" in problems["images.ok.packages"]
    assert "unknown key 'colour'" in problems["images.ok.colour"]
    assert "set the base image with 'from'" in problems["images.pinned.machine_options.image"]
    assert "use one driver for both" in problems["machines.m.machine_options.image"]
    assert "loop-a -> loop-b -> loop-a" in problems["images.loop-a.from"]


def test_unknown_image_name_in_the_cli_has_a_did_you_mean(project: Path):
    result = converge("image", "build", "sit", cwd=project)
    assert result.returncode == 2
    assert "no image 'sit'" in result.stderr and "did you mean 'site'" in result.stderr


def test_a_builder_left_by_an_interrupted_build_is_destroyed_first(project: Path):
    """A crash mid-build leaves the builder machine in the state: the next build starts clean."""
    from provisioning.cluster import Cluster

    with Cluster.load(str(project / "cluster.yml")) as cluster:
        driver = cluster.runner.driver(cluster.file.images["site"].driver_url)
        cluster.runner.provisioner.up(driver, "image-builder-site", {"image": "fake-linux"})
        stale = cluster.store.get("machine", "image-builder-site").reference["server_id"]
    result = converge("image", "build", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left by an interrupted build" in result.stdout
    from provisioning.drivers.fake import FakeWarehouse

    assert stale not in FakeWarehouse(str(project / ".provisioning" / "fake")).servers()
    assert _images(project)["site"]["state"] == "built"


def test_plan_shows_the_images_up_would_build(project: Path):
    before = converge("plan", cwd=project)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "would build image site (from fake-linux, 2 steps; never built)" in before.stdout
    assert "1 image to build" in before.stdout
    assert converge("up", "-q", cwd=project).returncode == 0
    after = converge("plan", cwd=project)
    assert after.returncode == 0 and "image" not in after.stdout
    (project / "index.html").write_text("<h1>v2</h1>\n")
    changed = converge("plan", cwd=project)
    assert "would build image site (from fake-linux, 2 steps; its definition changed)" in \
        changed.stdout
    assert converge("destroy", "-q", cwd=project).returncode == 0
    assert converge("image", "destroy", "-q", cwd=project).returncode == 0


def _image_dirs(project: Path) -> list[str]:
    images = project / ".provisioning" / "fake" / "images"
    return sorted(os.listdir(images)) if images.exists() else []


def test_a_build_killed_between_capture_and_save_leaks_no_image(project: Path):
    """kill -9 at after_capture (the image made, its entry not saved yet): the entry records
    the pending capture, so the next ``up`` destroys the image that capture made before it
    captures anew, and the warehouse holds exactly the image the state names. A rebuild killed
    there keeps the earlier build recorded (retired), so it is not lost either."""
    killed = converge("up", cwd=project, env={"PROVISIONING_FAULT": "after_capture:crash"})
    assert killed.returncode == 86, killed.stdout + killed.stderr
    (leftover,) = _image_dirs(project)
    assert _images(project)["site"]["state"] == "not built"
    again = converge("up", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"destroy image {leftover}, made by a capture of site that was stopped before it "
            "was recorded") in again.stdout
    first = _images(project)["site"]
    assert first["state"] == "built" and _image_dirs(project) == [first["image_id"]]

    (project / "index.html").write_text("<h1>v2</h1>\n")
    killed = converge("up", cwd=project, env={"PROVISIONING_FAULT": "after_capture:crash"})
    assert killed.returncode == 86, killed.stdout + killed.stderr
    assert len(_image_dirs(project)) == 2  # the first build, and the unrecorded capture
    again = converge("up", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    second = _images(project)["site"]
    assert second["state"] == "built" and _image_dirs(project) == [second["image_id"]]
    from provisioning.drivers.fake import FakeWarehouse

    warehouse = FakeWarehouse(str(project / ".provisioning" / "fake"))
    assert sorted(s["name"] for s in warehouse.servers().values()) == ["web-1", "web-2"]
    assert warehouse.leftovers() == []


def test_destroying_an_image_whose_capture_was_killed_leaks_nothing(project: Path):
    """``image destroy`` of an entry a kill left pending removes the image that capture made
    (why-run only plans it), the killed build's builder machine, and forgets the entry."""
    killed = converge("up", cwd=project, env={"PROVISIONING_FAULT": "after_capture:crash"})
    assert killed.returncode == 86, killed.stdout + killed.stderr
    (leftover,) = _image_dirs(project)
    plan = converge("image", "destroy", "site", "--why-run", cwd=project)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"would destroy image {leftover}, made by a capture" in plan.stdout
    assert _image_dirs(project) == [leftover]
    gone = converge("image", "destroy", "site", cwd=project)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert _image_dirs(project) == []
    assert _images(project)["site"]["state"] == "not built"
    assert "destroying builder machine image-builder-site left by an interrupted build" in \
        gone.stdout  # the killed build's builder goes with it
    from provisioning.drivers.fake import FakeWarehouse

    assert FakeWarehouse(str(project / ".provisioning" / "fake")).servers() == {}


def test_destroying_an_image_whose_build_was_killed_before_its_entry_leaks_no_builder(
        project: Path):
    """kill -9 while the builder machine readies (the image's entry not saved yet): ``image
    destroy`` still finds the killed build's builder machine and destroys it."""
    killed = converge("image", "build", cwd=project,
                      env={"PROVISIONING_FAULT": "during_ready:crash"})
    assert killed.returncode == 86, killed.stdout + killed.stderr
    assert _images(project)["site"]["state"] == "not built"
    from provisioning.drivers.fake import FakeWarehouse

    warehouse = FakeWarehouse(str(project / ".provisioning" / "fake"))
    assert [s["name"] for s in warehouse.servers().values()] == ["image-builder-site"]
    plan = converge("image", "destroy", "site", "--why-run", cwd=project)
    assert plan.returncode == 0 and "would destroy" in plan.stdout, plan.stdout + plan.stderr
    assert len(warehouse.servers()) == 1
    gone = converge("image", "destroy", "site", cwd=project)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "destroying builder machine image-builder-site left by an interrupted build" in \
        gone.stdout
    assert warehouse.servers() == {}
    status = converge("status", "--output", "json", cwd=project)
    assert "image-builder-site" not in status.stdout, status.stdout
