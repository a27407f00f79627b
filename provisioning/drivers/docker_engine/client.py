"""The Docker Engine API client (Docker SDK for Python) and the one place its errors become ours.

Nothing outside ``provisioning/drivers`` sees a ``docker.errors`` or ``requests`` exception:
``engine_errors()`` maps them, most specific first, always ``from`` the original.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

from provisioning.errors import ConfigError, MissingExtra, ProviderError

__all__ = ["PROVIDER", "LOCAL_SOCKET", "open_client", "engine_errors", "is_not_found",
           "is_conflict", "endpoint_of", "canonical_endpoint"]

PROVIDER = "docker"
LOCAL_SOCKET = "unix:///var/run/docker.sock"
_MAX = 600


def canonical_endpoint(rest: str) -> str:
    """``""`` -> ``$DOCKER_HOST`` when set (as the docker command does), else the local default
    socket; ``unix:///x`` kept; ``tcp://h:p`` kept (port defaulted to 2376); a bare path means
    ``unix://PATH``."""
    if not rest:
        rest = os.environ.get("DOCKER_HOST", "").strip()
        if not rest:
            return LOCAL_SOCKET
    if rest.startswith("unix://"):
        return "unix://" + os.path.normpath(rest[len("unix://"):])
    if rest.startswith("/"):
        return "unix://" + os.path.normpath(rest)
    if rest.startswith(("tcp://", "ssh://")):
        host = rest.split("://", 1)[1].rstrip("/")
        if "@" in host and rest.startswith("tcp://"):
            raise ConfigError("a docker: URL never holds credentials; use the driver option "
                              "'tls' for client certificates", key="driver")
        if rest.startswith("tcp://") and not host.rsplit("]", 1)[-1].count(":"):
            host += ":2376"
        return rest.split("://", 1)[0] + "://" + host
    raise ConfigError(f"docker:{rest}: the endpoint must be unix:///PATH, tcp://HOST[:PORT] or "
                      "ssh://USER@HOST (or empty for the local default socket)", key="driver")


def endpoint_of(driver_url: str) -> str:
    return driver_url.split(":", 1)[1]


def open_client(endpoint: str, tls: Mapping[str, Any] | None = None, *, timeout: float = 120):
    """A ``docker.DockerClient`` for the endpoint; TLS from the driver option ``tls``
    (``ca_cert``, ``client_cert``, ``client_key``, ``verify``)."""
    try:
        import docker
    except ImportError as exc:
        raise MissingExtra("the docker: driver", "docker", "docker") from exc
    tls_config: Any = False
    if tls:
        from docker.tls import TLSConfig

        cert = (tls["client_cert"], tls["client_key"]) if tls.get("client_cert") else None
        tls_config = TLSConfig(client_cert=cert, ca_cert=tls.get("ca_cert"),
                               verify=tls.get("verify", True) if not tls.get("ca_cert")
                               else tls["ca_cert"])
    elif endpoint.startswith("tcp://"):
        tls_config = False
    with engine_errors(f"connecting to the engine at {endpoint}"):
        return docker.DockerClient(base_url=endpoint, tls=tls_config, timeout=int(timeout))


def is_not_found(exc: BaseException) -> bool:
    import docker.errors

    return isinstance(exc, docker.errors.NotFound)


def is_conflict(exc: BaseException) -> bool:
    import docker.errors

    # Docker answers 409; Podman's compatible API answers 500 "... is already in use"
    return isinstance(exc, docker.errors.APIError) and (
        exc.status_code == 409 or "already in use" in str(exc.explanation or exc))


def _text(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip() or type(exc).__name__
    return text[:_MAX]


@contextlib.contextmanager
def engine_errors(doing: str, *, machine: str | None = None) -> Iterator[None]:
    """Engine and connection errors as ``ProviderError`` (or ``ConfigError`` for a bad image
    or option the engine refused), saying what we were doing."""
    try:
        yield
    except ProviderError:
        raise
    except ConfigError:
        raise
    except Exception as exc:
        try:
            import docker.errors
            import requests.exceptions
        except ImportError:  # pragma: no cover - the SDK is there whenever this runs
            raise
        text = _text(exc)
        if isinstance(exc, docker.errors.ImageNotFound):
            raise ProviderError(f"{doing}: image not found ({text})", provider=PROVIDER,
                                provider_message=text, machine=machine) from exc
        if isinstance(exc, docker.errors.APIError):
            raise ProviderError(f"{doing}: the engine refused: {text}", provider=PROVIDER,
                                provider_message=text, machine=machine) from exc
        if isinstance(exc, docker.errors.DockerException) and "Error while fetching server API" \
                in str(exc) or isinstance(exc, (requests.exceptions.ConnectionError,
                                                FileNotFoundError, ConnectionError)):
            raise ProviderError(f"{doing}: the engine does not answer ({text}); is dockerd or "
                                "'podman system service' running, and is the socket in the "
                                "driver URL right?", provider=PROVIDER, provider_message=text,
                                machine=machine) from exc
        if isinstance(exc, requests.exceptions.RequestException):
            raise ProviderError(f"{doing}: {text}", provider=PROVIDER, provider_message=text,
                                machine=machine) from exc
        if isinstance(exc, docker.errors.DockerException):
            raise ProviderError(f"{doing}: {text}", provider=PROVIDER, provider_message=text,
                                machine=machine) from exc
        raise
