"""Fleet scale: our own overhead per machine, with the ``fake:`` driver (no added delay) so the
driver costs nothing, on SQLite and on PostgreSQL (a throwaway server on 127.0.0.1).

    python3 bench/scale.py [--sizes 100,1000,10000] [--stores sqlite,postgresql]
                           [--commands up,up-again,plan,status,destroy] [--parallel 10]

For each store and N it writes a cluster file of N machines (groups of at most 1,000), then runs
each command as its own ``converge`` process with its output to a file (not a terminal: one line
per machine) and reports the process's wall time and peak RSS (``wait4``). Every run is checked:
exit status 0, N servers created once, N machines saved, none left after ``destroy``.
Prints a Markdown table per store and the ratio time(largest N) / time(previous N).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

GROUP = 1000  # the cluster file's largest count


def cluster_text(machines: int) -> str:
    lines = ['driver: "fake:./cloud"', "machines:"]
    groups, rest = divmod(machines, GROUP)
    sizes = [GROUP] * groups + ([rest] if rest else [])
    for index, size in enumerate(sizes, 1):
        lines.append(f"  g{index}:\n    count: {size}")
    return "\n".join(lines) + "\n"


def timed(argv: list[str], cwd: str, log: str) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MB, exit status, CPU seconds) of one process; the CPU time
    (user + system, with the children it waited for) hardly depends on other load."""
    with open(log, "ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, proc.returncode, usage.ru_utime + usage.ru_stime


def has_command(name: str) -> bool:
    from provisioning.cli.main import COMMANDS

    return name in COMMANDS


def one_size(machines: int, state: str | None, commands: list[str], parallel: int,
             keep: str | None) -> dict[str, tuple[float, float, float]]:
    from provisioning.drivers.fake import FakeWarehouse
    from provisioning.store import open_store

    directory = tempfile.mkdtemp(prefix=f"bench-scale-{machines}-")
    try:
        path = os.path.join(directory, "cluster.yml")
        with open(path, "w") as handle:
            handle.write(cluster_text(machines))
        base = [sys.executable, "-m", "provisioning.cli.main", "-f", path,
                "--parallel", str(parallel)] + (["--state", state] if state else [])
        argv = {"up": ["up"], "up-again": ["up"], "plan": ["plan"], "status": ["status"],
                "destroy": ["destroy"]}
        log = os.path.join(directory, "output.log")
        figures = {}
        for command in commands:
            wall, rss, code, cpu = timed(base + argv[command], directory, log)
            if code != 0:
                with open(log, errors="replace") as handle:
                    tail = handle.read()[-3000:]
                raise SystemExit(f"{command} at N={machines} exited {code}:\n{tail}")
            figures[command] = (wall, rss, cpu)
            print(f"  N={machines} {command}: {wall:.2f} s, {rss:.0f} MB, CPU {cpu:.2f} s",
                  file=sys.stderr, flush=True)
            if command in ("up", "destroy"):
                counters = FakeWarehouse(os.path.join(directory, "cloud")).counters()
                with contextlib.closing(open_store(state, base_dir=directory)) as store:
                    saved = len(store.list("machine"))
                expected = (machines, 0, machines) if command == "up" else \
                    (machines, machines, 0)
                if (counters["creates"], counters["destroys"], saved) != expected:
                    raise SystemExit(f"{command} at N={machines}: creates/destroys/saved "
                                     f"{counters}, {saved}; expected {expected}")
        if keep:
            shutil.copy(log, os.path.join(keep, f"scale-{machines}.log"))
        return figures
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def table(store: str, sizes: list[int], commands: list[str],
          results: dict[int, dict[str, tuple[float, float, float]]]) -> str:
    head = "| command | " + " | ".join(f"N={n:,}" for n in sizes)
    if len(sizes) > 1:
        head += f" | t({sizes[-1]:,}) / t({sizes[-2]:,}) | CPU ratio"
    lines = [f"### {store}", "", "Wall time in seconds (peak RSS in MB; CPU seconds).", "",
             head + " |", "|---|" + "---:|" * (len(sizes) + (2 if len(sizes) > 1 else 0))]
    for command in commands:
        cells = [f"{results[n][command][0]:.2f} ({results[n][command][1]:.0f}; "
                 f"{results[n][command][2]:.1f})" for n in sizes]
        if len(sizes) > 1:
            last, before = results[sizes[-1]][command], results[sizes[-2]][command]
            cells.append(f"{last[0] / before[0]:.1f}")
            cells.append(f"{last[2] / before[2]:.1f}")
        lines.append(f"| {command} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--commands", default="up,up-again,plan,status,destroy")
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--keep-logs", metavar="DIR", help="copy each run's output here")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    commands = [c for c in args.commands.split(",") if c != "plan" or has_command("plan")]
    print(f"fake: driver, --parallel {args.parallel}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start; commands: {', '.join(commands)}\n", flush=True)
    started = time.monotonic()
    for store in args.stores.split(","):
        with contextlib.ExitStack() as stack:
            results = {}
            for machines in sizes:
                if store == "postgresql":
                    from provisioning.testing.postgres import PostgresServer

                    if "server" not in locals():
                        server = stack.enter_context(PostgresServer())
                    state = server.new_database("scale")
                else:
                    state = None  # the default: .provisioning/state.db beside the cluster file
                results[machines] = one_size(machines, state, commands, args.parallel,
                                             args.keep_logs)
            print(table(store, sizes, commands, results) + "\n", flush=True)
            locals().pop("server", None)
    print(f"load average {os.getloadavg()[0]:.1f} at the end; the whole run took "
          f"{(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
