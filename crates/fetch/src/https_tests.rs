//! HTTPS end to end, with the test CA trusted in place of the bundled
//! roots (a seam that exists only in this crate's own tests): the
//! handshake completes on ring, and the certificate must name the host.

use std::sync::Arc;

use crate::http::Client;
use crate::test_server::{Reply, Server, test_ca_der};
use crate::{FetchError, FetchPolicy, Fetcher, Limits, ManualClock, StaticResolver};

fn trusting_fetcher() -> Fetcher {
    let ca = ureq::tls::Certificate::from_der(&test_ca_der()).to_owned();
    let loopback = ["127.0.0.1".parse().unwrap()];
    let resolver = StaticResolver::new().with("localhost", &loopback).with("elsewhere.test", &loopback);
    let policy = FetchPolicy { allow_loopback_http: true, ..FetchPolicy::default() };
    let client = Client::trusting(ureq::tls::RootCerts::new_with_certs(&[ca]));
    Fetcher::with_client(policy, Arc::new(resolver), Arc::new(ManualClock::new(0)), client)
}

#[test]
fn https_with_a_trusted_certificate_for_the_host_is_fetched() {
    let server = Server::start_tls(|_| Reply::json(r#"{"tls": true}"#));
    let fetcher = trusting_fetcher();
    for host in ["localhost", "127.0.0.1"] {
        let doc = fetcher.get_json(&format!("https://{host}:{}/doc", server.port()), &Limits::default()).unwrap();
        assert_eq!(doc.json["tls"], true);
    }
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_trusted_certificate_for_another_name_is_refused() {
    let server = Server::start_tls(|_| Reply::json("{}"));
    let err = trusting_fetcher().get_json(&format!("https://elsewhere.test:{}/", server.port()), &Limits::default());
    match err {
        Err(FetchError::Tls(why)) => assert!(why.contains("not valid for name"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests(), 0);
}

#[test]
fn a_redirect_from_https_to_plain_http_on_loopback_is_followed_only_in_development() {
    let plain = Server::start(|_| Reply::json(r#"{"plain": true}"#));
    let target = plain.url("/doc");
    let server = Server::start_tls(move |_| Reply::redirect(&target));
    let doc =
        trusting_fetcher().get_json(&format!("https://localhost:{}/", server.port()), &Limits::default()).unwrap();
    assert_eq!(doc.json["plain"], true);
}
