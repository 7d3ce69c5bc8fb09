//! HTTPS is verified: a certificate no bundled root signed is refused,
//! even on loopback in development.

use agentauth_fetch::{FetchError, Limits};

use crate::server::{Reply, Server};
use crate::{dev, fetcher_with};

fn tls_failure(err: FetchError) -> String {
    match err {
        FetchError::Tls(why) => why,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[test]
fn a_certificate_from_an_unknown_issuer_fails_verification() {
    let server = Server::start_tls(|_| Reply::json("{}"));
    let (fetcher, _) = fetcher_with(dev(), &[("localhost", &["127.0.0.1"])]);
    for url in [format!("https://127.0.0.1:{}/", server.port()), format!("https://localhost:{}/", server.port())] {
        let why = tls_failure(fetcher.get_json(&url, &Limits::default()).unwrap_err());
        // The handshake got as far as judging the certificate: TLS itself
        // (ring, the protocol) works, and the certificate is what failed.
        assert!(why.contains("certificate") && why.contains("UnknownIssuer"), "{url}: {why}");
    }
    // The server read no request.
    assert_eq!(server.requests(), 0);
}
