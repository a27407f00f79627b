# W1: a fresh SSHTransport per host, `uname -a`, disconnect.
from common import fan_out, hostlist, transport

_, hosts = hostlist.load()


def one(h):
    with transport(h) as t:
        result = t.execute("uname -a")
    if not result.ok:
        raise SystemExit(f"{h['name']}: uname exited {result.exit_status}: {result.stderr}")
    return result.stdout.strip()


fan_out(hosts, one)
