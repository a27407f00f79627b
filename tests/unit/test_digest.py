"""The start's SHA-256 (``provisioning.inputs.digest``) is hashlib's, without loading hashlib."""

import hashlib
import subprocess
import sys

from provisioning.inputs.digest import sha256_hex


def test_the_digest_is_hashlibs():
    for data in (b"", b"abc", b"up\0web-1\0web-2", bytes(range(256)) * 1000):
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_a_run_key_is_computed_without_loading_hashlib():
    code = ("import sys\nfrom provisioning.cluster.claims import run_key\n"
            "key = run_key('up', ['web-2', 'web-1'])\n"
            "print(key, 'hashlib' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    digest = hashlib.sha256(b"up\0web-1\0web-2").hexdigest()
    assert out == [f"up:{digest[:24]}", "False"]
