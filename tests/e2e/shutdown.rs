//! SIGTERM: the server stops accepting, finishes what it started, and
//! exits cleanly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::Server;

#[test]
fn sigterm_finishes_requests_in_flight_under_load_then_exits_cleanly() {
    let server = Server::start();
    let agent = server.register_agent();
    let addr = server.base.trim_start_matches("http://").to_string();
    let path = server.realm_url("access_token").trim_start_matches(&server.base).to_string();
    let body = format!(
        "grant_type=client_credentials&scope=read&client_id={}&client_secret={}",
        agent.client_id, agent.client_secret
    );

    // A request whose body is still arriving when SIGTERM comes.
    let mut slow = TcpStream::connect(&addr).expect("connecting");
    slow.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).expect("writing the head");
    slow.write_all(&body.as_bytes()[..10]).expect("writing the first bytes");

    let (stop, completed, failed) = (AtomicBool::new(false), AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        // Load: each request either completes with 200 or is refused a
        // connection; none is cut off or answered with an error.
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        return;
                    };
                    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
                    let request = format!("{head}{body}").replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n");
                    if stream.write_all(request.as_bytes()).is_err() {
                        return;
                    }
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    match answer.lines().next() {
                        Some(line) if line.starts_with("HTTP/1.1 200") && answer.contains("access_token") => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        // Accepted before the listener closed, closed unanswered: not started, not lost.
                        None => return,
                        Some(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        server.sigterm();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(completed.load(Ordering::Relaxed) > 0, "no load ran");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests answered with an error during shutdown");

    // The slow request, started before SIGTERM, still completes.
    slow.write_all(&body.as_bytes()[10..]).expect("writing the rest");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = slow.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(12).any(|w| w == b"access_token") && answer.ends_with(b"}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // New connections are refused, and the process exits with success.
    assert!(TcpStream::connect(&addr).is_err(), "still accepting after SIGTERM");
    let status = server.wait_exit(Duration::from_secs(15)).expect("the server did not exit");
    assert!(status.success(), "{status}");
}
