//! Security events pushed to the receivers a realm lists
//! (`event_receivers`): when a client is disabled, enabled again or
//! deleted, by an admin, its owner or housekeeping (RISC account events
//! about the client), and when a grant's refresh token family is revoked
//! because a rotated refresh token came back (CAEP `session-revoked`,
//! about the client, the user and the grant), each receiver is sent a
//! Security Event Token (RFC 8417), signed with the realm's key, by push
//! delivery (RFC 8935).
//!
//! Nothing is lost: events are read from the realm's audit log, which the
//! change itself writes in its commit, and each receiver has a cursor in
//! the store, moved only past what it acknowledged (any `2xx`; a `400`
//! says the event will never be taken, and it is skipped with a warning).
//! A receiver that fails is tried again after 1, 2, 4, ... seconds, up to
//! five minutes apart, for as long as it fails, with its events in order.
//! A receiver listed anew starts with the events after the change that
//! listed it; one listed again resumes where it stopped.
//!
//! Delivery is at least once: a SET's `jti` names its audit entry, the
//! same on every try, so a receiver drops what it has seen. One replica
//! delivers (a lease); the one after it may send again what was sent in
//! the last half minute. The cursor stays that far behind, because
//! PostgreSQL numbers an entry before its commit, so an entry with a
//! smaller number may still appear for a moment.
//!
//! Each realm's deliveries run on a thread of their own, at most
//! [`MAX_REALMS_AT_ONCE`] at a time, each request under the fetcher's
//! bounds and the realm's share of its slots: a receiver that hangs delays
//! only its realm's events. Families revoked otherwise (a client revoking
//! its own token, consent withdrawn, a user disabled, a reused
//! authorization code) are not events.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth_core::ports::AuditEntry;
use agentauth_fetch::{FetchError, Limits};
use serde_json::{Value, json};

use crate::Service;
use crate::realm::RealmRuntime;

/// The lease of the replica that delivers.
const LEASE: &str = "event-delivery";
const LEASE_SECONDS: i64 = 15;
/// Audit entries read per receiver and round.
const PAGE: i64 = 100;
/// How far behind the newest entries a cursor stays, seconds.
const SETTLE_SECONDS: i64 = 30;
/// The longest wait between two tries of a failing receiver.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The most realms whose events are being delivered at once.
pub const MAX_REALMS_AT_ONCE: usize = 16;
/// What a receiver's answer may be: its body is not read.
const ANSWER: Limits = Limits { max_bytes: 16 * 1024, follow_redirects: false, require_json_content_type: false };

/// RISC event types (OpenID RISC Event Types 1.0), for clients.
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
pub const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";

/// CAEP's event type (OpenID CAEP 1.0) for a grant ended.
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// The `typ` of a SET (RFC 8417 §2.3).
pub const SET_TYPE: &str = "secevent+jwt";

/// Where each receiver's delivery stands in this process.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    receivers: Mutex<HashMap<(String, String), Receiver>>,
    /// Realms whose delivery thread is running.
    running: Mutex<HashSet<String>>,
}

#[derive(Debug, Default)]
struct Receiver {
    /// Entries past the stored cursor already acknowledged (or skipped).
    done: BTreeSet<i64>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// The event an audit entry of `realm` is, if it is one: its type, its
/// subject (RFC 9493 `sub_id`) and its payload.
fn event_of(realm: &RealmRuntime, entry: &AuditEntry) -> Option<(&'static str, Value, Value)> {
    let detail: Value = serde_json::from_str(entry.detail.as_deref()?).ok()?;
    let client_id = detail.get("client_id")?.as_str()?;
    let kind = match entry.action.as_str() {
        "disable-client" | "disable-unused-agent" => ACCOUNT_DISABLED,
        "enable-client" => ACCOUNT_ENABLED,
        "delete-client" | "delete-reaped-agent" => ACCOUNT_PURGED,
        crate::grant::refresh_token::REVOKE_FAMILY => {
            // SSF's complex subject: the client, the user (this realm's
            // `sub`) and the grant, as a session.
            let mut subject = json!({"format": "complex", "application": {"format": "opaque", "id": client_id}});
            let user = detail.get("sub").and_then(Value::as_str).filter(|s| agentauth_core::user::is_user_subject(s));
            if let Some(sub) = user {
                subject["user"] = json!({"format": "iss_sub", "iss": realm.issuer, "sub": sub});
            }
            if let Some(family) = detail.get("family").and_then(Value::as_str) {
                subject["session"] = json!({"format": "opaque", "id": family});
            }
            let payload = json!({
                "event_timestamp": entry.at,
                "initiating_entity": "policy",
                "reason_admin": {"en": "a refresh token was used again after its rotation; the grant is revoked"},
            });
            return Some((SESSION_REVOKED, subject, payload));
        }
        _ => return None,
    };
    Some((kind, json!({"format": "opaque", "id": client_id}), json!({})))
}

/// The SET for audit entry `id` of `realm`, to `receiver`.
fn security_event(realm: &RealmRuntime, receiver: &str, id: i64, entry: &AuditEntry, now: i64) -> Option<String> {
    let (kind, subject, payload) = event_of(realm, entry)?;
    let claims = json!({
        "iss": realm.issuer,
        "aud": receiver,
        "iat": now,
        "jti": format!("audit-{id}"),
        "toe": entry.at,
        "sub_id": subject,
        "events": { kind: payload },
    });
    match agentauth_jose::sign(&realm.signing_key, SET_TYPE, &claims) {
        Ok(set) => Some(set),
        Err(e) => {
            tracing::error!(realm = %realm.name, "signing a security event: {e}");
            None
        }
    }
}

impl Service {
    /// Marks where each receiver in `receivers` that has no cursor yet
    /// starts: the realm's audit as it is now, before the settings that
    /// list it are stored, so no event after them is missed. A receiver
    /// listed again resumes where it stopped.
    pub(crate) fn start_event_receivers(&self, realm: &str, receivers: &[String]) -> agentauth_core::ports::Result<()> {
        for receiver in receivers {
            if self.store.event_cursor(realm, receiver)?.is_none() {
                let latest = self.store.latest_audit_id(realm)?;
                self.store.set_event_cursor(realm, receiver, latest)?;
            }
        }
        Ok(())
    }

