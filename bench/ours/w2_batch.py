# W2 through Machine.execute_many: the 20 commands are sent at once and run one after another
# on the host, each with its own exit status and output (stops at the first failure).
from common import fan_out, hostlist, transport

_, hosts = hostlist.load()


def one(h):
    from provisioning.machine.unix import UnixMachine

    with UnixMachine(h["name"], transport(h)) as machine:
        results = machine.execute_many([f"echo {i}" for i in range(hostlist.W2_COMMANDS)])
    return " ".join(r.stdout.strip() for r in results)


fan_out(hosts, one)
