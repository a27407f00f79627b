"""The database tier: PostgreSQL from the release's own packages, serving the machines' network."""


def test_postgresql_is_installed_from_debian(host):
    assert host.package("postgresql").is_installed


def test_postgresql_runs_and_starts_at_boot(host):
    service = host.service("postgresql")
    assert service.is_running
    assert service.is_enabled


def test_postgresql_listens_on_every_address(host):
    assert host.socket("tcp://0.0.0.0:5432").is_listening


def test_the_app_database_exists(host):
    out = host.check_output("su postgres -c \"psql -tAc 'select datname from pg_database'\"")
    assert "app" in out.split()
