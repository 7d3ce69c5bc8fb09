//! Agents' lifecycle over time: when each client was last used, and the
//! housekeeping that disables agents left unused and deletes them after a
//! grace period.
//!
//! Uses are noted in memory at each authentication (a map insert, no
//! write) and written in one batch per realm once a minute by every
//! replica ([`Service::flush_client_uses`]), so `last_used_at` lags by up
//! to a minute and costs no write per token.

use std::collections::HashMap;
use std::sync::Mutex;

use agentauth_core::ports::{ClientFilter, ClientState};

use crate::Service;
use crate::admin::audit;

/// Clients whose use is noted per realm before older notes are written
/// out early: bounds the memory a flood of clients can take between two
/// flushes.
const MAX_NOTED: usize = 100_000;

/// How many clients one housekeeping round disables or deletes per realm
/// and per kind at most: a backlog is worked off over several rounds.
const REAP_BATCH: i64 = 500;

const DAY: i64 = 86_400;

/// The clients used since the last flush, per realm: the latest second
/// each authenticated.
#[derive(Debug, Default)]
pub(crate) struct Uses {
    noted: Mutex<HashMap<String, HashMap<String, i64>>>,
    count: std::sync::atomic::AtomicUsize,
}

impl Uses {
    /// Notes that `client_id` of `realm` authenticated at `now`.
    pub(crate) fn note(&self, realm: &str, client_id: &str, now: i64) {
        if self.count.load(std::sync::atomic::Ordering::Relaxed) >= MAX_NOTED {
            // Written out at the next flush; later uses are noted again then.
            return;
        }
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        let realm_uses = match noted.get_mut(realm) {
            Some(uses) => uses,
            None => noted.entry(realm.to_string()).or_default(),
        };
        match realm_uses.get_mut(client_id) {
            Some(at) => *at = (*at).max(now),
            None => {
                realm_uses.insert(client_id.to_string(), now);
                self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn take(&self) -> HashMap<String, HashMap<String, i64>> {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        self.count.store(0, std::sync::atomic::Ordering::Relaxed);
        std::mem::take(&mut *noted)
    }
}

impl Service {
    /// Writes the uses noted since the last flush: each client's
    /// `last_used_at`. Run by every replica each round, lease or not.
    pub fn flush_client_uses(&self) {
        for (realm, uses) in self.client_uses.take() {
            let used: Vec<(String, i64)> = uses.into_iter().collect();
            if let Err(e) = self.store.touch_clients(&realm, &used) {
                tracing::warn!(realm, clients = used.len(), "recording when clients were last used: {e}");
            }
        }
    }

    /// One round of reaping in every realm that asks for it: agents unused
    /// for `disable_unused_agents_after_days` are disabled, and agents
    /// disabled or expired for `delete_disabled_agents_after_days` are
    /// deleted, each change audited as the housekeeping's. Returns how
    /// many were disabled and deleted.
    pub(crate) fn reap_agents(&self, now: i64) -> (usize, usize) {
        let realms = match self.store.realm_names() {
            Ok(realms) => realms,
            Err(e) => {
                tracing::warn!("reaping agents: {e}");
                return (0, 0);
            }
        };
        let (mut disabled, mut deleted) = (0, 0);
        for realm in realms {
            let settings = match self.realm_settings(&realm) {
                Ok(settings) => settings,
                Err(e) => {
                    tracing::warn!(realm, "reaping agents: {e}");
                    continue;
                }
            };
            let unused_days = i64::from(settings.disable_unused_agents_after_days);
            if unused_days > 0 {
                let filter = ClientFilter {
                    state: Some(ClientState::Active),
                    agents_only: true,
                    unused_since: Some(now - unused_days * DAY),
                    ..ClientFilter::default()
                };
                disabled += self.reap(&realm, &filter, now, "disable-unused-agent", |entry, id| {
                    self.store.set_client_state(&realm, id, ClientState::Disabled, now, entry)
                });
            }
            let grace_days = i64::from(settings.delete_disabled_agents_after_days);
            if grace_days > 0 {
                let cutoff = now - grace_days * DAY;
                for filter in [
                    ClientFilter { agents_only: true, disabled_before: Some(cutoff), ..ClientFilter::default() },
                    ClientFilter { agents_only: true, expired_by: Some(cutoff), ..ClientFilter::default() },
                ] {
                    deleted += self.reap(&realm, &filter, now, "delete-reaped-agent", |entry, id| {
                        self.store.remove_client(&realm, id, entry)
                    });
                }
            }
        }
        (disabled, deleted)
    }

    /// Applies `change` to up to [`REAP_BATCH`] clients of `realm`
    /// matching `filter`, audited as `action`; how many it changed.
    fn reap(
        &self,
        realm: &str,
        filter: &ClientFilter,
        now: i64,
        action: &str,
        change: impl Fn(&agentauth_core::ports::AuditEntry, &str) -> agentauth_core::ports::Result<bool>,
    ) -> usize {
        let found = match self.store.clients(realm, filter, "", REAP_BATCH) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(realm, action, "reaping agents: {e}");
                return 0;
            }
        };
        let mut changed = 0;
        for row in found {
            let id = row.client.client_id.as_str();
            let detail = serde_json::json!({ "client_id": id, "last_used_at": row.last_used_at }).to_string();
            let entry = audit(now, "housekeeping", action, None, Some(detail));
            match change(&entry, id) {
                Ok(true) => {
                    changed += 1;
                    tracing::info!(realm, client_id = id, action, "agent reaped");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(realm, client_id = id, action, "reaping an agent: {e}"),
            }
        }
        changed
    }
}
