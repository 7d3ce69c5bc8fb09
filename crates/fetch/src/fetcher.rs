//! The fetcher: the cache in front, one fetch per URL at a time, a bound
//! on fetches in flight, and the redirect loop that checks every hop.
//!
//! A call finds, under one lock, either a fresh cached outcome (returned),
//! a fetch of the same URL under way (joined: the caller waits for its
//! outcome, at most the policy's time bound), or neither: it then leads a
//! fetch of its own if fewer than `max_in_flight` are under way, and is
//! refused as busy otherwise. The lock is never held across the network.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::{Cache, Fetched, Key};
use crate::http::{Answer, Client, Send};
use crate::target::{self, Target};
use crate::{Clock, Document, FetchError, FetchPolicy, Limits, Resolve, SystemClock, SystemResolver};

/// Fetches JSON documents under a [`FetchPolicy`], caching them. Cheap to
/// clone: clones share one cache and one bound on fetches in flight, so
/// build one per purpose and share it (see the crate's documentation).
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    policy: FetchPolicy,
    resolver: Arc<dyn Resolve>,
    clock: Arc<dyn Clock>,
    client: Client,
    state: Mutex<State>,
}

struct State {
    cache: Cache,
    /// The fetches under way, one per key; their number is what
    /// `max_in_flight` bounds.
    flights: HashMap<Key, Arc<Flight>>,
    /// The fetches under way per owner, for `max_in_flight_per_owner`.
    owners: HashMap<String, usize>,
}

/// One fetch under way, which other callers of its URL wait for.
#[derive(Default)]
struct Flight {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

#[derive(Clone)]
enum Outcome {
    Done(Result<Arc<Document>, FetchError>),
    /// The leader went away without an outcome (it panicked): waiters try
    /// again themselves.
    Abandoned,
}

impl Fetcher {
    /// A fetcher resolving names with the system's resolver and dating
    /// documents with the system's clock.
    pub fn new(policy: FetchPolicy) -> Self {
        Self::with_resolver(policy, Arc::new(SystemResolver::default()))
    }

    /// A fetcher resolving names with `resolver`.
    pub fn with_resolver(policy: FetchPolicy, resolver: Arc<dyn Resolve>) -> Self {
        Self::with_parts(policy, resolver, Arc::new(SystemClock))
    }

    /// A fetcher resolving names with `resolver` and measuring cache
    /// lifetimes with `clock`.
    pub fn with_parts(policy: FetchPolicy, resolver: Arc<dyn Resolve>, clock: Arc<dyn Clock>) -> Self {
        Self::with_client(policy, resolver, clock, Client::new())
    }

    pub(crate) fn with_client(
        policy: FetchPolicy,
        resolver: Arc<dyn Resolve>,
        clock: Arc<dyn Clock>,
        client: Client,
    ) -> Self {
        let state =
            State { cache: Cache::new(policy.max_cache_entries), flights: HashMap::new(), owners: HashMap::new() };
        Self { inner: Arc::new(Inner { policy, resolver, clock, client, state: Mutex::new(state) }) }
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.inner.policy
    }

    /// The JSON object at `url`, from the cache while it is fresh, else
    /// fetched (or joined, when another caller is fetching it). A cached
    /// failure is returned as it was for the negative lifetime.
    pub fn get_json(&self, url: &str, limits: &Limits) -> Result<Arc<Document>, FetchError> {
        self.get_json_for("", url, limits)
    }

    /// As [`Fetcher::get_json`], on behalf of `owner` (a tenant): a fetch
    /// this call must lead counts against the owner's
    /// [`FetchPolicy::max_in_flight_per_owner`] as well as the fetcher's
    /// bound. Cached documents, and fetches joined, count for nothing.
    pub fn get_json_for(&self, owner: &str, url: &str, limits: &Limits) -> Result<Arc<Document>, FetchError> {
        let target = target::parse(url)?;
        let key: Key = (target.url.as_str().to_owned(), *limits);
        let wait_until = self.deadline();
        loop {
            let step = {
                let mut state = self.lock();
                if let Some(outcome) = state.cache.fresh(&key, self.inner.clock.now()) {
                    return outcome;
                }
                self.join_or_lead(&mut state, &key, owner)
            };
            match step {
                Step::Lead(lead) => return self.run(lead, &target, limits),
                Step::Joined(flight) => match flight.wait(wait_until) {
                    Some(Outcome::Done(outcome)) => return outcome,
                    Some(Outcome::Abandoned) => continue,
                    None => return Err(FetchError::TimedOut),
                },
                Step::Busy => return Err(FetchError::Busy),
            }
        }
    }

