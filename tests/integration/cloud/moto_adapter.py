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
5. moto's ``GetPasswordData`` answers 128 random characters for a Windows AMI (nothing
   encrypted, so nothing can decrypt it) and an empty string for other AMIs. A test that needs
   what EC2 really serves registers, by machine name, the password a node "generated": the
   adapter then lets moto answer, looks up the node's key pair at moto (``DescribeKeyPairs``
   with ``IncludePublicKey``) and replaces the data with the password encrypted with that public
   key (RSA, PKCS#1 v1.5, base64), as EC2 does; empty for the first ``empty_answers`` requests,
   as while Windows is still booting. Unregistered machines get moto's own answer.
6. moto's ``GetConsoleOutput`` answers one fixed text for every node. A test that needs what a
   node printed (cloud-init's host key fingerprints) registers, by machine name, the console
   text its node serves (``serve_console``); unregistered machines get moto's own answer.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import Counter
from dataclasses import dataclass

from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response

MOTO_NAMESPACE = NAMESPACE.rstrip("/")
_INDEXED = re.compile(r"^(ResourceId|Tag)\.(\d+)(\..*)?$")


@dataclass
class ServedPassword:
    """What GetPasswordData serves for one machine (test side only)."""

    password: str
    empty_answers: int = 0
    requests: int = 0


#: machine name (tag provisioning:name) -> the password its node serves
WINDOWS_PASSWORDS: dict[str, ServedPassword] = {}
_PASSWORDS_LOCK = threading.Lock()


def serve_windows_password(machine: str, password: str, empty_answers: int = 0) -> ServedPassword:
    served = ServedPassword(password, empty_answers)
    with _PASSWORDS_LOCK:
        WINDOWS_PASSWORDS[machine] = served
    return served


#: machine name (tag provisioning:name) -> the console text its node serves
CONSOLES: dict[str, str] = {}

#: how many requests of each action the drivers sent (a test clears it, acts, then counts)
ACTIONS: Counter[str] = Counter()


def serve_console(machine: str, text: str) -> None:
    with _PASSWORDS_LOCK:
        CONSOLES[machine] = text


def _ns(path: str) -> str:
    return "/".join(f"{{{NAMESPACE}}}{part}" for part in path.split("/"))


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
            with _PASSWORDS_LOCK:
                ACTIONS[str(name)] += 1
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
        response = super().request(action, params, *args, **kwargs)
        if params and params.get("Action") == "GetPasswordData":
            self._serve_password(action, str(params["InstanceId"]), response.object)
        if params and params.get("Action") == "GetConsoleOutput":
            self._serve_console(action, str(params["InstanceId"]), response.object)
        return response

    def _tags(self, action, instance_id: str):
        described = self.request(action, params={"Action": "DescribeInstances",
                                                 "InstanceId.1": instance_id}).object
        instance = described.find(".//" + _ns("instancesSet/item"))
        return instance, {item.findtext(_ns("key")): item.findtext(_ns("value"))
                          for item in instance.findall(_ns("tagSet/item"))}

    def _serve_console(self, action, instance_id: str, reply) -> None:
        _, tags = self._tags(action, instance_id)
        with _PASSWORDS_LOCK:
            text = CONSOLES.get(tags.get("provisioning:name", ""))
        if text is not None:
            reply.find(_ns("output")).text = base64.b64encode(text.encode()).decode("ascii")

    def _serve_password(self, action, instance_id: str, reply) -> None:
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key

        instance, tags = self._tags(action, instance_id)
        with _PASSWORDS_LOCK:
            served = WINDOWS_PASSWORDS.get(tags.get("provisioning:name", ""))
            if served is None:
                return                                     # moto's own answer
            served.requests += 1
            empty = served.requests <= served.empty_answers
        target = reply.find(_ns("passwordData"))
        if empty:
            target.text = ""
            return
        key_name = instance.findtext(_ns("keyName"))
        pairs = self.request(action, params={"Action": "DescribeKeyPairs", "KeyName.1": key_name,
                                             "IncludePublicKey": "true"}).object
        public = load_ssh_public_key(pairs.findtext(".//" + _ns("keySet/item/publicKey"))
                                     .strip().encode())
        encrypted = public.encrypt(served.password.encode("utf-8"), padding.PKCS1v15())
        target.text = base64.b64encode(encrypted).decode("ascii")


class MotoEC2NodeDriver(EC2NodeDriver):
    connectionCls = MotoEC2Connection


class NoConsoleEC2NodeDriver(MotoEC2NodeDriver):
    """A provider that serves no console output (for the host key policy without it)."""

    ex_get_console_output = None
