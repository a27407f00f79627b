#!/usr/bin/env python3
"""Benchmark of machine images on nspawn: build once, reuse, and boot many from the image.

    sudo python3 bench/bench_images.py [--count 10] [--json out.json]

An image with two packages and a file step (``images:`` in a cluster file, through the public
``Cluster`` API, real SQLite state, real SSH): the first ``up`` builds it, a second ``up``
reuses it (measured: no build), a changed step rebuilds it; then ``--count`` machines booted
from the image against as many converging the same steps from the plain Debian base. The
packages come from a local archive on loopback (``provisioning.testing.apt_archive``) through
the package proxy, so the figures do not depend on a mirror's speed: with real packages
(nginx is 1.5 MB with its dependencies) the gap only widens.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _common import publish, results_options  # noqa: E402

from provisioning.actions import RecordingActionHandler  # noqa: E402
from provisioning.cluster import Cluster  # noqa: E402
from provisioning.drivers.nspawn import IMAGE_CACHE_ENV  # noqa: E402
from provisioning.testing.apt_archive import build_archive, serve_archive, sources_line  # noqa: E402

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
SECTION = "## Machine images (nspawn)"
PACKAGES = ("provtest-hello", "provtest-extra")


def steps(archive: str, conf: str, indent: str) -> str:
    """The work both ways do: the archive's apt source, two packages, one file."""
    lines = ['- command: {run: "rm -f /etc/apt/sources.list.d/*", '
             'onlyif: "ls /etc/apt/sources.list.d/* >/dev/null 2>&1"}',
             '- file: {path: /etc/apt/sources.list, '
             f'content: "{sources_line(archive).strip()}\\n"}}',
             f"- package: [{', '.join(PACKAGES)}]",
             f'- file: {{path: /etc/provtest.conf, content: "{conf}\\n"}}']
    return "\n".join(indent + line for line in lines)


def cluster_text(url: str, cache: str, archive: str, count: int, *, image: bool,
                 conf: str = "v1") -> str:
    head = (f'driver: "{url}"\n'
            f'driver_options: {{"{url}": {{image_cache: {cache}, '
            f'package_archives: ["{archive}"]}}}}\n')
    if image:
        return head + (f"images:\n  app:\n    from: \"debian:bookworm\"\n    converge:\n"
                       f"{steps(archive, conf, '      ')}\n"
                       f"machines:\n  app:\n    count: {count}\n"
                       f"    machine_options: {{image: app}}\n")
    return head + (f"machines:\n  plain:\n    count: {count}\n    converge:\n"
                   f"{steps(archive, conf, '      ')}\n")


def up(path: str, parallel: int) -> tuple[float, RecordingActionHandler, Cluster]:
    handler = RecordingActionHandler()
    cluster = Cluster.load(path, parallel=parallel, listeners=[handler.events.append])
    start = time.perf_counter()
    results = cluster.up()
    seconds = time.perf_counter() - start
    assert results.ok, results.failures
    for name, outcome in results.items():
        assert outcome.value.execute_always("cat /etc/provtest.conf").ok, name
        outcome.value.disconnect()
    return seconds, handler, cluster


