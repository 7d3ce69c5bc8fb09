//! A form POSTed to a token endpoint: the same address checks and bounds
//! as a fetch, never cached, never redirected.

use agentauth_fetch::{FetchError, FetchPolicy, Limits};

use crate::server::{RAW, Reply, Server};
use crate::{dev, fetcher};

#[test]
fn a_form_is_posted_with_basic_credentials_and_its_json_answer_returned() {
    let server = Server::start(|_| Reply::json(r#"{"access_token":"at","id_token":"x.y.z"}"#));
    let fetcher = fetcher(dev());
    let url = server.url("/token-basic");
    let form = [("grant_type", "authorization_code"), ("code", "a b&c")];
    let answer = fetcher.post_form_for("realm-a", &url, &form, Some(("agent auth", "s3cret:+")), &Limits::default());
    assert_eq!(answer.unwrap()["id_token"], "x.y.z");
    let raw = RAW.lock().unwrap().iter().find(|r| r.starts_with("POST /token-basic ")).cloned().expect("the request");
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/x-www-form-urlencoded"), "{raw}");
    // RFC 6749 §2.3.1: each half form-urlencoded, then base64:
    // "agent+auth:s3cret%3A%2B".
    assert!(raw.contains("Basic YWdlbnQrYXV0aDpzM2NyZXQlM0ElMkI="), "{raw}");
    assert!(raw.ends_with("grant_type=authorization_code&code=a+b%26c"), "{raw}");
    // Never cached: the same POST goes out again.
    fetcher.post_form_for("realm-a", &url, &form, None, &Limits::default()).unwrap();
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_post_is_held_to_the_fetch_rules() {
    let server = Server::start(|path| match path {
        "/moved" => Reply::redirect("/token"),
        "/error" => Reply::response(400, &[("content-type", "application/json")], r#"{"error":"invalid_grant"}"#),
        _ => Reply::json("{}"),
    });
    let post = |fetcher: &agentauth_fetch::Fetcher, url: &str| {
        fetcher.post_form_for("realm-a", url, &[("code", "c")], None, &Limits::default())
    };
    // No loopback without the development setting, and no connection.
    let strict = fetcher(FetchPolicy::default());
    assert!(post(&strict, &server.url("/token")).is_err());
    assert_eq!(server.accepted(), 0);
    let fetcher = fetcher(dev());
    assert_eq!(post(&fetcher, &server.url("/moved")).unwrap_err(), FetchError::RedirectNotAllowed);
    assert_eq!(post(&fetcher, &server.url("/error")).unwrap_err(), FetchError::Status(400));
    assert!(post(&fetcher, "https://10.0.0.1/token").is_err());
}
