"""``converge watch`` takes in an edited cluster file each round: a lowered count destroys the
highest-numbered machines, a raised one creates the new ones, ``prevent_destroy`` keeps them
(an error each round), a broken file keeps the last good one. Rounds are run one by one: no
timing."""

from __future__ import annotations

from pathlib import Path

from provisioning.actions import RecordingActionHandler
from provisioning.cluster import Cluster
from provisioning.cluster.watch import Watcher
from provisioning.drivers.fake import FakeWarehouse


def write(project: Path, count: int, extra: str = "") -> str:
    path = project / "cluster.yml"
    path.write_text(f'name: shop\ndriver: "fake:./cloud"\nmachines:\n  web:\n'
                    f"    count: {count}\n{extra}")
    return str(path)


def names(project: Path) -> list[str]:
    return sorted(s["name"] for s in FakeWarehouse(str(project / "cloud")).servers().values())


def test_watch_scales_down_and_up_with_the_file(tmp_path):
    path = write(tmp_path, 3)
    handler = RecordingActionHandler()
    with Cluster.load(path, listeners=[handler.emit]) as cluster:
        assert cluster.up().ok
        watcher = Watcher(cluster.runner, cluster.select(), interval=1.0)
        assert {r.verdict for r in watcher.round().values()} == {"healthy"}
        write(tmp_path, 1)
        verdicts = {n: r.verdict for n, r in watcher.round().items()}
        assert verdicts == {"web-3": "destroyed", "web-2": "destroyed", "web-1": "healthy"}
        assert names(tmp_path) == ["web-1"]
        assert sorted(cluster.runner.entries()) == ["web-1"]
        write(tmp_path, 2)
        assert {n: r.verdict for n, r in watcher.round().items()} == {"web-1": "healthy",
                                                                      "web-2": "created"}
        assert names(tmp_path) == ["web-1", "web-2"]
        (tmp_path / "cluster.yml").write_text("machines: [not, a, mapping]\n")
        assert {r.verdict for r in watcher.round().values()} == {"healthy"}
        assert names(tmp_path) == ["web-1", "web-2"]
    reloads = [e.data["ok"] for e in handler.events if e.data.get("watch") == "reload"]
    assert reloads == [True, True, False]


def test_watch_never_scales_down_a_group_with_prevent_destroy(tmp_path):
    path = write(tmp_path, 2, "    prevent_destroy: true\n")
    handler = RecordingActionHandler()
    with Cluster.load(path, listeners=[handler.emit]) as cluster:
        assert cluster.up().ok
        watcher = Watcher(cluster.runner, cluster.select(), interval=1.0)
        write(tmp_path, 1, "    prevent_destroy: true\n")
        for _ in range(2):
            assert {n: r.verdict for n, r in watcher.round().items()} == {"web-1": "healthy",
                                                                          "web-2": "kept"}
        assert names(tmp_path) == ["web-1", "web-2"]
    errors = [str(e.description) for e in handler.events if e.kind == "error"]
    assert len(errors) == 2 and all("prevent_destroy" in e for e in errors)
