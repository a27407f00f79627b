"""A PostgreSQL password in the state URL appears in no output, event, log or state row.

Every command runs with the password in its ``--state`` URL (so also in its own command line,
which lock holders record), in text and JSON output, with -vv, on success and on failure; then
everything they printed, the export, the server's log and every row of every table are searched
for the password.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.cli_runner import start_converge

psycopg2 = pytest.importorskip("psycopg2", reason="needs psycopg2: pip install 'provisioning[postgres]'")
import psycopg2.errors  # noqa: E402

from provisioning.testing.postgres import query  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def converge(cluster: str, url: str, *args: str) -> subprocess.Popen:
    return start_converge("-f", cluster, "--state", url, *args,
                          unset=("PGPASSWORD", "PGPASSFILE"), cwd=os.path.dirname(cluster))


def run(cluster: str, url: str, *args: str) -> tuple[int, str]:
    proc = converge(cluster, url, *args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def all_rows(url: str) -> str:
    tables = [r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE "
                                       "schemaname = 'public'")]
    assert "provisioning_locks" in tables and "provisioning_work" in tables
    text = []
    for table in tables:
        text += [r[0] for r in query(url, f'SELECT row_to_json(t)::text FROM "{table}" t')]
    return "\n".join(text)


def test_password_appears_nowhere(tmp_path, postgres_server, postgres_url):
    password = postgres_server.password
    assert password in postgres_url
    cluster = tmp_path / "cluster.yml"
    release = tmp_path / "release"  # the runners hold in ready until it exists
    cluster.write_text("driver: fake:./cloud\nmachines:\n  web:\n    count: 4\n"
                       f"    machine_options: {{hold_ready_until: '{release}'}}\n"
                       "    healthcheck: {command: \"true\"}\n")
    cluster = str(cluster)
    outputs: dict[str, str] = {}

    # two runners sharing the work, with the password on their command lines
    runners = [converge(cluster, postgres_url, "up", "--parallel", "2", "-vv"),
               converge(cluster, postgres_url, "--output", "json", "up", "--parallel", "2")]
    deadline = time.monotonic() + 120
    while True:  # until all four machines are locked (their runners held in ready)
        try:
            held = query(postgres_url, "SELECT count(*) FROM provisioning_locks")[0][0]
        except psycopg2.errors.UndefinedTable:
            held = 0
        if held == 4:
            break
        assert time.monotonic() < deadline and all(p.poll() is None for p in runners), \
            "the runners never held all four machines"
        time.sleep(0.05)
    rows_while_working = all_rows(postgres_url)
    assert "***" in rows_while_working  # the holders' command lines, masked
    for args in (("state", "show"), ("--output", "json", "state", "show"),
                 ("--output", "json", "status"), ("destroy", "web-1"),
                 ("--output", "json", "destroy", "web-2")):
        code, text = run(cluster, postgres_url, *args)
        outputs[" ".join(args) + " (while runners work)"] = text
    assert "is locked by another run" in outputs["destroy web-1 (while runners work)"]
    release.touch()  # let the runners finish
    for index, proc in enumerate(runners):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        outputs[f"runner {index}"] = out + err

    export = tmp_path / "export.json"
    for args in (("status",), ("-vv", "status"), ("watch", "--once"),
                 ("--output", "json", "watch", "--once"), ("state", "export", "-o", str(export)),
                 ("--output", "json", "state", "export"), ("up", "--why-run")):
        code, text = run(cluster, postgres_url, *args)
        assert code == 0, text
        outputs[" ".join(args)] = text

    wrong = postgres_url.replace(password, password[::-1])
    unreachable = postgres_url.replace(f":{postgres_server.port}/", ":1/")
    for label, url in (("wrong password", wrong), ("unreachable", unreachable)):
        for args in (("-vv", "up"), ("--output", "json", "status"), ("state", "show")):
            code, text = run(cluster, url, *args)
            assert code != 0 and "***" in text, text
            outputs[f"{label}: {' '.join(args)}"] = text.replace(password[::-1], "<reversed>")
            assert password[::-1] not in text

    for label, text in outputs.items():
        assert password not in text, f"password printed by {label}"
    assert ":***@" in outputs["state show (while runners work)"]
    assert password not in export.read_text()
    assert password not in all_rows(postgres_url)
    assert password not in rows_while_working
    with open(postgres_server.log_path, errors="replace") as handle:
        assert password not in handle.read()