def builds(handler: RecordingActionHandler) -> int:
    return sum("building image" in e.description for e in handler.events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10, help="machines each way")
    parser.add_argument("--image-cache", default=os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE)
    results_options(parser, SECTION)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: nspawn machines need it", file=sys.stderr)
        return 2
    from provisioning.drivers.nspawn_host import image

    image.ensure_image(image.resolve_image(image.DEFAULT_IMAGE, args.image_cache), report=print)
    figures: dict[str, object] = {"cpus": os.cpu_count(), "kernel": platform.release(),
                                  "count": args.count, "loadavg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        build_archive(os.path.join(tmp, "archive"), {p: "1.0" for p in PACKAGES})
        with serve_archive(os.path.join(tmp, "archive")) as archive:
            with_image = os.path.join(tmp, "with-image", "cluster.yml")
            plain = os.path.join(tmp, "plain", "cluster.yml")
            for path, is_image in ((with_image, True), (plain, False)):
                os.makedirs(os.path.dirname(path))
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(cluster_text(f"nspawn:{os.path.dirname(path)}/warehouse",
                                              args.image_cache, archive, args.count,
                                              image=is_image))
            clusters = []
            try:
                # 1. first up: builds the image, then boots the machines from it
                seconds, handler, cluster = up(with_image, args.count)
                clusters.append(cluster)
                status = cluster.image_status()[0]
                figures.update(first_up_s=seconds, first_up_builds=builds(handler),
                               image_build_s=status["build_seconds"])
                # 2. second up: the image is reused (no build), the machines are up to date
                seconds, handler, cluster = up(with_image, args.count)
                clusters.append(cluster)
                figures.update(second_up_s=seconds, second_up_builds=builds(handler),
                               second_up_actions=len(handler.actions()))
                # 3. machines from the cached image, from scratch
                assert cluster.destroy().ok
                seconds, handler, cluster = up(with_image, args.count)
                clusters.append(cluster)
                figures.update(from_image_up_s=seconds, from_image_builds=builds(handler))
                # 4. the same steps converged on every machine from the plain base
                seconds, handler, cluster = up(plain, args.count)
                clusters.append(cluster)
                figures.update(plain_up_s=seconds)
                # 5. a changed step rebuilds the image
                with open(with_image, "w", encoding="utf-8") as handle:
                    handle.write(cluster_text(f"nspawn:{os.path.dirname(with_image)}/warehouse",
                                              args.image_cache, archive, args.count, image=True,
                                              conf="v2"))
                changed = Cluster.load(with_image)
                clusters.append(changed)
                assert changed.image_status()[0]["state"] == "outdated"
                start = time.perf_counter()
                changed.build_images()
                figures["rebuild_s"] = time.perf_counter() - start
            finally:
                for cluster in clusters:
                    try:
                        cluster.destroy()
                        cluster.destroy_images()
                    except Exception as exc:  # keep cleaning the others
                        print(f"cleanup: {exc}", file=sys.stderr)
                    cluster.close()
    figures["loadavg_after"] = os.getloadavg()[0]
    publish(args, SECTION, section(figures), figures)
    return 0


def section(f: dict) -> str:
    n = f["count"]
    rows = [
        (f"first `up`: build the image, then {n} machines from it",
         f"{f['first_up_s']:.1f} s (image build {f['image_build_s']:.1f} s)",
         f"{f['first_up_builds']} build"),
        ("second `up`: image reused, machines up to date", f"{f['second_up_s']:.1f} s",
         f"{f['second_up_builds']} builds, {f['second_up_actions']} changes"),
        (f"{n} machines from the cached image (after destroy)", f"{f['from_image_up_s']:.1f} s",
         f"{f['from_image_builds']} builds"),
        (f"{n} machines converging the same steps from the plain base",
         f"{f['plain_up_s']:.1f} s", ""),
        ("a changed file step: `image build` rebuilds it", f"{f['rebuild_s']:.1f} s", ""),
    ]
    lines = [SECTION, "",
             f"`sudo python3 bench/bench_images.py` on {f['cpus']} CPUs (kernel {f['kernel']}): "
             "an image with two packages and a file step (plus the apt source of the local "
             "archive the packages come from, through the package proxy), through the public "
             "`Cluster` API with real SQLite state and real SSH; Debian bookworm base already "
             f"cached. Load average {f['loadavg_before']:.1f} before and "
             f"{f['loadavg_after']:.1f} after (other jobs shared the host). "
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| what | time | builds / changes |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {extra} |" for what, value, extra in rows]
    speedup = f["plain_up_s"] / f["from_image_up_s"] if f["from_image_up_s"] else 0
    lines += ["", f"{n} machines from the image were up {speedup:.1f}x faster than {n} "
                  "converging the same steps from the plain base."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
