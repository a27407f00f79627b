"""A fabric ThreadingGroup over the hosts with strict host keys (fabric's default is
paramiko's AutoAddPolicy, which we do not benchmark: it skips host-key verification)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import paramiko  # noqa: E402
from fabric import Connection, ThreadingGroup  # noqa: E402


def group(hosts):
    connections = []
    for h in hosts:
        c = Connection(h["host"], user=h["user"], port=h["port"],
                       connect_kwargs={"key_filename": h["key"], "look_for_keys": False,
                                       "allow_agent": False})
        c.client.load_host_keys(h["known_hosts"])
        c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        connections.append(c)
    return ThreadingGroup.from_connections(connections)
