"""The live display of a fleet: counts kept per event, the longest-running machines named, a
row per machine only for a few machines."""

from __future__ import annotations

import io

from rich.console import Console

from provisioning.actions import Event
from provisioning.cli.output import LiveFleet


def draw(fleet: LiveFleet) -> str:
    console = Console(file=io.StringIO(), width=120, force_terminal=False, color_system=None)
    console.print(fleet)
    return console.file.getvalue()


def test_a_fleet_is_summarised_with_its_slowest_machines_named():
    fleet = LiveFleet()
    for i in range(40):  # started one second apart: node-0 has run longest
        fleet.update(Event("action", "create server", f"node-{i}", time=1000.0 + i),
                     "create server")
    for i in range(10, 30):
        fleet.update(Event("result", "up: 1 change", f"node-{i}", data={"changes": 1}), "up")
    for i in range(30, 38):
        fleet.update(Event("result", "up to date", f"node-{i}", data={"changes": 0}), "up")
    fleet.update(Event("error", "boom", "node-38"), "boom")
    fleet.update(Event("error", "boom", "node-39"), "boom")
    assert (fleet.done, fleet.changed, fleet.failed, len(fleet.started)) == (28, 20, 2, 10)
    text = draw(fleet)
    assert "28 done (20 changed), 2 failed, 10 running" in text
    assert "slowest: node-0" in text and "node-1 " in text and "node-2 " in text
    assert "node-3 " not in text and "node-20" not in text  # no row per machine


def test_a_few_machines_get_a_row_each():
    fleet = LiveFleet()
    fleet.update(Event("action", "create server", "web-1"), "create server")
    fleet.update(Event("result", "up: 1 change", "web-2", data={"changes": 1}), "up: 1 change")
    text = draw(fleet)
    assert "web-1" in text and "create server" in text and "✓" in text and "web-2" in text
    assert "done" not in text
