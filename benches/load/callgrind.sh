#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a measure of the hot path that does
# not move with machine noise, for comparing two builds (the load harness's req/s do move).
#
#   benches/load/callgrind.sh BIN [BIN ...]        e.g. an old and a new target/release/fhirguard
#
# For each binary, fhirguard runs under `valgrind --tool=callgrind` in front of an nginx upstream
# (and nginx serving the identity provider's discovery document and key set), on loopback only,
# twice per row: once answering WARM requests, once WARM + REQUESTS; the difference over REQUESTS
# is the cost of one request, start-up and shutdown excluded. Rows, as in the load harness:
#   repeated   one valid token on one keep-alive connection (the token cache's fast path)
#   distinct   a new valid token on every request (signature verification each time)
#   refused    a request refused for a method-override header (400; 403 in builds before the
#              hygiene check), for reference
#   dpop       one DPoP-bound token (cnf.jkt, RFC 9449) with a fresh ES256 proof on every
#              request, made by the client as a DPoP client does (the token cache's path plus
#              the proof's checks and the replay cache); builds without DPoP answer 401
#   opaque     a new opaque token on every request, each introspected (RFC 7662) at an nginx
#              endpoint that answers "active" (the HTTP exchange, the answer's judgement and the
#              cache insert); builds without introspection refuse its configuration: "n/a"
#   cors       the repeated row from a browser app's origin, with `cors` configured (issue 19:
#              the origin's check and the CORS headers on the answer); builds without `cors`
#              refuse its configuration: "n/a"
#   ratelimit  the repeated row with a replica-scope `rateLimits` entry that never throttles
#              (issue 22: the governor GCRA per request); builds without it: "n/a"
#   cluster    the repeated row with a cluster-scope limit in a local redis-server
#              (`sharedState`; one GCRA script round trip per request)
#   dpop-shared  the dpop row with `sharedState`: each proof's jti also SET NX in redis-server
#              (cluster and dpop-shared need redis-server; without it they are skipped)
# env: REQUESTS (default 2000), WARM (default 200), ROWS (default "repeated distinct refused
# dpop opaque cors ratelimit cluster dpop-shared"), PORT_BASE (default 18180; the run uses
# PORT_BASE..+3 and +1010), PROFILES (a directory: keep each run's callgrind.out there as BIN.KIND.COUNT.out, for
# callgrind_annotate). Needs valgrind, nginx, python3 + cryptography.
set -euo pipefail
[ -n "${DEBUG:-}" ] && set -x

[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
REQUESTS=${REQUESTS:-2000}
WARM=${WARM:-200}
ROWS=${ROWS:-repeated distinct refused dpop opaque cors ratelimit cluster dpop-shared}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${FHIRGUARD_LOAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fhirguard-load}"
IP=127.0.0.1
# PORT_BASE moves every port, so that two runs on one machine do not clash.
PORT_BASE=${PORT_BASE:-18180}
P_FHIRGUARD=$PORT_BASE P_UPSTREAM=$((PORT_BASE + 1)) P_IDP=$((PORT_BASE + 2)) P_REDIS=$((PORT_BASE + 3))
P_ADMIN=$((PORT_BASE + 1010))
ISSUER="http://$IP:$P_IDP"
AUDIENCE="https://fhir.bench.test"
CLIENT_ID="bench-app"

for tool in valgrind callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "missing: nginx" >&2; exit 1; }

