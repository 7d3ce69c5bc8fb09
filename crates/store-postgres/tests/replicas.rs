//! What only PostgreSQL has to show: several stores (replicas) on one
//! database, migrations racing, the errors it reports by kind, and a store
//! used from inside another runtime. One throwaway cluster for this test
//! binary, a fresh database for each test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use agentauth_core::HookKind;
use agentauth_core::ports::prelude::*;
use agentauth_core::ports::{AuditEntry, ChangeTopic, ErrorKind, NewToken, Rotation, TokenKind};
use agentauth_store_conformance::fixtures::{audit, client_row};
use agentauth_store_postgres::throwaway::Cluster;
use agentauth_store_postgres::{Options, PgStore};

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().expect("a throwaway PostgreSQL cluster"))
}

/// A fresh database: its name and URL.
fn database() -> (String, String) {
    static DATABASES: AtomicUsize = AtomicUsize::new(0);
    let name = format!("r_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
    let url = cluster().create_database(&name).expect("a fresh database");
    (name, url)
}

fn connect(url: &str) -> PgStore {
    PgStore::connect(url, Options::default()).expect("a store")
}

/// Two replicas on one fresh database, and its name.
fn replicas() -> (PgStore, PgStore, String) {
    let (name, url) = database();
    (connect(&url), connect(&url), name)
}

/// Waits until `n` sessions of database `db` listen for changes, so that a
/// test of notifications does not race the listeners' start.
fn until_listening(db: &str, n: usize) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'LISTEN%' AND state = 'idle'"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster().query("postgres", &sql).expect("counting listeners") != n.to_string() {
        assert!(Instant::now() < deadline, "{n} listeners never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_change_committed_through_one_replica_is_followed_by_another() {
    let (a, b, _) = replicas();
    let start = b.latest_change().unwrap();
    assert!(a.create_realm("alpha", "{}", &audit("create")).unwrap());
    assert!(a.set_realm_settings("alpha", r#"{"x":1}"#, &audit("settings")).unwrap());
    let followed: Vec<(String, ChangeTopic)> =
        b.changes_after(start, 100).unwrap().into_iter().map(|c| (c.realm, c.topic)).collect();
    assert_eq!(followed, [("alpha".to_string(), ChangeTopic::Realm), ("alpha".to_string(), ChangeTopic::Realm)]);
    assert_eq!(b.latest_change().unwrap(), a.latest_change().unwrap());
}

/// Counts the commits it is told of, and their writes.
#[derive(Default)]
struct Commits {
    commits: AtomicUsize,
    writes: AtomicUsize,
}

impl agentauth_core::ports::CommitObserver for Commits {
    fn committed(&self, _: Duration, writes: usize) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(writes, Ordering::SeqCst);
    }
}

#[test]
fn each_committed_transaction_is_told_as_one_write() {
    let (_, url) = database();
    let store = connect(&url);
    let commits = std::sync::Arc::new(Commits::default());
    store.observe_commits(std::sync::Arc::clone(&commits) as std::sync::Arc<dyn agentauth_core::ports::CommitObserver>);
    assert!(store.create_realm("alpha", "{}", &audit("create")).unwrap());
    assert!(store.set_realm_settings("alpha", r#"{"x":1}"#, &audit("settings")).unwrap());
    // A write that changes nothing still commits its transaction; a read
    // commits nothing.
    assert!(!store.create_realm("alpha", "{}", &audit("again")).unwrap());
    store.realm("alpha").unwrap();
    assert_eq!(commits.commits.load(Ordering::SeqCst), 3);
    assert_eq!(commits.writes.load(Ordering::SeqCst), 3);
}

#[test]
fn a_replica_waiting_for_changes_is_woken_by_anothers_commit() {
    let (a, b, db) = replicas();
    until_listening(&db, 2);
    let latest = b.latest_change().unwrap();
    assert!(b.changes_after(latest, 100).unwrap().is_empty());
    // Nothing committed: the wait lasts its whole timeout.
    let quiet = Instant::now();
    b.wait_for_change(Duration::from_millis(300));
    assert!(quiet.elapsed() >= Duration::from_millis(300), "woken with nothing committed");

    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            assert!(a.create_realm("alpha", "{}", &audit("create")).unwrap());
        });
        let waiting = Instant::now();
        b.wait_for_change(Duration::from_secs(5));
        let waited = waiting.elapsed();
        assert!(waited < Duration::from_secs(2), "the notification did not wake the wait: {waited:?}");
    });
    assert_eq!(b.changes_after(latest, 100).unwrap().len(), 1);
}

#[test]
fn a_client_cached_by_a_replica_is_read_fresh_once_it_follows_anothers_change() {
    let (a, b, _) = replicas();
    a.create_realm_if_absent("alpha", "{}", 0).unwrap();
    a.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    assert_eq!(b.client("alpha", "c1").unwrap(), Some(client_row("c1")), "read, and now cached by b");
    let start = b.latest_change().unwrap();

    let mut updated = client_row("c1");
    updated.client.metadata.scope = "read".into();
    updated.registration_token_hash = vec![9; 32];
    assert!(a.update_client("alpha", &updated, &[2; 32]).unwrap());
    assert_eq!(b.client("alpha", "c1").unwrap(), Some(client_row("c1")), "b has not followed yet");
    let changes = b.changes_after(start, 100).unwrap();
    assert_eq!(changes.iter().map(|c| c.topic).collect::<Vec<_>>(), [ChangeTopic::Client]);
    assert_eq!(b.client("alpha", "c1").unwrap(), Some(updated), "followed: read fresh");

    assert!(a.delete_client("alpha", "c1", &[9; 32]).unwrap());
    b.changes_after(changes[0].seq, 100).unwrap();
    assert_eq!(b.client("alpha", "c1").unwrap(), None);
}

