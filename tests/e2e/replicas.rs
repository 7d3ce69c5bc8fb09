//! Several replicas on one PostgreSQL database: any replica answers any
//! request, what one changes the others act on within a second, what must
//! happen once happens once, and a replica killed under load loses nothing
//! it acknowledged while the others keep answering.
//!
//! The tests start a throwaway PostgreSQL cluster (initdb into a temporary
//! directory, a free port), one for the whole test binary, and give each
//! test a database of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use agentauth_store_postgres::throwaway::Cluster;
use serde_json::Value;

use crate::support::{Credentials, Server, jwt_parts};

/// How soon a change made through one replica must be acted on by another.
const WITHIN: Duration = Duration::from_secs(1);

/// The origin clients reach every replica at, behind a load balancer.
const PUBLIC_URL: &str = "https://as.example.test";

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e}")))
}

/// A database of its own for one test, and a master key its replicas share.
fn database(cluster: &Cluster) -> (String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("replicas_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    let url = cluster.create_database(&name).unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let (_, master_key) = agentauth_jose::MasterKey::generate().expect("a master key");
    (url, master_key)
}

/// `n` replicas on a fresh database of the shared cluster. The first
/// creates the demo realm; the others find it.
fn replicas(n: usize) -> Vec<Server> {
    let (url, key) = database(cluster());
    (0..n).map(|_| Server::start_replica(&url, &key, PUBLIC_URL)).collect()
}

/// Polls `check` until it holds, for at most `limit`; how long it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kids(server: &Server) -> Vec<String> {
    let jwks = server.get("connect/jwk_uri").json;
    jwks["keys"].as_array().into_iter().flatten().filter_map(|k| k["kid"].as_str().map(str::to_string)).collect()
}

fn may_act(server: &Server, agent: &Credentials) -> Option<Value> {
    jwt_parts(&server.read_token(agent)).1.get("may_act").cloned()
}

#[test]
fn a_plugin_pushed_through_one_replica_serves_on_another_within_a_second() {
    let [a, b] = <[Server; 2]>::try_from(replicas(2)).expect("two replicas");
    let agent = b.register_agent();
    assert!(may_act(&b, &agent).is_some(), "the demo's may-act policy serves on b");

    // Version 2, through a: a may-act policy that names no one.
    let path = "/alpha/plugins/software-agent-may-act?hook=may-act&activate=true";
    let pushed = a.admin("POST", path, "application/wasm", agentauth_plugins::MISBEHAVING_MAY_ACT.to_vec()).unwrap();
    assert_eq!(pushed.status, 201, "{}", pushed.body);
    let took = within(WITHIN, "version 2 serving on b", || may_act(&b, &agent).is_none());
    eprintln!("a push through a served on b after {took:?}");

    // A rollback through b serves on a.
    let rolled = b.admin("POST", "/alpha/plugins/software-agent-may-act/rollback", "", vec![]);
    assert_eq!(rolled.unwrap().status, 200);
    within(WITHIN, "version 1 serving again on a", || may_act(&a, &agent).is_some());
}

#[test]
fn a_client_deleted_on_one_replica_cannot_authenticate_on_another() {
    let [a, b] = <[Server; 2]>::try_from(replicas(2)).expect("two replicas");
    let registered = a.register_raw(&crate::support::seed_registration().to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let agent = Credentials::from_registration(&registered.json);
    // b authenticates the client, and so holds it in its cache.
    b.read_token(&agent);

    // The URI names the public origin every replica shares; any replica
    // answers it, here a.
    let uri = registered.json["registration_client_uri"].as_str().expect("registration_client_uri");
    let uri = uri.replace(PUBLIC_URL, &a.base);
    let token = registered.json["registration_access_token"].as_str().expect("registration_access_token");
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let deleted = http.delete(&uri).header("Authorization", &format!("Bearer {token}")).call().expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 204);

    let credentials = [("grant_type", "client_credentials")];
    within(WITHIN, "b refusing the deleted client", || b.token(&credentials, Some(&agent)).status == 401);
    b.token(&credentials, Some(&agent)).assert_error(401, "invalid_client");
}

