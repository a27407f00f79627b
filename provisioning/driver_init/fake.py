"""The fake: scheme."""

DRIVER = "provisioning.drivers.fake:FakeDriver"
