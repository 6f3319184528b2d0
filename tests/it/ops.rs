//! Operations end to end (SPEC §6): metric values after known traffic (beyond what
//! `tests/it/proxy.rs` already pins), the per-client series ([`clients`]), every metric
//! documented in `docs/operations.md`, `promtool check metrics` on the exposition, a real
//! Prometheus server scraping fhirguard, SIGTERM draining a request in flight, and the log lines
//! of the real binary — JSON, one audit line per decision with its fields, no query string
//! unless enabled, and never a token.
//!
//! promtool and Prometheus come from the Debian package `prometheus` (`tests/ops/install.sh`,
//! run by `.ci/run`). Without them these tests skip with a message, except under CI (env `CI`
//! set), where a missing tool fails them.

mod audit;
mod clients;
mod prometheus_tools;
mod served;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::exposition::{metric, registered_names};
use crate::support::poll::eventually;
use crate::support::stack::{Guard, HttpClient, Stack};
use crate::support::token::{self, now};
use audit::{assert_no_secret, audit_run, FHIR_USER, OPAQUE, REDACTED, SEARCH};
use fhirguard::app::Running;
use fhirguard::metrics::{ANONYMOUS_CLIENT, OTHER_CLIENT};
use http::StatusCode;
use prometheus_tools::{query_sum, tool, wait_with_deadline, PrometheusServer};
use serde_json::{json, Value};
use served::{config_file, json_lines, Served};

