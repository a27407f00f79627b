"""An ``up`` booting machines from an image holds it shared: ``image build --force`` and
``image destroy`` of that image refuse (a StateError naming the run) until the up ends, instead
of replacing the image under the machines it has yet to make.

The up is held in ``ready`` by the fake driver (``hold_ready_until``) until the test lets it
go; the test waits for the up's hold to appear in the state, never for a time."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.cli_runner import converge, start_converge

CLUSTER = """\
driver: "fake:./cloud"
images:
  site:
    from: fake-linux
    converge:
      - command: {{run: "echo baked >> baked.log", creates: baked.log}}
machines:
  web:
    machine_options: {{image: site, hold_ready_until: "{release}"}}
"""


def _image_holds(project: Path) -> list[str]:
    state = project / ".provisioning" / "state.db"
    if not state.exists():
        return []
    with sqlite3.connect(state) as db:
        try:
            rows = db.execute("SELECT name FROM locks WHERE name LIKE 'image-user:site:%' "
                              "AND expires_at > ?", (time.time(),)).fetchall()
        except sqlite3.OperationalError:  # the tables are not made yet
            rows = []
    db.close()
    return [row[0] for row in rows]


def test_a_rebuild_or_destroy_refuses_while_an_up_boots_from_the_image(tmp_path: Path):
    release = tmp_path / "release"
    (tmp_path / "cluster.yml").write_text(CLUSTER.format(release=release))
    converge("image", "build", "site", cwd=tmp_path, check=True)
    built = converge("image", "list", cwd=tmp_path, check=True).stdout
    up = start_converge("up", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not _image_holds(tmp_path):  # the up took its hold (then waits for release)
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, "the up never held the image"
            time.sleep(0.05)
        for args in (("image", "build", "--force", "site"), ("image", "destroy", "site")):
            refused = converge(*args, cwd=tmp_path)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "Traceback" not in refused.stderr
            assert "image site is in use by 1 run booting machines from it" in refused.stderr
            assert f"pid {up.pid}" in refused.stderr, refused.stderr
        assert converge("image", "list", cwd=tmp_path, check=True).stdout == built
    finally:
        release.touch()
        out, err = up.communicate(timeout=120)
    assert up.returncode == 0, out + err
    assert _image_holds(tmp_path) == [], "the up kept its hold after it ended"
    rebuilt = converge("image", "build", "--force", "site", cwd=tmp_path, check=True)
    assert "image site built in" in rebuilt.stdout
    converge("image", "destroy", "site", cwd=tmp_path, check=True)
