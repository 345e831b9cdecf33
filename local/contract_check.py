"""`make test`'s contract check: a stranger's fuzzer against the platform's own contract.

Given a running local server, it validates the served OpenAPI document against the OpenAPI
3.1 schema, signs in as the platform admin and as a freshly created tenant admin (all
sign-ins first: fuzzing the login route uses up the per-source rate limit), then runs
schemathesis from the served document once per token, with every check, a bounded number
of examples and a fixed seed, so a run takes the same time and finds the same things.

Usage: contract_check.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD
Environment: DOTMAC_CONTRACT_EXAMPLES (default 25), DOTMAC_CONTRACT_SEED (default 20261201).
Exit status: 0 when every pass is clean, else 1.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from openapi_spec_validator import validate

# Sign-out ends the token the pass runs with, so it gets a pass (and a token) of its own;
# sign-out everywhere ends every session of its user, so its pass runs as a user of its own.
SIGN_OUT = "logout"
SIGN_OUT_EVERYWHERE = "logout_all"


def call(base: str, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        sys.exit(f"{method} {path} answered {error.code}: {error.read().decode()[:500]}")
    return json.loads(text) if text else {}


def wait_until_up(base: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                sys.exit(f"the platform at {base} did not answer within {seconds:.0f} s")
            time.sleep(0.25)


def sign_in(base: str, email: str, password: str) -> str:
    return call(base, "POST", "/v1/auth/login", {"email": email, "password": password})["access_token"]


def own_staff_token(base: str, admin: str) -> str:
    """A platform admin of its own (platform staff create staff directly), signed in."""
    email, password = f"staff-{uuid.uuid4().hex[:8]}@contract.example", f"Kx9#{uuid.uuid4().hex}"
    call(base, "POST", "/v1/users", {"email": email, "password": password, "roles": ["platform_admin"]}, admin)
    return sign_in(base, email, password)


def tenant_admin_token(base: str, admin: str) -> str:
    """A tenant of its own and its admin, made through the API like any client would."""
    slug = f"contract-{uuid.uuid4().hex[:8]}"
    tenant = call(
        base,
        "POST",
        "/v1/tenants",
        {"name": "Contract Check ISP", "slug": slug, "plan": "usage", "contact_email": f"ops@{slug}.example"},
        admin,
    )
    email, password = f"admin@{slug}.example", f"Kx9#{uuid.uuid4().hex}"
    call(
        base,
        "POST",
        "/v1/users",
        {"email": email, "password": password, "roles": ["tenant_admin"], "tenant_id": tenant["id"]},
        admin,
    )
    return sign_in(base, email, password)


def schemathesis(base: str, token: str, label: str, operations: list[str]) -> bool:
    examples = os.environ.get("DOTMAC_CONTRACT_EXAMPLES", "25")
    seed = os.environ.get("DOTMAC_CONTRACT_SEED", "20261201")
    st = Path(sys.executable).with_name("st")
    config = Path(__file__).with_name("schemathesis.toml")
    command = [
        str(st), "--config-file", str(config), "run", f"{base}/v1/openapi.json",
        "--url", base,
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all",
        "--max-examples", examples,
        "--seed", seed,
        "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    command += operations
    print(f"==> schemathesis, {label}: {examples} examples per operation, seed {seed}", flush=True)
    return subprocess.run(command, check=False).returncode == 0


def main() -> None:
    base, admin_email, admin_password = sys.argv[1:4]
    wait_until_up(base)
    with urllib.request.urlopen(f"{base}/v1/openapi.json", timeout=30) as response:
        document = json.load(response)
    validate(document)
    print(f"==> {base}/v1/openapi.json is a valid OpenAPI {document['openapi']} document", flush=True)

    admin = sign_in(base, admin_email, admin_password)
    tenant_admin = tenant_admin_token(base, admin)
    sign_out_token = sign_in(base, admin_email, admin_password)
    everywhere_token = own_staff_token(base, admin)

    keep_signed_in = ["--exclude-operation-id", SIGN_OUT, "--exclude-operation-id", SIGN_OUT_EVERYWHERE]
    passes = [
        ("platform admin", admin, keep_signed_in),
        ("tenant admin", tenant_admin, keep_signed_in),
        ("sign-out", sign_out_token, ["--include-operation-id", SIGN_OUT]),
        ("sign-out everywhere", everywhere_token, ["--include-operation-id", SIGN_OUT_EVERYWHERE]),
    ]
    failed = [label for label, token, operations in passes if not schemathesis(base, token, label, operations)]
    if failed:
        sys.exit(f"schemathesis found problems in the {', '.join(failed)} pass(es); see above")
    print("==> contract check: every pass clean", flush=True)


if __name__ == "__main__":
    main()
