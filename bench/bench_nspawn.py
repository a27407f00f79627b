#!/usr/bin/env python3
"""Benchmark of the nspawn: driver, image cached: one machine, 20 in a batch, destroy of 20.

    sudo python3 bench/bench_nspawn.py [--count 20] [--rounds 5] [--json out.json]

Every figure is wall time through the public API with a real SQLite state store, and "ready"
means a real SSH login succeeded (the transport's connection, which the first command reuses).
The image is built first if it is not cached (timed separately, not part of any figure).
Machines live in a temporary warehouse that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import publish, results_options, timed  # noqa: E402

from provisioning.actions import ActionHandler  # noqa: E402
from provisioning.config import Config  # noqa: E402
from provisioning.drivers.nspawn import IMAGE_CACHE_ENV  # noqa: E402
from provisioning.lifecycle import Provisioner  # noqa: E402
from provisioning.registry import driver_for_url  # noqa: E402
from provisioning.store.sqlite import SQLiteStore  # noqa: E402

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
SECTION = "## nspawn machines"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="machines in the batch")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of the single machine")
    parser.add_argument("--image-cache", default=os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE)
    results_options(parser, SECTION)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: nspawn machines need it", file=sys.stderr)
        return 2

    from provisioning.drivers.nspawn_host import image

    img = image.resolve_image(image.DEFAULT_IMAGE, args.image_cache)
    build_s = None
    if not img.ready:
        build_s, _ = timed(lambda: image.ensure_image(img, report=print))

    figures: dict[str, object] = {
        "host": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release(),
        "image_build_s": build_s, "loadavg_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="bench-nspawn-") as tmp:
        url = f"nspawn:{tmp}/warehouse"
        config = Config({"driver_options": {url: {"image_cache": args.image_cache}},
                         "parallel": args.count}, base_dir=tmp)
        driver = driver_for_url(url, config)
        store = SQLiteStore(os.path.join(tmp, "state.db"))
        provisioner = Provisioner(store, config=config, action_handler=ActionHandler(),
                                  parallel=args.count)
        try:
            # -- one machine: allocate + ready (SSH login done), then its first command --------
            singles, firsts, stops, restarts = [], [], [], []
            for round_ in range(args.rounds + 1):  # round 0 warms caches (key, page cache)
                name = f"single-{round_}"
                seconds, machine = timed(lambda: provisioner.up(driver, name))
                first, _ = timed(lambda: machine.execute_always("true"))
                machine.disconnect()
                stop_s, _ = timed(lambda: provisioner.stop(name, {}, driver))
                again, machine = timed(lambda: provisioner.ready(driver, name))
                machine.disconnect()
                provisioner.destroy(name, {}, driver)
                if round_:
                    singles.append(seconds)
                    firsts.append(first)
                    stops.append(stop_s)
                    restarts.append(again)
            figures["one_up_s"] = {"median": statistics.median(singles), "min": min(singles),
                                   "max": max(singles)}
            figures["one_first_command_s"] = statistics.median(firsts)
            figures["one_stop_s"] = statistics.median(stops)
            figures["one_ready_after_stop_s"] = statistics.median(restarts)

            # -- a batch through the Provisioner (what `converge up` does), then destroy -------
            names = [f"batch-{i}" for i in range(1, args.count + 1)]
            requests = [(driver, n, {}) for n in names]
            seconds, results = timed(lambda: provisioner.run_many("up", requests))
            assert results.ok, results.failures
            ok = all(o.value.execute_always("true").ok for o in results.values())
            for outcome in results.values():
                outcome.value.disconnect()
            figures["batch_up_s"] = seconds
            figures["batch_all_execute"] = ok
            seconds, results = timed(lambda: provisioner.run_many("destroy", requests))
            assert results.ok, results.failures
            figures["batch_destroy_s"] = seconds

            # -- the same with the default parallelism (10): two waves of machines ---------------
            default = Provisioner(store, config=config, action_handler=ActionHandler(), parallel=10)
            seconds, results = timed(lambda: default.run_many("up", requests))
            assert results.ok, results.failures
            for outcome in results.values():
                outcome.value.disconnect()
            figures["batch_up_parallel10_s"] = seconds
            results = default.run_many("destroy", requests)
            assert results.ok, results.failures

            # -- the same through the driver's batch methods (boot all, then wait) -------------
            specs = [(store.get_or_new("machine", f"drv-{i}"), {}) for i in range(1, args.count + 1)]
            handler = ActionHandler()
            alloc_s, allocated = timed(lambda: driver.allocate_machines(handler, specs))
            assert allocated.ok, allocated.failures
            ready_s, readied = timed(lambda: driver.ready_machines(handler, specs))
            assert readied.ok, readied.failures
            for outcome in readied.values():
                outcome.value.disconnect()
            figures["driver_batch_allocate_s"] = alloc_s
            figures["driver_batch_ready_s"] = ready_s
            destroy_s, destroyed = timed(lambda: driver.destroy_machines(handler, specs))
            assert destroyed.ok, destroyed.failures
            figures["driver_batch_destroy_s"] = destroy_s
        finally:
            for record in driver.warehouse.records():
                driver._remove({"machine_id": record.id, "cgroup": record.cgroup,
                                "netns": record.netns, "veth": record.veth})
            store.close()

    figures["loadavg_after"] = os.getloadavg()[0]
    publish(args, SECTION, section(figures, args), figures)
    return 0


def section(figures: dict, args) -> str:
    """The RESULTS.md section: the table, how it was made, on what."""
    one = figures["one_up_s"]
    n = args.count
    rows = [
        (f"one machine: allocate + ready (SSH login done), median of {args.rounds}",
         f"{one['median']:.2f} s (min {one['min']:.2f}, max {one['max']:.2f})", "< 1 s"),
        ("its first command, over the connection ready opened",
         f"{figures['one_first_command_s'] * 1000:.0f} ms", ""),
        ("stop (clean poweroff)", f"{figures['one_stop_s']:.2f} s", ""),
        ("ready again after stop (boot + SSH login)", f"{figures['one_ready_after_stop_s']:.2f} s", ""),
        (f"{n} machines up: `Provisioner.run_many('up')`, parallel {n}",
         f"{figures['batch_up_s']:.2f} s", "< 8 s"),
        (f"{n} machines up: `Provisioner.run_many('up')`, parallel 10 (the default)",
         f"{figures['batch_up_parallel10_s']:.2f} s", ""),
        (f"{n} machines: driver `allocate_machines` + `ready_machines`",
         f"{figures['driver_batch_allocate_s']:.2f} s + {figures['driver_batch_ready_s']:.2f} s", ""),
        (f"destroy {n}: `Provisioner.run_many('destroy')`", f"{figures['batch_destroy_s']:.2f} s", ""),
        (f"destroy {n}: driver `destroy_machines`", f"{figures['driver_batch_destroy_s']:.2f} s", ""),
    ]
    lines = [SECTION, "",
             f"`sudo python3 bench/bench_nspawn.py` on {figures['cpus']} CPUs (kernel "
             f"{figures['kernel']}), Debian bookworm image already cached, real SQLite state, "
             f"real SSH (paramiko through a socket opened in each machine's namespace). "
             f"Load average {figures['loadavg_before']:.1f} before and "
             f"{figures['loadavg_after']:.1f} after (other jobs shared the host). "
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| what | time | target |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {target} |" for what, value, target in rows]
    if figures.get("image_build_s"):
        lines += ["", f"Building the image (debootstrap, once) took {figures['image_build_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
