"""Test package (lets test helpers be imported by dotted name, also from subprocesses)."""
