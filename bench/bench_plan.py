#!/usr/bin/env python3
"""Benchmark of ``converge plan`` on unchanged nspawn machines (goal: 50 machines under 3 s).

    sudo python3 bench/bench_plan.py [--count 50] [--rounds 3]

Brings ``--count`` machines (one file step each) up once through ``Cluster.up``, waits until
each has finished booting (``systemctl is-system-running --wait``), then times
``converge plan`` (the real console script, refreshed: every machine is asked of the driver and
its steps are checked over its connection) ``--rounds`` times, then destroys them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from provisioning.cluster import Cluster  # noqa: E402

DEFAULT_CACHE = "/var/cache/provisioning-test-images"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-cache", default=DEFAULT_CACHE)
    args = parser.parse_args()
    converge = os.path.join(os.path.dirname(sys.executable), "converge")
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        path = os.path.join(tmp, "cluster.yml")
        with open(path, "w") as handle:
            handle.write(f'name: bench\ndriver: "nspawn:{tmp}/warehouse"\n'
                         f'driver_options: {{"nspawn:{tmp}/warehouse": '
                         f'{{image_cache: "{args.image_cache}"}}}}\n'
                         f"machines:\n  web:\n    count: {args.count}\n    converge:\n"
                         '      - file: {path: /etc/motd, content: "bench\\n", mode: "0644"}\n')
        with Cluster.load(path, parallel=args.count) as cluster:
            start = time.perf_counter()
            results = cluster.up()
            up_s = time.perf_counter() - start
            try:
                results.raise_first()
                for outcome in results.values():  # timed on settled machines, not booting ones
                    outcome.value.execute_always("systemctl is-system-running --wait",
                                                 check=False, timeout=300)
                    outcome.value.disconnect()
                times, cpu, loads = [], [], []
                for _ in range(args.rounds):
                    used = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    done = subprocess.run([converge, "-f", path, "--parallel", str(args.count),
                                           "plan"], capture_output=True, text=True)
                    times.append(time.perf_counter() - start)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu.append(after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime)
                    loads.append(os.getloadavg()[0])
                    assert done.returncode == 0, done.stderr
                    assert f"plan: {args.count} unchanged" in done.stdout, done.stdout[-500:]
            finally:
                cluster.destroy()
    print(f"up of {args.count} nspawn machines: {up_s:.1f} s")
    print(f"converge plan of {args.count} unchanged machines: median "
          f"{statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}); "
          f"CPU of the plan process median {statistics.median(cpu):.2f} s; load average "
          f"{', '.join(f'{x:.1f}' for x in loads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
