#!/usr/bin/env python3
"""Fan-out benchmark: the same SSH work on N real sshd hosts, by us and by peer tools.

    python3 bench/fanout.py                 # everything: W1-W3 x N=1,10,50, SFTP vs scp, start-up
    python3 bench/fanout.py --ns 10 --tools ours,asyncssh --workloads 2 --runs 5   # a subset
    python3 bench/fanout.py --ansible       # also ansible-core (slow: ~+10 min)
    python3 bench/fanout.py --ns 50,100,200 --workloads 1,2 --tools ours,ours-batch,paramiko,asyncssh \
        --no-extras --no-write              # the curve past 50 hosts (200 sshd processes)

Workloads (each cell is the whole process, timed from outside: interpreter start, imports,
connecting, the work, disconnecting):

    W1  `uname -a` once on every host, fresh connections
    W2  20 commands `echo i` one after another on every host over one connection; hosts in parallel
    W3  upload a 10 MiB file to every host and check its sha256 there

Hosts are real OpenSSH sshd processes on 127.0.0.1 from ``provisioning.testing.sshd`` (ed25519
host keys, ``SetEnv SHLVL=1`` so this machine's costly ~/.bashrc is skipped), the same hosts for
every tool; every tool verifies host keys. Each tool runs from its own virtual environment under
``bench/.venv-peers`` (or ``$BENCH_VENVS``), made here on first use. Every run of every cell is
checked: each host's uname output, each of the 20 echo outputs, each remote sha256 (and the
harness re-hashes every uploaded file itself). A wrong result fails the cell loudly and the
harness exits 1. Results: ``bench/results/<time>/results.json`` and the tables in
``bench/RESULTS.md`` (only our sections are rewritten; other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

import hostlist  # noqa: E402
import report  # noqa: E402

TOOLS = ["ours", "ours-batch", "openssh", "openssh-mux", "paramiko", "asyncssh", "fabric",
         "pyinfra", "ansible"]
DEFAULT_TOOLS = [t for t in TOOLS if t != "ansible"]
#: pip requirements per virtual environment (ours installs this checkout)
VENV_REQUIREMENTS = {
    "ours": [ROOT],  # a real (non-editable) install, refreshed every run by refresh_ours()
    "paramiko": ["paramiko"],
    "asyncssh": ["asyncssh"],
    "fabric": ["fabric>=3,<4"],
    "pyinfra": ["pyinfra"],
    "ansible": ["ansible-core"],
}
VENV_OF = {"ours": "ours", "ours-batch": "ours", "paramiko": "paramiko", "asyncssh": "asyncssh",
           "fabric": "fabric", "pyinfra": "pyinfra", "ansible": "ansible"}
SLOW_S = 20.0
PAYLOAD_BYTES = 10 * 1024 * 1024


class CheckFailed(Exception):
    """A tool's output was wrong: the cell fails and the harness exits 1."""


# -- virtual environments --------------------------------------------------------------------
def venv_python(venvs: str, name: str) -> str:
    return os.path.join(venvs, name, "bin", "python")


def ensure_venv(venvs: str, name: str) -> None:
    """Make ``venvs/name`` with its requirements once (a stamp file remembers what is in it)."""
    path = os.path.join(venvs, name)
    stamp = os.path.join(path, ".bench-installed")
    wanted = json.dumps(VENV_REQUIREMENTS[name])
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return
    print(f"[setup] installing {name} into {path} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run([venv_python(venvs, name), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", *VENV_REQUIREMENTS[name]], check=True)
    with open(stamp, "w") as handle:
        handle.write(wanted)


def refresh_ours(venvs: str) -> None:
    """Install this checkout as it is now into the ``ours`` venv (not editable: an editable
    install's import hook costs every process ~10 ms that users of a wheel do not pay)."""
    had_build = os.path.exists(os.path.join(ROOT, "build"))
    proc = subprocess.run([venv_python(venvs, "ours"), "-m", "pip", "install", "-q", "--no-deps",
                           "--force-reinstall", "--disable-pip-version-check", ROOT],
                          capture_output=True, text=True)
    if not had_build:  # pip's in-tree build leaves build/ in the checkout
        shutil.rmtree(os.path.join(ROOT, "build"), ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"installing this checkout into {venvs}/ours failed:\n{proc.stderr[-3000:]}")


