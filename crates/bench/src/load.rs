//! The load generator: keep-alive HTTP/1.1 connections on one thread,
//! each sending the same request back to back, for a bounded time and a
//! bounded number of requests. Given several servers (replicas), the
//! connections take them in turn.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth_jose::{SigningKey, sign_dpop_proof};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One request, sent over and over.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub content_type: &'static str,
    pub body: Bytes,
    /// The status that counts as success.
    pub expect: u16,
    /// DPoP proofs, one per request, made before the run.
    pub dpop: Option<Arc<Proofs>>,
}

impl Request {
    pub fn form(path: String, pairs: &[(&str, &str)]) -> Self {
        let body = pairs.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect::<Vec<_>>().join("&");
        Self {
            path,
            content_type: "application/x-www-form-urlencoded",
            body: Bytes::from(body),
            expect: 200,
            dpop: None,
        }
    }

    pub fn json(path: String, body: &serde_json::Value, expect: u16) -> Self {
        Self { path, content_type: "application/json", body: Bytes::from(body.to_string()), expect, dpop: None }
    }

    /// This request with a fresh DPoP proof of `key` for `htu` on each.
    pub fn with_dpop(self, key: SigningKey, htu: String) -> Self {
        Self { dpop: Some(Arc::new(Proofs { key, htu, ready: Mutex::new(Vec::new()), made: Mutex::new(0) })), ..self }
    }

    /// Makes the proofs a run of `shape` may use, if the request sends
    /// proofs: made ahead, so that signing them costs the run nothing, and
    /// just before it, so that they are fresh (a proof is good for a
    /// minute).
    pub fn prepare(&self, shape: Shape) {
        if let Some(proofs) = &self.dpop {
            let count = (shape.duration.as_secs_f64() * PROOFS_PER_SECOND) as u64;
            proofs.make(count.min(shape.max_requests));
        }
    }
}

/// More than any case sends a second on this machine: a run that uses
/// every proof ends early, and its rate is still right.
const PROOFS_PER_SECOND: f64 = 25_000.0;

/// DPoP proofs made ahead of a run, each used once.
#[derive(Debug)]
pub struct Proofs {
    key: SigningKey,
    htu: String,
    ready: Mutex<Vec<String>>,
    made: Mutex<u64>,
}

impl Proofs {
    fn make(&self, count: u64) {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let fresh: Vec<String> = (*made..*made + count)
            .filter_map(|n| {
                let claims =
                    serde_json::json!({"jti": format!("bench-{n}"), "htm": "POST", "htu": self.htu, "iat": now});
                sign_dpop_proof(&self.key, &claims).ok()
            })
            .collect();
        *made += count;
        *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    fn next(&self) -> Option<String> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How much load: connections, and when to stop.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub connections: usize,
    pub duration: Duration,
    pub max_requests: u64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Latency of each successful request, microseconds, sorted.
    pub latencies: Vec<u32>,
    pub first_failure: Option<String>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q`, milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1);
        f64::from(self.latencies[i]) / 1000.0
    }
}

/// Sends `request` to the servers at `addrs` in the given shape and
/// reports: connection `i` goes to `addrs[i % addrs.len()]`.
pub fn run(addrs: &[SocketAddr], request: &Request, shape: Shape) -> Outcome {
    if addrs.is_empty() {
        return Outcome { failed: 1, first_failure: Some("no server to send to".into()), ..Outcome::default() };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return Outcome { failed: 1, first_failure: Some(format!("runtime: {e}")), ..Outcome::default() },
    };
    runtime.block_on(async {
        let state = Rc::new(State {
            sent: Cell::new(0),
            outcome: RefCell::new(Outcome::default()),
            deadline: Instant::now() + shape.duration,
            max_requests: shape.max_requests,
        });
        let started = Instant::now();
        let local = tokio::task::LocalSet::new();
        for &addr in addrs.iter().cycle().take(shape.connections) {
            local.spawn_local(connection(addr, request.clone(), Rc::clone(&state)));
        }
        local.await;
        let mut outcome = state.outcome.take();
        outcome.elapsed = started.elapsed();
        outcome.latencies.sort_unstable();
        outcome
    })
}

struct State {
    sent: Cell<u64>,
    outcome: RefCell<Outcome>,
    deadline: Instant,
    max_requests: u64,
}

impl State {
    fn take_one(&self) -> bool {
        if self.sent.get() >= self.max_requests || Instant::now() >= self.deadline {
            return false;
        }
        self.sent.set(self.sent.get() + 1);
        true
    }

    fn fail(&self, why: String) {
        let mut outcome = self.outcome.borrow_mut();
        outcome.failed += 1;
        outcome.first_failure.get_or_insert(why);
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection(addr: SocketAddr, request: Request, state: Rc<State>) {
    let mut sender = match open(addr).await {
        Ok(sender) => sender,
        Err(e) => return state.fail(e),
    };
    while state.take_one() {
        let mut http = hyper::Request::post(&request.path)
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::CONTENT_TYPE, request.content_type);
        if let Some(proofs) = &request.dpop {
            // Out of proofs: the run ends here for this connection.
            let Some(proof) = proofs.next() else { return };
            http = http.header("dpop", proof);
        }
        let http = http.body(Full::new(request.body.clone()));
        let http = match http {
            Ok(http) => http,
            Err(e) => return state.fail(format!("building the request: {e}")),
        };
        let started = Instant::now();
        let exchange = async {
            let response = sender.send_request(http).await.map_err(|e| format!("sending: {e}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| format!("reading: {e}"))?.to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok((status, _))) if status == request.expect => {
                let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                let mut outcome = state.outcome.borrow_mut();
                outcome.ok += 1;
                outcome.latencies.push(micros);
            }
            Ok(Ok((status, body))) => {
                state.fail(format!("status {status}: {}", String::from_utf8_lossy(&body)));
            }
            Ok(Err(e)) => {
                state.fail(e);
                // The connection is unusable; open another.
                match open(addr).await {
                    Ok(fresh) => sender = fresh,
                    Err(e) => return state.fail(e),
                }
            }
            Err(_) => return state.fail(format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn open(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connecting: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
