"""Moving state from the SQLite file to PostgreSQL: ``converge state export`` / ``import``."""

from __future__ import annotations

import json
import os
import stat

import pytest

from provisioning.drivers.fake import FakeWarehouse
from provisioning.errors import ConfigError
from provisioning.spec import MachineSpec, ManagedEntry
from provisioning.store import open_store
from provisioning.store.statefile import export_state, import_state
from tests.cli_runner import converge as run_converge


def converge(cwd, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = run_converge(*args, cwd=cwd, input=stdin)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.postgres
def test_move_from_sqlite_to_postgres_changes_nothing(tmp_path, postgres_url):
    (tmp_path / "cluster.yml").write_text("driver: fake:./cloud\nmachines:\n  app:\n"
                                          "    count: 3\n")
    code, out, err = converge(tmp_path, "up")
    assert code == 0, out + err
    sqlite = open_store(str(tmp_path / ".provisioning" / "state.db"))
    extra = sqlite.get("machine", "app-1")
    extra.reference["login"] = {"user": "ops", "root_password": "hunter2-not-for-export"}
    extra.save()
    sqlite_id = sqlite.store_id
    sqlite.close()

    code, out, err = converge(tmp_path, "state", "export", "-o", "moved.json")
    assert code == 0, err
    assert "1 secret values left out" in err
    moved = tmp_path / "moved.json"
    assert stat.S_IMODE(os.stat(moved).st_mode) == 0o600
    text = moved.read_text()
    assert "hunter2" not in text and "root_password" not in text
    document = json.loads(text)
    machines = [e for e in document["entries"] if e["kind"] == "machine"]
    assert sorted(e["name"] for e in machines) == ["app-1", "app-2", "app-3"]
    with open_store(str(tmp_path / ".provisioning" / "state.db")) as source:
        kinds = set(source.kinds())
    assert {"machine", "facts"} <= kinds  # facts are re-read by the next run, never moved
    assert {e["kind"] for e in document["entries"]} == kinds - {"facts"}

    code, out, err = converge(tmp_path, "--state", postgres_url, "state", "import", "moved.json")
    assert code == 0, err
    assert f"{len(document['entries'])} new" in err and postgres_url.split("@")[0].split(":")[-1] not in err
    with open_store(postgres_url) as pg:
        assert pg.store_id == sqlite_id  # tags made by the old store are still ours
        moved_specs = {e.name: e for e in pg.list("machine")}
        assert moved_specs["app-1"].reference["login"] == {"user": "ops"}
        assert moved_specs["app-2"].reference == machines[1]["reference"]

    before = FakeWarehouse(str(tmp_path / "cloud")).counters()
    code, out, err = converge(tmp_path, "--state", postgres_url, "up")
    assert code == 0, out + err
    assert FakeWarehouse(str(tmp_path / "cloud")).counters() == before  # nothing re-created

    # importing again: unchanged; a differing entry is refused without --replace
    code, out, err = converge(tmp_path, "--state", postgres_url, "--output", "json", "state",
                              "import", "-", stdin=text)
    assert code == 0 and json.loads(out)["unchanged"] == 3
    document["entries"][2]["reference"]["server_id"] = "srv-other"
    code, out, err = converge(tmp_path, "--state", postgres_url, "state", "import", "-",
                              stdin=json.dumps(document))
    assert code == 2 and "app-3" in err and "--replace" in err
    code, out, err = converge(tmp_path, "--state", postgres_url, "state", "import", "-",
                              "--replace", stdin=json.dumps(document))
    assert code == 0 and "1 replaced" in err
    with open_store(postgres_url) as pg:
        assert pg.get("machine", "app-3").reference["server_id"] == "srv-other"


def test_import_checks_its_input(tmp_path):
    store = open_store("memory:")
    for bad, match in ((["not", "a", "document"], "not a provisioning state export"),
                       ({"format": "provisioning-state", "format_version": 99, "entries": []},
                        "newer"),
                       ({"format": "provisioning-state", "format_version": 1,
                         "entries": [{"kind": "machine"}]}, r"entries\[0\]")):
        with pytest.raises(ConfigError, match=match):
            import_state(store, bad)
    assert store.list("machine") == []
    (tmp_path / "broken.json").write_text("{not json")
    code, out, err = converge(tmp_path, "--state", "memory:", "state", "import", "broken.json")
    assert code == 2 and "not a JSON state export" in err


def test_export_import_round_trip_between_memory_and_sqlite(tmp_path):
    source = open_store("memory:")
    for name in ("wéb-1", "db-1"):
        spec = MachineSpec(name, {"driver_url": "fake:/x", "id": name}, store=source)
        spec.last_action = "up"
        spec.save()
    document = export_state(source)
    target = open_store(str(tmp_path / "state.db"))
    report = import_state(target, document)
    assert (report["created"], report["unchanged"], report["warning"]) == (2, 0, None)
    assert target.store_id == source.store_id
    assert {e.name: (e.reference, e.last_action) for e in target.list("machine")} == \
        {e.name: (e.reference, e.last_action) for e in source.list("machine")}
    other = open_store(str(tmp_path / "other.db"))
    assert other.store_id  # an existing store keeps its own id, and says so
    assert "own id" in import_state(other, document)["warning"]


@pytest.mark.postgres
def test_sqlite_and_postgres_export_the_same_kinds(tmp_path, postgres_url):
    """A kitchen instance or an image moves like a machine from either store; facts never do."""
    exported = []
    for url in (str(tmp_path / "state.db"), postgres_url):
        with open_store(url) as store:
            for kind in ("machine", "instance", "image", "facts"):
                ManagedEntry(f"{kind}-1", {"driver_url": "fake:/x"}, kind=kind,
                             store=store).save()
            document = export_state(store, derived=("facts",))
        exported.append(sorted((e["kind"], e["name"]) for e in document["entries"]))
    assert exported[0] == exported[1] == [("image", "image-1"), ("instance", "instance-1"),
                                          ("machine", "machine-1")]
