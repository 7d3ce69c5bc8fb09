//! The cache, single flight and the bound on fetches in flight: how often
//! a URL is actually fetched, however often it is asked for.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use agentauth_fetch::{FetchError, FetchPolicy, Limits};

use crate::server::{Gate, Reply, Server};
use crate::{dev, fetcher, fetcher_with};

#[test]
fn a_second_get_is_served_from_the_cache() {
    let server = Server::start(|_| Reply::json(r#"{"issuer": "x"}"#));
    let fetcher = fetcher(dev());
    let first = fetcher.get_json(&server.url("/doc"), &Limits::default()).unwrap();
    let second = fetcher.get_json(&server.url("/doc"), &Limits::default()).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(server.requests(), 1);
    // Clones share the cache.
    fetcher.clone().get_json(&server.url("/doc"), &Limits::default()).unwrap();
    assert_eq!(server.requests(), 1);
}

#[test]
fn max_age_is_honoured() {
    let server = Server::start(|_| Reply::json_with("{}", &[("Cache-Control", "public, max-age=120")]));
    let (fetcher, clock) = fetcher_with(dev(), &[]);
    let doc = fetcher.get_json(&server.url("/"), &Limits::default()).unwrap();
    assert_eq!(doc.expires_at - doc.fetched_at, 120);
    clock.advance(119);
    fetcher.get_json(&server.url("/"), &Limits::default()).unwrap();
    assert_eq!(server.requests(), 1);
    clock.advance(1);
    fetcher.get_json(&server.url("/"), &Limits::default()).unwrap();
    assert_eq!(server.requests(), 2);
}

#[test]
fn max_age_is_clamped_to_the_policy_bounds() {
    let server = Server::start(|path| match path {
        "/short" => Reply::json_with("{}", &[("Cache-Control", "max-age=1")]),
        _ => Reply::json_with("{}", &[("Cache-Control", "max-age=31536000")]),
    });
    let policy = FetchPolicy { min_ttl: Duration::from_secs(60), max_ttl: Duration::from_secs(3_600), ..dev() };
    let (fetcher, clock) = fetcher_with(policy, &[]);
    let short = fetcher.get_json(&server.url("/short"), &Limits::default()).unwrap();
    assert_eq!(short.expires_at - short.fetched_at, 60);
    let long = fetcher.get_json(&server.url("/long"), &Limits::default()).unwrap();
    assert_eq!(long.expires_at - long.fetched_at, 3_600);
    clock.advance(59);
    fetcher.get_json(&server.url("/short"), &Limits::default()).unwrap();
    assert_eq!(server.requests(), 2);
    clock.advance(1);
    fetcher.get_json(&server.url("/short"), &Limits::default()).unwrap();
    assert_eq!(server.requests(), 3);
}

#[test]
fn no_store_means_the_minimum_lifetime_and_no_max_age_the_default() {
    let server = Server::start(|path| match path {
        "/no-store" => Reply::json_with("{}", &[("Cache-Control", "no-store")]),
        _ => Reply::json("{}"),
    });
    let (fetcher, _) = fetcher_with(dev(), &[]);
    let doc = fetcher.get_json(&server.url("/no-store"), &Limits::default()).unwrap();
    assert_eq!(doc.expires_at - doc.fetched_at, 60);
    let doc = fetcher.get_json(&server.url("/plain"), &Limits::default()).unwrap();
    assert_eq!(doc.expires_at - doc.fetched_at, 300);
}

#[test]
fn failures_are_cached_briefly() {
    let server = Server::start(|_| Reply::response(500, &[], ""));
    let (fetcher, clock) = fetcher_with(dev(), &[]);
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::Status(500));
    clock.advance(29);
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::Status(500));
    assert_eq!(server.requests(), 1);
    clock.advance(1);
    assert_eq!(fetcher.get_json(&server.url("/"), &Limits::default()).unwrap_err(), FetchError::Status(500));
    assert_eq!(server.requests(), 2);
}

#[test]
fn refused_addresses_are_cached_too() {
    let (fetcher, _) = fetcher_with(dev(), &[("internal.example", &["10.1.2.3"])]);
    for _ in 0..3 {
        let err = fetcher.get_json("https://internal.example/", &Limits::default()).unwrap_err();
        assert!(matches!(err, FetchError::RefusedAddress { .. }));
    }
}

#[test]
fn refresh_refetches_at_most_once_per_interval() {
    let server = Server::start(|_| Reply::json_with("{}", &[("Cache-Control", "max-age=3600")]));
    let (fetcher, clock) = fetcher_with(dev(), &[]);
    let url = server.url("/jwks");
    let first = fetcher.get_json(&url, &Limits::default()).unwrap();
    // Just fetched, never refreshed: a refresh fetches (a key rotated
    // since the fetch is seen at once)...
    let refreshed = fetcher.refresh(&url, &Limits::default()).unwrap().expect("refetched");
    assert!(!Arc::ptr_eq(&first, &refreshed));
    assert_eq!(server.requests(), 2);
    // ...and the next one within the interval does nothing.
    assert!(fetcher.refresh(&url, &Limits::default()).unwrap().is_none());
    assert_eq!(server.requests(), 2);
    clock.advance(30);
    let refreshed = fetcher.refresh(&url, &Limits::default()).unwrap().expect("refetched");
    assert_eq!(server.requests(), 3);
    // The refreshed copy is what the cache serves now.
    assert!(Arc::ptr_eq(&fetcher.get_json(&url, &Limits::default()).unwrap(), &refreshed));
    clock.advance(29);
    assert!(fetcher.refresh(&url, &Limits::default()).unwrap().is_none());
    assert_eq!(server.requests(), 3);
    // A URL never fetched is fetched at once.
    assert!(fetcher.refresh(&server.url("/other"), &Limits::default()).unwrap().is_some());
}

