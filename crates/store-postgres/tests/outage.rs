//! A database that goes away: every call fails as Unavailable within its
//! bound rather than hanging, and the same store works again once the
//! database is back. A cluster of its own, since it is stopped.

use std::time::{Duration, Instant};

use agentauth_core::ports::prelude::*;
use agentauth_core::ports::{ErrorKind, NewToken, TokenKind};
use agentauth_store_conformance::fixtures::client_row;
use agentauth_store_postgres::throwaway::Cluster;
use agentauth_store_postgres::{Options, PgStore};

#[test]
fn a_store_reports_an_outage_as_unavailable_in_bounded_time_and_recovers_after_it() {
    let cluster = Cluster::start().expect("a throwaway PostgreSQL cluster");
    let url = cluster.create_database("outage").unwrap();
    let options = Options::default();
    let store = PgStore::connect(&url, options).unwrap();
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();
    assert!(store.realm("alpha").unwrap().is_some());

    cluster.stop().unwrap();
    let bound = options.wait_timeout + options.statement_timeout;
    for _ in 0..2 {
        let asked = Instant::now();
        let e = store.realm("alpha").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(asked.elapsed() < bound, "answered after {:?}", asked.elapsed());
        let e = store.create_realm_if_absent("beta", "{}", 0).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(store.ping().unwrap_err().kind(), ErrorKind::Unavailable);
    }
    // Nobody is notified meanwhile: a wait just times out.
    let waiting = Instant::now();
    store.wait_for_change(Duration::from_millis(200));
    assert!(waiting.elapsed() < Duration::from_secs(2));

    cluster.start_again().unwrap();
    store.ping().unwrap();
    assert!(store.realm("alpha").unwrap().is_some(), "the same store, without being rebuilt");
    assert!(store.create_realm_if_absent("beta", "{}", 0).unwrap());
}

#[test]
fn a_database_that_cannot_be_reached_fails_connect_as_unavailable() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/nothing?sslmode=disable");
    let asked = Instant::now();
    let e = PgStore::connect(&url, Options::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(asked.elapsed() < Duration::from_secs(6));
}

#[test]
fn a_server_that_accepts_and_never_answers_fails_connect_within_its_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://postgres@{}/nothing?sslmode=disable", silent.local_addr().unwrap());
    let options = Options { connect_timeout: Duration::from_secs(1), ..Options::default() };
    let asked = Instant::now();
    let e = PgStore::connect(&url, options).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(asked.elapsed() < Duration::from_secs(3), "answered after {:?}", asked.elapsed());
}

#[test]
fn a_server_that_stops_answering_fails_calls_within_their_bound_and_serves_again_after() {
    let cluster = Cluster::start().expect("a throwaway PostgreSQL cluster");
    let url = cluster.create_database("frozen").unwrap();
    let options = Options {
        wait_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let store = PgStore::connect(&url, options).unwrap();
    store.create_realm_if_absent("alpha", "{}", 0).unwrap();

    cluster.freeze().unwrap();
    let bound = options.wait_timeout + options.statement_timeout + Duration::from_millis(500);
    let asked = Instant::now();
    let e = store.realm("alpha").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(asked.elapsed() < bound, "answered after {:?}", asked.elapsed());
    let asked = Instant::now();
    assert!(store.create_realm_if_absent("beta", "{}", 0).unwrap_err().is_transient());
    assert!(asked.elapsed() < bound, "answered after {:?}", asked.elapsed());
    // Grouped writes too: a batch stuck on the silent server holds up its
    // callers no longer than any call.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let store = &store;
            s.spawn(move || {
                let asked = Instant::now();
                let e = store.insert_tokens("alpha", &[token(&[t])]).unwrap_err();
                assert!(e.is_transient(), "{e}");
                assert!(asked.elapsed() < bound, "answered after {:?}", asked.elapsed());
                let asked = Instant::now();
                let e = store.insert_client("alpha", &client_row(&format!("c{t}")), 10).unwrap_err();
                assert!(e.is_transient(), "{e}");
                assert!(asked.elapsed() < bound, "answered after {:?}", asked.elapsed());
            });
        }
    });

    cluster.thaw().unwrap();
    assert!(store.realm("alpha").unwrap().is_some());
    store.create_realm_if_absent("gamma", "{}", 0).unwrap();
    for t in 0..4u8 {
        store.insert_tokens("alpha", &[token(&[t, t])]).unwrap();
        assert!(store.insert_client("alpha", &client_row(&format!("d{t}")), 10).unwrap());
    }
    assert_eq!(store.realm_names().unwrap().first().map(String::as_str), Some("alpha"));
}

fn token(hash: &[u8]) -> NewToken<'_> {
    NewToken { hash, client_id: "c1", family: None, kind: TokenKind::Access, grant: "{}", expires_at: 100 }
}
