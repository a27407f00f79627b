"""The web tier: configured with db's address, and reaching the database with it."""


def _env(host) -> dict:
    text = host.file("/etc/app/database.env").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line
                and not line.startswith("#"))


def test_configured_with_the_database_address(host):
    env = _env(host)
    assert env["DATABASE_URL"] == f"postgresql://app:app@{env['DATABASE_HOST']}/app"


def test_reaches_the_database(host):
    url = _env(host)["DATABASE_URL"]
    assert host.check_output(f"psql '{url}' -tAc 'select 40 + 2'") == "42"


def test_no_local_database_server(host):
    assert not host.service("postgresql").is_running
