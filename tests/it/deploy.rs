//! Checks of the deployment artefacts under `deploy/` (issue 6), against the real program:
//! every YAML file parses; each ConfigMap's `config.yaml` loads with the config module and passes
//! `fhirguard check`; container args and the Dockerfile's ENTRYPOINT/CMD use flags the CLI has;
//! probes, container ports, Services, the ServiceMonitor, the NetworkPolicy and EXPOSE agree with
//! the config's listeners; pods are locked down; and every metric (and outcome, result, reason
//! label value) that the alerts and the dashboard name is in fhirguard's `/metrics` after traffic.
//! `deploy/check.sh` runs the external tools (promtool, checkov, the image's build command).
//!
//! Parts: `deploy/artifacts.rs` reads the files, `deploy/metrics.rs` scrapes a running fhirguard.

mod artifacts;
mod metrics;

use crate::support::binary::fhirguard;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use yaml_serde::Value;

use artifacts::{
    at, deploy_dir, dockerfile, documents, fhirguard_help, kinds, port_number, read, s, selects,
    seq, unknown_flags, yaml_files, Example, KUBERNETES_DIRS,
};

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
            fhirguard_services(&example).len(),
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
        // Each Service selects fhirguard's pods, or (shared-state component) the store's.
        let stores = kinds(&example.manifests, "StatefulSet");
        for service in kinds(&example.manifests, "Service") {
            let selector = at(service, "spec.selector");
            assert!(
                selects(selector, pod_labels)
                    || stores
                        .iter()
                        .any(|s| selects(selector, at(s, "spec.template.metadata.labels"))),
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
        let path = file.path().to_str().expect("a UTF-8 path");
        let output = fhirguard(&["check", "--config", path], None);
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
        for service in fhirguard_services(&example) {
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

/// The Services in front of fhirguard's pods (a store the shared-state component adds has its own).
fn fhirguard_services(example: &Example) -> Vec<&yaml_serde::Value> {
    let pod_labels = at(example.pod(), "metadata.labels");
    kinds(&example.manifests, "Service")
        .into_iter()
        .filter(|service| selects(at(service, "spec.selector"), pod_labels))
        .collect()
}

/// The shared-state component (issue 22): fhirguard's config names the Valkey Service and reads
/// the password from the Secret's variable (never the config); Valkey keeps nothing on disk, is
/// locked down like fhirguard, and only fhirguard's pods reach it.
#[test]
fn the_shared_state_component_wires_fhirguard_to_valkey() {
    let example = Example::load("kubernetes/rendered/standalone-shared");
    let shared = example.config.shared_state.as_ref().expect("sharedState");
    let service = kinds(&example.manifests, "Service")
        .into_iter()
        .find(|s| at(s, "metadata.name").as_str() == Some("fhirguard-valkey"))
        .expect("the Valkey Service");
    assert_eq!(
        shared.redis.url.host_str(),
        Some("fhirguard-valkey.fhir.svc.cluster.local")
    );
    let port = at(&seq(at(service, "spec.ports"))[0], "port").as_u64();
    assert_eq!(port, shared.redis.url.port().map(u64::from));
    let Some(fhirguard::config::SecretSource::File(file)) = &shared.redis.password else {
        panic!("the password comes from a file");
    };
    let mounts = seq(at(example.fhirguard_container(), "volumeMounts"));
    let mount = mounts
        .iter()
        .find(|m| file.starts_with(s(m, "mountPath")))
        .expect("the password file is mounted");
    let volume = seq(at(example.pod(), "spec.volumes"))
        .iter()
        .find(|v| s(v, "name") == s(mount, "name"))
        .expect("its volume");
    assert_eq!(s(volume, "secret.secretName"), "fhirguard-valkey");
    assert_eq!(file.file_name().and_then(|n| n.to_str()), Some("password"));
    assert!(!example.config_text.contains("password:"));
    let valkey = example.one("StatefulSet");
    let pod = at(valkey, "spec.template.spec");
    let container = &seq(at(pod, "containers"))[0];
    assert_eq!(
        at(container, "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    let args: Vec<&str> = seq(at(container, "args"))
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--save", ""]), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "no"]),
        "{args:?}"
    );
    // fhirguard may reach Valkey's port; Valkey admits only fhirguard.
    let policies = kinds(&example.manifests, "NetworkPolicy");
    let named = |name: &str| {
        *policies
            .iter()
            .find(|p| at(p, "metadata.name").as_str() == Some(name))
            .unwrap_or_else(|| panic!("NetworkPolicy {name}"))
    };
    let egress = seq(at(named("fhirguard"), "spec.egress"));
    assert!(egress.iter().any(|rule| {
        seq(at(rule, "ports"))
            .iter()
            .any(|p| at(p, "port").as_u64() == Some(6379))
            && seq(at(rule, "to")).iter().any(|to| {
                at(to, "podSelector.matchLabels")
                    .get("app.kubernetes.io/name")
                    .and_then(yaml_serde::Value::as_str)
                    == Some("fhirguard-valkey")
            })
    }));
    let ingress = seq(at(named("fhirguard-valkey"), "spec.ingress"));
    assert_eq!(ingress.len(), 1);
    assert!(selects(
        at(&seq(at(&ingress[0], "from"))[0], "podSelector.matchLabels"),
        at(example.pod(), "metadata.labels")
    ));
}
