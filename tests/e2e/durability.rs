//! Nothing acknowledged is lost: a consistent backup of a running server
//! serves when restored, and a server killed at random moments under load
//! restarts with every acknowledged registration, refresh token and
//! signing key intact.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Credentials, Server, cli, jwt_parts};

fn refresh(server: &Server, agent: &Credentials, refresh_token: &str) -> crate::support::Reply {
    server.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)], Some(agent))
}

#[test]
fn a_backup_taken_while_serving_restores_and_serves() {
    let server = Server::start_with_admin();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &token, "read write");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let refresh_token = exchanged.json["refresh_token"].as_str().expect("refresh_token").to_string();

    let backups = tempfile::tempdir().expect("temp dir");
    let backup = backups.path().join("agentauth.backup");
    let data = server.data_dir().to_path_buf();
    let take = ["backup", "--data-dir", data.to_str().expect("utf-8"), "--to", backup.to_str().expect("utf-8")];
    let (ok, out, err) = cli(&take, ADMIN_TOKEN);
    assert!(ok, "{out}{err}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&backup).expect("backup written").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the backup is readable by its owner only");
    // A second backup to the same file would overwrite the first: refused.
    let (ok, _, err) = cli(&take, ADMIN_TOKEN);
    assert!(!ok && err.contains("exists"), "{err}");
    // Registered after the backup: not in it.
    let later = server.register_agent();
    let master_key = std::fs::read(data.join("master.key")).expect("reading the master key");
    server.stop();

    let restored = tempfile::tempdir().expect("temp dir");
    let into = restored.path().to_str().expect("utf-8");
    let (ok, out, err) = cli(&["restore", "--from", backup.to_str().expect("utf-8"), "--data-dir", into], ADMIN_TOKEN);
    assert!(ok, "{out}{err}");
    std::fs::write(restored.path().join("master.key"), master_key).expect("writing the master key");
    let server = Server::start_with(restored.path(), &[]);
    // The client, its refresh token and the signing key came back.
    let again = server.read_token(&agent);
    assert_eq!(jwt_parts(&again).0["kid"], jwt_parts(&token).0["kid"]);
    let refreshed = refresh(&server, &agent, &refresh_token);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let unknown = server.token(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &later.client_id),
            ("client_secret", &later.client_secret),
        ],
        None,
    );
    unknown.assert_error(401, "invalid_client");
    // Restoring over a database is refused.
    let (ok, _, err) = cli(&["restore", "--from", backup.to_str().expect("utf-8"), "--data-dir", into], ADMIN_TOKEN);
    assert!(!ok && err.contains("exists"), "{err}");
}

#[test]
fn a_backup_of_no_database_is_an_error_and_writes_nothing() {
    let empty = tempfile::tempdir().expect("temp dir");
    let to = empty.path().join("out");
    let dir = empty.path().join("none");
    let (ok, _, err) =
        cli(&["backup", "--data-dir", dir.to_str().expect("utf-8"), "--to", to.to_str().expect("utf-8")], ADMIN_TOKEN);
    assert!(!ok && err.contains("no database"), "{err}");
    assert!(!Path::new(&to).exists());
}

/// A request that may fail because the server was killed under it.
fn try_send(request: ureq::RequestBuilder<ureq::typestate::WithBody>, body: Body) -> Option<(u16, Value)> {
    let mut response = match body {
        Body::Json(json) => request.header("Content-Type", "application/json").send(json.to_string()),
        Body::Form(form) => request.send_form(form.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
    }
    .ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

enum Body {
    Json(Value),
    Form(Vec<(String, String)>),
}

fn form(pairs: &[(&str, &str)]) -> Body {
    Body::Form(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

/// What the server acknowledged before it was killed.
#[derive(Default)]
struct Acknowledged {
    agents: Vec<Credentials>,
    /// A refresh token and the agent it was issued to.
    refresh_tokens: Vec<(Credentials, String)>,
    /// The `kid` of every access token issued.
    kids: std::collections::BTreeSet<String>,
    rotations: usize,
}

/// Drives registrations, token issuance (client credentials, then an
/// exchange that returns a refresh token) and key rotations at `base`
/// until the server stops answering; records what was acknowledged.
fn load(base: &str, acknowledged: &Mutex<Acknowledged>) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let realm = format!("{base}/am/oauth2/realms/root/realms/alpha");
    let record = |f: &mut dyn FnMut(&mut Acknowledged)| f(&mut acknowledged.lock().expect("lock"));
    std::thread::scope(|s| {
        // Registrations, and tokens for each new agent.
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let registration = Body::Json(crate::support::seed_registration());
                    let Some((201, client)) = try_send(http.post(format!("{realm}/aiagent/register")), registration)
                    else {
                        return;
                    };
                    let agent = Credentials::try_from(&client).expect("client_id and client_secret");
                    record(&mut |a| a.agents.push(agent.clone()));
                    let credentials =
                        [("client_id", agent.client_id.as_str()), ("client_secret", &agent.client_secret)];
                    let mut cc = credentials.to_vec();
                    cc.extend([("grant_type", "client_credentials"), ("scope", "read")]);
                    let Some((200, issued)) = try_send(http.post(format!("{realm}/access_token")), form(&cc)) else {
                        return;
                    };
                    let token = issued["access_token"].as_str().expect("access_token").to_string();
                    record(&mut |a| {
                        a.kids.insert(jwt_parts(&token).0["kid"].as_str().expect("kid").into());
                    });
                    let mut exchange = credentials.to_vec();
                    exchange.extend([
                        ("grant_type", crate::support::TOKEN_EXCHANGE),
                        ("scope", "read write"),
                        ("subject_token", &token),
                        ("subject_token_type", crate::support::ACCESS_TOKEN_TYPE),
                    ]);
                    let Some((200, exchanged)) = try_send(http.post(format!("{realm}/access_token")), form(&exchange))
                    else {
                        return;
                    };
                    let refresh_token = exchanged["refresh_token"].as_str().expect("refresh_token").to_string();
                    let kid = jwt_parts(exchanged["access_token"].as_str().expect("access_token")).0["kid"].clone();
                    record(&mut |a| {
                        a.refresh_tokens.push((agent.clone(), refresh_token.clone()));
                        a.kids.insert(kid.as_str().expect("kid").into());
                    });
                }
            });
        }
        // Key rotations.
        s.spawn(|| {
            loop {
                let rotate = http
                    .post(format!("{base}/admin/v1/realms/alpha/keys/rotate"))
                    .header("Authorization", format!("Bearer {ADMIN_TOKEN}"));
                let Some((200, _)) = try_send(rotate, Body::Json(json!({}))) else {
                    return;
                };
                record(&mut |a| a.rotations += 1);
                std::thread::sleep(Duration::from_millis(30));
            }
        });
    });
}