def versions(venvs: str, name: str) -> str:
    out = subprocess.run([venv_python(venvs, name), "-m", "pip", "list", "--format=json"],
                         capture_output=True, text=True).stdout
    interesting = {"paramiko", "asyncssh", "fabric", "pyinfra", "ansible-core", "cryptography",
                   "provisioning"}
    try:
        return ", ".join(f"{p['name']} {p['version']}" for p in json.loads(out)
                         if p["name"].lower() in interesting)
    except ValueError:
        return "?"


# -- hosts -----------------------------------------------------------------------------------
class Hosts:
    """N sshd hosts from provisioning.testing.sshd, plus the files the tools read."""

    def __init__(self, state: str, n: int, scratch_root: str) -> None:
        from provisioning.keys import generate_private_key
        from provisioning.testing.sshd import sshd_hosts

        self.state = state
        os.makedirs(state, mode=0o700, exist_ok=True)
        key_path = os.path.join(state, "id_ed25519")
        for path in (key_path, key_path + ".pub"):
            if os.path.exists(path):
                os.unlink(path)
        key = generate_private_key(key_path, name="bench-client")
        with open(key_path + ".pub", "w") as handle:
            handle.write(key.public_openssh + "\n")
        self.payload = os.path.join(state, "payload.bin")
        with open(self.payload, "wb") as handle:
            handle.write(os.urandom(PAYLOAD_BYTES))
        self.payload_sha256 = hashlib.sha256(open(self.payload, "rb").read()).hexdigest()
        with open(self.payload + ".sha256", "w") as handle:  # ansible's W3 check reads it
            handle.write(self.payload_sha256)
        self.scratch_root = scratch_root
        daemons_dir = os.path.join(state, "sshd")
        os.makedirs(daemons_dir, exist_ok=True)
        print(f"[setup] starting {n} sshd hosts ...", flush=True)
        self.daemons = sshd_hosts(n, daemons_dir, [key.public_openssh])
        self.known_hosts = os.path.join(state, "known_hosts")
        with open(self.known_hosts, "w") as handle:
            handle.writelines(d.known_hosts_line + "\n" for d in self.daemons)
        self.hosts = []
        for index, d in enumerate(self.daemons):
            scratch = os.path.join(scratch_root, str(d.port))
            os.makedirs(scratch, exist_ok=True)
            self.hosts.append({"name": f"h{index + 1:03d}", "host": d.host, "port": d.port,
                               "user": "root", "key": key_path, "known_hosts": self.known_hosts,
                               "host_key": d.host_key, "scratch": scratch})
        self.json_path = os.path.join(state, "hosts.json")
        with open(self.json_path, "w") as handle:
            json.dump({"payload": self.payload, "payload_sha256": self.payload_sha256,
                       "hosts": self.hosts}, handle, indent=1)
        self.tsv_path = os.path.join(state, "hosts.tsv")
        with open(self.tsv_path, "w") as handle:
            for h in self.hosts:
                handle.write("\t".join(str(h[k]) for k in ("name", "host", "port", "user", "key",
                                                            "known_hosts", "scratch")) + "\n")
        self.mux_dir = os.path.join(state, "mux")
        os.makedirs(self.mux_dir, exist_ok=True)

    def prepare(self) -> None:
        """Untimed, before every run: no uploaded payload left, no OpenSSH master left."""
        for h in self.hosts:
            path = hostlist.remote_path(h)
            if os.path.exists(path):
                os.unlink(path)
        for entry in os.listdir(self.mux_dir):
            sock = os.path.join(self.mux_dir, entry)
            subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit",
                            "bench"], capture_output=True)
            if os.path.exists(sock):
                os.unlink(sock)
        ansible_cp = os.path.join(self.state, "ansible-cp")
        if os.path.isdir(ansible_cp):
            for entry in os.listdir(ansible_cp):
                sock = os.path.join(ansible_cp, entry)
                subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O",
                                "exit", "bench"], capture_output=True)

    def stop(self) -> None:
        from provisioning.testing.sshd import stop_all

        self.prepare()
        stop_all(self.daemons)
        shutil.rmtree(self.scratch_root, ignore_errors=True)


