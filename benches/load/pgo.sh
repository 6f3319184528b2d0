#!/usr/bin/env bash
# A profile-guided (PGO) release build of fhirguard: the same source and the same behaviour as
# `cargo build --release`, with LLVM's code layout, inlining and branch order chosen from a
# profile of fhirguard serving the load harness's requests. Measured on the listener rows
# (benches/README.md, round 3): 6-23 % more req/s plain, 14-32 % over TLS and 9-25 % on h2,
# and 22-27 % fewer instructions a request.
#
#   benches/load/pgo.sh                 writes target/pgo/release/fhirguard
#
# Three steps, each in a target directory of its own (so target/release stays as it is):
#   1. an instrumented build (`-Cprofile-generate`) in target/pgo-generate/;
#   2. training: that binary serves every row of callgrind.sh natively (CPUTIME=1): reads with
#      a repeated token and with new tokens, refusals, DPoP proofs of three algorithms,
#      introspected opaque tokens, CORS, rate limits (and with redis-server, the cluster-scope
#      rows), TLS HTTP/1.1 and HTTP/2 on one connection, and the rows many, many-tls and
#      many-h2 (64 connections at once, 32 × 10 streams on h2); each exit writes a .profraw;
#   3. `llvm-profdata merge`, then the release build with `-Cprofile-use` in target/pgo/.
# The profile only steers optimisation: a request the training never made (a write, a bundle, a
# search) is answered exactly as by any build, with code LLVM treated as rarely run.
#
# Needs what callgrind.sh's native mode needs (nginx, python3 + cryptography, openssl; h2load for
# the TLS and h2 rows) and llvm-profdata from the toolchain (`rustup component add llvm-tools`,
# run by this script when it is missing). Loopback only; about three release builds of time.
# env: REQUESTS (per row, default 4000), ROWS (callgrind.sh's rows, default all of them and the
# many rows),
# PGO_DIR (profiles, default target/pgo-profiles), PORT_BASE (passed on to callgrind.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"
PGO_DIR="${PGO_DIR:-$REPO/target/pgo-profiles}"
log() { printf '[pgo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
    log "llvm-profdata is missing: rustup component add llvm-tools"
    rustup component add llvm-tools >&2 || die "could not add llvm-tools to the toolchain"
    [ -x "$PROFDATA" ] || die "no llvm-profdata at $PROFDATA"
fi

rm -rf "$PGO_DIR" && mkdir -p "$PGO_DIR/raw"
log "1/3 instrumented build (target/pgo-generate)"
RUSTFLAGS="-Cprofile-generate=$PGO_DIR/raw" cargo build --release --locked --bin fhirguard \
    --target-dir target/pgo-generate
# (Build scripts and proc macros ran instrumented too: only the server's profiles count.)
rm -f "$PGO_DIR"/raw/*

ROWS=${ROWS:-repeated distinct refused dpop dpop-eddsa dpop-rs256 opaque cors ratelimit cluster dpop-shared tls h2 many many-tls many-h2}
log "2/3 training: callgrind.sh's rows natively, ${REQUESTS:-4000} requests each: $ROWS"
LLVM_PROFILE_FILE="$PGO_DIR/raw/fhirguard-%p-%m.profraw" CPUTIME=1 REQUESTS="${REQUESTS:-4000}" \
    WARM=100 ROWS="$ROWS" "$HERE/callgrind.sh" target/pgo-generate/release/fhirguard >&2
ls "$PGO_DIR"/raw/*.profraw >/dev/null 2>&1 || die "the training wrote no profile"
"$PROFDATA" merge -o "$PGO_DIR/fhirguard.profdata" "$PGO_DIR"/raw/*.profraw
log "merged $(find "$PGO_DIR/raw" -name '*.profraw' | wc -l) profiles"

log "3/3 optimised build (target/pgo)"
# Named by its digest: cargo does not watch the profile's contents, only RUSTFLAGS, so a new
# profile is a new flag and everything is built again with it.
PROFILE="$PGO_DIR/fhirguard-$(sha256sum "$PGO_DIR/fhirguard.profdata" | cut -c1-16).profdata"
mv "$PGO_DIR/fhirguard.profdata" "$PROFILE"
# A function the profile does not know is ordinary cold code, not a warning for each.
RUSTFLAGS="-Cprofile-use=$PROFILE -Cllvm-args=-pgo-warn-missing-function=false" \
    cargo build --release --locked --bin fhirguard --target-dir target/pgo
target/pgo/release/fhirguard --version >/dev/null
log "done: target/pgo/release/fhirguard"
echo "$REPO/target/pgo/release/fhirguard"
