"""Parts of the ``docker:`` driver: the engine client and its errors, images, containers."""
