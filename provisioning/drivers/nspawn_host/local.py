"""The nspawn: driver's local-machine features (``provisioning.driver.local_features``): snapshots from
copies of the machine's overlay upper layer, synced folders as bind mounts made at boot, and
forwarded ports through a relay process into the machine's network namespace.

A mixin of ``NspawnDriver``: it uses the driver's warehouse, records and boot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.driver.local_features import Snapshot, forwarded_ports, synced_folders
from provisioning.drivers.nspawn_host import netns, portfwd, proc, snapshots
from provisioning.errors import ConfigError, MachineNotFound

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.drivers.nspawn_host.warehouse import MachineRecord

__all__ = ["NspawnLocalFeatures", "binds_and_ports"]


def binds_and_ports(machine_options: Mapping[str, Any]
                    ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(bind mounts, forward specs ``ADDRESS:HOST:GUEST``) wished by ``machine_options``."""
    binds = tuple((f.source, f.target) for f in synced_folders(machine_options)
                  if f.mounted_by(True))
    ports = tuple(str(p).rsplit("/", 1)[0] for p in forwarded_ports(machine_options))
    return binds, ports


class NspawnLocalFeatures:
    """Snapshots and the port relay; bind mounts are passed to ``proc.boot`` by the driver."""

    # -- forwarded ports -----------------------------------------------------------------------
    @staticmethod
    def stop_forwarder(ref: Mapping[str, Any]) -> None:
        relay: dict[str, Any] = ref.get("forwarder") or {}
        pid, started = relay.get("pid"), relay.get("start_time")
        if isinstance(pid, int) and proc.alive(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while proc.alive(pid, started) and time.monotonic() < deadline:
                time.sleep(0.01)

    def start_forwarder(self, spec, record: "MachineRecord", ports: tuple[str, ...]) -> None:
        ref = spec.reference
        self.stop_forwarder(ref)
        ref["forwarder"] = None
        if not ports:
            return
        pid = portfwd.start(netns.netns_path(record.netns), record.address, ports,
                            log=os.path.join(self.warehouse.machine_dir(record.id),  # type: ignore[attr-defined]
                                             "console.log"), machine=spec.name)
        ref["forwarder"] = {"pid": pid, "start_time": proc.start_time(pid)}

    # -- snapshots -----------------------------------------------------------------------------
    def _machine_dir(self, spec) -> str:
        record = self._record(spec)  # type: ignore[attr-defined]
        if record is None:
            raise MachineNotFound(f"machine {spec.name!r} does not exist in "
                                  f"{self.directory}; run up first",  # type: ignore[attr-defined]
                                  machine=spec.name)
        return self.warehouse.machine_dir(record.id)  # type: ignore[attr-defined]

    def list_snapshots(self, machine_spec) -> list[Snapshot]:
        return snapshots.list_snapshots(self._machine_dir(machine_spec))

    def _known(self, spec, name: str) -> str:
        directory = self._machine_dir(spec)
        if name not in {s.name for s in snapshots.list_snapshots(directory)}:
            known = ", ".join(s.name for s in snapshots.list_snapshots(directory)) or "none"
            raise ConfigError(f"machine {spec.name!r} has no snapshot {name!r} (it has: {known})",
                              key="snapshot")
        return directory

    def save_snapshot(self, action_handler, machine_spec, name: str) -> Snapshot:
        directory = self._machine_dir(machine_spec)
        ref = machine_spec.reference
        running = proc.alive(ref.get("pid"), ref.get("start_time"))
        saved: list[Snapshot] = []
        action_handler.perform_action(
            f"save snapshot {name} (copy of the machine's files"
            f"{', paused while copying' if running else ''})",
            lambda: saved.append(snapshots.save(directory, name,
                                                ref.get("cgroup") if running else None)))
        return saved[0] if saved else Snapshot(name, 0.0)

    def restore_snapshot(self, action_handler, machine_spec, name: str) -> None:
        directory = self._known(machine_spec, name)
        ref = machine_spec.reference
        running = proc.alive(ref.get("pid"), ref.get("start_time"))

        def restore() -> None:
            if running:
                self.stop_forwarder(ref)
                proc.stop(ref.get("pid"), ref.get("start_time"), ref["cgroup"],
                          timeout=float(self.driver_options.get("stop_timeout")  # type: ignore[attr-defined]
                                        or 20.0))
                proc.remove_cgroups(ref["cgroup"])
                ref.update(state="stopped", pid=None, start_time=None)
            snapshots.restore(directory, name)
            if running:
                options = {"sync": ref.get("sync") or [], "ports": ref.get("ports") or []}
                opts = self._options(options, machine_spec.name)  # type: ignore[attr-defined]
                self._boot(action_handler, machine_spec, self._record(machine_spec),  # type: ignore[attr-defined]
                           opts)
        action_handler.perform_action(
            f"restore snapshot {name}" + (" (stop, restore the files, boot)" if running else ""),
            restore)

    def delete_snapshot(self, action_handler, machine_spec, name: str) -> None:
        directory = self._known(machine_spec, name)
        action_handler.perform_action(f"delete snapshot {name}",
                                      lambda: snapshots.delete(directory, name))
