"""The host key case of the conformance suite (``DriverConformance`` inherits it): a driver
whose machines speak SSH must refuse a host that presents another key than the one pinned for
the machine (``HostKeyMismatch``), run nothing there, and keep the pinned key. A driver that
accepts any host key fails it.

How the host comes to present another key is the ``present_other_host_key`` hook: by default
the machine's state entry is pointed at another key (from the client's side the same as a
rotated host key, and it works for every driver); a driver's tests override it to rotate the
machine's real key (the ``ssh:`` tests restart their sshd with a new key; the ``nspawn:`` and
``docker:`` tests replace the machine's key file with ``rotate_host_key_on_machine``) or to
point the record at a second machine.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from provisioning.errors import HostKeyMismatch
from provisioning.keys import generate_host_key, random_hex

__all__ = ["HostKeyConformance"]


class HostKeyConformance:
    """Mixed into ``DriverConformance``; not used on its own."""

    # the hooks and helpers DriverConformance defines
    machine_options: Any
    machine_name: Any
    require: Any

    def present_other_host_key(self, driver, store, name: str) -> Callable[[], None]:
        """Make machine ``name`` present a host key other than the pinned one; return how to
        undo it, so the case can connect again and check that nothing ran. Default: pin
        another (freshly generated) key in the machine's state entry."""
        spec = store.get("machine", name)
        pinned = spec.reference["host_key"]
        spec.reference["host_key"] = generate_host_key()[1]
        spec.save()

        def undo() -> None:
            again = store.get("machine", name)
            again.reference["host_key"] = pinned
            again.save()
        return undo

    def rotate_host_key_on_machine(self, driver, store, name: str,
                                   path: str = "/etc/ssh/ssh_host_ed25519_key"
                                   ) -> Callable[[], None]:
        """A ``present_other_host_key`` for machines running OpenSSH's sshd as root: replace
        the machine's own host key file at ``path`` (sshd reads its host keys for each new
        connection). Undo: pin the new key, as a user would after checking it."""
        spec = store.get("machine", name)
        machine = driver.connect_to_machine(spec, self.machine_options(name))
        try:
            new = machine.execute_always(
                f"rm -f {path} {path}.pub && ssh-keygen -q -t ed25519 -N '' -f {path} "
                f"&& cut -d' ' -f1,2 {path}.pub", sudo=True).stdout.strip()
        finally:
            machine.disconnect()

        def undo() -> None:
            again = store.get("machine", name)
            again.reference["host_key"] = new
            again.save()
        return undo

    def test_another_host_key_is_refused_and_nothing_runs(self, provisioner, driver, caps,
                                                          store):
        self.require(caps, "connectable")
        name = self.machine_name("conf-hostkey")
        options = self.machine_options(name)
        machine = provisioner.up(driver, name, options)
        try:
            speaks_ssh = machine.transport.ssh_login() is not None
        finally:
            machine.disconnect()
        if not speaks_ssh:
            pytest.skip("not applicable: the driver's machines do not speak SSH")
        assert store.get("machine", name).reference.get("host_key"), \
            "a machine reached over SSH must have its host key pinned in its reference"
        marker = f"/tmp/provisioning-conformance-hostkey-{random_hex()}"
        undo = self.present_other_host_key(driver, store, name)
        try:
            pinned = store.get("machine", name).reference["host_key"]
            with pytest.raises(HostKeyMismatch):
                provisioner.connect(name, options, driver).execute_always(f"touch {marker}")
            assert store.get("machine", name).reference["host_key"] == pinned, \
                "the pinned host key must stay as it was after a refused host"
        finally:
            undo()
        machine = provisioner.connect(name, options, driver)
        try:
            assert machine.execute_always(f"test -e {marker}", check=False).exit_status == 1, \
                "a command ran on a host whose key did not match"
        finally:
            machine.disconnect()
