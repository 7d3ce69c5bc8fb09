//! The fetcher against real servers on loopback: what it refuses, what it
//! bounds, what it caches. Each test states one thing a caller relies on.

#![allow(clippy::unwrap_used)] // a test that unwraps fails with a location

mod bounds;
mod caching;
mod post;
mod redirects;
mod refusals;
mod server;
mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agentauth_fetch::{FetchPolicy, Fetcher, ManualClock, StaticResolver};

/// The production policy: no loopback, HTTPS only.
fn strict() -> FetchPolicy {
    FetchPolicy::default()
}

/// The development setting: loopback allowed, over HTTP too.
fn dev() -> FetchPolicy {
    FetchPolicy { allow_loopback_http: true, ..FetchPolicy::default() }
}

/// A fetcher whose names resolve only as `names` says and whose clock
/// moves only when the test moves it.
fn fetcher_with(policy: FetchPolicy, names: &[(&str, &[&str])]) -> (Fetcher, Arc<ManualClock>) {
    let mut resolver = StaticResolver::new();
    for (name, addrs) in names {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        resolver = resolver.with(name, &addrs);
    }
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    (Fetcher::with_parts(policy, Arc::new(resolver), clock.clone()), clock)
}

fn fetcher(policy: FetchPolicy) -> Fetcher {
    fetcher_with(policy, &[]).0
}

/// A bound far above what any check here takes, so that a test asserting
/// "refused at once" cannot be confused with "refused after a time-out".
const LONG: Duration = Duration::from_secs(20);
