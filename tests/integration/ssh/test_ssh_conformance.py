"""The ssh: driver against the conformance suite, with a real sshd per test (a non-root login
with sudo, so relative paths land in a throwaway home)."""

from __future__ import annotations

import os

import pytest

from provisioning.store.sqlite import SQLiteStore
from provisioning.testing.conformance import DriverConformance
from provisioning.testing.sshd import start_sshd


class TestSSHDriverConformance(DriverConformance):
    worker_timeout = 120.0

    @pytest.fixture(autouse=True)
    def _host(self, tmp_path, client_key, sudo_user):
        self.key_path = client_key.path
        self.user = sudo_user.name
        self.sshd = start_sshd(tmp_path, authorized_keys=[client_key.public_openssh],
                               user=sudo_user.name)
        yield
        self.sshd.stop()

    def driver_url(self, tmp_path) -> str:
        return "ssh:conformance"

    def config_data(self, tmp_path):
        return {"private_keys": {"client": self.key_path}}

    def machine_options(self, name):
        return {"transport": {"host": self.sshd.host, "port": self.sshd.port,
                              "username": self.user, "key_name": "client",
                              "connect_timeout": 5},
                "ready_timeout": 20}

    def count_machines(self, driver, name) -> int:
        """An ssh: machine is a registered host that is still there: its entry in the state
        store, and its sshd running."""
        path = os.path.join(driver.config.base_dir, "state.db")
        if not os.path.exists(path):
            return 0
        store = SQLiteStore(path)
        try:
            spec = store.get("machine", name)
        finally:
            store.close()
        registered = spec is not None and spec.reference.get("port") == self.sshd.port
        return int(registered and self.sshd.process is not None)

    def missing_resource_id(self) -> str:
        return "127.0.0.1:1"  # nothing listens there

    def present_other_host_key(self, driver, store, name):
        """The real thing: the machine's sshd comes back with a new host key. Undo: the user
        checked the new key and pinned it."""
        self.sshd.restart_with_new_host_key()

        def undo() -> None:
            spec = store.get("machine", name)
            spec.reference["host_key"] = self.sshd.host_key
            spec.save()
        return undo

    def delete_behind_back(self, driver, spec) -> None:
        self.sshd.stop()  # the host is gone: destroy must still work, and forget it
