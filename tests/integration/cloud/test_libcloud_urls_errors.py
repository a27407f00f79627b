"""URL canonicalization, credential sources, the exception table and lazy import (no cloud
traffic here except where a moto server is named)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from provisioning.config import Config
from provisioning.drivers.libcloud import LibcloudDriver
from provisioning.drivers.libcloud_parts.credentials import resolve_credentials
from provisioning.drivers.libcloud_parts.errors import translate
from provisioning.errors import ConfigError, InvalidDriverURL, ProvisioningError
from provisioning.registry import driver_for_url
from tests.integration.cloud.conftest import REPO, URL, cloud_config, machine_options


@pytest.fixture
def aws_home(tmp_path, monkeypatch):
    """AWS shared files in tmp (the standard env vars point there); no AWS env credentials."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    creds, conf = tmp_path / "credentials", tmp_path / "config"
    creds.write_text("[default]\naws_access_key_id = AKIADEFAULT0000001\n"
                     "aws_secret_access_key = default-secret\n\n"
                     "[prod]\naws_access_key_id = AKIAPROD00000000002\n"
                     "aws_secret_access_key = prod-secret-value\n")
    conf.write_text("[default]\nregion = eu-west-1\n\n[profile prod]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(conf))
    return tmp_path


def canon(url, data=None, base="/tmp"):
    return LibcloudDriver.canonicalize_url(url, Config(data or {}, base_dir=base))


def test_canonical_urls(aws_home):
    assert canon("libcloud:ec2:us-east-1") == "libcloud:ec2:us-east-1"
    assert canon("libcloud:EC2:us-west-2") == "libcloud:ec2:us-west-2"
    assert canon("libcloud:aws:us-west-2") == "libcloud:ec2:us-west-2"
    assert canon("libcloud:ec2") == "libcloud:ec2:us-east-1"
    assert canon("libcloud:ec2", {"driver_options": {"libcloud:ec2": {"region": "eu-north-1"}}}) \
        == "libcloud:ec2:eu-north-1"
    assert canon("libcloud:gce:my-project") == "libcloud:gce:my-project"
    assert canon("libcloud:openstack:https://keystone.example:5000/") == \
        "libcloud:openstack:https://keystone.example:5000"
    for url in ("libcloud:ec2:us-east-1", "libcloud:gce:my-project"):
        assert canon(canon(url)) == canon(url)


def test_canonical_url_uses_environment_region(aws_home, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert canon("libcloud:ec2") == "libcloud:ec2:ca-central-1"
    monkeypatch.setenv("AWS_PROFILE", "prod")
    assert canon("libcloud:ec2") == "libcloud:ec2:ap-south-1"


def test_profile_in_url_resolves_to_region_and_key_id_never_the_secret(aws_home):
    url = canon("libcloud:ec2:prod")
    assert url == "libcloud:ec2:ap-south-1:AKIAPROD00000000002"
    assert "prod-secret-value" not in url
    assert canon(url) == url
    driver = driver_for_url(url, Config({}, base_dir=str(aws_home)))
    creds = driver._credentials()
    assert creds.key == "AKIAPROD00000000002" and "prod" in creds.source
    assert "prod-secret-value" not in repr(creds)


@pytest.mark.parametrize("url, words", [
    ("libcloud:ec3:us-east-1", ["ec3", "did you mean", "ec2"]),
    ("libcloud:ec2:us-eats-1", ["us-eats-1", "us-east-1"]),
    ("libcloud:", ["name a libcloud provider"]),
])
def test_bad_urls_say_what_is_wrong(aws_home, url, words):
    with pytest.raises(InvalidDriverURL) as info:
        canon(url)
    for word in words:
        assert word in str(info.value)


def test_credential_order(aws_home, monkeypatch):
    assert resolve_credentials("ec2", {}).key == "AKIADEFAULT0000001"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV000000000003")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    assert resolve_credentials("ec2", {}).source == "environment AWS_ACCESS_KEY_ID"
    assert resolve_credentials("ec2", {"profile": "prod"}).key == "AKIAPROD00000000002"
    explicit = resolve_credentials("ec2", {"key": "AKIAEXPLICIT000004", "secret": "s"})
    assert explicit.key == "AKIAEXPLICIT000004"
    with pytest.raises(ConfigError, match="nosuch"):
        resolve_credentials("ec2", {"profile": "nosuch"})


def test_no_credentials_at_all_is_a_config_error(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none2"))
    with pytest.raises(ConfigError, match="no AWS credentials"):
        resolve_credentials("ec2", {})
    with pytest.raises(ConfigError, match="no credentials for libcloud provider"):
        resolve_credentials("digital_ocean", {})


def test_credentials_under_the_provider_prefix_serve_every_region(moto, tmp_path):
    data = cloud_config(moto, tmp_path)
    data["credentials"] = {"libcloud:ec2": data["credentials"].pop(URL)}
    data["driver_options"] = {"libcloud:ec2": data["driver_options"].pop(URL)}
    driver = driver_for_url("libcloud:ec2:us-east-1", Config(data, base_dir=str(tmp_path)))
    assert "us-east-1a" in driver.list_choices()["locations"]


def _libcloud_exceptions():
    from libcloud.common import exceptions, types
    from libcloud.compute import types as compute_types
    from libcloud.compute.drivers.ec2 import IdempotentParamError

    found = {IdempotentParamError}
    for module in (types, exceptions, compute_types):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Exception) and \
                    value.__module__.startswith("libcloud"):
                found.add(value)
    return sorted(found, key=lambda c: c.__name__)


def _instance(cls):
    from libcloud.common.exceptions import BaseHTTPError

    if issubclass(cls, BaseHTTPError):
        return cls(500, "boom", {})
    for args in ((), ("boom",), ("boom", None), ("boom", None, None)):
        try:
            return cls(*args)
        except TypeError:
            continue
    try:
        return cls(value="boom", driver=None)
    except TypeError:
        return cls(name="x", value="boom", driver=None)


@pytest.mark.parametrize("cls", _libcloud_exceptions(), ids=lambda c: c.__name__)
def test_every_libcloud_exception_is_mapped(cls):
    mapped = translate(_instance(cls), provider="ec2", action="test", context={"region": "r"})
    assert isinstance(mapped, ProvisioningError), cls


@pytest.mark.parametrize("message, key", [
    ("InvalidAMIID.NotFound: The image id '[ami-1]' does not exist", "machine_options.image"),
    ("InvalidInstanceType.NotFound: The instance type 'x' does not exist", "machine_options.size"),
    ("InvalidGroup.NotFound: The security group 'g' does not exist",
     "machine_options.security_groups"),
])
def test_provider_codes_become_config_errors_naming_the_option(message, key):
    from libcloud.common.exceptions import BaseHTTPError

    mapped = translate(BaseHTTPError(400, message, {}), provider="ec2", action="create a node")
    assert isinstance(mapped, ConfigError) and mapped.key == key


def test_unreachable_endpoint_is_a_provider_error(tmp_path):
    import socket

    from provisioning.errors import ProviderError
    from provisioning.lifecycle import Provisioner
    from provisioning.store.memory import MemoryStore

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]            # nothing listens here once closed
    data = cloud_config(type("M", (), {"endpoint": {"host": "127.0.0.1", "port": port,
                                                    "secure": False}})(), tmp_path)
    config = Config(data, base_dir=str(tmp_path))
    with pytest.raises(ProviderError, match="cannot reach the ec2 API"):
        Provisioner(MemoryStore(), config=config).allocate(driver_for_url(URL, config), "x",
                                                           machine_options())


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})


def test_libcloud_is_imported_only_when_the_scheme_is_used():
    done = _python("import sys, provisioning, provisioning.drivers.libcloud\n"
                   "import provisioning.registry as r; r.driver_class('libcloud')\n"
                   "print('libcloud' in sys.modules, 'jinja2' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_missing_extra_names_provisioning_cloud():
    done = _python(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'libcloud' or name.startswith('libcloud.'):\n"
        "            raise ImportError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from provisioning.registry import driver_for_url\n"
        "from provisioning.errors import MissingExtra\n"
        "try:\n"
        "    driver_for_url('libcloud:ec2:us-east-1')\n"
        "except MissingExtra as exc:\n"
        "    print('MISSING', exc)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MISSING") and "provisioning[cloud]" in done.stdout
