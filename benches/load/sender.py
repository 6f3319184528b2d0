#!/usr/bin/env python3
"""DPoP proofs and opaque tokens for the load harness's rows beyond bearer JWTs (run.sh).

Writes, into --out:
  dpop-token.txt        the repeated token of tokens.py, re-signed with `cnf.jkt` (RFC 9449 §6.1)
                        naming a fresh P-256 proof key: a DPoP-bound access token
  dpop/tokens-<i>.txt   --proofs DPoP proofs (RFC 9449 §4.2) for GET --htu, one a line, split
                        round-robin into --files files (one per wrk thread): each with its own
                        `jti`, `iat` now, `ath` the token's hash, signed ES256 with that key
  opaque/tokens-<i>.txt --opaque random opaque access tokens (43 base64url characters, the shape
                        of an oidc-provider opaque token), split the same way

A DPoP client signs a new proof for every request; minting them just before the row is the same
load on fhirguard (each proof is checked, hashed into the replay cache and never seen twice) and
keeps the signing cost out of the load generator. Proofs are minted fresh on every run: their
`iat` must be within fhirguard's clock skew when they arrive.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_PROOF_KEY = None  # per worker process


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def proof_key(alg: str):
    """A fresh proof key for `alg`: P-256 (ES256), Ed25519 (EdDSA) or RSA-2048 (RS256)."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"no proof key for {alg}")


def proof_jwk(key) -> dict:
    """The public JWK of a proof key, its RFC 7638 required members only."""
    public = key.public_key()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    numbers = public.public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        return {
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        }
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def signature(key, signing_input: bytes) -> bytes:
    """A JWS signature (RFC 7518 §3) by a proof key: ES256 as r ‖ s, EdDSA, or RS256."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(signing_input)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def bound_token(token: str, issuer_key, jkt: str) -> str:
    """The token with `cnf.jkt` added, signed again by the issuer's key."""
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["cnf"] = {"jkt": jkt}
    signing_input = header + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = issuer_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def sign_proof(key, header: str, htu: str, ath: str, jti: str, iat: int) -> str:
    """One proof of GET `htu` (RFC 9449 §4.2), signed with `key` under `header`."""
    claims = {"jti": jti, "htm": "GET", "htu": htu, "iat": iat, "ath": ath}
    signing_input = header + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
    return signing_input + "." + b64url(signature(key, signing_input.encode()))


class DpopClient:
    """A DPoP client: a fresh proof key for `alg` (ES256, EdDSA or RS256) and `token` re-signed
    by `issuer_key` bound to it. Also used by callgrind.sh's client, which signs one proof per
    request."""

    def __init__(self, token: str, issuer_key, alg: str = "ES256"):
        self.key = proof_key(alg)
        jwk = proof_jwk(self.key)
        # RFC 7638: the required members in lexicographic order, no whitespace.
        jkt = b64url(hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest())
        self.token = bound_token(token, issuer_key, jkt)
        self.header = b64url(json.dumps({"typ": "dpop+jwt", "alg": alg, "jwk": jwk}, separators=(",", ":")).encode())
        self.ath = b64url(hashlib.sha256(self.token.encode("ascii")).digest())

    def proof(self, htu: str, jti: str, iat: int) -> str:
        return sign_proof(self.key, self.header, htu, self.ath, jti, iat)


def _worker_init(pem: bytes) -> None:
    global _PROOF_KEY
    _PROOF_KEY = serialization.load_pem_private_key(pem, password=None)


def _proofs(job):
    """Proofs [start, end) with the shared header and claims of `job`."""
    header, htu, ath, now, start, end = job
    return [sign_proof(_PROOF_KEY, header, htu, ath, f"bench-{now}-{i}", now) for i in range(start, end)]


def split(out_dir: str, lines: list, files: int) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for i in range(files):
        with open(os.path.join(out_dir, f"tokens-{i + 1}.txt"), "w") as f:
            f.write("\n".join(lines[i::files]) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the directory tokens.py wrote into")
    ap.add_argument("--issuer-key", required=True, help="the issuer's PEM key (tokens.py's cache)")
    ap.add_argument("--htu", required=True, help="the URL the proofs are for (RFC 9449 §4.2 htu)")
    ap.add_argument("--proofs", type=int, default=100000)
    ap.add_argument("--opaque", type=int, default=100000)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    files = max(1, a.files)
    now = int(time.time())

    with open(a.issuer_key, "rb") as f:
        issuer_key = serialization.load_pem_private_key(f.read(), password=None)
    with open(os.path.join(a.out, "token-repeated.txt")) as f:
        client = DpopClient(f.read().strip(), issuer_key)
    with open(os.path.join(a.out, "dpop-token.txt"), "w") as f:
        f.write(client.token + "\n")

    t0 = time.time()
    chunk = 5000
    jobs = [(client.header, a.htu, client.ath, now, s, min(s + chunk, a.proofs)) for s in range(0, a.proofs, chunk)]
    pem = client.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    proofs = []
    with ProcessPoolExecutor(max_workers=max(1, a.jobs), initializer=_worker_init, initargs=(pem,)) as ex:
        for part in ex.map(_proofs, jobs):
            proofs.extend(part)
    split(os.path.join(a.out, "dpop"), proofs, files)

    split(os.path.join(a.out, "opaque"), [secrets.token_urlsafe(32) for _ in range(a.opaque)], files)
    print(f"minted {a.proofs} DPoP proofs and {a.opaque} opaque tokens in {time.time() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