/// fhirguard in-process (no reload) on a stack whose role grants `actions`.
async fn in_process(actions: &str) -> Guard {
    Stack::builder()
        .serve(|stack| stack.yaml(actions, ""))
        .await
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Outcomes, methods and histograms that `metrics_count_known_traffic` in tests/it/proxy.rs does
/// not cover: anonymous and invalid outcomes, the `other` method, the per-outcome request
/// histogram, the authentication histogram, failures of an unknown issuer, build info and the
/// key set's last success time.
#[tokio::test]
async fn metrics_after_known_traffic() {
    let started = unix_now().floor();
    let Guard { stack, running, .. } = in_process("[Read]").await;
    let (client, proxy) = (HttpClient::default(), running.proxy_address);
    let valid = stack.token();

    let expect = |answer: Result<(StatusCode, String), String>, status: StatusCode| {
        let (got, body) = answer.expect("answered");
        assert_eq!(got, status, "{body}");
    };
    for _ in 0..2 {
        expect(
            client.get(proxy, "/Patient/1", Some(&valid)).await,
            StatusCode::OK,
        );
    }
    expect(client.get(proxy, "/metadata", None).await, StatusCode::OK);
    expect(
        client
            .get(proxy, &format!("/Patient?access_token={valid}"), None)
            .await,
        StatusCode::BAD_REQUEST,
    );
    expect(
        client
            .call("DELETE", proxy, "/Patient/1", Some(&valid))
            .await,
        StatusCode::FORBIDDEN,
    );
    let stranger = token::base_claims("https://stranger.example.org", "x", now())
        .claim("roles", json!(["ops-tester"]))
        .sign(&stack.key);
    expect(
        client.get(proxy, "/Patient/1", Some(&stranger)).await,
        StatusCode::UNAUTHORIZED,
    );
    let (status, _) = client
        .call("BREW", proxy, "/Patient/1", Some(&valid))
        .await
        .expect("answered");
    assert!(status.is_client_error(), "BREW: {status}");

    let text = client.metrics(running.admin_address).await;
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    // The stack's token names the client `ops-client`, which no application lists: `other`.
    let requests = |method: &str, outcome: &str, client: &str| {
        value(&format!(
            "fhirguard_requests_total{{client_id=\"{client}\",method=\"{method}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(requests("GET", "allowed", "other"), 2.0);
    assert_eq!(requests("GET", "anonymous", "anonymous"), 1.0);
    // Refused before authentication: the token in the URL is never verified.
    assert_eq!(requests("GET", "invalid", "anonymous"), 1.0);
    assert_eq!(requests("DELETE", "forbidden", "other"), 1.0);
    assert_eq!(requests("GET", "unauthenticated", "anonymous"), 1.0);
    assert_eq!(requests("other", "invalid", "other"), 1.0);

    let duration_count = |outcome: &str| {
        value(&format!(
            "fhirguard_request_duration_seconds_count{{outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(duration_count("allowed"), 2.0);
    assert_eq!(duration_count("anonymous"), 1.0);
    assert_eq!(duration_count("invalid"), 2.0);
    assert_eq!(duration_count("forbidden"), 1.0);
    assert_eq!(duration_count("unauthenticated"), 1.0);
    assert!(value("fhirguard_request_duration_seconds_sum{outcome=\"allowed\"}") > 0.0);
    // `+Inf` holds every observation.
    assert_eq!(
        value("fhirguard_request_duration_seconds_bucket{outcome=\"allowed\",le=\"+Inf\"}"),
        2.0
    );
    // Tokens were validated for the two allowed GETs, the DELETE, the stranger and BREW; not
    // for /metadata or the token in the URL.
    assert_eq!(value("fhirguard_auth_duration_seconds_count"), 5.0);
    // Forwarded: the two allowed GETs and /metadata.
    assert_eq!(value("fhirguard_upstream_duration_seconds_count"), 3.0);
    assert_eq!(
        value("fhirguard_auth_failures_total{provider=\"unknown\",reason=\"unknown_issuer\"}"),
        1.0
    );
    let provider = stack.idp.base_url();
    let last_success = value(&format!(
        "fhirguard_key_set_last_success_timestamp_seconds{{provider=\"{provider}\"}}"
    ));
    assert!(
        (started..=unix_now()).contains(&last_success),
        "last success {last_success} is not between the start {started} and now"
    );
    assert_eq!(
        value(&format!(
            "fhirguard_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(value("fhirguard_config_generation"), 1.0);
    assert_eq!(value("fhirguard_in_flight_requests"), 0.0);
    running.stop().await;
}

#[tokio::test]
async fn a_slow_request_is_in_flight_until_it_ends() {
    let Guard { stack, running, .. } = in_process("[Read]").await;
    let client = HttpClient::default();
    stack.upstream.set_delay(Duration::from_secs(1));
    let request = {
        let (client, proxy, token) = (client.clone(), running.proxy_address, stack.token());
        tokio::spawn(async move { client.get(proxy, "/Patient/1", Some(&token)).await })
    };
    let admin = running.admin_address;
    let in_flight = || {
        let client = client.clone();
        async move { metric(&client.metrics(admin).await, "fhirguard_in_flight_requests") }
    };
    eventually(
        "the slow request is in flight",
        Duration::from_secs(10),
        || async { in_flight().await == Some(1.0) },
    )
    .await;
    let (status, body) = request.await.unwrap().expect("answered");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(in_flight().await, Some(0.0));
    running.stop().await;
}

/// Every metric fhirguard can export (each labelled family touched once, so all render) has a
/// row in the metrics table of `docs/operations.md`.
#[test]
fn every_metric_is_documented() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .expect("docs/operations.md");
    let names = registered_names();
    assert!(names.len() >= 14, "{names:?}");
    let undocumented: Vec<_> = names
        .iter()
        .filter(|name| !page.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics without a row in docs/operations.md: {undocumented:?}"
    );
    // Every outcome, in the row of `fhirguard_requests_total`, and the `client_id` label's
    // two fixed values in its section.
    let row = page
        .lines()
        .find(|line| line.starts_with("| `fhirguard_requests_total` |"))
        .expect("the requests row");
    for outcome in fhirguard::metrics::OUTCOMES {
        assert!(row.contains(&format!("`{outcome}` (")), "outcome {outcome}");
    }
    let section = &page[page.find("### The `client_id` label").expect("the section")..];
    for value in [ANONYMOUS_CLIENT, OTHER_CLIENT] {
        assert!(section.contains(&format!("**`{value}`**")), "{value}");
    }
}

// ---------------------------------------------------------------------------------------------
// promtool and a real Prometheus

/// Known traffic for the exposition to describe: allowed, refused, forbidden.
async fn some_traffic(stack: &Stack, running: &Running) {
    let client = HttpClient::default();
    let proxy = running.proxy_address;
    let valid = stack.token();
    let expired = stack.expired_token();
    for (method, token, status) in [
        ("GET", Some(valid.as_str()), StatusCode::OK),
        ("GET", Some(expired.as_str()), StatusCode::UNAUTHORIZED),
        ("GET", None, StatusCode::UNAUTHORIZED),
        ("DELETE", Some(valid.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (got, body) = client
            .call(method, proxy, "/Patient/1", token)
            .await
            .expect("answered");
        assert_eq!(got, status, "{body}");
    }
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let Guard { stack, running, .. } = in_process("[Read]").await;
    some_traffic(&stack, &running).await;
    let text = HttpClient::default().metrics(running.admin_address).await;
    running.stop().await;

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let output = wait_with_deadline(child, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "promtool check metrics: {}\n{}{}\n--- exposition ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_fhirguard() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let Guard { stack, running, .. } = in_process("[Read]").await;
    some_traffic(&stack, &running).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = {
        let (prometheus, dir) = (prometheus.clone(), dir.path().to_path_buf());
        let admin = running.admin_address;
        tokio::task::spawn_blocking(move || PrometheusServer::start(&prometheus, &dir, admin))
            .await
            .expect("prometheus starts")
    };

    let client = HttpClient::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok((StatusCode::OK, body)) = client
            .get(
                server.address,
                "/api/v1/query?query=fhirguard_requests_total",
                None,
            )
            .await
        {
            let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if query_sum(&answer).is_some_and(|sum| sum > 0.0) {
                // The four requests of `some_traffic`, whatever the series.
                assert_eq!(query_sum(&answer), Some(4.0), "{body}");
                break;
            }
            last = body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never returned fhirguard_requests_total > 0; last answer {last}\n--- targets ---\n{}\n--- prometheus log ---\n{}",
            client
                .get(server.address, "/api/v1/targets", None)
                .await
                .map(|(_, body)| body)
                .unwrap_or_default(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(server);
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary: graceful shutdown and logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_in_flight_and_exits_0() {
    const GRACE: Duration = Duration::from_secs(10);
    let stack = Stack::start().await;
    let (_dir, path) = config_file(&stack.yaml("[Read]", "shutdownGracePeriod: 10s\n"));
    let mut served = Served::spawn(&path, "info");
    let proxy = served.address("proxy").await;
    let admin = served.address("admin").await;
    let client = HttpClient::default();
    client.wait_ready(admin).await;

    stack.upstream.set_delay(Duration::from_secs(3));
    let token = stack.token();
    let request = {
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move { client.get(proxy, "/Patient/1", Some(&token)).await })
    };
    let upstream = &stack.upstream;
    eventually(
        "the request reaches the slow upstream",
        Duration::from_secs(10),
        || async move { !upstream.requests().is_empty() },
    )
    .await;

    let signalled = Instant::now();
    served.signal("TERM");
    eventually(
        "the proxy listener stops accepting",
        Duration::from_secs(2),
        || async move { tokio::net::TcpStream::connect(proxy).await.is_err() },
    )
    .await;
    assert!(
        !request.is_finished(),
        "the listener closed only after the request ended: nothing was drained"
    );
    let (status, body) = request
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(status, StatusCode::OK, "{body}");

    let exit = served.exit_within(GRACE + Duration::from_secs(5)).await;
    assert!(exit.success(), "exit status {exit}:\n{}", served.log());
    assert!(
        signalled.elapsed() < GRACE,
        "draining took {:?}, longer than the grace period",
        signalled.elapsed()
    );
    let lines = json_lines(&served.all_lines());
    for message in [
        "shutdown signal received; draining",
        "all connections finished",
    ] {
        assert!(
            lines.iter().any(|line| line["message"] == message),
            "no '{message}' line in {lines:#?}"
        );
    }
    assert_no_secret(&lines, &[token.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_hold_a_token_nor_by_default_a_query_string() {
    let (audit, lines) = audit_run(false).await;
    let search = &audit["search"];
    assert_eq!(search["method"], "GET");
    assert_eq!(search["path"], "/Patient");
    assert_eq!(search["status"], 200);
    assert_eq!(search["outcome"], "allowed");
    assert_eq!(search["client_id"], "ops-client");
    assert_eq!(search["subject"], "subject-1");
    assert!(
        search["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{search}"
    );
    let smart = &audit["smart"];
    assert_eq!(smart["client_id"], "portal");
    assert_eq!(smart["fhir_user"], FHIR_USER);
    assert_eq!(audit["expired"]["outcome"], "unauthenticated");
    assert_eq!(audit["signature"]["status"], 401);
    assert_eq!(audit["in-query"]["status"], 400);
    assert_eq!(audit["in-query"]["path"], "/Patient");
    assert_eq!(audit["in-path"]["path"], REDACTED);
    assert_eq!(audit["in-bad-path"]["path"], REDACTED);
    for (id, line) in &audit {
        let query = line.get("query").and_then(Value::as_str).unwrap_or("");
        assert_eq!(query, "", "{id}: query logged while logQueryStrings is off");
    }
    // Not in the audit line, and not in any other line either, debug included.
    for line in &lines {
        assert!(!line.to_string().contains("Testpatient"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_are_logged_when_enabled_but_never_a_token() {
    let (audit, _) = audit_run(true).await;
    assert_eq!(audit["search"]["query"], SEARCH);
    assert_eq!(audit["search"]["path"], "/Patient");
    assert_eq!(audit["in-query"]["query"], REDACTED);
    assert_eq!(audit["in-path"]["path"], REDACTED);
    // Issue 20 item 4: an opaque token in the query is refused (400, before the anonymous step
    // too), and a parameter named as a credential has its value redacted.
    let opaque = &audit["opaque-in-query"];
    assert_eq!(opaque["status"], 400);
    assert_eq!(
        opaque["reason"],
        "Access tokens must not be passed in the URL query string."
    );
    assert_eq!(opaque["query"], format!("{SEARCH}&access_token=[redacted]"));
    let anonymous = &audit["opaque-in-anonymous-query"];
    assert_eq!(anonymous["status"], 400);
    assert_eq!(anonymous["path"], "/metadata");
    assert_eq!(
        anonymous["query"],
        "ACCESS%5FTOKEN=[redacted]&access_token=[redacted]"
    );
    assert_eq!(
        audit["credential-in-query"]["query"],
        format!("{SEARCH}&client_secret=[redacted]&apiKey=[redacted]")
    );
    let lines: Vec<String> = audit.values().map(Value::to_string).collect();
    assert!(!lines.iter().any(|line| line.contains(OPAQUE)), "{lines:?}");
}

/// Issue 20 item 8: `logging.format: text` writes no ANSI escape codes when stderr is not a
/// terminal (here a pipe): log collectors would keep them as bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_colour_codes_off_a_terminal() {
    let stack = Stack::start().await;
    let (_dir, path) =
        config_file(&stack.yaml("[Read]", "logging: {format: text, level: debug}\n"));
    let mut served = Served::spawn(&path, "debug");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served.lines().iter().any(|line| line.contains("listening")) {
        assert!(
            Instant::now() < deadline,
            "no listening line:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.signal("TERM");
    let exit = served.exit_within(Duration::from_secs(30)).await;
    assert!(exit.success(), "exit status {exit}:\n{}", served.log());
    let lines = served.all_lines();
    assert!(lines.len() > 1, "{lines:?}");
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "an ANSI escape in {line:?}");
        assert!(
            serde_json::from_str::<Value>(line).is_err(),
            "text, not JSON: {line}"
        );
    }
    assert!(
        lines.iter().any(|line| line.contains("INFO")),
        "levels are written as words: {lines:?}"
    );
}
