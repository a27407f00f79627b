"""Layered config and private keys (generation, lookup by name, passphrases, fingerprints)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from provisioning.config import Config
from provisioning.errors import ConfigError
from provisioning.keys import ensure_private_key, find_private_key, fingerprint, generate_private_key


def test_layers_override_in_order_and_remember_sources(tmp_path):
    (tmp_path / "provisioning.yml").write_text(
        "parallel: 3\nstate: local.db\ndriver_options:\n  'fake:': {a: 1, b: 1}\n")
    named = tmp_path / "team.yml"
    named.write_text("parallel: 4\ndriver_options:\n  'fake:': {b: 2}\n")
    env = {"PROVISIONING_CONFIG": str(named), "PROVISIONING_STATE": "env.db"}
    config = Config.load({"lock_ttl": 5}, cwd=str(tmp_path), environ=env)
    assert config["parallel"] == 4 and config.state == "env.db" and config["lock_ttl"] == 5
    assert config.driver_options_for("fake:") == {"a": 1, "b": 2}
    assert config.sources["parallel"] == str(named)
    assert config.sources["state"] == "env PROVISIONING_STATE"
    assert config.sources["lock_ttl"] == "explicit"
    assert config.sources["driver_options.fake:"] == str(tmp_path / "provisioning.yml")
    assert config.sources["driver_options.fake:.b"] == str(named)


def test_bad_yaml_names_file_and_line(tmp_path):
    (tmp_path / "provisioning.yml").write_text("parallel: [1,\n")
    with pytest.raises(ConfigError) as info:
        Config.load(cwd=str(tmp_path), environ={})
    assert "provisioning.yml" in str(info.value) and "line" in str(info.value)


def test_bad_env_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="PROVISIONING_PARALLEL"):
        Config.load(cwd=str(tmp_path), environ={"PROVISIONING_PARALLEL": "many"})


def test_explain_masks_secrets(tmp_path):
    config = Config({"credentials": {"libcloud:ec2:us-east-1": {"secret": "hunter2"}}})
    assert "hunter2" not in repr(config.explain())


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_generated_keys_are_private_and_match_ssh_keygen(tmp_path, kind):
    key = generate_private_key(str(tmp_path / "k"), name="k", kind=kind, bits=2048)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True,
                         text=True, check=True).stdout
    assert out.split()[1] == key.fingerprint == fingerprint(key.public_openssh)
    # ssh-keygen can read the private key we wrote (OpenSSH format)
    pub = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "k")], capture_output=True,
                         text=True, check=True).stdout
    assert pub.split()[1] == key.public_openssh.split()[1]


def test_lookup_by_name_in_key_paths_and_pem_suffix(tmp_path):
    keys = tmp_path / "keys"
    generate_private_key(str(keys / "deploy.pem"), name="deploy")
    config = Config({"private_key_paths": [str(keys)]}, base_dir=str(tmp_path))
    assert find_private_key(config, "deploy").path == str(keys / "deploy.pem")


def test_missing_key_lists_searched_places(tmp_path):
    config = Config({"private_key_paths": [str(tmp_path / "nowhere")]})
    with pytest.raises(ConfigError) as info:
        find_private_key(config, "ghost")
    assert str(tmp_path / "nowhere" / "ghost.pem") in str(info.value)


def test_encrypted_key_needs_the_right_passphrase(tmp_path, monkeypatch):
    path = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret", "-f", str(path)], check=True)
    config = Config({"private_keys": {"enc": str(path)}})
    monkeypatch.delenv("PROVISIONING_KEY_PASSPHRASE", raising=False)
    with pytest.raises(ConfigError, match="encrypted"):
        find_private_key(config, "enc")
    monkeypatch.setenv("PROVISIONING_KEY_PASSPHRASE", "wrong")
    with pytest.raises(ConfigError, match="wrong passphrase"):
        find_private_key(config, "enc")
    monkeypatch.setenv("PROVISIONING_KEY_PASSPHRASE_ENC", "s3cret")
    monkeypatch.delenv("PROVISIONING_KEY_PASSPHRASE")
    assert find_private_key(config, "enc").kind == "ed25519"


def test_ensure_generates_once(tmp_path):
    first = ensure_private_key(None, "machine", str(tmp_path))
    second = ensure_private_key(None, "machine", str(tmp_path))
    assert first.fingerprint == second.fingerprint


def test_ensure_under_a_race_gives_every_caller_the_same_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: ensure_private_key(None, "shared", str(tmp_path)), range(8)))
    assert len({k.fingerprint for k in keys}) == 1
    assert (tmp_path / "shared.pub").read_text().split()[1] == keys[0].public_openssh.split()[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "shared.pub"]


def test_yaml_files_are_parsed_by_libyaml_when_it_is_installed():
    """The pure-Python parser took about 1.8 s per MB; libyaml's is about 20 times faster."""
    import yaml

    from provisioning.inputs import yamlfile

    assert yaml.__with_libyaml__, "PyYAML here was built without libyaml (pip install pyyaml)"
    assert issubclass(yamlfile._loader(), yaml.CSafeLoader)
