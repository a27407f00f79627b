"""What one of many runners on a PostgreSQL state loads: nothing of the SQLite store, and not
``inspect`` (each runner pays its imports before it can share the run; the time itself is
measured by bench/startup.py --first-claim, not here)."""

from __future__ import annotations

import json

from provisioning.testing.postgres import postgres_server, postgres_url  # noqa: F401
from tests.integration.cli.helpers import main_in_fresh_interpreter

#: loaded by a SQLite state or by ``inspect``'s users, never by a runner on PostgreSQL
RUNNER_NEVER_LOADS = ("sqlite3", "provisioning.store.sqlite", "provisioning.store.state_file",
                      "inspect", "click")


def test_a_runner_on_postgresql_loads_no_sqlite_and_no_inspect(tmp_path, postgres_url):  # noqa: F811
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web:\n'
                                          "    count: 3\n")
    out = main_in_fresh_interpreter(tmp_path, ["--state", postgres_url, "--output", "json", "up",
                                               "--parallel", "2"], RUNNER_NEVER_LOADS)
    *events, loaded = out.stdout.splitlines()
    assert loaded == "LOADED [] 0"
    summary = json.loads(events[-1])
    assert summary["event"] == "summary" and summary["ok"]
    assert sorted(summary["machines"]) == ["web-1", "web-2", "web-3"]
    assert not (tmp_path / ".provisioning").exists()  # the state is the database's
