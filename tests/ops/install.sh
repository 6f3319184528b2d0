#!/usr/bin/env bash
# Installs what tests/ops.rs needs and cannot ship: promtool (`promtool check metrics`) and a real
# Prometheus server, both from the Debian package `prometheus`. Called by .ci/run, and by tests/ops.rs
# itself when the tools are missing; idempotent.
# Without these tools tests/ops.rs skips those tests with a message, except under CI (env CI set),
# where it fails them.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
apt-get update -qq
# --no-install-recommends: the server and promtool only, not node-exporter and friends.
# RUNLEVEL=1: invoke-rc.d does not start the package's own service (on 0.0.0.0:9090); the tests
# start their own server on loopback.
RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
command -v promtool >/dev/null && command -v prometheus >/dev/null
