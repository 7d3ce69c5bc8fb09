//! What the fetcher remembers: documents for as long as their server
//! allows (within bounds), and failures briefly.
//!
//! A document lives for its `Cache-Control: max-age`, clamped to the
//! policy's [min, max]; `no-store` and `no-cache` mean the minimum (a
//! document fetched on every request would let anyone who can make the
//! server fetch a URL make it fetch that URL at will), and no `max-age`
//! means the policy's default. `Expires` is ignored: every server this
//! fetches from that sends it also sends `max-age`, which wins over it
//! (RFC 9111 §5.3), and one that does not gets the default.
//!
//! A failure is remembered for the negative lifetime, so a dead or hostile
//! URL is tried at most once in that time, however often it is asked for.
//!
//! Entries are bounded in number. When full, expired entries go first,
//! then the oldest. Callers that fetch attacker-chosen URLs (client
//! metadata documents) can evict each other's entries; a deployment keeps
//! trusted fetches (JWKS, discovery) in a fetcher of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::{Document, FetchError, FetchPolicy, Limits};

/// A URL as fetched with given limits: a document fetched under looser
/// limits (say, with redirects) is never served to a caller with stricter
/// ones.
pub(crate) type Key = (String, Limits);

#[derive(Debug)]
struct Entry {
    outcome: Result<Arc<Document>, FetchError>,
    expires_at: i64,
    /// When the URL was last fetched by a refresh, successfully or not:
    /// the refresh rate limit counts from here.
    last_refresh: Option<i64>,
    /// Insertion order, to find the oldest entry.
    seq: u64,
}

#[derive(Debug)]
pub(crate) struct Cache {
    entries: HashMap<Key, Entry>,
    max_entries: usize,
    next_seq: u64,
}

impl Cache {
    pub fn new(max_entries: usize) -> Self {
        Self { entries: HashMap::new(), max_entries, next_seq: 0 }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn remembers(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// The remembered outcome for `key`, if it has not expired at `now`.
    pub fn fresh(&self, key: &Key, now: i64) -> Option<Result<Arc<Document>, FetchError>> {
        self.entries.get(key).filter(|e| now < e.expires_at).map(|e| e.outcome.clone())
    }

    /// When `key` was last refreshed, if it is still remembered.
    pub fn last_refresh(&self, key: &Key) -> Option<i64> {
        self.entries.get(key).and_then(|e| e.last_refresh)
    }

    /// Notes that `key` was refreshed at `now`.
    pub fn note_refresh(&mut self, key: &Key, now: i64) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.last_refresh = Some(now);
        }
    }

    /// Remembers a fetch's outcome at `now` and returns what the caller
    /// gets. A failure does not displace a document that is still fresh
    /// (a refresh that failed leaves the keys that worked a minute ago in
    /// place), but it is the caller's answer all the same.
    pub fn store(
        &mut self,
        key: Key,
        outcome: Result<Fetched, FetchError>,
        now: i64,
        policy: &FetchPolicy,
    ) -> Result<Arc<Document>, FetchError> {
        let (outcome, expires_at) = match outcome {
            Ok(fetched) => {
                let expires_at = now.saturating_add(seconds(lifetime(&fetched.cache_control, policy)));
                let document =
                    Arc::new(Document { url: key.0.clone(), json: fetched.json, fetched_at: now, expires_at });
                (Ok(document), expires_at)
            }
            Err(error) if !error.is_cacheable() => return Err(error),
            Err(error) => {
                if let Some(entry) = self.entries.get_mut(&key)
                    && entry.outcome.is_ok()
                    && now < entry.expires_at
                {
                    return Err(error);
                }
                (Err(error), now.saturating_add(seconds(policy.negative_ttl)))
            }
        };
        if !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        if self.max_entries > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            let last_refresh = self.entries.get(&key).and_then(|e| e.last_refresh);
            self.entries.insert(key, Entry { outcome: outcome.clone(), expires_at, last_refresh, seq });
        }
        outcome
    }

    /// Frees a slot for one more entry: every expired entry first, then
    /// the oldest if that was not enough.
    fn make_room(&mut self, now: i64) {
        if self.entries.len() < self.max_entries {
            return;
        }
        self.entries.retain(|_, e| now < e.expires_at);
        while self.entries.len() >= self.max_entries {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.seq).map(|(k, _)| k.clone()) else {
                return;
            };
            self.entries.remove(&oldest);
        }
    }
}

/// A successful fetch, before it is dated and shared.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub json: serde_json::Map<String, serde_json::Value>,
    /// The final response's `Cache-Control` header values.
    pub cache_control: Vec<String>,
}

