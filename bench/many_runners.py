"""Many runners on one cluster: wall time of ``converge up`` on N fake machines with 1, 2 and 4
runner processes sharing one PostgreSQL state (a throwaway server this script starts).

    python3 bench/many_runners.py [--machines 40] [--ready-delay 1.0] [--parallel 4] [--repeat 3]

Every run is checked: each machine created exactly once (the fake cloud's counter), every
state entry present, every runner exited 0. Prints a Markdown table (min / median / max).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from provisioning.drivers.fake import FakeWarehouse
from provisioning.store import open_store
from provisioning.testing.postgres import PostgresServer


def one_run(server: PostgresServer, runners: int, machines: int, delay: float,
            parallel: int) -> float:
    directory = tempfile.mkdtemp(prefix="bench-runners-")
    try:
        cluster = os.path.join(directory, "cluster.yml")
        with open(cluster, "w") as handle:
            handle.write(f"driver: fake:./cloud\nmachines:\n  node:\n    count: {machines}\n"
                         f"    machine_options: {{ready_delay: {delay}}}\n")
        url = server.new_database("bench")
        start = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "provisioning.cli.main", "-f", cluster,
                                   "--state", url, "up", "--parallel", str(parallel)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  cwd=directory) for _ in range(runners)]
        outputs = [p.communicate()[0] for p in procs]
        wall = time.monotonic() - start
        for proc, out in zip(procs, outputs):
            if proc.returncode != 0:
                raise SystemExit(f"a runner failed:\n{out}")
        creates = FakeWarehouse(os.path.join(directory, "cloud")).counters()["creates"]
        with open_store(url) as store:
            entries = len(store.list("machine"))
        if creates != machines or entries != machines:
            raise SystemExit(f"{runners} runners: {creates} creates, {entries} entries, "
                             f"expected {machines}")
        return wall
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=40)
    parser.add_argument("--ready-delay", type=float, default=1.0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runners", default="1,2,4")
    args = parser.parse_args()
    with PostgresServer() as server:
        print(f"{args.machines} fake machines, ready_delay {args.ready_delay} s, "
              f"--parallel {args.parallel} per runner, {args.repeat} runs each; "
              f"load average {os.getloadavg()[0]:.1f} at start\n")
        print("| runners | min | median | max | ideal (sleep only) |")
        print("|---|---|---|---|---|")
        for runners in [int(r) for r in args.runners.split(",")]:
            walls = [one_run(server, runners, args.machines, args.ready_delay, args.parallel)
                     for _ in range(args.repeat)]
            ideal = args.machines * args.ready_delay / (args.parallel * runners)
            print(f"| {runners} | {min(walls):.2f} s | {statistics.median(walls):.2f} s | "
                  f"{max(walls):.2f} s | {ideal:.2f} s |", flush=True)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
