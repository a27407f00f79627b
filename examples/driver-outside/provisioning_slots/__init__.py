"""provisioning-slots: the ``slots:`` driver (found through the provisioning.drivers entry point)."""

__version__ = "0.1.0"
