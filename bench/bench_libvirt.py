#!/usr/bin/env python3
"""Benchmark of the libvirt: driver: base disk build, overlay clone, boot to SSH for 1 and N
machines, memory per machine.

    sudo python3 bench/bench_libvirt.py [--parallel 4] [--build] [--no-write]

Every boot figure is wall time through the public API (a real SQLite store; "ready" means a
real SSH login succeeded). Uses the running libvirt daemon, or starts one in a private network
namespace and stops it at the end (provisioning.testing.libvirtd). ``--build`` builds the base
disk into a fresh temporary cache (the debootstrap root is reused from the shared cache, as in
CI); otherwise the build time recorded when the cached disk was built is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from provisioning.config import Config  # noqa: E402
from provisioning.lifecycle import Provisioner  # noqa: E402
from provisioning.registry import driver_for_url  # noqa: E402
from provisioning.store.sqlite import SQLiteStore  # noqa: E402

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
SECTION = "## libvirt machines (TCG)"
URL = "libvirt:qemu:///system"


def memory_of(domain: str) -> tuple[int, int]:
    """(RSS MiB, PSS MiB) of the domain's qemu process."""
    with open(f"/run/libvirt/qemu/{domain}.pid", encoding="ascii") as handle:
        pid = handle.read().strip()
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) // 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) // 1024
    return rss, pss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--build", action="store_true", help="time a fresh base disk build")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "RESULTS.md"))
    args = parser.parse_args()

    from provisioning.drivers.libvirt_host import image
    from provisioning.testing.libvirtd import LibvirtDaemons

    figures: dict[str, str] = {}
    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix="bench-libvirt-")
    cache = DEFAULT_CACHE
    if args.build:
        cache = os.path.join(work, "images")
        os.makedirs(cache)
        os.symlink(os.path.join(DEFAULT_CACHE, "debian-bookworm"),
                   os.path.join(cache, "debian-bookworm"))
        open(os.path.join(cache, "debian-bookworm.lock"), "w").close()
    start = time.perf_counter()
    base = image.ensure_base(image.resolve_base("debian:bookworm", cache), rootfs_cache=cache,
                             report=print)
    built = base.info().get("seconds", {})
    figures["base disk build (debian:bookworm, debootstrap root cached)"] = (
        f"{built.get('total', time.perf_counter() - start):.0f} s (kernel + initramfs "
        f"{built.get('kernel', 0):.0f} s, ext4 + qcow2 {built.get('disk', 0):.0f} s)")
    clone = os.path.join(work, "clone.qcow2")
    start = time.perf_counter()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.disk, "-F", "qcow2",
                    clone], check=True)
    figures["overlay clone (qemu-img create -b)"] = f"{(time.perf_counter() - start) * 1000:.0f} ms"

    daemons = LibvirtDaemons().start()
    config = Config({"driver_options": {URL: {"directory": os.path.join(work, "vms"),
                                              "image_cache": cache}}}, base_dir=work)
    driver = driver_for_url(URL, config)
    store = SQLiteStore(os.path.join(work, "state.db"))
    provisioner = Provisioner(store, config=config, lock_wait=60)
    try:
        start = time.perf_counter()
        machine = provisioner.up(driver, "one", {})
        figures["1 machine: allocate + boot to SSH login"] = f"{time.perf_counter() - start:.0f} s"
        machine.disconnect()
        names = [f"par-{i}" for i in range(1, args.parallel + 1)]
        start = time.perf_counter()
        done = provisioner.run_many("up", [(driver, n, {}) for n in names])
        assert done.ok, done.failures
        figures[f"{args.parallel} machines in parallel: all at SSH"] = \
            f"{time.perf_counter() - start:.0f} s"
        time.sleep(5)
        mems = [memory_of(provisioner.spec(n).reference["domain"]) for n in ["one", *names]]
        figures["memory per machine (qemu RSS / PSS, 512 MiB guest, tb-cache 128 MiB)"] = (
            f"{sum(m[0] for m in mems) // len(mems)} MiB / {sum(m[1] for m in mems) // len(mems)}"
            " MiB")
        for outcome in done.values():
            outcome.value.disconnect()
        start = time.perf_counter()
        provisioner.stop("one", {}, driver)
        figures["stop (ACPI poweroff)"] = f"{time.perf_counter() - start:.1f} s"
    finally:
        for spec in store.list("machine"):
            provisioner.destroy(spec.name, {}, driver)
        store.close()
        daemons.stop()
    load_after = os.getloadavg()
    lines = [SECTION, "",
             f"`sudo python3 bench/bench_libvirt.py{' --build' if args.build else ''}` on "
             f"{os.cpu_count()} CPUs (kernel {platform.release()}), KVM unusable here (PVM), so "
             f"TCG; load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
             f"(other jobs shared the host). Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", "| what | figure |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in figures.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with open(args.results, encoding="utf-8") as handle:
            current = handle.read()
        at = current.find(SECTION + "\n")
        if at < 0:
            current = current.rstrip("\n") + "\n\n" + text
        else:
            end = current.find("\n## ", at + len(SECTION))
            current = current[:at] + text + ("" if end < 0 else current[end:])
        with open(args.results, "w", encoding="utf-8") as handle:
            handle.write(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
