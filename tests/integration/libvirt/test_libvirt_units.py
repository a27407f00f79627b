"""The libvirt: driver's parts that need no running VM: URLs, accelerator choice, the domain
XML, the seed disk, image names, and the libvirtError mapping (against libvirt's own built-in
``test:///default`` hypervisor, a real libvirt driver that needs no daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from provisioning.cluster.state_ops import import_resource
from provisioning.config import Config
from provisioning.drivers.libvirt import LibvirtDriver
from provisioning.drivers.libvirt_host import accel, domain, image, seed
from provisioning.drivers.libvirt_host.importing import _tags
from provisioning.errors import ConfigError, InvalidDriverURL, MachineNotFound, ProviderError
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore


def test_bare_scheme_means_the_default_uri(monkeypatch, tmp_path):
    config = Config({}, base_dir=str(tmp_path))
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    assert LibvirtDriver.canonicalize_url("libvirt:", config) == "libvirt:qemu:///system"
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu+ssh://host/system")
    assert LibvirtDriver.canonicalize_url("libvirt:", config) == "libvirt:qemu+ssh://host/system"
    assert LibvirtDriver.canonicalize_url("libvirt:qemu:///system", config) == \
        "libvirt:qemu:///system"


def test_a_url_without_a_libvirt_uri_is_refused(tmp_path):
    with pytest.raises(InvalidDriverURL, match="libvirt:qemu:///system"):
        driver_for_url("libvirt:qemu", Config({}, base_dir=str(tmp_path)))


def test_driver_directory_is_resolved_against_the_config(tmp_path):
    config = Config({"driver_options": {"libvirt:qemu:///system": {"directory": "vms"}}},
                    base_dir=str(tmp_path))
    driver = driver_for_url("libvirt:qemu:///system", config)
    assert driver.directory == str(tmp_path / "vms")
    assert driver.local
    assert not driver_for_url("libvirt:qemu+ssh://h/system", config).local


def _fake_host(root, *, kvm=True, modules=(), flags=""):
    if kvm:
        (root / "dev").mkdir()
        (root / "dev/kvm").write_text("")
    for module in modules:
        (root / "sys/module" / module).mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return str(root)


def test_no_dev_kvm_means_tcg(tmp_path):
    usable, reason = accel.detect_kvm(_fake_host(tmp_path, kvm=False))
    assert not usable and "/dev/kvm does not exist" in reason


def test_pvm_kvm_is_detected_without_starting_a_guest(tmp_path):
    usable, reason = accel.detect_kvm(_fake_host(tmp_path, modules=("kvm", "kvm_pvm")))
    assert not usable and "PVM" in reason


def test_kvm_without_hardware_flags_is_not_trusted(tmp_path):
    usable, reason = accel.detect_kvm(_fake_host(tmp_path, modules=("kvm",)))
    assert not usable and "vmx/svm" in reason


def test_hardware_kvm_is_usable(tmp_path):
    usable, _ = accel.detect_kvm(_fake_host(tmp_path, modules=("kvm", "kvm_intel"), flags="vmx"))
    assert usable


def test_accel_choices():
    assert accel.choose_accel("tcg", local=True) == accel.Accel("tcg")
    assert accel.choose_accel("kvm", local=True).domain_type == "kvm"
    assert accel.choose_accel("auto", local=False).kind == "kvm"
    with pytest.raises(ConfigError, match="accel 'fast'"):
        accel.choose_accel("fast", local=True)


def test_domain_xml_is_well_formed_and_escapes_tags():
    spec = domain.DomainSpec(
        name="prov-1-2", memory_mib=512, cpus=1, domain_type="qemu", disk="/d/disk.qcow2",
        seed="/d/seed.img", kernel="/i/vmlinuz", initrd="/i/initrd.img", console="/d/c.log",
        forwards=(domain.Forward("127.0.0.1", 40022, 22), domain.Forward("127.0.0.1", 8080, 80)),
        tags={"name": 'we"b & <1>', "store": "s"}, uuid="0b4c1b5e-5a2e-4d0c-9a53-5b3f2d2f1a10")
    root = ET.fromstring(domain.domain_xml(spec))
    assert root.get("type") == "qemu"
    assert root.findtext("uuid") == "0b4c1b5e-5a2e-4d0c-9a53-5b3f2d2f1a10"
    tag = root.find(f"metadata/{{{domain.METADATA_NS}}}machine")
    assert tag.get("name") == 'we"b & <1>'
    args = [a.get("value") for a in root.iter(f"{{{domain.QEMU_NS}}}arg")]
    netdev = args[args.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "hostfwd=tcp:127.0.0.1:8080-:80" in netdev
    assert root.find("features/tcg/tb-cache").text == "128"
    assert root.find("devices/disk/readonly") is not None


@pytest.mark.skipif(not shutil.which("debugfs") and not os.path.exists("/sbin/debugfs"),
                    reason="debugfs (e2fsprogs) is missing")
def test_seed_disk_holds_the_keys_we_wrote(tmp_path):
    private, public = seed.generate_host_key("web-1")
    target = tmp_path / "seed.img"
    seed.write_seed(str(target), host_key=private, host_public=public,
                    authorized_key="ssh-ed25519 AAAAC3Nz user@here", hostname="web-1")
    assert os.stat(target).st_mode & 0o777 == 0o600

    def cat(name):
        return subprocess.run(["debugfs", "-R", f"cat /{name}", str(target)], check=True,
                              capture_output=True).stdout

    assert cat("host_key") == private
    assert cat("host_key.pub").decode().split()[:2] == public.split()[:2]
    assert cat("authorized_keys").decode().strip() == "ssh-ed25519 AAAAC3Nz user@here"
    assert cat("hostname").decode().strip() == "web-1"
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(target)],
                           capture_output=True, text=True).stdout.strip()
    assert label == seed.SEED_LABEL
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".seed-")]


def test_only_debian_images_are_built(tmp_path):
    with pytest.raises(ConfigError, match="debian:SUITE"):
        image.resolve_base("ubuntu:jammy", str(tmp_path))
    with pytest.raises(ConfigError, match="not a Debian suite"):
        image.resolve_base("debian:Book Worm", str(tmp_path))
    base = image.resolve_base("debian:trixie", str(tmp_path))
    assert base.home == str(tmp_path / f"qcow2-v{image.LAYOUT}-debian-trixie") and not base.ready


libvirt = pytest.importorskip("libvirt")


def test_libvirt_errors_are_mapped_to_ours():
    from provisioning.drivers.libvirt_host.conn import mapped, open_connection

    conn = open_connection("test:///default")  # libvirt's in-process test hypervisor
    with pytest.raises(MachineNotFound, match="does not exist") as caught:
        with mapped("looking up domain nope", machine="web-1"):
            conn.lookupByName("nope")
    assert isinstance(caught.value.__cause__, libvirt.libvirtError)
    assert caught.value.machine == "web-1"
    with pytest.raises(ProviderError, match="defining domain") as caught:
        with mapped("defining domain x"):
            conn.defineXML("<domain type='test'><name>x</name></nodomain>")
    assert caught.value.provider_message


def test_unknown_libvirt_uri_is_a_connect_error():
    from provisioning.drivers.libvirt_host.conn import open_connection
    from provisioning.errors import ConnectError

    with pytest.raises(ConnectError, match="cannot connect to libvirt at nosuch:///x"):
        open_connection("nosuch:///x")


# -- converge import, on libvirt's test:///default hypervisor (the conformance suite imports a
#    booted machine) ---------------------------------------------------------------------------
def _bare_domain(name: str, metadata: str = "") -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>256</memory>"
            f"<vcpu>2</vcpu><os><type arch='x86_64'>hvm</type></os>{metadata}</domain>")


@pytest.fixture
def importer(tmp_path):
    """A libvirt: driver on test:///default, a provisioner on a fresh state, and a maker of
    domains (undefined at the end: the test hypervisor is shared by the whole process)."""
    url = "libvirt:test:///default"
    config = Config({"driver_options": {url: {"directory": str(tmp_path / "warehouse")}}},
                    base_dir=str(tmp_path))
    driver = driver_for_url(url, config)
    store = SQLiteStore(tmp_path / "state.db")
    defined = []

    def define(xml: str):
        defined.append(driver.connection().defineXML(xml))
        return defined[-1]
    yield driver, store, Provisioner(store, config=config), define
    for made in defined:
        if made.isActive():
            made.destroy()
        made.undefine()
    store.close()


def _made_elsewhere(driver, define, *, running: bool):
    """A machine of the driver's directory as another state's run left it: record, host key,
    disk, and its domain tagged for that state's machine ``src``."""
    with driver.warehouse.locked():
        record = driver.warehouse.new_record(name="src", store_id="other-state",
                                             hostname="src", image="debian:bookworm",
                                             key_name="libvirt")
    _, public = seed.generate_host_key("src")
    with open(driver.warehouse.path(record.id, "host_key.pub"), "w") as handle:
        handle.write(public + " root@src\n")
    open(driver.warehouse.path(record.id, "disk.qcow2"), "wb").close()
    tags = (f"<metadata><p:machine xmlns:p='{domain.METADATA_NS}' name='src' store='other-state' "
            f"id='{record.id}' directory='{driver.directory}'/></metadata>")
    made = define(_bare_domain(record.domain, tags))
    if running:
        made.create()
    return record, made, " ".join(public.split()[:2])


