//! The audit of decisions: every token issued or refused, every
//! registration, update and deletion, with who asked, what for, which
//! plugins decided (name, version, sha256) and the outcome.
//!
//! A decision is drafted while its request runs: [`Service::decision`]
//! opens a draft on the current thread, the steps of the request note what
//! they learn in it (the client, the grant, the token minted, each plugin
//! that ran), and its outcome closes it. Drafts are appended, encoded, to
//! a queue a writer thread stores in batches, so a token costs no commit
//! and no allocation of its own; a request never waits for the audit. If the writer falls behind by
//! [`QUEUE`] decisions, further ones are dropped and counted, and a warning
//! says how many: the audit never slows or fails what it records. A crash
//! loses at most the batch in flight.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use agentauth_core::ports::{Decision, DecisionQuery, PluginUse, Storage};
use agentauth_core::{AccessTokenClaims, OAuthError};
use agentauth_plugin_host::Plugin;

use crate::Service;
use crate::admin::AdminError;
use crate::realm::RealmRuntime;

/// Decisions waiting for the writer, at most.
const QUEUE: usize = 16_384;
/// Decisions one batch stores, at most.
const BATCH: usize = 2_000;
/// How long a decision may wait for its batch.
const LINGER: Duration = Duration::from_millis(200);

thread_local! {
    static DRAFT: RefCell<Option<Decision>> = const { RefCell::new(None) };
}

/// Notes something about the decision being drafted on this thread, if
/// one is.
pub(crate) fn note(f: impl FnOnce(&mut Decision)) {
    DRAFT.with(|draft| {
        if let Some(decision) = draft.borrow_mut().as_mut() {
            f(decision);
        }
    });
}

/// Notes that `plugin` ran, and how it answered.
pub(crate) fn plugin_ran<T, E>(plugin: &Plugin, answer: &Result<T, E>, how: impl FnOnce(&E) -> &'static str) {
    note(|d| {
        let outcome = match answer {
            Ok(_) => "allowed",
            Err(e) => how(e),
        };
        let used = PluginUse {
            name: plugin.name().to_string(),
            version: plugin.version(),
            sha256: plugin.sha256().to_string(),
            outcome: outcome.to_string(),
        };
        d.plugins.push(used);
    });
}

/// Notes the access token minted: its subject, actors, scope, audience,
/// kind and id.
pub(crate) fn minted(claims: &AccessTokenClaims, jwt: bool) {
    note(|d| {
        d.subject = Some(claims.sub.clone());
        d.scope = Some(claims.scope.clone());
        d.audience = vec![claims.aud.clone()];
        d.actors = claims.act.as_ref().map(|act| act.chain()).unwrap_or_default();
        d.token_kind = Some(if jwt { "jwt" } else { "opaque" }.to_string());
        d.jti = Some(claims.jti.clone());
    });
}

/// Takes the draft off the thread when its decision ends, however it ends.
struct Drafting;

impl Drafting {
    fn open(decision: Decision) -> Self {
        DRAFT.with(|draft| *draft.borrow_mut() = Some(decision));
        Self
    }

    fn close(self) -> Option<Decision> {
        DRAFT.with(|draft| draft.borrow_mut().take())
    }
}

impl Drop for Drafting {
    fn drop(&mut self) {
        DRAFT.with(|draft| draft.borrow_mut().take());
    }
}

/// Decisions waiting for the writer, encoded one after another into one
/// buffer: a worker appends a record (a copy, no allocation once the
/// buffer has grown), the writer takes the whole buffer and hands back an
/// empty one. A decision is a score of small strings; boxed and freed on
/// the writer's thread, each of them cost a lock on the worker's
/// allocator arena, which is where the audit's cost was.
#[derive(Debug, Default)]
struct Queue {
    records: Vec<u8>,
    count: usize,
    /// Flushes asked for, and done.
    flush_asked: u64,
    flushed: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer: a full batch, a flush, or closing.
    wake: Condvar,
    /// Wakes those waiting for a flush.
    done: Condvar,
    dropped: AtomicU64,
}

