"""Where a libcloud driver's credentials come from, in order, and nothing else.

1. ``key``/``secret``/``token`` (and provider-specific constructor secrets) in the driver's
   options or in the config's ``credentials`` for ``libcloud:``, ``libcloud:PROVIDER`` or the URL;
2. for EC2: a named profile (option ``profile``, or a profile named in the URL) from
   ``~/.aws/credentials`` (``$AWS_SHARED_CREDENTIALS_FILE``), region from ``~/.aws/config``
   (``$AWS_CONFIG_FILE``); then ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
   ``AWS_SESSION_TOKEN``; then ``AWS_PROFILE``; then the ``default`` profile.

A canonical EC2 URL may end in an access key id (``libcloud:ec2:REGION:AKIA...``, when the URL
named a profile): then the source holding that key id is chosen wherever it is. The secret never
leaves the ``Credentials`` object: its repr masks it and nothing here logs.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import field
from typing import Any, Mapping

from provisioning.errors import ConfigError
from provisioning.inputs.records import record

__all__ = ["Credentials", "aws_profiles", "aws_profile_region", "resolve_credentials"]

#: option names that hold secrets (never logged, never stored)
SECRET_OPTIONS = ("key", "secret", "token")


@record(frozen=True)
class Credentials:
    key: str | None
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    #: where they came from, for error messages ("profile prod in ~/.aws/credentials")
    source: str = "none"
    #: the region a profile names, if any
    region: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(key={self.key_hint!r}, source={self.source!r})"

    @property
    def key_hint(self) -> str:
        """The key id shortened for messages (AKIA...WXYZ)."""
        if not self.key:
            return "(none)"
        return self.key if len(self.key) <= 8 else f"{self.key[:4]}...{self.key[-4:]}"


def _files(env: Mapping[str, str]) -> tuple[str, str]:
    creds = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials")
    conf = env.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    return creds, conf


def _read_ini(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise ConfigError(f"cannot parse AWS file: {exc}", file=path) from exc
    return parser


def aws_profiles(env: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """profile name -> settings, from the shared credentials and config files (merged)."""
    env = os.environ if env is None else env
    creds_path, conf_path = _files(env)
    out: dict[str, dict[str, str]] = {}
    conf = _read_ini(conf_path)
    for section in conf.sections():
        name = section[len("profile "):].strip() if section.startswith("profile ") else section
        out.setdefault(name, {}).update(conf[section])
    creds = _read_ini(creds_path)
    for section in creds.sections():
        out.setdefault(section, {}).update(creds[section])
    return out


def aws_profile_region(name: str, env: Mapping[str, str] | None = None) -> str | None:
    return aws_profiles(env).get(name, {}).get("region")


def _from_profile(name: str, settings: Mapping[str, str], env: Mapping[str, str]) -> Credentials:
    key = settings.get("aws_access_key_id")
    if not key or not settings.get("aws_secret_access_key"):
        raise ConfigError(f"AWS profile {name!r} has no aws_access_key_id/aws_secret_access_key "
                          f"(searched {_files(env)[0]}); SSO and role profiles are not supported: "
                          "export temporary keys to AWS_ACCESS_KEY_ID/... instead",
                          key="driver_options.profile")
    return Credentials(key=key, secret=settings["aws_secret_access_key"],
                       token=settings.get("aws_session_token"),
                       source=f"AWS profile {name!r} in {_files(env)[0]}",
                       region=settings.get("region"))


def resolve_credentials(provider: str, options: Mapping[str, Any], *,
                        env: Mapping[str, str] | None = None, key_id: str | None = None,
                        profile: str | None = None) -> Credentials:
    """The credentials to use (see the module docstring for the order)."""
    env = os.environ if env is None else env
    explicit = Credentials(key=options.get("key"), secret=options.get("secret"),
                           token=options.get("token"), source="driver options / config credentials")
    if provider != "ec2":
        if not explicit.key:
            raise ConfigError(f"no credentials for libcloud provider {provider!r}: set key and "
                              "secret in the config's credentials for this URL (or driver_args "
                              "for provider-specific ones)", key="credentials")
        return explicit
    candidates: list[Credentials] = []
    if explicit.key:
        candidates.append(explicit)
    profiles = aws_profiles(env)
    named = profile or options.get("profile")
    if named:
        if named not in profiles:
            raise ConfigError(f"AWS profile {named!r} not found in {_files(env)[0]} or "
                              f"{_files(env)[1]}; known: {', '.join(sorted(profiles)) or '(none)'}",
                              key="driver_options.profile")
        candidates.append(_from_profile(named, profiles[named], env))
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        candidates.append(Credentials(key=env["AWS_ACCESS_KEY_ID"],
                                      secret=env["AWS_SECRET_ACCESS_KEY"],
                                      token=env.get("AWS_SESSION_TOKEN"),
                                      source="environment AWS_ACCESS_KEY_ID"))
    env_profile = env.get("AWS_PROFILE")
    if env_profile and env_profile in profiles and env_profile != named:
        candidates.append(_from_profile(env_profile, profiles[env_profile], env))
    if "default" in profiles and profiles["default"].get("aws_access_key_id") \
            and "default" not in (named, env_profile):
        candidates.append(_from_profile("default", profiles["default"], env))
    if key_id:
        for name, settings in profiles.items():
            if settings.get("aws_access_key_id") == key_id:
                candidates.append(_from_profile(name, settings, env))
        for found in candidates:
            if found.key == key_id:
                return found
        raise ConfigError(f"the driver URL names access key id {key_id!r}, but no credential "
                          "source holds it (driver options, config credentials, AWS env vars, "
                          f"profiles in {_files(env)[0]})", key="driver")
    if not candidates:
        raise ConfigError("no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, a profile in ~/.aws/credentials (option "
                          "'profile'), or key/secret in the config's credentials for this URL",
                          key="credentials")
    return candidates[0]
