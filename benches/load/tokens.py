#!/usr/bin/env python3
"""Key material and bearer tokens for the load harness (benches/load/run.sh).

Writes, into --out:
  discovery.json          OpenID discovery document: issuer + jwks_uri (RFC 8414 / OIDC Discovery 1.0 §3)
  jwks.json               the public key set (RFC 7517) holding one RS256 key with a `kid`
  token-repeated.txt      one valid token (the "repeated token" rows)
  tokens-<i>.txt          --count distinct valid tokens (distinct `sub` / `jti`), split round-robin
                          into --files files, one token per line (one file per wrk thread)

The RSA key and the minted tokens are kept in --cache and reused while they match the
requested claims and are young enough (RSA-2048 signing costs ~0.25 ms a token, so minting
100k+ tokens for the cache-miss rows is the slowest step of a run). Tokens live --lifetime
seconds; a cache older than half that is re-minted.
"""

import argparse
import base64
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KID = "fhirguard-bench-rs256"

_KEY = None  # per worker process


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def load_or_create_key(path: str):
    if os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.replace(tmp, path)
    return key


def jwks(key) -> dict:
    pub = key.public_key().public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": KID,
                "n": b64url_uint(pub.n),
                "e": b64url_uint(pub.e),
            }
        ]
    }


def _worker_init(key_path: str) -> None:
    global _KEY
    with open(key_path, "rb") as f:
        _KEY = serialization.load_pem_private_key(f.read(), password=None)


def _mint(job):
    """Mint tokens for indices [start, end) with the shared claims in `base`."""
    base, start, end = job
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KID}, separators=(",", ":")).encode())
    out = []
    for i in range(start, end):
        claims = dict(base)
        claims["sub"] = f"bench-user-{i}"
        claims["jti"] = f"bench-{base['iat']}-{i}"
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode("ascii")
        sig = _KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        out.append(f"{header}.{payload}.{b64url(sig)}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--jwks-uri", required=True)
    ap.add_argument("--audience", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--scope", default="patient/*.read")
    ap.add_argument("--fhir-user", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--lifetime", type=int, default=86400)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()

    os.makedirs(a.cache, mode=0o700, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    key_path = os.path.join(a.cache, "key.pem")
    key = load_or_create_key(key_path)

    with open(os.path.join(a.out, "jwks.json"), "w") as f:
        json.dump(jwks(key), f)
    with open(os.path.join(a.out, "discovery.json"), "w") as f:
        json.dump(
            {
                "issuer": a.issuer,
                "jwks_uri": a.jwks_uri,
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
            },
            f,
        )

    claims_id = {"iss": a.issuer, "aud": a.audience, "azp": a.client_id, "scp": a.scope, "fhirUser": a.fhir_user}
    meta_path = os.path.join(a.cache, "tokens.json")
    now = int(time.time())
    tokens = None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        fresh = now - meta["minted_at"] < a.lifetime // 2
        if meta["claims"] == claims_id and meta["kid"] == KID and meta["count"] >= a.count and fresh:
            with open(os.path.join(a.cache, "tokens.txt")) as f:
                tokens = [line.rstrip("\n") for line in f]
            if len(tokens) < a.count + 1:
                tokens = None
    except (OSError, ValueError, KeyError):
        tokens = None

    if tokens is None:
        t0 = time.time()
        base = dict(claims_id)
        base.update({"iat": now, "nbf": now - 60, "exp": now + a.lifetime})
        total = a.count + 1  # index 0 is the repeated token
        chunk = 2000
        jobs = [(base, s, min(s + chunk, total)) for s in range(0, total, chunk)]
        tokens = []
        with ProcessPoolExecutor(max_workers=max(1, a.jobs), initializer=_worker_init, initargs=(key_path,)) as ex:
            for part in ex.map(_mint, jobs):
                tokens.extend(part)
        tmp = os.path.join(a.cache, "tokens.txt.tmp")
        with open(tmp, "w") as f:
            f.write("\n".join(tokens) + "\n")
        os.replace(tmp, os.path.join(a.cache, "tokens.txt"))
        with open(meta_path, "w") as f:
            json.dump({"minted_at": now, "count": a.count, "kid": KID, "claims": claims_id}, f)
        print(f"minted {total} RS256 tokens in {time.time() - t0:.1f}s", file=sys.stderr)
    else:
        print(f"reusing {len(tokens)} cached tokens from {a.cache}", file=sys.stderr)

    with open(os.path.join(a.out, "token-repeated.txt"), "w") as f:
        f.write(tokens[0] + "\n")
    distinct = tokens[1 : a.count + 1]
    files = max(1, a.files)
    for i in range(files):
        with open(os.path.join(a.out, f"tokens-{i + 1}.txt"), "w") as f:
            f.write("\n".join(distinct[i::files]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
