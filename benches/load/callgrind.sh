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
#   dpop-eddsa the dpop row with an Ed25519 proof key (EdDSA proofs; the token's cnf.jkt names
#              that key)
#   dpop-rs256 the dpop row with an RSA-2048 proof key (RS256 proofs)
#   tls        the repeated row over TLS (HTTP/1.1 by ALPN), one keep-alive connection, sent by
#              h2load --h1 (the handshake is in both runs, so it cancels out)
#   h2         the repeated row over TLS and HTTP/2: one connection, 10 streams at once (h2load)
#   handshake  the repeated row over TLS, a new connection for every request: a full TLS 1.3
#              handshake each (not in the default ROWS)
#   resumed    the same, each connection resuming the previous one's session (TLS 1.3 PSK with
#              the ticket the server sent; not in the default ROWS)
#   many       the repeated row on 64 keep-alive connections at once (h2load --h1), as the load
#              harness sends it: the upstream pool with many connections in use (not in the
#              default ROWS; with many-tls, TLS HTTP/1.1 on 64 connections, and many-h2, 32
#              connections × 10 streams, the training of benches/load/pgo.sh)
# A certificate for 127.0.0.1 is made with openssl in the run's temp dir. tls and h2 need h2load
# (Debian nghttp2-client); without it they are skipped.
# BARE=PATH (examples/bare_proxy built: `cargo build --release --example bare_proxy`) also
# counts the bare hyper/rustls proxy without authentication on the rows repeated, tls, h2 and many*:
# the floor of this stack's listener and forwarding.
# SYSCALLS=1 runs fhirguard under `strace -f -c` instead and prints system calls per request
# (with PROFILES, each run's strace summary is kept, for the calls by name).
# CPUTIME=1 runs fhirguard natively instead and prints its user-mode CPU time per request in
# nanoseconds (/proc/PID/stat utime, all threads; kernel time excluded, as callgrind excludes
# it): the native counterpart of the instruction count, on the CPU's own code paths (valgrind
# hides ADX, SHA-NI and AVX-512 from aws-lc, which then runs its slower generic code). It counts
# clock ticks (10 ms): use REQUESTS=20000 or more, and a quiet machine.
# env: REQUESTS (default 2000), WARM (default 200), ROWS (default "repeated distinct refused
# dpop dpop-eddsa dpop-rs256 opaque cors ratelimit cluster dpop-shared tls h2"), PORT_BASE
# (default 18180; the run uses PORT_BASE..+4 and +1010), PROFILES (a directory: keep each run's
# callgrind.out there as BIN.KIND.COUNT.out, for callgrind_annotate). Needs valgrind (not with
# SYSCALLS or CPUTIME), nginx, python3 + cryptography.
set -euo pipefail
[ -n "${DEBUG:-}" ] && set -x