# -- commands per tool -----------------------------------------------------------------------
def command_for(tool: str, workload: int, n: int, hosts: Hosts, venvs: str) -> list[str] | None:
    """The command line of one cell, or None when the tool has no such workload."""
    peers = os.path.join(BENCH, "peers")
    if tool in ("ours", "ours-batch"):
        script = os.path.join(BENCH, "ours", f"w{workload}.py")
        if tool == "ours-batch":
            if workload != 2:
                return None
            script = os.path.join(BENCH, "ours", "w2_batch.py")
        return [venv_python(venvs, "ours"), script, hosts.json_path, str(n)]
    if tool in ("paramiko", "asyncssh", "fabric"):
        return [venv_python(venvs, tool), os.path.join(peers, tool, f"w{workload}.py"),
                hosts.json_path, str(n)]
    if tool == "openssh":
        return [os.path.join(peers, "openssh", f"w{workload}.sh"), hosts.tsv_path, str(n),
                hosts.payload]
    if tool == "openssh-mux":
        if workload != 2:
            return None
        return [os.path.join(peers, "openssh-mux", "w2.sh"), hosts.tsv_path, str(n),
                hosts.payload, hosts.mux_dir]
    if tool == "pyinfra":
        exe = os.path.join(venvs, "pyinfra", "bin", "pyinfra")
        inventory = os.path.join(peers, "pyinfra", "inventory.py")
        if workload == 1:
            return [exe, "-y", inventory, "exec", "--", "uname -a"]
        # -vvv prints each command's output, which is what the check reads
        return [exe, "-y", "-vvv", inventory, os.path.join(peers, "pyinfra", f"deploy_w{workload}.py")]
    if tool == "ansible":
        bindir = os.path.join(venvs, "ansible", "bin")
        inventory = ansible_inventory(hosts, n)
        if workload == 1:
            return [os.path.join(bindir, "ansible"), "all", "-i", inventory, "-f", str(n), "-m",
                    "ansible.builtin.command", "-a", "uname -a"]
        return [os.path.join(bindir, "ansible-playbook"), "-i", inventory, "-f", str(n),
                "-e", f"payload={hosts.payload}", os.path.join(peers, "ansible", f"w{workload}.yml")]
    raise ValueError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")


def ansible_inventory(hosts: Hosts, n: int) -> str:
    path = os.path.join(hosts.state, f"ansible-inventory-{n}.json")
    common = ("-F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={kh} "
              "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes")
    inventory = {"all": {"hosts": {h["name"]: {
        "ansible_host": h["host"], "ansible_port": h["port"], "ansible_user": h["user"],
        "ansible_ssh_private_key_file": h["key"], "scratch": h["scratch"],
        "ansible_ssh_common_args": common.format(kh=h["known_hosts"])} for h in hosts.hosts[:n]}}}
    with open(path, "w") as handle:
        json.dump(inventory, handle)
    return path


def tool_env(hosts: Hosts, n: int) -> dict:
    env = dict(os.environ)
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(var, None)
    env.update({"BENCH_HOSTS": hosts.json_path, "BENCH_N": str(n), "BENCH_PAYLOAD": hosts.payload,
                "ANSIBLE_CONFIG": os.path.join(BENCH, "peers", "ansible", "ansible.cfg"),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(hosts.state, "ansible-cp"),
                "ANSIBLE_LOCAL_TEMP": os.path.join(hosts.state, "ansible-tmp")})
    return env


# -- checking --------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_results(tool: str, workload: int, out: str, hosts: list[dict]) -> dict[str, str]:
    """name -> result, read from the tool's output."""
    out = _ANSI.sub("", out)
    if tool in ("pyinfra", "ansible"):
        return _parse_framework(tool, workload, out, hosts)
    results: dict[str, str] = {}
    for line in out.splitlines():
        if "\t" in line:
            name, _, value = line.partition("\t")
            results[name] = value.strip()
    return results


