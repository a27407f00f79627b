"""Fixtures for the kitchen tests on nspawn: one warehouse and one state store for the session.

Images built from ``images:`` (PostgreSQL and Python from each release's packages) are keyed by
driver URL and recorded in the state store, so every test that names the same image definition
(``PG_IMAGES``) on this session's warehouse reuses the one built first: each is built once per
session (about two and a half minutes), the Debian base images once per machine (the shared
cache of the nspawn tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

RELEASES = ("bookworm", "trixie")
#: the images of examples/two-tier (kept equal to it: the ansible test reuses pg-bookworm)
PG_IMAGES = {f"pg-{r}": {"from": f"debian:{r}", "packages": ["postgresql", "python3"]}
             for r in RELEASES}


@dataclass(frozen=True)
class Site:
    """Where this session's nspawn machines live."""

    url: str
    state: str
    image_cache: str

    def header(self, images: dict | None = None) -> str:
        """The top of a cluster file on this warehouse (YAML flow mappings are JSON)."""
        import json

        text = (f'driver: "{self.url}"\n'
                f'driver_options: {{"{self.url}": {{image_cache: {self.image_cache}}}}}\n'
                f"state: {self.state}\n")
        if images:
            text += f"images: {json.dumps(images)}\n"
        return text


@pytest.fixture(scope="session")
def nspawn_site(tmp_path_factory) -> Site:
    from tests.integration.nspawn.conftest import DEFAULT_CACHE, _why_not

    reason = _why_not()
    if reason:
        pytest.skip(reason)
    from provisioning.drivers.nspawn import IMAGE_CACHE_ENV
    from provisioning.drivers.nspawn_host import image

    cache = os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE
    os.environ[IMAGE_CACHE_ENV] = cache
    for release in RELEASES:
        image.ensure_image(image.resolve_image(f"debian:{release}", cache))
    base: Path = tmp_path_factory.mktemp("kitchen-nspawn")
    site = Site(url=f"nspawn:{base / 'warehouse'}", state=str(base / "state.db"),
                image_cache=cache)
    yield site
    _sweep(site)


def _sweep(site: Site) -> None:
    """Destroy whatever machine a failed test left in the session's warehouse."""
    from provisioning.config import Config
    from provisioning.registry import driver_for_url
    from tests.integration.nspawn.conftest import sweep

    config = Config({"driver_options": {site.url: {"image_cache": site.image_cache}}})
    sweep(driver_for_url(site.url, config))
