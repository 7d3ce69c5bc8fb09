//! The metrics of a running server: on the main listener for the
//! operator's token only, and on a listener of their own
//! (`--metrics-listen`) without one; counting what the server did.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::support::{ADMIN_TOKEN, Server, answered};

/// A connection to the server from 127.0.0.2: a source of its own.
fn connect_from_another_source(server: &Server) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)).into()).expect("binding to 127.0.0.2");
    socket.connect_timeout(&server.addr.into(), Duration::from_secs(5)).expect("connecting");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    stream
}

/// GETs the main listener's `/metrics` with `token` as the bearer, if any,
/// on the connection every other request of the test uses.
fn scrape_main(server: &Server, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::http::Request::get(server.url("/metrics"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let reply = answered(server.send(request.body(Vec::new()).expect("a request")));
    (reply.status, reply.body)
}

/// A free port on 127.0.0.1, for a listener the server binds itself.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    listener.local_addr().expect("address").port()
}

/// GETs `url` with `token` as the bearer, if any: the status, the
/// `Content-Type` and the body.
fn get(url: &str, token: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("an answer");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, content_type, response.body_mut().read_to_string().expect("a body"))
}

/// The value of the sample line `series value` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_metrics_listener_serves_without_a_token_and_the_main_one_only_with_the_operators() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start_with_admin_args(&["--metrics-listen", &listen, "--max-connections-per-source", "2"]);
    let metrics_url = format!("http://{listen}/metrics");

    // A client registers and gets a token.
    let agent = server.register_agent();
    server.read_token(&agent);

    let (status, content_type, text) = get(&metrics_url, None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let issued = r#"agentauth_tokens_issued_total{realm="alpha",grant="client_credentials",kind="jwt"}"#;
    assert_eq!(sample(&text, issued), Some(1.0), "{text}");
    let created = r#"agentauth_registrations_total{realm="alpha",endpoint="aiagent/register",outcome="created"}"#;
    assert_eq!(sample(&text, created), Some(1.0), "{text}");
    let dcr = r#"agentauth_plugin_call_duration_seconds_count{realm="alpha",plugin="software-agent-dcr",version="1"}"#;
    assert_eq!(sample(&text, dcr), Some(1.0), "{text}");
    // Only GET /metrics is there.
    assert_eq!(get(&format!("http://{listen}/healthz"), None).0, 404);

    // The main listener's is the operator's.
    assert_eq!(scrape_main(&server, None).0, 401);
    assert_eq!(scrape_main(&server, Some("not-the-admin-token-0123456789")).0, 401);
    let (status, text) = scrape_main(&server, Some(ADMIN_TOKEN));
    assert_eq!(status, 200);
    assert_eq!(sample(&text, issued), Some(1.0), "{text}");

    // Connections held open are counted; one more from the same source is
    // refused, and that is counted too. (The cap is 2, not 1, so that the
    // test's own connections from 127.0.0.1 have room while the readiness
    // probe's closes.)
    let (_, _, text) = get(&metrics_url, None);
    let open = sample(&text, "agentauth_open_connections").expect("open connections");
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut held = connect_from_another_source(&server);
            held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("writing");
            let mut answer = [0; 12];
            held.read_exact(&mut answer).expect("reading");
            assert_eq!(&answer, b"HTTP/1.1 200");
            held
        })
        .collect();
    let mut refused = connect_from_another_source(&server);
    let mut answer = Vec::new();
    let _ = refused.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 503 "), "{}", String::from_utf8_lossy(&answer));
    let (_, _, text) = get(&metrics_url, None);
    assert_eq!(sample(&text, "agentauth_open_connections"), Some(open + 2.0), "{text}");
    let limited = r#"agentauth_rate_limited_total{realm="-",limit="connections_per_source"}"#;
    assert_eq!(sample(&text, limited), Some(1.0), "{text}");
    drop(held);
}
