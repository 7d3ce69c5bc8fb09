//! Redirects: each hop checked like the first, within a bound, or none.

use std::time::{Duration, Instant};

use agentauth_fetch::{FetchError, FetchPolicy, Limits};

use crate::server::{Reply, Server};
use crate::{LONG, dev, fetcher, fetcher_with};

/// A server whose `/hop/<n>` redirects to `/hop/<n-1>`, down to
/// `/hop/0`, the document.
fn chain() -> Server {
    Server::start(|path| match path.strip_prefix("/hop/").and_then(|n| n.parse::<u32>().ok()) {
        Some(0) => Reply::json(r#"{"hops": "done"}"#),
        Some(n) => Reply::redirect(&format!("/hop/{}", n - 1)),
        None => Reply::response(404, &[], ""),
    })
}

#[test]
fn a_redirect_to_the_metadata_service_is_refused() {
    let server = Server::start(|_| Reply::redirect("http://169.254.169.254/latest/meta-data/iam/"));
    let fetcher = fetcher(FetchPolicy { timeout: LONG, ..dev() });
    let start = Instant::now();
    let err = fetcher.get_json(&server.url("/start"), &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "refused address 169.254.169.254 for host 169.254.169.254");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_redirect_to_a_private_address_is_refused() {
    let server = Server::start(|_| Reply::redirect("http://10.0.0.1/"));
    let fetcher = fetcher(FetchPolicy { timeout: LONG, ..dev() });
    let err = fetcher.get_json(&server.url("/start"), &Limits::default()).unwrap_err();
    assert!(matches!(err, FetchError::RefusedAddress { addr, .. } if addr.to_string() == "10.0.0.1"), "{err:?}");
}

#[test]
fn a_later_hop_to_a_private_address_is_refused_though_the_first_were_followed() {
    // Loopback is allowed here (the development setting); 10/8 never is.
    let server = Server::start(|path| match path {
        "/hop/2" => Reply::redirect("/hop/1"),
        "/hop/1" => Reply::redirect("http://10.0.0.1/keys"),
        _ => Reply::json("{}"),
    });
    let fetcher = fetcher(FetchPolicy { timeout: LONG, ..dev() });
    let start = Instant::now();
    let err = fetcher.get_json(&server.url("/hop/2"), &Limits::default()).unwrap_err();
    assert!(matches!(err, FetchError::RefusedAddress { addr, .. } if addr.to_string() == "10.0.0.1"), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "refused before any connection");
    assert_eq!(server.paths(), ["/hop/2", "/hop/1"]);
}

#[test]
fn a_redirect_to_a_name_resolving_to_a_private_address_is_refused() {
    let server = Server::start(|_| Reply::redirect("https://intranet.example/keys"));
    let (fetcher, _) = fetcher_with(dev(), &[("intranet.example", &["192.168.0.7"])]);
    let err = fetcher.get_json(&server.url("/start"), &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "refused address 192.168.0.7 for host intranet.example");
}

#[test]
fn a_redirect_to_another_scheme_is_refused() {
    let server = Server::start(|_| Reply::redirect("file:///etc/passwd"));
    let err = fetcher(dev()).get_json(&server.url("/start"), &Limits::default()).unwrap_err();
    assert!(matches!(err, FetchError::InvalidUrl(_)), "{err:?}");
}

#[test]
fn redirects_up_to_the_bound_are_followed() {
    let server = chain();
    let fetcher = fetcher(FetchPolicy { max_redirects: 3, ..dev() });
    let doc = fetcher.get_json(&server.url("/hop/3"), &Limits::default()).unwrap();
    assert_eq!(doc.json["hops"], "done");
    // The document is known by the URL asked for.
    assert_eq!(doc.url, server.url("/hop/3"));
    assert_eq!(server.paths(), ["/hop/3", "/hop/2", "/hop/1", "/hop/0"]);
}

#[test]
fn a_redirect_chain_longer_than_the_bound_is_refused() {
    let server = chain();
    let fetcher = fetcher(FetchPolicy { max_redirects: 3, ..dev() });
    let err = fetcher.get_json(&server.url("/hop/4"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::TooManyRedirects);
    // The fourth redirect is never followed.
    assert_eq!(server.paths(), ["/hop/4", "/hop/3", "/hop/2", "/hop/1"]);
}

#[test]
fn a_caller_may_forbid_redirects_entirely() {
    let server = chain();
    let fetcher = fetcher(dev());
    let err = fetcher.get_json(&server.url("/hop/1"), &Limits::CLIENT_METADATA).unwrap_err();
    assert_eq!(err, FetchError::RedirectNotAllowed);
    assert_eq!(server.paths(), ["/hop/1"]);
    // The same URL without the restriction is another cache entry, and
    // is followed.
    assert!(fetcher.get_json(&server.url("/hop/1"), &Limits::DOCUMENT).is_ok());
}

#[test]
fn a_redirect_without_a_location_fails() {
    let server = Server::start(|_| Reply::response(301, &[], ""));
    let err = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::BadRedirect);
}

#[test]
fn a_redirect_refused_is_remembered_like_any_failure() {
    let server = Server::start(|_| Reply::redirect("file:///etc/passwd"));
    let fetcher = fetcher(dev());
    for _ in 0..3 {
        assert!(fetcher.get_json(&server.url("/start"), &Limits::default()).is_err());
    }
    assert_eq!(server.requests(), 1);
}
