//! Per-client figures (issue 13 part 2): `fhirguard_requests_total`'s `client_id` label is a
//! configured application's client id, `other` for any other verified token, or `anonymous`
//! without one — exactly those series after known traffic, one `other` series for any number of
//! unlisted clients, and a reload that adds an application adds its label.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fhirguard::app::{self, Running, StartOptions};
use fhirguard::config::Config;
use fhirguard::reload::{ReloadOutcome, Reloader};
use http::StatusCode;
use serde_json::json;

use crate::support::exposition::series;
use crate::support::stack::{Guard, HttpClient, Stack, AUDIENCE, ROLE};
use crate::support::token::{self, now, TestKey};

/// `(client_id, method, outcome)` → value, for every `fhirguard_requests_total` series.
type Requests = BTreeMap<(String, String, String), f64>;

fn requests(text: &str) -> Requests {
    series(text, "fhirguard_requests_total")
        .into_iter()
        .map(|(labels, value)| {
            assert_eq!(
                labels.keys().map(String::as_str).collect::<Vec<_>>(),
                ["client_id", "method", "outcome"],
                "{labels:?}"
            );
            let label = |name: &str| labels[name].clone();
            (
                (label("client_id"), label("method"), label("outcome")),
                value,
            )
        })
        .collect()
}

fn expected(rows: &[(&str, &str, &str, f64)]) -> Requests {
    rows.iter()
        .map(|(client, method, outcome, value)| {
            let key = (
                (*client).to_owned(),
                (*method).to_owned(),
                (*outcome).to_owned(),
            );
            (key, *value)
        })
        .collect()
}

/// A primary authority granting [`ROLE`] `[Read]`, and a smart provider whose applications are
/// `applications` (each `[Read]`).
fn yaml(stack: &Stack, applications: &[&str]) -> String {
    let applications: Vec<_> = applications
        .iter()
        .map(|id| (*id, AUDIENCE, "[Read]"))
        .collect();
    (stack
        .config()
        .with(&format!("roles:\n  mappings:\n    {ROLE}: [Read]")))
    .primary(&stack.idp.base_url(), AUDIENCE)
    .smart(&stack.smart().idp.base_url(), &applications)
    .to_string()
}

/// fhirguard on [`yaml`] with `applications`, once ready.
async fn serve(applications: &[&str]) -> Guard {
    Stack::builder()
        .smart(TestKey::ec_p256("clients-1"))
        .serve(|stack| yaml(stack, applications))
        .await
}

async fn stack() -> Stack {
    Stack::builder()
        .smart(TestKey::ec_p256("clients-1"))
        .start()
        .await
}

/// A smart token of the application `client`, valid for `lifetime` seconds from now (negative:
/// expired).
fn smart_token(stack: &Stack, client: &str, lifetime: i64) -> String {
    let smart = stack.smart();
    let issued = now();
    token::base_claims(&smart.idp.issuer(), AUDIENCE, issued)
        .claim("azp", client)
        .claim("scp", "system/*.read")
        .claim("nbf", issued.saturating_sub(7200))
        .claim("exp", issued.saturating_add_signed(lifetime))
        .sign(&smart.key)
}

/// A primary-authority token of the client `appid`, carrying [`ROLE`].
fn primary_token(stack: &Stack, appid: &str) -> String {
    token::base_claims(&stack.idp.issuer(), AUDIENCE, now())
        .claim("appid", appid)
        .claim("roles", json!([ROLE]))
        .sign(&stack.key)
}

/// Sends each `(method, target, token)` and checks its status.
async fn send(running: &Running, traffic: &[(&str, &str, Option<&str>, StatusCode)]) {
    let client = HttpClient::default();
    for (method, target, token, status) in traffic {
        let (got, body) = client
            .call(method, running.proxy_address, target, *token)
            .await
            .expect("answered");
        assert_eq!(got, *status, "{method} {target}: {body}");
    }
}

async fn exposition(running: &Running) -> String {
    HttpClient::default().metrics(running.admin_address).await
}

