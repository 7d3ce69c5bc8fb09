//! The application layer without HTTP: a service on an in-memory store,
//! telling time by a clock the test moves.

use std::sync::Arc;

use agentauth_core::Scopes;
use agentauth_core::ports::{AuditEntry, AuthorizationCode, CodeIssue, Redemption, UserRow, UserState};
use agentauth_plugin_host::{PluginHost, RequestContext};
use agentauth_service::client_auth::Credentials;
use agentauth_service::grant::TokenRequest;
use agentauth_service::{Clock, Config, ManualClock, RealmSettings, Service};
use agentauth_store::Store;
use serde_json::json;

const REALM: &str = "clockwork";

#[cfg(test)]
fn service(clock: &Arc<ManualClock>) -> Service {
    service_with(clock, RealmSettings { access_token_lifetime: 600, ..RealmSettings::default() })
}

/// Registers a client and returns its credentials.
#[cfg(test)]
fn register(service: &Service, stateless: bool) -> Credentials {
    let realm = service.realm(REALM).unwrap().unwrap();
    service.admit_registration(&realm, false, None, false).unwrap();
    let metadata = json!({"grant_types": ["client_credentials"], "scope": "read"});
    let registered = service.register(&realm, false, &metadata, RequestContext::default(), None).unwrap().0;
    let credentials = Credentials::Secret {
        client_id: registered["client_id"].as_str().unwrap().into(),
        secret: registered["client_secret"].as_str().unwrap().into(),
    };
    if stateless {
        // No DCR policy here to set the attribute: set it as one would.
        let client_id = registered["client_id"].as_str().unwrap();
        let mut row = service.store().client(REALM, client_id).unwrap().unwrap();
        row.client.attributes.set("statelessTokensEnabled", &["true".to_string()]).unwrap();
        assert!(service.store().update_client(REALM, &row, &row.registration_token_hash.clone()).unwrap());
    }
    credentials
}

#[test]
fn access_tokens_expire_when_the_service_clock_passes_their_lifetime() {
    let clock = Arc::new(ManualClock::new(1_900_000_000));
    let service = service(&clock);
    let realm = service.realm(REALM).unwrap().unwrap();
    for stateless in [false, true] {
        let credentials = register(&service, stateless);
        let client = service.authenticate(&realm, "access_token", &credentials).unwrap();
        let request =
            TokenRequest::ClientCredentials { scope: Some(Scopes::parse("read").unwrap()), resources: vec![] };
        let issued = service.issue(&realm, &client, request, None).unwrap();
        assert_eq!(issued.expires_in, 600);
        assert_eq!(issued.access_token.contains('.'), stateless);

        let introspected = service.introspect(&realm, &client, &issued.access_token).unwrap();
        assert_eq!(introspected["active"], true, "{introspected}");
        assert_eq!(introspected["iat"], clock.now());

        clock.advance(599);
        assert_eq!(service.introspect(&realm, &client, &issued.access_token).unwrap()["active"], true);
        clock.advance(1);
        let expired = service.introspect(&realm, &client, &issued.access_token).unwrap();
        assert_eq!(expired, json!({"active": false}), "stateless: {stateless}");
    }
}

#[test]
fn the_application_layer_depends_on_no_http_crate() {
    let manifest = include_str!("../Cargo.toml");
    let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or_default();
    for http in ["hyper", "http-body", "http ", "axum", "tower"] {
        assert!(!dependencies.contains(http), "crates/service depends on {http}");
    }
}

#[test]
fn a_registration_answer_never_prints_its_credentials() {
    let clock = Arc::new(ManualClock::new(1_900_000_000));
    let service = service(&clock);
    let realm = service.realm(REALM).unwrap().unwrap();
    let metadata = json!({"grant_types": ["client_credentials"], "scope": "read"});
    let registered = service.register(&realm, false, &metadata, RequestContext::default(), None).unwrap();
    let printed = format!("{registered:?}");
    for secret in ["client_secret", "registration_access_token"] {
        let value = registered.0[secret].as_str().unwrap();
        assert!(!printed.contains(value), "Debug printed the {secret}: {printed}");
    }
    let client_id = registered.0["client_id"].as_str().unwrap();
    let token = registered.0["registration_access_token"].as_str().unwrap();
    let managed = service.managed_client(&realm, client_id, token).unwrap();
    assert!(!format!("{managed:?}").contains(token));
}

