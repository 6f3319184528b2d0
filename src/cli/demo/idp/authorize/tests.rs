use super::*;
use http_body_util::BodyExt;

fn client() -> BrowserClient {
    BrowserClient {
        client_id: "demo-browser-app".to_owned(),
        redirect_uri: "http://127.0.0.1:4000/".to_owned(),
        origin: "http://127.0.0.1:4000".to_owned(),
    }
}

/// RFC 7636 Appendix B's verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn request(overrides: &[(&str, &str)]) -> Form {
    let mut fields = vec![
        ("response_type", "code"),
        ("client_id", "demo-browser-app"),
        ("redirect_uri", "http://127.0.0.1:4000/"),
        ("state", "s-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in overrides {
        fields.retain(|(k, _)| k != name);
        if !value.is_empty() {
            fields.push((name, value));
        }
    }
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(fields);
    Form::parse(form.finish().as_bytes())
}

fn token_request(code: &str, verifier: &str) -> Form {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs([
        ("grant_type", "authorization_code"),
        ("client_id", "demo-browser-app"),
        ("redirect_uri", "http://127.0.0.1:4000/"),
        ("code", code),
        ("code_verifier", verifier),
    ]);
    Form::parse(form.finish().as_bytes())
}

#[test]
fn s256_is_rfc_7636s_example() {
    assert_eq!(challenge(VERIFIER), CHALLENGE);
    assert!(is_verifier(VERIFIER));
    assert!(!is_verifier("short"));
    assert!(!is_verifier(&"a".repeat(129)));
    assert!(!is_verifier(&format!("{}+", &VERIFIER[..43])));
}

#[test]
fn a_request_needs_the_client_its_exact_redirect_uri_and_pkce_s256() {
    assert_eq!(check(&request(&[]), &client()), Ok(CHALLENGE));
    for client_id in ["other", "demo-browser-app "] {
        assert!(matches!(
            check(&request(&[("client_id", client_id)]), &client()),
            Err(Refusal::Shown(_))
        ));
    }
    for redirect in [
        "http://127.0.0.1:4000",
        "http://127.0.0.1:4000/callback",
        "http://127.0.0.1:4001/",
        "http://localhost:4000/",
        "http://127.0.0.1:4000/?x=1",
        "",
    ] {
        assert!(
            matches!(
                check(&request(&[("redirect_uri", redirect)]), &client()),
                Err(Refusal::Shown(_))
            ),
            "{redirect}"
        );
    }
    for (name, value) in [
        ("code_challenge_method", "plain"),
        ("code_challenge_method", ""),
        ("code_challenge", ""),
        ("code_challenge", "too-short"),
        ("response_type", "token"),
    ] {
        assert!(
            matches!(
                check(&request(&[(name, value)]), &client()),
                Err(Refusal::Redirected { .. })
            ),
            "{name}={value}"
        );
    }
}

#[test]
fn a_parameter_sent_twice_counts_as_absent() {
    let form = Form::parse(b"client_id=a&client_id=a&state=1");
    assert_eq!(form.get("client_id"), None);
    assert_eq!(form.get("state"), Some("1"));
}