#[test]
fn a_failed_refresh_leaves_the_cached_document_in_place() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let server = Server::start(move |_| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::json_with(r#"{"keys": ["old"]}"#, &[("Cache-Control", "max-age=3600")])
        } else {
            Reply::response(503, &[], "")
        }
    });
    let (fetcher, clock) = fetcher_with(dev(), &[]);
    let url = server.url("/jwks");
    let doc = fetcher.get_json(&url, &Limits::default()).unwrap();
    clock.advance(60);
    assert_eq!(fetcher.refresh(&url, &Limits::default()).unwrap_err(), FetchError::Status(503));
    assert!(Arc::ptr_eq(&fetcher.get_json(&url, &Limits::default()).unwrap(), &doc));
    // The failed attempt counts against the rate limit.
    assert!(fetcher.refresh(&url, &Limits::default()).unwrap().is_none());
    assert_eq!(server.requests(), 2);
}

#[test]
fn concurrent_callers_of_one_url_share_one_fetch() {
    let gate = Gate::default();
    let held = gate.clone();
    let server = Server::start(move |_| Reply::AfterGate(held.clone(), Box::new(Reply::json("{}"))));
    // Nothing is cached: a caller gets a document only by sharing the
    // fetch under way, or by fetching again, which the server would see.
    let fetcher = fetcher(FetchPolicy { max_cache_entries: 0, ..dev() });
    let url = server.url("/");
    let first = thread::spawn({
        let (fetcher, url) = (fetcher.clone(), url.clone());
        move || fetcher.get_json(&url, &Limits::default())
    });
    server.wait_for_requests(1);
    let second = thread::spawn({
        let (fetcher, url) = (fetcher.clone(), url.clone());
        move || fetcher.get_json(&url, &Limits::default())
    });
    // Time for the second caller to find the fetch under way and join it.
    thread::sleep(Duration::from_millis(500));
    gate.open();
    let (first, second) = (first.join().unwrap().unwrap(), second.join().unwrap().unwrap());
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(server.requests(), 1);
}

#[test]
fn callers_are_refused_as_busy_when_the_in_flight_bound_is_full() {
    let gate = Gate::default();
    let held = gate.clone();
    let server = Server::start(move |path| match path {
        "/slow" => Reply::AfterGate(held.clone(), Box::new(Reply::json("{}"))),
        _ => Reply::json("{}"),
    });
    let fetcher = fetcher(FetchPolicy { max_in_flight: 1, ..dev() });
    let slow = thread::spawn({
        let (fetcher, url) = (fetcher.clone(), server.url("/slow"));
        move || fetcher.get_json(&url, &Limits::default())
    });
    server.wait_for_requests(1);
    let err = fetcher.get_json(&server.url("/other"), &Limits::default()).unwrap_err();
    assert_eq!(err, FetchError::Busy);
    assert_eq!(err.to_string(), "busy");
    assert_eq!(server.paths(), ["/slow"]);
    gate.open();
    slow.join().unwrap().unwrap();
    // Busy is not remembered: once the slot is free the URL is fetched.
    fetcher.get_json(&server.url("/other"), &Limits::default()).unwrap();
    assert_eq!(server.paths(), ["/slow", "/other"]);
}

#[test]
fn one_owner_cannot_take_every_slot() {
    let gate = Gate::default();
    let held = gate.clone();
    let server = Server::start(move |path| match path {
        "/slow" => Reply::AfterGate(held.clone(), Box::new(Reply::json("{}"))),
        _ => Reply::json("{}"),
    });
    let fetcher = fetcher(FetchPolicy { max_in_flight: 4, max_in_flight_per_owner: 1, ..dev() });
    let slow = thread::spawn({
        let (fetcher, url) = (fetcher.clone(), server.url("/slow"));
        move || fetcher.get_json_for("tenant-a", &url, &Limits::default())
    });
    server.wait_for_requests(1);
    // Tenant A's one slot is taken by its slow URL: its next fetch is
    // refused, while tenant B's goes through.
    let refused = fetcher.get_json_for("tenant-a", &server.url("/a2"), &Limits::default()).unwrap_err();
    assert_eq!(refused, FetchError::Busy);
    fetcher.get_json_for("tenant-b", &server.url("/b"), &Limits::default()).unwrap();
    gate.open();
    slow.join().unwrap().unwrap();
    // The slot is A's again once its fetch is done.
    fetcher.get_json_for("tenant-a", &server.url("/a2"), &Limits::default()).unwrap();
    assert_eq!(server.paths(), ["/slow", "/b", "/a2"]);
}

#[test]
fn a_waiter_gives_up_at_the_time_bound() {
    let gate = Gate::default();
    let held = gate.clone();
    let server = Server::start(move |_| Reply::AfterGate(held.clone(), Box::new(Reply::json("{}"))));
    let fetcher = fetcher(FetchPolicy { timeout: Duration::from_millis(500), ..dev() });
    let url = server.url("/");
    let leader = thread::spawn({
        let (fetcher, url) = (fetcher.clone(), url.clone());
        move || fetcher.get_json(&url, &Limits::default())
    });
    server.wait_for_requests(1);
    let start = std::time::Instant::now();
    assert_eq!(fetcher.get_json(&url, &Limits::default()).unwrap_err(), FetchError::TimedOut);
    assert!(start.elapsed() < Duration::from_millis(1_500));
    assert_eq!(leader.join().unwrap().unwrap_err(), FetchError::TimedOut);
    gate.open();
}
