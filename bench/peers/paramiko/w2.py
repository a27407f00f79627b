# W2: one connection per host, 20 `echo i` one after another; hosts in parallel threads.
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
        return h["name"], " ".join(run(client, f"echo {i}").strip() for i in range(hostlist.W2_COMMANDS))
    finally:
        client.close()


with ThreadPoolExecutor(len(hosts)) as pool:
    for name, out in pool.map(one, hosts):
        hostlist.emit(name, out)
