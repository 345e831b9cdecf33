"""Verifies one of our access tokens with PyJWT, a JWT library nobody here wrote, against the
platform's published JWKS. Exit 0 and print the claims when it verifies.

usage: verify_with_pyjwt.py BASE_URL TOKEN ISSUER AUDIENCE
"""

import json
import sys
import urllib.request

import jwt


def main() -> None:
    base, token, issuer, audience = sys.argv[1:5]
    with urllib.request.urlopen(f"{base}/.well-known/jwks.json", timeout=10) as response:
        jwks = jwt.PyJWKSet.from_dict(json.load(response))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        token,
        key=key,
        algorithms=["EdDSA"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "nbf", "iss", "aud", "sub"]},
    )
    print(json.dumps(claims))


if __name__ == "__main__":
    main()
