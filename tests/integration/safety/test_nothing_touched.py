"""Nothing is touched that should not be: ``--state`` never changes a file that is not our
state file, why-run and read-only commands create nothing, a fake machine's paths stay inside
its own root."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.integration.safety.helpers import converge_here, snapshot

CLUSTER = 'driver: "fake:"\nmachines:\n  web:\n    converge: [{file: {path: a.txt, content: hi}}]\n'


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    return tmp_path


def _foreign_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('alice')")
    db.commit()
    db.close()
    path.chmod(0o644)


@pytest.mark.parametrize("command", [("status",), ("up",), ("up", "--why-run"), ("destroy",)])
@pytest.mark.parametrize("kind", ["text", "symlink", "foreign-sqlite", "directory", "proc",
                                  "parent-is-file"])
def test_state_option_never_changes_a_file_that_is_not_ours(cwd, tmp_path, command, kind):
    target = tmp_path / "victim"
    if kind == "text":
        target.write_text("root:x:0:0::/root:/bin/sh\n")
        target.chmod(0o644)
        given = str(target)
    elif kind == "symlink":
        target.write_text("root:x:0:0::/root:/bin/sh\n")
        target.chmod(0o644)
        (tmp_path / "link").symlink_to(target)
        given = str(tmp_path / "link")
    elif kind == "foreign-sqlite":
        _foreign_db(target)
        given = str(target)
    elif kind == "directory":
        target.mkdir()
        given = str(target)
    elif kind == "proc":
        given = "/proc/self/status"
    else:
        target.write_text("x")
        given = str(target / "state.db")
    before = snapshot(tmp_path)
    run = converge_here("--state", given, *command, cwd=cwd)
    assert run.code == 2, run.text
    assert "Traceback" not in run.text and "state file" in run.err
    assert snapshot(tmp_path) == before


def test_foreign_sqlite_keeps_its_tables_only(cwd, tmp_path):
    target = tmp_path / "their.db"
    _foreign_db(target)
    run = converge_here("--state", str(target), "up", cwd=cwd)
    assert run.code == 2 and "another program's SQLite database" in run.err
    db = sqlite3.connect(target)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == \
        ["users"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_why_run_and_status_create_nothing_anywhere(cwd):
    before = snapshot(cwd)
    run = converge_here("up", "--why-run", cwd=cwd)
    assert run.code == 0, run.text
    assert "would create" in run.out
    run = converge_here("status", cwd=cwd)
    assert run.code == 0, run.text
    assert snapshot(cwd) == before  # no .provisioning/state.db, no fake warehouse, no lock


def test_our_own_state_file_is_still_made_private_and_reused(cwd):
    assert converge_here("up", cwd=cwd).code == 0
    state = cwd / ".provisioning" / "state.db"
    assert state.stat().st_mode & 0o777 == 0o600
    state.chmod(0o644)
    run = converge_here("status", cwd=cwd)
    assert run.code == 0 and "web" in run.out
    assert state.stat().st_mode & 0o777 == 0o644  # read-only commands change nothing
    assert converge_here("up", cwd=cwd).code == 0
    assert state.stat().st_mode & 0o777 == 0o600


def test_fake_machine_paths_stay_inside_its_root(tmp_path):
    canary = tmp_path / "host-file"
    canary.write_text("untouched")
    (tmp_path / "cluster.yml").write_text(f"""driver: "fake:"
machines:
  web:
    converge:
      - file: {{path: {canary}, content: "pwned"}}
      - file: {{path: "../../../../../..{canary}", content: "pwned"}}
      - directory: {{path: /srv/app}}
      - command: {{run: "pwd > here.txt", cwd: /srv/app}}
""")
    run = converge_here("up", cwd=tmp_path)
    assert run.code == 0, run.text
    assert canary.read_text() == "untouched"
    roots = list((tmp_path / ".provisioning" / "fake" / "machines").iterdir())
    assert len(roots) == 1
    root = roots[0]
    assert (root / str(canary).lstrip("/")).read_text() == "pwned"
    assert (root / "srv" / "app" / "here.txt").read_text().strip() == str(root / "srv" / "app")


def test_fake_machine_refuses_a_symlink_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "cluster.yml").write_text(f"""driver: "fake:"
machines:
  web:
    converge:
      - command: "ln -sfn {outside} link"
      - file: {{path: link/escaped, content: "pwned"}}
""")
    run = converge_here("up", cwd=tmp_path)
    assert run.code == 1
    assert "leads outside the machine's root" in run.text
    assert not (outside / "escaped").exists()
    assert os.listdir(outside) == []


def test_key_file_problems_come_in_the_same_round_as_every_other_problem(tmp_path):
    """A misspelt key, an unknown scheme and a missing key file: one run names all three."""
    (tmp_path / "cluster.yml").write_text(
        'driver: "fake:"\nprivate_keys: {deploy: ./missing-key}\n'
        "machines:\n  web: {convrege: []}\n  db: {driver: 'fak:'}\n")
    before = snapshot(tmp_path)
    run = converge_here("up", cwd=tmp_path)
    assert run.code == 2, run.text
    assert "convrege" in run.text and "fak" in run.text, run.text
    assert "private_keys.deploy" in run.text and "missing-key" in run.text, run.text
    assert snapshot(tmp_path) == before


def test_hostile_template_of_a_machine_not_made_yet_is_refused_before_any_write(tmp_path):
    (tmp_path / "cluster.yml").write_text(
        'driver: "fake:"\nmachines: {web: {converge: [{file: {path: out, template: t.j2}}]}}\n')
    (tmp_path / "t.j2").write_text("fine\n{{ cycler.__init__.__globals__.os.popen('id').read() }}\n")
    before = snapshot(tmp_path)
    run = converge_here("up", cwd=tmp_path)
    assert run.code == 2 and "Traceback" not in run.text, run.text
    assert "cluster.yml" in run.text and "t.j2, line 2" in run.text, run.text
    assert snapshot(tmp_path) == before   # no state file, no fake warehouse
