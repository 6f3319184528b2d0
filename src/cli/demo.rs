//! `fhirguard demo`: the newcomer's first command (SPEC §2). On loopback it starts a development
//! identity provider, an in-memory FHIR stand-in and the proxy in front, prints ready-to-paste
//! `curl` commands with tokens that pass and tokens that fail, serves a one-page browser SMART
//! app on an origin of its own and prints its URL, and runs until Ctrl-C.

pub mod fhir;
pub mod idp;
pub mod smart_app;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::app::{self, StartOptions};
use crate::body::Body;
use crate::config::Config;
use idp::authorize::BrowserClient;
use idp::DevIdp;
use smart_app::AppSettings;

/// The audience every demo application expects.
pub const AUDIENCE: &str = "https://fhir.demo.fhirguard.test";
/// The demo's read-only application.
pub const READER: &str = "demo-reader";
/// The demo's application that may also write.
pub const WRITER: &str = "demo-writer";
/// The demo's backend service (SMART Backend Services: `system/` scopes, no user).
pub const BACKEND: &str = "demo-backend";
/// The demo's browser SMART app, a public client that may only read.
pub const BROWSER_APP: &str = "demo-browser-app";

/// Runs the demo until Ctrl-C. `listen` / `admin_listen` may use port 0.
pub fn demo(listen: SocketAddr, admin_listen: SocketAddr) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fhirguard demo: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(listen, admin_listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fhirguard demo: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: SocketAddr, admin_listen: SocketAddr) -> Result<(), String> {
    let idp_listener = loopback().await?;
    let fhir_listener = loopback().await?;
    // The browser app's port is known before the provider and fhirguard start: the provider
    // registers its redirect URI, fhirguard's `cors` allows its origin.
    let app_listener = loopback().await?;
    let fhir_address = fhir_listener.local_addr().map_err(|e| e.to_string())?;
    let app_origin = format!(
        "http://{}",
        app_listener.local_addr().map_err(|e| e.to_string())?
    );
    let browser = BrowserClient {
        client_id: BROWSER_APP.to_owned(),
        redirect_uri: format!("{app_origin}/"),
        origin: app_origin.clone(),
    };
    let idp = DevIdp::start(idp_listener, browser.clone()).map_err(|e| e.to_string())?;
    fhir::start(fhir_listener);

    let yaml = config_yaml(listen, admin_listen, &idp.issuer, fhir_address, &app_origin);
    let config = Config::parse(&yaml)
        .map_err(|errors| format!("the demo configuration is invalid:\n{errors}"))?;
    let options = StartOptions {
        config_path: None,
        grace: Duration::from_secs(5),
    };
    let running = app::start(config, options)
        .await
        .map_err(|e| e.to_string())?;
    let proxy = running.proxy_address;

    // Wait until the key set is fetched, so the printed commands work at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !running
        .proxy
        .keys
        .is_ready(&running.proxy.generation.load().config)
    {
        if tokio::time::Instant::now() > deadline {
            return Err("the development identity provider did not answer".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settings = AppSettings {
        fhir_base_url: format!("http://{proxy}"),
        client_id: browser.client_id,
        redirect_uri: browser.redirect_uri,
        scope: "launch/patient openid fhirUser patient/*.rs user/*.rs".to_owned(),
    };
    smart_app::start(app_listener, &settings, &idp.issuer);
    print_walkthrough(&idp, proxy, running.admin_address, &app_origin);

    let _ = tokio::signal::ctrl_c().await;
    println!("\nstopping");
    running.stop().await;
    Ok(())
}

/// A listener on a free loopback port.
async fn loopback() -> Result<TcpListener, String> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())
}

/// The demo's configuration, through the same loader as every config file. The browser app on
/// `app_origin` gets CORS, and its patient logins carry the launch context's patient, which
/// `smartLaunchPatientClaim` reads.
fn config_yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    issuer: &str,
    fhir: SocketAddr,
    app_origin: &str,
) -> String {
    format!(
        r#"
listen: "{listen}"
adminListen: "{admin}"
upstream: "http://{fhir}{base}"
allowHttpAuthorities: true
logging: {{ format: text, level: warn }}
smartLaunchPatientClaim: patient
cors:
  origins: ["{app_origin}"]
  headers: ["*"]
  methods: ["*"]
  maxAge: 600
  allowCredentials: false
authenticationConfiguration:
  smartIdentityProviders:
    - authority: "{issuer}"
      applications:
        - clientId: "{READER}"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read"]
        - clientId: "{WRITER}"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read", "Write", "Create", "Update"]
        - clientId: "{BACKEND}"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read", "Export"]
        - clientId: "{BROWSER_APP}"
          audience: "{AUDIENCE}"
          allowedDataActions: ["Read"]
"#,
        base = fhir::BASE_PATH,
    )
}

/// The claims of a demo access token. Scopes with a user (`patient/`, `user/`) get the shape
/// Entra and Azure AD B2C issue: `azp`, `scp` and the user's `fhirUser`. `system/` scopes get a
/// SMART Backend Services token as RFC 9068 shapes it: `client_id`, `scope`, and no user.
pub fn claims(issuer: &str, client_id: &str, scope: &str, lifetime_seconds: i64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let mut claims = json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_seconds,
    });
    if scope.split_whitespace().all(|s| s.starts_with("system/")) {
        claims["sub"] = json!(client_id);
        claims["client_id"] = json!(client_id);
        claims["scope"] = json!(scope);
    } else {
        claims["sub"] = json!(format!("{client_id}-user"));
        claims["azp"] = json!(client_id);
        claims["scp"] = json!(scope);
        claims["fhirUser"] = json!("https://fhir.demo.fhirguard.test/Patient/example");
    }
    claims
}

