"""Images for ``docker:`` machines: a Debian image with systemd and sshd, built locally from the
debootstrapped root the nspawn: driver caches (no registry needed), or any image the engine has
or can pull.

``image: debian:SUITE`` means "Debian SUITE with systemd and OpenSSH": the tag
``provisioning/debian:SUITE`` when the engine has it, else the official ``debian:SUITE`` pulled
and given those packages, else (no registry, as on an isolated host) a local build: ``import`` of
the debootstrap root. Every fallback is reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
from typing import Any, Callable, Iterator

from provisioning.drivers.docker_engine.client import PROVIDER, engine_errors
from provisioning.drivers.nspawn_host import image as roots
from provisioning.drivers.nspawn_host.image import PACKAGES, resolve_image
from provisioning.errors import ConfigError, ProviderError

__all__ = ["resolve", "ensure_image", "LOCAL_REPOSITORY", "IMAGE_LABEL"]

LOCAL_REPOSITORY = "provisioning/debian"
IMAGE_LABEL = "io.provisioning.image"
BUILT_LABEL = "io.provisioning.rootfs-built-at"
#: what turns a root file system into a machine image: systemd as PID 1 (the stop signal,
#: SIGRTMIN+3, is set on each container: import cannot set it)
SYSTEMD_CHANGES = ('CMD ["/sbin/init"]', "ENV container=docker")


def resolve(image: str) -> tuple[str, str | None]:
    """(engine image reference, Debian suite or None) for the ``image`` option."""
    if not isinstance(image, str) or not image.strip():
        raise ConfigError("image must be debian:SUITE or an image reference the engine knows",
                          key="machine_options.image")
    if image.startswith("debian:"):
        suite = image.split(":", 1)[1]
        resolve_image(image, "/nonexistent")  # checks the suite name (ConfigError)
        return f"{LOCAL_REPOSITORY}:{suite}", suite
    return image, None


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _present(client, reference: str) -> Any:
    import docker.errors

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def ensure_image(client, image: str, *, image_cache: str, mirror: str | None, pull: bool,
                 report: Callable[[str], None]) -> str:
    """The engine reference of a ready image for the ``image`` option (built or pulled once)."""
    reference, suite = resolve(image)
    with engine_errors(f"looking up image {reference}"):
        if _present(client, reference) is not None:
            return reference
    if suite is None:
        report(f"pulling image {reference}")
        with engine_errors(f"pulling image {reference}"):
            client.images.pull(reference)
        return reference
    with _locked(os.path.join(image_cache, f"docker-debian-{suite}.lock")):
        with engine_errors(f"looking up image {reference}"):
            if _present(client, reference) is not None:  # built meanwhile by another run
                return reference
        if pull:
            try:
                return _from_official(client, suite, reference, report)
            except ProviderError as exc:
                report(f"pulling debian:{suite} failed ({exc.provider_message or exc}); "
                       f"building {reference} from a debootstrapped root instead")
        return _from_debootstrap(client, suite, reference, image_cache, mirror, report)


def _from_debootstrap(client, suite: str, reference: str, image_cache: str,
                      mirror: str | None, report: Callable[[str], None]) -> str:
    """``import`` of the nspawn: driver's cached Debian root (debootstrapped once)."""
    root = roots.ensure_image(roots.resolve_image(f"debian:{suite}", image_cache), mirror=mirror,
                              report=report)
    try:
        with open(os.path.join(os.path.dirname(root.rootfs), ".complete"), encoding="utf-8") as fh:
            built = str(json.load(fh).get("built_at", ""))
    except (OSError, ValueError):
        built = ""
    report(f"building image {reference} from {root.rootfs}")
    changes = [*SYSTEMD_CHANGES, f'LABEL {IMAGE_LABEL}="debian:{suite}"',
               f'LABEL {BUILT_LABEL}="{built}"']
    tar = subprocess.Popen(["tar", "-C", root.rootfs, "--numeric-owner", "-cf", "-", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        repository, tag = reference.rsplit(":", 1)
        with engine_errors(f"importing image {reference}"):
            result = client.api.import_image(src=tar.stdout, repository=repository, tag=tag,
                                             changes=changes, stream_src=True)
            # Podman's compatible API ignores the tag: tag the imported image by its id
            ids = re.findall(r"sha256:[0-9a-f]{64}", str(result))
            if not ids:
                raise ProviderError(f"importing image {reference}: the engine did not say "
                                    f"which image it made ({str(result)[:200]})",
                                    provider=PROVIDER)
            client.images.get(ids[-1]).tag(repository, tag)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise ProviderError(f"packing {root.rootfs} for import failed: "
                            f"{tar.stderr.read().decode(errors='replace')[-300:] if tar.stderr else ''}",
                            provider=PROVIDER)
    return reference


def _from_official(client, suite: str, reference: str, report: Callable[[str], None]) -> str:
    """The official debian:SUITE image plus systemd and OpenSSH, committed as ``reference``."""
    report(f"pulling debian:{suite}")
    with engine_errors(f"pulling debian:{suite}"):
        client.images.pull("debian", tag=suite)
    report(f"installing {', '.join(PACKAGES)} into debian:{suite}")
    script = ("export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q "
              f"--no-install-recommends {' '.join(PACKAGES)} && rm -rf /var/lib/apt/lists/* "
              "/etc/ssh/ssh_host_* && : > /etc/machine-id")
    with engine_errors(f"building {reference}"):
        builder = client.containers.run(f"debian:{suite}", ["sh", "-c", script], detach=True)
        try:
            status = builder.wait()
            if status.get("StatusCode") != 0:
                tail = builder.logs(tail=20).decode(errors="replace")
                raise ProviderError(f"installing packages into debian:{suite} failed: {tail}",
                                    provider=PROVIDER, provider_message=tail)
            repository, tag = reference.rsplit(":", 1)
            made = builder.commit(changes=[*SYSTEMD_CHANGES,
                                           f'LABEL {IMAGE_LABEL}="debian:{suite}"'])
            made.tag(repository, tag)
        finally:
            with contextlib.suppress(Exception):
                builder.remove(force=True, v=True)
    return reference