#[test]
fn a_client_disabled_on_one_replica_is_stopped_on_another_within_a_second() {
    let [a, b] = <[Server; 2]>::try_from(replicas(2)).expect("two replicas");
    let agent = a.register_agent();
    let watcher = a.register_agent();
    // b holds the client in its cache, and a token of it that it finds live.
    let token = b.read_token(&agent);
    assert_eq!(b.introspect(&watcher, &token).json["active"], true);

    let (status, body) =
        crate::authorize::admin(&a, "POST", &format!("/alpha/clients/{}/disable", agent.client_id), None);
    assert_eq!(status, 200, "{body}");
    let credentials = [("grant_type", "client_credentials")];
    within(WITHIN, "b refusing the disabled client", || b.token(&credentials, Some(&agent)).status == 401);
    assert_eq!(b.introspect(&watcher, &token).json["active"], false, "its token is dead on b too");
}

#[test]
fn a_key_rotated_on_one_replica_is_in_the_others_jwks() {
    let [a, b] = <[Server; 2]>::try_from(replicas(2)).expect("two replicas");
    let before = kids(&b);
    assert_eq!(before.len(), 1);
    let rotated = a.admin("POST", "/alpha/keys/rotate", "application/json", b"{}".to_vec()).unwrap();
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    within(WITHIN, "the rotated-in key in b's JWKS", || kids(&b).len() == 2);
    assert_eq!(kids(&a), kids(&b), "both publish the same keys");
    assert!(kids(&b).contains(&before[0]), "the old key stays published while its tokens live");
}