/// A small deterministic generator for the kill moments; the seed is
/// printed so a failing run can be repeated.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_server_killed_at_random_moments_loses_nothing_it_acknowledged() {
    const KILLS: usize = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    println!("crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut random = XorShift(seed);

    // New keys sign at once, so rotations race token issuance; the limits
    // of one source, and those on rotations, must not throttle the load.
    let server = Server::start_with_admin_in(dir.path());
    let settings = r#"{"key_publish_seconds": 0, "registrations_per_minute_per_source": 1000000,
                       "registrations_per_minute": 1000000, "key_rotations_per_minute": 10000,
                       "max_published_keys": 1000}"#;
    let (ok, _, err) =
        cli(&["realm", "set", "--server", &server.base, "--realm", "alpha", "--settings", settings], ADMIN_TOKEN);
    assert!(ok, "{err}");
    // ES256: rotations are quick enough to race the issuance (an RSA key
    // takes a good part of a second to make).
    let (ok, _, err) =
        cli(&["keys", "rotate", "--server", &server.base, "--realm", "alpha", "--alg", "ES256"], ADMIN_TOKEN);
    assert!(ok, "{err}");

    let mut server = Some(server);
    let mut totals = Acknowledged::default();
    for round in 0..KILLS {
        let running = server.take().unwrap_or_else(|| Server::start_with_admin_in(dir.path()));
        let acknowledged = Mutex::new(Acknowledged::default());
        let wait = Duration::from_millis(100 + random.below(700));
        let base = running.base.clone();
        std::thread::scope(|s| {
            s.spawn(|| load(&base, &acknowledged));
            std::thread::sleep(wait);
            running.kill();
        });
        let db = dir.path().join("agentauth.sqlite3");
        agentauth_store::Store::integrity_check(&db)
            .unwrap_or_else(|e| panic!("round {round}, killed after {wait:?}: {e}"));

        let restarted = Server::start_with_admin_in(dir.path());
        let acknowledged = acknowledged.into_inner().expect("lock");
        for agent in &acknowledged.agents {
            let reply = restarted.token(
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &agent.client_id),
                    ("client_secret", &agent.client_secret),
                ],
                None,
            );
            assert_eq!(reply.status, 200, "round {round}: a registration acknowledged before the kill: {}", reply.body);
        }
        for (agent, refresh_token) in &acknowledged.refresh_tokens {
            let reply = refresh(&restarted, agent, refresh_token);
            assert_eq!(
                reply.status, 200,
                "round {round}: a refresh token acknowledged before the kill: {}",
                reply.body
            );
        }
        let jwks = restarted.get("connect/jwk_uri").json;
        let published: Vec<&str> =
            jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
        for kid in &acknowledged.kids {
            assert!(
                published.contains(&kid.as_str()),
                "round {round}: key {kid} signed a live token but left the JWKS"
            );
        }
        totals.agents.extend(acknowledged.agents);
        totals.refresh_tokens.extend(acknowledged.refresh_tokens);
        totals.kids.extend(acknowledged.kids);
        totals.rotations += acknowledged.rotations;
        server = Some(restarted);
    }
    println!(
        "{KILLS} kills: {} registrations, {} refresh tokens, {} signing keys and {} rotations acknowledged, none lost",
        totals.agents.len(),
        totals.refresh_tokens.len(),
        totals.kids.len(),
        totals.rotations
    );
    // Each round did some of each, or the test proved nothing.
    assert!(totals.agents.len() >= KILLS && totals.refresh_tokens.len() >= KILLS && totals.rotations >= KILLS);
}
