"""CLI start-up: ``converge --help``, ``converge status`` and a no-change ``converge up`` of a
3-machine ``fake:`` cluster, each paired with a bare interpreter (``python3 -c pass``) run by
turns, so a machine whose speed drifts under load moves both alike.

    python3 bench/startup.py [--runs 20] [--instructions] [--first-claim]

Each run is a whole process: wall time from a monotonic clock around it, CPU time (user +
system) from ``wait4``. Prints the median of each and the median of the pairwise difference
(the command's cost over the interpreter), and how many modules the command imports beyond the
interpreter's own: a count that does not move with the host's load. The package is compiled first
(``compileall`` of the imported ``provisioning`` package, and of the installed libraries'
directory): with PYTHONDONTWRITEBYTECODE set, as on the machines here, an editable install would
otherwise compile every changed module again in each run, and that would be measured.

``--instructions`` also counts the instructions each command runs under valgrind (callgrind,
``PYTHONHASHSEED=0``): about 25 s per command, but the same count on a quiet and on a loaded
host, so two trees can be compared while other work runs.

``--first-claim`` counts (callgrind) what one of many runners spends before its first machine:
``converge -f cluster.yml --state postgresql://... --output json up --parallel 10`` of 400
``fake:`` machines on a throwaway PostgreSQL server (``provisioning.testing.postgres``), a fresh
database with the schema already made (another runner made it) for each run, stopped by
``bench/first_claim.py`` when it asks for its first claim (as ``bench/many_runners.py`` starts
its runners).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CONVERGE = shutil.which("converge") or os.path.join(os.path.dirname(sys.executable), "converge")
BARE = [sys.executable, "-c", "pass"]
#: the commands measured (label, arguments after ``converge``), run in the 3-machine cluster
COMMANDS = (("converge --help", ["--help"]),
            ("converge status (3 fake machines)", ["status"]),
            ("converge up (3 fake machines, no change)",
             ["--output", "json", "up", "--parallel", "10"]))
FIRST_CLAIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_claim.py")


def run(argv: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process, its output thrown away."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {cwd}")
    return wall, usage.ru_utime + usage.ru_stime


def modules_imported(argv: list[str], cwd: str) -> int:
    """Modules the command leaves in ``sys.modules`` that a bare interpreter does not (counted
    at exit, so modules imported by name through importlib count too)."""
    counter = ("import atexit, os, runpy, sys\n"
               "atexit.register(lambda: os.write(2, b'MODULES %d\\n' % len(sys.modules)))\n"
               "sys.argv = sys.argv[1:]\n"
               "if sys.argv: runpy.run_path(sys.argv[0], run_name='__main__')\n")

    def count(command: list[str]) -> int:
        done = subprocess.run([sys.executable, "-c", counter, *command], cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return int(done.stderr.rsplit("MODULES ", 1)[1].split()[0])
    return count(argv) - count([])


def instructions(argv: list[str], cwd: str) -> int:
    """Instructions one run executes, counted by valgrind's callgrind."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONHASHSEED="0"), check=True)
    return int(done.stderr.rsplit("Collected : ", 1)[1].split()[0])


def paired(argv: list[str], cwd: str, runs: int) -> dict[str, float]:
    run(argv, cwd), run(BARE, cwd)  # warm-up, not counted
    rows = [(run(argv, cwd), run(BARE, cwd)) for _ in range(runs)]
    median = statistics.median
    return {"wall": median(a[0] for a, _ in rows), "cpu": median(a[1] for a, _ in rows),
            "bare_wall": median(b[0] for _, b in rows), "bare_cpu": median(b[1] for _, b in rows),
            "over_wall": median(a[0] - b[0] for a, b in rows),
            "over_cpu": median(a[1] - b[1] for a, b in rows)}


