# W3: SFTP put of the payload, then `sha256sum` on the host; hosts in parallel threads.
from concurrent.futures import ThreadPoolExecutor

import hostlist
from client import connect, run

data, hosts = hostlist.load()


def one(h):
    client = connect(h)
    try:
        dest = hostlist.remote_path(h)
        sftp = client.open_sftp()
        sftp.put(data["payload"], dest)
        sftp.close()
        return h["name"], run(client, f"sha256sum {dest}").split()[0]
    finally:
        client.close()


with ThreadPoolExecutor(len(hosts)) as pool:
    for name, out in pool.map(one, hosts):
        hostlist.emit(name, out)
