//! The housekeeping schedule: signing keys rotated when due, and expired
//! rows swept. Run every minute by every replica, done by one: the holder
//! of a lease in the store, which another replica takes over once it runs
//! out. Each run is independent, and a failure is logged and retried next
//! time.

use crate::Service;
use crate::admin::AdminError;

/// The lease whose holder runs the schedule.
const LEASE: &str = "housekeeping";
/// How long a holder keeps the lease without renewing it: two and a half
/// rounds, so a replica that stopped hands over within about three.
const LEASE_SECONDS: i64 = 150;

impl Service {
    /// One round of housekeeping at `now`, if this replica holds the
    /// housekeeping lease: rotates the signing keys that are due
    /// (`key_rotation_days`) and deletes expired rows (authorization codes
    /// among them). Blocking.
    pub fn maintain(&self, now: i64) {
        // Every replica writes the uses it noted; one does the rest.
        self.flush_client_uses();
        match self.store.hold_lease(LEASE, &self.replica, now, LEASE_SECONDS) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("another replica holds the housekeeping lease");
                return;
            }
            Err(e) => {
                tracing::warn!("taking the housekeeping lease: {e}");
                return;
            }
        }
        let rotated = self.rotate_due_keys(now);
        if !rotated.is_empty() {
            tracing::info!(?rotated, "rotated signing keys on schedule");
        }
        let (disabled, deleted) = self.reap_agents(now);
        if disabled + deleted > 0 {
            tracing::info!(disabled, deleted, "reaped agents");
        }
        let swept = self.sweep_decisions(now);
        if swept > 0 {
            tracing::debug!(swept, "swept decisions past their realm's retention");
        }
        match self.store.sweep(now) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "swept expired rows"),
            Err(e) => tracing::warn!("sweeping expired rows: {e}"),
        }
        // A used code is kept until it expires, so that a replay finds what
        // its redemption issued; after that it can no longer matter.
        match self.store.sweep_codes(now) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "swept expired authorization codes"),
            Err(e) => tracing::warn!("sweeping authorization codes: {e}"),
        }
    }

    /// Rotates the signing key of every realm whose newest key is older
    /// than its `key_rotation_days`. Returns the realms rotated.
    pub fn rotate_due_keys(&self, now: i64) -> Vec<String> {
        let realms = match self.store.realm_names() {
            Ok(realms) => realms,
            Err(e) => {
                tracing::warn!("scheduled key rotation: {e}");
                return Vec::new();
            }
        };
        let mut rotated = Vec::new();
        for realm in realms {
            // One realm that cannot be rotated (unreadable settings, a busy
            // database) must not hold back the realms after it.
            match self.rotate_if_due(&realm, now) {
                Ok(true) => rotated.push(realm),
                Ok(false) => {}
                Err(e) => tracing::warn!(realm, "scheduled key rotation: {e}"),
            }
        }
        rotated
    }

    /// Rotates `realm`'s signing key if its newest is `key_rotation_days`
    /// old.
    fn rotate_if_due(&self, realm: &str, now: i64) -> Result<bool, AdminError> {
        let settings = self.realm_settings(realm)?;
        if settings.key_rotation_days == 0 {
            return Ok(false);
        }
        let keys = self.store.keys(realm)?;
        // A realm that has not signed yet makes its first key on first use.
        let Some(newest) = keys.iter().map(|k| k.created_at).max() else {
            return Ok(false);
        };
        if newest + i64::from(settings.key_rotation_days) * 86_400 > now {
            return Ok(false);
        }
        self.rotate_signing_key(realm, None, "scheduler", now)?;
        self.metrics.key_rotated(realm, crate::telemetry::Rotation::Scheduled);
        Ok(true)
    }

    /// Deletes each realm's audited decisions older than its
    /// `decision_retention_days`. Returns how many went.
    fn sweep_decisions(&self, now: i64) -> usize {
        let realms = match self.store.realm_names() {
            Ok(realms) => realms,
            Err(e) => {
                tracing::warn!("sweeping decisions: {e}");
                return 0;
            }
        };
        let mut swept = 0;
        for realm in realms {
            let before = match self.realm_settings(&realm) {
                Ok(settings) => now.saturating_sub(i64::from(settings.decision_retention_days) * 86_400),
                Err(e) => {
                    tracing::warn!(realm, "sweeping decisions: {e}");
                    continue;
                }
            };
            match self.store.sweep_decisions(&realm, before) {
                Ok(n) => swept += n,
                Err(e) => tracing::warn!(realm, "sweeping decisions: {e}"),
            }
        }
        swept
    }
}
