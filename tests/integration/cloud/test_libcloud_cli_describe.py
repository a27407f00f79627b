"""``converge drivers describe libcloud:ec2:us-east-1`` lists the server's images, sizes and
locations (the real console script, against the moto EC2 server)."""

from __future__ import annotations

import json
import os

import yaml

from tests.cli_runner import converge
from tests.integration.cloud.conftest import IMAGE, SECRET_KEY, SIZE, URL, cloud_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_cli_describe_lists_images_sizes_and_locations_from_the_server(moto, tmp_path):
    (tmp_path / "provisioning.yml").write_text(yaml.safe_dump(cloud_config(moto, tmp_path)))
    env = dict(os.environ, PYTHONPATH=REPO)  # the test-side moto adapter lives in tests/
    done = converge("drivers", "describe", URL, "--output", "json", cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    choices = described["choices"]
    assert IMAGE in [c if isinstance(c, str) else c.get("id") for c in choices["images"]]
    assert SIZE in [c if isinstance(c, str) else c.get("id") for c in choices["sizes"]]
    assert any("us-east-1" in json.dumps(c) for c in choices["locations"])
    assert {f["name"] for f in described["machine_options"]} >= {"image", "size", "key_name"}
    assert SECRET_KEY not in done.stdout + done.stderr
    text = converge("drivers", "describe", URL, cwd=tmp_path, env=env, timeout=120)
    assert text.returncode == 0 and SIZE in text.stdout and SECRET_KEY not in text.stdout
