#!/usr/bin/env bash
# Checks of deploy/ that need tools outside cargo (issue 6); tests/deploy.rs checks the rest
# under `cargo test`. Run from anywhere: bash deploy/check.sh. Installs what is missing:
#   promtool  from Debian's `prometheus` package,
#   checkov   from PyPI, into its own virtual environment (not the system Python).
# Then:
#   1. promtool check rules + promtool test rules on deploy/prometheus/;
#   2. promtool check rules on every dashboard query (PromQL syntax), as recording rules;
#   3. checkov on the Kubernetes manifests and the Dockerfile: no failed check (skips carry
#      their reason in the manifest);
#   4. the Dockerfile's build stage (COPY and RUN lines) replayed without Docker, then --version.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '== deploy: %s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

CHECKOV=checkov
if ! command -v checkov >/dev/null 2>&1; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/fhirguard/checkov-venv"
  if [ ! -x "$venv/bin/checkov" ]; then
    step "installing checkov into $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check checkov
  fi
  CHECKOV="$venv/bin/checkov"
fi

# --- 1. alert rules ------------------------------------------------------------------------
step "promtool check rules"
promtool check rules deploy/prometheus/alerts.yaml
step "promtool test rules"
promtool test rules deploy/prometheus/alerts_test.yaml

# --- 2. dashboard queries --------------------------------------------------------------------
step "promtool check rules on the dashboard's queries"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 - deploy/grafana/fhirguard.json "$scratch/dashboard-rules.yaml" <<'PY'
import json, sys

dashboard = json.load(open(sys.argv[1]))
exprs = []

def walk(panels):
    for panel in panels:
        exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
        walk(panel.get("panels", []))

walk(dashboard["panels"])
for var in dashboard["templating"]["list"]:
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    if var.get("type") == "query" and query.startswith("label_values("):
        # label_values(METRIC_SELECTOR, label): the selector is PromQL.
        exprs.append(query[len("label_values("):query.rindex(",")])
if not exprs:
    sys.exit("no queries found in the dashboard")
# Grafana's variables, replaced by values Prometheus accepts.
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$instance": ".*"}
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, expr in enumerate(exprs):
        for key, value in subst.items():
            expr = expr.replace(key, value)
        if "$" in expr:
            sys.exit(f"unsubstituted variable in {expr}")
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(expr)}\n")
print(f"{len(exprs)} queries")
PY
promtool check rules "$scratch/dashboard-rules.yaml"

# --- 3. static analysis of the manifests and the Dockerfile --------------------------------
step "checkov (kubernetes, dockerfile)"
"$CHECKOV" -d deploy --framework kubernetes,dockerfile --quiet --compact --skip-download

# --- 4. the image's build, without Docker ---------------------------------------------------
# The build stage (from the first FROM to the next), replayed here: its COPY lines fill a scratch
# directory from the repository, as they fill the image's WORKDIR from the build context, and
# its RUN lines run there as written. So a source the build needs but the Dockerfile does not
# copy fails here too. target/ is shared with the repository's, so dependencies are not rebuilt.
step "the Dockerfile's build stage, without Docker"
build="$scratch/build"
mkdir -p "$build"
ln -s "$PWD/target" "$build/target"
mapfile -t lines < <(awk '/^FROM /{stage++; next} stage==1 && /^(COPY|RUN) /{print}' deploy/Dockerfile)
ran=0
for line in "${lines[@]}"; do
  case "$line" in
    COPY\ --*)
      echo "unsupported COPY option in the build stage: $line" >&2
      exit 1
      ;;
    COPY\ *)
      read -r -a words <<<"${line#COPY }"
      dest="${words[-1]}"
      unset 'words[-1]'
      echo "+ COPY ${words[*]} $dest"
      if [ "${#words[@]}" -gt 1 ] || [[ "$dest" == */ ]]; then
        mkdir -p "$build/$dest"
        for src in "${words[@]}"; do cp -R "$src" "$build/$dest/"; done
      else
        mkdir -p "$(dirname "$build/$dest")"
        cp -R "${words[0]}" "$build/$dest"
      fi
      ;;
    RUN\ *)
      echo "+ ${line#RUN }"
      (cd "$build" && bash -c "${line#RUN }")
      ran=$((ran + 1))
      ;;
  esac
done
if [ "$ran" -eq 0 ]; then
  echo "no RUN lines in the Dockerfile's build stage" >&2
  exit 1
fi
"$build/target/release/fhirguard" --version

step "all checks passed"
