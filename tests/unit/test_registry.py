"""URLs, the scheme registry, entry-point discovery and canonicalization."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import provisioning
from provisioning import registry
from provisioning.config import Config
from provisioning.driver import Driver
from provisioning.errors import ConfigError, DriverNotFound, InvalidDriverURL
from provisioning.inputs.url import parse_driver_url


def test_parse_scheme_and_rest():
    url = parse_driver_url("libcloud:ec2:us-east-1")
    assert (url.scheme, url.rest, url.parts) == ("libcloud", "ec2:us-east-1", ["ec2", "us-east-1"])
    assert str(parse_driver_url("fake")) == "fake:"


@pytest.mark.parametrize("bad", ["", "  ", "Fake:x", "9abc:x", "fa_ke:x", ":rest"])
def test_invalid_urls_raise_typed_error(bad):
    with pytest.raises(InvalidDriverURL) as info:
        parse_driver_url(bad)
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2


def test_unknown_scheme_lists_known_ones_and_suggests():
    with pytest.raises(DriverNotFound) as info:
        provisioning.driver_for_url("fakr:")
    text = str(info.value)
    for scheme in ("fake", "ssh", "nspawn", "libcloud"):
        assert scheme in info.value.known and scheme in text
    assert "did you mean 'fake'" in text


def test_fake_url_canonicalizes_to_absolute_path(tmp_path):
    config = Config(base_dir=str(tmp_path))
    driver = provisioning.driver_for_url("fake:", config)
    assert driver.driver_url == f"fake:{tmp_path}/.provisioning/fake"
    relative = provisioning.driver_for_url("fake:./w", config)
    assert relative.driver_url == f"fake:{tmp_path}/w"


class _Recorder(Driver):
    scheme = "recorder"

    @classmethod
    def canonicalize_url(cls, url, config):
        return "recorder:canonical"

    def allocate_machine(self, *a): ...
    def ready_machine(self, *a): ...
    def connect_to_machine(self, *a): ...
    def stop_machine(self, *a): ...
    def destroy_machine(self, *a): ...


def test_register_class_and_merge_options_of_given_and_canonical_url():
    registry.register_driver("recorder", _Recorder)
    config = Config({"driver_options": {"recorder:": {"a": 1, "b": 1},
                                        "recorder:canonical": {"b": 2}}})
    driver = provisioning.driver_for_url("recorder:", config)
    assert driver.driver_url == "recorder:canonical"
    assert driver.driver_options == {"a": 1, "b": 2}


def test_register_lazy_module_path():
    registry.register_driver("lazyfake", "provisioning.drivers.fake:FakeDriver")
    assert registry.driver_class("lazyfake").__name__ == "FakeDriver"


def test_entry_point_of_an_installed_distribution_is_found(tmp_path, monkeypatch):
    """A real dist-info on sys.path, read by importlib.metadata like any installed package."""
    package = tmp_path / "demo_ep_driver"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        from provisioning.drivers.fake import FakeDriver

        class DemoDriver(FakeDriver):
            scheme = "demoep"

            @classmethod
            def canonicalize_url(cls, url, config):
                return "demoep:" + FakeDriver.canonicalize_url("fake:" + url.split(":", 1)[1], config).split(":", 1)[1]
    """))
    dist = tmp_path / "demo_ep_driver-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-ep-driver\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[provisioning.drivers]\ndemoep = demo_ep_driver:DemoDriver\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reload_entry_points()
    try:
        driver = provisioning.driver_for_url("demoep:", Config(base_dir=str(tmp_path)))
        assert type(driver).__name__ == "DemoDriver"
        assert registry.scheme_sources()["demoep"] == "demo-ep-driver 1.2.3"
        assert "demoep" in registry.known_schemes()
    finally:
        monkeypatch.undo()
        registry.reload_entry_points()


def test_import_provisioning_pulls_in_no_heavy_dependency():
    code = ("import sys, provisioning; provisioning.ProvisioningError; "
            "heavy = [m for m in ('paramiko', 'libcloud', 'winrm', 'psycopg2', 'yaml', 'jinja2', "
            "'rich', 'cryptography', 'click') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_documented_quick_check_prints_canonical_url(tmp_path):
    code = "import provisioning; d = provisioning.driver_for_url('fake:'); print(d.driver_url)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == f"fake:{tmp_path}/.provisioning/fake"
