# W3: Connection.put + run("sha256sum") in a thread per host (Group.put would give every host
# the same remote path, and these hosts share one filesystem).
from concurrent.futures import ThreadPoolExecutor

import hostlist
from group import group

data, hosts = hostlist.load()
g = group(hosts)


def one(pair):
    c, h = pair
    dest = hostlist.remote_path(h)
    c.put(data["payload"], remote=dest)
    return h["name"], c.run(f"sha256sum {dest}", hide=True).stdout.split()[0]


with ThreadPoolExecutor(len(hosts)) as pool:
    for name, out in pool.map(one, zip(g, hosts)):
        hostlist.emit(name, out)
g.close()
