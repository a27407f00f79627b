"""``converge import`` of containers the docker: driver did not make, on Docker and on Podman
(the conformance suite imports one it made): an SSH machine is adopted only with a host key
read through the engine, and reached with it; a container without published SSH is refused
unless imported as an ``init: process`` machine; one made through another driver URL is
refused. Every refusal changes nothing."""

from __future__ import annotations

import io
import secrets
import tarfile

import pytest

from provisioning.cluster.state_ops import import_resource
from provisioning.config import Config
from provisioning.drivers.docker_engine import container as containers
from provisioning.errors import ConfigError, ProviderError
from provisioning.keys import generate_host_key
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore

from .conftest import driver_options

IMAGE = "provisioning/debian:bookworm"


@pytest.fixture
def setting(engine, tmp_path):
    """A driver, a provisioner on a fresh state, and the containers a test makes by hand
    (removed at the end, whatever happened)."""
    config = Config({"driver_options": {engine.driver_url: driver_options(engine, tmp_path)}},
                    base_dir=str(tmp_path))
    driver = driver_for_url(engine.driver_url, config)
    store = SQLiteStore(tmp_path / "state.db")
    provisioner = Provisioner(store, config=config)
    made: list = []

    def make(init: str = "systemd", labels: dict | None = None):
        facts = driver._engine_facts()
        kwargs = containers.create_kwargs(
            name=f"foreign-{secrets.token_hex(4)}", image=IMAGE, hostname="foreign",
            machine_labels=labels or {}, machine_options={}, publish_address="127.0.0.1",
            systemd_cgroup_mount=facts["systemd_cgroup_mount"], is_podman=facts["podman"],
            init=init)
        made.append(driver.client.containers.create(**kwargs))
        return made[-1]
    yield driver, store, provisioner, make
    for spec in store.list("machine"):
        provisioner.destroy(spec.name, {}, driver)
    for found in made:
        try:
            found.remove(force=True, v=True)
        except Exception:  # destroyed with its machine
            pass
    store.close()


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_foreign_ssh_container_is_imported_with_the_host_key_in_its_files(setting):
    driver, store, provisioner, make = setting
    found = make()
    original = found.name
    with pytest.raises(ProviderError, match="cannot be verified.*ssh-keygen -A"):
        import_resource(provisioner, driver, "web", original, {})
    assert store.get("machine", "web") is None
    assert driver.client.containers.get(found.id).name == original, "a refusal renames nothing"

    private, public = generate_host_key()  # what the container's owner gives it
    found.put_archive("/", _tar({"etc/ssh/ssh_host_ed25519_key": (private, 0o600),
                                 "etc/ssh/ssh_host_ed25519_key.pub": (public.encode(), 0o644)}))
    spec = import_resource(provisioner, driver, "web", original, {})
    assert spec is not None
    assert spec.reference["host_key"] == " ".join(public.split()[:2])
    assert spec.reference["image"] == "debian:bookworm" and spec.reference["state"] == "stopped"
    renamed = driver.client.containers.get(found.id).name
    assert containers.named_for(renamed, "web", spec.store_id), renamed
    assert [c.id for c in driver.find_containers("web")] == [found.id]

    machine = provisioner.up(driver, "web", {})  # starts it; logs in with the pinned key
    assert machine.execute_always("hostname").stdout.strip() == "foreign"
    machine.disconnect()
    provisioner.destroy("web", {}, driver)
    assert found.id not in {c.id for c in driver.client.containers.list(all=True)}


def test_without_published_ssh_only_a_process_machine_is_imported(setting):
    driver, store, provisioner, make = setting
    found = make(init="process")
    with pytest.raises(ProviderError, match="does not publish SSH.*init: process"):
        import_resource(provisioner, driver, "plain", found.id, {})
    assert store.get("machine", "plain") is None
    options = {"init": "process"}
    spec = import_resource(provisioner, driver, "plain", found.id[:12], options)
    assert spec is not None and spec.reference["transport"] == "docker"
    assert driver.resource_id(spec.reference) == found.id
    machine = provisioner.up(driver, "plain", options)
    assert machine.execute_always("echo imported").stdout == "imported\n"
    machine.disconnect()


def test_a_container_made_through_another_driver_url_is_refused(setting):
    driver, store, provisioner, make = setting
    elsewhere = "docker:unix:///run/another-engine.sock"
    found = make(init="process", labels=containers.labels("web", "s1", elsewhere))
    with pytest.raises(ConfigError, match=f"made by the driver {elsewhere}"):
        import_resource(provisioner, driver, "web", found.name, {"init": "process"})
    assert store.get("machine", "web") is None
