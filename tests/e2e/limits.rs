//! Hostile request shapes: oversized heads, deep JSON, too many form
//! fields and clients that send too slowly each get a bounded, clear
//! answer, and the server keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Server, seed_registration};

/// Sends `request` as raw bytes and returns what the server answered
/// before closing (or after 30 s).
fn raw(server: &Server, request: &[u8]) -> String {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    // The server may answer and close before the whole request is sent.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn oversized_request_heads_get_431() {
    let server = Server::start();
    let long = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n", "a".repeat(40 * 1024));
    assert!(status_line(&raw(&server, long.as_bytes())).starts_with("HTTP/1.1 431"), "a 40 KiB header");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert!(status_line(&raw(&server, many.as_bytes())).starts_with("HTTP/1.1 431"), "200 headers");
    assert_eq!(server.get_url(&format!("{}/healthz", server.base)).status, 200);
}

#[test]
fn deeply_nested_registration_json_is_invalid_client_metadata() {
    let server = Server::start();
    let mut body = seed_registration().to_string();
    body.insert_str(1, &format!("\"deep\": {}1{}, ", "[".repeat(5000), "]".repeat(5000)));
    server.register_raw(&body).assert_error(400, "invalid_client_metadata");
    // Nesting the metadata really uses is fine.
    assert_eq!(server.register_raw(&seed_registration().to_string()).status, 201);
}

#[test]
fn a_form_with_too_many_fields_is_invalid_request() {
    let server = Server::start();
    let names: Vec<String> = (0..100).map(|i| format!("extra{i}")).collect();
    let mut form: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
    form.push(("grant_type", "client_credentials"));
    server.token(&form, None).assert_error(400, "invalid_request");
}

#[test]
fn slow_clients_are_cut_off() {
    let server = Server::start();
    let url = server.realm_url("access_token");
    let path = url.trim_start_matches(&server.base).to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    std::thread::scope(|s| {
        // A head that never ends: the connection is closed.
        let head = s.spawn(|| {
            let mut stream = TcpStream::connect(&addr).expect("connecting");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").expect("writing");
            let started = Instant::now();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            started.elapsed()
        });
        // A body that never ends: 408.
        let body = s.spawn(|| {
            let mut stream = TcpStream::connect(&addr).expect("connecting");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: 100\r\n\r\ngrant_type="
            );
            stream.write_all(request.as_bytes()).expect("writing");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        });
        let waited = head.join().expect("head thread");
        assert!(waited < Duration::from_secs(25), "a stalled head held the connection for {waited:?}");
        let answer = body.join().expect("body thread");
        assert!(status_line(&answer).starts_with("HTTP/1.1 408"), "{answer}");
    });
}
