#!/usr/bin/env python3
"""Runs schemathesis against a real Haven: starts `haven serve --demo` on a free loopback port
with a fresh data directory, signs in as the demo admin (password + TOTP), and fuzzes every
operation of the served OpenAPI document with that session. Fails on any 5xx and on any response
that the document does not describe.

Usage: run_schemathesis.py HAVEN_BINARY [extra schemathesis args]
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request


def totp(secret_b32: str, at: float) -> str:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 15
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1_000_000)


def post(base: str, path: str, body: dict, token: str | None = None) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def main() -> int:
    binary = sys.argv[1]
    extra = sys.argv[2:]
    data_dir = tempfile.mkdtemp(prefix="haven-schemathesis-")
    env = dict(os.environ, HAVEN_DATA_DIR=data_dir, HAVEN_LOG_LEVEL="warn")
    server = subprocess.Popen(
        [binary, "serve", "--demo", "--bind", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        admin = None
        base = None
        started = time.time()
        for line in server.stdout:
            fields = line.split()
            if fields and fields[0] == "admin" and len(fields) >= 4:
                admin = (fields[2], fields[3])
            m = re.match(r"Haven is listening on (http://\S+)", line)
            if m:
                base = m.group(1)
                break
        if not base or not admin:
            print("haven did not start or print the demo accounts", file=sys.stderr)
            return 1
        # The demo enrolment used the current TOTP step: wait for the next one.
        time.sleep(30 - (time.time() % 30) + 1 if time.time() - started < 31 else 0)
        password, secret = admin
        pending = post(base, "/api/v1/auth/login", {"username": "admin", "password": password})
        active = post(base, "/api/v1/auth/mfa/verify", {"code": totp(secret, time.time())}, pending["token"])
        assert active["state"] == "active", active
        token = active["token"]
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"),
            "run",
            base + "/api/openapi.json",
            "--header",
            "Authorization: Bearer " + token,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            # Signing out would end the session the run depends on.
            "--exclude-path-regex",
            "logout",
            "--max-examples",
            os.environ.get("HAVEN_SCHEMATHESIS_EXAMPLES", "40"),
            "--seed",
            "1",
            "--no-color",
        ] + extra
        print("+", " ".join(c if "Bearer" not in c else "Authorization: Bearer ***" for c in cmd), flush=True)
        result = subprocess.run(cmd, env=dict(os.environ, SCHEMATHESIS_HOOKS=""))
        return result.returncode
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