def test_import_adopts_a_machine_of_the_directory_by_uuid_and_retags_it(importer):
    driver, store, provisioner, define = importer
    record, made, public = _made_elsewhere(driver, define, running=True)
    spec = import_resource(provisioner, driver, "web", made.UUIDString(), {})
    assert spec is not None and driver.resource_id(spec.reference) == record.domain
    ref = spec.reference
    assert (ref["host_key"], ref["state"], ref["memory"], ref["cpus"]) == (public, "running",
                                                                           256, 2)
    assert driver.warehouse.record(record.id).name == "web"
    assert driver.warehouse.record(record.id).store_id == spec.store_id
    assert _tags(made)["name"] == "web" and _tags(made)["store"] == spec.store_id
    assert driver.find_machines("web") and not driver.find_machines("src")


def test_import_refuses_a_recorded_machine_named_another_way_and_retags_nothing(importer):
    """The state records the domain name; naming the machine by its UUID or id is refused
    before the driver retags anything."""
    driver, store, provisioner, define = importer
    record, made, _ = _made_elsewhere(driver, define, running=False)
    assert import_resource(provisioner, driver, "web", record.domain, {}) is not None
    for alias in (made.UUIDString(), record.id, "web"):
        with pytest.raises(ConfigError, match=f"{record.domain} is already in the state as "
                                              "machine 'web'"):
            import_resource(provisioner, driver, "web2", alias, {})
    assert driver.warehouse.record(record.id).name == "web" and _tags(made)["name"] == "web"
    assert store.get("machine", "web2") is None


