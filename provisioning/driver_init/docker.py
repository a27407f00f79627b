"""The docker: scheme (Docker or Podman through the Docker Engine API)."""

DRIVER = "provisioning.drivers.docker:DockerDriver"