/// One printed example: what it shows, the expected status, the command.
struct Example {
    title: &'static str,
    expect: u16,
    command: String,
}

fn print_walkthrough(idp: &DevIdp, proxy: SocketAddr, admin: SocketAddr, app_origin: &str) {
    let issuer = &idp.issuer;
    let read = idp.mint(&claims(issuer, READER, "patient/*.read", 3600));
    let write = idp.mint(&claims(issuer, WRITER, "patient/*.*", 3600));
    let read_v2 = idp.mint(&claims(issuer, READER, "patient/*.rs", 3600));
    let read_only_v2 = idp.mint(&claims(issuer, READER, "patient/*.r", 3600));
    let backend = idp.mint(&claims(issuer, BACKEND, "system/*.rs", 3600));
    let expired = idp.mint(&claims(issuer, READER, "patient/*.read", -3600));
    let mut wrong_audience = claims(issuer, READER, "patient/*.read", 3600);
    wrong_audience["aud"] = json!("https://some-other-api.example");
    let wrong_audience = idp.mint(&wrong_audience);
    let base = format!("http://{proxy}");
    let bearer = |token: &str| format!("-H 'Authorization: Bearer {token}'");
    // SMART `patient/` tokens write only inside their patient's compartment.
    let observation = r#"'{"resourceType":"Observation","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/example"}}'"#;
    let other_patient = r#"'{"resourceType":"Observation","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/other"}}'"#;
    let examples = [
        Example { title: "A read token reads a patient", expect: 200, command: format!("curl -i {} '{base}/Patient/example'", bearer(&read)) },
        Example { title: "… and searches observations", expect: 200, command: format!("curl -i {} '{base}/Observation?subject=Patient/example'", bearer(&read)) },
        Example { title: "A SMART v2 token (patient/*.rs) reads its patient", expect: 200, command: format!("curl -i {} '{base}/Patient/example'", bearer(&read_v2)) },
        Example { title: "… and searches its observations (the compartment is added for it)", expect: 200, command: format!("curl -i {} '{base}/Observation'", bearer(&read_v2)) },
        Example { title: "… but not another patient's record", expect: 404, command: format!("curl -i {} '{base}/Patient/other'", bearer(&read_v2)) },
        Example { title: "A v2 read-only token (patient/*.r) reads, but cannot search", expect: 403, command: format!("curl -i {} '{base}/Observation'", bearer(&read_only_v2)) },
        Example { title: "A backend-services token (system/*.rs, client_id, no fhirUser) reads any patient", expect: 200, command: format!("curl -i {} '{base}/Patient/other'", bearer(&backend)) },
        Example { title: "… and cannot write", expect: 403, command: format!("curl -i -X POST -H 'Content-Type: application/fhir+json' {} -d {observation} '{base}/Observation'", bearer(&backend)) },
        Example { title: "No token", expect: 401, command: format!("curl -i '{base}/Patient/example'") },
        Example { title: "A token for another audience", expect: 401, command: format!("curl -i {} '{base}/Patient/example'", bearer(&wrong_audience)) },
        Example { title: "An expired token", expect: 401, command: format!("curl -i {} '{base}/Patient/example'", bearer(&expired)) },
        Example { title: "A write with a read-only application", expect: 403, command: format!("curl -i -X POST -H 'Content-Type: application/fhir+json' {} -d {observation} '{base}/Observation'", bearer(&read)) },
        Example { title: "The same write with an application allowed to write", expect: 201, command: format!("curl -i -X POST -H 'Content-Type: application/fhir+json' {} -d {observation} '{base}/Observation'", bearer(&write)) },
        Example { title: "… but not for another patient (SMART compartment)", expect: 403, command: format!("curl -i -X POST -H 'Content-Type: application/fhir+json' {} -d {other_patient} '{base}/Observation'", bearer(&write)) },
        Example { title: "The capability statement is anonymous", expect: 200, command: format!("curl -i '{base}/metadata'") },
    ];
    println!("fhirguard demo");
    println!("  proxy:              {base}   (FHIR stand-in behind it)");
    println!("  identity provider:  {issuer}");
    println!("  metrics and health: http://{admin}/metrics  http://{admin}/readyz");
    println!();
    for example in &examples {
        println!("# {} (expect {})", example.title, example.expect);
        println!("{}", example.command);
        println!();
    }
    println!("# Get your own token from the development identity provider:");
    println!("curl -s -d grant_type=client_credentials -d client_id={READER} -d scope='patient/*.rs' {issuer}/token");
    println!("# … or a backend-services token:");
    println!("curl -s -d grant_type=client_credentials -d client_id={BACKEND} -d scope='system/*.rs' {issuer}/token");
    println!();
    println!("Open {app_origin}/ in a browser and log in as a patient or a clinician: a SMART app");
    println!("shows what fhirguard lets the token read, what it refuses, and why.");
    println!();
    println!("Press Ctrl-C to stop.");
}

/// Serves plain HTTP on `listener` with `handler` until the process ends (demo parts only).
pub(crate) fn serve_forever<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