def _parse_framework(tool: str, workload: int, out: str, hosts: list[dict]) -> dict[str, str]:
    names = {h["name"] for h in hosts}
    lines: dict[str, list[str]] = {name: [] for name in names}
    if tool == "pyinfra":
        # "[h001] Linux ..." / "[h001] 3" / "[h001] <sha>  /path": one line per output line
        for line in out.splitlines():
            m = re.match(r"^\s*\[([^\]]+)\]\s+(.*)$", line)
            if m and m.group(1) in names:
                lines[m.group(1)].append(m.group(2).strip())
        if workload == 1:
            return {n: next((x for x in v if x.startswith("Linux")), "") for n, v in lines.items()}
        if workload == 2:
            return {n: " ".join(x for x in v if re.fullmatch(r"\d+", x)) for n, v in lines.items()}
        return {n: next((x.split()[0] for x in v if re.match(r"^[0-9a-f]{64}\s", x)), "")
                for n, v in lines.items()}
    # ansible: W1 "h001 | CHANGED | rc=0 >>\nLinux ..."; W2/W3 check inside the playbook
    # (failed_when compares each output), so read the recap: ok and not failed on every host.
    if workload == 1:
        found = {}
        for m in re.finditer(r"^(\S+) \| CHANGED \| rc=0 >>\n(.*)$", out, re.M):
            found[m.group(1)] = m.group(2).strip()
        return found
    results = {}
    for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", out,
                         re.M):
        if m.group(3) == "0" and m.group(4) == "0":
            results[m.group(1)] = "recap-ok"
    return results


def expected(workload: int, hosts_obj: Hosts, uname: str, tool: str) -> str:
    if workload == 1:
        return uname
    if tool == "ansible":
        return "recap-ok"
    if workload == 2:
        return " ".join(str(i) for i in range(hostlist.W2_COMMANDS))
    return hosts_obj.payload_sha256


def check(tool: str, workload: int, n: int, proc: subprocess.CompletedProcess, hosts: Hosts,
          uname: str) -> None:
    """Raise CheckFailed unless every host's result is right (and, for W3, the file is there)."""
    if proc.returncode != 0:
        raise CheckFailed(f"exit status {proc.returncode}\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}")
    subset = hosts.hosts[:n]
    text = proc.stdout + "\n" + proc.stderr if tool in ("pyinfra", "ansible") else proc.stdout
    got = parse_results(tool, workload, text, subset)
    want = expected(workload, hosts, uname, tool)
    bad = [(h["name"], got.get(h["name"])) for h in subset if got.get(h["name"]) != want]
    if bad:
        name, value = bad[0]
        raise CheckFailed(f"{len(bad)} of {n} hosts gave a wrong result; {name}: {value!r}, "
                          f"expected {want!r}\n{_tail(proc.stdout)}")
    if workload == 3:
        for h in subset:
            path = hostlist.remote_path(h)
            try:
                with open(path, "rb") as handle:
                    actual = hashlib.sha256(handle.read()).hexdigest()
            except FileNotFoundError:
                raise CheckFailed(f"{h['name']}: {path} was not uploaded") from None
            if actual != hosts.payload_sha256:
                raise CheckFailed(f"{h['name']}: {path} has sha256 {actual}, "
                                  f"expected {hosts.payload_sha256}")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