/// The writer of decisions: a thread storing them in batches.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Writer {
    /// Starts the writer thread over `store`. Without a thread (the
    /// system refused one), decisions are dropped and counted.
    pub(crate) fn start(store: Arc<dyn Storage>) -> Self {
        let shared = Arc::new(Shared::default());
        let writing = Arc::clone(&shared);
        let started =
            std::thread::Builder::new().name("agentauth-decisions".into()).spawn(move || write(&*store, &writing));
        let thread = match started {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::error!("cannot start the decision writer: {e}; decisions will not be audited");
                lock(&shared.queue).closed = true;
                None
            }
        };
        Self { shared, thread: Mutex::new(thread) }
    }

    fn send(&self, realm: &str, decision: &Decision) {
        let mut queue = lock(&self.shared.queue);
        if queue.closed || queue.count >= QUEUE {
            drop(queue);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        record::encode(&mut queue.records, realm, decision);
        queue.count += 1;
        if queue.count == BATCH {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every decision sent so far is stored (or dropped).
    pub(crate) fn flush(&self) {
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            return;
        }
        queue.flush_asked += 1;
        let asked = queue.flush_asked;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + Duration::from_secs(30);
        while queue.flushed < asked && !queue.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            queue = self.shared.done.wait_timeout(queue, left).map_or_else(|p| p.into_inner().0, |r| r.0);
        }
    }

    /// Decisions dropped so far because the writer was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    /// Stores what is queued, then stops the thread.
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: takes what is queued every [`LINGER`] (or as soon
/// as a batch is full, or a flush is asked), stores it a batch per commit,
/// until closed.
fn write(store: &dyn Storage, shared: &Shared) {
    let mut spare: Vec<u8> = Vec::new();
    let mut batch: Vec<(String, Decision)> = Vec::with_capacity(BATCH);
    let mut reported = 0;
    loop {
        let (mut records, flush, closed) = {
            let mut queue = lock(&shared.queue);
            let deadline = Instant::now() + LINGER;
            while queue.count < BATCH && queue.flush_asked == queue.flushed && !queue.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                queue = shared.wake.wait_timeout(queue, left).map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            queue.count = 0;
            (std::mem::replace(&mut queue.records, std::mem::take(&mut spare)), queue.flush_asked, queue.closed)
        };
        let mut reader = record::Reader::new(&records);
        loop {
            match reader.next() {
                Some(Ok(decision)) => batch.push(decision),
                Some(Err(())) => {
                    tracing::error!("an audited decision could not be read back; the rest of its batch is dropped");
                    break;
                }
                None => {}
            }
            if batch.len() == BATCH || (reader.done() && !batch.is_empty()) {
                if let Err(e) = store.record_decisions(&batch) {
                    shared.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(decisions = batch.len(), "recording decisions: {e}");
                }
                batch.clear();
            }
            if reader.done() {
                break;
            }
        }
        records.clear();
        spare = records;
        {
            let mut queue = lock(&shared.queue);
            queue.flushed = flush;
        }
        shared.done.notify_all();
        let now_dropped = shared.dropped.load(Ordering::Relaxed);
        if now_dropped > reported {
            tracing::warn!(dropped = now_dropped - reported, "decisions not audited: the writer fell behind");
            reported = now_dropped;
        }
        if closed && lock(&shared.queue).count == 0 {
            return;
        }
    }
}

/// A decision as a record of the queue: its realm, then each field,
/// strings with their length before them.
mod record {
    use agentauth_core::ports::{Decision, PluginUse};

    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn maybe(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                out.push(1);
                text(out, s);
            }
            None => out.push(0),
        }
    }

    fn list(out: &mut Vec<u8>, items: &[String]) {
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for item in items {
            text(out, item);
        }
    }

    pub(super) fn encode(out: &mut Vec<u8>, realm: &str, d: &Decision) {
        text(out, realm);
        out.extend_from_slice(&d.at.to_le_bytes());
        text(out, &d.request_id);
        text(out, &d.event);
        maybe(out, d.client_id.as_deref());
        maybe(out, d.grant.as_deref());
        maybe(out, d.subject.as_deref());
        list(out, &d.actors);
        maybe(out, d.scope.as_deref());
        list(out, &d.audience);
        maybe(out, d.token_kind.as_deref());
        maybe(out, d.jti.as_deref());
        out.extend_from_slice(&(d.plugins.len() as u32).to_le_bytes());
        for p in &d.plugins {
            text(out, &p.name);
            out.extend_from_slice(&p.version.to_le_bytes());
            text(out, &p.sha256);
            text(out, &p.outcome);
        }
        text(out, &d.outcome);
        maybe(out, d.error.as_deref());
    }

    /// Reads records back, in order.
    pub(super) struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub(super) fn new(bytes: &'a [u8]) -> Self {
            Self { bytes }
        }

        pub(super) fn done(&self) -> bool {
            self.bytes.is_empty()
        }

        /// The next record; an error (and the end) if it does not read.
        pub(super) fn next(&mut self) -> Option<Result<(String, Decision), ()>> {
            if self.bytes.is_empty() {
                return None;
            }
            let read = self.read();
            if read.is_err() {
                self.bytes = &[];
            }
            Some(read)
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], ()> {
            if self.bytes.len() < n {
                return Err(());
            }
            let (head, rest) = self.bytes.split_at(n);
            self.bytes = rest;
            Ok(head)
        }

        fn u32(&mut self) -> Result<usize, ()> {
            let bytes: [u8; 4] = self.take(4)?.try_into().map_err(|_| ())?;
            Ok(u32::from_le_bytes(bytes) as usize)
        }

        fn i64(&mut self) -> Result<i64, ()> {
            let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| ())?;
            Ok(i64::from_le_bytes(bytes))
        }

        fn text(&mut self) -> Result<String, ()> {
            let n = self.u32()?;
            String::from_utf8(self.take(n)?.to_vec()).map_err(|_| ())
        }

        fn maybe(&mut self) -> Result<Option<String>, ()> {
            match self.take(1)? {
                [0] => Ok(None),
                [1] => self.text().map(Some),
                _ => Err(()),
            }
        }

        fn list(&mut self) -> Result<Vec<String>, ()> {
            let n = self.u32()?;
            (0..n).map(|_| self.text()).collect()
        }

        fn read(&mut self) -> Result<(String, Decision), ()> {
            let realm = self.text()?;
            let mut d =
                Decision { at: self.i64()?, request_id: self.text()?, event: self.text()?, ..Decision::default() };
            d.client_id = self.maybe()?;
            d.grant = self.maybe()?;
            d.subject = self.maybe()?;
            d.actors = self.list()?;
            d.scope = self.maybe()?;
            d.audience = self.list()?;
            d.token_kind = self.maybe()?;
            d.jti = self.maybe()?;
            let plugins = self.u32()?;
            for _ in 0..plugins {
                d.plugins.push(PluginUse {
                    name: self.text()?,
                    version: self.i64()?,
                    sha256: self.text()?,
                    outcome: self.text()?,
                });
            }
            d.outcome = self.text()?;
            d.error = self.maybe()?;
            Ok((realm, d))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_decision_reads_back_as_it_was_written_and_garbage_reads_as_an_error() {
            let full = Decision {
                at: 7,
                request_id: "r".into(),
                event: "token".into(),
                client_id: Some("c".into()),
                grant: None,
                subject: Some("s".into()),
                actors: vec!["a2".into(), "a1".into()],
                scope: Some("read write".into()),
                audience: vec!["https://rs".into()],
                token_kind: Some("jwt".into()),
                jti: None,
                plugins: vec![PluginUse {
                    name: "p".into(),
                    version: 3,
                    sha256: "ab".into(),
                    outcome: "allowed".into(),
                }],
                outcome: "refused".into(),
                error: Some("invalid_scope".into()),
            };
            let mut bytes = Vec::new();
            encode(&mut bytes, "alpha", &full);
            encode(&mut bytes, "beta", &Decision::default());
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.next(), Some(Ok(("alpha".to_string(), full))));
            assert_eq!(reader.next(), Some(Ok(("beta".to_string(), Decision::default()))));
            assert_eq!(reader.next(), None);
            let mut cut = Reader::new(&bytes[..bytes.len() - 3]);
            assert!(cut.next().is_some_and(|r| r.is_ok()));
            assert_eq!(cut.next(), Some(Err(())));
            assert!(cut.done(), "nothing is read past an error");
        }
    }
}

