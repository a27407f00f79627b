"""Subprocess side of the conformance suite: allocate (or destroy) one machine, then exit.

``python -m provisioning.testing.conformance_worker '{"url": ..., "config": {...}, ...}'``
"""

from __future__ import annotations

import json
import sys

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
        if job.get("operation", "allocate") == "destroy":
            provisioner.destroy(job["name"], job.get("options") or {}, driver)
        else:
            provisioner.allocate(driver, job["name"], job.get("options") or {})
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