def test_import_refuses_what_the_driver_cannot_boot(importer):
    driver, store, provisioner, define = importer
    foreign = define(_bare_domain(f"foreign-{os.getpid()}-{id(store)}"))
    with pytest.raises(ConfigError, match="not made by the libvirt: driver.*ssh:"):
        import_resource(provisioner, driver, "web", foreign.name(), {})
    other = define(_bare_domain(
        f"other-{os.getpid()}-{id(store)}",
        f"<metadata><p:machine xmlns:p='{domain.METADATA_NS}' name='x' store='' id='ab12cd34' "
        "directory='/srv/elsewhere'/></metadata>"))
    with pytest.raises(ConfigError, match="directory: /srv/elsewhere"):
        import_resource(provisioner, driver, "web", other.UUIDString(), {})
    with pytest.raises(MachineNotFound, match="no domain, UUID or machine 'nope'"):
        import_resource(provisioner, driver, "web", "nope", {})
    record, made, _ = _made_elsewhere(driver, define, running=False)
    os.unlink(driver.warehouse.path(record.id, "host_key.pub"))
    with pytest.raises(ProviderError, match="never finished being made"):
        import_resource(provisioner, driver, "web", record.id, {})
    assert store.get("machine", "web") is None
    assert driver.warehouse.record(record.id).name == "src", "a refusal retags nothing"
