//! Structured logs: with `--log-format json` every line is one JSON object
//! with stable fields, and every line of a request, a plugin's included,
//! carries the request's id (the caller's `X-Request-Id` when valid,
//! echoed back) and its W3C trace id.

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Credentials, Server, cli, seed_registration};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn post_with(url: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> (u16, Option<String>) {
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = http.post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send_form(form.iter().copied()).expect("an answer");
    let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    (response.status().as_u16(), id)
}

#[test]
fn every_line_is_json_and_a_requests_lines_carry_its_ids() {
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("server.log");
    let server = Server::start_logging_json_to(&log);
    // The demo's may-act policy, replaced by one that logs on every call.
    let file = logs.path().join("misbehaving.wasm");
    std::fs::write(&file, agentauth_plugins::MISBEHAVING_MAY_ACT).expect("writing the plugin");
    let file = file.to_string_lossy().into_owned();
    let push = ["plugin", "push", "--server", &server.base, "--realm", "alpha", "--name", "software-agent-may-act"];
    let (ok, _, err) = cli(&[&push[..], &["--hook", "may-act", &file]].concat(), ADMIN_TOKEN);
    assert!(ok, "{err}");

    let mut body = seed_registration();
    body["client_name"] = json!("quiet");
    let registered = server.register_raw(&body.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let agent = Credentials::from_registration(&registered.json);

    // A token request with the caller's ids; one with an id unfit for a log.
    let token_url = server.realm_url("access_token");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", agent.client_id.as_str()),
        ("client_secret", agent.client_secret.as_str()),
        ("scope", "read"),
    ];
    let ids = [("x-request-id", "e2e-token-request-1"), ("traceparent", TRACEPARENT)];
    let (status, echoed) = post_with(&token_url, &ids, &form);
    assert_eq!((status, echoed.as_deref()), (200, Some("e2e-token-request-1")));
    let forged = "x\"} {\"level\":\"ERROR\"";
    let (status, made) = post_with(&token_url, &[("x-request-id", forged)], &form);
    assert_eq!(status, 200);
    let made = made.expect("a request id made for the request");
    assert!(made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    // A refusal is logged in its request too.
    let wrong =
        [("grant_type", "client_credentials"), ("client_id", agent.client_id.as_str()), ("client_secret", "no")];
    let (status, _) = post_with(&token_url, &[("x-request-id", "e2e-refused-1")], &wrong);
    assert_eq!(status, 401);
    server.stop();

    let text = std::fs::read_to_string(&log).expect("reading the log");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(lines.len() > 10, "{text}");
    for line in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
    }
    // `spans` starts with the request's span, whatever span (a plugin
    // call's, say) the line was logged in.
    let of_request = |id: &str| -> Vec<&Value> { lines.iter().filter(|l| l["spans"][0]["request_id"] == id).collect() };

    let token_lines = of_request("e2e-token-request-1");
    let plugin_line = token_lines
        .iter()
        .find(|l| l["plugin"].as_str().is_some_and(|p| p.starts_with("alpha/software-agent-may-act@2")))
        .unwrap_or_else(|| panic!("the plugin's line carries the request id: {token_lines:?}"));
    assert_eq!(plugin_line["spans"][0]["trace_id"], TRACE_ID, "{plugin_line}");
    let answered = token_lines.iter().find(|l| l["message"] == "answered").expect("the request's last line");
    assert_eq!(answered["status"], 200);
    assert_eq!(answered["span"]["realm"], "alpha");
    assert_eq!(answered["span"]["client_id"], agent.client_id.as_str());

    assert!(!of_request(&made).is_empty(), "the made id is the one logged");
    assert!(!text.contains("x\\\"} {"), "the refused id never reaches the log");
    let refused = of_request("e2e-refused-1");
    assert!(refused.iter().any(|l| l["message"] == "answered" && l["status"] == 401), "{refused:?}");
    // A request made without ids gets a trace id of its own, not the caller's.
    assert!(of_request(&made).iter().all(|l| l["spans"][0]["trace_id"] != TRACE_ID));
}
