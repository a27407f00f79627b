# W1: fresh connection per host, `uname -a`, one thread per host.
from concurrent.futures import ThreadPoolExecutor

import hostlist
from client import connect, run

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
