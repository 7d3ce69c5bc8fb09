//! HTTPS end to end, with the test CA trusted in place of the bundled
//! roots (a seam that exists only in this crate's own tests): the
//! handshake completes on ring, and the certificate must name the host.
//! With a second seam, a public host stood in for by the test server, the
//! production policy's redirect checks are tested too.

use std::net::{IpAddr, SocketAddr};
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

/// A fetcher under the production policy (HTTPS only, no loopback) for
/// which `localhost` is a public host: the name resolves to a public
/// address, which the checks admit, and the connection goes to `server`
/// on loopback, standing in for that host. `intranet.test` resolves to a
/// private address.
fn production_fetcher_reaching(server: &Server) -> Fetcher {
    let ca = ureq::tls::Certificate::from_der(&test_ca_der()).to_owned();
    let public: [IpAddr; 1] = ["93.184.216.34".parse().unwrap()];
    let private: [IpAddr; 1] = ["192.168.0.7".parse().unwrap()];
    let resolver = StaticResolver::new().with("localhost", &public).with("intranet.test", &private);
    let policy = FetchPolicy::default();
    assert!(!policy.allow_loopback_http, "the development setting is off");
    let stand_in = SocketAddr::from(([127, 0, 0, 1], server.port()));
    let client = Client::trusting(ureq::tls::RootCerts::new_with_certs(&[ca])).standing_in(stand_in);
    Fetcher::with_client(policy, Arc::new(resolver), Arc::new(ManualClock::new(0)), client)
}

#[test]
fn under_the_production_policy_a_stood_in_public_host_is_fetched_through_its_redirects() {
    // What the refusals below are measured against: the same server, by
    // the same fetcher, answers when every hop is the public host.
    let server = Server::start_tls(|path| match path {
        "/doc" => Reply::json(r#"{"public": true}"#),
        _ => Reply::redirect("/doc"),
    });
    let url = format!("https://localhost:{}/start", server.port());
    let doc = production_fetcher_reaching(&server).get_json(&url, &Limits::default()).unwrap();
    assert_eq!(doc.json["public"], true);
    assert_eq!(server.paths(), ["/start", "/doc"]);
}

#[test]
fn without_the_development_setting_a_redirect_to_loopback_is_refused() {
    let server = Server::start_tls(|path| match path {
        "/v4" => Reply::redirect("https://127.0.0.1/doc"),
        "/v6" => Reply::redirect("https://[::1]/doc"),
        "/mapped" => Reply::redirect("https://[::ffff:127.0.0.1]/doc"),
        "/plain" => Reply::redirect("http://127.0.0.1/doc"),
        _ => Reply::json(r#"{"reached": true}"#),
    });
    let fetcher = production_fetcher_reaching(&server);
    let start = |path: &str| format!("https://localhost:{}{path}", server.port());
    for (path, addr) in [("/v4", "127.0.0.1"), ("/v6", "::1"), ("/mapped", "::ffff:127.0.0.1")] {
        match fetcher.get_json(&start(path), &Limits::default()) {
            Err(FetchError::RefusedAddress { addr: refused, .. }) => assert_eq!(refused.to_string(), addr, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    let plain = fetcher.get_json(&start("/plain"), &Limits::default());
    assert_eq!(plain.unwrap_err(), FetchError::NotHttps);
    // Had a hop been admitted, the stand-in would have taken it to the
    // server: only the first requests arrived.
    assert_eq!(server.paths(), ["/v4", "/v6", "/mapped", "/plain"]);
}

#[test]
fn a_redirect_chain_whose_later_hop_goes_to_a_private_address_is_refused() {
    let server = Server::start_tls(|path| match path {
        "/a/2" => Reply::redirect("/a/1"),
        "/a/1" => Reply::redirect("https://intranet.test/keys"),
        "/b/2" => Reply::redirect("/b/1"),
        "/b/1" => Reply::redirect("https://169.254.169.254/latest/meta-data/"),
        _ => Reply::json(r#"{"reached": true}"#),
    });
    let fetcher = production_fetcher_reaching(&server);
    let start = |path: &str| format!("https://localhost:{}{path}", server.port());
    let err = fetcher.get_json(&start("/a/2"), &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "refused address 192.168.0.7 for host intranet.test");
    let err = fetcher.get_json(&start("/b/2"), &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "refused address 169.254.169.254 for host 169.254.169.254");
    assert_eq!(server.paths(), ["/a/2", "/a/1", "/b/2", "/b/1"]);
}
