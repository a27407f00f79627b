"""libcloud's exceptions mapped to ours: one table, one context manager, most specific first.

Nothing outside ``provisioning/drivers`` sees a libcloud exception. EC2-style error codes found in
a message (``InvalidAMIID.NotFound: ...``) turn into a ``ConfigError`` naming the option to fix
when the user's input is what the cloud refused (image, size, key pair, security group, zone).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Mapping

from provisioning.errors import ConfigError, ProviderError, ProvisioningError, UnsupportedOperation

__all__ = ["map_libcloud_errors", "translate", "CODE_RULES"]

#: (pattern on the provider's error code/message, option it is about, what to tell the user)
CODE_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"InvalidAMIID\.|InvalidImage|ImageNotFound|image.*(not found|does not exist)",
                re.I), "image",
     "unknown image {image!r} in {place}: pick one listed by `converge drivers describe {url}`"),
    (re.compile(r"InvalidInstanceType|InvalidParameterValue.*instance ?type|size.*not found",
                re.I), "size",
     "unknown size {size!r} in {place}: pick one listed by `converge drivers describe {url}`"),
    (re.compile(r"InvalidKeyPair\.NotFound", re.I), "key_pair",
     "key pair {key_pair!r} does not exist in {place}: import it, or set key_name to let "
     "provisioning import your public key"),
    (re.compile(r"InvalidGroup\.NotFound|InvalidSecurityGroup", re.I), "security_groups",
     "security group not found in {place} ({security_groups}): create it, or set open_ssh"),
    (re.compile(r"InvalidSubnet|InvalidVpc", re.I), "subnet",
     "subnet or network {subnet!r} not found in {place}"),
    (re.compile(r"InvalidParameterValue.*(availability ?zone|placement)|Unsupported.*zone|"
                r"Invalid availability zone", re.I), "location",
     "location {location!r} is not usable in {place}: pick one listed by "
     "`converge drivers describe {url}`"),
)

_MAX_PROVIDER_MESSAGE = 600


def _fmt(template: str, context: Mapping[str, Any]) -> str:
    class _Missing(dict):
        def __missing__(self, key: str) -> str:
            return "?"
    return template.format_map(_Missing(context))


def _message(exc: BaseException) -> str:
    """The provider's text; some libcloud exceptions fail in their own __str__."""
    for source in (getattr(exc, "value", None), getattr(exc, "message", None), exc):
        if source:
            try:
                return str(source).strip()
            except Exception:  # a broken __str__/__repr__ in the backend exception
                continue
    return type(exc).__name__


def translate(exc: BaseException, *, provider: str, action: str, machine: str | None = None,
              context: Mapping[str, Any] | None = None) -> ProvisioningError | None:
    """Our error for a libcloud (or network) exception, or None when it is not one of theirs."""
    context = dict(context or {})
    context.setdefault("place", f"{provider} {context.get('region') or ''}".strip())
    context.setdefault("url", context.get("driver_url", "libcloud:" + provider))
    raw = _message(exc)[:_MAX_PROVIDER_MESSAGE]
    where = f"{provider} refused to {action}"
    try:
        from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
        from libcloud.common.types import (
            InvalidCredsError,
            LibcloudError,
            MalformedResponseError,
            ServiceUnavailableError,
        )
        from libcloud.compute.types import KeyPairDoesNotExistError
    except ImportError:  # pragma: no cover - without libcloud only network errors can occur
        BaseHTTPError = RateLimitReachedError = InvalidCredsError = LibcloudError = ()  # type: ignore
        MalformedResponseError = ServiceUnavailableError = KeyPairDoesNotExistError = ()  # type: ignore

    if isinstance(exc, InvalidCredsError):
        return ProviderError(
            f"{provider} rejected the credentials ({context.get('credential_source', 'unknown source')})"
            f" while trying to {action}: check the access key and secret (driver_options "
            "key/secret, config credentials, or the AWS profile/env vars for EC2)",
            provider=provider, provider_message=raw, machine=machine)
    if isinstance(exc, KeyPairDoesNotExistError):
        return ConfigError(_fmt(CODE_RULES[2][2], context), key="machine_options.key_pair",
                           machine=machine)
    if isinstance(exc, RateLimitReachedError):
        return ProviderError(f"{where}: rate limit reached; retry later or lower --parallel",
                             provider=provider, provider_message=raw, machine=machine)
    if isinstance(exc, ServiceUnavailableError):
        return ProviderError(f"{where}: the service is unavailable; retry later",
                             provider=provider, provider_message=raw, machine=machine)
    if isinstance(exc, MalformedResponseError):
        return ProviderError(f"{where}: the API answered with something that is not a valid "
                             "response (wrong endpoint, or a proxy in between?)",
                             provider=provider, provider_message=raw, machine=machine)
    if isinstance(exc, (BaseHTTPError, LibcloudError)):
        for pattern, option, template in CODE_RULES:
            if pattern.search(raw):
                return ConfigError(f"{_fmt(template, context)} ({raw})",
                                   key=f"machine_options.{option}", machine=machine)
        if re.search(r"AuthFailure|InvalidClientTokenId|SignatureDoesNotMatch|UnauthorizedOperation"
                     r"|\b401\b|\b403\b", raw):
            return ProviderError(f"{where}: access denied ({raw}); check the credentials and "
                                 "their permissions", provider=provider, provider_message=raw,
                                 machine=machine)
        return ProviderError(f"{where}: {raw or type(exc).__name__}", provider=provider,
                             provider_message=raw, machine=machine)
    if isinstance(exc, NotImplementedError):
        return UnsupportedOperation(f"libcloud's {provider} driver cannot {action}",
                                    machine=machine)
    if isinstance(exc, OSError):  # sockets, TLS, requests' ConnectionError/Timeout
        return ProviderError(f"cannot reach the {provider} API to {action}: {exc}; check the "
                             "network and the endpoint", provider=provider,
                             provider_message=raw, machine=machine)
    return None


@contextlib.contextmanager
def map_libcloud_errors(provider: str, action: str, *, machine: str | None = None,
                        context: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Run a block of libcloud calls; their exceptions leave it as ours (``raise ... from``)."""
    try:
        yield
    except ProvisioningError:
        raise
    except Exception as exc:
        mapped = translate(exc, provider=provider, action=action, machine=machine,
                           context=context)
        if mapped is None:
            raise
        raise mapped from exc
