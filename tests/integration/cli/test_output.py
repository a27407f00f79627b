"""Output modes and start-up: JSON lines, plain lines, the live display on a terminal, the
drivers command, and ``converge --help`` importing nothing heavy."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from tests.integration.cli.helpers import CONVERGE, converge, json_lines, main_in_fresh_interpreter

HEAVY = ("rich", "yaml", "jinja2", "paramiko", "cryptography", "provisioning.cluster",
         "provisioning.store", "click")


def test_help_imports_nothing_heavy_and_lists_commands():
    code = ("import sys\nfrom provisioning.cli.main import main\n"
            "rc = main(['--help'])\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY [] 0" in out.stdout
    for command in ("up", "stop", "destroy", "status", "exec", "ssh", "test", "drivers"):
        assert f"\n  {command} " in out.stdout


def test_help_imports_no_command_module():
    """The listing comes from SUMMARIES: ``--help`` imports none of the command modules (their
    import was most of its start-up; the time itself is measured in bench/, not here)."""
    code = ("import sys\nfrom provisioning.cli.main import main, COMMANDS\n"
            "rc = main(['--help'])\n"
            "print('LOADED', sorted(n for n, t in COMMANDS.items() "
            "if t.split(':')[0] in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED [] 0" in out.stdout


#: what ``converge status`` of a fake cluster must never load: it connects to nothing, hashes
#: nothing, runs no process, renders no template and changes nothing (issue #17, start-up; the time itself is
#: measured by bench/startup.py, not here)
STATUS_NEVER_LOADS = ("paramiko", "cryptography", "libcloud", "psycopg2", "jinja2", "rich",
                      "winrm", "requests", "socket", "subprocess", "hashlib", "shutil", "tarfile",
                      "difflib", "provisioning.transports.ssh.transport",
                      "provisioning.transports.ssh.connection", "provisioning.transports.winrm",
                      "provisioning.store.postgres", "provisioning.convergence.ansible",
                      "provisioning.machine.factory", "provisioning.drivers.ssh",
                      # read without click (provisioning.cli.quick), through the read-only
                      # ClusterView: nothing that plans, applies or locks machines
                      "click", "provisioning.cli.common", "provisioning.cli.group",
                      "provisioning.cluster.api", "provisioning.cluster.runner",
                      "provisioning.cluster.plan", "provisioning.cluster.apply",
                      "provisioning.cluster.kitchen", "provisioning.cluster.state_ops",
                      "provisioning.cluster.claims", "provisioning.lifecycle",
                      "provisioning.machine.access",
                      # dataclasses gets it on first use (provisioning.cli.start): never used here
                      "inspect")


def test_status_of_a_fake_cluster_loads_only_what_it_uses(tmp_path):
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web:\n'
                                          "    count: 3\n")
    converge("up", cwd=tmp_path, check=True)
    out = main_in_fresh_interpreter(tmp_path, ["status"], STATUS_NEVER_LOADS)
    assert "LOADED [] 0" in out.stdout
    assert [line.split()[:3] for line in out.stdout.splitlines() if line.startswith("web-")] == \
        [[f"web-{i}", f"fake:{tmp_path}/cloud", "running"] for i in (1, 2, 3)]


#: what a plain ``converge up`` of a ``fake:`` cluster never loads: no click (read by
#: provisioning.cli.quick), no connection code, no optional library, no live display for JSON
UP_NEVER_LOADS = ("click", "provisioning.cli.common", "provisioning.cli.group",
                  "provisioning.cli.up", "provisioning.cli.plan_cmd", "paramiko", "cryptography",
                  "libcloud", "psycopg2", "jinja2", "rich", "winrm", "requests", "socket",
                  "subprocess", "tarfile", "difflib", "uuid", "platform",
                  "provisioning.transports.ssh.transport",
                  "provisioning.transports.ssh.connection", "provisioning.transports.winrm",
                  "provisioning.store.postgres", "provisioning.convergence.ansible",
                  "provisioning.machine.factory", "provisioning.drivers.ssh", "inspect")


def test_a_plain_up_of_a_fake_cluster_loads_only_what_it_uses(tmp_path):
    """What each of many runners runs (``converge --output json up --parallel N``) starts
    without click; the machines come up as through the click group."""
    (tmp_path / "cluster.yml").write_text('driver: "fake:./cloud"\nmachines:\n  web:\n'
                                          "    count: 3\n")
    out = main_in_fresh_interpreter(tmp_path, ["--output", "json", "up", "--parallel", "2"],
                                     UP_NEVER_LOADS)
    *events, loaded = out.stdout.splitlines()
    assert loaded == "LOADED [] 0"
    summary = json.loads(events[-1])
    assert summary["event"] == "summary" and summary["ok"]
    assert {n: m["changes"] > 0 for n, m in summary["machines"].items()} == \
        {"web-1": True, "web-2": True, "web-3": True}


def test_the_click_group_prints_the_same_help_and_lists_every_command():
    """``converge --help`` (no click) and the click group's own help (``-v --help`` goes
    through click) are one text; every command has its summary there."""
    from provisioning.cli.main import COMMANDS, SUMMARIES

    env = dict(os.environ, COLUMNS="90")
    fast = subprocess.run([CONVERGE, "--help"], capture_output=True, text=True, env=env)
    slow = subprocess.run([CONVERGE, "-v", "--help"], capture_output=True, text=True, env=env)
    assert fast.returncode == slow.returncode == 0
    assert fast.stdout == slow.stdout
    assert set(SUMMARIES) == set(COMMANDS)
    assert all(f"\n  {name} " in fast.stdout for name in COMMANDS)
    assert all(max(map(len, out.splitlines())) <= 88 for out in (fast.stdout, slow.stdout))
    version = subprocess.run([CONVERGE, "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("converge, version ")


def test_help_summaries_match_each_commands_own_help():
    import click

    from provisioning.cli.main import COMMANDS, SUMMARIES, cli

    ctx = click.Context(cli)
    assert set(SUMMARIES) <= set(COMMANDS)
    for name, summary in SUMMARIES.items():
        command = cli.get_command(ctx, name)
        for limit in (45, 62, 82):
            assert click.Command(name, help=summary).get_short_help_str(limit) == \
                command.get_short_help_str(limit), f"SUMMARIES[{name!r}] differs from its help"


def test_json_events_one_per_line(example):
    result = converge("up", "web-1", "--output", "json", cwd=example)
    assert result.returncode == 0
    events = json_lines(result.stdout)
    assert {e["event"] for e in events} >= {"action", "progress", "result", "summary"}
    assert all(e["machine"] == "web-1" for e in events if e["event"] != "summary")
    assert events[-1]["machines"]["web-1"]["changes"] == sum(
        1 for e in events if e["event"] == "action")


def test_quiet_plain_output(example):
    result = converge("up", "-q", cwd=example)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    # server, motd, index.html, directory, script, command: six changes per machine
    assert sorted(lines[:2]) == ["[web-1] up: 6 changes", "[web-2] up: 6 changes"]
    assert lines[2:] == ["up: 2 machines, 2 ok, 0 failed; 12 changes"]
    assert result.stderr == ""


def test_live_display_on_a_terminal(example):
    controller, terminal = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100")
    env.pop("CONVERGE_LIVE", None)
    proc = subprocess.Popen([CONVERGE, "up"], cwd=example, stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env)
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(controller)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "\x1b[" in screen                       # a terminal display, not plain lines
    assert "✓" in screen and "web-1" in screen and "web-2" in screen
    assert "up: 2 machines, 2 ok, 0 failed" in screen


def test_drivers_list_and_describe():
    listing = converge("drivers", "--output", "json", cwd=".")
    assert listing.returncode == 0, listing.stderr
    drivers = {d["scheme"]: d["package"] for d in json.loads(listing.stdout)["drivers"]}
    assert drivers["fake"].startswith("provisioning") and "nspawn" in drivers
    text = converge("drivers", cwd=".")
    assert text.stdout.splitlines()[0].split()[:2] == ["SCHEME", "PACKAGE"]
    described = converge("drivers", "describe", "fake:/tmp/x", "--output", "json", cwd=".")
    info = json.loads(described.stdout)
    assert info["driver_url"] == "fake:/tmp/x"
    assert {f["name"] for f in info["machine_options"]} >= {"size", "image"}
    assert info["choices"]["sizes"] == ["small", "medium", "large"]
    human = converge("drivers", "describe", "fake:", cwd=".")
    assert "size: str (default 'small') one of: small, medium, large" in human.stdout


def test_ssh_refuses_machines_without_ssh(example):
    assert converge("up", "web-1", "-q", cwd=example).returncode == 0
    result = converge("ssh", "web-1", cwd=example)
    assert result.returncode == 1
    assert "not reached over SSH" in result.stderr and "Traceback" not in result.stderr


def test_ssh_command_line_pins_the_host_key(tmp_path):
    from provisioning.keys import generate_private_key
    from provisioning.machine.access import SSHAccess, ssh_argv, write_access

    key = generate_private_key(str(tmp_path / "k"))
    access = SSHAccess(name="web-1", host="198.18.0.5", port=22, username="root", key=key,
                       host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE",
                       proxy="ip netns exec m1 nc %h %p")
    directory = tmp_path / "d"
    argv = ssh_argv(access, write_access([access], str(directory)), ["uptime"])
    assert "StrictHostKeyChecking=yes" in argv and "HostKeyAlias=converge-web-1" in argv
    assert "ProxyCommand=ip netns exec m1 nc %h %p" in argv
    assert argv[-3:] == ["198.18.0.5", "--", "uptime"]
    known = (directory / "known_hosts").read_text()
    assert known == "converge-web-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE\n"
    assert oct((directory / "keys" / "web-1").stat().st_mode & 0o777) == "0o600"
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