[ $# -ge 1 ] || [ -n "${BARE:-}" ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
REQUESTS=${REQUESTS:-2000}
WARM=${WARM:-200}
ROWS=${ROWS:-repeated distinct refused dpop dpop-eddsa dpop-rs256 opaque cors ratelimit cluster dpop-shared tls h2}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${FHIRGUARD_LOAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fhirguard-load}"
IP=127.0.0.1
# PORT_BASE moves every port, so that two runs on one machine do not clash.
PORT_BASE=${PORT_BASE:-18180}
P_FHIRGUARD=$PORT_BASE P_UPSTREAM=$((PORT_BASE + 1)) P_IDP=$((PORT_BASE + 2)) P_REDIS=$((PORT_BASE + 3))
P_BARE=$((PORT_BASE + 4))
P_ADMIN=$((PORT_BASE + 1010))
ISSUER="http://$IP:$P_IDP"
AUDIENCE="https://fhir.bench.test"
CLIENT_ID="bench-app"

# (The native modes, SYSCALLS and CPUTIME, run no valgrind.)
TOOLS=(python3)
[ -n "${SYSCALLS:-}" ] && TOOLS+=(strace)
[ -n "${SYSCALLS:-}${CPUTIME:-}" ] || TOOLS+=(valgrind callgrind_annotate)
for tool in "${TOOLS[@]}"; do
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
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
for kind in tls h2 handshake resumed many-tls many-h2; do
    { cat "$WORK/fhirguard.yaml"; echo "tls: {certFile: \"$WORK/cert.pem\", keyFile: \"$WORK/key.pem\"}"; } \
        >"$WORK/fhirguard-$kind.yaml"
done
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
# for every request, with sender.py's DpopClient (`dpop-eddsa` and `dpop-rs256` with an Ed25519
# or RSA-2048 proof key); `opaque` makes up a new opaque token for every
# request.
cat >"$WORK/client.py" <<'EOF'
import http.client, secrets, sys, time
port, admin, kind, count, repeated, tokens, issuer_key, here = sys.argv[1:9]
count = int(count)
deadline = time.time() + 120
while True:
    try:
        # The bare proxy (admin "-") has no readiness endpoint: it is ready once it forwards,
        # one request in every run.
        if admin == "-":
            tls = kind in ("tls", "h2", "handshake", "resumed", "many-tls", "many-h2")
            c = http.client.HTTPSConnection("127.0.0.1", int(port), timeout=5, context=__import__("ssl")._create_unverified_context()) if tls else http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
            c.request("GET", "/Patient/1")
        else:
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
if kind in ("tls", "h2") or kind.startswith("many"):
    sys.exit(0)  # h2load sends them
if kind in ("handshake", "resumed"):
    import socket, ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    request = f"GET /Patient/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
    session, resumed = None, 0
    for i in range(count):
        with context.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=30), session=session) as s:
            s.sendall(request)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            resumed += s.session_reused
            if kind == "resumed":
                session = s.session
        if not answer.startswith(b"HTTP/1.1 200"):
            sys.exit(f"request {i}: {answer[:60]!r}")
    if kind == "resumed" and count > 1 and resumed < count - 1:
        sys.exit(f"only {resumed} of {count} connections resumed a session")
    sys.exit(0)
distinct = open(tokens).read().split() if kind == "distinct" else []


if kind.startswith("dpop"):
    from cryptography.hazmat.primitives import serialization

    sys.path.insert(0, here)
    from sender import DpopClient

    alg = {"dpop-eddsa": "EdDSA", "dpop-rs256": "RS256"}.get(kind, "ES256")
    with open(issuer_key, "rb") as f:
        client = DpopClient(token, serialization.load_pem_private_key(f.read(), password=None), alg)
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

# h2load_count KIND PORT COUNT: COUNT requests with the repeated token over TLS on one
# connection, HTTP/1.1 (tls) or h2 with 10 streams at once (h2), or on many connections (many,
# plain; many-tls; many-h2); fails unless all are 2xx.
h2load_count() {
    local kind=$1 port=$2 count=$3 proto=(-c 1 -m 10) scheme=https log="$WORK/h2load.log"
    case $kind in
    tls) proto=(-c 1 --h1 -m 1) ;;
    many) proto=(-c 64 --h1 -m 1) scheme=http ;;
    many-tls) proto=(-c 64 --h1 -m 1) ;;
    many-h2) proto=(-c 32 -m 10) ;;
    esac
    h2load -n "$count" "${proto[@]}" -H "Authorization: Bearer $(cat "$WORK/token-repeated.txt")" \
        "$scheme://$IP:$port/Patient/1" >"$log" 2>&1 || { cat "$log" >&2; return 1; }
    grep -q "status codes: $count 2xx" "$log" || { cat "$log" >&2; return 1; }
}

# What runs fhirguard: callgrind, or with SYSCALLS=1 `strace -f -c` (then the figures are
# system calls, all threads, per request), or with CPUTIME=1 nothing (the figures are user CPU
# nanoseconds).
# traced OUT CMD...: runs CMD under the tool, its figures to OUT; PIN=(taskset -c 0) runs the
# tool on one core. Run it in the background (`traced … &`): it execs, so `$!` is the tool.
PIN=()
traced() {
    local out=$1
    shift
    if [ -n "${SYSCALLS:-}" ]; then
        exec "${PIN[@]}" strace -f -c -o "$out" "$@"
    elif [ -n "${CPUTIME:-}" ]; then
        exec "${PIN[@]}" "$@"
    else
        exec "${PIN[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "$@"
    fi
}

