"""Named fault points, for crash-safety tests of any driver.

The driver contract (``provisioning.driver``) passes ``POINTS`` at the moments that matter
(after creating a resource, before saving its reference, while readying, between the halves of
a destroy, one machine's or a batch's, and between an image's capture and the save of its
entry), so a driver on its hooks places none itself; the stores add ``mid_save``, the
lifecycle ``before_destroy_deposed``, and a driver may add its own inner points for its own
tests (nspawn's ``during_create``). Normally a no-op. With
``PROVISIONING_FAULT=after_create:crash`` the process dies on the spot (``os._exit``, no cleanup,
as a kill -9 would); ``:fail`` raises ``ProviderError`` instead; ``:bug`` raises ``RuntimeError``
(an internal error, as a buggy driver would). Several points: comma-separated.
"""

from __future__ import annotations

import os

from provisioning.errors import ProviderError

__all__ = ["checkpoint", "FAULT_ENV", "CRASH_EXIT_CODE", "POINTS"]

FAULT_ENV = "PROVISIONING_FAULT"
CRASH_EXIT_CODE = 86
#: the points drivers are expected to offer
POINTS = ("after_create", "before_save", "during_ready", "during_destroy", "after_capture")


def checkpoint(point: str, *, machine: str | None = None) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, action = item.strip().partition(":")
        if name != point:
            continue
        if action == "crash":
            os._exit(CRASH_EXIT_CODE)
        if action == "bug":
            raise RuntimeError(f"injected internal error at {point} ({FAULT_ENV})")
        raise ProviderError(f"injected failure at {point} ({FAULT_ENV})", machine=machine,
                            provider="fault-injection")
