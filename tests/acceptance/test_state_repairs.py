"""Repairs of the state by hand (``state mv``, ``state rm``) followed by ordinary runs: every
entry keeps a resource of its own, and what ``up`` reports is what the warehouse holds."""

from __future__ import annotations

import json

import pytest

from provisioning.testing.postgres import postgres_server, query  # noqa: F401
from tests.cli_runner import converge


def test_a_new_machine_never_adopts_the_resource_an_entry_renamed_by_state_mv_records(tmp_path):
    """``state mv db-1 db-9`` leaves db-9's server tagged for db-1. The next ``up`` made db-1
    adopt that server (two entries, one server), then scaled db-9 down by destroying it: ``up``
    said ok, and db-1 was missing."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  db: {count: 2}\n')
    converge("up", cwd=tmp_path, check=True)
    converge("state", "mv", "db-1", "db-9", cwd=tmp_path, check=True)
    up = converge("up", cwd=tmp_path, check=True)
    assert "recorded as machine 'db-9'" in up.stdout, up.stdout
    status = json.loads(converge("status", "--output", "json", cwd=tmp_path, check=True).stdout)
    states = {m["name"]: m["state"] for m in status["machines"]}
    assert states == {"db-1": "running", "db-2": "running"}, status
    plan = converge("plan", cwd=tmp_path, check=True)
    assert plan.stdout.strip().splitlines()[-1] == "plan: 2 unchanged", plan.stdout


def _sqlite(tmp_path):
    import sqlite3

    state = tmp_path / ".provisioning" / "state.db"

    def run(sql):
        with sqlite3.connect(state) as db:
            rows = db.execute(sql).fetchall()
        db.close()
        return rows
    return None, run, ("CREATE TRIGGER keep_db1 BEFORE DELETE ON entries WHEN old.name = 'db-1' "
                       "BEGIN SELECT RAISE(ABORT, 'the disk went away'); END",
                       "SELECT name FROM entries WHERE kind = 'machine' ORDER BY name",
                       "DROP TRIGGER keep_db1")


def _postgres(server):
    url = server.new_database("mv")
    return url, lambda sql: query(url, sql), (
        "CREATE FUNCTION keep_db1() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF old.name = "
        "'db-1' THEN RAISE EXCEPTION 'the disk went away'; END IF; RETURN old; END $$; "
        "CREATE TRIGGER keep_db1 BEFORE DELETE ON provisioning_entries FOR EACH ROW "
        "EXECUTE FUNCTION keep_db1()",
        "SELECT name FROM provisioning_entries WHERE kind = 'machine' ORDER BY name",
        "DROP TRIGGER keep_db1 ON provisioning_entries")


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                           marks=pytest.mark.postgres)])
def test_a_state_mv_stopped_half_way_leaves_one_entry_not_two(tmp_path, store, request):
    """``state mv`` saved the new entry, then deleted the old one, in two transactions: a run
    stopped between them (here the store refuses the delete) left both entries recording one
    server; the next ``up`` kept db-1 and scaled db-9 down by destroying that server."""
    url, run, (refuse, names, allow) = _sqlite(tmp_path) if store == "sqlite" else \
        _postgres(request.getfixturevalue("postgres_server"))
    env = {"PROVISIONING_STATE": url} if url else {}
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n'
                                          '  db: {count: 2}\n')
    converge("up", cwd=tmp_path, check=True, env=env)
    run(refuse)
    moved = converge("state", "mv", "db-1", "db-9", cwd=tmp_path, env=env)
    assert moved.returncode != 0 and "the disk went away" in moved.stderr, moved
    assert [row[0] for row in run(names)] == ["db-1", "db-2"], \
        "the stopped move must leave the old entry alone"
    run(allow)
    converge("up", cwd=tmp_path, check=True, env=env)
    status = converge("status", "--output", "json", cwd=tmp_path, check=True, env=env)
    assert {m["name"]: m["state"] for m in json.loads(status.stdout)["machines"]} == \
        {"db-1": "running", "db-2": "running"}, status.stdout
    converge("state", "mv", "db-1", "db-9", cwd=tmp_path, check=True, env=env)
    assert [row[0] for row in run(names)] == ["db-2", "db-9"]


@pytest.mark.parametrize("tampered", ["fake:{other}", "ssh:root@127.0.0.1"])
@pytest.mark.parametrize("lost", [False, True], ids=["kept", "lost"])
def test_a_state_entry_edited_to_another_driver_is_refused_not_acted_on(tmp_path, tampered, lost):
    """An entry whose ``driver_url`` was edited (``fake:/elsewhere``, another scheme) made ``up``
    act through that driver: a lost machine was made again there. ``up``, its why-run and
    ``plan`` (and ``stop``, ``destroy``) now refuse (exit 2) naming both URLs and the fix;
    ``state rm`` then ``up`` makes the machine through the cluster file's driver."""
    other = tmp_path.parent / f"{tmp_path.name}-other"
    other.mkdir()
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web: {}\n')
    converge("up", cwd=tmp_path, check=True)
    _, run, _ = _sqlite(tmp_path)
    url = tampered.format(other=other)
    run(f"UPDATE entries SET data = json_set(data, '$.reference.driver_url', '{url}') "
        "WHERE kind = 'machine' AND name = 'web'")
    if lost:
        for server in (tmp_path / "cloud" / "servers").iterdir():
            server.unlink()
    servers = sorted(p.name for p in (tmp_path / "cloud" / "servers").iterdir())
    # stop and destroy too: a destroy through the edited URL found nothing there, said the
    # machine was gone, forgot the entry and left the real server behind
    for args in (("up",), ("up", "--why-run"), ("plan",), ("stop",), ("destroy",)):
        result = converge(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        text = result.stdout + result.stderr
        assert f"as made by the driver '{url}'" in text and "converge state rm web" in text, text
        assert f"the cluster file gives 'fake:{tmp_path / 'cloud'}'" in text, text
        assert "Traceback" not in text
    assert list(other.iterdir()) == [], "a machine was made through the edited driver URL"
    assert sorted(p.name for p in (tmp_path / "cloud" / "servers").iterdir()) == servers
    assert run("SELECT name FROM entries WHERE kind = 'machine'") == [("web",)]  # kept
    converge("state", "rm", "web", cwd=tmp_path, check=True)
    converge("up", cwd=tmp_path, check=True)
    status = json.loads(converge("status", "--output", "json", cwd=tmp_path, check=True).stdout)
    assert [(m["name"], m["state"], m["driver_url"]) for m in status["machines"]] == \
        [("web", "running", f"fake:{tmp_path / 'cloud'}")], status


def test_status_shows_an_edited_driver_url_escaped_never_raw(tmp_path):
    """A state entry is input too: a ``driver_url`` edited to hold a terminal escape and a bidi
    override was printed raw by ``status`` (the terminal obeyed it). Cells now show such
    characters as escapes; the machine's other columns are as they were."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web: {}\n')
    converge("up", cwd=tmp_path, check=True)
    _, run, _ = _sqlite(tmp_path)
    hostile = "fake:\x1b]0;owned\x07/x\u202etxt.exe"
    run("UPDATE entries SET data = json_set(data, '$.reference.driver_url', "
        f"'{hostile}') WHERE kind = 'machine' AND name = 'web'")
    result = converge("status", cwd=tmp_path)
    text = result.stdout + result.stderr
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text, repr(text)
    assert "fake:\\x1b]0;owned\\x07/x\\u202etxt.exe" in result.stdout, result.stdout
    assert "web" in result.stdout


def test_a_table_cell_is_printable_text():
    from provisioning.cli.output import cell_text, format_table

    assert cell_text(None) == "-" and cell_text("web-1") == "web-1"
    assert cell_text("a\x1b[31mb\u202ec\nd") == "a\\x1b[31mb\\u202ec\\nd"
    assert "\x1b" not in format_table(("A",), [("x\x1by",)])
