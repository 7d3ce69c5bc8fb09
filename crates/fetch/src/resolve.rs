//! Turning a host name into addresses, done by the fetcher itself.
//!
//! The fetcher resolves each host once, checks every address it gets, and
//! hands the HTTP client exactly those addresses: the client never looks
//! the name up again, so a DNS answer that changes between the check and
//! the connection (DNS rebinding) changes nothing. The resolver is a trait
//! so tests can map names to fixed addresses.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Looks up a host name's addresses.
pub trait Resolve: Send + Sync + Debug {
    /// Every address of `host`, a DNS name (never an IP literal), within
    /// `timeout`. An error of kind [`io::ErrorKind::TimedOut`] is reported
    /// as a time-out, [`io::ErrorKind::ResourceBusy`] as busy, anything
    /// else (no addresses included) as a name that does not resolve.
    fn resolve(&self, host: &str, timeout: Duration) -> io::Result<Vec<IpAddr>>;
}

/// The system's resolver (`getaddrinfo`, through [`ToSocketAddrs`]).
///
/// `getaddrinfo` cannot be interrupted, so each lookup runs on a thread of
/// its own and the caller stops waiting at its deadline. A lookup that
/// hangs keeps its thread until the system resolver gives up (its own
/// time-outs, seconds); at most `max_pending` such threads exist at once,
/// and past that lookups fail fast as busy rather than pile up threads.
#[derive(Debug)]
pub struct SystemResolver {
    pending: Arc<AtomicUsize>,
    max_pending: usize,
}

impl SystemResolver {
    /// A resolver with at most `max_pending` lookups running at once.
    pub fn new(max_pending: usize) -> Self {
        Self { pending: Arc::new(AtomicUsize::new(0)), max_pending }
    }
}

impl Default for SystemResolver {
    /// At most 64 lookups at once.
    fn default() -> Self {
        Self::new(64)
    }
}

/// Gives back a pending lookup's slot when its thread ends, however it
/// ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, timeout: Duration) -> io::Result<Vec<IpAddr>> {
        let taken = self.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            if n < self.max_pending { Some(n + 1) } else { None }
        });
        if taken.is_err() {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, "too many lookups in progress"));
        }
        let slot = Slot(Arc::clone(&self.pending));
        let (tx, rx) = mpsc::sync_channel(1);
        let name = host.to_owned();
        std::thread::Builder::new().name("agentauth-dns".into()).spawn(move || {
            let _slot = slot;
            // The port is required by the API and plays no part in the lookup.
            let result = (name.as_str(), 0).to_socket_addrs().map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>());
            // The caller may have stopped waiting: nothing to do then.
            let _ = tx.send(result);
        })?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out")),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other("lookup thread ended")),
        }
    }
}

/// Names mapped to fixed addresses, for tests: a name it does not hold
/// does not resolve.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// A resolver that knows no names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `host` (any case) to `addrs`, replacing what it had.
    pub fn with(mut self, host: &str, addrs: &[IpAddr]) -> Self {
        self.names.insert(host.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, host: &str, _timeout: Duration) -> io::Result<Vec<IpAddr>> {
        self.names
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_resolver_answers_what_it_was_given_in_any_case() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let resolver = StaticResolver::new().with("Issuer.Example", &[ip]);
        assert_eq!(resolver.resolve("issuer.example", Duration::from_secs(1)).unwrap(), vec![ip]);
        assert!(resolver.resolve("other.example", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_system_resolver_fails_fast_when_its_lookups_are_all_taken() {
        let resolver = SystemResolver::new(0);
        let err = resolver.resolve("localhost", Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
    }

    #[test]
    fn the_system_resolver_resolves_localhost_to_loopback() {
        let addrs = SystemResolver::default().resolve("localhost", Duration::from_secs(5)).unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
    }
}
