//! A realm's local users, managed by its operator or its admins through
//! the admin API and `agentauth user ...`: created with a password that is
//! never answered, logged, audited or counted; listed, disabled, enabled,
//! given a new password and deleted; one per username; out of reach of
//! another realm's admins.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Reply, Server, answered, cli};

fn admin_as(server: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}/admin/v1/realms{path}", server.base))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .expect("a request");
    answered(server.send(request))
}

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> Reply {
    admin_as(server, ADMIN_TOKEN, method, path, body)
}

/// Runs `agentauth user ...` against `server` with `stdin` as its input;
/// its output as JSON, or its error output.
fn user_cli(server: &Server, args: &[&str], stdin: &str) -> Result<Value, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentauth"))
        .arg("user")
        .args(args)
        .args(["--server", server.base.as_str()])
        .env("AGENTAUTH_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("USER", "e2e")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running agentauth");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writing stdin");
    let out = child.wait_with_output().expect("agentauth's output");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
    } else {
        Err(stderr.into_owned())
    }
}

fn usernames(listed: &Value) -> Vec<&str> {
    listed["users"].as_array().into_iter().flatten().filter_map(|u| u["username"].as_str()).collect()
}

#[test]
fn an_operator_manages_a_realms_users_from_the_command_line() {
    let server = Server::start_with_admin();
    let dir = tempfile::tempdir().expect("temp dir");
    let alice_password = "alice's first password, from a file";
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{alice_password}\n")).expect("writing the password file");
    let file = file.to_string_lossy().into_owned();

    let create = ["create", "--realm", "alpha", "--username", "Alice", "--display-name", "Alice L", "--password-file"];
    let alice = user_cli(&server, &[&create[..], &[file.as_str()]].concat(), "").expect("alice created");
    assert_eq!((alice["username"].as_str(), alice["state"].as_str()), (Some("alice"), Some("active")));
    assert_eq!(alice["display_name"], "Alice L");
    let subject = alice["subject"].as_str().expect("a subject").to_string();
    assert!(subject.starts_with("usr_"), "{subject}");
    assert!(alice.get("password").is_none() && alice.get("password_hash").is_none(), "{alice}");

    let bob_password = "bob's password, on standard input";
    let create = ["create", "--realm", "alpha", "--username", "bob", "--password-stdin"];
    let bob = user_cli(&server, &create, &format!("{bob_password}\n")).expect("bob created");
    // The same name in another case is the same user: refused.
    let again =
        user_cli(&server, &["create", "--realm", "alpha", "--username", "ALICE", "--password-stdin"], "x-1234567");
    assert!(again.as_ref().is_err_and(|e| e.contains("409")), "{again:?}");
    // A password on the command line is no option at all.
    let argv = user_cli(&server, &["create", "--realm", "alpha", "--username", "carol", "--password", "on-argv"], "");
    assert!(argv.is_err_and(|e| e.contains("--password")), "clap names the unknown flag");
    let short =
        user_cli(&server, &["create", "--realm", "alpha", "--username", "carol", "--password-stdin"], "short\n");
    assert!(short.as_ref().is_err_and(|e| e.contains("400") && !e.contains("short\n")), "{short:?}");

    let listed = user_cli(&server, &["list", "--realm", "alpha"], "").expect("listed");
    assert_eq!(usernames(&listed), ["alice", "bob"]);
    let shown = user_cli(&server, &["show", "--realm", "alpha", "--username", "BOB"], "").expect("shown");
    assert_eq!(shown, bob);

    let disabled = user_cli(&server, &["disable", "--realm", "alpha", "--subject", &subject], "").expect("disabled");
    assert_eq!(disabled["state"], "disabled");
    let enabled = user_cli(&server, &["enable", "--realm", "alpha", "--username", "alice"], "").expect("enabled");
    assert_eq!(enabled["state"], "active");
    let set = ["set-password", "--realm", "alpha", "--username", "alice", "--password-stdin"];
    user_cli(&server, &set, "alice's second password\r\n").expect("password set");
    user_cli(&server, &["delete", "--realm", "alpha", "--username", "bob"], "").expect("deleted");
    let gone = user_cli(&server, &["show", "--realm", "alpha", "--subject", bob["subject"].as_str().unwrap_or("")], "");
    assert!(gone.is_err_and(|e| e.contains("404")));
    assert_eq!(usernames(&user_cli(&server, &["list", "--realm", "alpha"], "").expect("listed")), ["alice"]);

    // Every change is audited under the operator's name, without a password.
    let (ok, audit, err) = cli(&["realm", "audit", "--realm", "alpha", "--server", &server.base], ADMIN_TOKEN);
    assert!(ok, "{err}");
    let actions: Vec<String> = serde_json::from_str::<Value>(&audit).expect("JSON")["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains("usr_")))
        .filter_map(|e| e["action"].as_str().map(String::from))
        .collect();
    assert_eq!(actions, ["create-user", "create-user", "disable-user", "enable-user", "set-password", "delete-user"]);
    for password in [alice_password, bob_password, "alice's second password"] {
        assert!(!audit.contains(password), "the audit log holds a password");
    }
    assert!(!audit.contains("$argon2"), "the audit log holds a password hash");
}

#[test]
fn the_admin_api_keeps_usernames_unique_passwords_unanswered_and_realms_apart() {
    let server = Server::start_with_admin();
    let password = "the API's password 0123456789";
    let created = admin(&server, "POST", "/alpha/users", Some(json!({"username": "dana", "password": password})));
    assert_eq!(created.status, 201, "{}", created.body);
    let subject = created.json["subject"].as_str().expect("a subject").to_string();
    let duplicate = admin(&server, "POST", "/alpha/users", Some(json!({"username": "Dana", "password": password})));
    duplicate.assert_error(409, "conflict");

    for (body, why) in [
        (json!({"username": "erin"}), "password is required"),
        (json!({"username": "erin", "password": 12345678}), "password must be a string"),
        (json!({"username": "erin", "passwd": password}), "unknown field \"passwd\""),
        (json!({"username": "erin", "password": "short"}), "at least 8"),
        (json!({"username": "erin", "password": "x".repeat(1025)}), "at most 1024 bytes"),
        (json!({"username": "er in", "password": password}), "username must be"),
        (json!(["erin", password]), "JSON object"),
    ] {
        let refused = admin(&server, "POST", "/alpha/users", Some(body.clone()));
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        let described = refused.json["error_description"].as_str().unwrap_or_default();
        assert!(described.contains(why), "{body}: {}", refused.body);
        assert!(!refused.body.contains(password) && !refused.body.contains("12345678"), "{}", refused.body);
    }

    let user = format!("/alpha/users/{subject}");
    for reply in [
        created,
        admin(&server, "GET", "/alpha/users", None),
        admin(&server, "GET", "/alpha/users?username=DANA", None),
        admin(&server, "GET", &user, None),
        admin(&server, "POST", &format!("{user}/disable"), None),
        admin(&server, "POST", &format!("{user}/enable"), None),
    ] {
        assert_eq!(reply.status / 100, 2, "{}", reply.body);
        assert!(!reply.body.contains(password) && !reply.body.contains("$argon2"), "{}", reply.body);
    }
    assert_eq!(admin(&server, "GET", "/alpha/users?username=dana", None).json["users"][0]["subject"], subject.as_str());
    let new_password = json!({"password": "a new password 0123456789"});
    assert_eq!(admin(&server, "PUT", &format!("{user}/password"), Some(new_password)).status, 204);
    admin(&server, "PUT", &format!("{user}/password"), Some(json!({"password": "short"})))
        .assert_error(400, "invalid_request");
    admin(&server, "GET", "/alpha/users/usr_00000000000000000000000000000000", None).assert_error(404, "not_found");
    assert_eq!(admin(&server, "GET", "/alpha/users?limit=0", None).status, 400);

    // A realm admin of another realm reaches none of alpha's users.
    assert_eq!(admin(&server, "PUT", "/beta", Some(json!({}))).status, 201);
    let made = admin(&server, "POST", "/beta/admins", Some(json!({"name": "beta-ops"})));
    let beta_admin = made.json["token"].as_str().expect("a realm admin token").to_string();
    for (method, path, body) in [
        ("GET", "/alpha/users".to_string(), None),
        ("POST", "/alpha/users".to_string(), Some(json!({"username": "mallory", "password": password}))),
        ("GET", user.clone(), None),
        ("POST", format!("{user}/disable"), None),
        ("PUT", format!("{user}/password"), Some(json!({"password": "taken over 0123456789"}))),
        ("DELETE", user.clone(), None),
    ] {
        let refused = admin_as(&server, &beta_admin, method, &path, body);
        assert_eq!(refused.status, 403, "{method} {path}: {}", refused.body);
    }
    assert_eq!(admin(&server, "GET", &user, None).json["state"], "active", "untouched");
    assert_eq!(admin(&server, "GET", "/alpha/users?username=mallory", None).json["users"], json!([]));
    // ... and manages its own realm's, under the same username as alpha's.
    let own =
        admin_as(&server, &beta_admin, "POST", "/beta/users", Some(json!({"username": "dana", "password": password})));
    assert_eq!(own.status, 201, "{}", own.body);
    assert_ne!(own.json["subject"], subject.as_str());
    assert_eq!(admin_as(&server, "not-an-admin-token-0123456789", "GET", "/beta/users", None).status, 401);

    // Deleting a user, and a realm with its users.
    assert_eq!(admin(&server, "DELETE", &user, None).status, 204);
    admin(&server, "DELETE", &user, None).assert_error(404, "not_found");
    assert_eq!(admin(&server, "DELETE", "/beta", None).status, 204);
    assert_eq!(admin(&server, "PUT", "/beta", Some(json!({}))).status, 201);
    assert_eq!(admin(&server, "GET", "/beta/users", None).json["users"], json!([]));
    admin(&server, "GET", "/gamma/users", None).assert_error(404, "not_found");
}

#[test]
fn no_password_reaches_the_logs_the_audit_or_the_metrics() {
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("server.log");
    let server = Server::start_logging_to(&log);
    let mut passwords: Vec<(&str, String)> = Vec::new();

    let file = logs.path().join("password");
    let from_file = "a password from a file 0123456789";
    std::fs::write(&file, from_file).expect("writing the password file");
    let file = file.to_string_lossy().into_owned();
    let create = ["create", "--realm", "alpha", "--username", "frank", "--password-file", file.as_str()];
    let frank = user_cli(&server, &create, "").expect("created");
    passwords.push(("a password from a file", from_file.into()));
    let subject = frank["subject"].as_str().expect("a subject").to_string();

    let from_stdin = "a password from stdin 0123456789";
    user_cli(&server, &["set-password", "--realm", "alpha", "--subject", &subject, "--password-stdin"], from_stdin)
        .expect("password set");
    passwords.push(("a password from standard input", from_stdin.into()));

    // Refused ones, through the API, are not logged either.
    let refused = "a refused\tpassword 0123456789";
    let reply = admin(&server, "POST", "/alpha/users", Some(json!({"username": "gina", "password": refused})));
    assert_eq!(reply.status, 400, "{}", reply.body);
    passwords.push(("a password with a control character", refused.into()));
    let taken = "a password for a taken name 0123456789";
    let reply = admin(&server, "POST", "/alpha/users", Some(json!({"username": "FRANK", "password": taken})));
    assert_eq!(reply.status, 409, "{}", reply.body);
    passwords.push(("a password for a taken username", taken.into()));
    let misspelt = "a password under a misspelt field 0123456789";
    let reply = admin(&server, "POST", "/alpha/users", Some(json!({"username": "hal", "pasword": misspelt})));
    assert_eq!(reply.status, 400, "{}", reply.body);
    passwords.push(("a password under a misspelt field", misspelt.into()));
    let for_nobody = "a password for no one 0123456789";
    let reply = admin(
        &server,
        "PUT",
        "/alpha/users/usr_00000000000000000000000000000000/password",
        Some(json!({"password": for_nobody})),
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    passwords.push(("a password for no user", for_nobody.into()));
    assert_eq!(admin(&server, "DELETE", &format!("/alpha/users/{subject}"), None).status, 204);

    let audit = admin(&server, "GET", "/alpha/audit", None).body;
    assert!(audit.contains("create-user") && audit.contains("set-password"), "{audit}");
    let request = ureq::http::Request::builder()
        .uri(server.url("/metrics"))
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Vec::new())
        .expect("a request");
    let metrics = answered(server.send(request)).body;
    assert!(metrics.contains("agentauth_"), "{metrics}");

    server.stop();
    let logged = std::fs::read_to_string(&log).expect("reading the log");
    // The log really is verbose, and saw the users, or the search proves nothing.
    assert!(logged.contains("DEBUG") && logged.contains("user created"), "{logged}");
    assert!(logged.contains(&subject), "{logged}");
    for (what, password) in &passwords {
        assert!(password.len() >= 16, "{what} is too short to search for");
        let escaped = serde_json::to_string(password).expect("JSON");
        for haystack in [&logged, &audit, &metrics] {
            assert!(!haystack.contains(password.as_str()), "{what} was written out");
            assert!(!haystack.contains(escaped.trim_matches('"')), "{what} was written out, escaped");
        }
    }
    assert!(!logged.contains("$argon2") && !audit.contains("$argon2"), "a password hash was written out");
}
