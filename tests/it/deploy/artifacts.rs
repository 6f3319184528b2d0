//! Reading the artefacts under `deploy/`: YAML documents, the Kubernetes examples (manifests and
//! the fhirguard config in their ConfigMap), the Dockerfile's stages, and the CLI's `--help`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fhirguard::config::Config;
use serde::Deserialize;
use yaml_serde::Value;

/// The Kubernetes examples as applied: each kustomize overlay (`kubernetes/overlays/<name>`)
/// rendered by `kubectl kustomize` into `kubernetes/rendered/<name>`, one file per kind
/// (`bash deploy/check.sh --render`; `deploy/check.sh` fails when they differ).
pub(crate) const KUBERNETES_DIRS: [&str; 3] = [
    "kubernetes/rendered/sidecar",
    "kubernetes/rendered/standalone",
    "kubernetes/rendered/standalone-shared",
];

/// `kubernetes/<name>` (an example's name before the overlays) or `kubernetes/rendered/<name>`:
/// the rendered overlay's directory.
fn rendered(dir: &str) -> PathBuf {
    let name = dir.rsplit('/').next().unwrap();
    deploy_dir().join("kubernetes/rendered").join(name)
}

pub(crate) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.yaml` / `.yml` file under `dir`, sorted.
pub(crate) fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The documents of a (multi-document) YAML file; empty documents are left out.
pub(crate) fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

pub(crate) fn s<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// `value` at a dotted path (`spec.template.spec`); Null when absent.
pub(crate) fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .unwrap_or(&NULL)
}

pub(crate) fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

/// One Kubernetes example: its manifests and the fhirguard config in its ConfigMap.
pub(crate) struct Example {
    pub(crate) dir: &'static str,
    pub(crate) manifests: Vec<Value>,
    pub(crate) config_text: String,
    pub(crate) config: Config,
}

impl Example {
    pub(crate) fn load(dir: &'static str) -> Example {
        let manifests: Vec<Value> = yaml_files(&rendered(dir))
            .iter()
            .flat_map(|p| documents(p))
            .collect();
        let maps = kinds(&manifests, "ConfigMap");
        assert_eq!(maps.len(), 1, "{dir}: one ConfigMap");
        let config_text = at(maps[0], "data")
            .get("config.yaml")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{dir}: the ConfigMap has no config.yaml"))
            .to_owned();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &config_text).unwrap();
        let config = Config::load(file.path())
            .unwrap_or_else(|errors| panic!("{dir}: config.yaml is invalid:\n{errors}"));
        Example {
            dir,
            manifests,
            config_text,
            config,
        }
    }

    pub(crate) fn one(&self, kind: &str) -> &Value {
        let found = kinds(&self.manifests, kind);
        assert_eq!(found.len(), 1, "{}: one {kind}", self.dir);
        found[0]
    }

    pub(crate) fn pod(&self) -> &Value {
        at(self.one("Deployment"), "spec.template")
    }

    pub(crate) fn fhirguard_container(&self) -> &Value {
        let containers = seq(at(self.pod(), "spec.containers"));
        let found: Vec<_> = containers
            .iter()
            .filter(|c| s(c, "image").contains("/fhirguard:"))
            .collect();
        assert_eq!(found.len(), 1, "{}: one fhirguard container", self.dir);
        found[0]
    }
}

pub(crate) fn kinds<'a>(manifests: &'a [Value], kind: &str) -> Vec<&'a Value> {
    manifests
        .iter()
        .filter(|m| at(m, "kind").as_str() == Some(kind))
        .collect()
}

/// A container port given by number or by name, as a number.
pub(crate) fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().expect("a port is a number or a name");
    seq(at(container, "ports"))
        .iter()
        .find(|p| s(p, "name") == name)
        .and_then(|p| at(p, "containerPort").as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// True when every `matchLabels` entry is among `labels`.
pub(crate) fn selects(match_labels: &Value, labels: &Value) -> bool {
    let wanted = match_labels.as_mapping().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(crate) fn fhirguard_help(subcommand: &str) -> String {
    let output = crate::support::binary::fhirguard(&[subcommand, "--help"], None);
    assert!(
        output.status.success(),
        "fhirguard {subcommand} --help failed"
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The `--flags` in `args` that `help` does not list.
pub(crate) fn unknown_flags(help: &str, args: &[String]) -> Vec<String> {
    let listed: BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| word.starts_with("--"))
        .collect();
    args.iter()
        .filter(|arg| arg.starts_with("--"))
        .map(|arg| arg.split('=').next().unwrap().to_owned())
        .filter(|flag| !listed.contains(flag.as_str()))
        .collect()
}

/// The final stage's ENTRYPOINT, CMD (exec form) and EXPOSE ports, and the build stage's RUNs.
pub(crate) struct Dockerfile {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) expose: BTreeSet<u64>,
    pub(crate) build_runs: Vec<String>,
}

pub(crate) fn dockerfile() -> Dockerfile {
    let text = read(&deploy_dir().join("Dockerfile"));
    let mut stages: Vec<Vec<&str>> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        if line.starts_with("FROM ") {
            stages.push(Vec::new());
        } else if let Some(stage) = stages.last_mut() {
            stage.push(line);
        }
    }
    assert!(stages.len() >= 2, "a multi-stage build");
    let exec_form = |stage: &[&str], instruction: &str| -> Vec<String> {
        let line = stage
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(instruction))
            .unwrap();
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{instruction} {line}: {e}"))
    };
    let last = stages.last().unwrap();
    Dockerfile {
        entrypoint: exec_form(last, "ENTRYPOINT "),
        cmd: exec_form(last, "CMD "),
        expose: last
            .iter()
            .filter_map(|l| l.strip_prefix("EXPOSE "))
            .flat_map(|ports| ports.split_whitespace().map(|p| p.parse().unwrap()))
            .collect(),
        build_runs: stages[0]
            .iter()
            .filter_map(|l| l.strip_prefix("RUN "))
            .map(str::to_owned)
            .collect(),
    }
}

/// Issue 13: the standalone overlay scales out on CPU with a HorizontalPodAutoscaler, next to its
/// PodDisruptionBudget; the sidecar (HAPI with its own H2 data per pod) does not.
#[test]
fn the_standalone_deployment_is_autoscaled_on_cpu_from_two_replicas() {
    let example = Example::load("kubernetes/rendered/standalone");
    let hpa = example.one("HorizontalPodAutoscaler");
    let deployment = example.one("Deployment");
    assert_eq!(s(hpa, "apiVersion"), "autoscaling/v2");
    assert_eq!(
        at(hpa, "metadata.namespace"),
        at(deployment, "metadata.namespace")
    );
    let target = at(hpa, "spec.scaleTargetRef");
    assert_eq!(
        [
            s(target, "apiVersion"),
            s(target, "kind"),
            s(target, "name")
        ],
        [
            s(deployment, "apiVersion"),
            "Deployment",
            s(deployment, "metadata.name")
        ]
    );
    let min = at(hpa, "spec.minReplicas").as_u64().expect("minReplicas");
    let max = at(hpa, "spec.maxReplicas").as_u64().expect("maxReplicas");
    assert!(min >= 2 && max > min, "{min}..{max} replicas");
    assert!(
        seq(at(hpa, "spec.metrics")).iter().any(|m| {
            s(m, "type") == "Resource"
                && s(m, "resource.name") == "cpu"
                && s(m, "resource.target.type") == "Utilization"
        }),
        "a CPU utilisation metric"
    );
    assert!(
        at(hpa, "spec.behavior.scaleDown.stabilizationWindowSeconds")
            .as_u64()
            .is_some_and(|seconds| seconds > 0),
        "scale-down is stabilised"
    );
    // Utilisation is a share of the CPU request; the count is the autoscaler's alone.
    for container in seq(at(example.pod(), "spec.containers")) {
        assert!(!at(container, "resources.requests.cpu").is_null());
    }
    assert!(
        at(deployment, "spec.replicas").is_null(),
        "replicas left to the autoscaler"
    );
    assert!(selects(
        at(
            example.one("PodDisruptionBudget"),
            "spec.selector.matchLabels"
        ),
        at(example.pod(), "metadata.labels")
    ));
    let sidecar = Example::load("kubernetes/rendered/sidecar");
    assert!(kinds(&sidecar.manifests, "HorizontalPodAutoscaler").is_empty());
    assert_eq!(
        at(sidecar.one("Deployment"), "spec.replicas").as_u64(),
        Some(1)
    );
}
