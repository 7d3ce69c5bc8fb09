//! Connections are bounded in time and number: a client that does not
//! read its responses is cut off, idle connections are closed, one source
//! cannot hold more than its share, and at the server-wide cap new clients
//! wait and are served once others close. The server keeps answering
//! everyone else throughout.
//!
//! Clients bind to other loopback addresses (127.0.0.2, 127.0.0.3, ...) to
//! be other sources; every test starts its server with small limits.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::support::Server;

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
const HEALTHZ_AND_CLOSE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A connection to the server from the loopback address `source`, with a
/// receive buffer of `receive_buffer` bytes if given.
fn connect_from(server: &Server, source: Ipv4Addr, receive_buffer: Option<usize>) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    socket.bind(&SocketAddr::from((source, 0)).into()).expect("binding to a loopback address");
    socket.connect_timeout(&server.addr.into(), Duration::from_secs(5)).expect("connecting");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    stream
}

/// Asks for /healthz on `stream` and reads the answer, leaving the
/// connection open; whether it was 200.
fn healthz_keep_alive(stream: &mut TcpStream) -> bool {
    if stream.write_all(HEALTHZ).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    // The body, "ok", ends the answer.
    while !answer.ends_with(b"\r\n\r\nok") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer.starts_with(b"HTTP/1.1 200 ")
}

/// Connections from `source`, each served once and left open.
fn hold(server: &Server, source: Ipv4Addr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = connect_from(server, source, None);
            assert!(healthz_keep_alive(&mut stream), "a connection within the limits is served");
            stream
        })
        .collect()
}

/// The status line of the answer to `GET /healthz` on a new connection
/// from `source` ("" if none).
fn healthz_from(server: &Server, source: Ipv4Addr) -> String {
    let mut stream = connect_from(server, source, None);
    let _ = stream.write_all(HEALTHZ_AND_CLOSE);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
}

fn healthz(server: &Server) -> u16 {
    server.get_url(&format!("{}/healthz", server.base)).status
}

#[test]
fn a_client_that_pipelines_requests_and_never_reads_is_disconnected() {
    let server = Server::start_with_args(&["--write-timeout", "1"]);
    let agent = server.register_agent();
    let (stalled, stall) = std::sync::mpsc::channel();
    let server = &server;
    std::thread::scope(|s| {
        // Requests, a hundred at a time, until the server stops taking
        // them; the answers are never read, and a small receive buffer
        // fills at once. Returns how long the server kept the connection.
        let pipeliner = s.spawn(move || {
            let mut stream = connect_from(server, loopback(2), Some(4096));
            stream.set_write_timeout(Some(Duration::from_millis(200))).expect("write timeout");
            let batch = HEALTHZ.repeat(100);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(25) {
                match stream.write(&batch) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        let _ = stalled.send(());
                    }
                    Err(_) => return Some(started.elapsed()),
                }
            }
            None
        });
        let _ = stall.recv_timeout(Duration::from_secs(25));
        // Meanwhile, everyone else is served.
        assert_eq!(healthz(server), 200);
        server.read_token(&agent);
        let kept = pipeliner.join().expect("the pipelining client");
        let kept = kept.expect("the client that never reads was still connected after 25 s");
        assert!(kept < Duration::from_secs(10), "the client that never reads was kept {kept:?}");
    });
    assert_eq!(healthz(server), 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start_with_args(&["--idle-timeout", "1"]);
    let mut stream = connect_from(&server, loopback(2), None);
    assert!(healthz_keep_alive(&mut stream));
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = stream.read_to_end(&mut rest).is_ok();
    let waited = started.elapsed();
    assert!(closed && rest.is_empty(), "the server closed the idle connection, saying nothing more");
    assert!(waited < Duration::from_secs(5), "an idle connection was kept {waited:?}");
}

#[test]
fn one_source_at_its_connection_limit_does_not_stop_other_sources() {
    let server = Server::start_with_args(&["--max-connections-per-source", "3"]);
    let busy = loopback(2);
    let mut held = hold(&server, busy, 3);
    // One more from the same source is told why, and closed at once.
    let mut over = connect_from(&server, busy, None);
    let mut answer = String::new();
    let _ = over.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{answer:?}");
    // Other sources are served: health checks and token requests alike.
    assert!(healthz_from(&server, loopback(3)).starts_with("HTTP/1.1 200 "));
    assert_eq!(healthz(&server), 200);
    let agent = server.register_agent();
    server.read_token(&agent);
    // Once one of its connections closes, the source is served again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = healthz_from(&server, busy);
        if status.starts_with("HTTP/1.1 200 ") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused after one of its connections closed: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn at_the_server_wide_limit_new_clients_wait_and_are_served_once_connections_close() {
    let server = Server::start_with_args(&["--max-connections", "3", "--max-connections-per-source", "2"]);
    let mut held = hold(&server, loopback(2), 2);
    held.extend(hold(&server, loopback(3), 1));
    // A client from a fourth source waits: it is not answered while the
    // three stay open...
    let mut waiting = connect_from(&server, loopback(4), None);
    waiting.write_all(HEALTHZ_AND_CLOSE).expect("sending the request");
    waiting.set_read_timeout(Some(Duration::from_secs(1))).expect("read timeout");
    let mut buf = [0; 64];
    match waiting.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a client was answered past the server-wide limit: {other:?}"),
    }
    // ...and is answered once they close.
    drop(held);
    waiting.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut answer = Vec::new();
    let _ = waiting.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(healthz(&server), 200);
}
