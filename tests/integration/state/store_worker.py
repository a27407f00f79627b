"""A separate process acting on a store, for the conformance tests (run: python store_worker.py).

Commands (the store URL comes from $STORE_URL, never from argv):
  save NAME TAG SIZE            save the entry with a reference of SIZE bytes tagged TAG
  increment NAME COUNT          COUNT read-modify-write increments, retrying on StateConflict
  hold-lock NAME TTL HOST       take the lock (holder host HOST), print "locked", sleep forever
"""

from __future__ import annotations

import os
import sys
import time

from provisioning.errors import StateConflict
from provisioning.store import open_store


def main(argv: list[str]) -> int:
    store = open_store(os.environ["STORE_URL"])
    command, name = argv[0], argv[1]
    if command == "save":
        tag, size = argv[2], int(argv[3])
        spec = store.get_or_new("machine", name)
        spec.reference = {"driver_url": "fake:/w", "tag": tag, "blob": tag[0] * size}
        spec.save()
        print("saved", flush=True)
    elif command == "increment":
        conflicts = 0
        for _ in range(int(argv[2])):
            while True:
                spec = store.get_or_new("machine", name)
                count = spec.reference.get("count", 0)
                spec.reference = {"driver_url": "fake:/w", "count": count + 1}
                try:
                    spec.save()
                    break
                except StateConflict:
                    conflicts += 1
        print("conflicts", conflicts, flush=True)
    elif command == "hold-lock":
        from provisioning.store.base import holder_info

        holder = dict(holder_info("store_worker hold-lock"), host=argv[3])
        store.lock(name, float(argv[2]), holder=holder)
        print("locked", flush=True)
        while True:
            time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
