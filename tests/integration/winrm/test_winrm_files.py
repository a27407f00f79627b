"""File and directory transfer over WinRM: chunked base64 through PowerShell, SHA-256 on both
sides, atomic replacement on the remote side, skipped when unchanged."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from provisioning.actions import RecordingActionHandler
from provisioning.errors import TransferError
from provisioning.machine.windows import WindowsMachine
from provisioning.transports.base import sha256_file

pytestmark = pytest.mark.timeout(300)

MIB = 1024 * 1024


def _leftovers(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if ".provisioning-" in name]


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", [("http", "ntlm"), ("https", "basic")], indirect=True,
                         ids=["http-ntlm-encrypted", "https-basic"])
def test_20_mib_upload_and_download_verified_by_hash(endpoint, make_transport, tmp_path):
    server, auth = endpoint
    transport = make_transport(server, auth)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * MIB))
    digest = sha256_file(source)
    remote = "C:\\Data\\big.bin"

    started = time.monotonic()
    transport.upload_file(str(source), remote)
    upload_s = time.monotonic() - started
    on_server = server.host_path(remote)
    assert sha256_file(on_server) == digest
    assert transport.remote_sha256(remote) == digest
    assert not _leftovers(os.path.dirname(on_server))

    back = tmp_path / "back.bin"
    started = time.monotonic()
    transport.download_file(remote, str(back))
    download_s = time.monotonic() - started
    assert sha256_file(back) == digest
    assert not _leftovers(str(tmp_path))
    print(f"\n20 MiB over {server.scheme}/{auth}: upload {upload_s:.1f} s, download {download_s:.1f} s")

    sends = [e for e in server.events(0, "send")]
    assert sends and max(e["size"] for e in sends) <= 150 * 1024  # fits the smallest MaxEnvelopeSize


def test_second_upload_is_skipped(http_server, make_transport, tmp_path):
    transport = make_transport(http_server)
    machine = WindowsMachine("win-1", transport, action_handler=RecordingActionHandler())
    source = tmp_path / "app.cfg"
    source.write_bytes(b"setting = 1\r\n" * 1000)
    remote = "C:\\App\\app.cfg"

    since = time.time()
    assert machine.upload_file(str(source), remote) is True
    assert machine.upload_file(str(source), remote) is False
    scripts = [e["script"] or "" for e in http_server.events(since, "command")]
    assert sum("| Receive-ProvisioningFile" in s for s in scripts) == 1
    assert sum("Get-ProvisioningSha256 -Path" in s for s in scripts) == 2

    source.write_bytes(b"setting = 2\r\n")
    assert machine.upload_file(str(source), remote) is True
    with open(http_server.host_path(remote), "rb") as handle:
        assert handle.read() == b"setting = 2\r\n"
    actions = machine.action_handler.parent.descriptions()
    assert any("upload C:\\App\\app.cfg" in a for a in actions)
    assert any("update C:\\App\\app.cfg" in a and "sha256 differs" in a for a in actions)


def test_write_and_read_small_files(https_server, make_transport):
    transport = make_transport(https_server, "ntlm")
    assert transport.read_file("C:\\nothing\\here.txt") is None
    assert transport.remote_sha256("C:\\nothing\\here.txt") is None
    content = "ünïcode line\r\n".encode() * 3
    transport.write_file("C:\\Small\\a.txt", content)
    assert transport.read_file("c:/small/A.TXT") == content  # Windows paths: any case, any slash
    transport.write_file("C:\\Small\\empty.txt", b"")
    assert transport.read_file("C:\\Small\\empty.txt") == b""
    assert transport.remote_sha256("C:\\Small\\empty.txt") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(TransferError, match="does not exist"):
        transport.download_file("C:\\nothing\\here.txt", "/tmp/should-not-exist-winrm-test")


def test_a_wrong_hash_is_refused_and_the_target_kept(http_server, make_transport):
    transport = make_transport(http_server)
    remote = "C:\\Keep\\file.txt"
    transport.write_file(remote, b"original")
    import io

    with pytest.raises(TransferError, match="sha256 mismatch"):
        transport._upload(io.BytesIO(b"corrupted"), 9, "0" * 64, remote, what="test upload")
    on_server = http_server.host_path(remote)
    with open(on_server, "rb") as handle:
        assert handle.read() == b"original"
    assert not _leftovers(os.path.dirname(on_server))


def test_directories_travel_as_one_zip(http_server, make_transport, tmp_path):
    transport = make_transport(http_server, "basic")
    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "index.html").write_text("<h1>hi</h1>")
    (tree / "css" / "main.css").write_bytes(os.urandom(300_000))
    (tree / "old.txt").write_text("to be removed")
    remote = "C:\\inetpub\\site"

    transport.upload_file(str(tree), remote)
    on_server = http_server.host_path(remote)
    assert open(os.path.join(on_server, "index.html")).read() == "<h1>hi</h1>"
    assert sha256_file(os.path.join(on_server, "css", "main.css")) == sha256_file(tree / "css" / "main.css")
    assert os.path.isdir(os.path.join(on_server, "empty"))

    (tree / "old.txt").unlink()
    (tree / "index.html").write_text("<h1>v2</h1>")
    transport.upload_directory(str(tree), remote)  # replaces the whole directory
    assert sorted(os.listdir(on_server)) == ["css", "empty", "index.html"]
    assert not _leftovers(os.path.dirname(on_server))

    back = tmp_path / "back"
    (back / "stale").mkdir(parents=True)
    transport.download_file(remote, str(back))
    assert sorted(os.listdir(back)) == ["css", "index.html"]  # zip of files; stale dir gone
    assert (back / "index.html").read_text() == "<h1>v2</h1>"
    assert sha256_file(back / "css" / "main.css") == sha256_file(tree / "css" / "main.css")
    with pytest.raises(TransferError, match="directory"):
        transport.read_file(remote)


def test_transfer_timeout_is_a_transfer_error(http_server, make_transport, tmp_path):
    source = tmp_path / "slow.bin"
    source.write_bytes(os.urandom(1 * MIB))
    transport = make_transport(http_server, transfer_timeout=0.1)
    hold = os.path.join(http_server.root, "hold-send")
    open(hold, "w").close()  # the server takes no stdin until the file is gone
    since = time.time() - 1
    failure: list[BaseException] = []

    def upload() -> None:
        try:
            transport.upload_file(str(source), "C:\\Slow\\slow.bin")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        while not http_server.events(since, "send-held"):
            time.sleep(0.02)  # waits for the event, however slow the host
        time.sleep(0.3)  # the held send now outlasts the 0.1 s deadline, on any host
    finally:
        os.remove(hold)
        uploader.join()
    assert failure and isinstance(failure[0], TransferError), failure
    assert "timed out" in str(failure[0])
    assert not os.path.exists(http_server.host_path("C:\\Slow\\slow.bin"))
    assert transport.execute("Write-Output 'still fine'").ok
