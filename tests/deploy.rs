//! Checks of the deployment artefacts under `deploy/` (issue 6), against the real program:
//! every YAML file parses; each ConfigMap's `config.yaml` loads with the config module and passes
//! `fhirguard check`; container args and the Dockerfile's ENTRYPOINT/CMD use flags the CLI has;
//! probes, container ports, Services, the ServiceMonitor, the NetworkPolicy and EXPOSE agree with
//! the config's listeners; pods are locked down; and every metric (and outcome, result, reason
//! label value) that the alerts and the dashboard name is in fhirguard's `/metrics` after traffic.
//! `deploy/check.sh` runs the external tools (promtool, checkov, the image's build command).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fhirguard::app::{self, StartOptions};
use fhirguard::config::Config;
use fhirguard::reload::{ReloadOutcome, Reloader};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;
use serde_yaml::Value;
use support::idp::FakeIdp;
use support::token::{self, now, TestKey};
use support::upstream::FakeFhir;

const KUBERNETES_DIRS: [&str; 2] = ["kubernetes/sidecar", "kubernetes/standalone"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.yaml` / `.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
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
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn s<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// `value` at a dotted path (`spec.template.spec`); Null when absent.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .unwrap_or(&NULL)
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

/// One Kubernetes example: its manifests and the fhirguard config in its ConfigMap.
struct Example {
    dir: &'static str,
    manifests: Vec<Value>,
    config_text: String,
    config: Config,
}

impl Example {
    fn load(dir: &'static str) -> Example {
        let manifests: Vec<Value> = yaml_files(&deploy_dir().join(dir))
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

    fn one(&self, kind: &str) -> &Value {
        let found = kinds(&self.manifests, kind);
        assert_eq!(found.len(), 1, "{}: one {kind}", self.dir);
        found[0]
    }

    fn pod(&self) -> &Value {
        at(self.one("Deployment"), "spec.template")
    }

    fn fhirguard_container(&self) -> &Value {
        let containers = seq(at(self.pod(), "spec.containers"));
        let found: Vec<_> = containers
            .iter()
            .filter(|c| s(c, "image").contains("/fhirguard:"))
            .collect();
        assert_eq!(found.len(), 1, "{}: one fhirguard container", self.dir);
        found[0]
    }
}

fn kinds<'a>(manifests: &'a [Value], kind: &str) -> Vec<&'a Value> {
    manifests
        .iter()
        .filter(|m| at(m, "kind").as_str() == Some(kind))
        .collect()
}