/// How long a document may be served from the cache, from its
/// `Cache-Control` values (see the module's documentation).
pub(crate) fn lifetime(cache_control: &[String], policy: &FetchPolicy) -> Duration {
    let mut max_age: Option<u64> = None;
    let mut uncacheable = false;
    for directive in cache_control.iter().flat_map(|value| value.split(',')) {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            uncacheable = true;
        } else if name.eq_ignore_ascii_case("max-age") {
            // A value too large for u64 is still a very long lifetime;
            // one that is not a number is no lifetime at all. Of several,
            // the shortest counts.
            let parsed = value
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .map(|v| v.parse().unwrap_or(u64::MAX));
            if let Some(seconds) = parsed {
                max_age = Some(max_age.map_or(seconds, |m| m.min(seconds)));
            }
        }
    }
    let wanted = if uncacheable { policy.min_ttl } else { max_age.map_or(policy.default_ttl, Duration::from_secs) };
    clamp(wanted, policy.min_ttl, policy.max_ttl)
}

/// `value` within [min, max]; a policy whose min exceeds its max gets its
/// max, where `Duration::clamp` would panic.
fn clamp(value: Duration, min: Duration, max: Duration) -> Duration {
    value.max(min).min(max)
}

fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FetchPolicy {
        FetchPolicy {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(86_400),
            default_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            ..FetchPolicy::default()
        }
    }

    fn life(values: &[&str]) -> u64 {
        lifetime(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>(), &policy()).as_secs()
    }

    #[test]
    fn max_age_is_honoured_within_the_bounds() {
        assert_eq!(life(&["max-age=600"]), 600);
        assert_eq!(life(&["public, max-age=3600, must-revalidate"]), 3_600);
        assert_eq!(life(&["Max-Age=\"120\""]), 120);
        assert_eq!(life(&["max-age=5"]), 60);
        assert_eq!(life(&["max-age=0"]), 60);
        assert_eq!(life(&["max-age=999999999"]), 86_400);
        assert_eq!(life(&["max-age=99999999999999999999999"]), 86_400);
        assert_eq!(life(&["max-age=600", "max-age=120"]), 120);
    }

    #[test]
    fn no_store_and_no_cache_mean_the_minimum() {
        assert_eq!(life(&["no-store"]), 60);
        assert_eq!(life(&["max-age=3600, no-cache"]), 60);
        assert_eq!(life(&["private", "NO-STORE"]), 60);
    }

    #[test]
    fn without_a_usable_max_age_the_default_applies() {
        assert_eq!(life(&[]), 300);
        assert_eq!(life(&["public"]), 300);
        assert_eq!(life(&["max-age=-5"]), 300);
        assert_eq!(life(&["max-age=ten"]), 300);
        assert_eq!(life(&["max-age="]), 300);
    }

    #[test]
    fn bounds_that_cross_do_not_panic() {
        let odd = FetchPolicy { min_ttl: Duration::from_secs(100), max_ttl: Duration::from_secs(10), ..policy() };
        assert_eq!(lifetime(&[], &odd).as_secs(), 10);
    }

    fn key(n: usize) -> Key {
        (format!("https://{n}.example/"), Limits::default())
    }

    fn fetched() -> Result<Fetched, FetchError> {
        Ok(Fetched { json: serde_json::Map::new(), cache_control: vec!["max-age=100".into()] })
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_oldest() {
        let p = policy();
        let mut cache = Cache::new(3);
        cache.store(key(1), fetched(), 0, &p).unwrap();
        cache.store(key(2), Err(FetchError::Status(500)), 0, &p).unwrap_err();
        cache.store(key(3), fetched(), 10, &p).unwrap();
        // At 40 the failure (30 s) has expired: it goes, the documents stay.
        cache.store(key(4), fetched(), 40, &p).unwrap();
        assert_eq!(cache.len(), 3);
        assert!(cache.fresh(&key(1), 40).is_some());
        assert!(!cache.remembers(&key(2)));
        // Nothing has expired at 50: the oldest (1) goes.
        cache.store(key(5), fetched(), 50, &p).unwrap();
        assert_eq!(cache.len(), 3);
        assert!(!cache.remembers(&key(1)));
        assert!(cache.fresh(&key(3), 50).is_some());
    }

    #[test]
    fn a_failure_does_not_displace_a_fresh_document() {
        let p = policy();
        let mut cache = Cache::new(8);
        let document = cache.store(key(1), fetched(), 0, &p).unwrap();
        assert_eq!(cache.store(key(1), Err(FetchError::TimedOut), 40, &p).unwrap_err(), FetchError::TimedOut);
        assert!(Arc::ptr_eq(&cache.fresh(&key(1), 41).unwrap().unwrap(), &document));
        // Once it has expired, the failure replaces it.
        cache.store(key(1), Err(FetchError::TimedOut), 100, &p).unwrap_err();
        assert_eq!(cache.fresh(&key(1), 101).unwrap().unwrap_err(), FetchError::TimedOut);
        assert!(cache.fresh(&key(1), 130).is_none());
    }

    #[test]
    fn busy_is_never_remembered() {
        let mut cache = Cache::new(8);
        cache.store(key(1), Err(FetchError::Busy), 0, &policy()).unwrap_err();
        assert!(!cache.remembers(&key(1)));
    }
}