# -- running ---------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict, timeout: float) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, client CPU seconds, process): the whole process, timed from outside."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", timeout=timeout, cwd=BENCH)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def run_cell(tool: str, workload: int, n: int, hosts: Hosts, venvs: str, runs: int,
             slow_runs: int, uname: str) -> dict:
    cmd = command_for(tool, workload, n, hosts, venvs)
    env = tool_env(hosts, n)
    cell = {"tool": tool, "workload": workload, "n": n, "command": cmd, "times": [], "cpu": []}
    try:
        hosts.prepare()  # warm-up (untimed, checked)
        warm, _, proc = timed(cmd, env, 900)
        check(tool, workload, n, proc, hosts, uname)
        count = slow_runs if warm > SLOW_S else runs
        for _ in range(count):
            hosts.prepare()
            wall, cpu, proc = timed(cmd, env, 900)
            check(tool, workload, n, proc, hosts, uname)
            cell["times"].append(round(wall, 4))
            cell["cpu"].append(round(cpu, 4))
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        cell["error"] = str(exc)
    return cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", default="1,10,50", help="host counts (default 1,10,50)")
    parser.add_argument("--workloads", default="1,2,3", help="workloads (default 1,2,3)")
    parser.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                        help=f"columns (default {','.join(DEFAULT_TOOLS)}; also: ansible)")
    parser.add_argument("--ansible", action="store_true", help="add ansible-core (slow)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (default 3)")
    parser.add_argument("--slow-runs", type=int, default=1,
                        help=f"timed runs when the warm-up took over {SLOW_S:g} s (default 1)")
    parser.add_argument("--venvs", default=os.environ.get("BENCH_VENVS",
                                                          os.path.join(BENCH, ".venv-peers")),
                        help="where the tools' virtual environments live ($BENCH_VENVS)")
    parser.add_argument("--results-md", default=os.path.join(BENCH, "RESULTS.md"))
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the SFTP-vs-scp and start-up measurements")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args(argv)

    ns = [int(x) for x in args.ns.split(",") if x]
    workloads = [int(x) for x in args.workloads.split(",") if x]
    tools = [t for t in args.tools.split(",") if t]
    if args.ansible and "ansible" not in tools:
        tools.append("ansible")
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tools {unknown}; known: {', '.join(TOOLS)}")
    for tool in ("ssh", "scp", "hyperfine"):
        if shutil.which(tool) is None and (tool != "hyperfine" or not args.no_extras):
            parser.error(f"{tool} is not installed (apt-get install openssh-client hyperfine)")
    venvs = os.path.abspath(args.venvs)
    for name in sorted({VENV_OF[t] for t in tools if t in VENV_OF} | {"ours"}):
        ensure_venv(venvs, name)
    refresh_ours(venvs)

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = os.path.join(BENCH, "results", stamp)
    os.makedirs(out_dir, exist_ok=True)
    state = os.path.join(BENCH, ".fanout-state")
    shutil.rmtree(state, ignore_errors=True)
    hosts = Hosts(state, max(ns), scratch_root=f"/dev/shm/provisioning-bench-{os.getpid()}")
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    env_info = {
        "date_utc": stamp, "cores": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(),
        "sshd": subprocess.run(["/usr/sbin/sshd", "-V"], capture_output=True, text=True).stderr.strip().splitlines()[0],
        "runs": args.runs, "slow_runs": args.slow_runs, "loadavg": f"{os.getloadavg()[0]:.1f}",
        "versions": {name: versions(venvs, name) for name in sorted({VENV_OF[t] for t in tools if t in VENV_OF})},
    }
    cells: list[dict] = []
    failed = False
    started = time.monotonic()
    try:
        for n in ns:
            for workload in workloads:
                for tool in tools:
                    if command_for(tool, workload, n, hosts, venvs) is None:
                        continue
                    cell = run_cell(tool, workload, n, hosts, venvs, args.runs, args.slow_runs,
                                    uname)
                    cells.append(cell)
                    if "error" in cell:
                        failed = True
                        print(f"FAIL {tool} W{workload} N={n}: {cell['error']}", file=sys.stderr,
                              flush=True)
                    else:
                        print(f"{tool:12s} W{workload} N={n:<3d} median "
                              f"{statistics.median(cell['times']):7.3f} s  {cell['times']}",
                              flush=True)
                    with open(os.path.join(out_dir, "results.json"), "w") as handle:
                        json.dump({"env": env_info, "cells": cells}, handle, indent=1)
        extras = {}
        if not args.no_extras:
            import extras as extras_mod

            extras["sftp"] = extras_mod.sftp_vs_scp(hosts, venvs, out_dir)
            print(report.sftp_table(extras["sftp"]), flush=True)
    finally:
        hosts.stop()
    if not args.no_extras:
        extras["startup"] = extras_mod.startup(venvs, out_dir)
        print(report.startup_table(extras["startup"]), flush=True)
    env_info["wall_minutes"] = round((time.monotonic() - started) / 60, 1)
    env_info["loadavg"] += f" and {os.getloadavg()[0]:.1f}"
    with open(os.path.join(out_dir, "results.json"), "w") as handle:
        json.dump({"env": env_info, "cells": cells, "extras": extras}, handle, indent=1)
    fanout_md = report.fanout_tables(cells, env_info)
    print(fanout_md)
    if not args.no_write:
        sections = {report.FANOUT: fanout_md}
        if "sftp" in extras:
            sections[report.SFTP] = report.sftp_table(extras["sftp"])
        if "startup" in extras:
            sections[report.STARTUP] = report.startup_table(extras["startup"])
        report.update_results_md(args.results_md, sections)
        print(f"wrote {args.results_md} (raw: {out_dir}/results.json)")
    if failed:
        print("FAILED: at least one tool gave a wrong result (see FAIL lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