# instructions BIN KIND COUNT: total instructions fhirguard executed to serve COUNT requests.
# With BIN = bare:PATH, the bare proxy instead (repeated, tls, h2 and the many rows only).
instructions() {
    local bin=$1 kind=$2 count=$3 out="$WORK/callgrind.$RANDOM.out" config="$WORK/fhirguard.yaml"
    local port=$P_FHIRGUARD admin=$P_ADMIN
    [ -f "$WORK/fhirguard-$kind.yaml" ] && config="$WORK/fhirguard-$kind.yaml"
    if [ "${bin#bare:}" != "$bin" ]; then
        local certs=()
        case $kind in tls | h2 | many-tls | many-h2) certs=("$WORK/cert.pem" "$WORK/key.pem") ;; esac
        port=$P_BARE admin=-
        # On one core, as fhirguard's workerThreads: 1 (one thread: a current-thread runtime).
        PIN=(taskset -c 0)
        traced "$out" "${bin#bare:}" "$IP:$P_BARE" \
            "http://$IP:$P_UPSTREAM/fhir" "${certs[@]}" >"$WORK/fhirguard.log" 2>&1 &
    else
        PIN=()
        traced "$out" "$bin" serve --config "$config" \
            >"$WORK/fhirguard.log" 2>&1 &
    fi
    local pid=$!
    python3 "$WORK/client.py" "$port" "$admin" "$kind" "$count" \
        "$WORK/token-repeated.txt" "$WORK/tokens-1.txt" "$CACHE/key.pem" "$HERE" ||
        { kill -KILL "$pid"; echo "the client failed ($bin, $kind)" >&2; exit 1; }
    case $kind in
    tls | h2 | many*)
        h2load_count "$kind" "$port" "$count" ||
            { kill -KILL "$pid"; echo "h2load failed ($bin, $kind)" >&2; exit 1; }
        ;;
    esac
    # (strace: stop the process it traces, and it writes its summary.)
    local target=$pid
    [ -n "${SYSCALLS:-}" ] && target=$(pgrep -P "$pid" | head -1)
    if [ -n "${CPUTIME:-}" ]; then
        # proc(5): utime is the 14th field, the 12th after the command's name in parentheses.
        local ticks
        ticks=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 }')
        kill -TERM "$pid"
        wait "$pid" || true
        echo $((ticks * 1000000000 / $(getconf CLK_TCK)))
        return
    fi
    kill -TERM "$target"
    wait "$pid" || true
    # (awk reads to the end: an early exit would fail the pipeline with SIGPIPE.)
    if [ -n "${PROFILES:-}" ]; then
        mkdir -p "$PROFILES" && cp "$out" "$PROFILES/$(basename "${bin#bare:}").$kind.$count.out"
    fi
    if [ -n "${SYSCALLS:-}" ]; then
        # strace -c's summary: its "total" line's calls column.
        awk '$NF == "total" { print $4 }' "$out"
        return
    fi
    callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }'
}

UNIT="instructions / request"
[ -n "${SYSCALLS:-}" ] && UNIT="system calls / request (strace -f -c)"
[ -n "${CPUTIME:-}" ] && UNIT="user CPU ns / request (native, /proc utime)"
printf '| binary | row | %s |\n|---|---|---:|\n' "$UNIT"
BINS=("$@")
[ -n "${BARE:-}" ] && BINS+=("bare:$BARE")
for bin in "${BINS[@]}"; do
    for kind in $ROWS; do
        if [ "${bin#bare:}" != "$bin" ]; then
            case $kind in repeated | tls | h2 | many*) ;; *) continue ;; esac
        fi
        case $kind in
        tls | h2 | many*)
            if ! command -v h2load >/dev/null; then
                printf '| %s | %s | skipped (no h2load) |\n' "$bin" "$kind"
                continue
            fi
            ;;
        esac
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