    /// Fetches `url` again even if a fresh copy is cached, for when the
    /// copy is known to be stale (a token names a key the cached JWKS
    /// lacks: the issuer may have rotated since). At most once per
    /// [`FetchPolicy::refresh_interval`] for a URL, counting refreshes
    /// only, so a rotation just after a fetch is still seen at once:
    /// `Ok(None)` when it was refreshed more recently than that and
    /// nothing was done. A failed refresh is returned, counts, and leaves a
    /// still fresh document in the cache.
    pub fn refresh(&self, url: &str, limits: &Limits) -> Result<Option<Arc<Document>>, FetchError> {
        self.refresh_for("", url, limits)
    }

    /// As [`Fetcher::refresh`], on behalf of `owner` (see
    /// [`Fetcher::get_json_for`]).
    pub fn refresh_for(&self, owner: &str, url: &str, limits: &Limits) -> Result<Option<Arc<Document>>, FetchError> {
        let target = target::parse(url)?;
        let key: Key = (target.url.as_str().to_owned(), *limits);
        let interval = i64::try_from(self.inner.policy.refresh_interval.as_secs()).unwrap_or(i64::MAX);
        let wait_until = self.deadline();
        loop {
            let step = {
                let mut state = self.lock();
                let now = self.inner.clock.now();
                let recent = state.cache.last_refresh(&key).is_some_and(|at| now.saturating_sub(at) < interval);
                // A fetch under way is as recent as can be: join it.
                if recent && !state.flights.contains_key(&key) {
                    return Ok(None);
                }
                self.join_or_lead(&mut state, &key, owner)
            };
            match step {
                Step::Lead(mut lead) => {
                    lead.refresh = true;
                    return self.run(lead, &target, limits).map(Some);
                }
                Step::Joined(flight) => match flight.wait(wait_until) {
                    Some(Outcome::Done(outcome)) => return outcome.map(Some),
                    Some(Outcome::Abandoned) => continue,
                    None => return Err(FetchError::TimedOut),
                },
                Step::Busy => return Err(FetchError::Busy),
            }
        }
    }

    /// POSTs `form` to `url` (a token endpoint) on behalf of `owner`,
    /// with HTTP Basic credentials if given (RFC 6749 §2.3.1: each half
    /// form-urlencoded first), and returns the JSON object of a `200`.
    /// Under the same rules as a fetch (addresses checked, bounds, a slot
    /// in flight) but never cached, joined or redirected.
    pub fn post_form_for(
        &self,
        owner: &str,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
        limits: &Limits,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FetchError> {
        use base64::Engine as _;
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let authorization = basic.map(|(id, secret)| {
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credential = format!("{}:{}", encode(id), encode(secret));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credential))
        });
        let send = Send::PostForm { body: &body, authorization: authorization.as_deref() };
        match self.post(owner, url, limits, send)? {
            Answer::Document(fetched) => Ok(fetched.json),
            Answer::Redirect(_) => Err(FetchError::RedirectNotAllowed),
            Answer::Accepted => Err(FetchError::Status(200)),
        }
    }

    /// POSTs a Security Event Token to `url` (a receiver's push endpoint,
    /// RFC 8935) on behalf of `owner`: `Ok` for any `2xx`, the status as
    /// [`FetchError::Status`] otherwise. Under the same rules as a fetch
    /// (addresses checked, bounds, a slot in flight), never cached,
    /// joined or redirected.
    pub fn post_set_for(&self, owner: &str, url: &str, set: &str, limits: &Limits) -> Result<(), FetchError> {
        match self.post(owner, url, limits, Send::PostSet { body: set })? {
            Answer::Accepted => Ok(()),
            Answer::Redirect(_) => Err(FetchError::RedirectNotAllowed),
            Answer::Document(_) => Err(FetchError::Status(200)),
        }
    }

    /// Sends `send` to `url` for `owner` in a slot of its own: a POST
    /// shares no flight and no cache entry, and follows no redirect.
    fn post(&self, owner: &str, url: &str, limits: &Limits, send: Send<'_>) -> Result<Answer, FetchError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static POSTS: AtomicU64 = AtomicU64::new(0);
        let target = target::parse(url)?;
        let key: Key = (format!("POST#{} {}", POSTS.fetch_add(1, Ordering::Relaxed), target.url), *limits);
        let mut lead = match self.join_or_lead(&mut self.lock(), &key, owner) {
            Step::Lead(lead) => lead,
            Step::Joined(_) | Step::Busy => return Err(FetchError::Busy),
        };
        let deadline = self.deadline();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let outcome = target::admit(&target, self.inner.policy.allow_loopback_http, &*self.inner.resolver, remaining)
            .and_then(|addrs| self.inner.client.exchange(&target, &addrs, deadline, limits, send));
        {
            let mut state = self.lock();
            lead.leave(&mut state);
        }
        lead.flight.complete(Outcome::Abandoned);
        lead.finished = true;
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere
        // while it was held leaves nothing half-done worth refusing for.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The time bound from now.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.inner.policy.timeout).unwrap_or_else(|| now + Duration::from_secs(86_400))
    }