#[test]
fn a_realm_deleted_and_made_again_elsewhere_takes_the_clients_a_replica_cached() {
    let (a, b, _) = replicas();
    a.create_realm("alpha", "{}", &audit("create")).unwrap();
    a.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    assert!(b.client("alpha", "c1").unwrap().is_some());
    let start = b.latest_change().unwrap();
    a.delete_realm("alpha", &audit("delete")).unwrap();
    a.create_realm("alpha", "{}", &audit("create")).unwrap();
    b.changes_after(start, 100).unwrap();
    assert_eq!(b.client("alpha", "c1").unwrap(), None);
}

#[test]
fn replicas_racing_to_rotate_one_refresh_token_rotate_it_once() {
    let (a, b, _) = replicas();
    a.create_realm_if_absent("alpha", "{}", 0).unwrap();
    fn refresh<'a>(hash: &'a [u8], family: &'a str) -> NewToken<'a> {
        NewToken { hash, client_id: "c1", family: Some(family), kind: TokenKind::Refresh, grant: "{}", expires_at: 100 }
    }
    a.insert_tokens("alpha", &[refresh(b"old", "f1")]).unwrap();
    let rotated = AtomicUsize::new(0);
    let ready = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let (store, rotated, ready) = (if t % 2 == 0 { &a } else { &b }, &rotated, &ready);
            s.spawn(move || {
                let next = [t];
                ready.wait();
                if store.rotate_token("alpha", b"old", &[refresh(&next, "f1")], 0, &AuditEntry::default()).unwrap()
                    == Rotation::Rotated
                {
                    rotated.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(rotated.load(Ordering::SeqCst), 1);
    assert_eq!(b.count_tokens("alpha", TokenKind::Refresh).unwrap(), 0, "the reuse revoked the family");
}

#[test]
fn replicas_starting_at_once_on_a_fresh_database_migrate_it_once() {
    let (name, url) = database();
    let ready = Barrier::new(8);
    let outcomes: Vec<Option<(i64, i64)>> = std::thread::scope(|s| {
        let racing: Vec<_> = (0..8)
            .map(|t| {
                let (url, ready) = (&url, &ready);
                s.spawn(move || {
                    ready.wait();
                    if t % 2 == 0 {
                        Some(PgStore::migrate(url).unwrap())
                    } else {
                        connect(url).ping().unwrap();
                        None
                    }
                })
            })
            .collect();
        racing.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let (_, latest) = PgStore::migrate(&url).unwrap();
    let migrated = outcomes.iter().flatten().filter(|(before, _)| *before == 0).count();
    assert!(migrated <= 1, "{outcomes:?}");
    assert!(outcomes.iter().flatten().all(|(before, after)| *after == latest && (*before == 0 || *before == latest)));
    let applied = cluster().query(&name, "SELECT count(*), max(version) FROM schema_migrations").unwrap();
    assert_eq!(applied, format!("{latest}|{latest}"), "each migration applied once");
    assert_eq!(PgStore::migrate(&url).unwrap(), (latest, latest), "nothing left to do");
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let (name, url) = database();
    let (_, latest) = PgStore::migrate(&url).unwrap();
    cluster()
        .query(&name, &format!("INSERT INTO schema_migrations (version, applied_at) VALUES ({}, 0)", latest + 1))
        .unwrap();
    assert_eq!(PgStore::migrate(&url).unwrap_err().kind(), ErrorKind::NewerSchema);
    assert_eq!(PgStore::connect(&url, Options::default()).unwrap_err().kind(), ErrorKind::NewerSchema);
}

#[test]
fn refused_writes_are_constraint_violations() {
    let (store, _, _) = replicas();
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    for (realm, id) in [("alpha", "c1"), ("nowhere", "c2")] {
        let e = store.insert_client(realm, &client_row(id), u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Constraint, "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the driver's error is kept beneath");
    }
    assert_eq!(store.count_clients("alpha").unwrap(), 1, "a refused insert counts nothing");
}

#[test]
fn stored_values_this_store_cannot_read_are_reported_as_corrupt() {
    let (name, url) = database();
    let store = connect(&url);
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
    store.add_plugin_version("alpha", "p", HookKind::Dcr, "aa", b"v1", 0).unwrap();
    cluster().query(&name, "UPDATE clients SET metadata = '{' WHERE client_id = 'c1'").unwrap();
    cluster().query(&name, "UPDATE plugins SET hook = 'no-such-hook'").unwrap();
    let e = store.client("alpha", "c1").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let e = store.active_plugins("alpha").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("unknown hook kind \"no-such-hook\""), "{e}");
}

#[test]
fn a_store_shows_where_it_is_connected_but_never_the_password() {
    let (name, _) = database();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{}/{name}?sslmode=disable", cluster().port());
    let store = connect(&url);
    let shown = format!("{store:?}");
    assert!(shown.contains(&format!("postgres@127.0.0.1:{}/{name}", cluster().port())), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_store_serves_and_drops_inside_another_runtimes_task() {
    let (_, url) = database();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let store = connect(&url);
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        assert_eq!(store.realm_names().unwrap(), ["alpha"]);
        drop(store);
    });
}
