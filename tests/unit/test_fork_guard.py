"""The local transport never starts a child while it has a file open for writing, so a script
it has just written can be executed at once (no ``Text file busy``)."""

from __future__ import annotations

import os
import threading

from provisioning.transports.forkguard import ForkGuard
from provisioning.transports.local import LocalTransport


def test_no_child_starts_while_a_file_is_being_written() -> None:
    guard = ForkGuard()
    assert guard.can_start()
    with guard.writing():
        assert not guard.can_start()
        with guard.writing():  # writers share it
            assert not guard.can_start()
        assert not guard.can_start()
    assert guard.can_start()


def test_a_waiting_start_goes_before_new_writers() -> None:
    guard = ForkGuard()
    order: list[str] = []
    first_writer = guard.writing()
    first_writer.__enter__()
    started = threading.Thread(target=lambda: _hold(guard.starting(), order, "start"))
    started.start()
    with guard._changed:  # until the start is queued behind the first writer
        guard._changed.wait_for(lambda: guard._waiting_starts == 1)
    late = threading.Thread(target=lambda: _hold(guard.writing(), order, "late writer"))
    late.start()
    first_writer.__exit__(None, None, None)
    started.join()
    late.join()
    assert order == ["start", "late writer"]


def _hold(section, order: list[str], name: str) -> None:
    with section:
        order.append(name)


def test_scripts_written_and_run_at_once_from_many_threads(tmp_path) -> None:
    """Each thread writes its own script and executes it at once while the others start
    children: every run succeeds. (Before the guard, a child forked by one thread while
    another's script was open for writing made that script's exec fail now and then.)"""
    transport = LocalTransport(str(tmp_path))
    failures: list[str] = []
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        barrier.wait()
        for round_ in range(25):
            name = f"script-{index}-{round_}"
            transport.write_file(name, b"#!/bin/sh\necho ok\n", mode=0o700)
            result = transport.execute(f"./{name}")
            if result.exit_status != 0 or result.stdout != "ok\n":
                failures.append(f"{name}: {result.exit_status} {result.stderr.strip()}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len([n for n in os.listdir(tmp_path) if n.startswith("script-")]) == 200
