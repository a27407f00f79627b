"""``slots:DIR``: a fixed pool of machine slots on this host.

Like a rack of pre-made hosts: the pool has ``slots`` places (a driver option); allocating a
machine *claims* a free slot, destroying it wipes the slot and frees it. A claim is a file made
with O_EXCL whose content is the machine's idempotency token (from the state store's id and the
machine name), so two claimers never share a slot and a re-run after a crash finds its own claim.
Slots cannot be powered off, so the driver declares ``stoppable=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from typing import Any

from provisioning.driver import (Capabilities, Driver, LocalTransport, MachineNotFound,
                                 OptionField, ProviderError, UnixMachine, UnsupportedOperation,
                                 checkpoint)

__all__ = ["SlotsDriver", "Pool", "claim_token"]

PROFILES = ["plain", "build"]


def claim_token(store_id: str | None, name: str) -> str:
    """The idempotency token of a machine: the same for every re-run against one store."""
    return hashlib.sha256(f"{store_id or ''}\0{name}".encode()).hexdigest()[:24]


class Pool:
    """The warehouse: ``DIR/slot-N/`` with ``claim.json`` while taken and ``root/`` to work in."""

    def __init__(self, root: str, size: int) -> None:
        self.root = root
        self.size = size

    def slot_dir(self, slot: int) -> str:
        return os.path.join(self.root, f"slot-{slot}")

    def claim_of(self, slot: int) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.slot_dir(slot), "claim.json"), encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        # a claim being written is empty for an instant: it is taken, by an unknown claimer
        return json.loads(text) if text else {"token": None}

    def claims(self) -> dict[int, dict[str, Any]]:
        return {slot: claim for slot in range(1, self.size + 1)
                if (claim := self.claim_of(slot)) is not None}

    def find(self, token: str) -> int | None:
        for slot, claim in self.claims().items():
            if claim.get("token") == token:
                return slot
        return None

    def claim(self, token: str, name: str) -> dict[str, Any]:
        """Take the first free slot (exclusive create); ProviderError when the pool is full."""
        for slot in range(1, self.size + 1):
            directory = self.slot_dir(slot)
            os.makedirs(os.path.join(directory, "root"), mode=0o700, exist_ok=True)
            try:
                fd = os.open(os.path.join(directory, "claim.json"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            claim = {"token": token, "name": name, "claim_id": uuid.uuid4().hex[:12],
                     "slot": slot}
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(claim, handle)
            return claim
        raise ProviderError(f"no free slot in {self.root} ({self.size} slots, all claimed); "
                            "destroy a machine or raise the driver option 'slots'",
                            provider="slots")

    def release(self, slot: int) -> None:
        """Wipe the slot's files, then drop the claim (in that order: a freed slot is clean)."""
        directory = self.slot_dir(slot)
        shutil.rmtree(os.path.join(directory, "root"), ignore_errors=True)
        os.makedirs(os.path.join(directory, "root"), mode=0o700, exist_ok=True)
        try:
            os.unlink(os.path.join(directory, "claim.json"))
        except FileNotFoundError:
            pass


class SlotsDriver(Driver):
    scheme = "slots"
    version = "1"
    capabilities = Capabilities(stoppable=False)
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
        size = self.driver_options.get("slots", 8)
        self.pool = Pool(driver_url.split(":", 1)[1], size if isinstance(size, int) else 8)

    def profiles(self) -> list[str]:
        return list(PROFILES)

    def list_choices(self):
        return {"locations": [self.pool.root]}

    # -- helpers -------------------------------------------------------------------------------
    def _claimed(self, spec) -> int | None:
        """The slot still claimed by this reference (same claim id), else None."""
        slot = spec.reference.get("slot")
        claim = self.pool.claim_of(slot) if isinstance(slot, int) else None
        if claim and claim.get("claim_id") == spec.reference.get("claim_id"):
            return slot
        return None

    def _machine(self, spec, options, action_handler=None) -> UnixMachine:
        slot = self._claimed(spec)
        if slot is None:
            raise MachineNotFound(f"slot of {spec.name!r} was released; run `converge up` to "
                                  "claim one again", machine=spec.name)
        return UnixMachine(spec.name, LocalTransport(os.path.join(self.pool.slot_dir(slot), "root")),
                           spec=spec, options=options, action_handler=action_handler)

    def _save_claim(self, spec, claim) -> None:
        spec.reference = self.base_reference(slot=claim["slot"], claim_id=claim["claim_id"],
                                             claim_token=claim["token"])
        checkpoint("before_save", machine=spec.name)
        spec.save()

    # -- the contract --------------------------------------------------------------------------
    def allocate_machine(self, action_handler, machine_spec, machine_options):
        if machine_spec.exists:
            if self._claimed(machine_spec) is not None:
                return
            action_handler.report_progress(
                f"slot {machine_spec.reference.get('slot')} was released behind our back; "
                "claiming a slot again")
        token = claim_token(machine_spec.store_id, machine_spec.name)
        mine = self.pool.find(token)
        if mine is not None and self.pool.claim_of(mine).get("claim_id") != \
                machine_spec.reference.get("claim_id"):
            claim = self.pool.claim_of(mine)
            action_handler.perform_action(f"adopt slot {mine} claimed for this machine",
                                          lambda: self._save_claim(machine_spec, claim))
            return

        def claim_slot() -> None:
            claim = self.pool.claim(token, machine_spec.name)
            checkpoint("after_create", machine=machine_spec.name)
            self._save_claim(machine_spec, claim)
        action_handler.perform_action(
            f"claim a free slot in {self.pool.root} ({machine_options.get('profile', 'plain')})",
            claim_slot)

    def ready_machine(self, action_handler, machine_spec, machine_options):
        if not machine_spec.exists:
            if action_handler.why_run:
                action_handler.report_progress("would use the slot claimed by allocate")
                return None
            raise MachineNotFound(f"machine {machine_spec.name!r} has no slot; allocate it first",
                                  machine=machine_spec.name)
        checkpoint("during_ready", machine=machine_spec.name)
        return self._machine(machine_spec, machine_options, action_handler)

    def connect_to_machine(self, machine_spec, machine_options):
        return self._machine(machine_spec, machine_options)

    def stop_machine(self, action_handler, machine_spec, machine_options):
        raise UnsupportedOperation("slots: machines cannot be stopped (a slot has no power "
                                   "switch); destroy it to free the slot", machine=machine_spec.name)

    def destroy_machine(self, action_handler, machine_spec, machine_options):
        slot = self._claimed(machine_spec)
        if slot is None:
            action_handler.report_progress("slot is already free")
            return
        action_handler.perform_action(f"wipe and free slot {slot}", lambda: self.pool.release(slot))

    def machine_state(self, machine_spec):
        return "running" if self._claimed(machine_spec) is not None else "missing"