WORK=$(mktemp -d /tmp/fhirguard-callgrind.XXXXXX)
NGINX_PID="" REDIS_PID=""
cleanup() {
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
    [ -n "${DEBUG:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

python3 "$HERE/tokens.py" --out "$WORK" --cache "$CACHE" --issuer "$ISSUER" \
    --jwks-uri "$ISSUER/jwks.json" --audience "$AUDIENCE" --client-id "$CLIENT_ID" \
    --scope "patient/*.read" --fhir-user "$AUDIENCE/Patient/1" \
    --count $((2 * (WARM + REQUESTS))) --files 1 >/dev/null

# RFC 7662 §2.2: the introspection endpoint's answer for every opaque token.
INTROSPECTION_ANSWER=$(printf '{"active":true,"iss":"%s","client_id":"%s","aud":"%s","scope":"patient/*.read","fhirUser":"%s/Patient/1","token_type":"Bearer","exp":%d}' \
    "$ISSUER" "$CLIENT_ID" "$AUDIENCE" "$AUDIENCE" $(($(date +%s) + 7200)))
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fcgi; uwsgi_temp_path $WORK/nginx/uwsgi; scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 10000000;
    server {
        listen $IP:$P_UPSTREAM;
        location / {
            default_type application/fhir+json;
            return 200 '{"resourceType":"Patient","id":"1","active":true}';
        }
    }
    server {
        listen $IP:$P_IDP;
        location = /.well-known/openid-configuration { default_type application/json; alias $WORK/discovery.json; }
        location = /jwks.json { default_type application/json; alias $WORK/jwks.json; }
        location = /introspect { default_type application/json; return 200 '$INTROSPECTION_ANSWER'; }
    }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" &
NGINX_PID=$!

cat >"$WORK/fhirguard.yaml" <<EOF
listen: "$IP:$P_FHIRGUARD"
adminListen: "$IP:$P_ADMIN"
upstream: "http://$IP:$P_UPSTREAM/fhir"
allowHttpAuthorities: true
workerThreads: 1
logging: { format: json, level: warn }
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "$ISSUER"
      applications:
        - clientId: "$CLIENT_ID"
          audience: "$AUDIENCE"
          allowedDataActions: ["Read"]
EOF
echo "bench-introspection-secret" >"$WORK/introspection-secret"
{
    cat "$WORK/fhirguard.yaml"
    cat <<EOF
introspection:
  authority: "$ISSUER"
  endpoint: "$ISSUER/introspect"
  clientId: "fhirguard-bench"
  clientSecretFile: "$WORK/introspection-secret"
EOF
} >"$WORK/fhirguard-opaque.yaml"
{
    cat "$WORK/fhirguard.yaml"
    cat <<EOF
cors:
  origins: ["https://app.bench.test"]
  headers: ["*"]
  methods: ["*"]
EOF
} >"$WORK/fhirguard-cors.yaml"
{
    cat "$WORK/fhirguard.yaml"
    echo 'rateLimits: [{clientIds: all, requestsPerSecond: 1000000, burst: 1000000}]'
} >"$WORK/fhirguard-ratelimit.yaml"
SHARED="sharedState: {redis: {url: \"redis://$IP:$P_REDIS/0\", timeout: 1s}, failureMode: closed}"
{
    cat "$WORK/fhirguard.yaml"
    echo "$SHARED"
    echo 'rateLimits: [{clientIds: all, requestsPerSecond: 1000000, burst: 1000000, scope: cluster}]'
} >"$WORK/fhirguard-cluster.yaml"
{
    cat "$WORK/fhirguard.yaml"
    echo "$SHARED"
} >"$WORK/fhirguard-dpop-shared.yaml"
case " $ROWS " in
*" cluster "* | *" dpop-shared "*)
    if command -v redis-server >/dev/null; then
        redis-server --bind $IP --port $P_REDIS --save "" --appendonly no --dir "$WORK" \
            >"$WORK/redis.log" 2>&1 &
        REDIS_PID=$!
    fi
    ;;
esac

# The client: COUNT requests on one keep-alive connection; `distinct` takes a new token each;
# `dpop` mints one DPoP-bound token (the issuer's key from the token cache) and signs a new proof
# for every request, with sender.py's DpopClient; `opaque` makes up a new opaque token for every
# request.
cat >"$WORK/client.py" <<'EOF'
import http.client, secrets, sys, time
port, admin, kind, count, repeated, tokens, issuer_key, here = sys.argv[1:9]
count = int(count)
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", int(admin), timeout=5)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("fhirguard never became ready")
    time.sleep(0.2)
token = open(repeated).read().strip()
distinct = open(tokens).read().split() if kind == "distinct" else []


if kind.startswith("dpop"):
    from cryptography.hazmat.primitives import serialization

    sys.path.insert(0, here)
    from sender import DpopClient

    with open(issuer_key, "rb") as f:
        client = DpopClient(token, serialization.load_pem_private_key(f.read(), password=None))
    token = client.token


def proof(i):
    return client.proof(f"http://127.0.0.1:{port}/Patient/1", f"bench-{time.time_ns()}-{i}", int(time.time()))


conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
for i in range(count):
    headers = {"Authorization": "Bearer " + (distinct[i] if distinct else token)}
    if kind.startswith("dpop"):
        headers = {"Authorization": "DPoP " + token, "DPoP": proof(i)}
    if kind == "opaque":
        headers = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
    if kind == "refused":
        headers["X-HTTP-Method-Override"] = "DELETE"
    if kind == "cors":
        headers["Origin"] = "https://app.bench.test"
    conn.request("GET", "/Patient/1", headers=headers)
    response = conn.getresponse()
    response.read()
    expected = (400, 403) if kind == "refused" else (200,)
    if response.status not in expected:
        sys.exit(f"request {i}: {response.status}, expected {expected}")
EOF

# instructions BIN KIND COUNT: total instructions fhirguard executed to serve COUNT requests.
instructions() {
    local bin=$1 kind=$2 count=$3 out="$WORK/callgrind.$RANDOM.out" config="$WORK/fhirguard.yaml"
    [ -f "$WORK/fhirguard-$kind.yaml" ] && config="$WORK/fhirguard-$kind.yaml"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --config "$config" \
        >"$WORK/fhirguard.log" 2>&1 &
    local pid=$!
    python3 "$WORK/client.py" "$P_FHIRGUARD" "$P_ADMIN" "$kind" "$count" \
        "$WORK/token-repeated.txt" "$WORK/tokens-1.txt" "$CACHE/key.pem" "$HERE" ||
        { kill -KILL "$pid"; echo "the client failed ($bin, $kind)" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    # (awk reads to the end: an early exit would fail the pipeline with SIGPIPE.)
    if [ -n "${PROFILES:-}" ]; then
        mkdir -p "$PROFILES" && cp "$out" "$PROFILES/$(basename "$bin").$kind.$count.out"
    fi
    callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }'
}

printf '| binary | row | instructions / request |\n|---|---|---:|\n'
for bin in "$@"; do
    for kind in $ROWS; do
        if [ "$kind" = opaque ] && ! "$bin" check --config "$WORK/fhirguard-opaque.yaml" >/dev/null 2>&1; then
            printf '| %s | %s | n/a (no introspection) |\n' "$bin" "$kind"
            continue
        fi
        if [ "$kind" = cors ] && ! "$bin" check --config "$WORK/fhirguard-cors.yaml" >/dev/null 2>&1; then
            printf '| %s | %s | n/a (no cors) |\n' "$bin" "$kind"
            continue
        fi
        case $kind in
        ratelimit | cluster | dpop-shared)
            if ! "$bin" check --config "$WORK/fhirguard-$kind.yaml" >/dev/null 2>&1; then
                printf '| %s | %s | n/a (no rateLimits / sharedState) |\n' "$bin" "$kind"
                continue
            fi
            if [ "$kind" != ratelimit ] && [ -z "$REDIS_PID" ]; then
                printf '| %s | %s | skipped (no redis-server) |\n' "$bin" "$kind"
                continue
            fi
            ;;
        esac
        low=$(instructions "$bin" "$kind" "$WARM")
        high=$(instructions "$bin" "$kind" $((WARM + REQUESTS)))
        printf '| %s | %s | %s |\n' "$bin" "$kind" $(((high - low) / REQUESTS))
    done
done
