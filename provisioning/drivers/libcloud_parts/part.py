"""What the mixins of ``LibcloudDriver`` may use of it: declared once, so each mixin is type-
checked on its own without repeating the driver's properties."""

from __future__ import annotations

from typing import Any

__all__ = ["LibcloudPart"]


class LibcloudPart:
    """Base of the libcloud: driver's mixins; ``LibcloudDriver`` provides each of these."""

    ops: Any
    driver_url: str
    _errors: Any
    _opts: Any
    _kept_on_adopt: Any

    @property
    def provider(self) -> str:  # pragma: no cover - LibcloudDriver's
        raise NotImplementedError

    @property
    def region(self) -> str:  # pragma: no cover - LibcloudDriver's
        raise NotImplementedError
