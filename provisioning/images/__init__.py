"""Machine images: ``images:`` in the cluster file, built once and cached under a key of their
whole definition (``definition``), through the drivers' ``allocate_image``/``ready_image``
(``builder``). See docs/cluster-file.md, "Images"."""

from provisioning.images.builder import ImageBuilder, ImageStatus, boot_from_images
from provisioning.images.definition import ImageDefinition, parse_images

__all__ = ["ImageBuilder", "ImageDefinition", "ImageStatus", "boot_from_images", "parse_images"]
