"""``libcloud:PROVIDER[:PLACE]`` URLs: parse, and canonicalize so one warehouse has one URL.

PLACE is what tells warehouses of one provider apart: a region for EC2 (``libcloud:ec2:us-east-1``),
a project for GCE (``libcloud:gce:my-project``), the identity endpoint for OpenStack
(``libcloud:openstack:https://keystone.example:5000``, colons and all). For EC2 a PLACE that is
not a region but an AWS profile name is resolved to the profile's region and access key id
(``libcloud:ec2:REGION:AKIA...``); the secret is never part of a URL.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

from provisioning.drivers.libcloud_parts.credentials import aws_profiles, resolve_credentials
from provisioning.errors import InvalidDriverURL
from provisioning.inputs.records import record
from provisioning.inputs.schema import closest

if TYPE_CHECKING:  # pragma: no cover
    from provisioning.config import Config

__all__ = ["CloudURL", "parse_cloud_url", "canonicalize", "options_for", "EC2_DEFAULT_REGION"]

EC2_DEFAULT_REGION = "us-east-1"
_ALIASES = {"aws": "ec2", "amazon": "ec2", "google": "gce", "azure": "azure_arm",
            "digitalocean": "digital_ocean", "do": "digital_ocean"}


@record(frozen=True)
class CloudURL:
    provider: str
    place: str = ""
    key_id: str = ""        # EC2 only: which access key (from a profile named in the URL)

    def __str__(self) -> str:
        text = f"libcloud:{self.provider}"
        if self.place:
            text += f":{self.place}"
        if self.key_id:
            text += f":{self.key_id}"
        return text


def known_providers() -> list[str]:
    """Every compute provider this libcloud knows (imports libcloud)."""
    from libcloud.compute.providers import DRIVERS

    return sorted(str(getattr(p, "value", p)) for p in DRIVERS)


def _provider_name(raw: str, url: str) -> str:
    name = raw.strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if not name:
        raise InvalidDriverURL(url, "name a libcloud provider: libcloud:PROVIDER[:REGION_OR_PROJECT]"
                                    ", e.g. libcloud:ec2:us-east-1")
    known = known_providers()
    if name not in known:
        close = closest(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "see libcloud.compute.types.Provider for the list"
        raise InvalidDriverURL(url, f"libcloud has no compute provider {raw!r}; {hint}")
    return name


def parse_cloud_url(url: str) -> CloudURL:
    scheme, _, rest = url.partition(":")
    if scheme != "libcloud":
        raise InvalidDriverURL(url, "expected libcloud:PROVIDER[:REGION_OR_PROJECT]")
    provider, _, place = rest.partition(":")
    provider = _provider_name(provider, url)
    if provider == "ec2":
        region, _, key_id = place.partition(":")
        return CloudURL(provider, region, key_id)
    return CloudURL(provider, place.rstrip("/"))


def options_for(config: "Config", provider: str, *urls: str) -> dict[str, Any]:
    """Options under ``libcloud:``, ``libcloud:PROVIDER`` and the URLs given (later win): one
    place for credentials or an endpoint serves every region."""
    return config.driver_options_for("libcloud:", "libcloud", f"libcloud:{provider}", *urls)


def _ec2_regions() -> list[str]:
    from libcloud.compute.drivers.ec2 import EC2NodeDriver

    return list(EC2NodeDriver.list_regions())


def canonicalize(url: str, config: "Config", env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    parsed = parse_cloud_url(url)
    options = options_for(config, parsed.provider, url)
    if parsed.provider != "ec2":
        place = parsed.place or str(options.get("region") or options.get("project") or "")
        return str(CloudURL(parsed.provider, place.rstrip("/")))
    regions = _ec2_regions()
    extra = set(map(str, options.get("extra_regions") or []))
    region, key_id = parsed.place, parsed.key_id
    if region and region not in regions and region not in extra:
        profiles = aws_profiles(env)
        if region in profiles:
            creds = resolve_credentials("ec2", {}, env=env, profile=region)
            return str(CloudURL("ec2", options.get("region") or creds.region
                                or EC2_DEFAULT_REGION, creds.key or ""))
        close = closest(region, regions + sorted(profiles), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else \
            f"regions: {', '.join(regions)}"
        raise InvalidDriverURL(url, f"{region!r} is neither an EC2 region nor an AWS profile; "
                                    f"{hint}")
    if not region:
        profile = options.get("profile") or env.get("AWS_PROFILE")
        region = (options.get("region") or (profile and aws_profiles(env).get(profile, {})
                                            .get("region"))
                  or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or EC2_DEFAULT_REGION)
    if key_id and not key_id.isalnum():
        raise InvalidDriverURL(url, "the part after the region must be an access key id "
                                    "(letters and digits), never a secret")
    return str(CloudURL("ec2", str(region), key_id))
