#!/usr/bin/env bash
# Writes the seeds of the dpop, nonce, cnf, certificate and introspection fuzz targets
# (fuzz/seeds/<target>/). The DPoP proofs are signed with the Ed25519 test key of
# fuzz_targets/dpop.rs, the nonces made with the secret of fuzz_targets/nonce.rs; the
# certificate is a fresh self-signed one. Needs openssl, xxd and basenc.
set -euo pipefail
cd "$(dirname "$0")/seeds"

b64url() { basenc --base64url -w0 | tr -d '='; }

now=1800000000
token='eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'
uri='https://fhir.example.org/r4/Patient/1'
key=$(mktemp)
trap 'rm -f "$key" "$key.crt" "$key.in"' EXIT
cat >"$key" <<'PEM'
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINUi63g/ips17u3u+NmRfywJ/pXEQzKhGhq372MX9FnM
-----END PRIVATE KEY-----
PEM
x=$(openssl pkey -in "$key" -pubout -outform DER | tail -c 32 | b64url)
ath=$(printf %s "$token" | openssl dgst -sha256 -binary | b64url)

# dpop: the first byte picks the mode (0 a whole proof, 1 claims, 2 header; modulo 3).
mkdir -p dpop
header="{\"typ\":\"dpop+jwt\",\"alg\":\"EdDSA\",\"jwk\":{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"$x\"}}"
claims="{\"jti\":\"j-1\",\"htm\":\"GET\",\"htu\":\"$uri\",\"iat\":$now,\"ath\":\"$ath\"}"
input="$(printf %s "$header" | b64url).$(printf %s "$claims" | b64url)"
printf %s "$input" >"$key.in"
signature=$(openssl pkeyutl -sign -rawin -inkey "$key" -in "$key.in" | b64url)
printf '0%s' "$input.$signature" >dpop/proof
printf '1%s' "$claims" >dpop/claims
printf '1%s' "{\"jti\":\"j-2\",\"htm\":\"GET\",\"htu\":\"https://FHIR.example.org:443/r4/./Patient/1?q#f\",\"iat\":$now.5,\"ath\":\"$ath\",\"nonce\":\"n\"}" >dpop/claims-nonce
printf '2%s' "$header" >dpop/header
printf '2%s' '{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}' >dpop/header-ec

# nonce: 8 bytes of Unix time (big-endian), then a nonce of that window and the one before.
mkdir -p nonce
secret_hex=$(printf %s 'fhirguard fuzz nonce secret, 32B' | xxd -p -c 256)
nonce_of() {
  local window_hex tag
  window_hex=$(printf '%016x' "$1")
  tag=$( { printf %s 'fhirguard DPoP nonce v1'; printf '%016x' 300 | xxd -r -p; printf %s "$window_hex" | xxd -r -p; } |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$secret_hex" -binary | head -c 16 | xxd -p -c 256)
  printf %s "$window_hex$tag" | xxd -r -p | b64url
}
window=$((now / 300))
{ printf '%016x' "$now" | xxd -r -p; nonce_of "$window"; } >nonce/current
{ printf '%016x' "$now" | xxd -r -p; nonce_of $((window - 1)); } >nonce/previous
{ printf '%016x' $((now + 900)) | xxd -r -p; nonce_of "$window"; } >nonce/expired

# cnf: claim sets.
mkdir -p cnf
printf '%s' '{"sub":"a","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}' >cnf/jkt
printf '%s' '{"cnf":{"x5t#S256":"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}' >cnf/x5t
printf '%s' '{"cnf":{"jwk":{"kty":"EC"}}}' >cnf/jwk
printf '%s' '{"exp":1800000000}' >cnf/none

# certificate: the first byte picks the mode (0 x-forwarded-client-cert, 1 ssl-client-cert,
# 2 the Hash of an x-forwarded-client-cert, 3 a PEM as the Cert beside a Hash; modulo 4).
mkdir -p certificate
openssl req -x509 -key "$key" -subj /CN=client -days 1 -out "$key.crt" 2>/dev/null
pem=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""), end="")' <"$key.crt")
hash=$(openssl x509 -in "$key.crt" -outform DER | sha256sum | cut -c1-64)
printf '0%s' "By=spiffe://cluster.local/ns/default/sa/fhirguard;Hash=$hash;Subject=\"CN=client,O=Example\";URI=spiffe://cluster.local/ns/default/sa/client" >certificate/xfcc-hash
printf '0%s' "By=spiffe://cluster.local/ns/default/sa/fhirguard;Cert=\"$pem\";Subject=\"CN=client\"" >certificate/xfcc-cert
printf '1%s' "$pem" >certificate/ssl-client-cert
printf '2%s' "$hash" >certificate/hash
printf '3%s' "$pem" >certificate/hash-and-cert
printf '0%s' "Hash=$hash;Cert=\"$pem\"" >certificate/xfcc-hash-and-cert

# introspection: bearer tokens and introspection answers.
mkdir -p introspection
printf '%s' "$token" >introspection/jwt
printf '%s' 'Xk2pV1c3z5C0aQ8f7vG9WmQk3rT2yH6nJ4bL1dE0sAu' >introspection/opaque
printf '%s' '{"active":true,"iss":"https://idp.example.org","token_type":"DPoP","client_id":"app","aud":"https://fhir","scope":"system/*.read","exp":1800000000,"cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}' >introspection/active
printf '%s' '{"active":false}' >introspection/inactive
