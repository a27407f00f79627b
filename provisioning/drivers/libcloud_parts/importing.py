"""``converge import NAME NODE_ID`` for the libcloud: driver: a node made outside the state is
checked (it must exist and not be terminated), tagged ``provisioning:name``/``provisioning:store``
where the provider tags, and recorded like an adopted node: the host key its userdata carries
is pinned, else it is verified at the first connection as for any node (``pinning.py``)."""

from __future__ import annotations

from typing import Any

from provisioning.drivers.libcloud_parts.part import LibcloudPart
from provisioning.errors import MachineNotFound, UnsupportedOperation

__all__ = ["LibcloudImport"]


class LibcloudImport(LibcloudPart):
    """Mixed into ``LibcloudDriver`` (whose helpers it uses)."""

    _record_node: Any
    _report_differences: Any
    base_reference: Any

    def import_machine(self, action_handler, machine_spec, machine_options, resource_id):
        """Adopt node ``resource_id``, tagging it for this machine and store (where the
        provider tags); its host key is then pinned at ready exactly as for a node we made."""
        opts = self._opts(machine_options)
        with self._errors(f"look up node {resource_id}", machine_spec):
            node = self.ops.get_node(resource_id)
        if node is None or not self.ops.alive(node):
            state = "terminated" if node is not None else "not found"
            raise MachineNotFound(f"node {resource_id} at {self.driver_url} is {state}; check "
                                  "the id (converge drivers describe lists the region's nodes)",
                                  machine=machine_spec.name)

        def adopt() -> None:
            with self._errors(f"tag node {resource_id}", machine_spec):
                try:
                    self.ops.set_tags(node, {"provisioning:name": machine_spec.name,
                                             "provisioning:store": machine_spec.store_id or ""})
                except UnsupportedOperation as exc:
                    action_handler.report_progress(f"node {resource_id} left untagged: {exc}")
            machine_spec.reference = self.base_reference(
                provider=self.provider, region=self.region, image=self.ops.node_image(node),
                size=self.ops.node_size(node), **self._kept_on_adopt({}, node))
            self._record_node(machine_spec, node, opts)
        action_handler.perform_action(f"import node {resource_id} ({self.ops.status(node)})",
                                      adopt)
        self._report_differences(action_handler, node, opts)

    def resource_id(self, reference):
        return reference.get("node_id")
