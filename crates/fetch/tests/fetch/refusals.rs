//! URLs refused before any connection: the scheme, the address, the form.

use std::time::{Duration, Instant};

use agentauth_fetch::{FetchError, FetchPolicy, Limits};

use crate::server::{Reply, Server};
use crate::{LONG, dev, fetcher, fetcher_with, strict};

fn refused_address(err: FetchError) -> String {
    match err {
        FetchError::RefusedAddress { addr, .. } => addr.to_string(),
        other => panic!("expected a refused address, got {other:?}"),
    }
}

#[test]
fn plain_http_to_loopback_is_refused_without_the_development_setting() {
    let server = Server::start(|_| Reply::json("{}"));
    let err = fetcher(strict()).get_json(&server.url("/doc"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::NotHttps);
    assert_eq!(err.to_string(), "not https");
    assert_eq!(server.accepted(), 0);
}

#[test]
fn https_to_internal_addresses_is_refused_before_any_connection() {
    let server = Server::start(|_| Reply::json("{}"));
    // A bound far longer than the test: a connection attempt to an
    // unroutable address would show as a wait.
    let fetcher = fetcher(FetchPolicy { timeout: LONG, ..strict() });
    let cases = [
        (format!("https://127.0.0.1:{}/", server.port()), "127.0.0.1"),
        ("https://10.0.0.1/".to_owned(), "10.0.0.1"),
        ("https://169.254.169.254/latest/meta-data".to_owned(), "169.254.169.254"),
        ("https://[::1]/".to_owned(), "::1"),
        ("https://[::ffff:127.0.0.1]/".to_owned(), "::ffff:127.0.0.1"),
        ("https://[::ffff:169.254.169.254]/".to_owned(), "::ffff:169.254.169.254"),
        ("https://[fd00::1]/".to_owned(), "fd00::1"),
        ("https://[fe80::1]/".to_owned(), "fe80::1"),
        ("https://0.0.0.0/".to_owned(), "0.0.0.0"),
        ("https://100.64.0.1/".to_owned(), "100.64.0.1"),
        ("https://192.168.0.1/".to_owned(), "192.168.0.1"),
        ("https://172.16.0.1/".to_owned(), "172.16.0.1"),
        ("https://255.255.255.255/".to_owned(), "255.255.255.255"),
        // Other spellings of loopback and of the metadata service.
        ("https://0x7f.1/".to_owned(), "127.0.0.1"),
        ("https://2130706433/".to_owned(), "127.0.0.1"),
        ("https://0xa9fea9fe/".to_owned(), "169.254.169.254"),
    ];
    for (url, addr) in cases {
        let start = Instant::now();
        let err = fetcher.get_json(&url, &Limits::default()).unwrap_err();
        assert_eq!(refused_address(err), addr, "{url}");
        assert!(start.elapsed() < Duration::from_secs(1), "{url} took {:?}", start.elapsed());
    }
    assert_eq!(server.accepted(), 0);
}

#[test]
fn a_name_resolving_to_a_private_address_is_refused() {
    let (fetcher, _) = fetcher_with(strict(), &[("internal.example", &["10.0.0.1"])]);
    let err = fetcher.get_json("https://internal.example/jwks", &Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "refused address 10.0.0.1 for host internal.example");
}

#[test]
fn a_name_resolving_to_one_public_and_one_private_address_is_refused() {
    let (fetcher, _) = fetcher_with(strict(), &[("split.example", &["93.184.216.34", "169.254.169.254"])]);
    let err = fetcher.get_json("https://split.example/jwks", &Limits::default()).unwrap_err();
    assert_eq!(refused_address(err), "169.254.169.254");
}

#[test]
fn localhost_is_refused_without_the_development_setting() {
    let server = Server::start(|_| Reply::json("{}"));
    let (fetcher, _) = fetcher_with(strict(), &[("localhost", &["127.0.0.1"])]);
    let err = fetcher.get_json(&format!("https://localhost:{}/", server.port()), &Limits::default()).unwrap_err();
    assert_eq!(refused_address(err), "127.0.0.1");
    assert_eq!(server.accepted(), 0);
}

#[test]
fn the_development_setting_admits_loopback_and_no_other_private_range() {
    let server = Server::start(|_| Reply::json("{}"));
    let (fetcher, _) = fetcher_with(dev(), &[("localhost", &["127.0.0.1"]), ("lan.example", &["192.168.1.10"])]);
    assert!(fetcher.get_json(&format!("http://localhost:{}/", server.port()), &Limits::default()).is_ok());
    for url in ["http://10.0.0.1/", "https://169.254.169.254/", "http://lan.example/", "https://[fc00::1]/"] {
        let err = fetcher.get_json(url, &Limits::default()).unwrap_err();
        assert!(matches!(err, FetchError::RefusedAddress { .. }), "{url}: {err:?}");
    }
}

#[test]
fn urls_with_credentials_fragments_or_other_schemes_are_refused() {
    let server = Server::start(|_| Reply::json("{}"));
    let fetcher = fetcher(dev());
    let port = server.port();
    for url in [
        format!("http://user:secret@127.0.0.1:{port}/"),
        format!("http://user@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}/#fragment"),
        format!("ftp://127.0.0.1:{port}/"),
        "file:///etc/passwd".to_owned(),
        "/relative".to_owned(),
    ] {
        let err = fetcher.get_json(&url, &Limits::default()).unwrap_err();
        assert!(matches!(err, FetchError::InvalidUrl(_)), "{url}: {err:?}");
    }
    assert_eq!(server.accepted(), 0);
}

#[test]
fn the_host_is_resolved_once_and_the_connection_uses_the_checked_address() {
    // A resolver that answers loopback (allowed in development) first and
    // a private address afterwards, as a rebinding attacker's DNS would.
    #[derive(Debug, Default)]
    struct Rebinding(std::sync::atomic::AtomicUsize);
    impl agentauth_fetch::Resolve for Rebinding {
        fn resolve(&self, _host: &str, _timeout: Duration) -> std::io::Result<Vec<std::net::IpAddr>> {
            let calls = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![if calls == 0 { "127.0.0.1" } else { "10.0.0.1" }.parse().unwrap()])
        }
    }
    let server = Server::start(|_| Reply::json(r#"{"ok": true}"#));
    let resolver = std::sync::Arc::new(Rebinding::default());
    let fetcher = agentauth_fetch::Fetcher::with_resolver(dev(), resolver.clone());
    let doc = fetcher.get_json(&format!("http://rebind.example:{}/doc", server.port()), &Limits::default()).unwrap();
    assert_eq!(doc.json["ok"], true);
    assert_eq!(resolver.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(server.requests(), 1);
}
