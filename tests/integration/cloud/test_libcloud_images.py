"""An ``images:`` entry on libcloud:ec2 against moto: the builder node is converged over real SSH
(its address option points at a real sshd on 127.0.0.1), captured with EC2 ``CreateImage``,
waited for, and destroyed; a machine then boots from the image's AMI."""

from __future__ import annotations

import pytest

from provisioning.cluster import ClusterRunner, parse_cluster
from provisioning.config import Config
from provisioning.testing.sshd import client_key, sshd_host  # noqa: F401 - pytest fixtures
from tests.integration.cloud.conftest import IMAGE, SIZE, URL, cloud_config


@pytest.fixture
def ssh_config(moto, tmp_path, client_key):  # noqa: F811
    data = cloud_config(moto, tmp_path, private_keys={client_key.name: client_key.path})
    return Config(data, base_dir=str(tmp_path))


def test_image_from_a_converged_node_with_create_image(
        tmp_path, ssh_config, sshd_host, client_key, store, handler):  # noqa: F811
    marker = tmp_path / "baked.txt"
    reach = {"address": "127.0.0.1", "key_name": client_key.name,
             "transport": {"port": sshd_host.port, "username": "root",
                           "host_key": sshd_host.host_key}}
    data = {"driver": URL,
            "images": {"app": {"from": IMAGE, "machine_options": {"size": SIZE, **reach},
                               "converge": [{"file": {"path": str(marker),
                                                      "content": "converged in the builder\n"}}]}},
            "machines": {"app": {"machine_options": {"image": "app", "size": SIZE, **reach}}}}
    cluster = parse_cluster(data, str(tmp_path / "cluster.yml"))
    from provisioning.actions import ActionHandler

    events = []
    runner = ClusterRunner(cluster, store=store, config=ssh_config,
                           action_handler=ActionHandler(listeners=[events.append]))
    driver = runner.driver(URL)

    built = runner.images.ensure(["app"])
    image_id = built["app"]
    assert image_id.startswith("ami-") and image_id != IMAGE
    assert marker.read_text() == "converged in the builder\n"  # the steps ran over SSH
    saved = store.get("image", "app")
    assert saved.reference["builder_node"] and saved.reference["key"]
    assert driver.image_state(saved) == "available"
    texts = [str(e) for e in events]
    assert any("create image app-" in t for t in texts)
    assert any(f"image {image_id} available" in t for t in texts)
    # the builder node is gone, and forgotten
    assert store.get("machine", "image-builder-app") is None
    builders = driver.find_nodes("image-builder-app", store.store_id)
    assert all(n["status"] in ("gone", "terminated") for n in builders)

    results = runner.up(cluster.select(["app"]))
    assert results.ok, results.failures
    node = driver._node(store.get("machine", "app"))
    assert driver.ops.node_image(node) == image_id  # booted from the captured image

    assert runner.images.ensure(["app"]) == {"app": image_id}  # cached: no second CreateImage
    runner.destroy(cluster.select(["app"]))
    runner.images.destroy("app")
    assert driver.image_state(saved) == "missing" and store.get("image", "app") is None


def test_an_image_whose_capture_failed_before_its_save_is_removed_by_the_next_build(
        tmp_path, ssh_config, sshd_host, client_key, store, handler, monkeypatch):  # noqa: F811
    """The fault point after_capture (CreateImage answered, the entry not saved): the entry
    keeps the pending capture's unique name, so the next build finds that AMI by name and
    deregisters it before creating its own; one AMI of the image is left, the recorded one."""
    reach = {"address": "127.0.0.1", "key_name": client_key.name,
             "transport": {"port": sshd_host.port, "username": "root",
                           "host_key": sshd_host.host_key}}
    data = {"driver": URL,
            "images": {"app": {"from": IMAGE, "machine_options": {"size": SIZE, **reach},
                               "converge": []}},
            "machines": {"app": {"machine_options": {"image": "app", "size": SIZE, **reach}}}}
    cluster = parse_cluster(data, str(tmp_path / "cluster.yml"))
    runner = ClusterRunner(cluster, store=store, config=ssh_config)
    driver = runner.driver(URL)

    def ours() -> list[str]:
        return sorted(i.id for i in driver.ops.driver.list_images(ex_owner="self")
                      if (i.name or "").startswith("app-"))

    monkeypatch.setenv("PROVISIONING_FAULT", "after_capture:fail")
    with pytest.raises(Exception, match="injected failure at after_capture"):
        runner.images.ensure(["app"])
    monkeypatch.delenv("PROVISIONING_FAULT")
    [leftover] = ours()
    assert driver.capture_pending(store.get("image", "app"))
    image_id = runner.images.ensure(["app"])["app"]
    assert image_id != leftover and ours() == [image_id]
