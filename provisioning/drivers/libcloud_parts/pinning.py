"""The ``libcloud:`` driver's side of host key verification (the rules: ``hostkeys.py``).

``HostKeyPinning`` is mixed into ``LibcloudDriver``: ``_userdata_and_host_key`` runs while the
create request is planned (so a machine that cannot be verified is refused before anything is
made), ``_host_key_check`` when the machine is built for a connection.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.drivers.libcloud_parts.hostkeys import (
    ConsoleHostKeys,
    GeneratedHostKey,
    console_checker,
    console_host_keys,
    host_key_in_userdata,
    host_key_method,
    new_host_key,
    userdata_with_host_key,
)
from provisioning.machine.factory import pin_on_first_use

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.actions import ActionHandler
    from provisioning.spec import MachineSpec
    from provisioning.transports.base import HostKeyCallback, NewHostKey

__all__ = ["HostKeyPinning"]

TRUST_FIRST_USE = "trusted on first use: host_key_policy: trust-first-use"


class HostKeyPinning:
    """Needs the driver's ``ops``, ``_errors``, ``_interval`` and ``sleep``."""

    ops: Any
    sleep: Any
    _errors: Any

    def _userdata_and_host_key(self, handler: "ActionHandler", spec: "MachineSpec",
                               opts: Mapping[str, Any], userdata: str | None,
                               ) -> tuple[str | None, GeneratedHostKey | None]:
        """The userdata to send and the host key generated for the node (None when the node's
        key is verified another way). Raises ConfigError when it cannot be verified at all."""
        method = host_key_method(opts, takes_userdata=self.ops.takes_userdata,
                                 has_console=self.ops.has_console, machine=spec.name)
        if method != "cloud-init":
            return userdata, None
        key = new_host_key()
        handler.report_progress(
            f"host key {key.fingerprint} generated for the new node: cloud-init installs it "
            "from the userdata, and it is pinned before the first connection",
            data={"fingerprint": key.fingerprint})
        return userdata_with_host_key(userdata, key, spec.name), key

    @staticmethod
    def _pending_host_key_fields(key: GeneratedHostKey | None) -> dict[str, str]:
        """Saved before the create request: the public key, pinned (the private one never)."""
        return {"host_key": key.public} if key else {}

    def _kept_on_adopt(self, reference: Mapping[str, Any], node: Any) -> dict[str, Any]:
        """What a reference keeps when a tagged node is adopted: the idempotency token, and the
        host key the node's own userdata carries (read back from the provider: after a crash,
        a retried request may have pinned another key than the one the node got)."""
        kept = {"client_token": reference["client_token"]} if reference.get("client_token") else {}
        with self._errors(f"read the userdata of node {node.id}"):
            host_key = host_key_in_userdata(self.ops.node_userdata(node))
        if host_key:
            kept["host_key"] = host_key
        return kept

    def _host_key_check(self, spec: "MachineSpec", opts: Mapping[str, Any],
                        handler: "ActionHandler | None",
                        deadline: float | None) -> "HostKeyCallback | None":
        """The callback for a key the node presents while none is pinned (None: the usual one).
        ``deadline``: until when to wait for the console's fingerprints (None: ask once)."""
        if spec.reference.get("host_key"):
            return None
        method = host_key_method(opts, takes_userdata=False, has_console=self.ops.has_console,
                                 machine=spec.name)
        if method in ("none", "configured"):
            return None
        first_use = opts.get("host_key_policy") == "trust-first-use"
        tofu = pin_on_first_use(spec, handler, reason=TRUST_FIRST_USE) if first_use else None
        if method == "trust-first-use":
            return tofu
        node_id = spec.reference.get("node_id")
        printed: dict[str, ConsoleHostKeys] = {}

        def check(seen: "NewHostKey") -> None:
            if "keys" not in printed:
                printed["keys"] = self._console_host_keys(spec, deadline if not first_use
                                                          else None, handler)
            verified = pin_on_first_use(
                spec, handler, reason=f"matches what node {node_id} printed to its console")
            console_checker(printed["keys"], verified, tofu, pin_on_first_use(spec, handler),
                            machine=spec.name)(seen)
        return check

    def _console_host_keys(self, spec: "MachineSpec", deadline: float | None,
                           handler: "ActionHandler | None") -> ConsoleHostKeys:
        """The host keys the node printed to its console, waiting until ``deadline`` for them."""
        node_id = spec.reference.get("node_id")
        reported = False
        while True:
            with self._errors(f"read the console output of node {node_id}", spec):
                node = self.ops.get_node(node_id)
                found = console_host_keys(self.ops.console_output(node) if node else "")
            if found or deadline is None or time.monotonic() >= deadline:
                return found
            if not reported and handler is not None:
                handler.report_progress(f"waiting for node {node_id} to print its host key "
                                        "fingerprints to its console", data={"node_id": node_id})
                reported = True
            self.sleep(self._interval)  # type: ignore[attr-defined]
