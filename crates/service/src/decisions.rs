//! The audit of decisions: every token issued or refused, every
//! registration, update and deletion, with who asked, what for, which
//! plugins decided (name, version, sha256) and the outcome.
//!
//! A decision is drafted while its request runs: [`Service::decision`]
//! opens a draft on the current thread, the steps of the request note what
//! they learn in it (the client, the grant, the token minted, each plugin
//! that ran), and its outcome closes it. Drafts go to a writer thread that
//! stores them in batches, so a token costs no commit of its own; a
//! request never waits for the audit. If the writer falls behind by
//! [`QUEUE`] decisions, further ones are dropped and counted, and a warning
//! says how many: the audit never slows or fails what it records. A crash
//! loses at most the batch in flight.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
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

/// What the writer thread is sent.
enum Message {
    Record(String, Box<Decision>),
    /// Store everything sent before, then answer.
    Flush(SyncSender<()>),
}

/// The writer of decisions: a thread storing them in batches.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: Mutex<Option<SyncSender<Message>>>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread over `store`. Without a thread (the
    /// system refused one), decisions are dropped and counted.
    pub(crate) fn start(store: Arc<dyn Storage>) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        let started = std::thread::Builder::new()
            .name("agentauth-decisions".into())
            .spawn(move || write(&*store, &receiver, &counted));
        let sender = match started {
            Ok(_) => Some(sender),
            Err(e) => {
                tracing::error!("cannot start the decision writer: {e}; decisions will not be audited");
                None
            }
        };
        Self { sender: Mutex::new(sender), dropped }
    }

    fn send(&self, realm: &str, decision: Decision) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = sender.as_ref() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match sender.try_send(Message::Record(realm.to_string(), Box::new(decision))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every decision sent so far is stored (or dropped).
    pub(crate) fn flush(&self) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(sender) = sender else { return };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Decisions dropped so far because the writer was behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread: batches of what arrives, stored one commit each,
/// until every sender is gone.
fn write(store: &dyn Storage, receiver: &Receiver<Message>, dropped: &AtomicU64) {
    let mut batch: Vec<(String, Decision)> = Vec::new();
    let mut waiting: Vec<SyncSender<()>> = Vec::new();
    let mut reported = 0;
    loop {
        let deadline = Instant::now() + LINGER;
        let mut closed = false;
        while batch.len() < BATCH && waiting.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(wait) {
                Ok(Message::Record(realm, decision)) => batch.push((realm, *decision)),
                Ok(Message::Flush(done)) => waiting.push(done),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.record_decisions(&batch) {
                dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::warn!(decisions = batch.len(), "recording decisions: {e}");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped > reported {
            tracing::warn!(dropped = now_dropped - reported, "decisions not audited: the writer fell behind");
            reported = now_dropped;
        }
        if closed {
            return;
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
            self.decisions.send(&realm.name, decision);
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
