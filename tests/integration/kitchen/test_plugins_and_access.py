"""Convergence strategies as plug-ins, the schema's drift check, and the access files other
tools use (ssh config, ansible inventory) without any machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioning.convergence.base import ConvergenceStrategy
from provisioning.errors import ConfigError
from tests.integration.cli.helpers import converge, json_lines


def test_builtin_strategies_come_from_the_entry_point_group():
    from importlib.metadata import entry_points

    from provisioning.convergence.registry import ENTRY_POINT_GROUP, strategy_class

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found == {"steps": "provisioning.convergence.steps:StepsConvergence",
                     "none": "provisioning.convergence.none:NoConvergence",
                     "ansible": "provisioning.convergence.ansible:AnsibleConvergence"}
    assert strategy_class("ansible").__name__ == "AnsibleConvergence"
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        strategy_class("stpes")


class MarkerConvergence(ConvergenceStrategy):
    """A strategy from outside the package: writes a marker file once."""

    name = "marker"

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def parse(cls, value, key, problems, base_dir):
        if not isinstance(value, str):
            problems.add(key, "expected the marker's text")
        return value

    @classmethod
    def from_settings(cls, settings, context):
        return cls(settings)

    def converge(self, machine) -> bool:
        return machine.write_file("marker.txt", self.text)


def test_a_registered_strategy_converges_machines(tmp_path):
    from provisioning.cluster import Cluster
    from provisioning.convergence.registry import _registered, register_strategy

    register_strategy("marker", MarkerConvergence)
    try:
        path = tmp_path / "cluster.yml"
        path.write_text('driver: "fake:"\nmachines:\n  m:\n    converge: {marker: hello}\n')
        with Cluster.load(str(path)) as cluster:
            first = cluster.up()
            assert first.ok, first.failures
            assert first["m"].value.read_file("marker.txt") == b"hello"
            assert cluster.runner.actions["m"] >= 1
        path.write_text('driver: "fake:"\nmachines:\n  m:\n    converge: {marker: 3}\n')
        with pytest.raises(ConfigError, match="machines.m.converge.marker: expected"):
            Cluster.load(str(path))
    finally:
        _registered.pop("marker", None)


def test_schema_has_every_key_the_loader_knows():
    from provisioning.cluster.file import MACHINE_KEYS, TOP_KEYS
    from provisioning.cluster.matrix import PLATFORM_KEYS, SUITE_KEYS
    from provisioning.cluster.schema import cluster_schema
    from provisioning.convergence.steps import _KEYS, STEP_KINDS

    schema = cluster_schema()
    assert set(schema["properties"]) == set(TOP_KEYS)
    assert set(schema["$defs"]["machine"]["properties"]) == set(MACHINE_KEYS)
    suite = schema["properties"]["suites"]["additionalProperties"]["anyOf"][0]
    assert set(suite["properties"]) == set(SUITE_KEYS)
    platform = schema["properties"]["platforms"]["additionalProperties"]["anyOf"][0]
    assert set(platform["properties"]) == set(PLATFORM_KEYS)
    steps = {next(iter(v["properties"])): v for v in schema["$defs"]["steps"]["items"]["oneOf"]}
    assert set(steps) == set(STEP_KINDS)
    for kind, variant in steps.items():
        body = variant["properties"][kind]
        body = body["anyOf"][1] if "anyOf" in body else body
        assert set(body["properties"]) == set(_KEYS[kind])
    strategies = [v for v in schema["$defs"]["converge"]["anyOf"] if "properties" in v]
    assert {next(iter(v["properties"])) for v in strategies} >= {"ansible", "none", "steps"}


def test_schema_accepts_the_examples_and_refuses_mistakes(tmp_path):
    import jsonschema
    import yaml

    from tests.integration.cli.helpers import EXAMPLES

    schema = json.loads(converge("schema", cwd=tmp_path).stdout)
    validator = jsonschema.Draft202012Validator(schema)
    for path in (EXAMPLES / "cluster.yml", EXAMPLES / "two-tier" / "cluster.yml"):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    for bad in ({"machines": {"web": {"count": 0}}},
                {"machines": {"Web": {}}},
                {"machines": {"web": {"converge": {"ansible": {"playbok": "x.yml"}}}}},
                {"platforms": {"a": {}}},
                {"machines": {"web": {"verify": [{"testinfr": "t/"}]}}}):
        assert list(validator.iter_errors(bad)), bad


def test_ssh_config_and_ansible_inventory_pin_host_keys(tmp_path):
    from provisioning.keys import generate_private_key
    from provisioning.machine.access import (
        SSHAccess,
        ansible_inventory,
        inventory_json,
        ssh_config,
        write_access,
    )

    key = generate_private_key(str(tmp_path / "k"))
    accesses = [SSHAccess(name=f"web-{i}", host=f"198.18.0.{i}", port=22, username="root",
                          key=key, host_key=f"ssh-ed25519 AAAAKEY{i}",
                          proxy=f"python3 -m netns ns{i} 198.18.0.{i} 22") for i in (1, 2)]
    files = write_access(accesses, str(tmp_path / "access"))
    text = ssh_config(accesses, files)
    assert text.count("StrictHostKeyChecking yes") == 2
    assert "Host web-2\n  HostName 198.18.0.2\n" in text
    assert "  HostKeyAlias converge-web-2\n" in text
    assert "  ProxyCommand python3 -m netns ns2 198.18.0.2 22\n" in text
    assert (tmp_path / "access" / "known_hosts").read_text() == (
        "converge-web-1 ssh-ed25519 AAAAKEY1\nconverge-web-2 ssh-ed25519 AAAAKEY2\n")
    assert oct((tmp_path / "access").stat().st_mode & 0o777) == "0o700"
    inventory = ansible_inventory(accesses, files, {"web": ["web-1", "web-2"]})
    host = inventory["all"]["hosts"]["web-1"]
    assert "-oStrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]
    assert host["ansible_host_key_checking"] is True
    assert inventory["all"]["children"] == {"web": {"hosts": {"web-1": None, "web-2": None}}}
    data = inventory_json(accesses, files, {"web": ["web-1", "web-2"]})
    assert data["machines"][1]["host_key_alias"] == "converge-web-2"
    assert "BEGIN" not in json.dumps(data)  # keys are files, never inline


def test_inventory_skips_machines_without_ssh(tmp_path: Path):
    (tmp_path / "cluster.yml").write_text('driver: "fake:"\nmachines:\n  web: {count: 2}\n')
    assert converge("up", "web-1", "-q", cwd=tmp_path).returncode == 0
    result = converge("inventory", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["machines"] == []
    assert "web-1: " in result.stderr and "not reached over SSH" in result.stderr
    assert "web-2: not created; skipped" in result.stderr
    assert json_lines(converge("list", "--output", "json", cwd=tmp_path).stdout)[-1][
        "instances"][0]["instance"] == "web-1"


@pytest.mark.parametrize("fmt", ["ssh-config", "ansible", "json"])
def test_inventory_of_a_project_with_no_machine_writes_nothing(tmp_path: Path, fmt):
    """Nothing to point at: no access directory, no empty known_hosts."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:"\nmachines:\n  web: {}\n')
    result = converge("inventory", "--format", fmt, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "web: not created; skipped" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]


def test_inventory_refuses_a_dir_where_no_directory_can_be_made(tmp_path: Path):
    (tmp_path / "cluster.yml").write_text('driver: "fake:"\nmachines:\n  web: {}\n')
    result = converge("inventory", "--dir", "cluster.yml/access", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--dir" in result.stderr and "cluster.yml is not a directory" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yml"]
