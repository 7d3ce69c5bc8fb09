//! A tenant's hostile plugins stay inside their realm: plugins that sleep
//! in a host call or loop are stopped at their deadline, and however many
//! requests their realms get, the other realms keep registering clients
//! and issuing tokens, and the server keeps a bounded number of threads.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Server, cli, seed_registration};

fn admin(server: &Server, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", server.base.as_str()]);
    let (ok, out, err) = cli(&all, ADMIN_TOKEN);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

/// Creates `realm`, whose DCR policy is the misbehaving fixture.
fn hostile_realm(server: &Server, dir: &std::path::Path, realm: &str) {
    let settings = json!({
        "ai_agents_enabled": true,
        "open_registration": true,
        "plugin_timeout_ms": 200,
    });
    admin(server, &["realm", "create", "--realm", realm, "--settings", &settings.to_string()]);
    let file = dir.join("misbehaving-dcr.wasm");
    std::fs::write(&file, agentauth_plugins::MISBEHAVING_DCR).expect("writing the plugin");
    let file = file.to_string_lossy().into_owned();
    admin(server, &["plugin", "push", "--realm", realm, "--name", "misbehaving-dcr", "--hook", "dcr", &file]);
    admin(server, &["realm", "set-hook", "--realm", realm, "--hook", "dcr", "--plugin", "misbehaving-dcr"]);
}

#[test]
fn realms_whose_plugins_sleep_or_loop_leave_another_realm_serving() {
    let server = Server::start_with_admin();
    let dir = tempfile::tempdir().expect("temp dir");
    let hostile = [("sleepy", "dcr-sleep"), ("drowsy", "dcr-sleep"), ("loopy", "dcr-loop")];
    for (realm, _) in hostile {
        hostile_realm(&server, dir.path(), realm);
    }
    // The demo realm's policies take microseconds; a generous deadline
    // keeps this test about the sandbox, not about a loaded test machine,
    // and so do registration rates no single source would be given.
    let alpha = json!({
        "plugin_timeout_ms": 2000,
        "registrations_per_minute": 1_000_000,
        "registrations_per_minute_per_source": 1_000_000,
    });
    admin(&server, &["realm", "set", "--realm", "alpha", "--settings", &alpha.to_string()]);
    let threads_before = server.threads();
    let until = Instant::now() + Duration::from_secs(4);
    let (hostile_answers, alpha_answers, most_threads) = std::thread::scope(|s| {
        // Each hostile realm gets far more requests at once than its slots.
        let mut attackers = Vec::new();
        for (realm, mode) in hostile {
            for _ in 0..48 {
                let server = &server;
                attackers.push(s.spawn(move || {
                    let url = format!("{}/am/oauth2/realms/root/realms/{realm}/aiagent/register", server.base);
                    let body = json!({"client_name": mode, "grant_types": ["client_credentials"]}).to_string();
                    let mut answers = Vec::new();
                    while Instant::now() < until {
                        let started = Instant::now();
                        let reply = server.post_json(&url, &body);
                        answers.push((
                            reply.status,
                            reply.json["error"].as_str().unwrap_or("").to_string(),
                            started.elapsed(),
                        ));
                    }
                    answers
                }));
            }
        }
        let watcher = s.spawn(|| {
            let mut most = 0;
            while Instant::now() < until {
                most = most.max(server.threads());
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        });
        // Meanwhile the demo realm registers agents and issues tokens.
        std::thread::sleep(Duration::from_millis(500));
        let mut alpha = Vec::new();
        while Instant::now() + Duration::from_millis(300) < until {
            let registered = server.register_raw(&seed_registration().to_string());
            alpha.push(("register", registered.status, registered.body.clone()));
            if registered.status == 201 {
                let agent = crate::support::Credentials::from_registration(&registered.json);
                let token = server.token(
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", &agent.client_id),
                        ("client_secret", &agent.client_secret),
                        ("scope", "read"),
                    ],
                    None,
                );
                alpha.push(("token", token.status, token.body));
            }
        }
        let hostile: Vec<_> = attackers.into_iter().flat_map(|a| a.join().expect("attacker")).collect();
        (hostile, alpha, watcher.join().expect("watcher"))
    });

    assert!(alpha_answers.len() >= 10, "the demo realm answered only {} requests", alpha_answers.len());
    for (what, status, body) in &alpha_answers {
        assert!(matches!((*what, *status), ("register", 201) | ("token", 200)), "{what}: {status} {body}");
    }
    for (status, error, took) in &hostile_answers {
        assert!(
            matches!((*status, error.as_str()), (500, "server_error") | (503, "temporarily_unavailable")),
            "a hostile realm answered {status} {error}"
        );
        assert!(*took < Duration::from_secs(3), "a hostile request took {took:?}");
    }
    assert!(hostile_answers.iter().any(|(s, _, _)| *s == 500), "the plugins ran and were stopped");
    // 144 requests at once, 48 of them running (16 slots a realm): the
    // others wait without a thread each.
    assert!(most_threads < threads_before + 80, "threads grew from {threads_before} to {most_threads}");
}

/// Registers an agent named `name` in the demo realm.
fn agent_named(server: &Server, name: &str) -> crate::support::Credentials {
    let mut body = seed_registration();
    body["client_name"] = json!(name);
    let registered = server.register_raw(&body.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    crate::support::Credentials::from_registration(&registered.json)
}

#[test]
fn a_plugin_can_neither_flood_the_log_nor_forge_a_line_in_it() {
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("server.log");
    let server = Server::start_logging_to(&log);
    // The demo realm's may-act policy, replaced by one that logs on demand.
    let file = logs.path().join("misbehaving.wasm");
    std::fs::write(&file, agentauth_plugins::MISBEHAVING_MAY_ACT).expect("writing the plugin");
    let file = file.to_string_lossy().into_owned();
    admin(
        &server,
        &["plugin", "push", "--realm", "alpha", "--name", "software-agent-may-act", "--hook", "may-act", &file],
    );
    admin(&server, &["realm", "set", "--realm", "alpha", "--settings", r#"{"plugin_timeout_ms": 2000}"#]);
    let flooder = agent_named(&server, "log-flood");
    let forger = agent_named(&server, "log-forge");
    let until = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                while Instant::now() < until {
                    let form = [
                        ("grant_type", "client_credentials"),
                        ("client_id", flooder.client_id.as_str()),
                        ("client_secret", flooder.client_secret.as_str()),
                        ("scope", "read"),
                    ];
                    server.token(&form, None);
                }
            });
        }
    });
    server.read_token(&forger);
    drop(server);

    let written = std::fs::read_to_string(&log).expect("the log");
    let flood: usize = written.lines().filter(|l| l.contains("xxxxxxxxxx")).map(str::len).sum();
    // The realm's rate is 64 KiB a second: three seconds, with room.
    assert!(flood < 1 << 20, "the plugin wrote {flood} bytes of log in 3 s");
    assert!(!written.lines().any(|l| l.starts_with("INFO agentauth: forged")), "a forged line");
    assert!(written.contains(r"ok\nINFO agentauth: forged line\r\u{1b}[2Kcleared"), "the message, escaped");
}
