"""A real moto EC2 server on 127.0.0.1 (a subprocess killed by its PID) and configs that point
the libcloud: driver at it through generic driver options only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest

pytest.importorskip("libcloud", reason="apache-libcloud is not installed: pip install "
                                       "'provisioning[cloud]'")

URL = "libcloud:ec2:us-east-1"
ADAPTER = "tests.integration.cloud.moto_adapter:MotoEC2NodeDriver"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
#: an AMI moto ships in us-east-1 (with MOTO_ENABLE_AMI_VALIDATION only known AMIs work)
IMAGE = "ami-12c6146b"
SIZE = "t2.micro"
ACCESS_KEY = "AKIAMOTOTESTKEY00001"
SECRET_KEY = "moto-secret-do-not-log-3141592653"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen

    @property
    def endpoint(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "secure": False}

    def reset(self) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/moto-api/reset",
                                         method="POST")
        urllib.request.urlopen(request, timeout=30).read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()        # only the process we started, by its PID
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_moto(extra_env: dict | None = None) -> MotoServer:
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        pytest.skip("moto_server is not installed: pip install 'moto[server]'")
    port = _free_port()
    env = dict(os.environ, MOTO_ENABLE_KEYPAIR_VALIDATION="1", MOTO_ENABLE_AMI_VALIDATION="1",
               MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION="1", **(extra_env or {}))
    process = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = MotoServer(port, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).read()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto_server did not answer within 60 s")


@pytest.fixture(scope="session")
def moto():
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


def cloud_config(moto: MotoServer, tmp_path, **extra) -> dict:
    """Config data (JSON-able, so subprocesses rebuild it) pointing libcloud:ec2 at moto."""
    options = {"endpoint": moto.endpoint, "signature_version": "4", "driver_class": ADAPTER,
               "poll_interval": 0.05, "wait_timeout": 30.0}
    options.update(extra.pop("driver_options", {}))
    return {"driver_options": {URL: options},
            "credentials": {URL: {"key": ACCESS_KEY, "secret": SECRET_KEY}},
            "private_key_paths": [str(tmp_path / "keys")], **extra}


def machine_options(**extra) -> dict:
    """Options for a node on moto: nodes there are not reachable, so no SSH wait."""
    return {"image": IMAGE, "size": SIZE, "wait_for_ssh": False, **extra}


@pytest.fixture
def config(moto, tmp_path):
    from provisioning.config import Config

    return Config(cloud_config(moto, tmp_path), base_dir=str(tmp_path))


@pytest.fixture
def driver(config):
    from provisioning.registry import driver_for_url

    return driver_for_url(URL, config)


@pytest.fixture
def provisioner(store, config, handler):
    from provisioning.lifecycle import Provisioner

    return Provisioner(store, config=config, action_handler=handler, lock_wait=30)


def node_userdata(driver, node_id: str) -> str:
    """The userdata moto holds for a node (DescribeInstanceAttribute userData), decoded."""
    import base64

    body = driver.ops.driver.connection.request("/", params={
        "Action": "DescribeInstanceAttribute", "InstanceId": node_id,
        "Attribute": "userData"}).body
    if "<value>" not in body:
        return ""
    return base64.b64decode(body.split("<value>")[1].split("</value>")[0]).decode()


def userdata_parts(userdata: str) -> tuple[dict, list[tuple[str, str]]]:
    """(the cloud-config mapping, [(content type, text) of every other part]) of a userdata
    that is a plain ``#cloud-config`` document or a MIME multipart."""
    import email

    import yaml

    if userdata.startswith("#cloud-config"):
        return yaml.safe_load(userdata), []
    message = email.message_from_string(userdata)
    assert message.is_multipart(), userdata[:200]
    config, others = {}, []
    for part in message.get_payload():
        text = part.get_payload(decode=True).decode()
        if part.get_content_type() == "text/cloud-config":
            config.update(yaml.safe_load(text))
        else:
            others.append((part.get_content_type(), text))
    return config, others
