# W3: SFTP put of the payload, then `sha256sum` on the host; hosts in parallel threads.
import os
import sys
from concurrent.futures import ThreadPoolExecutor

# bench/ (hostlist) on the path before importing it, as the asyncssh scripts do
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import hostlist  # noqa: E402
from client import connect, run  # noqa: E402

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
