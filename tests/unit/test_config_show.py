"""``converge config show``: merged settings with the layer each came from."""

from __future__ import annotations

import json
import os

from tests.cli_runner import converge


def test_config_show_names_each_source_and_masks_secrets(tmp_path):
    (tmp_path / "provisioning.yml").write_text(
        "parallel: 4\ncredentials:\n  'fake:': {password: hunter2}\n")
    (tmp_path / "cluster.yml").write_text("driver: 'fake:'\nprivate_key_paths: [keys]\nmachines:\n  web: {}\n")
    env = dict(os.environ, PROVISIONING_LOCK_TTL="7")
    out = converge("config", "show", "--output", "json", cwd=tmp_path, check=True, env=env).stdout
    rows = {r["key"]: r for r in json.loads(out)["settings"]}
    assert rows["parallel"]["value"] == 4
    assert rows["parallel"]["source"] == str(tmp_path / "provisioning.yml")
    assert rows["lock_ttl"] == {"key": "lock_ttl", "value": 7.0, "source": "env PROVISIONING_LOCK_TTL"}
    assert rows["private_key_paths"]["source"] == str(tmp_path / "cluster.yml")
    assert "hunter2" not in out
    text = converge("config", "show", cwd=tmp_path, check=True, env=env).stdout
    assert "parallel" in text and "provisioning.yml" in text and "hunter2" not in text
