"""Test-side adapter between libcloud 3.x's EC2 driver and moto 5.x's server.

Lives in tests, never in the driver: the driver takes it through the generic ``driver_class``
option. Each fix names the moto behaviour it works around (verified against moto 5.2):

1. moto answers in namespace ``.../2016-11-15`` where libcloud expects ``.../2016-11-15/``:
   libcloud's XPath then finds nothing and every list comes back silently empty.
2. moto's error bodies carry that namespace and extra elements (``<Type>``), so libcloud's error
   parser either finds no error or fails to unpack ``(Code, Message)``.
3. moto reads list parameters from index 1: libcloud's ``CreateTags``/``DeleteTags`` send
   ``ResourceId.0`` and ``Tag.0.*``, and ``DescribeKeyPairs`` an unindexed ``KeyName``.
4. ``DetachVolume`` without ``InstanceId`` crashes moto (HTTP 500): look the instance up first.
"""

from __future__ import annotations

import re

from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response

MOTO_NAMESPACE = NAMESPACE.rstrip("/")
_INDEXED = re.compile(r"^(ResourceId|Tag)\.(\d+)(\..*)?$")


class MotoEC2Response(EC2Response):
    def parse_body(self):
        if isinstance(self.body, str):
            self.body = self.body.replace(f'xmlns="{MOTO_NAMESPACE}"', f'xmlns="{NAMESPACE}"')
        return super().parse_body()

    def parse_error(self):
        if isinstance(self.body, str):
            body = self.body.replace(f' xmlns="{MOTO_NAMESPACE}"', "")
            body = body.replace(f' xmlns="{NAMESPACE}"', "")
            # keep only <Code> and <Message> inside <Error>, as real EC2 sends them
            self.body = re.sub(r"<(Type|Detail)>.*?</\1>|<(Type|Detail)\s*/>", "", body,
                               flags=re.S)
        return super().parse_error()


def _shift_indexes(params: dict) -> dict:
    """``ResourceId.0``/``Tag.0.Key`` -> ``.1`` (every index + 1) when libcloud starts at 0."""
    if not any(_INDEXED.match(k) and _INDEXED.match(k).group(2) == "0" for k in params):
        return params
    out = {}
    for key, value in params.items():
        match = _INDEXED.match(key)
        if match:
            key = f"{match.group(1)}.{int(match.group(2)) + 1}{match.group(3) or ''}"
        out[key] = value
    return out


class MotoEC2Connection(EC2Connection):
    responseCls = MotoEC2Response

    def request(self, action, params=None, *args, **kwargs):
        if params:
            params = dict(params)
            name = params.get("Action")
            if name in ("CreateTags", "DeleteTags"):
                params = _shift_indexes(params)
            elif name == "DescribeKeyPairs" and "KeyName" in params:
                params["KeyName.1"] = params.pop("KeyName")
            elif name == "DetachVolume" and "InstanceId" not in params:
                volumes = super().request(action, params={
                    "Action": "DescribeVolumes", "VolumeId.1": params["VolumeId"]}).object
                found = volumes.find(f".//{{{NAMESPACE}}}attachmentSet/{{{NAMESPACE}}}item/"
                                     f"{{{NAMESPACE}}}instanceId")
                if found is not None:
                    params["InstanceId"] = found.text
        return super().request(action, params, *args, **kwargs)


class MotoEC2NodeDriver(EC2NodeDriver):
    connectionCls = MotoEC2Connection
