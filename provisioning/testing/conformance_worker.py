"""Subprocess side of the conformance suite: allocate (or destroy) one machine, or capture one
as an image (``"operation": "capture"``, ``"image": NAME``), then exit.

``python -m provisioning.testing.conformance_worker '{"url": ..., "config": {...}, ...}'``
"""

from __future__ import annotations

import json
import sys
from typing import Any

from provisioning.actions import ActionHandler
from provisioning.config import Config
from provisioning.lifecycle import Provisioner
from provisioning.registry import driver_for_url
from provisioning.store.sqlite import SQLiteStore


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    config = Config(job["config"], base_dir=job["base_dir"])
    driver = driver_for_url(job["url"], config)
    store = SQLiteStore(job["state"])
    try:
        provisioner = Provisioner(store, config=config, lock_wait=float(job.get("lock_wait", 60)))
        operation = job.get("operation", "allocate")
        if operation == "destroy":
            provisioner.destroy(job["name"], job.get("options") or {}, driver)
        elif operation == "capture":
            image: Any = store.get_or_new("image", job["image"])  # an ImageSpec
            driver.allocate_image(ActionHandler(), image, {}, provisioner.spec(job["name"]),
                                  job.get("options") or {})
        else:
            provisioner.allocate(driver, job["name"], job.get("options") or {})
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