/// Two services on one database, as two replicas are: what one changes,
/// the other acts on once it follows the change feed, and not before.
#[test]
fn a_replica_acts_on_what_another_changed_once_it_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentauth.sqlite3");
    let master_key = Arc::new(agentauth_jose::MasterKey::generate().unwrap().0);
    let replica = || {
        let config = Config {
            master_key: Arc::clone(&master_key),
            admin_token: None,
            issuer_prefix: "https://as.example.test/am".into(),
            fetch: Default::default(),
        };
        let store = Arc::new(Store::open(&path).unwrap());
        Service::new(config, store, PluginHost::new().unwrap(), Arc::new(agentauth_service::SystemClock)).unwrap()
    };
    let (a, b) = (replica(), replica());
    let settings = RealmSettings { open_registration: true, ..RealmSettings::default() };
    assert!(a.provision_realm(REALM, &settings, &[]).unwrap());
    let mut follower = b.start_following().unwrap();

    // B loads the realm and authenticates a client A registered.
    let credentials = register(&a, false);
    let seen = b.realm(REALM).unwrap().unwrap();
    assert_eq!(seen.verifying_keys.len(), 1);
    b.authenticate(&seen, "access_token", &credentials).unwrap();

    // A rotates the realm's key, changes its settings and deletes the client.
    a.rotate_key(REALM, None, "test").unwrap();
    let changed = RealmSettings { access_token_lifetime: 77, ..settings };
    let audit = AuditEntry { action: "settings".into(), ..Default::default() };
    assert!(a.store().set_realm_settings(REALM, &serde_json::to_string(&changed).unwrap(), &audit).unwrap());
    let Credentials::Secret { client_id, .. } = &credentials else { unreachable!() };
    let row = a.store().client(REALM, client_id).unwrap().unwrap();
    assert!(a.store().delete_client(REALM, client_id, &row.registration_token_hash).unwrap());

    // Until B follows, it serves what it holds.
    let stale = b.realm(REALM).unwrap().unwrap();
    assert_eq!(stale.verifying_keys.len(), 1);
    assert_ne!(stale.settings.access_token_lifetime, 77);
    assert!(b.authenticate(&stale, "access_token", &credentials).is_ok(), "the client is cached");

    assert!(b.follow(&mut follower).unwrap() >= 3);
    let current = b.realm(REALM).unwrap().unwrap();
    assert_eq!(current.verifying_keys.len(), 2, "the rotated-in key is published");
    assert_eq!(current.settings.access_token_lifetime, 77);
    let refused = b.authenticate(&current, "access_token", &credentials).unwrap_err();
    assert_eq!(refused.code, agentauth_core::ErrorCode::InvalidClient);
    assert_eq!(b.follow(&mut follower).unwrap(), 0, "nothing new");
}

/// Housekeeping deletes authorization codes once expired: a used one is
/// kept until then (a replay is told what to revoke), and not after.
#[test]
fn housekeeping_sweeps_authorization_codes_once_they_expire() {
    let clock = Arc::new(ManualClock::new(1_900_000_000));
    let service = service(&clock);
    let Credentials::Secret { client_id, .. } = register(&service, false) else { unreachable!() };
    let store = service.store();
    let user = UserRow {
        subject: "usr_1".into(),
        username: "alice".into(),
        display_name: None,
        email: None,
        password_hash: "$argon2id$unused".into(),
        state: UserState::Active,
        created_at: 0,
    };
    let audit = AuditEntry { action: "create-user".into(), ..Default::default() };
    assert!(store.create_user(REALM, &user, &audit).unwrap());
    let now = clock.now();
    let code = |expires_at| AuthorizationCode {
        client_id: client_id.clone(),
        redirect_uri: "https://a.example/cb".into(),
        code_challenge: "challenge".into(),
        subject: "usr_1".into(),
        scope: "read".into(),
        resources: vec![],
        may_act: None,
        dpop_jkt: None,
        auth_time: now,
        created_at: now,
        expires_at,
    };
    store.insert_code(REALM, b"short", &code(now + 60)).unwrap();
    store.insert_code(REALM, b"long", &code(now + 600)).unwrap();
    let issue =
        CodeIssue { family: "f1".into(), jti: "j1".into(), jti_expires_at: now + 60, family_expires_at: now + 60 };
    assert_eq!(store.redeem_code(REALM, b"short", &issue, now).unwrap(), Redemption::Redeemed);

    clock.advance(60);
    assert_eq!(store.redeem_code(REALM, b"short", &issue, clock.now()).unwrap(), Redemption::Reused(issue.clone()));
    service.maintain(clock.now());
    assert_eq!(store.redeem_code(REALM, b"short", &issue, clock.now()).unwrap(), Redemption::Unknown, "swept");
    assert!(store.code(REALM, b"long", clock.now()).unwrap().is_some(), "a live code stays");
    assert_eq!(store.sweep_codes(clock.now()).unwrap(), 0, "nothing expired was left");
}

/// A service whose realm has `settings` (open registration).
#[cfg(test)]
fn service_with(clock: &Arc<ManualClock>, settings: RealmSettings) -> Service {
    let config = Config {
        master_key: Arc::new(agentauth_jose::MasterKey::generate().unwrap().0),
        admin_token: None,
        issuer_prefix: "https://as.example.test/am".into(),
        fetch: Default::default(),
    };
    let clock: Arc<dyn Clock> = Arc::clone(clock) as _;
    let store = Arc::new(Store::open_in_memory().unwrap());
    let service = Service::new(config, store, PluginHost::new().unwrap(), clock).unwrap();
    assert!(service.provision_realm(REALM, &RealmSettings { open_registration: true, ..settings }, &[]).unwrap());
    service
}