    fn join_or_lead(&self, state: &mut State, key: &Key, owner: &str) -> Step<'_> {
        if let Some(flight) = state.flights.get(key) {
            return Step::Joined(Arc::clone(flight));
        }
        if state.flights.len() >= self.inner.policy.max_in_flight {
            return Step::Busy;
        }
        if !owner.is_empty() {
            let leading = state.owners.entry(owner.to_string()).or_insert(0);
            if *leading >= self.inner.policy.max_in_flight_per_owner {
                return Step::Busy;
            }
            *leading += 1;
        }
        let flight = Arc::new(Flight::default());
        state.flights.insert(key.clone(), Arc::clone(&flight));
        Step::Lead(Lead {
            fetcher: self,
            key: key.clone(),
            flight,
            finished: false,
            refresh: false,
            owner: owner.to_string(),
        })
    }

    /// Fetches as the leader, then caches and hands the outcome to every
    /// caller waiting for it.
    fn run(&self, mut lead: Lead<'_>, target: &Target, limits: &Limits) -> Result<Arc<Document>, FetchError> {
        let fetched = self.fetch(target, limits, self.deadline());
        let outcome = {
            let mut state = self.lock();
            let now = self.inner.clock.now();
            let outcome = state.cache.store(lead.key.clone(), fetched, now, &self.inner.policy);
            if lead.refresh {
                state.cache.note_refresh(&lead.key, now);
            }
            lead.leave(&mut state);
            outcome
        };
        lead.flight.complete(Outcome::Done(outcome.clone()));
        lead.finished = true;
        outcome
    }

    /// One fetch: each hop's URL checked and its host resolved and checked
    /// before connecting, redirects followed within the bounds, all by
    /// `deadline`.
    fn fetch(&self, first: &Target, limits: &Limits, deadline: Instant) -> Result<Fetched, FetchError> {
        let policy = &self.inner.policy;
        let mut target = first.clone();
        let mut redirects: u8 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FetchError::TimedOut);
            }
            let addrs = target::admit(&target, policy.allow_loopback_http, &*self.inner.resolver, remaining)?;
            match self.inner.client.exchange(&target, &addrs, deadline, limits, Send::Get)? {
                Answer::Document(fetched) => return Ok(fetched),
                Answer::Accepted => return Err(FetchError::Status(200)),
                Answer::Redirect(location) => {
                    if !limits.follow_redirects {
                        return Err(FetchError::RedirectNotAllowed);
                    }
                    if redirects >= policy.max_redirects {
                        return Err(FetchError::TooManyRedirects);
                    }
                    redirects += 1;
                    let next = target.url.join(&location).map_err(|_| FetchError::BadRedirect)?;
                    target = target::check(next)?;
                }
            }
        }
    }
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.inner.policy)
            .field("resolver", &self.inner.resolver)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

enum Step<'a> {
    Lead(Lead<'a>),
    Joined(Arc<Flight>),
    Busy,
}

/// The right, and the duty, to fetch a key: on every way out the flight
/// leaves the table and its waiters wake.
struct Lead<'a> {
    fetcher: &'a Fetcher,
    key: Key,
    flight: Arc<Flight>,
    finished: bool,
    /// Whether this fetch is a refresh, which the rate limit counts.
    refresh: bool,
    /// On whose behalf it fetches ("" for no one in particular).
    owner: String,
}

impl Lead<'_> {
    fn leave(&self, state: &mut State) {
        if state.flights.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
            state.flights.remove(&self.key);
            if let Some(leading) = state.owners.get_mut(&self.owner) {
                *leading = leading.saturating_sub(1);
                if *leading == 0 {
                    state.owners.remove(&self.owner);
                }
            }
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.leave(&mut self.fetcher.lock());
            self.flight.complete(Outcome::Abandoned);
        }
    }
}

impl Flight {
    fn complete(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        self.done.notify_all();
    }

    /// The flight's outcome, or `None` if `until` passes first.
    fn wait(&self, until: Instant) -> Option<Outcome> {
        let mut outcome = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(done) = &*outcome {
                return Some(done.clone());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            outcome = self.done.wait_timeout(outcome, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}
