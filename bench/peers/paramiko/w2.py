# W2: one connection per host, 20 `echo i` one after another; hosts in parallel threads.
from concurrent.futures import ThreadPoolExecutor

import hostlist
from client import connect, run

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