/// Registers an agent (`aiagent/register`), or an ordinary client; its
/// credentials and the registration response.
#[cfg(test)]
fn register_as(service: &Service, agent: bool) -> (Credentials, serde_json::Value) {
    let realm = service.realm(REALM).unwrap().unwrap();
    let metadata = json!({"grant_types": ["client_credentials"], "scope": "read"});
    let registered = service.register(&realm, agent, &metadata, RequestContext::default(), None).unwrap().0;
    let credentials = Credentials::Secret {
        client_id: registered["client_id"].as_str().unwrap().into(),
        secret: registered["client_secret"].as_str().unwrap().into(),
    };
    (credentials, registered)
}

#[cfg(test)]
fn client_id(credentials: &Credentials) -> &str {
    match credentials {
        Credentials::Secret { client_id, .. } => client_id,
        _ => unreachable!(),
    }
}

const DAY: i64 = 86_400;

#[test]
fn housekeeping_disables_agents_left_unused_and_deletes_them_after_the_grace() {
    use agentauth_core::ports::ClientState;
    let clock = Arc::new(ManualClock::new(1_900_000_000));
    let settings = RealmSettings {
        disable_unused_agents_after_days: 30,
        delete_disabled_agents_after_days: 7,
        ..RealmSettings::default()
    };
    let service = service_with(&clock, settings);
    let realm = service.realm(REALM).unwrap().unwrap();
    let (used, _) = register_as(&service, true);
    let (idle, _) = register_as(&service, true);
    let (ordinary, _) = register_as(&service, false);
    let state = |c: &Credentials| service.store().client(REALM, client_id(c)).unwrap().map(|r| r.state);

    // Day 20: one agent authenticates; its use is written at the round.
    clock.advance(20 * DAY);
    service.authenticate(&realm, "access_token", &used).unwrap();
    service.maintain(clock.now());
    let last_used = service.store().client(REALM, client_id(&used)).unwrap().unwrap().last_used_at;
    assert_eq!(last_used, clock.now());

    // Day 31: the agent idle since its registration is disabled; the one
    // used on day 20 and the ordinary client are not.
    clock.advance(11 * DAY);
    service.maintain(clock.now());
    assert_eq!(state(&idle), Some(ClientState::Disabled));
    assert_eq!(state(&used), Some(ClientState::Active));
    assert_eq!(state(&ordinary), Some(ClientState::Active), "only agents are reaped");
    assert!(service.authenticate(&realm, "access_token", &idle).is_err(), "a disabled agent cannot authenticate");

    // Day 38: the grace not over; day 39: it is deleted.
    clock.advance(7 * DAY - 1);
    service.maintain(clock.now());
    assert_eq!(state(&idle), Some(ClientState::Disabled));
    clock.advance(2);
    service.maintain(clock.now());
    assert_eq!(state(&idle), None, "deleted after the grace");
    assert_eq!(state(&used), Some(ClientState::Active));

    let audit: Vec<(String, String)> =
        service.store().audit(REALM, 0, 100).unwrap().into_iter().map(|(_, e)| (e.actor, e.action)).collect();
    for action in ["disable-unused-agent", "delete-reaped-agent"] {
        assert!(audit.contains(&("housekeeping".to_string(), action.to_string())), "{action}: {audit:?}");
    }
}

#[test]
fn an_agent_past_its_lifetime_is_refused_and_its_tokens_die_with_it() {
    let clock = Arc::new(ManualClock::new(1_900_000_000));
    let settings = RealmSettings { agent_lifetime_days: 1, access_token_lifetime: 3600, ..RealmSettings::default() };
    let service = service_with(&clock, settings);
    let realm = service.realm(REALM).unwrap().unwrap();
    let (agent, registered) = register_as(&service, true);
    assert_eq!(registered["client_secret_expires_at"], clock.now() + DAY);
    let (_, ordinary) = register_as(&service, false);
    assert_eq!(ordinary["client_secret_expires_at"], 0, "only agents expire");

    // An hour before the end: a token, live for an hour.
    clock.advance(DAY - 100);
    let client = service.authenticate(&realm, "access_token", &agent).unwrap();
    let request = TokenRequest::ClientCredentials { scope: Some(Scopes::parse("read").unwrap()), resources: vec![] };
    let issued = service.issue(&realm, &client, request, None).unwrap();
    assert_eq!(service.introspect(&realm, &client, &issued.access_token).unwrap()["active"], true);
    // At the end, the agent and its token are done.
    clock.advance(100);
    assert!(service.authenticate(&realm, "access_token", &agent).is_err());
    assert_eq!(service.introspect(&realm, &client, &issued.access_token).unwrap(), json!({"active": false}));
}
