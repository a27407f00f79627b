"""The host list every workload script reads (stdlib only, so every venv can import it).

A workload script is called as ``SCRIPT HOSTS_JSON N`` and prints one line per host,
``NAME<TAB>RESULT``, which the harness checks: W1 the ``uname -a`` output, W2 the 20 outputs
joined by spaces, W3 the sha256 the host computed of the uploaded file.
"""

import json
import sys

#: commands per host in W2
W2_COMMANDS = 20


def load(argv=None):
    """(data, hosts): the whole hosts.json and its first N hosts."""
    argv = sys.argv if argv is None else argv
    with open(argv[1]) as handle:
        data = json.load(handle)
    n = int(argv[2])
    hosts = data["hosts"][:n]
    if len(hosts) != n:
        sys.exit(f"{argv[1]} lists {len(hosts)} hosts, {n} asked for")
    return data, hosts


def remote_path(host):
    """Where W3 puts the payload on this host (hosts share this machine's filesystem)."""
    return host["scratch"] + "/payload.bin"


def emit(name, result):
    sys.stdout.write(f"{name}\t{result}\n")
