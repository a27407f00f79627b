"""The two smaller measurements of bench/fanout.py: SFTP upload rate vs OpenSSH scp on one
loopback host, and the start-up cost of ``import provisioning`` and ``converge --help``."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
SFTP_BYTES = 100 * 1024 * 1024
SFTP_RUNS = 3


def sftp_vs_scp(hosts, venvs: str, out_dir: str) -> list[dict]:
    """Upload one 100 MiB file to one host with scp and with our upload_file (and the Python
    peers, for scale); each run is a whole process, checked by re-hashing the file."""
    big = os.path.join(hosts.state, "big.bin")
    with open(big, "wb") as handle:
        for _ in range(SFTP_BYTES >> 20):
            handle.write(os.urandom(1 << 20))
    want = hashlib.sha256(open(big, "rb").read()).hexdigest()
    h = hosts.hosts[0]
    dest = os.path.join(h["scratch"], "big.bin")
    ssh_opts = ["-F", "/dev/null", "-i", h["key"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={h['known_hosts']}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none"]
    commands = {
        "scp (OpenSSH, default cipher)": ["scp", "-q", *ssh_opts, "-P", str(h["port"]), big,
                                          f"{h['user']}@{h['host']}:{dest}"],
        "scp -c aes128-gcm@openssh.com": ["scp", "-q", *ssh_opts, "-c", "aes128-gcm@openssh.com",
                                          "-P", str(h["port"]), big, f"{h['user']}@{h['host']}:{dest}"],
        "ours (SSHTransport.upload_file)": [os.path.join(venvs, "ours", "bin", "python"),
                                            os.path.join(BENCH, "ours", "upload.py"),
                                            hosts.json_path, big, dest],
        "asyncssh (sftp.put)": [os.path.join(venvs, "asyncssh", "bin", "python"),
                                os.path.join(BENCH, "peers", "asyncssh", "upload.py"),
                                hosts.json_path, big, dest],
        "paramiko (sftp.put)": [os.path.join(venvs, "paramiko", "bin", "python"),
                                os.path.join(BENCH, "peers", "paramiko", "upload.py"),
                                hosts.json_path, big, dest],
    }
    rows = []
    for tool, cmd in commands.items():
        if not os.path.exists(cmd[0]) and not cmd[0] == "scp":
            continue
        times = []
        for attempt in range(SFTP_RUNS + 1):
            if os.path.exists(dest):
                os.unlink(dest)
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{tool} failed: {proc.stderr[-2000:]}")
            got = hashlib.sha256(open(dest, "rb").read()).hexdigest()
            if got != want:
                raise RuntimeError(f"{tool}: uploaded file has sha256 {got}, expected {want}")
            if attempt:  # the first run is a warm-up
                times.append(wall)
        rows.append({"tool": tool, "bytes": SFTP_BYTES, "times": times,
                     "median": statistics.median(times), "runs": len(times)})
    os.unlink(big)
    if os.path.exists(dest):
        os.unlink(dest)
    with open(os.path.join(out_dir, "sftp.json"), "w") as handle:
        json.dump(rows, handle, indent=1)
    return rows


def startup(venvs: str, out_dir: str) -> list[dict]:
    """hyperfine over interpreter start, ``import provisioning`` and ``converge --help``."""
    py = os.path.join(venvs, "ours", "bin", "python")
    named = [("python -c pass", f"{py} -c pass"),
             ("python -c 'import provisioning'", f"{py} -c 'import provisioning'"),
             ("python -c 'import paramiko'", f"{py} -c 'import paramiko'")]
    converge = os.path.join(venvs, "ours", "bin", "converge")
    if os.path.exists(converge):
        probe = subprocess.run([converge, "--help"], capture_output=True)
        if probe.returncode == 0:
            named.append(("converge --help", f"{converge} --help"))
    out = os.path.join(out_dir, "startup.json")
    args = ["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", "20",
            "--export-json", out]
    for name, cmd in named:
        args += ["-n", name, cmd]
    subprocess.run(args, check=True, capture_output=True)
    rows = []
    for result in json.load(open(out))["results"]:
        times = result["times"]
        rows.append({"name": result["command"], "median": statistics.median(times),
                     "min": min(times), "max": max(times), "runs": len(times)})
    return rows

