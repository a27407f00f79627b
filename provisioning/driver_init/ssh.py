"""The ssh: scheme."""

DRIVER = "provisioning.drivers.ssh:SSHDriver"
