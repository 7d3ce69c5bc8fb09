//! Traces: with `--otlp-endpoint`, the spans of a request (the request,
//! the client's authentication, each plugin call, signing) are exported
//! over OTLP/HTTP, joined to the caller's W3C trace; the trace id in the
//! logs is the exported one. Collected here by a small OTLP/HTTP (JSON)
//! receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Server;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: every body posted to it, as JSON.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut length = 0;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if let Ok(json) = serde_json::from_slice(&body) {
                            kept.lock().expect("lock").push(json);
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, bodies }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().expect("lock");
        let mut spans = Vec::new();
        for body in bodies.iter() {
            for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
        spans
    }
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let attributes = span["attributes"].as_array()?;
    let value = &attributes.iter().find(|a| a["key"] == key)?["value"];
    value.get("stringValue").or_else(|| value.get("intValue"))
}

#[test]
fn a_requests_spans_are_exported_in_the_callers_trace() {
    let receiver = Receiver::start();
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("server.log");
    let server = Server::start_exporting_traces(&receiver.url, &log);
    let agent = server.register_agent();

    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", agent.client_id.as_str()),
        ("client_secret", agent.client_secret.as_str()),
        ("scope", "read"),
    ];
    let traceparent = format!("00-{TRACE_ID}-{PARENT}-01");
    let answer = http
        .post(&server.realm_url("access_token"))
        .header("traceparent", &traceparent)
        .header("x-request-id", "traced-request-1")
        .send_form(form.iter().copied())
        .expect("an answer");
    assert_eq!(answer.status().as_u16(), 200);
    let untraced = server.read_token(&agent);
    assert!(!untraced.is_empty());

    let deadline = Instant::now() + Duration::from_secs(15);
    let in_trace = loop {
        let spans: Vec<Value> = receiver.spans().into_iter().filter(|s| s["traceId"] == TRACE_ID).collect();
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        if ["request", "authenticate", "plugin", "sign"].iter().all(|n| names.contains(n)) {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans of the trace received: {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let named = |name: &str| in_trace.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name} span"));
    let request = named("request");
    assert_eq!(request["parentSpanId"], PARENT, "the request is the child of the caller's span");
    assert_eq!(attribute(request, "request_id").and_then(Value::as_str), Some("traced-request-1"));
    assert_eq!(attribute(request, "realm").and_then(Value::as_str), Some("alpha"));
    let plugin = named("plugin");
    assert_eq!(attribute(plugin, "plugin").and_then(Value::as_str), Some("software-agent-may-act"));
    assert_eq!(attribute(plugin, "version").map(Value::to_string).as_deref(), Some("\"1\""));
    for name in ["authenticate", "plugin", "sign"] {
        assert_eq!(named(name)["traceId"], TRACE_ID);
        assert_ne!(named(name)["parentSpanId"], PARENT, "{name} is inside the request, not beside it");
    }

    // A request that came without a trace starts one: the id it logs is
    // the id it exported.
    server.stop();
    let text = std::fs::read_to_string(&log).expect("the log");
    let logged: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "answered" && l["span"]["trace_id"] != TRACE_ID)
        .filter_map(|l| l["span"]["trace_id"].as_str().map(str::to_string))
        .collect();
    assert!(!logged.is_empty(), "{text}");
    let exported: Vec<Value> = receiver.spans().into_iter().filter(|s| s["name"] == "request").collect();
    for trace_id in &logged {
        assert!(exported.iter().any(|s| s["traceId"] == trace_id.as_str()), "{trace_id} was exported");
    }
}
