"""The fan-out harness fails loudly when a tool's output is wrong (bench/fanout.py's checks)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench")


@pytest.fixture(scope="module")
def fanout():
    sys.path.insert(0, os.path.abspath(BENCH))
    spec = importlib.util.spec_from_file_location("bench_fanout", os.path.join(BENCH, "fanout.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeHosts:
    def __init__(self, tmp_path, n):
        self.payload_sha256 = hashlib.sha256(b"payload").hexdigest()
        self.hosts = []
        for i in range(n):
            scratch = tmp_path / f"h{i}"
            scratch.mkdir()
            self.hosts.append({"name": f"h{i:03d}", "scratch": str(scratch)})


def done(stdout, rc=0):
    return subprocess.CompletedProcess([], rc, stdout=stdout, stderr="")


def test_right_outputs_pass_and_wrong_ones_fail(fanout, tmp_path):
    hosts = FakeHosts(tmp_path, 2)
    uname = "Linux box 6.1 x86_64 GNU/Linux"
    w1 = "".join(f"{h['name']}\t{uname}\n" for h in hosts.hosts)
    fanout.check("paramiko", 1, 2, done(w1), hosts, uname)
    with pytest.raises(fanout.CheckFailed, match="1 of 2 hosts"):
        fanout.check("paramiko", 1, 2, done(w1.replace("Linux box", "Linux other", 1)), hosts, uname)
    with pytest.raises(fanout.CheckFailed, match="exit status 3"):
        fanout.check("paramiko", 1, 2, done(w1, rc=3), hosts, uname)

    echoes = " ".join(str(i) for i in range(20))
    w2 = "".join(f"{h['name']}\t{echoes}\n" for h in hosts.hosts)
    fanout.check("ours", 2, 2, done(w2), hosts, uname)
    with pytest.raises(fanout.CheckFailed):
        fanout.check("ours", 2, 2, done(w2.replace(" 19\n", " 18\n")), hosts, uname)
    with pytest.raises(fanout.CheckFailed):  # a host missing from the output
        fanout.check("ours", 2, 2, done(w2.splitlines()[0] + "\n"), hosts, uname)


def test_w3_rehashes_every_uploaded_file(fanout, tmp_path):
    hosts = FakeHosts(tmp_path, 2)
    w3 = "".join(f"{h['name']}\t{hosts.payload_sha256}\n" for h in hosts.hosts)
    with pytest.raises(fanout.CheckFailed, match="was not uploaded"):
        fanout.check("asyncssh", 3, 2, done(w3), hosts, "")
    for h in hosts.hosts:
        with open(os.path.join(h["scratch"], "payload.bin"), "wb") as handle:
            handle.write(b"payload")
    fanout.check("asyncssh", 3, 2, done(w3), hosts, "")
    with open(os.path.join(hosts.hosts[1]["scratch"], "payload.bin"), "wb") as handle:
        handle.write(b"tampered")
    with pytest.raises(fanout.CheckFailed, match="has sha256"):
        fanout.check("asyncssh", 3, 2, done(w3), hosts, "")


def test_framework_outputs_are_parsed(fanout, tmp_path):
    hosts = FakeHosts(tmp_path, 1)
    uname = "Linux box"
    pyinfra_w2 = "\n".join(f"[h000] {i}" for i in range(20)) + "\n    [h000] Success\n"
    fanout.check("pyinfra", 2, 1, done(pyinfra_w2), hosts, uname)
    with pytest.raises(fanout.CheckFailed):
        fanout.check("pyinfra", 2, 1, done(pyinfra_w2.replace("[h000] 7\n", "")), hosts, uname)
    ansible_w1 = "h000 | CHANGED | rc=0 >>\nLinux box\n"
    fanout.check("ansible", 1, 1, done(ansible_w1), hosts, uname)
    recap = "h000 : ok=1    changed=0    unreachable=0    failed=1    skipped=0\n"
    with pytest.raises(fanout.CheckFailed):
        fanout.check("ansible", 2, 1, done(recap), hosts, uname)
