"""``provisioning.lazy``: the collector paused while a command starts, and back as it was."""

from __future__ import annotations

import gc

import pytest

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
