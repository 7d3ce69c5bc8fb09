//! No secret reaches the logs or the metrics: a full run at the most
//! verbose level, then a search of everything it logged, and of its
//! metrics, for every secret it handled.

use crate::support::{ADMIN_TOKEN, Credentials, Server, cli, seed_registration};

#[test]
fn a_full_run_logs_none_of_the_secrets_it_used() {
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("server.log");
    let server = Server::start_logging_to(&log);
    let mut secrets: Vec<(&str, String)> = vec![("admin token", ADMIN_TOKEN.into())];
    let master_key = std::fs::read_to_string(server.data_dir().join("master.key")).expect("master key");
    secrets.push(("master key", master_key.trim().into()));

    // Registration, and management with the registration access token.
    let registered = server.register_raw(&seed_registration().to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let agent = Credentials::try_from(&registered.json).expect("client_id and client_secret");
    let registration_token = registered.json["registration_access_token"].as_str().expect("rat").to_string();
    secrets.push(("client secret", agent.client_secret.clone()));
    secrets.push(("registration access token", registration_token.clone()));
    let manage = format!("{}?client_id={}", server.realm_url("aiagent/register"), agent.client_id);
    let read = ureq::get(&manage).header("Authorization", format!("Bearer {registration_token}")).call();
    assert_eq!(read.map(|r| r.status().as_u16()).ok(), Some(200));

    // Tokens: client credentials, exchange, refresh, introspection, revocation.
    let access = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &access, "read write");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let delegated = exchanged.json["access_token"].as_str().expect("access_token").to_string();
    let refresh = exchanged.json["refresh_token"].as_str().expect("refresh_token").to_string();
    let refreshed = server.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)], Some(&agent));
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let rotated = refreshed.json["refresh_token"].as_str().expect("refresh_token").to_string();
    assert_eq!(server.introspect(&agent, &delegated).json["active"], true);
    assert_eq!(server.revoke(&agent, &rotated).status, 200);
    // The old refresh token again: reuse, which revokes the family and is
    // logged as a warning.
    let reused = server.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)], Some(&agent));
    reused.assert_error(400, "invalid_grant");
    for (what, token) in [("access token", &access), ("delegated token", &delegated)] {
        secrets.push((what, token.clone()));
        secrets.push((what, token.rsplit('.').next().expect("signature").to_string()));
    }
    secrets.push(("refresh token", refresh));
    secrets.push(("rotated refresh token", rotated));

    // Failures carry the secrets a caller got wrong: they are not logged either.
    let wrong_secret = "wrong-secret-that-must-not-be-logged-0123456789";
    let wrong = Credentials { client_id: agent.client_id.clone(), client_secret: wrong_secret.into() };
    server.token(&[("grant_type", "client_credentials")], Some(&wrong)).assert_error(401, "invalid_client");
    secrets.push(("a wrong client secret", wrong_secret.into()));
    let forged = format!("{}.forged-signature-0123456789", access.rsplit_once('.').expect("jwt").0);
    let reply = server.exchange(&agent, &forged, "read");
    assert_eq!(reply.status, 400, "{}", reply.body);
    secrets.push(("a forged subject token's signature", "forged-signature-0123456789".into()));

    // A realm admin's token, made and used.
    let (ok, out, err) =
        cli(&["realm", "add-admin", "--server", &server.base, "--realm", "alpha", "--name", "ops"], ADMIN_TOKEN);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let realm_admin = created["token"].as_str().expect("token").to_string();
    let (ok, _, err) = cli(&["keys", "list", "--server", &server.base, "--realm", "alpha"], &realm_admin);
    assert!(ok, "{err}");
    let (ok, _, _) =
        cli(&["keys", "list", "--server", &server.base, "--realm", "alpha"], "not-an-admin-token-0123456789");
    assert!(!ok);
    secrets.push(("realm admin token", realm_admin));
    secrets.push(("a wrong admin token", "not-an-admin-token-0123456789".into()));

    // The metrics, as the operator scrapes them: they name the realm and
    // count what happened, but hold no secret, and no client.
    let metrics = ureq::get(&server.url("/metrics"))
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .expect("the metrics")
        .into_body()
        .read_to_string()
        .expect("the metrics text");
    assert!(metrics.contains(r#"agentauth_tokens_issued_total{realm="alpha",grant="token_exchange""#), "{metrics}");
    assert!(!metrics.contains(&agent.client_id), "the metrics name a client: {metrics}");

    // The audit of decisions, once the last ones are stored: every token
    // and registration of the run is in it, and none of their secrets.
    let mut audited = String::new();
    for _ in 0..100 {
        let reply = server.admin("GET", "/alpha/decisions?limit=1000", "", vec![]).expect("the decisions");
        if reply.json["decisions"].as_array().is_some_and(|d| d.len() >= 6) {
            audited = reply.body;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(audited.contains(&agent.client_id), "the run's decisions are audited: {audited}");

    server.stop();
    let logged = std::fs::read_to_string(&log).expect("reading the log");
    // The log really is verbose, or the search proves nothing.
    assert!(logged.contains("DEBUG") && logged.contains("registered a client"), "{logged}");
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what} is too short to search for");
        assert!(!logged.contains(secret.as_str()), "the log contains the {what}");
        assert!(!metrics.contains(secret.as_str()), "the metrics contain the {what}");
        assert!(!audited.contains(secret.as_str()), "the audit contains the {what}");
    }
}
