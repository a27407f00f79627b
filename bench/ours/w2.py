# W2: one connection per host, 20 commands one after another, each a round trip through the
# host's persistent shell session (its own exit status, stdout, stderr, timeout).
from common import fan_out, hostlist, transport

_, hosts = hostlist.load()


def one(h):
    outs = []
    with transport(h) as t:
        session = t.shell_session()
        for i in range(hostlist.W2_COMMANDS):
            result = session.run(f"echo {i}")
            if not result.ok:
                raise SystemExit(f"{h['name']}: echo {i} exited {result.exit_status}")
            outs.append(result.stdout.strip())
    return " ".join(outs)


fan_out(hosts, one)