impl Service {
    /// Runs `decide`, one decision of `event` (`token`, `register`,
    /// `update`, `delete`) for request `request_id` in `realm`, and audits
    /// it with its outcome: `allowed`, or `refused` with the OAuth error
    /// code answered. What the steps noted on the way (client, grant,
    /// token, plugins) goes with it.
    pub fn decision<T>(
        &self,
        realm: &RealmRuntime,
        event: &str,
        request_id: &str,
        decide: impl FnOnce() -> Result<T, OAuthError>,
    ) -> Result<T, OAuthError> {
        let draft = Decision {
            at: self.now(),
            request_id: request_id.to_string(),
            event: event.to_string(),
            ..Decision::default()
        };
        let drafting = Drafting::open(draft);
        let outcome = decide();
        if let Some(mut decision) = drafting.close() {
            match &outcome {
                Ok(_) => decision.outcome = "allowed".into(),
                Err(e) => {
                    decision.outcome = "refused".into();
                    decision.error = Some(e.code.as_str().to_string());
                }
            }
            self.decisions.send(&realm.name, &decision);
        }
        outcome
    }

    /// Stores every decision audited so far: for tests and shutdown.
    pub fn flush_decisions(&self) {
        self.decisions.flush();
    }

    /// Decisions not audited because the writer fell behind, since start.
    pub fn decisions_dropped(&self) -> u64 {
        self.decisions.dropped()
    }

    /// The realm's audited decisions matching `query` (at most 1000).
    pub fn decisions(&self, realm: &str, query: &DecisionQuery) -> Result<Vec<(i64, Decision)>, AdminError> {
        if self.store.realm(realm)?.is_none() {
            return Err(AdminError::NotFound(format!("no realm {realm}")));
        }
        let query = DecisionQuery { limit: query.limit.clamp(1, 1000), ..query.clone() };
        Ok(self.store.decisions(realm, &query)?)
    }
}
