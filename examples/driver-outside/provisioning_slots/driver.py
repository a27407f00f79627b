"""``slots:DIR``: a fixed pool of machine slots on this host.

Like a rack of pre-made hosts: the pool has ``slots`` places (a driver option); allocating a
machine *claims* a free slot, destroying it wipes the slot and frees it. A claim is a file made
with O_EXCL holding the machine's idempotency token, so two claimers never share a slot and a
re-run after a crash finds its own claim. Slots cannot be powered off: ``stoppable=False``.
The base class does the rest (adopt-or-create, why-run, fault points, saving the reference).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any

from provisioning.driver import (Capabilities, Driver, LocalTransport, OptionField,
                                 ProviderError, UnixMachine)

__all__ = ["SlotsDriver", "Pool"]


class Pool:
    """The warehouse: ``DIR/slot-N/`` with ``claim.json`` while taken and ``root/`` to work in."""

    def __init__(self, root: str, size: int) -> None:
        self.root, self.size = root, size

    def slot_dir(self, slot: int) -> str:
        return os.path.join(self.root, f"slot-{slot}")

    def claim_of(self, slot: int) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.slot_dir(slot), "claim.json"), encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        return json.loads(text) if text else {"token": None}  # empty: being written

    def claims(self) -> dict[int, dict[str, Any]]:
        return {slot: claim for slot in range(1, self.size + 1)
                if (claim := self.claim_of(slot)) is not None}

    def claim(self, token: str, name: str) -> dict[str, Any]:
        """Take the first free slot (exclusive create); ProviderError when the pool is full."""
        for slot in range(1, self.size + 1):
            os.makedirs(os.path.join(self.slot_dir(slot), "root"), mode=0o700, exist_ok=True)
            try:
                fd = os.open(os.path.join(self.slot_dir(slot), "claim.json"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            claim = {"token": token, "name": name, "claim_id": uuid.uuid4().hex[:12], "slot": slot}
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(claim, handle)
            return claim
        raise ProviderError(f"no free slot in {self.root} ({self.size} slots, all claimed); "
                            "destroy a machine or raise the driver option 'slots'",
                            provider="slots")

    def release(self, slot: int) -> None:
        """Wipe the slot's files, then drop the claim (in that order: a freed slot is clean)."""
        shutil.rmtree(os.path.join(self.slot_dir(slot), "root"), ignore_errors=True)
        os.makedirs(os.path.join(self.slot_dir(slot), "root"), mode=0o700, exist_ok=True)
        os.unlink(os.path.join(self.slot_dir(slot), "claim.json"))


class SlotsDriver(Driver):
    scheme = "slots"
    capabilities = Capabilities(stoppable=False)
    resource_kind = "slot"
    driver_option_fields = (
        OptionField("slots", type="int", default=8, help="how many machines the pool holds"),
    )
    machine_option_fields = (
        OptionField("profile", default="plain", choices_from=lambda d: d.profiles(),
                    help="what a slot is prepared for"),
    )

    @classmethod
    def canonicalize_url(cls, url, config):
        rest = url.split(":", 1)[1] or os.path.join(".provisioning", "slots")
        return "slots:" + os.path.abspath(os.path.join(config.base_dir, os.path.expanduser(rest)))

    def __init__(self, driver_url, config):
        super().__init__(driver_url, config)
        self.pool = Pool(driver_url.split(":", 1)[1], self.driver_options.get("slots", 8))

    def profiles(self) -> list[str]:
        return ["plain", "build"]

    # -- the warehouse hooks ---------------------------------------------------------------
    def find_resource(self, machine_spec):
        token = self.idempotency_token(machine_spec)
        return next(({"slot": s, "claim_id": c["claim_id"]} for s, c in self.pool.claims().items()
                     if c.get("token") == token), None)

    def describe_create(self, machine_spec, machine_options):
        return f"claim a free slot in {self.pool.root} ({machine_options.get('profile', 'plain')})"

    def create_resource(self, action_handler, machine_spec, machine_options):
        claim = self.pool.claim(self.idempotency_token(machine_spec), machine_spec.name)
        return {"slot": claim["slot"], "claim_id": claim["claim_id"]}

    def resource_state(self, machine_spec):
        slot = machine_spec.reference.get("slot")
        claim = self.pool.claim_of(slot) if isinstance(slot, int) else None
        mine = claim and claim.get("claim_id") == machine_spec.reference.get("claim_id")
        return "running" if mine else "missing"

    def delete_resource(self, action_handler, machine_spec):
        self.pool.release(machine_spec.reference["slot"])

    def open_machine(self, machine_spec, machine_options, action_handler=None):
        root = os.path.join(self.pool.slot_dir(machine_spec.reference["slot"]), "root")
        return UnixMachine(machine_spec.name, LocalTransport(root, confine=True),
                           spec=machine_spec, options=machine_options,
                           action_handler=action_handler)