#[tokio::test]
async fn the_login_page_carries_the_request_escaped() {
    let query = b"response_type=code&client_id=demo-browser-app&redirect_uri=http%3A%2F%2F127.0.0.1%3A4000%2F&state=%22%3E%3Cscript%3E&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
    let response = login_page(query, &client());
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains(r#"name="state" value="&quot;&gt;&lt;script&gt;""#));
    assert!(!page.contains("<script>"));
    assert!(page.contains(r#"name="login" value="patient""#));
    assert!(page.contains(r#"name="login" value="clinician""#));
}

#[test]
fn a_refused_request_goes_back_to_the_app_only_when_the_app_is_known() {
    let wrong_redirect = request(&[("redirect_uri", "http://evil.example/")]);
    let response = refuse(
        check(&wrong_redirect, &client()).unwrap_err(),
        &wrong_redirect,
        &client(),
    );
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(header::LOCATION).is_none());

    let no_pkce = request(&[("code_challenge_method", "")]);
    let response = refuse(check(&no_pkce, &client()).unwrap_err(), &no_pkce, &client());
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("http://127.0.0.1:4000/?error=invalid_request&"));
    assert!(location.ends_with("&state=s-1"));
}

/// Logs in as `login` and returns the code of the redirect.
fn log_in(codes: &Codes, login_as: &str, now: Instant) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs([
        ("response_type", "code"),
        ("client_id", "demo-browser-app"),
        ("redirect_uri", "http://127.0.0.1:4000/"),
        ("state", "s-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("login", login_as),
    ]);
    let response = login(form.finish().as_bytes(), &client(), codes, now);
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let query = location
        .strip_prefix("http://127.0.0.1:4000/?")
        .expect("redirected to the app");
    let form = Form::parse(query.as_bytes());
    assert_eq!(form.get("state"), Some("s-1"));
    form.get("code").expect("a code").to_owned()
}

#[test]
fn a_code_is_exchanged_once_with_its_verifier() {
    let codes = Codes::default();
    let now = Instant::now();
    let code = log_in(&codes, "patient", now);
    assert_eq!(
        codes.redeem(&token_request(&code, VERIFIER), &client(), now),
        Ok(Login::Patient)
    );
    let again = codes.redeem(&token_request(&code, VERIFIER), &client(), now);
    assert_eq!(again.unwrap_err().0, "invalid_grant");

    let code = log_in(&codes, "clinician", now);
    assert_eq!(
        codes.redeem(&token_request(&code, VERIFIER), &client(), now),
        Ok(Login::Clinician)
    );
}

#[test]
fn a_wrong_verifier_spends_the_code() {
    let codes = Codes::default();
    let now = Instant::now();
    let code = log_in(&codes, "patient", now);
    let wrong = "x".repeat(43);
    let refused = codes.redeem(&token_request(&code, &wrong), &client(), now);
    assert_eq!(
        refused,
        Err((
            "invalid_grant",
            "code_verifier does not match the code_challenge"
        ))
    );
    let after = codes.redeem(&token_request(&code, VERIFIER), &client(), now);
    assert_eq!(after.unwrap_err().0, "invalid_grant");
}

#[test]
fn a_code_expires() {
    let codes = Codes::default();
    let now = Instant::now();
    let code = log_in(&codes, "patient", now);
    let late = now + CODE_LIFETIME;
    let refused = codes.redeem(&token_request(&code, VERIFIER), &client(), late);
    assert_eq!(refused, Err(("invalid_grant", "the code has expired")));
}

#[test]
fn the_token_request_names_the_same_client_and_redirect_uri() {
    let codes = Codes::default();
    let now = Instant::now();
    let code = log_in(&codes, "patient", now);
    let mut form = token_request(&code, VERIFIER);
    form.0.retain(|(k, _)| k != "redirect_uri");
    form.0.push((
        "redirect_uri".to_owned(),
        "http://127.0.0.1:4000".to_owned(),
    ));
    let refused = codes.redeem(&form, &client(), now);
    assert_eq!(refused.unwrap_err().0, "invalid_grant");

    let code = log_in(&codes, "patient", now);
    let mut form = token_request(&code, VERIFIER);
    form.0.retain(|(k, _)| k != "client_id");
    let refused = codes.redeem(&form, &client(), now);
    assert_eq!(refused.unwrap_err().0, "invalid_client");
}

#[test]
fn a_login_without_a_choice_is_sent_back_as_access_denied() {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs([
        ("response_type", "code"),
        ("client_id", "demo-browser-app"),
        ("redirect_uri", "http://127.0.0.1:4000/"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("login", "administrator"),
    ]);
    let response = login(
        form.finish().as_bytes(),
        &client(),
        &Codes::default(),
        Instant::now(),
    );
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("http://127.0.0.1:4000/?error=access_denied&"));
}
