"""The nspawn: scheme."""

DRIVER = "provisioning.drivers.nspawn:NspawnDriver"
