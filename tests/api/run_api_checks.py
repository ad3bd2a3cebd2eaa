#!/usr/bin/env python3
"""Checks a real Haven with real peers: starts `haven serve --demo` on a free loopback port with
a fresh data directory, signs in as demo users (password + TOTP), then
1. validates the audit trail's FHIR export with the `fhir.resources` package (R4B models, whose
   AuditEvent is R4's) and the JSON Lines export line by line;
2. runs schemathesis against the served OpenAPI document as the admin: any 5xx, or any
   response the document does not describe, fails.

Usage: run_api_checks.py HAVEN_BINARY [extra schemathesis args]
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


def get(base: str, path: str, token: str) -> tuple[str, bytes]:
    req = urllib.request.Request(base + path)
    req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.headers.get("content-type", ""), resp.read()


def sign_in(base: str, account: tuple[str, str, str]) -> str:
    username, password, secret = account
    pending = post(base, "/api/v1/auth/login", {"username": username, "password": password})
    active = post(base, "/api/v1/auth/mfa/verify", {"code": totp(secret, time.time())}, pending["token"])
    assert active["state"] == "active", active
    return active["token"]


def check_fhir_export(base: str, token: str) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.bundle import Bundle

    ctype, body = get(base, "/api/v1/audit/export?format=fhir", token)
    assert ctype.startswith("application/fhir+json"), ctype
    data = json.loads(body)
    bundle = Bundle.model_validate(data)
    assert bundle.type == "collection"
    resources = [e["resource"] for e in data["entry"]]
    assert len(resources) >= 12, f"expected the demo's events, got {len(resources)}"
    for r in resources:
        event = AuditEvent.model_validate(r)
        assert event.outcome in ("0", "4", "8")
        assert event.agent and event.source.observer
    subtypes = {r["subtype"][0]["code"] for r in resources}
    for needed in ("organization-create", "user-create", "mfa-enroll", "login-password", "mfa-verify"):
        assert needed in subtypes, f"{needed} missing from {sorted(subtypes)}"
    ctype, body = get(base, "/api/v1/audit/export?format=jsonl", token)
    assert ctype.startswith("application/x-ndjson"), ctype
    lines = body.decode().splitlines()
    assert len(lines) >= len(resources)
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == sorted(seqs), "JSON Lines export is in log order"
    print(f"FHIR export: {len(resources)} AuditEvents validated by fhir.resources; JSON Lines: {len(lines)} lines", flush=True)
    check_consent_export(base, token)


def check_consent_export(base: str, token: str) -> None:
    """The consent ledger's export: a Bundle of FHIR Consent resources (the demo's two patients
    consented to two purposes each at the front desk)."""
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.consent import Consent

    _, body = get(base, "/api/v1/consent/export", token)
    data = json.loads(body)
    Bundle.model_validate(data)
    resources = [e["resource"] for e in data["entry"]]
    assert len(resources) == 4, f"expected the demo's 4 consent entries, got {len(resources)}"
    for r in resources:
        consent = Consent.model_validate(r)
        assert consent.status == "active" and consent.provision.type == "permit"
        assert consent.patient.reference.startswith("Patient/")
        assert consent.sourceAttachment.data, "the wording shown is kept"
    print(f"Consent export: {len(resources)} Consents validated by fhir.resources", flush=True)


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
        accounts = {}
        base = None
        started = time.time()
        for line in server.stdout:
            fields = line.split()
            if len(fields) == 4 and fields[0] in ("admin", "compliance.chen"):
                accounts[fields[0]] = (fields[0], fields[2], fields[3])
            m = re.match(r"Haven is listening on (http://\S+)", line)
            if m:
                base = m.group(1)
                break
        if not base or len(accounts) != 2:
            print("haven did not start or print the demo accounts", file=sys.stderr)
            return 1
        # The demo enrolment used the current TOTP step: wait for the next one.
        time.sleep(30 - (time.time() % 30) + 1 if time.time() - started < 31 else 0)
        check_fhir_export(base, sign_in(base, accounts["compliance.chen"]))
        token = sign_in(base, accounts["admin"])
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