#[tokio::test]
async fn each_request_is_counted_under_its_client() {
    let g = serve(&["reader", "writer"]).await;
    let (stack, running) = (&g.stack, &g.running);
    let reader = smart_token(stack, "reader", 600);
    let writer = smart_token(stack, "writer", 600);
    let expired = smart_token(stack, "reader", -3600);
    let unlisted = primary_token(stack, "backend-service");
    use StatusCode as S;
    send(
        running,
        &[
            ("GET", "/Patient/1", Some(&reader), S::OK),
            ("GET", "/Patient/2", Some(&reader), S::OK),
            ("DELETE", "/Patient/1", Some(&reader), S::FORBIDDEN),
            ("GET", "/Patient/1", Some(&writer), S::OK),
            ("GET", "/Patient/1", Some(&unlisted), S::OK),
            ("DELETE", "/Patient/1", Some(&unlisted), S::FORBIDDEN),
            ("GET", "/metadata", None, S::OK),
            ("GET", "/Patient/1", None, S::UNAUTHORIZED),
            ("GET", "/Patient/1", Some(&expired), S::UNAUTHORIZED),
        ],
    )
    .await;
    let text = exposition(running).await;
    assert_eq!(
        requests(&text),
        expected(&[
            ("anonymous", "GET", "anonymous", 1.0),
            ("anonymous", "GET", "unauthenticated", 2.0),
            ("other", "DELETE", "forbidden", 1.0),
            ("other", "GET", "allowed", 1.0),
            ("reader", "DELETE", "forbidden", 1.0),
            ("reader", "GET", "allowed", 2.0),
            ("writer", "GET", "allowed", 1.0),
        ]),
        "{text}"
    );
    // The latency histogram stays by outcome only (docs/operations.md, "Metrics").
    assert!(series(&text, "fhirguard_request_duration_seconds_count")
        .iter()
        .all(|(labels, _)| labels.keys().eq(["outcome"])));
    g.running.stop().await;
}

/// A flood of tokens naming 100 clients that no application lists adds one series, not 100:
/// a caller cannot grow the exposition by inventing client ids.
#[tokio::test]
async fn any_number_of_unlisted_clients_is_one_series() {
    let g = serve(&["reader"]).await;
    let (stack, running) = (&g.stack, &g.running);
    let client = HttpClient::default();
    for n in 0..100 {
        let primary = primary_token(stack, &format!("stranger-{n}"));
        let (status, body) = client
            .get(running.proxy_address, "/Patient/1", Some(&primary))
            .await
            .expect("answered");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let text = exposition(running).await;
    assert_eq!(
        requests(&text),
        expected(&[("other", "GET", "allowed", 100.0)]),
        "{text}"
    );
    g.running.stop().await;
}

/// The label set follows the configuration: a reload that adds an application makes its id a
/// label; one that removes it leaves its series as they were and counts its tokens (now refused
/// at authentication) as `anonymous`.
#[tokio::test]
async fn a_reload_changes_the_client_labels() {
    let stack = stack().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let write = |applications: &[&str]| std::fs::write(&path, yaml(&stack, applications)).unwrap();
    write(&["reader"]);
    let running = start(&path).await;
    let mut reloader = Reloader::new(path.clone(), Arc::clone(&running.proxy));
    let reader = smart_token(&stack, "reader", 600);
    let newcomer = smart_token(&stack, "newcomer", 600);
    use StatusCode as S;
    send(
        &running,
        &[
            ("GET", "/Patient/1", Some(&reader), S::OK),
            ("GET", "/Patient/1", Some(&newcomer), S::UNAUTHORIZED),
        ],
    )
    .await;
    let before = requests(&exposition(&running).await);
    assert_eq!(
        before,
        expected(&[
            ("anonymous", "GET", "unauthenticated", 1.0),
            ("reader", "GET", "allowed", 1.0),
        ])
    );

    write(&["reader", "newcomer"]);
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    send(&running, &[("GET", "/Patient/1", Some(&newcomer), S::OK)]).await;
    let labels = |text: &str| -> BTreeSet<String> {
        requests(text)
            .into_keys()
            .map(|(client, _, _)| client)
            .collect()
    };
    let text = exposition(&running).await;
    assert_eq!(
        labels(&text),
        BTreeSet::from(["anonymous", "newcomer", "reader"].map(str::to_owned))
    );
    assert_eq!(
        requests(&text)[&("newcomer".into(), "GET".into(), "allowed".into())],
        1.0
    );

    write(&["newcomer"]);
    assert!(matches!(
        reloader.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    send(
        &running,
        &[("GET", "/Patient/1", Some(&reader), S::UNAUTHORIZED)],
    )
    .await;
    assert_eq!(
        requests(&exposition(&running).await),
        expected(&[
            ("anonymous", "GET", "unauthenticated", 2.0),
            ("newcomer", "GET", "allowed", 1.0),
            ("reader", "GET", "allowed", 1.0),
        ])
    );
    running.stop().await;
}

/// fhirguard on the file at `path`; the test reloads it itself ([`Reloader::reload`]), so no
/// watcher (and no SIGHUP handler) is involved.
async fn start(path: &Path) -> Running {
    let options = StartOptions {
        config_path: None,
        grace: Duration::from_secs(1),
    };
    let running = app::start(Config::load(path).unwrap(), options)
        .await
        .unwrap();
    HttpClient::default()
        .wait_ready(running.admin_address)
        .await;
    running
}