#[test]
fn a_refresh_token_raced_on_two_replicas_is_spent_once() {
    let [a, b] = <[Server; 2]>::try_from(replicas(2)).expect("two replicas");
    for round in 0..5 {
        let agent = a.register_agent();
        let token = b.read_token(&agent);
        let exchanged = a.exchange(&agent, &token, "read write");
        assert_eq!(exchanged.status, 200, "{}", exchanged.body);
        let refresh_token = exchanged.json["refresh_token"].as_str().expect("refresh_token").to_string();

        let start = Barrier::new(2);
        let replies: Vec<_> = std::thread::scope(|s| {
            let racers: Vec<_> = [&a, &b]
                .into_iter()
                .map(|server| {
                    let (start, agent, refresh_token) = (&start, &agent, &refresh_token);
                    s.spawn(move || {
                        start.wait();
                        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())];
                        server.token(&form, Some(agent))
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().expect("racer")).collect()
        });
        let won: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one replica rotates it: {replies:?}");
        let lost = replies.iter().find(|r| r.status != 200).expect("a loser");
        lost.assert_error(400, "invalid_grant");
        // The loser presented a spent token: the family is revoked, the
        // winner's successor with it.
        let successor = won[0].json["refresh_token"].as_str().expect("a successor");
        let form = [("grant_type", "refresh_token"), ("refresh_token", successor)];
        a.token(&form, Some(&agent)).assert_error(400, "invalid_grant");
    }
}

/// What the replicas acknowledged under load.
#[derive(Default)]
struct Acknowledged {
    agents: Vec<Credentials>,
    /// Answers other than success from replicas that were not killed.
    survivor_failures: Vec<String>,
}

#[test]
fn a_replica_killed_under_load_loses_nothing_and_the_others_answer_throughout() {
    let mut servers = replicas(3);
    // Registration rates are kept per replica; this load is one source.
    let rates = br#"{"registrations_per_minute": 1000000, "registrations_per_minute_per_source": 1000000}"#;
    let raised = servers[1].admin("PATCH", "/alpha", "application/json", rates.to_vec()).expect("PATCH");
    assert_eq!(raised.status, 200, "{}", raised.body);
    // The others act on it within a second; until then they shed load
    // with 429, which the clients below wait out.
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let killed = 0;
    let kill_at = Duration::from_secs(2);
    let run_for = Duration::from_secs(4);
    let acknowledged = Mutex::new(Acknowledged::default());
    let registration = crate::support::seed_registration().to_string();
    let started = Instant::now();
    std::thread::scope(|s| {
        for client in 0..4 {
            let (bases, acknowledged, registration) = (&bases, &acknowledged, &registration);
            s.spawn(move || {
                let http: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                let mut turn = client;
                while started.elapsed() < run_for {
                    // Round robin; a request the killed replica does not
                    // answer is retried on the next one.
                    for attempt in 0..bases.len() {
                        let replica = (turn + attempt) % bases.len();
                        let url = format!("{}/am/oauth2/realms/root/realms/alpha/aiagent/register", bases[replica]);
                        let sent = http.post(&url).header("Content-Type", "application/json").send(registration);
                        let answer = sent.ok().and_then(|mut r| {
                            let status = r.status().as_u16();
                            Some((status, r.body_mut().read_to_string().ok()?))
                        });
                        let mut acknowledged = acknowledged.lock().expect("lock");
                        match answer {
                            Some((201, body)) => {
                                let json: Value = serde_json::from_str(&body).expect("JSON");
                                acknowledged.agents.push(Credentials::from_registration(&json));
                                break;
                            }
                            // Answered, but later: a replica that sheds load
                            // still answers.
                            Some((429 | 503, _)) => std::thread::sleep(Duration::from_millis(50)),
                            other if replica != killed => {
                                acknowledged.survivor_failures.push(format!("replica {replica}: {other:?}"));
                            }
                            _ => {}
                        }
                    }
                    turn += 1;
                }
            });
        }
        s.spawn(|| {
            std::thread::sleep(kill_at);
            servers.remove(killed).kill();
        });
    });
    let acknowledged = acknowledged.into_inner().expect("lock");
    assert_eq!(acknowledged.survivor_failures, Vec::<String>::new(), "the surviving replicas answered throughout");
    assert!(acknowledged.agents.len() >= 20, "the load ran: {} registrations", acknowledged.agents.len());
    // Every registration acknowledged, by any replica, authenticates on
    // each survivor.
    for survivor in &servers {
        for agent in &acknowledged.agents {
            let reply = survivor.token(&[("grant_type", "client_credentials")], Some(agent));
            assert_eq!(reply.status, 200, "an acknowledged registration: {}", reply.body);
        }
    }
    eprintln!("{} registrations acknowledged by 3 replicas, one killed at {kill_at:?}", acknowledged.agents.len());
}

#[test]
fn without_its_database_a_replica_answers_503_and_recovers_by_itself() {
    // A cluster of its own: this test stops it.
    let cluster = Cluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e}"));
    let (url, key) = database(&cluster);
    let server = Server::start_replica(&url, &key, PUBLIC_URL);
    let agent = server.register_agent();
    let jwt = server.read_token(&agent);
    // Ready once its realms are loaded.
    within(Duration::from_secs(10), "ready", || server.get_url(&server.url("/readyz")).status == 200);

    cluster.stop().expect("stopping PostgreSQL");
    let ready = server.get_url(&server.url("/readyz"));
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.retry_after.is_some(), "{}", ready.body);
    assert_eq!(server.get_url(&server.url("/healthz")).status, 200, "liveness is not readiness");

    // A request that needs the database: 503 with Retry-After, in bounded time.
    let started = Instant::now();
    let refused = server.register_raw(&crate::support::seed_registration().to_string());
    assert!(started.elapsed() < Duration::from_secs(20), "answered in {:?}", started.elapsed());
    refused.assert_error(503, "temporarily_unavailable");
    assert!(refused.retry_after.is_some(), "{}", refused.body);
    // A JWT for a client it holds needs no database.
    let issued = server.token(&[("grant_type", "client_credentials")], Some(&agent));
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert_eq!(jwt_parts(issued.json["access_token"].as_str().unwrap_or_default()).0["kid"], jwt_parts(&jwt).0["kid"]);

    cluster.start_again().expect("starting PostgreSQL again");
    within(Duration::from_secs(20), "ready again", || server.get_url(&server.url("/readyz")).status == 200);
    let registered = server.register_raw(&crate::support::seed_registration().to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
}
