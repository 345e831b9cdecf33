"""The Python side of `make bench` row 2: the same work as the Rust GET /v1/tenants/{id}
handler — JWT verify (PyJWT, EdDSA), authorize, route, serialize (json) — done the way the AWS
reference implementations write a Python Lambda handler (event dict in, response dict out).

Usage: handler_bench.py FIXTURE.json
Prints one JSON line: {"median_ns": ..., ...}, the median over samples of the mean time of
one handler call. Bounded: about 1 s of warm-up and 50 samples of ~60 ms each.
"""

import base64
import json
import platform
import statistics
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SAMPLES = 50
SAMPLE_SECONDS = 0.06
WARM_UP_SECONDS = 1.0

# The platform's roles (shared/domain/src/access.rs): resource, action (None = any), scope.
ROLE_PERMISSIONS = {
    "platform_admin": [(None, None, "global")],
    "tenant_admin": [(None, None, "tenant")],
    "customer_user": [
        ("service", "read", "own"),
        ("invoice", "read", "own"),
        ("payment", "create", "own"),
    ],
}


def authorize(caller, resource, action, tenant_id, owner_id=None):
    same_tenant = caller["tenant_id"] is not None and caller["tenant_id"] == tenant_id
    owns = same_tenant and owner_id == caller["user_id"]
    for role in caller["roles"]:
        for p_resource, p_action, scope in ROLE_PERMISSIONS.get(role, ()):
            if p_resource not in (None, resource) or p_action not in (None, action):
                continue
            if scope == "global" or (scope == "tenant" and same_tenant) or (scope == "own" and owns):
                return True
    return False


def error(status, code):
    body = json.dumps({"error": {"code": code, "message": code.lower(), "details": {}}})
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": body}


class Handler:
    def __init__(self, fixture):
        self.public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(fixture["public_key"]))
        self.kid = fixture["kid"]
        self.issuer = fixture["issuer"]
        self.audience = fixture["audience"]
        tenant = fixture["tenant"]
        # The store read, as a dict lookup (the Rust side uses a map the same way).
        self.tenants = {tenant["id"]: tenant}

    def __call__(self, event, context=None):
        headers = event.get("headers") or {}
        authorization = headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return error(401, "UNAUTHENTICATED")
        token = authorization[len("Bearer ") :]
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "EdDSA" or header.get("kid") != self.kid:
                return error(401, "INVALID_TOKEN")
            if header.get("typ") != "at+jwt":
                return error(401, "INVALID_TOKEN")
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=30,
                options={"require": ["exp", "nbf", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            return error(401, "INVALID_TOKEN")
        if claims.get("typ") != "at+jwt":
            return error(401, "INVALID_TOKEN")
        caller = {
            "user_id": claims["sub"],
            "tenant_id": claims.get("tid"),
            "roles": claims.get("roles", []),
        }

        method = event["requestContext"]["http"]["method"]
        path = event["rawPath"]
        prefix = "/v1/tenants/"
        if method != "GET" or not path.startswith(prefix):
            return error(404, "NOT_FOUND")
        raw_id = path[len(prefix) :]
        if not raw_id or "/" in raw_id:
            return error(404, "NOT_FOUND")
        try:
            tenant_id = str(uuid.UUID(raw_id.strip()))
        except ValueError:
            return error(422, "VALIDATION_FAILED")
        if not authorize(caller, "tenant", "read", tenant_id):
            return error(403, "FORBIDDEN")
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return error(404, "TENANT_NOT_FOUND")
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/json"},
            "body": json.dumps(tenant),
        }


def event_for(fixture):
    return {
        "version": "2.0",
        "routeKey": "GET /v1/tenants/{id}",
        "rawPath": fixture["path"],
        "rawQueryString": "",
        "headers": {
            "accept": "application/json",
            "authorization": f"Bearer {fixture['token']}",
        },
        "requestContext": {"http": {"method": "GET", "path": fixture["path"]}},
        "isBase64Encoded": False,
    }


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        fixture = json.load(f)
    handler = Handler(fixture)
    event = event_for(fixture)

    # It must really answer the tenant before its timing counts.
    response = handler(event)
    if response["statusCode"] != 200 or json.loads(response["body"]) != fixture["tenant"]:
        sys.exit(f"the Python handler answered {response['statusCode']}: {response['body']}")

    clock = time.perf_counter
    deadline = clock() + WARM_UP_SECONDS
    iterations = 0
    while clock() < deadline:
        handler(event)
        iterations += 1
    per_sample = max(1, int(iterations / WARM_UP_SECONDS * SAMPLE_SECONDS))

    means_ns = []
    for _ in range(SAMPLES):
        start = time.perf_counter_ns()
        for _ in range(per_sample):
            handler(event)
        means_ns.append((time.perf_counter_ns() - start) / per_sample)

    print(
        json.dumps(
            {
                "median_ns": statistics.median(means_ns),
                "mean_ns": statistics.fmean(means_ns),
                "samples": SAMPLES,
                "iterations_per_sample": per_sample,
                "python": platform.python_version(),
                "pyjwt": jwt.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
