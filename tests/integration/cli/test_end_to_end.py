"""The README's sequence (up, exec, status, destroy) on a fake: copy of examples/cluster.yml,
through the real ``converge`` console script."""

from __future__ import annotations

import json

from tests.integration.cli.helpers import (
    converge,
    json_lines,
    saved_machines,
    warehouse_counters,
    warehouse_servers,
)


def actions(events: list[dict], *, performed: bool | None = None) -> list[dict]:
    return [e for e in events if e.get("event") == "action"
            and (performed is None or e["performed"] == performed)]


def test_full_sequence_up_exec_status_destroy(example):
    first = converge("up", cwd=example)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[web-1] create server" in first.stdout
    assert "[web-2] create etc/motd" in first.stdout
    assert "upload and run script scripts/setup.sh" in first.stdout
    assert warehouse_counters(example)["creates"] == 2
    assert sorted(saved_machines(example)) == ["web-1", "web-2"]

    motd = converge("exec", "web-1", "--", "cat", "etc/motd", cwd=example)
    assert motd.returncode == 0, motd.stderr
    assert "Welcome to web-1, machine 1 of 2 in group web." in motd.stdout

    failing = converge("exec", "web-2", "--", "sh", "-c", "echo oops >&2; exit 7", cwd=example)
    assert failing.returncode == 7
    assert "oops" in failing.stderr

    status = converge("status", cwd=example)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "DRIVER", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["web-1"][1] == "fake:" + str(example / ".provisioning" / "fake")
    assert rows["web-1"][2] == "running" and rows["web-1"][4] == "up"

    as_json = converge("status", "--output", "json", cwd=example)
    record = json.loads(as_json.stdout)
    assert [m["name"] for m in record["machines"]] == ["web-1", "web-2"]
    assert all(m["state"] == "running" and m["last_error"] is None for m in record["machines"])

    gone = converge("destroy", cwd=example)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert warehouse_servers(example) == {}
    assert warehouse_counters(example)["destroys"] == 2
    assert saved_machines(example) == []
    again = converge("destroy", cwd=example)
    assert again.returncode == 0 and "nothing to destroy" in again.stdout
    after = converge("status", cwd=example)
    assert "not created" in after.stdout


def test_second_up_performs_no_action(example):
    assert converge("up", cwd=example).returncode == 0
    second = converge("up", "--output", "json", cwd=example)
    assert second.returncode == 0, second.stderr
    events = json_lines(second.stdout)
    assert actions(events) == []
    results = {e["machine"]: e["description"] for e in events if e["event"] == "result"}
    assert results == {"web-1": "up to date: no changes", "web-2": "up to date: no changes"}
    summary = events[-1]
    assert summary["event"] == "summary" and summary["ok"]
    assert all(m["changes"] == 0 for m in summary["machines"].values())
    assert warehouse_counters(example)["creates"] == 2
    text = converge("up", cwd=example)
    assert "file etc/motd is up to date" in text.stdout
    assert "0 changes" in text.stdout.splitlines()[-1]


def test_changed_file_is_converged_back(example):
    assert converge("up", cwd=example).returncode == 0
    edit = converge("exec", "web-1", "--", "sh", "-c", "echo tampered > etc/motd", cwd=example)
    assert edit.returncode == 0
    plan = converge("up", "web-1", "--why-run", cwd=example)
    assert "[web-1] would update etc/motd (sha256 differs)" in plan.stdout
    assert "tampered" in converge("exec", "web-1", "--", "cat", "etc/motd", cwd=example).stdout
    fix = converge("up", "web-1", cwd=example)
    assert "[web-1] update etc/motd (sha256 differs)" in fix.stdout
    assert "web-2" not in fix.stdout
    assert "Welcome" in converge("exec", "web-1", "--", "cat", "etc/motd", cwd=example).stdout


def test_why_run_json_on_fresh_state_plans_and_creates_nothing(example):
    plan = converge("up", "--why-run", "--output", "json", cwd=example)
    assert plan.returncode == 0, plan.stderr
    [document] = json_lines(plan.stdout)  # one document: the plan, not a stream of events
    assert document["format"] == "provisioning-plan" and document["version"] == 1
    assert {m["name"]: m["action"] for m in document["machines"]} == {"web-1": "create",
                                                                      "web-2": "create"}
    described = {(m["name"], s["description"]) for m in document["machines"] for s in m["steps"]}
    assert ("web-1", "create server (small, fake-linux)") in described
    assert ("web-2", "create etc/motd from template motd.j2 (mode 0644)") in described
    assert any(d.startswith("upload and run script scripts/setup.sh") for _, d in described)
    assert saved_machines(example) == []
    assert warehouse_servers(example) == {}
    assert warehouse_counters(example)["creates"] == 0


def test_stop_then_up_starts_again(example):
    assert converge("up", cwd=example).returncode == 0
    stopped = converge("stop", "web", cwd=example)
    assert stopped.returncode == 0 and "stop server" in stopped.stdout
    status = json.loads(converge("status", "--output", "json", cwd=example).stdout)
    assert {m["state"] for m in status["machines"]} == {"stopped"}
    up = converge("up", cwd=example)
    assert up.returncode == 0 and "start server" in up.stdout
    assert warehouse_counters(example)["creates"] == 2


def test_failing_step_fails_that_machine_and_is_shown_in_status(example):
    cluster = example / "cluster.yml"
    cluster.write_text(cluster.read_text() + """
  broken:
    converge:
      - command: {run: "echo nope >&2; exit 3"}
""")
    result = converge("up", cwd=example)
    assert result.returncode == 1
    assert "[broken] FAILED: command exited with status 3" in result.stderr
    assert "nope" in result.stderr
    assert "broken:" in result.stdout.splitlines()[-1] or "1 failed" in result.stdout
    status = json.loads(converge("status", "--output", "json", cwd=example).stdout)
    broken = next(m for m in status["machines"] if m["name"] == "broken")
    assert broken["last_action"] == "converge"
    assert "CommandFailed" in broken["last_error"]
    web = next(m for m in status["machines"] if m["name"] == "web-1")
    assert web["last_error"] is None and web["last_action"] == "up"


def test_healthcheck_failure_fails_up(example):
    cluster = example / "cluster.yml"
    cluster.write_text(cluster.read_text().replace(
        '{command: "test -s srv/www/index.html", deadline: 30}',
        '{command: "test -f srv/www/missing", deadline: 0.5, interval: 0.1}'))
    result = converge("up", "web-1", cwd=example)
    assert result.returncode == 1
    assert "healthcheck command test -f srv/www/missing failed" in result.stderr
    status = json.loads(converge("status", "--output", "json", cwd=example).stdout)
    assert status["machines"][0]["last_action"] == "healthcheck"
