"""``provisioning.lazy``: the collector paused while a command starts, and back as it was;
``dataclasses`` with its ``inspect`` loaded on first use."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from provisioning.cli.start import dataclasses_with_inspect_on_use
from provisioning.lazy import collector_paused


def test_the_collector_is_paused_inside_and_back_after_even_on_an_error():
    assert gc.isenabled()
    with pytest.raises(KeyError):
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():  # nested: the outer one resumes it
                assert not gc.isenabled()
            assert not gc.isenabled()
            raise KeyError("x")
    assert gc.isenabled()


def test_a_collector_paused_before_stays_paused():
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_dataclasses_get_inspect_on_first_use_and_every_importer_gets_the_real_module():
    """In a fresh interpreter (as a command starts): ``inspect`` is not loaded by
    ``dataclasses``; a data class without a docstring still gets dataclass's own (which needs
    ``inspect``), and ``import inspect`` anywhere is the real module."""
    code = ("import sys\nfrom provisioning.cli.start import dataclasses_with_inspect_on_use\n"
            "dataclasses_with_inspect_on_use()\n"
            "print('LOADED', 'inspect' in sys.modules)\n"
            "import dataclasses\n"
            "@dataclasses.dataclass\nclass Point:\n    x: int\n    y: str = 'a'\n"
            "import inspect\n"
            "print('DOC', Point.__doc__)\n"
            "print('REAL', type(inspect).__name__, dataclasses.inspect is inspect,"
            " sys.modules['inspect'] is inspect)\n")
    out = _lines_printed_by(code)
    assert out == ["LOADED False", "DOC Point(x: int, y: str = 'a')", "REAL module True True"]


def test_dataclasses_with_inspect_on_use_leaves_a_loaded_inspect_alone():
    import dataclasses
    import inspect

    dataclasses_with_inspect_on_use()
    assert sys.modules["inspect"] is inspect and dataclasses.inspect is inspect


def test_a_start_is_frozen_only_in_a_process_the_command_owns():
    """``converge`` (the console script) freezes what its start made; a program running a
    command in-process (``main(argv)``, as the tests do) keeps collecting all of its objects."""
    code = ("import gc, sys\nfrom provisioning import lazy\n"
            "with lazy.collector_paused():\n    kept = [[] for _ in range(100)]\n"
            "print('IN-PROCESS', gc.get_freeze_count())\n"
            "lazy.own_the_process()\n"
            "with lazy.collector_paused():\n    kept = [[] for _ in range(100)]\n"
            "print('OWNED', gc.get_freeze_count() >= 100, gc.isenabled())\n")
    out = _lines_printed_by(code)
    assert out == ["IN-PROCESS 0", "OWNED True True"]
    assert gc.get_freeze_count() == 0  # this test process: nothing frozen


def _lines_printed_by(code: str) -> list[str]:
    """What ``code`` prints, run in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.splitlines()
