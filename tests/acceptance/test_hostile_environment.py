"""Hostile and careless ``PROVISIONING_*`` environment variables: a control character, a bidi
override, bytes that are not UTF-8 or a huge value are refused with exit 2 and one screen
naming the variable and how to fix it, before anything is written (no state file named by the
text, no fake cloud)."""

from __future__ import annotations

import pytest

from provisioning.config import Config
from provisioning.errors import ConfigError
from tests.cli_runner import converge

CLUSTER = 'driver: "fake:./cloud"\nmachines:\n  web: {}\n'
VARIABLES = ["PROVISIONING_STATE", "PROVISIONING_CONFIG", "PROVISIONING_PARALLEL",
             "PROVISIONING_LOCK_TTL", "PROVISIONING_PRIVATE_KEY_PATHS",
             "PROVISIONING_NSPAWN_IMAGE_CACHE", "PROVISIONING_LIBVIRT_IMAGE_CACHE",
             "PROVISIONING_FAULT"]
HOSTILE = {"newline": "st\nate.db", "escape": "state\x1b[2J.db", "bidi": "state\u202egpj.db",
           "not-utf8": "state\udcff.db", "nul-like-del": "state\x7f.db"}


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("variable", VARIABLES)
def test_a_hostile_environment_variable_is_refused_before_anything_is_written(tmp_path, variable,
                                                                              kind):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    result = converge("up", cwd=tmp_path, env={variable: HOSTILE[kind]})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"environment variable {variable}" in result.stderr
    assert f"unset {variable}" in result.stderr, result.stderr
    assert _files(tmp_path) == ["cluster.yml"], "a hostile variable wrote something"


@pytest.mark.parametrize("variable", ["PROVISIONING_STATE", "PROVISIONING_PARALLEL"])
def test_a_huge_environment_variable_is_named_on_one_screen(tmp_path, variable):
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    result = converge("status", cwd=tmp_path, env={variable: "9\n" * 50_000})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"environment variable {variable}" in result.stderr
    assert len(result.stderr) < 2000 and result.stderr.count("\n") < 25, result.stderr[:3000]
    assert _files(tmp_path) == ["cluster.yml"]


def test_a_passphrase_is_never_shown_and_may_hold_any_text(tmp_path):
    """A passphrase is a secret, never a name or a path: not refused, never echoed."""
    config = Config.load(cwd=str(tmp_path), environ={"PROVISIONING_KEY_PASSPHRASE": "a\nb",
                                                     "PROVISIONING_KEY_PASSPHRASE_web": "\x1b"})
    assert config.base_dir == str(tmp_path)
    with pytest.raises(ConfigError) as info:
        Config.load(cwd=str(tmp_path), environ={"PROVISIONING_LOCK_TTL": "3\t0"})
    assert info.value.key == "PROVISIONING_LOCK_TTL" and "'\\t'" in str(info.value)


def test_a_variable_the_product_does_not_read_is_left_alone(tmp_path):
    """Only the variables a command reads are checked: a CI job's own multi-line
    ``PROVISIONING_DEPLOY_KEY`` (a name of the prefix we never read) does not stop it."""
    (tmp_path / "cluster.yml").write_text(CLUSTER)
    key = "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n"
    result = converge("up", cwd=tmp_path, env={"PROVISIONING_DEPLOY_KEY": key})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AAAA" not in result.stdout + result.stderr


def test_every_variable_the_product_reads_is_checked():
    """The hostile cases above cover every variable a command reads, so none is missed."""
    from provisioning.config import READ_FROM_ENVIRONMENT

    assert READ_FROM_ENVIRONMENT - {"PROVISIONING_MACHINE"} == set(VARIABLES)
