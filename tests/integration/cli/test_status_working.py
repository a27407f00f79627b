"""``converge status`` says which runner is working on which machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.cli_runner import converge


def test_status_names_the_runner_holding_a_machine(tmp_path):
    (tmp_path / "cluster.yml").write_text("driver: 'fake:'\nmachines:\n  web: {count: 2}\n")
    converge("up", cwd=tmp_path, check=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from provisioning.store.sqlite import SQLiteStore
        lock = SQLiteStore({str(tmp_path / '.provisioning' / 'state.db')!r}).lock(
            "web-2", ttl=600, holder={{"host": "runner-b", "pid": 4242,
                                       "command": "converge up", "since": "2026-11-25T12:00:00Z"}})
        print("locked", lock.token, flush=True); time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        word, token = holder.stdout.readline().split()
        assert word == "locked"
        text = converge("status", cwd=tmp_path, check=True).stdout
        line = next(l for l in text.splitlines() if l.startswith("web-2"))
        assert "WORKING" in text.splitlines()[0]
        assert "converge up (pid 4242 on runner-b since 2026-11-25T12:00:00Z)" in line
        web1 = next(l for l in text.splitlines() if l.startswith("web-1"))
        assert "pid" not in web1
        data = json.loads(converge("status", "--output", "json", cwd=tmp_path, check=True).stdout)
        assert {m["name"]: (m["locked_by"] or {}).get("pid") for m in data["machines"]} == \
            {"web-1": None, "web-2": 4242}
    finally:
        holder.kill()
        holder.wait()
    # a dead runner on another host: its lease runs out (its last renewal had no time left,
    # standing for the 10 minutes without renewals), then nobody works
    from provisioning.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / ".provisioning" / "state.db"))
    store._renew("web-2", token, 0.0)
    store.close()
    idle = converge("status", cwd=tmp_path, check=True).stdout
    assert "WORKING" not in idle


def test_status_and_state_show_forget_a_killed_runner_on_this_host_at_once(tmp_path):
    """A runner on this host killed mid-run (kill -9: no release) is not named as working on its
    machine, although its lease has a long time left: its PID is gone."""
    (tmp_path / "cluster.yml").write_text("driver: 'fake:'\nmachines:\n  web: {count: 2}\n")
    converge("up", cwd=tmp_path, check=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from provisioning.store.sqlite import SQLiteStore
        SQLiteStore({str(tmp_path / '.provisioning' / 'state.db')!r}).lock("web-2", ttl=600)
        print("locked", flush=True); time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        working = converge("status", cwd=tmp_path, check=True).stdout
        assert f"pid {holder.pid} on" in working  # alive: named
    finally:
        holder.kill()
        holder.wait()  # reaped: its PID no longer exists
    idle = converge("status", cwd=tmp_path, check=True).stdout
    assert "WORKING" not in idle and f"pid {holder.pid}" not in idle
    shown = converge("state", "show", cwd=tmp_path, check=True).stdout
    assert f"{holder.pid}" not in shown and "working now" not in shown
