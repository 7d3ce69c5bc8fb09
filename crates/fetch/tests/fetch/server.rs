//! A tiny HTTP/1.1 server on loopback answering canned responses, well
//! behaved or not: stalling, streaming forever, dripping, redirecting.
//!
//! A thread per connection reads one request's head, records its path,
//! asks the test's handler what to answer, writes it and closes. It counts
//! accepted connections too, so a test can show a refused URL never
//! reached it. It also serves HTTPS with a certificate no public root
//! signed: `fixtures/` holds a test CA (its key thrown away) and a P-256
//! certificate it issued for `localhost` and `127.0.0.1`, valid until
//! 2126, made with `openssl req -x509` and `openssl x509 -req`. The
//! server's key is a test fixture and protects nothing.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a test helper that unwraps fails the test with a location

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the server answers to one request.
pub enum Reply {
    /// These bytes, then the connection closes.
    Bytes(Vec<u8>),
    /// These bytes (a head), then silence with the connection open.
    Stall(Vec<u8>),
    /// These bytes, then `x` for as long as the client reads.
    Endless(Vec<u8>),
    /// These bytes, then one byte each interval, forever.
    Drip(Vec<u8>, Duration),
    /// Nothing, with the connection open.
    Silence,
    /// The reply once the gate opens.
    AfterGate(Gate, Box<Reply>),
}

impl Reply {
    /// A complete response with a `Content-Length`.
    pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        Self::Bytes(bytes)
    }

    /// `200` with `application/json` and these extra headers.
    pub fn json_with(body: &str, headers: &[(&str, &str)]) -> Self {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        Self::response(200, &all, body)
    }

    /// `200` with `application/json`.
    pub fn json(body: &str) -> Self {
        Self::json_with(body, &[])
    }

    /// `302` to `location`.
    pub fn redirect(location: &str) -> Self {
        Self::response(302, &[("Location", location)], "")
    }

    /// A head without a length: the body runs until the connection closes.
    pub fn open_head(content_type: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n").into_bytes()
    }
}

/// A gate a reply waits behind until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0.0.lock().unwrap();
        while !*open {
            open = self.0.1.wait(open).unwrap();
        }
    }
}

type Handler = dyn Fn(&str) -> Reply + Send + Sync;

pub struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves plain HTTP on 127.0.0.1, on a port of its own.
    pub fn start(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(Arc::new(handler), None)
    }

    /// Serves HTTPS with the test CA's certificate for `localhost` and
    /// `127.0.0.1`.
    pub fn start_tls(handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(Arc::new(handler), Some(tls_config()))
    }

    fn start_with(handler: Arc<Handler>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&accepted), Arc::clone(&paths));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, tls) = (Arc::clone(&handler), Arc::clone(&seen), tls.clone());
                thread::spawn(move || {
                    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    match tls {
                        None => serve(stream, &*handler, &seen),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                            serve(rustls::StreamOwned::new(connection, stream), &*handler, &seen);
                        }
                    }
                });
            }
        });
        Self { addr, accepted, paths }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.paths.lock().unwrap().len()
    }

    /// The paths requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// Waits until `n` requests have been read.
    pub fn wait_for_requests(&self, n: usize) {
        let start = Instant::now();
        while self.requests() < n {
            assert!(start.elapsed() < Duration::from_secs(10), "the server saw {} requests, not {n}", self.requests());
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Every request read by any test server, head and body, in order.
pub static RAW: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn serve<S: Read + Write>(mut stream: S, handler: &Handler, seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    // A body (a POSTed form) follows the head, as long as it says.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |i| i + 4);
    let length = String::from_utf8_lossy(&head[..end])
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0usize);
    while head.len() < end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
    seen.lock().unwrap().push(path.clone());
    RAW.lock().unwrap().push(text);
    let reply = handler(&path);
    write_reply(&mut stream, reply);
}

fn write_reply<S: Read + Write>(stream: &mut S, reply: Reply) {
    // Write errors mean the client went away, which several tests want.
    match reply {
        Reply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes).and_then(|()| stream.flush());
        }
        Reply::Stall(head) => {
            let _ = stream.write_all(&head).and_then(|()| stream.flush());
            thread::sleep(Duration::from_secs(30));
        }
        Reply::Endless(head) => {
            if stream.write_all(&head).is_err() {
                return;
            }
            let chunk = [b'x'; 16 * 1024];
            while stream.write_all(&chunk).is_ok() {}
        }
        Reply::Drip(head, interval) => {
            if stream.write_all(&head).and_then(|()| stream.flush()).is_err() {
                return;
            }
            while stream.write_all(b" ").and_then(|()| stream.flush()).is_ok() {
                thread::sleep(interval);
            }
        }
        Reply::Silence => thread::sleep(Duration::from_secs(30)),
        Reply::AfterGate(gate, reply) => {
            gate.wait();
            write_reply(stream, *reply);
        }
    }
}

const CA: &[u8] = include_bytes!("fixtures/ca.pem");
const CERT: &[u8] = include_bytes!("fixtures/server.pem");
const KEY: &[u8] = include_bytes!("fixtures/server.key");

/// The test CA's certificate (DER), which nothing trusts unless told to.
pub fn test_ca_der() -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(CA).unwrap().to_vec()
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(CERT).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}