    /// Starts delivering every realm's due events, each realm on a thread
    /// of its own, if this replica holds the delivery lease. Blocking;
    /// meant to be called every second.
    pub fn deliver_events(self: &Arc<Self>) {
        let now = self.now();
        let names = match self.store.realm_names() {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!("listing realms for event delivery: {e}");
                return;
            }
        };
        let mut due = Vec::new();
        for name in names {
            // A realm not loaded is read, not loaded (loading one makes
            // its first key): only a realm with receivers needs its key.
            let listed = match self.loaded_realm(&name) {
                Some(runtime) => !runtime.settings.event_receivers.is_empty(),
                None => self.realm_settings(&name).is_ok_and(|s| !s.event_receivers.is_empty()),
            };
            if !listed {
                continue;
            }
            match self.realm(&name) {
                Ok(Some(runtime)) => due.push(runtime),
                Ok(None) => {}
                Err(e) => tracing::warn!(realm = %name, "loading a realm for event delivery: {}", e.description),
            }
        }
        if due.is_empty() {
            return;
        }
        match self.store.hold_lease(LEASE, &self.replica, now, LEASE_SECONDS) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!("taking the event delivery lease: {e}");
                return;
            }
        }
        for runtime in due {
            {
                let mut running = self.deliveries.running.lock().unwrap_or_else(|p| p.into_inner());
                if running.len() >= MAX_REALMS_AT_ONCE || !running.insert(runtime.name.clone()) {
                    continue;
                }
            }
            let service = Arc::clone(self);
            let spawned = std::thread::Builder::new().name("agentauth-events".into()).spawn(move || {
                for receiver in &runtime.settings.event_receivers {
                    service.deliver_to(&runtime, receiver);
                }
                service.deliveries.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&runtime.name);
            });
            if let Err(e) = spawned {
                tracing::warn!("starting an event delivery thread: {e}");
                self.deliveries.running.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return;
            }
        }
    }

    /// Sends `receiver` the realm's events after its cursor, in order,
    /// until one fails; moves the cursor past what is settled and done.
    fn deliver_to(&self, realm: &RealmRuntime, receiver: &str) {
        let key = (realm.name.clone(), receiver.to_string());
        let mut state =
            self.deliveries.receivers.lock().unwrap_or_else(|p| p.into_inner()).remove(&key).unwrap_or_default();
        if state.retry_at.is_some_and(|at| Instant::now() < at) {
            self.deliveries.receivers.lock().unwrap_or_else(|p| p.into_inner()).insert(key, state);
            return;
        }
        if let Err(e) = self.deliver_page(realm, receiver, &mut state) {
            tracing::warn!(realm = %realm.name, receiver, "delivering security events: {e}");
        }
        self.deliveries.receivers.lock().unwrap_or_else(|p| p.into_inner()).insert(key, state);
    }

    fn deliver_page(
        &self,
        realm: &RealmRuntime,
        receiver: &str,
        state: &mut Receiver,
    ) -> agentauth_core::ports::Result<()> {
        let cursor = match self.store.event_cursor(&realm.name, receiver)? {
            Some(cursor) => cursor,
            None => {
                // A receiver listed anew: its events start now.
                let latest = self.store.latest_audit_id(&realm.name)?;
                self.store.set_event_cursor(&realm.name, receiver, latest)?;
                latest
            }
        };
        let entries = self.store.audit(&realm.name, cursor, PAGE)?;
        let now = self.now();
        for (id, entry) in &entries {
            if state.done.contains(id) {
                continue;
            }
            let Some(set) = security_event(realm, receiver, *id, entry, now) else {
                state.done.insert(*id);
                continue;
            };
            match self.client_fetcher.post_set_for(&realm.name, receiver, &set, &ANSWER) {
                Ok(()) => {
                    tracing::info!(realm = %realm.name, receiver, entry = id, "security event delivered");
                    state.done.insert(*id);
                    state.failures = 0;
                    state.retry_at = None;
                }
                Err(FetchError::Status(400)) => {
                    tracing::warn!(realm = %realm.name, receiver, entry = id, "security event refused as invalid; skipped");
                    state.done.insert(*id);
                }
                Err(e) => {
                    state.failures = state.failures.saturating_add(1);
                    let wait = Duration::from_secs(1u64 << state.failures.min(9)).min(MAX_BACKOFF);
                    state.retry_at = Some(Instant::now() + wait);
                    tracing::warn!(
                        realm = %realm.name, receiver, entry = id, failures = state.failures,
                        "security event not delivered, tried again in {wait:?}: {e}"
                    );
                    break;
                }
            }
        }
        // The cursor moves over what is done and old enough that nothing
        // numbered before it can still commit.
        let settled = now - SETTLE_SECONDS;
        let upto = entries
            .iter()
            .take_while(|(id, entry)| state.done.contains(id) && entry.at <= settled)
            .last()
            .map(|(id, _)| *id);
        if let Some(upto) = upto {
            self.store.set_event_cursor(&realm.name, receiver, upto)?;
            state.done.retain(|id| *id > upto);
        }
        Ok(())
    }
}
