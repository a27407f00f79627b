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
