"""Run the WS-Management test server: ``python tests/integration/winrm/server --root DIR ...``.

Prints ``READY <port>`` on stdout once it listens on 127.0.0.1. Users come from a file of
``name:password`` lines (also written, for pyspnego's NTLM acceptor, to the file named by
``NTLM_USER_FILE`` in this process's environment).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import interp  # noqa: E402
import wsman  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="host directory standing in for drive C:")
    parser.add_argument("--users", required=True, help="file of name:password lines")
    parser.add_argument("--auth", default="basic,ntlm", help="comma-separated: basic, ntlm")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", help="PEM certificate: serve HTTPS")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument("--allow-unencrypted", action="store_true",
                        help="accept Basic and unencrypted messages over plain HTTP")
    parser.add_argument("--max-envelope-kb", type=int, default=150)
    parser.add_argument("--log", help="JSON-lines request log")
    args = parser.parse_args(argv)

    users: dict[str, str] = {}
    with open(args.users, encoding="utf-8") as handle:
        for line in handle:
            name, sep, password = line.rstrip("\n").partition(":")
            if sep:
                users[name.lower()] = password
                interp.USERS[f"{interp.COMPUTER.lower()}\\{name.lower()}"] = name
    ntlm_file = tempfile.NamedTemporaryFile("w", prefix="ntlm-users-", delete=False)
    with ntlm_file:
        for name, password in users.items():
            ntlm_file.write(f":{name}:{password}\n{interp.COMPUTER}:{name}:{password}\n")
    os.chmod(ntlm_file.name, 0o600)
    os.environ["NTLM_USER_FILE"] = ntlm_file.name

    context = cert_der = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        with open(args.cert, "rb") as handle:
            cert_der = ssl.PEM_cert_to_DER_cert(handle.read().decode("ascii"))
    server = wsman.WSManServer(
        ("127.0.0.1", args.port), fs=interp.WinFS(args.root), users=users,
        auth={a.strip() for a in args.auth.split(",") if a.strip()}, tls_context=context,
        cert_der=cert_der, allow_unencrypted=args.allow_unencrypted,
        max_envelope_kb=args.max_envelope_kb, log_path=args.log)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        os.unlink(ntlm_file.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