def compile_package() -> None:
    """Write the .pyc of the package and the installed libraries the commands import (what the
    interpreter would cache itself without PYTHONDONTWRITEBYTECODE)."""
    found = subprocess.run([sys.executable, "-c", "import os, click, yaml, provisioning\n"
                            "print(os.path.dirname(provisioning.__file__))\n"
                            "print(os.path.dirname(os.path.dirname(click.__file__)))"],
                           capture_output=True, text=True, check=True,
                           cwd="/").stdout.split("\n")  # as the commands find them, not ./
    for directory in filter(None, found):
        compileall.compile_dir(directory, quiet=1)


def first_claim_instructions(runs: int) -> list[int]:
    """Instructions of ``runs`` runners, each the first of a fresh 400-machine run on its own
    database, until their first claim (``bench/first_claim.py``)."""
    from provisioning.store import open_store
    from provisioning.testing.postgres import PostgresServer

    directory = tempfile.mkdtemp(prefix="bench-first-claim-")
    try:
        with open(os.path.join(directory, "cluster.yml"), "w") as handle:
            handle.write("driver: fake:./cloud\nmachines:\n  node:\n    count: 400\n"
                         "    machine_options: {ready_delay: 0.5}\n")
        counts = []
        with PostgresServer() as server:
            for _ in range(runs):
                url = server.new_database("startup")
                open_store(url).close()  # the schema, as the first of the runners makes it
                counts.append(instructions([FIRST_CLAIM, "-f", "cluster.yml", "--state", url,
                                            "--output", "json", "up", "--parallel", "10"],
                                           directory))
        return counts
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions under valgrind (slow, load-independent)")
    parser.add_argument("--first-claim", action="store_true",
                        help="also count the instructions of a 400-machine runner on "
                             "PostgreSQL until its first claim (valgrind; starts a server)")
    args = parser.parse_args()
    compile_package()
    directory = tempfile.mkdtemp(prefix="bench-startup-")
    try:
        with open(os.path.join(directory, "cluster.yml"), "w") as handle:
            handle.write('driver: "fake:./cloud"\nmachines:\n  web:\n    count: 3\n')
        subprocess.run([CONVERGE, "up"], cwd=directory, check=True, stdout=subprocess.DEVNULL)
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
              f"{args.runs} pairs each\n")
        print("| command | wall median | CPU median | interpreter alone (wall / CPU) | "
              "over the interpreter (wall / CPU) | modules imported |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, given in COMMANDS:
            argv = [CONVERGE, *given]
            f = paired(argv, directory, args.runs)
            print(f"| `{label}` | {f['wall'] * 1000:.0f} ms | {f['cpu'] * 1000:.0f} ms | "
                  f"{f['bare_wall'] * 1000:.0f} / {f['bare_cpu'] * 1000:.0f} ms | "
                  f"{f['over_wall'] * 1000:.0f} / {f['over_cpu'] * 1000:.0f} ms | "
                  f"{modules_imported(argv, directory)} |", flush=True)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
        if args.instructions or args.first_claim:
            bare = instructions(["-c", "pass"], directory)
            print(f"\ninstructions (callgrind): interpreter alone {bare / 1e6:.1f} M")
        if args.instructions:
            for label, argv in (("import provisioning", ["-c", "import provisioning"]),
                                *((label, [CONVERGE, *given]) for label, given in COMMANDS)):
                count = instructions(argv, directory)
                print(f"- `{label}`: {count / 1e6:.1f} M, {(count - bare) / 1e6:.1f} M over the "
                      "interpreter", flush=True)
        if args.first_claim:
            counts = first_claim_instructions(3)
            print(f"- a runner of 400 fake machines on PostgreSQL until its first claim: "
                  f"{', '.join(f'{c / 1e6:.1f}' for c in counts)} M (3 runs), "
                  f"{(statistics.median(counts) - bare) / 1e6:.1f} M over the interpreter")
    finally:
        shutil.rmtree(directory, ignore_errors=True)

if __name__ == "__main__":
    main()
