"""Many runners on one cluster: wall time of ``converge up`` on N fake machines with 1, 2, 4...
runner processes sharing one PostgreSQL state (a throwaway server this script starts), and
trials where one runner is killed (SIGKILL) at a random moment.

    python3 bench/many_runners.py [--machines 40] [--ready-delay 1.0] [--parallel 4]
                                  [--repeat 3] [--runners 1,2,4] [--lease 10]
                                  [--kill-trials 10] [--kill-runners 4] [--seed S]

Every run is checked: each machine created exactly once (the fake cloud's counter), every state
entry present and up without error, every runner exited 0 and its JSON summary reports every
machine ok. Prints a Markdown table (min / median / max), with the CPU time of all runner
processes (user + system, median: it hardly depends on the other load of the host, unlike the
wall time), the claim round trips of all runners (median) and the most worker-seconds one
runner's workers waited for a claimed machine while the run still had work (each runner's last
progress event counts them; timing-free evidence of how well claiming ahead keeps the workers
busy on a loaded host).

``--phases`` also prints, for each run, where its wall time went, read from the runners' JSON
event timestamps and their exit times (seconds after the runners were started): when the first
and the last runner shared the run (process start, imports, cluster file, store, join), the
machines each runner did (min-max), the span of the busiest runner from sharing to its last
machine's result (``--parallel`` workers doing one round per ready delay), the run's last
result, the last process exit, and each runner's CPU (min-max).

A kill trial starts ``--kill-runners`` runners, waits until a random number of machines (1 to
N - 1) is done, kills one runner chosen at random, then starts one more runner (runners join
and leave at any time). It checks what every run is checked for, with the killed runner left
out: nothing created twice, nothing lost, every other report correct. ``--lease`` is the lock
and claim lease (``PROVISIONING_LOCK_TTL``): how long a runner that lost its network (rather
than its process) keeps its machines; a killed runner's database session ends with it, so its
machines come back at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psycopg2.errors

from provisioning.drivers.fake import FakeWarehouse
from provisioning.store import open_store
from provisioning.testing.postgres import PostgresServer, query


def write_cluster(directory: str, machines: int, delay: float) -> str:
    cluster = os.path.join(directory, "cluster.yml")
    with open(cluster, "w") as handle:
        handle.write(f"driver: fake:./cloud\nmachines:\n  node:\n    count: {machines}\n"
                     f"    machine_options: {{ready_delay: {delay}}}\n")
    return cluster


def start_runner(cluster: str, url: str, parallel: int, lease: float) -> subprocess.Popen:
    """A runner process whose output goes to files beside the cluster (pipes read one runner
    at a time would fill up and stall the others, which wait for its machines)."""
    env = dict(os.environ, PROVISIONING_LOCK_TTL=str(lease))
    directory = os.path.dirname(cluster)
    index = len([n for n in os.listdir(directory) if n.startswith("runner-")])
    out = open(os.path.join(directory, f"runner-{index}.out"), "w+")
    err = open(os.path.join(directory, f"runner-{index}.err"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "provisioning.cli.main", "-f", cluster,
                             "--state", url, "--output", "json", "up", "--parallel",
                             str(parallel)], stdout=out, stderr=err, text=True, cwd=directory,
                            env=env)
    proc.logs = (out, err)  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    """Wait for the runner; its (stdout, stderr)."""
    if proc.returncode is None:
        proc.wait()
    texts = []
    for handle in proc.logs:  # type: ignore[attr-defined]
        handle.seek(0)
        texts.append(handle.read())
        handle.close()
    return texts[0], texts[1]


def report_problem(proc: subprocess.Popen, out: str, err: str, machines: int) -> str | None:
    """None when the runner exited 0 with a JSON summary of every machine ok, else why not."""
    if proc.returncode != 0:
        return f"runner pid {proc.pid} exited {proc.returncode}:\n{out[-3000:]}\n{err[-3000:]}"
    summary = next((e for e in map(json.loads, filter(None, out.splitlines()))
                    if e.get("event") == "summary"), None)
    expected = {f"node-{i}" for i in range(1, machines + 1)}
    if summary is None or not summary["ok"] or set(summary["machines"]) != expected or \
            not all(m["ok"] for m in summary["machines"].values()):
        return f"runner pid {proc.pid}: wrong report {summary}"
    return None


def runner_counts(outputs: list[tuple[str, str]]) -> tuple[int, float]:
    """(claim round trips of all runners, the most worker-seconds one runner's workers spent
    waiting for a claimed machine while the run still had work), from each runner's last
    progress event."""
    claims, starved = 0, 0.0
    for out, _err in outputs:
        for event in map(json.loads, filter(None, out.splitlines())):
            data = event.get("data") or {}
            if event.get("event") == "progress" and "claims" in data:
                claims += data["claims"]
                starved = max(starved, data["starved"])
    return claims, starved


def cloud_counts(directory: str, url: str, machines: int) -> tuple[int, int]:
    """(duplicates: servers created more than once, lost: machines not saved as up)."""
    creates = FakeWarehouse(os.path.join(directory, "cloud")).counters()["creates"]
    with open_store(url) as store:
        entries = store.list("machine")
    good = sum(1 for e in entries if e.last_action == "up" and e.last_error is None)
    return creates - machines, machines - good


def reap(procs: list[subprocess.Popen]) -> list[tuple[float, float]]:
    """Wait for every runner at once: (when it ended, by ``time.time()``; its CPU seconds)."""
    ends: list[tuple[float, float]] = [(0.0, 0.0)] * len(procs)

    def wait(index: int, proc: subprocess.Popen) -> None:
        _pid, status, usage = os.wait4(proc.pid, 0)
        ends[index] = (time.time(), usage.ru_utime + usage.ru_stime)
        proc.returncode = os.waitstatus_to_exitcode(status)
    threads = [threading.Thread(target=wait, args=item) for item in enumerate(procs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ends


def phases(outputs: list[tuple[str, str]], ends: list[tuple[float, float]],
           start: float) -> dict[str, Any]:
    """Where one run's wall time went, from each runner's event timestamps (``start``: when
    the runners were started, by ``time.time()``)."""
    shares, mine, spans, lasts = [], [], [], []
    for out, _err in outputs:
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        share = next(e["time"] for e in events if e["event"] == "progress"
                     and (e.get("data") or {}).get("run") and "sharing" in e["description"])
        own = [e["time"] for e in events if e["event"] == "result"
               and not e["description"].startswith("done by another runner")]
        shares.append(share - start)
        mine.append(len(own))
        spans.append(max(own) - share if own else 0.0)
        lasts.append(max(own, default=share) - start)
    return {"shared": (min(shares), max(shares)), "machines": (min(mine), max(mine)),
            "busiest": max(spans), "last_result": max(lasts),
            "exit": max(end for end, _ in ends) - start,
            "cpu": (min(c for _, c in ends), max(c for _, c in ends))}


def one_run(server: PostgresServer, runners: int, machines: int, delay: float,
            parallel: int, lease: float) -> tuple[float, float, int, float, dict[str, Any]]:
    """(wall seconds, CPU seconds of the runners, claim round trips, most worker-seconds
    waiting for a claim, the run's phases)."""
    directory = tempfile.mkdtemp(prefix="bench-runners-")
    try:
        cluster = write_cluster(directory, machines, delay)
        url = server.new_database("bench")
        start, began = time.monotonic(), time.time()
        procs = [start_runner(cluster, url, parallel, lease) for _ in range(runners)]
        ends = reap(procs)
        wall = time.monotonic() - start
        cpu = sum(c for _, c in ends)  # the runners only: the server is still running
        outputs = [finish(p) for p in procs]
        problems = [report_problem(p, out, err, machines) for p, (out, err) in zip(procs, outputs)]
        duplicates, lost = cloud_counts(directory, url, machines)
        if any(problems) or duplicates or lost:
            raise SystemExit(f"{runners} runners: {duplicates} duplicates, {lost} lost; "
                             f"{[p for p in problems if p]}")
        return (wall, cpu, *runner_counts(outputs), phases(outputs, ends, began))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def done_count(url: str) -> int:
    """Machines of the open run marked done (0 before the first runner opened it)."""
    try:
        return int(query(url, "SELECT count(*) FROM provisioning_work WHERE state = 'done'")[0][0])
    except psycopg2.errors.UndefinedTable:
        return 0


def kill_trial(server: PostgresServer, rng: random.Random, runners: int, machines: int,
               delay: float, parallel: int, lease: float) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="bench-kill-")
    try:
        cluster = write_cluster(directory, machines, delay)
        url = server.new_database("kill")
        start = time.monotonic()
        procs = [start_runner(cluster, url, parallel, lease) for _ in range(runners)]
        moment = rng.randint(1, machines - 1)
        while done_count(url) < moment:  # the random moment: this many machines done
            if any(p.poll() is not None for p in procs):
                break  # a runner ended early: checked below
            time.sleep(0.02)
        victim = rng.randrange(runners)
        procs[victim].send_signal(signal.SIGKILL)
        at_kill = done_count(url)
        late = start_runner(cluster, url, parallel, lease)  # a runner joining mid-run
        outputs = [finish(p) for p in procs + [late]]
        wall = time.monotonic() - start
        problems: list[str | None] = []
        for index, (proc, (out, err)) in enumerate(zip(procs + [late], outputs)):
            if index == victim:
                if proc.returncode != -signal.SIGKILL:
                    problems.append(f"the victim ended before the kill: {out[-2000:]}{err}")
                continue
            problems.append(report_problem(proc, out, err, machines))
        duplicates, lost = cloud_counts(directory, url, machines)
        return {"killed_at": at_kill, "wall": wall, "duplicates": duplicates, "lost": lost,
                "reports": f"{sum(1 for p in problems if p is None)} of {len(problems)}",
                "problems": [p for p in problems if p]}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def print_phases(timelines: list[tuple[int, dict[str, Any]]], machines: int, parallel: int,
                 delay: float) -> None:
    """One row per run: where its wall time went (seconds after the runners were started)."""
    print("\nPhases of each run (seconds after the runners were started; rounds: the busiest "
          f"runner's machines / {parallel} workers, each round one ready delay of {delay:g} s)\n")
    print("| runners | first shared | last shared | machines per runner | busiest: sharing to "
          "its last result (rounds) | last result | last exit | CPU per runner |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for runners, got in timelines:
        low, high = got["machines"]
        print(f"| {runners} | {got['shared'][0]:.2f} s | {got['shared'][1]:.2f} s | {low}-{high} | "
              f"{got['busiest']:.2f} s ({-(-high // parallel)}) | {got['last_result']:.2f} s | "
              f"{got['exit']:.2f} s | {got['cpu'][0]:.2f}-{got['cpu'][1]:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=40)
    parser.add_argument("--ready-delay", type=float, default=1.0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runners", default="1,2,4", help="runner counts to time ('' for none)")
    parser.add_argument("--lease", type=float, default=10.0,
                        help="lock and claim lease in seconds (PROVISIONING_LOCK_TTL)")
    parser.add_argument("--kill-trials", type=int, default=0)
    parser.add_argument("--kill-runners", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--phases", action="store_true",
                        help="also print where each run's wall time went (event timestamps)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with PostgresServer() as server:
        print(f"{args.machines} fake machines, ready_delay {args.ready_delay} s, "
              f"--parallel {args.parallel} per runner, lease {args.lease:g} s; load average "
              f"{os.getloadavg()[0]:.1f} at start\n", flush=True)
        counts = [int(r) for r in args.runners.split(",") if r]
        if counts:
            print(f"{args.repeat} runs each\n")
            print(f"| runners | min | median | max | speed-up (median vs {counts[0]}) | "
                  "ideal (sleep only) | runners' CPU | claims | waiting for a claim |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        base = None
        timelines: list[tuple[int, dict[str, Any]]] = []
        for runners in counts:
            runs = [one_run(server, runners, args.machines, args.ready_delay, args.parallel,
                            args.lease) for _ in range(args.repeat)]
            walls = [run[0] for run in runs]
            median = statistics.median(walls)
            cpu = statistics.median(run[1] for run in runs)
            claims = statistics.median(run[2] for run in runs)
            starved = max(run[3] for run in runs)
            timelines.extend((runners, run[4]) for run in runs)
            base = base or median
            ideal = args.machines * args.ready_delay / (args.parallel * runners)
            print(f"| {runners} | {min(walls):.2f} s | {median:.2f} s | {max(walls):.2f} s | "
                  f"{base / median:.2f}x | {ideal:.2f} s | {cpu:.2f} s | {claims:g} | "
                  f"{starved:.1f} ws |",
                  flush=True)
        if args.phases and timelines:
            print_phases(timelines, args.machines, args.parallel, args.ready_delay)
        failed = []
        if args.kill_trials:
            rng = random.Random(seed)
            print(f"\n{args.kill_trials} kill trials (seed {seed}): {args.kill_runners} runners, "
                  "one killed with SIGKILL once a random number of machines is done, one more "
                  "started right after\n")
            print("| trial | machines done at the kill | wall | duplicates | lost | "
                  "correct reports (killed one left out) |")
            print("|---:|---:|---:|---:|---:|---|")
            for trial in range(1, args.kill_trials + 1):
                got = kill_trial(server, rng, args.kill_runners, args.machines,
                                 args.ready_delay, args.parallel, args.lease)
                print(f"| {trial} | {got['killed_at']} | {got['wall']:.2f} s | "
                      f"{got['duplicates']} | {got['lost']} | {got['reports']} |", flush=True)
                if got["problems"] or got["duplicates"] or got["lost"]:
                    failed.append((trial, got["problems"]))
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if failed:
        raise SystemExit(f"kill trials failed: {failed}")


if __name__ == "__main__":
    main()
