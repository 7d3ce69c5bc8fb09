//! Bounds on what a server can make the fetcher spend, and what it must
//! answer to count as a document.

use std::time::{Duration, Instant};

use agentauth_fetch::{FetchError, FetchPolicy, Limits};

use crate::server::{Reply, Server};
use crate::{dev, fetcher};

const BOUND: Duration = Duration::from_millis(500);

/// Generous: three times the bound. A fetch that ignored the bound would
/// run for the server's 30 s of stalling.
fn within_bound(start: Instant) {
    assert!(start.elapsed() < BOUND * 3, "took {:?}, bound {BOUND:?}", start.elapsed());
}

fn small(max_bytes: usize) -> Limits {
    Limits { max_bytes, ..Limits::default() }
}

#[test]
fn a_body_that_never_ends_is_cut_at_the_size_bound() {
    let server = Server::start(|_| Reply::Endless(Reply::open_head("application/json")));
    let fetcher = fetcher(FetchPolicy { timeout: Duration::from_secs(10), ..dev() });
    let start = Instant::now();
    let err = fetcher.get_json(&server.url("/"), &small(64 * 1024)).unwrap_err();
    assert_eq!(err, FetchError::TooLarge { limit: 64 * 1024 });
    assert_eq!(err.to_string(), "too large: over 65536 bytes");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn a_declared_length_over_the_bound_is_refused_without_reading() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{".to_vec();
    let server = Server::start(move |_| Reply::Stall(head.clone()));
    let fetcher = fetcher(FetchPolicy { timeout: Duration::from_secs(10), ..dev() });
    let start = Instant::now();
    assert_eq!(fetcher.get_json(&server.url("/"), &small(1024)).unwrap_err(), FetchError::TooLarge { limit: 1024 });
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[test]
fn a_body_one_byte_over_the_bound_is_refused_and_one_at_it_accepted() {
    let body = r#"{"k":"0123456789"}"#;
    let server = Server::start(move |_| Reply::json(body));
    let fetcher = fetcher(dev());
    assert!(fetcher.get_json(&server.url("/"), &small(body.len())).is_ok());
    let err = fetcher.get_json(&server.url("/"), &small(body.len() - 1)).unwrap_err();
    assert_eq!(err, FetchError::TooLarge { limit: body.len() - 1 });
}

#[test]
fn a_server_that_stalls_after_the_headers_times_out_within_the_bound() {
    let server = Server::start(|_| Reply::Stall(Reply::open_head("application/json")));
    let fetcher = fetcher(FetchPolicy { timeout: BOUND, ..dev() });
    let start = Instant::now();
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::TimedOut);
    within_bound(start);
}

#[test]
fn a_server_that_never_answers_times_out_within_the_bound() {
    let server = Server::start(|_| Reply::Silence);
    let fetcher = fetcher(FetchPolicy { timeout: BOUND, ..dev() });
    let start = Instant::now();
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::TimedOut);
    within_bound(start);
}

#[test]
fn a_body_that_drips_forever_times_out_within_the_bound() {
    // Every read succeeds: only a bound on the whole fetch stops it.
    let server = Server::start(|_| Reply::Drip(Reply::open_head("application/json"), Duration::from_millis(20)));
    let fetcher = fetcher(FetchPolicy { timeout: BOUND, ..dev() });
    let start = Instant::now();
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::TimedOut);
    within_bound(start);
}

#[test]
fn a_content_type_other_than_json_is_refused_unless_the_caller_opts_out() {
    let server = Server::start(|_| Reply::response(200, &[("Content-Type", "text/html")], "{}"));
    let fetcher = fetcher(dev());
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::NotJsonContentType);
    let lenient = Limits { require_json_content_type: false, ..Limits::default() };
    assert!(fetcher.get_json(&server.url("/"), &lenient).is_ok());
}

#[test]
fn a_missing_content_type_is_refused() {
    let server = Server::start(|_| Reply::response(200, &[], "{}"));
    let err = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::NotJsonContentType);
}

#[test]
fn json_subtypes_and_parameters_are_json() {
    let server = Server::start(|_| {
        Reply::response(200, &[("Content-Type", "application/jwk-set+json; charset=utf-8")], r#"{"keys": []}"#)
    });
    let doc = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap();
    assert_eq!(doc.json["keys"], serde_json::json!([]));
}

#[test]
fn only_200_is_success() {
    for status in [201, 204, 304, 400, 404, 500, 503] {
        let server = Server::start(move |_| Reply::response(status, &[("Content-Type", "application/json")], "{}"));
        let err = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap_err();
        assert_eq!(err, FetchError::Status(status));
        assert_eq!(err.to_string(), format!("status {status}"));
    }
}

#[test]
fn a_body_that_is_not_json_is_refused() {
    for body in ["", "{", "not json", "{\"a\": 1} trailing", "\u{feff}{}"] {
        let server = Server::start(move |_| Reply::json(body));
        let err = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap_err();
        assert_eq!(err, FetchError::NotJson, "{body:?}");
    }
}

#[test]
fn json_that_is_not_an_object_is_refused() {
    for body in ["[]", "[{}]", "\"keys\"", "42", "null", "true"] {
        let server = Server::start(move |_| Reply::json(body));
        let err = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap_err();
        assert_eq!(err, FetchError::NotObject, "{body}");
    }
}

#[test]
fn deeply_nested_json_fails_cleanly() {
    let body: &'static str =
        Box::leak(format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)).into_boxed_str());
    let server = Server::start(move |_| Reply::json(body));
    let err = fetcher(dev()).get_json(&server.url("/"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::NotJson);
}

#[test]
fn a_connection_refused_is_reported_as_such() {
    // Bind then drop: nothing listens on the port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = fetcher(dev()).get_json(&format!("http://127.0.0.1:{port}/"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::Connect { host: "127.0.0.1".into() });
}
