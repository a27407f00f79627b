"""Fixtures for docker: tests: one dockerd and one Podman API service per test session, each
started by the suite in its own network namespace (provisioning.testing.engines) and stopped by
PID at the end; the Debian image built once per engine from the cached debootstrap root."""

from __future__ import annotations

import atexit
import os

import pytest

from provisioning.testing.engines import DockerEngine, PodmanService, engine_missing

DEFAULT_CACHE = "/var/cache/provisioning-test-images"
ENGINES = ("docker", "podman")


def image_cache() -> str:
    """The debootstrap cache shared with the nspawn: tests and the conformance workers."""
    cache = os.environ.get("PROVISIONING_NSPAWN_IMAGE_CACHE") or DEFAULT_CACHE
    os.environ["PROVISIONING_NSPAWN_IMAGE_CACHE"] = cache
    return cache


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.docker)


#: one engine per kind for the whole session, however many fixtures ask for it; stopped when
#: the session's fixtures are torn down, and at interpreter exit should a teardown be missed
_STARTED: dict = {}


def _engine(kind: str):
    reason = engine_missing(kind)
    if reason:
        pytest.skip(reason)
    if kind in _STARTED:
        yield _STARTED[kind]
        return
    engine = (DockerEngine() if kind == "docker" else PodmanService()).start()
    atexit.register(engine.stop)  # stop() is idempotent: a second call finds nothing to do
    _STARTED[kind] = engine
    try:
        from provisioning.drivers.docker_engine import image

        client = engine.client()
        try:
            image.ensure_image(client, "debian:bookworm", image_cache=image_cache(), mirror=None,
                               pull=False, report=lambda text: None)
        finally:
            client.close()
        yield engine
    finally:
        _STARTED.pop(kind, None)
        engine.stop()
        assert not engine.leftover_pids(), "the engine's processes outlived it"


@pytest.fixture(scope="session")
def docker_engine():
    yield from _engine("docker")


@pytest.fixture(scope="session")
def podman_engine():
    yield from _engine("podman")


@pytest.fixture(scope="session", params=ENGINES)
def engine(request):
    """Each test that takes ``engine`` runs on Docker and on Podman."""
    return request.getfixturevalue(f"{request.param}_engine")


def driver_options(engine, tmp_path) -> dict:
    return {**engine.driver_options, "image_cache": image_cache(), "pull": False,
            "keys_dir": str(tmp_path / "keys")}


def sweep(driver) -> list[str]:
    """Remove every container and snapshot image of this driver URL; returns what was left."""
    from provisioning.drivers.docker_engine.container import LABEL_SNAPSHOT_OF, LABEL_URL

    left = []
    client = driver.client
    for found in client.containers.list(all=True, filters={"label": f"{LABEL_URL}={driver.driver_url}"}):
        left.append(found.name)
        found.remove(force=True, v=True)
    for image in client.images.list(filters={"label": LABEL_SNAPSHOT_OF}):
        left.append(f"snapshot image {image.tags or image.id}")
        client.images.remove(image.id, force=True)
    return left
