"""Fixtures shared by every test area: a real SQLite store and a recording action handler.
Tests run the ``converge`` command through ``tests/cli_runner.py`` (one way for all)."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(tmp_path):
    """A real SQLite state store in the test's directory."""
    from provisioning.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "state.db")
    yield store
    store.close()


@pytest.fixture
def handler():
    """An action handler that keeps every event for assertions."""
    from provisioning.actions import RecordingActionHandler

    return RecordingActionHandler()
