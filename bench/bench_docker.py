#!/usr/bin/env python3
"""Benchmark of the docker: driver on Docker and on Podman, beside nspawn: on the same host in the
same run: one machine up, stop, ready again, 20 machines up, destroy of 20.

    sudo python3 bench/bench_docker.py [--count 20] [--rounds 3] [--engines docker,podman,nspawn]

Every figure is wall time through the public API (``Provisioner``) with a real SQLite state
store, and "up" means a real SSH login succeeded with the pinned host key. The engines are
started by the script itself (``provisioning.testing.engines``: each in its own network
namespace, stopped by PID at the end); the Debian image is imported into each engine first
(timed separately, not part of any figure). Needs root (the engines and nspawn do).
"""

from __future__ import annotations

import argparse
import json
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
from provisioning.lifecycle import Provisioner  # noqa: E402
from provisioning.registry import driver_for_url  # noqa: E402
from provisioning.store.sqlite import SQLiteStore  # noqa: E402

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
SECTION = "## docker machines (Docker and Podman), beside nspawn"


def measure(url: str, driver_options: dict, count: int, rounds: int) -> dict:
    """The figures of one driver URL (one engine)."""
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        config = Config({"driver_options": {url: driver_options}, "parallel": count},
                        base_dir=tmp)
        driver = driver_for_url(url, config)
        store = SQLiteStore(os.path.join(tmp, "state.db"))
        provisioner = Provisioner(store, config=config, action_handler=ActionHandler(),
                                  parallel=count)
        try:
            ups, stops, agains = [], [], []
            for round_ in range(rounds + 1):  # round 0 warms caches (key, page cache)
                name = f"single-{round_}"
                seconds, machine = timed(lambda: provisioner.up(driver, name))
                machine.disconnect()
                stop_s, _ = timed(lambda: provisioner.stop(name, {}, driver))
                again, machine = timed(lambda: provisioner.ready(driver, name))
                machine.disconnect()
                provisioner.destroy(name, {}, driver)
                if round_:
                    ups.append(seconds)
                    stops.append(stop_s)
                    agains.append(again)
            figures["one_up_s"] = {"median": statistics.median(ups), "min": min(ups),
                                   "max": max(ups)}
            figures["one_stop_s"] = statistics.median(stops)
            figures["one_ready_after_stop_s"] = statistics.median(agains)

            requests = [(driver, f"batch-{i}", {}) for i in range(1, count + 1)]
            seconds, results = timed(lambda: provisioner.run_many("up", requests))
            assert results.ok, results.failures
            assert all(o.value.execute_always("true").ok for o in results.values())
            for outcome in results.values():
                outcome.value.disconnect()
            figures["batch_up_s"] = seconds
            seconds, results = timed(lambda: provisioner.run_many("destroy", requests))
            assert results.ok, results.failures
            figures["batch_destroy_s"] = seconds
        finally:
            for spec in store.list("machine"):
                try:
                    Provisioner(store, config=config).destroy(spec.name, {}, driver)
                except Exception as exc:  # keep cleaning the others
                    print(f"cleanup of {spec.name} failed: {exc}", file=sys.stderr)
            store.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="machines in the batch")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the single machine")
    parser.add_argument("--engines", default="docker,podman,nspawn")
    parser.add_argument("--image-cache", default=os.environ.get(
        "PROVISIONING_NSPAWN_IMAGE_CACHE") or DEFAULT_CACHE)
    results_options(parser, SECTION)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the engines this starts (and nspawn machines) need it", file=sys.stderr)
        return 2
    os.environ["PROVISIONING_NSPAWN_IMAGE_CACHE"] = args.image_cache

    from provisioning.drivers.docker_engine import image
    from provisioning.testing.engines import DockerEngine, PodmanService

    figures: dict = {"host": platform.node(), "cpus": os.cpu_count(),
                     "kernel": platform.release(), "loadavg_before": os.getloadavg()[0],
                     "engines": {}}
    for kind in args.engines.split(","):
        if kind == "nspawn":
            with tempfile.TemporaryDirectory(prefix="bench-nspawn-") as tmp:
                url = f"nspawn:{tmp}/warehouse"
                figures["engines"][kind] = measure(url, {"image_cache": args.image_cache},
                                                   args.count, args.rounds)
            continue
        engine = (DockerEngine() if kind == "docker" else PodmanService()).start()
        try:
            client = engine.client()
            import_s, _ = timed(lambda: image.ensure_image(
                client, "debian:bookworm", image_cache=args.image_cache, mirror=None,
                pull=False, report=lambda text: None))
            version = client.version().get("Version", "?")
            client.close()
            options = {**engine.driver_options, "image_cache": args.image_cache, "pull": False}
            result = measure(engine.driver_url, options, args.count, args.rounds)
            result.update(image_import_s=import_s, version=version)
            figures["engines"][kind] = result
        finally:
            engine.stop()
        print(kind, json.dumps(figures["engines"][kind]), flush=True)
    figures["loadavg_after"] = os.getloadavg()[0]
    publish(args, SECTION, section(figures, args), figures)
    return 0


def section(figures: dict, args) -> str:
    engines = figures["engines"]
    names = {"docker": "docker: on Docker {v}", "podman": "docker: on Podman {v}",
             "nspawn": "nspawn:"}
    kinds = [k for k in ("docker", "podman", "nspawn") if k in engines]
    header = [names[k].format(v=engines[k].get("version", "")) for k in kinds]

    def row(what: str, cell) -> str:
        return f"| {what} | " + " | ".join(cell(engines[k]) for k in kinds) + " |"
    n = args.count
    lines = [SECTION, "",
             f"`sudo python3 bench/bench_docker.py --count {n} --rounds {args.rounds}` on "
             f"{figures['cpus']} CPUs (kernel {figures['kernel']}): the script starts its own "
             "dockerd (with its containerd) and Podman API service, each in a network namespace "
             "of its own; machines are Debian bookworm containers running systemd and sshd "
             "(image imported from the debootstrapped root nspawn uses); real SQLite state, "
             "real SSH with the pinned host key (published on the engine's loopback). Load "
             f"average {figures['loadavg_before']:.1f} before and "
             f"{figures['loadavg_after']:.1f} after (other jobs shared the host). Measured "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| what | " + " | ".join(header) + " |", "|---|" + "---|" * len(kinds),
             row(f"one machine up (allocate + ready, SSH login done), median of {args.rounds}",
                 lambda f: f"{f['one_up_s']['median']:.2f} s ({f['one_up_s']['min']:.2f}-"
                           f"{f['one_up_s']['max']:.2f})"),
             row("stop (clean poweroff)", lambda f: f"{f['one_stop_s']:.2f} s"),
             row("ready again after stop", lambda f: f"{f['one_ready_after_stop_s']:.2f} s"),
             row(f"{n} machines up: `Provisioner.run_many('up')`, parallel {n}",
                 lambda f: f"{f['batch_up_s']:.2f} s"),
             row(f"destroy {n}", lambda f: f"{f['batch_destroy_s']:.2f} s"),
             row("image into the engine (once, not in the figures above)",
                 lambda f: f"{f['image_import_s']:.1f} s" if "image_import_s" in f else "-")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
