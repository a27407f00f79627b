# W1: fresh connection per host, `uname -a`, one thread per host.
import os
import sys
from concurrent.futures import ThreadPoolExecutor

# bench/ (hostlist) on the path before importing it, as the asyncssh scripts do
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import hostlist  # noqa: E402
from client import connect, run  # noqa: E402

_, hosts = hostlist.load()


def one(h):
    client = connect(h)
    try:
        return h["name"], run(client, "uname -a").strip()
    finally:
        client.close()


with ThreadPoolExecutor(len(hosts)) as pool:
    for name, out in pool.map(one, hosts):
        hostlist.emit(name, out)
