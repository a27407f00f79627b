"""The libcloud: driver against a real moto EC2 server: access, userdata, tags, stop/start,
lost nodes, bad input and credentials, batches, describe."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from provisioning.config import Config
from provisioning.errors import ConfigError, MachineNotFound, ProviderError
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from tests.integration.cloud.conftest import (
    ACCESS_KEY,
    IMAGE,
    REPO,
    SECRET_KEY,
    SIZE,
    URL,
    cloud_config,
    machine_options,
    node_userdata,
    start_moto,
)


def node_of(driver, spec):
    node = driver.ops.get_node(spec.reference["node_id"])
    assert node is not None
    return node


def performed(handler):
    return [e.description for e in handler.actions(performed=True)]


# -- key pairs ---------------------------------------------------------------------------------
def test_key_pair_is_imported_from_the_machines_key_and_reused(provisioner, driver, handler,
                                                               tmp_path):
    spec = provisioner.allocate(driver, "kp-1", machine_options(key_name="deploy"))
    key_file = tmp_path / "keys" / "deploy"
    assert key_file.exists(), "the private key is generated when it exists nowhere"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pair = spec.reference["key_pair"]
    assert pair.startswith("deploy-")
    assert pair in [k.name for k in driver.ops.driver.list_key_pairs()]
    assert node_of(driver, spec).extra["key_name"] == pair
    imports = [d for d in performed(handler) if d.startswith("import public key")]
    assert len(imports) == 1

    spec2 = provisioner.allocate(driver, "kp-2", machine_options(key_name="deploy"))
    assert spec2.reference["key_pair"] == pair
    assert len([d for d in performed(handler) if d.startswith("import public key")]) == 1, \
        "a key pair already at the provider is reused, not imported again"


def test_named_existing_key_pair_is_used_as_is(provisioner, driver, handler):
    from provisioning.keys import generate_private_key

    key = generate_private_key(str(driver.config.base_dir) + "/other", name="other")
    driver.ops.driver.import_key_pair_from_string("team-key", key.public_openssh)
    spec = provisioner.allocate(driver, "kp-named", machine_options(key_pair="team-key"))
    assert node_of(driver, spec).extra["key_name"] == "team-key"
    assert not [d for d in performed(handler) if "key" in d and "import" in d]


def test_unknown_key_pair_is_a_clear_error(provisioner, driver):
    with pytest.raises(ConfigError) as info:
        provisioner.allocate(driver, "kp-missing", machine_options(key_pair="no-such-pair"))
    assert "no-such-pair" in str(info.value) and "key pair" in str(info.value)


# -- security groups ---------------------------------------------------------------------------
def _group(driver, name):
    return {g.name: g for g in driver.ops.driver.ex_get_security_groups()}.get(name)


def test_open_ssh_creates_a_group_once_and_reuses_it(provisioner, driver, handler):
    options = machine_options(open_ssh=True, ssh_security_group="ssh-test-a", ssh_cidr="10.0.0.0/8")
    spec = provisioner.allocate(driver, "sg-1", options)
    group = _group(driver, "ssh-test-a")
    assert group is not None
    assert any(int(r["from_port"]) == 22 and "10.0.0.0/8" in r["cidr_ips"] for r in group.ingress_rules)
    assert "ssh-test-a" in [g["group_name"] for g in node_of(driver, spec).extra["groups"]]
    provisioner.allocate(driver, "sg-2", options)
    creates = [d for d in performed(handler) if d.startswith("create security group")]
    opens = [d for d in performed(handler) if d.startswith("open TCP 22")]
    assert len(creates) == 1 and len(opens) == 1


def test_open_ssh_adds_the_rule_to_an_existing_group(provisioner, driver, handler):
    driver.ops.driver.ex_create_security_group("ssh-test-b", "made by the test, no rules")
    provisioner.allocate(driver, "sg-3", machine_options(open_ssh=True,
                                                         ssh_security_group="ssh-test-b"))
    assert not [d for d in performed(handler) if d.startswith("create security group")]
    assert any(int(r["from_port"]) == 22 for r in _group(driver, "ssh-test-b").ingress_rules)


def test_named_security_groups_are_joined_and_missing_ones_refused(provisioner, driver):
    driver.ops.driver.ex_create_security_group("web-test", "web")
    spec = provisioner.allocate(driver, "sg-4", machine_options(security_groups=["web-test"]))
    assert [g["group_name"] for g in node_of(driver, spec).extra["groups"]] == ["web-test"]
    with pytest.raises(ConfigError) as info:
        provisioner.allocate(driver, "sg-5", machine_options(security_groups=["nope-group"]))
    assert "nope-group" in str(info.value)
    assert driver.find_nodes("sg-5") == []


# -- userdata and tags ---------------------------------------------------------------------------
def test_userdata_template_is_rendered_per_machine(provisioner, driver, tmp_path):
    template = tmp_path / "userdata.j2"
    template.write_text("#!/bin/sh\nhostname {{ name }}\necho {{ vars.role }} {{ size }} "
                        "{{ machine_options.size }}\n")
    options = machine_options(userdata=f"file://{template}", cloud_init=False,
                              userdata_vars={"role": "web", "size": "big"})
    for name in ("ud-1", "ud-2"):
        spec = provisioner.allocate(driver, name, options)
        assert node_userdata(driver, spec.reference["node_id"]) == \
            f"#!/bin/sh\nhostname {name}\necho web big {SIZE}\n"


def test_userdata_with_an_undefined_name_is_refused_before_creating(provisioner, driver, store):
    with pytest.raises(ConfigError) as info:
        provisioner.allocate(driver, "ud-bad", machine_options(userdata="echo {{ nosuchvar }}"))
    assert "nosuchvar" in str(info.value) and "userdata" in str(info.value)
    assert driver.find_nodes("ud-bad") == []
    assert store.get("machine", "ud-bad") is None


def test_nodes_are_tagged_with_name_store_and_extra_tags(provisioner, driver, store):
    spec = provisioner.allocate(driver, "tagged", machine_options(tags={"team": "infra"}))
    tags = node_of(driver, spec).extra["tags"]
    assert tags["provisioning:name"] == "tagged"
    assert tags["provisioning:store"] == store.store_id
    assert tags["team"] == "infra" and tags["Name"] == "tagged"
    assert spec.reference["region"] == "us-east-1"
    assert spec.reference["driver_url"] == URL


def test_a_second_store_does_not_adopt_another_stores_node(moto, tmp_path, driver):
    from provisioning.store.sqlite import SQLiteStore

    stores = [SQLiteStore(tmp_path / f"s{i}.db") for i in range(2)]
    try:
        ids = [Provisioner(s, config=driver.config).allocate(driver, "shared-name",
                                                             machine_options())
               .reference["node_id"] for s in stores]
        assert ids[0] != ids[1]
    finally:
        for s in stores:
            s.close()


# -- wishes, stop/start, lost nodes --------------------------------------------------------------
def test_a_different_size_wish_is_reported_not_ignored(provisioner, driver, handler):
    provisioner.allocate(driver, "wish", machine_options())
    before = len(handler.actions(performed=True))
    provisioner.allocate(driver, "wish", machine_options(size="t2.small"))
    assert len(handler.actions(performed=True)) == before
    reports = [e for e in handler.events if e.data.get("option") == "size"]
    assert reports and reports[0].data["wished"] == "t2.small" \
        and reports[0].data["actual"] == SIZE
    assert "destroy and re-create" in reports[0].description


def test_allocate_of_an_existing_machine_looks_its_node_up_once(provisioner, driver, handler):
    """compare_with_wish reuses the node resource_state read: one DescribeInstances, with
    the size wish still compared."""
    from tests.integration.cloud.moto_adapter import ACTIONS

    provisioner.allocate(driver, "looked-up", machine_options())
    ACTIONS.clear()
    provisioner.allocate(driver, "looked-up", machine_options(size="t2.small"))
    assert ACTIONS["DescribeInstances"] == ACTIONS["DescribeAddresses"] == 1, dict(ACTIONS)
    assert [e for e in handler.events if e.data.get("option") == "size"]


def test_why_run_up_after_a_create_killed_mid_request_plans_the_wait(store, config, driver):
    """The reference create_resources saves before RunInstances, and nothing after (the run
    was killed during the request): why-run plans the create and says what it would wait for,
    changing nothing; a real ready asks for up; a real up creates the node."""
    from provisioning.actions import RecordingActionHandler

    spec = Provisioner(store, config=config).spec("mid-request")
    driver.save_pending_reference(spec, {"provider": "ec2", "region": "us-east-1",
                                         "node_id": None, "client_token": "c" * 32})
    saved = dict(store.get("machine", "mid-request").reference)
    assert driver.create_pending(spec)
    planner = RecordingActionHandler(why_run=True)
    assert Provisioner(store, config=config, action_handler=planner).up(
        driver, "mid-request", machine_options()) is None
    assert "would wait for the new node" in " ".join(planner.descriptions("progress"))
    assert planner.actions() and not planner.actions(performed=True)
    assert store.get("machine", "mid-request").reference == saved
    with pytest.raises(MachineNotFound, match="not allocated; run up"):
        Provisioner(store, config=config).ready(driver, "mid-request", machine_options())
    made = Provisioner(store, config=config).allocate(driver, "mid-request", machine_options())
    assert made.reference["node_id"] and not driver.create_pending(made)
    assert "create_pending" not in made.reference


def test_stop_then_ready_starts_the_same_node(provisioner, driver, handler):
    spec = provisioner.allocate(driver, "stopper", machine_options())
    node_id = spec.reference["node_id"]
    provisioner.stop("stopper", machine_options(), driver)
    assert driver.machine_state(provisioner.spec("stopper")) == "stopped"
    assert node_of(driver, spec).extra["status"] == "stopped"
    count = len(handler.actions(performed=True))
    provisioner.stop("stopper", machine_options(), driver)
    assert len(handler.actions(performed=True)) == count, "stopping a stopped node is a no-op"
    machine = provisioner.ready(driver, "stopper", machine_options())
    assert machine is not None
    assert f"start node {node_id}" in performed(handler)
    assert driver.machine_state(provisioner.spec("stopper")) == "running"
    assert provisioner.spec("stopper").reference["node_id"] == node_id
    assert provisioner.spec("stopper").reference["address"]


def test_node_deleted_behind_our_back(provisioner, driver, handler, store):
    spec = provisioner.allocate(driver, "lost", machine_options())
    old = spec.reference["node_id"]
    driver.ops.driver.destroy_node(node_of(driver, spec))       # not through provisioning
    assert driver.machine_state(provisioner.spec("lost")) == "missing"
    with pytest.raises(MachineNotFound, match=old):
        provisioner.ready(driver, "lost", machine_options())
    provisioner.destroy("lost", machine_options(), driver)      # idempotent on a gone node
    assert store.get("machine", "lost") is None
    assert any("already gone" in e.description for e in handler.events)

    spec = provisioner.allocate(driver, "lost2", machine_options())
    driver.ops.driver.destroy_node(node_of(driver, spec))
    spec = provisioner.allocate(driver, "lost2", machine_options())
    assert any(e.data.get("lost_node") for e in handler.events)
    assert len(driver.find_nodes("lost2", store.store_id)) == 1


def test_destroy_waits_until_gone_and_is_idempotent(provisioner, driver, store):
    spec = provisioner.allocate(driver, "doomed", machine_options())
    node_id = spec.reference["node_id"]
    provisioner.destroy("doomed", machine_options(), driver)
    node = driver.ops.driver.list_nodes(ex_filters={"instance-id": node_id})
    assert not node or node[0].extra["status"] == "terminated"
    provisioner.destroy("doomed", machine_options(), driver)
    assert store.get("machine", "doomed") is None


# -- bad input and credentials -------------------------------------------------------------------
def test_unknown_image_is_a_clear_error_and_leaves_nothing(provisioner, driver, store):
    with pytest.raises(ConfigError) as info:
        provisioner.allocate(driver, "badimg", machine_options(image="ami-00000000deadbeef"))
    assert "ami-00000000deadbeef" in str(info.value) and "image" in str(info.value)
    assert info.value.key == "machine_options.image"
    assert driver.find_nodes("badimg") == []
    assert store.get("machine", "badimg") is None
    # the fixed wish then works (no stale idempotency token is reused)
    assert provisioner.allocate(driver, "badimg", machine_options()).reference["node_id"]


def test_unknown_size_is_a_clear_error(provisioner, driver):
    with pytest.raises(ConfigError) as info:
        provisioner.allocate(driver, "badsize", machine_options(size="t9.nonsense"))
    assert "t9.nonsense" in str(info.value) and info.value.key == "machine_options.size"


@pytest.fixture(scope="module")
def strict_moto():
    """A second moto server that checks credentials (it knows none, so every key is bad)."""
    server = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        yield server
    finally:
        server.stop()


def test_bad_credential_is_a_clear_provider_error(strict_moto, tmp_path, caplog):
    config = Config(cloud_config(strict_moto, tmp_path), base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    from provisioning.store.memory import MemoryStore

    with caplog.at_level("DEBUG"), pytest.raises(ProviderError) as info:
        Provisioner(MemoryStore(), config=config).allocate(driver, "creds", machine_options())
    text = str(info.value)
    assert "rejected the credentials" in text and "driver options / config credentials" in text
    assert info.value.provider == "ec2"
    assert SECRET_KEY not in text and SECRET_KEY not in caplog.text


def test_secrets_never_reach_events_state_or_logs(provisioner, driver, handler, tmp_path, caplog):
    with caplog.at_level("DEBUG"):
        provisioner.allocate(driver, "secretive", machine_options())
        provisioner.stop("secretive", machine_options(), driver)
        provisioner.destroy("secretive", machine_options(), driver)
    for event in handler.events:
        assert SECRET_KEY not in json.dumps(event.to_dict())
    assert SECRET_KEY not in caplog.text
    for path in tmp_path.rglob("state.db*"):
        assert SECRET_KEY.encode() not in path.read_bytes()
    assert SECRET_KEY not in repr(driver._credentials())
    assert SECRET_KEY not in driver.driver_url and ACCESS_KEY not in driver.driver_url


# -- batches -----------------------------------------------------------------------------------
def test_twenty_machines_in_one_bulk_request(provisioner, driver, handler, store):
    """One request for all: only nodes without a host key of their own in the userdata
    (cloud_init: false; with it, each node gets its own key, so its own request)."""
    names = [f"bulk-{i:02d}" for i in range(20)]
    started = time.monotonic()
    results = provisioner.allocate_batch(driver, [(n, machine_options(cloud_init=False))
                                                  for n in names])
    elapsed = time.monotonic() - started
    assert results.ok, results.failures
    creates = [d for d in performed(handler) if d.startswith("create ")
               and "security group" not in d]
    assert len(creates) == 1 and creates[0].startswith("create 20 nodes"), creates
    ids = set()
    for name in names:
        spec = store.get("machine", name)
        ids.add(spec.reference["node_id"])
        nodes = driver.find_nodes(name, store.store_id)
        assert [n["id"] for n in nodes] == [spec.reference["node_id"]]
        assert nodes[0]["tags"]["Name"] == name
    assert len(ids) == 20
    print(f"\n20 machines allocated in one request in {elapsed:.2f} s")
    # a second batch run changes nothing
    count = len(handler.actions(performed=True))
    assert provisioner.allocate_batch(driver, [(n, machine_options(cloud_init=False))
                                               for n in names]).ok
    assert len(handler.actions(performed=True)) == count


def test_batch_failure_is_reported_per_machine(provisioner, driver, store):
    requests = [("mix-ok-1", machine_options()), ("mix-ok-2", machine_options()),
                ("mix-bad", machine_options(security_groups=["absent-group"]))]
    results = provisioner.allocate_batch(driver, requests)
    assert results["mix-ok-1"].ok and results["mix-ok-2"].ok
    assert isinstance(results["mix-bad"].error, ConfigError)
    assert store.get("machine", "mix-ok-2").reference["node_id"]


def test_crash_inside_a_bulk_create_is_claimed_on_rerun(moto, tmp_path, store):
    """The process dies right after RunInstances (kill -9 style): the re-run claims the batch's
    nodes instead of creating another 6."""
    data = cloud_config(moto, tmp_path)
    names = [f"crashbulk-{i}" for i in range(6)]
    script = (
        "import json, sys\n"
        "from provisioning.config import Config\n"
        "from provisioning.lifecycle import Provisioner\n"
        "from provisioning.registry import driver_for_url\n"
        "from provisioning.store.sqlite import SQLiteStore\n"
        "job = json.loads(sys.argv[1])\n"
        "config = Config(job['config'], base_dir=job['base'])\n"
        "store = SQLiteStore(job['state'])\n"
        "Provisioner(store, config=config).allocate_batch(driver_for_url(job['url'], config),"
        " [(n, job['options']) for n in job['names']])\n")
    job = {"config": data, "base": str(tmp_path), "state": str(tmp_path / "state.db"),
           "url": URL, "names": names, "options": machine_options(cloud_init=False)}
    env = dict(os.environ, PYTHONPATH=REPO, PROVISIONING_FAULT="after_create:crash")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 86, done.stderr
    config = Config(data, base_dir=str(tmp_path))
    driver = driver_for_url(URL, config)
    batch_nodes = driver.ops.tagged_nodes({"provisioning:store": store.store_id})
    assert len(batch_nodes) == 6
    results = Provisioner(store, config=config).allocate_batch(
        driver, [(n, machine_options(cloud_init=False)) for n in names])
    assert results.ok, results.failures
    assert len(driver.ops.tagged_nodes({"provisioning:store": store.store_id})) == 6
    assert {store.get("machine", n).reference["node_id"] for n in names} == \
        {n.id for n in batch_nodes}


def test_why_run_batch_creates_nothing(store, config, driver):
    from provisioning.actions import RecordingActionHandler

    planner = RecordingActionHandler(why_run=True)
    names = [f"plan-{i}" for i in range(3)]
    Provisioner(store, config=config, action_handler=planner).allocate_batch(
        driver, [(n, machine_options(open_ssh=True, ssh_security_group="plan-ssh"))
                 for n in names])
    assert planner.actions() and not planner.actions(performed=True)
    assert all(driver.find_nodes(n) == [] for n in names)
    assert _group(driver, "plan-ssh") is None


# -- describe ------------------------------------------------------------------------------------
def test_describe_lists_images_sizes_and_locations_from_the_server(driver):
    description = driver.describe().to_dict()
    choices = description["choices"]
    assert IMAGE in choices["images"]
    assert SIZE in choices["sizes"]
    assert "us-east-1a" in choices["locations"]
    assert "default" in choices["security_groups"]
    assert choices["networks"], "moto has a default VPC"
    assert any(d["id"] == IMAGE and d["name"] for d in choices["images_details"])
    fields = {f["name"]: f for f in description["machine_options"]}
    assert fields["size"]["choices_from"] == "sizes" and fields["image"]["help"]
    assert fields["open_ssh"]["type"] == "bool"
    secret = {f["name"] for f in description["driver_options"] if f["secret"]}
    assert {"key", "secret", "token"} <= secret