/// A container port given by number or by name, as a number.
fn port_number(container: &Value, port: &Value) -> u64 {
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
fn selects(match_labels: &Value, labels: &Value) -> bool {
    let wanted = match_labels.as_mapping().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn fhirguard_help(subcommand: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fhirguard {subcommand} --help failed"
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The `--flags` in `args` that `help` does not list.
fn unknown_flags(help: &str, args: &[String]) -> Vec<String> {
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
struct Dockerfile {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    expose: BTreeSet<u64>,
    build_runs: Vec<String>,
}

fn dockerfile() -> Dockerfile {
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

#[test]
fn every_yaml_file_parses_and_the_dashboard_is_json() {
    let files = yaml_files(&deploy_dir());
    let names: BTreeSet<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(deploy_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for dir in KUBERNETES_DIRS {
        for file in [
            "configmap",
            "deployment",
            "service",
            "pdb",
            "networkpolicy",
            "servicemonitor",
        ] {
            assert!(
                names.contains(&format!("{dir}/{file}.yaml")),
                "{dir}/{file}.yaml missing"
            );
        }
    }
    assert!(
        names.contains("prometheus/alerts.yaml") && names.contains("prometheus/alerts_test.yaml")
    );
    for file in &files {
        assert!(
            !documents(file).is_empty(),
            "{}: no document",
            file.display()
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&deploy_dir().join("grafana/fhirguard.json"))).unwrap();
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
}

#[test]
fn each_example_has_the_objects_a_platform_engineer_expects() {
    for dir in KUBERNETES_DIRS {
        let example = Example::load(dir);
        for kind in [
            "ConfigMap",
            "Deployment",
            "ServiceAccount",
            "PodDisruptionBudget",
            "ServiceMonitor",
        ] {
            example.one(kind);
        }
        assert_eq!(
            kinds(&example.manifests, "Service").len(),
            2,
            "{dir}: FHIR and metrics Services"
        );
        assert!(
            !kinds(&example.manifests, "NetworkPolicy").is_empty(),
            "{dir}: a NetworkPolicy"
        );
        let pod_labels = at(example.pod(), "metadata.labels");
        assert!(selects(
            at(example.one("Deployment"), "spec.selector.matchLabels"),
            pod_labels
        ));
        assert!(selects(
            at(
                example.one("PodDisruptionBudget"),
                "spec.selector.matchLabels"
            ),
            pod_labels
        ));
        for service in kinds(&example.manifests, "Service") {
            assert!(
                selects(at(service, "spec.selector"), pod_labels),
                "{dir}: Service selects the pods"
            );
        }
        for manifest in &example.manifests {
            assert_eq!(
                at(manifest, "metadata.namespace").as_str(),
                Some("fhir"),
                "{dir}: namespace"
            );
        }
    }
}

#[test]
fn each_configmap_config_passes_fhirguard_check() {
    for dir in KUBERNETES_DIRS {
        let example = Example::load(dir);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &example.config_text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_fhirguard"))
            .arg("check")
            .arg("--config")
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{dir}: fhirguard check failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn unknown_flags_are_found() {
    let help = "Usage: fhirguard serve --config <CONFIG>\n      --config <CONFIG>  File\n  -h, --help  Print help\n";
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(unknown_flags(help, &args(&["--config", "/x", "--help"])).is_empty());
    assert_eq!(
        unknown_flags(help, &args(&["--config=/x", "--listen", "0"])),
        ["--listen"]
    );
}

#[test]
fn the_image_and_the_containers_use_real_cli_flags() {
    let docker = dockerfile();
    assert_eq!(docker.entrypoint, ["fhirguard", "serve"]);
    let help = fhirguard_help("serve");
    assert!(
        unknown_flags(&help, &docker.cmd).is_empty(),
        "CMD {:?}",
        docker.cmd
    );
    assert!(
        fhirguard_help("check").contains("--probe"),
        "check --probe is documented"
    );
    assert!(
        docker
            .build_runs
            .iter()
            .any(|run| run == "cargo build --release --locked"),
        "the build stage runs `cargo build --release --locked`: {:?}",
        docker.build_runs
    );
    for dir in KUBERNETES_DIRS {
        let example = Example::load(dir);
        let container = example.fhirguard_container();
        assert!(
            at(container, "command").is_null(),
            "{dir}: the image's ENTRYPOINT is used"
        );
        let args: Vec<String> = seq(at(container, "args"))
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert!(
            unknown_flags(&help, &args).is_empty(),
            "{dir}: args {args:?}"
        );
        assert_eq!(args, docker.cmd, "{dir}: args and the image's CMD agree");
        // --config names the ConfigMap's key, mounted as a directory (no subPath: hot reload).
        let config_path = Path::new(&args[args.iter().position(|a| a == "--config").unwrap() + 1]);
        let mount = seq(at(container, "volumeMounts"))
            .iter()
            .find(|m| config_path.parent() == Some(Path::new(s(m, "mountPath"))))
            .unwrap_or_else(|| panic!("{dir}: nothing mounted at {}", config_path.display()));
        assert!(
            at(mount, "subPath").is_null(),
            "{dir}: the config is not mounted with subPath"
        );
        let volume = seq(at(example.pod(), "spec.volumes"))
            .iter()
            .find(|v| s(v, "name") == s(mount, "name"))
            .unwrap();
        assert_eq!(
            s(volume, "configMap.name"),
            s(example.one("ConfigMap"), "metadata.name")
        );
        let key = config_path.file_name().unwrap().to_str().unwrap();
        assert!(
            at(example.one("ConfigMap"), "data").get(key).is_some(),
            "{dir}: key {key}"
        );
        let image = s(container, "image");
        assert!(
            image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
            "{dir}: {image}"
        );
    }
}

#[test]
fn probes_and_ports_match_the_configured_listeners() {
    let docker = dockerfile();
    for dir in KUBERNETES_DIRS {
        let example = Example::load(dir);
        let (listen, admin) = (
            u64::from(example.config.listen.port()),
            u64::from(example.config.admin_listen.port()),
        );
        assert_eq!(
            docker.expose,
            BTreeSet::from([listen, admin]),
            "{dir}: EXPOSE"
        );
        let container = example.fhirguard_container();
        let ports: BTreeSet<u64> = seq(at(container, "ports"))
            .iter()
            .map(|p| at(p, "containerPort").as_u64().unwrap())
            .collect();
        assert_eq!(
            ports,
            BTreeSet::from([listen, admin]),
            "{dir}: container ports"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = at(container, &format!("{probe}.httpGet"));
            assert_eq!(s(get, "path"), path, "{dir}: {probe}");
            assert_eq!(
                port_number(container, at(get, "port")),
                admin,
                "{dir}: {probe} port"
            );
        }
        // The FHIR Service targets the proxy listener, the metrics Service the admin listener.
        let mut targets = BTreeMap::new();
        for service in kinds(&example.manifests, "Service") {
            for port in seq(at(service, "spec.ports")) {
                let target = port_number(container, at(port, "targetPort"));
                targets.insert(
                    s(service, "metadata.name").to_owned(),
                    (s(port, "name").to_owned(), target),
                );
            }
        }
        assert_eq!(
            targets.values().map(|(_, t)| *t).collect::<BTreeSet<_>>(),
            BTreeSet::from([listen, admin]),
            "{dir}: Services {targets:?}"
        );
        let monitor = example.one("ServiceMonitor");
        let metrics_service = kinds(&example.manifests, "Service")
            .into_iter()
            .find(|svc| {
                selects(
                    at(monitor, "spec.selector.matchLabels"),
                    at(svc, "metadata.labels"),
                )
            })
            .unwrap_or_else(|| panic!("{dir}: the ServiceMonitor selects no Service"));
        let (port_name, target) = &targets[s(metrics_service, "metadata.name")];
        assert_eq!(
            *target, admin,
            "{dir}: the ServiceMonitor's Service targets the admin port"
        );
        for endpoint in seq(at(monitor, "spec.endpoints")) {
            assert_eq!(s(endpoint, "port"), port_name);
            assert_eq!(s(endpoint, "path"), "/metrics");
        }
        // The NetworkPolicy lets clients and Prometheus in.
        let policy_ports: BTreeSet<u64> = kinds(&example.manifests, "NetworkPolicy")
            .iter()
            .flat_map(|p| seq(at(p, "spec.ingress")))
            .flat_map(|rule| seq(at(rule, "ports")))
            .filter_map(|p| at(p, "port").as_u64())
            .collect();
        assert!(
            policy_ports.is_superset(&BTreeSet::from([listen, admin])),
            "{dir}: {policy_ports:?}"
        );
        // Other containers (the sidecar's FHIR server) expose nothing, and are probed through
        // fhirguard on one of its anonymous paths.
        for other in seq(at(example.pod(), "spec.containers"))
            .iter()
            .filter(|c| *c != container)
        {
            assert!(
                at(other, "ports").is_null(),
                "{dir}: fhirguard is the only exposed port"
            );
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let get = at(other, &format!("{probe}.httpGet"));
                assert_eq!(
                    at(get, "port").as_u64(),
                    Some(listen),
                    "{dir}: {probe} through fhirguard"
                );
                assert!(
                    example
                        .config
                        .anonymous_paths
                        .iter()
                        .any(|p| p == s(get, "path")),
                    "{dir}: {probe}"
                );
            }
        }
    }
}

#[test]
fn the_sidecar_fhir_server_listens_on_loopback_where_the_config_points() {
    let example = Example::load("kubernetes/sidecar");
    let container = example.fhirguard_container();
    let hapi = seq(at(example.pod(), "spec.containers"))
        .iter()
        .find(|c| *c != container)
        .unwrap();
    let env = |name: &str| {
        seq(at(hapi, "env"))
            .iter()
            .find(|e| s(e, "name") == name)
            .map(|e| s(e, "value").to_owned())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(env("SERVER_ADDRESS"), "127.0.0.1");
    let url = &example.config.upstream.url;
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    assert_eq!(url.port().map(|p| p.to_string()), Some(env("SERVER_PORT")));
    assert_ne!(url.port(), Some(example.config.listen.port()));
}

#[test]
fn pods_are_locked_down() {
    for dir in KUBERNETES_DIRS {
        let example = Example::load(dir);
        let pod = at(example.pod(), "spec");
        assert_eq!(
            at(pod, "automountServiceAccountToken").as_bool(),
            Some(false),
            "{dir}"
        );
        for container in seq(at(pod, "containers")) {
            let name = s(container, "name");
            let either = |key: &str| {
                let own = at(container, &format!("securityContext.{key}"));
                if own.is_null() {
                    at(pod, &format!("securityContext.{key}"))
                } else {
                    own
                }
            };
            assert_eq!(either("runAsNonRoot").as_bool(), Some(true), "{dir}/{name}");
            assert_eq!(
                either("seccompProfile.type").as_str(),
                Some("RuntimeDefault"),
                "{dir}/{name}"
            );
            let context = at(container, "securityContext");
            assert_eq!(
                at(context, "readOnlyRootFilesystem").as_bool(),
                Some(true),
                "{dir}/{name}"
            );
            assert_eq!(
                at(context, "allowPrivilegeEscalation").as_bool(),
                Some(false),
                "{dir}/{name}"
            );
            assert_eq!(
                seq(at(context, "capabilities.drop")),
                [Value::from("ALL")],
                "{dir}/{name}"
            );
            for key in [
                "requests.cpu",
                "requests.memory",
                "limits.cpu",
                "limits.memory",
            ] {
                assert!(
                    !at(container, &format!("resources.{key}")).is_null(),
                    "{dir}/{name}: {key}"
                );
            }
            let image = s(container, "image");
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                "{dir}/{name}: {image}"
            );
        }
    }
}

/// Every `fhirguard_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("fhirguard_") {
        let boundary = rest[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The values given to `label` in selectors: `label="a"`, `label=~"a|b"`, `label!="a"`.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let text = text.replace("\\\"", "\"");
    let mut values = BTreeSet::new();
    for op in ["=\"", "=~\"", "!=\"", "!~\""] {
        let needle = format!("{label}{op}");
        for (index, _) in text.match_indices(&needle) {
            if text[..index].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let value = &text[index + needle.len()..];
            let value = &value[..value.find('"').unwrap()];
            values.extend(value.split('|').map(str::to_owned));
        }
    }
    values
}

#[test]
fn names_and_label_values_are_found_in_rule_text() {
    let text = r#"sum(rate(fhirguard_requests_total{outcome=~"allowed|anonymous"}[5m])) / fhirguard_x_bucket{result="ok",reason!="keys_unavailable"} Fhirguard_Alert xfhirguard_no"#;
    assert_eq!(
        metric_names(text),
        BTreeSet::from([
            "fhirguard_requests_total".to_owned(),
            "fhirguard_x_bucket".to_owned()
        ])
    );
    assert_eq!(
        label_values(text, "outcome"),
        BTreeSet::from(["allowed".to_owned(), "anonymous".to_owned()])
    );
    assert_eq!(
        label_values(text, "reason"),
        BTreeSet::from(["keys_unavailable".to_owned()])
    );
    assert!(label_values(text, "method").is_empty());
}

/// fhirguard after traffic of every outcome, refused tokens, key-set fetches (good and failing)
/// and reloads (good and bad): its `/metrics` text.
async fn metrics_after_traffic() -> String {
    let primary_key = TestKey::rsa("primary-1");
    let smart_key = TestKey::ec_p256("smart-1");
    let primary = FakeIdp::with_keys(vec![primary_key.jwk()]).await;
    let smart = FakeIdp::with_keys(vec![smart_key.jwk()]).await;
    let down_key = TestKey::rsa("down-1");
    let mut down = FakeIdp::with_keys(vec![down_key.jwk()]).await;
    down.stop();
    let upstream = FakeFhir::start().await;
    let audience = "https://fhir.example.org";
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
adminListen: "127.0.0.1:0"
upstream: {{ url: "{upstream}", responseTimeout: "300ms" }}
allowHttpAuthorities: true
keySets: {{ retryInterval: "100ms", fetchTimeout: "1s" }}
authenticationConfiguration:
  authority: "{primary}"
  audience: "{audience}"
  smartIdentityProviders:
    - authority: "{smart}"
      applications: [{{ clientId: "reader", audience: "{audience}", allowedDataActions: ["Read"] }}]
    - authority: "{down}"
      applications: [{{ clientId: "down-app", audience: "{audience}", allowedDataActions: ["Read"] }}]
"#,
        upstream = upstream.base_url("/fhir"),
        primary = primary.base_url(),
        smart = smart.base_url(),
        down = down.base_url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let options = StartOptions {
        config_path: None,
        grace: Duration::from_secs(1),
    };
    let running = app::start(Config::load(&path).unwrap(), options)
        .await
        .unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let send = |method: Method, target: String, token: Option<String>| {
        let client = client.clone();
        let uri = format!("http://{}{target}", running.proxy_address);
        async move {
            let mut request = Request::builder().method(method).uri(uri);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            client
                .request(request.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    let smart_token = |client: &str, exp: u64| {
        token::base_claims(&smart.issuer(), audience, now())
            .claim("azp", client)
            .claim("scp", "system/*.read")
            .claim("fhirUser", "https://fhir.example.org/Patient/123")
            .claim("exp", exp)
            .sign(&smart_key)
    };
    let reader = smart_token("reader", now() + 600);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while send(Method::GET, "/Patient/1".into(), Some(reader.clone())).await != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fhirguard never allowed a valid token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let primary_token = token::base_claims(&primary.issuer(), audience, now())
        .claim("appid", "backend-service")
        .claim("roles", json!(["FHIR Data Reader"]))
        .sign(&primary_key);
    let down_token = token::base_claims(&down.base_url(), audience, now())
        .claim("azp", "down-app")
        .sign(&down_key);
    let expected = [
        (
            Method::GET,
            "/Patient/1".to_owned(),
            Some(primary_token),
            StatusCode::OK,
        ),
        (Method::GET, "/metadata".to_owned(), None, StatusCode::OK),
        (
            Method::GET,
            "/Patient/1".to_owned(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/Patient/1".to_owned(),
            Some(smart_token("reader", now() - 3600)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::DELETE,
            "/Patient/1".to_owned(),
            Some(reader.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            format!("/Patient?access_token={reader}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/Patient/1".to_owned(),
            Some(down_token),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ];
    for (method, target, token, status) in expected {
        assert_eq!(
            send(method.clone(), target.clone(), token).await,
            status,
            "{method} {target}"
        );
    }
    upstream.set_delay(Duration::from_secs(2));
    assert_eq!(
        send(Method::GET, "/Patient/1".into(), Some(reader.clone())).await,
        StatusCode::GATEWAY_TIMEOUT
    );
    upstream.set_delay(Duration::ZERO);

    let mut reloader = Reloader::new(path.clone(), Arc::clone(&running.proxy));
    std::fs::write(&path, format!("{yaml}clockSkew: \"60s\"\n")).unwrap();
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    std::fs::write(&path, format!("{yaml}noSuchKey: true\n")).unwrap();
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Failed { .. }
    ));

    let admin = Request::get(format!("http://{}/metrics", running.admin_address))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(admin).await.unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    running.stop().await;
    text
}

#[tokio::test]
async fn every_metric_in_the_alerts_and_the_dashboard_is_exported() {
    let exported = metrics_after_traffic().await;
    // Families by `# TYPE`, and the sample names (histograms: _bucket, _sum, _count).
    let families: BTreeMap<String, String> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    let samples: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l[..l.find(['{', ' ']).unwrap()].to_owned())
        .collect();
    // Every metric metrics.rs registers shows up after this traffic.
    let registered = metric_names(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"),
    ));
    assert_eq!(
        families.keys().cloned().collect::<BTreeSet<_>>(),
        registered,
        "{exported}"
    );
    for (family, kind) in &families {
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(
                    samples.contains(&format!("{family}{suffix}")),
                    "{family}{suffix}"
                );
            }
        }
    }

    let alerts = read(&deploy_dir().join("prometheus/alerts.yaml"));
    let dashboard = read(&deploy_dir().join("grafana/fhirguard.json"));
    for (file, text) in [("alerts.yaml", &alerts), ("fhirguard.json", &dashboard)] {
        let named = metric_names(text);
        assert!(named.len() >= 5, "{file} names metrics");
        for name in &named {
            assert!(
                samples.contains(name) || families.contains_key(name),
                "{file}: {name} is not exported"
            );
        }
        for label in ["outcome", "result", "reason", "method"] {
            let exported_values = label_values(&exported, label);
            for value in label_values(text, label) {
                assert!(
                    exported_values.contains(&value),
                    "{file}: {label}=\"{value}\" never exported"
                );
            }
        }
    }
    // Each alert the issue asks for is there.
    for metric in [
        "fhirguard_key_set_fetches_total",
        "fhirguard_key_set_keys",
        "fhirguard_auth_failures_total",
        "fhirguard_config_reloads_total",
        "fhirguard_requests_total",
        "fhirguard_request_duration_seconds_bucket",
    ] {
        assert!(
            metric_names(&alerts).contains(metric),
            "alerts.yaml uses {metric}"
        );
    }
}
