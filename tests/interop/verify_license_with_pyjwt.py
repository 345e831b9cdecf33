"""Verifies a tenant's license with PyJWT against the platform's published JWKS, offline from
anything of ours but the key set: the signature, the key, `typ: license+jwt`, the issuer, the
audience (the tenant) and the validity window. Exit 0 and print {"header", "claims"} when it
verifies.

usage: verify_license_with_pyjwt.py BASE_URL LICENSE ISSUER AUDIENCE
"""

import json
import sys
import urllib.request

import jwt


def main() -> None:
    base, token, issuer, audience = sys.argv[1:5]
    with urllib.request.urlopen(f"{base}/.well-known/jwks.json", timeout=10) as response:
        jwks = jwt.PyJWKSet.from_dict(json.load(response))
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "license+jwt":
        sys.exit(f"not a license: typ is {header.get('typ')!r}")
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        token,
        key=key,
        algorithms=["EdDSA"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]},
    )
    print(json.dumps({"header": header, "claims": claims}))


if __name__ == "__main__":
    main()
