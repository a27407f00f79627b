"""DriverURL: ``scheme:rest``. The scheme picks the driver; the rest names the warehouse."""

from __future__ import annotations

import re

from provisioning.errors import InvalidDriverURL
from provisioning.inputs.records import record

__all__ = ["DriverURL", "SCHEME_RE", "parse_driver_url", "validate_scheme"]

SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")


def validate_scheme(scheme: str) -> str:
    if not SCHEME_RE.match(scheme or ""):
        raise InvalidDriverURL(
            f"{scheme}:", "a scheme is a lower-case letter followed by lower-case letters, digits, "
            "'+', '.' or '-' (for example 'nspawn' or 'libcloud')")
    return scheme


@record(frozen=True)
class DriverURL:
    """A driver URL split at its first colon: ``scheme:rest``."""

    scheme: str
    rest: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    @property
    def parts(self) -> list[str]:
        """The rest split on ':' (``libcloud:ec2:us-east-1`` -> ['ec2', 'us-east-1'])."""
        return self.rest.split(":") if self.rest else []


def parse_driver_url(url: str) -> DriverURL:
    """Parse ``scheme:rest``; a bare ``scheme`` means ``scheme:``."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidDriverURL(str(url), "expected 'scheme:rest', e.g. 'nspawn:' or "
                                         "'libcloud:ec2:us-east-1'")
    bad = next((c for c in url if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise InvalidDriverURL(url, f"it contains the control character {bad!r} at position "
                                    f"{url.index(bad)}; remove it (a URL is one line of text)")
    text = url.strip()
    scheme, sep, rest = text.partition(":")
    if not SCHEME_RE.match(scheme):
        raise InvalidDriverURL(url, f"scheme {scheme!r} is not valid: use a lower-case letter "
                                    "followed by letters, digits, '+', '.' or '-'")
    return DriverURL(scheme, rest)
