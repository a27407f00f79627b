"""A PostgreSQL state URL that names nothing is bad input (exit 2, nothing written); one whose
server cannot be reached is a StateError naming host and port; a short password (``a``,
``pg``) is masked where it stands in the URL without masking every ``a`` of the message.

The server that cannot be reached is a loopback port held by a bound socket that does not
listen: connections to it are refused for as long as the test holds it."""

from __future__ import annotations

import socket

import pytest

from tests.cli_runner import converge

pytest.importorskip("psycopg2", reason="needs psycopg2: pip install 'provisioning[postgres]'")

CLUSTER = 'driver: "fake:./cloud"\nmachines:\n  web: {}\n'


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def refusing_port():
    """A loopback port nothing listens on, kept so while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.mark.parametrize("url", ["postgresql://", "postgres://", "postgresql://h:abc/db",
                                 "postgresql://u@h:99999/db"])
@pytest.mark.parametrize("command", ["up", "status"])
def test_a_state_url_naming_nothing_or_no_port_is_bad_input(tmp_path, url, command):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    result = converge(command, "--state", url, cwd=tmp_path,
                      unset=("PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "the state URL" in result.stderr
    assert "postgresql://USER@HOST" in result.stderr, result.stderr
    assert _files(tmp_path) == ["cluster.yml"]


@pytest.mark.parametrize("password", ["a", "pg", "e"])
def test_an_unreachable_server_is_named_and_a_short_password_masks_only_itself(
        tmp_path, refusing_port, password):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    url = f"postgresql://deploy:{password}@127.0.0.1:{refusing_port}/fleet"
    result = converge("up", "--state", url, cwd=tmp_path, unset=("PGPASSWORD", "PGPASSFILE"))
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr
    assert "Traceback" not in message
    assert f"host 127.0.0.1, port {refusing_port}, database fleet" in message, message
    assert f"postgresql://deploy:***@127.0.0.1:{refusing_port}/fleet" in message
    assert f":{password}@" not in message
    for word in ("cannot reach the PostgreSQL state", "that the server runs there",
                 "database, user and password", "Connection refused"):
        assert word in message, message
    assert _files(tmp_path) == ["cluster.yml"]
