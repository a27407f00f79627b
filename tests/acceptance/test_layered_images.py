"""An image built from another image of the file (layers): planning it on a new project."""

from __future__ import annotations

import pytest

from tests.cli_runner import converge

LAYERED = """driver: "fake:./cloud"
images:
  base: {from: fake-linux}
  app:
    from: base
    converge:
      - file: {path: /etc/app, content: "app\\n"}
machines:
  web: {machine_options: {image: app}}
"""


@pytest.mark.parametrize("args", [("plan",), ("up", "--why-run")], ids=["plan", "why-run"])
def test_a_machine_on_a_layered_image_not_built_yet_is_planned_not_refused(tmp_path, args):
    """Under why-run an image not built stood in as its ``from``, here ``base``: an image of
    the file, not one the driver has, so the run was refused with exit 2 ("fake image 'base'
    does not exist") while ``up`` built both layers and worked."""
    (tmp_path / "cluster.yml").write_text(LAYERED)
    result = converge(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 images to build, 1 to create" in result.stdout, result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]
    converge("image", "build", "base", cwd=tmp_path, check=True)   # the lower layer built
    again = converge(*args, cwd=tmp_path, check=True)
    assert "1 image to build, 1 to create" in again.stdout, again.stdout


def test_image_destroy_of_a_name_neither_the_file_nor_the_state_has_is_refused(tmp_path):
    """``converge image destroy bsae`` (a typo) said "bsae: destroyed" with exit 0."""
    (tmp_path / "cluster.yml").write_text(LAYERED)
    result = converge("image", "destroy", "bsae", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no image 'bsae' in this cluster file" in result.stderr and "base" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]
    converge("image", "build", "base", cwd=tmp_path, check=True)
    (tmp_path / "cluster.yml").write_text(LAYERED.replace("  base: {from: fake-linux}\n", "")
                                          .replace("from: base", "from: fake-linux"))
    gone = converge("image", "destroy", "base", cwd=tmp_path)   # in the state, not the file
    assert gone.returncode == 0 and "base: destroyed" in gone.stdout, gone.stdout + gone.stderr
