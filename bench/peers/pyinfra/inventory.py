# pyinfra inventory: the first $BENCH_N hosts of $BENCH_HOSTS, strict host key checking.
import json
import os

with open(os.environ["BENCH_HOSTS"]) as _handle:
    _hosts = json.load(_handle)["hosts"][: int(os.environ["BENCH_N"])]

hosts = [
    (h["name"], {
        "ssh_hostname": h["host"],
        "ssh_port": h["port"],
        "ssh_user": h["user"],
        "ssh_key": h["key"],
        "ssh_known_hosts_file": h["known_hosts"],
        "ssh_strict_host_key_checking": "yes",
        "scratch": h["scratch"],
    })
    for h in _hosts
]
