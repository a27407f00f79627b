"""What a driver can do, declared once on its class (``Driver.capabilities``)."""

from __future__ import annotations

from dataclasses import asdict

from provisioning.inputs.records import record

__all__ = ["Capabilities"]


@record(frozen=True)
class Capabilities:
    """What a driver can do. The conformance suite runs the matching cases, and reports a case
    a driver declares it cannot do as not applicable, never as a silent skip."""

    connectable: bool = True        # ready_machine returns a machine that runs commands
    stoppable: bool = True          # stop then ready brings the same machine back
    cross_process: bool = True      # state and resources are visible to other processes
    crash_safe: bool = True         # a crash between create and save is adopted on re-run
    detects_lost: bool = True       # a resource deleted behind our back is noticed
    # a destroy killed midway (fault point during_destroy) is finished by the next destroy,
    # leaving nothing behind; off unless a driver declares it (and offers the fault point)
    crash_safe_destroy: bool = False
    # local-machine features (provisioning.driver.local_features); off unless a driver declares them
    snapshots: bool = False         # save/restore/list/delete_snapshot work
    mounts_folders: bool = False    # synced folders can be shared live (mode auto or mount)
    forwards_ports: bool = False    # machine_options["ports"] are forwarded from the host
    # machine images (provisioning.images); off unless a driver declares it
    images: bool = False            # allocate/ready/destroy_image capture a converged machine
    # ``converge import`` (Driver.import_machine); off unless a driver declares it
    imports: bool = False           # import_machine adopts a resource made outside the state
    # ``create_before_destroy: true`` groups: the driver tags resources with
    # ``MachineSpec.resource_name`` (never adopting the old resource as the new one) and can
    # hold both at once; off unless a driver declares it
    create_before_destroy: bool = False

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)
