"""Every input of the corpus (corpus.py) and of the Python API: a typed error, exit status 2
for the user's own input, no traceback, one screen at most, and nothing created or changed on
disk (a before/after listing of the working directory, which holds the state and warehouse)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from provisioning import errors
from tests.integration.safety.corpus import FAKE, WEB, cases
from tests.integration.safety.helpers import converge_here, snapshot

CONFIG_ERRORS = {name for name in errors.__all__
                 if isinstance(getattr(errors, name), type)
                 and issubclass(getattr(errors, name), errors.ConfigError)}
SCREEN_LINES = 40
CASES = cases()


@pytest.fixture(scope="module")
def key_texts() -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                              serialization.NoEncryption())
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(b"secret"))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return {"KEY": plain, "ENCRYPTED": locked, "PUBLIC": public + b"\n"}


def _lay_out(root: Path, files: dict, key_texts: dict[str, bytes]) -> None:
    for name, value in files.items():
        path = root / name
        if isinstance(value, str):
            path.write_text(value)
        elif isinstance(value, bytes):
            path.write_bytes(value)
        elif value[0] == "dir":
            path.mkdir()
        elif value[0] == "fifo":
            os.mkfifo(path)
        elif value[0] == "symlink":
            path.symlink_to(value[1])
        elif value[0] == "size":
            with open(path, "wb") as handle:
                handle.truncate(value[1])
        elif value[0] == "mode":
            content = key_texts.get(value[1], value[1]) if isinstance(value[1], str) else value[1]
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            path.chmod(value[2])
        elif value[0] == "sqlite":
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE users (name TEXT)")
            db.commit()
            db.close()
            path.chmod(0o644)
        elif value[0] == "url":
            path.write_text(yaml.safe_dump({"driver": value[1], "machines": {"web": {}}}))
        elif value[0] == "state":
            path.write_text(FAKE + WEB + yaml.safe_dump({"state": value[1]}))
        else:  # pragma: no cover - a typo in the corpus
            raise AssertionError(f"unknown file kind {value!r}")


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 150
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(tmp_path, case, key_texts):
    if case.prepare:
        _lay_out(tmp_path, case.prepare, key_texts)
        assert converge_here("up", cwd=tmp_path).code == 0
        for name in case.prepare:
            (tmp_path / name).unlink()
    _lay_out(tmp_path, case.files, key_texts)
    before = snapshot(tmp_path)
    run = converge_here("--output", "json", *case.args, cwd=tmp_path, env=case.env)
    text = run.text
    assert run.code == 2, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert len(text.splitlines()) <= SCREEN_LINES and len(text) <= 8000, text
    records = [json.loads(line) for line in run.out.splitlines() if line.startswith("{")]
    errors_seen = [r for r in records if r.get("event") == "error"]
    if errors_seen:  # the command's error, or a machine's (its type is in the event's data)
        last = errors_seen[-1]
        assert (last.get("type") or last["data"]["type"]) in CONFIG_ERRORS, last
    else:  # the command line itself was refused by the parser, before any of our code ran
        assert case.id.startswith("flag-") and ("Usage:" in run.err or "Error:" in run.err), text
    assert snapshot(tmp_path) == before, "something was created or changed on disk"


# -- the Python API validates exactly as the CLI ---------------------------------------------
API_CASES = [
    ("bogus-option", "web", {"bogus": 1}), ("size-int", "web", {"size": 5}),
    ("size-choice", "web", {"size": "huge"}), ("name-spaces", "Bad Name!", {}),
    ("name-empty", "", {}), ("name-none", None, {}), ("name-int", 5, {}),
    ("name-upper", "Web", {}), ("name-long", "a" * 61, {}), ("name-newline", "web\n", {}),
    ("name-slash", "../web", {}), ("options-str", "web", "notadict"),
    ("options-list", "web", ["size"]), ("options-none", "web", None),
    ("options-int-key", "web", {1: "x"}), ("ready-delay-negative", "web", {"ready_delay": -1}),
    ("ready-delay-nan", "web", {"ready_delay": float("nan")}),
    ("image-int", "web", {"image": 3}), ("transport-list", "web", {"transport": ["x"]}),
    ("two-problems", "Bad", {"bogus": 1}),
]


@pytest.mark.parametrize("operation", ["up", "allocate", "ready"])
@pytest.mark.parametrize("name, options", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_python_api_refuses_bad_requests_before_writing(tmp_path, operation, name, options):
    from provisioning.config import Config
    from provisioning.lifecycle import Provisioner
    from provisioning.registry import driver_for_url
    from provisioning.store.sqlite import SQLiteStore

    config = Config.load(cwd=str(tmp_path))
    store = SQLiteStore(tmp_path / "state.db")
    driver = driver_for_url(f"fake:{tmp_path / 'cloud'}", config)
    provisioner = Provisioner(store, config=config)
    before = snapshot(tmp_path / "cloud")
    try:
        with pytest.raises(errors.ConfigError) as info:
            getattr(provisioner, operation)(driver, name, options)
        assert info.value.exit_code == 2
        assert len(str(info.value).splitlines()) <= SCREEN_LINES
        assert store.list("machine") == []
        assert store.locks() == {}
    finally:
        store.close()
    assert snapshot(tmp_path / "cloud") == before
    with pytest.raises(errors.ConfigError):
        provisioner.run_many(operation, [(driver, "good", {}), (driver, name, options)])
    assert snapshot(tmp_path / "cloud") == before  # not even the good one: checked first
