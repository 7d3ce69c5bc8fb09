//! A cache of clients in front of any [`ClientRepository`]: every token
//! request authenticates a client, and most find it here.
//!
//! Correctness rests on one rule: a change made through the cache forgets
//! what it changed and bumps a generation counter, and a read caches its
//! row only if the generation is the one it saw before reading. So a read
//! that raced a change (it read the old row, the change then landed and
//! forgot) cannot put the old row back.
//!
//! Changes the cache does not see are the owner's to report: deleting a
//! realm removes its clients, so whoever deletes one calls
//! [`CachedClients::forget_realm`]. Changes made by another process reach
//! the cache through the store's change feed: the store calls
//! [`CachedClients::forget`] for each changed client as it reads the
//! changes ([`super::Coordination::changes_after`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{AuditEntry, ClientFilter, ClientRepository, ClientRow, ClientState, Result};

/// Clients kept in memory by default; past it, the cache starts again
/// empty.
const DEFAULT_CAPACITY: usize = 50_000;

/// A [`ClientRepository`] that remembers the clients read through it.
#[derive(Debug)]
pub struct CachedClients<R> {
    inner: R,
    cache: Mutex<Cache>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Cache {
    rows: HashMap<(String, String), ClientRow>,
    generation: u64,
}

impl<R> CachedClients<R> {
    /// A cache in front of `inner`, of the default size.
    pub fn new(inner: R) -> Self {
        Self::with_capacity(inner, DEFAULT_CAPACITY)
    }

    /// A cache in front of `inner` that keeps at most `capacity` clients.
    pub fn with_capacity(inner: R, capacity: usize) -> Self {
        Self { inner, cache: Mutex::new(Cache::default()), capacity }
    }

    /// The repository behind the cache.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Forgets every cached client of `realm`: to be called once the realm
    /// has been deleted (or its clients changed) other than through the
    /// cache.
    pub fn forget_realm(&self, realm: &str) {
        let mut cache = self.lock();
        cache.generation += 1;
        cache.rows.retain(|(r, _), _| r != realm);
    }

    /// Forgets every cached client: for a follower of another process's
    /// changes that could not read all of them.
    pub fn forget_all(&self) {
        let mut cache = self.lock();
        cache.generation += 1;
        cache.rows.clear();
    }

    /// Forgets one client after a change to it, made through this cache or
    /// by another process.
    pub fn forget(&self, realm: &str, client_id: &str) {
        let mut cache = self.lock();
        cache.generation += 1;
        cache.rows.remove(&(realm.to_string(), client_id.to_string()));
    }

    /// A panic while holding the lock leaves the map usable: at worst a
    /// row is missing, and it is read again.
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<R: ClientRepository> ClientRepository for CachedClients<R> {
    fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool> {
        // A new id was not cached (only rows found are), so nothing to forget.
        self.inner.insert_client(realm, row, max_clients)
    }

    fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool> {
        let updated = self.inner.update_client(realm, row, token_hash);
        // Forgotten whatever the outcome: a failed commit may still have
        // landed for a reader.
        self.forget(realm, &row.client.client_id);
        updated
    }

    fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool> {
        let deleted = self.inner.delete_client(realm, client_id, token_hash);
        self.forget(realm, client_id);
        deleted
    }

    fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let key = (realm.to_string(), client_id.to_string());
        let generation = {
            let cache = self.lock();
            if let Some(row) = cache.rows.get(&key) {
                return Ok(Some(row.clone()));
            }
            cache.generation
        };
        let row = self.inner.client(realm, client_id)?;
        if let Some(row) = &row {
            let mut cache = self.lock();
            // A change since the read above may have made it stale.
            if cache.generation == generation {
                if cache.rows.len() >= self.capacity {
                    cache.rows.clear();
                }
                cache.rows.insert(key, row.clone());
            }
        }
        Ok(row)
    }

    fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool> {
        self.inner.client_exists(realm, client_id)
    }

    fn count_clients(&self, realm: &str) -> Result<u64> {
        self.inner.count_clients(realm)
    }

    fn clients(&self, realm: &str, filter: &ClientFilter, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
        self.inner.clients(realm, filter, after, limit)
    }

    fn touch_clients(&self, realm: &str, used: &[(String, i64)]) -> Result<()> {
        let touched = self.inner.touch_clients(realm, used);
        // Read again when next used, with the new `last_used_at`. (Other
        // replicas' copies keep theirs: listings read past the cache.)
        for (client_id, _) in used {
            self.forget(realm, client_id);
        }
        touched
    }

    fn set_client_state(
        &self,
        realm: &str,
        client_id: &str,
        state: ClientState,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let set = self.inner.set_client_state(realm, client_id, state, at, audit);
        self.forget(realm, client_id);
        set
    }

    fn remove_client(&self, realm: &str, client_id: &str, audit: &AuditEntry) -> Result<bool> {
        let removed = self.inner.remove_client(realm, client_id, audit);
        self.forget(realm, client_id);
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::{ApplicationType, AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType};

    fn row(scope: &str) -> ClientRow {
        ClientRow {
            client: Client {
                client_id: "c1".into(),
                metadata: ClientMetadata {
                    redirect_uris: Vec::new(),
                    grant_types: vec![GrantType::ClientCredentials],
                    response_types: Vec::new(),
                    client_name: None,
                    scope: scope.into(),
                    token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                    jwks: None,
                    jwks_uri: None,
                    application_type: ApplicationType::Web,
                    workload: None,
                    dpop_bound_access_tokens: false,
                },
                attributes: ClientAttributes::default(),
                is_ai_agent: false,
                issued_at: 0,
            },
            secret_hash: vec![1],
            registration_token_hash: vec![2],
            state: ClientState::Active,
            tokens_valid_after: 0,
            expires_at: None,
            last_used_at: 0,
        }
    }

    /// One client in memory. Its first read can be made to stop after
    /// reading, until a change has landed: the race, every time.
    struct Slow {
        stored: Mutex<Option<ClientRow>>,
        reads: AtomicUsize,
        pause_first_read: AtomicBool,
        read_done: Barrier,
        change_done: Barrier,
    }

    impl Slow {
        fn new(row: ClientRow, pause: bool) -> Self {
            Self {
                stored: Mutex::new(Some(row)),
                reads: AtomicUsize::new(0),
                pause_first_read: AtomicBool::new(pause),
                read_done: Barrier::new(2),
                change_done: Barrier::new(2),
            }
        }
    }

    impl ClientRepository for Slow {
        fn insert_client(&self, _: &str, row: &ClientRow, _: u64) -> Result<bool> {
            *self.stored.lock().unwrap() = Some(row.clone());
            Ok(true)
        }

        fn update_client(&self, _: &str, row: &ClientRow, _: &[u8]) -> Result<bool> {
            *self.stored.lock().unwrap() = Some(row.clone());
            Ok(true)
        }

        fn delete_client(&self, _: &str, _: &str, _: &[u8]) -> Result<bool> {
            Ok(self.stored.lock().unwrap().take().is_some())
        }

        fn client(&self, _: &str, _: &str) -> Result<Option<ClientRow>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let read = self.stored.lock().unwrap().clone();
            if self.pause_first_read.swap(false, Ordering::SeqCst) {
                self.read_done.wait();
                self.change_done.wait();
            }
            Ok(read)
        }

        fn client_exists(&self, _: &str, _: &str) -> Result<bool> {
            Ok(self.stored.lock().unwrap().is_some())
        }

        fn count_clients(&self, _: &str) -> Result<u64> {
            Ok(u64::from(self.stored.lock().unwrap().is_some()))
        }

        fn clients(&self, _: &str, _: &ClientFilter, _: &str, _: i64) -> Result<Vec<ClientRow>> {
            Ok(self.stored.lock().unwrap().iter().cloned().collect())
        }

        fn touch_clients(&self, _: &str, _: &[(String, i64)]) -> Result<()> {
            Ok(())
        }

        fn set_client_state(&self, _: &str, _: &str, state: ClientState, at: i64, _: &AuditEntry) -> Result<bool> {
            let mut stored = self.stored.lock().unwrap();
            let Some(row) = stored.as_mut() else { return Ok(false) };
            row.state = state;
            if state == ClientState::Disabled {
                row.tokens_valid_after = at;
            }
            Ok(true)
        }

        fn remove_client(&self, _: &str, _: &str, _: &AuditEntry) -> Result<bool> {
            Ok(self.stored.lock().unwrap().take().is_some())
        }
    }

    #[test]
    fn a_read_that_raced_an_update_does_not_cache_the_old_row() {
        let cache = CachedClients::new(Slow::new(row("read"), true));
        std::thread::scope(|s| {
            let reader = s.spawn(|| cache.client("alpha", "c1").unwrap());
            cache.inner().read_done.wait();
            assert!(cache.update_client("alpha", &row("read write"), &[2]).unwrap());
            cache.inner().change_done.wait();
            assert_eq!(reader.join().unwrap(), Some(row("read")), "the racing read saw the old row");
        });
        assert_eq!(cache.client("alpha", "c1").unwrap(), Some(row("read write")), "but did not cache it");
    }

    #[test]
    fn a_read_that_raced_a_deletion_does_not_bring_the_client_back() {
        let cache = CachedClients::new(Slow::new(row("read"), true));
        std::thread::scope(|s| {
            let reader = s.spawn(|| cache.client("alpha", "c1").unwrap());
            cache.inner().read_done.wait();
            assert!(cache.delete_client("alpha", "c1", &[2]).unwrap());
            cache.inner().change_done.wait();
            assert!(reader.join().unwrap().is_some());
        });
        assert_eq!(cache.client("alpha", "c1").unwrap(), None);
    }

    #[test]
    fn a_read_that_raced_a_disable_does_not_cache_the_active_row() {
        let cache = CachedClients::new(Slow::new(row("read"), true));
        let entry = AuditEntry {
            at: 5,
            actor: "admin".into(),
            action: "disable-client".into(),
            plugin: None,
            version: None,
            sha256: None,
            detail: None,
        };
        std::thread::scope(|s| {
            let reader = s.spawn(|| cache.client("alpha", "c1").unwrap());
            cache.inner().read_done.wait();
            assert!(cache.set_client_state("alpha", "c1", ClientState::Disabled, 5, &entry).unwrap());
            cache.inner().change_done.wait();
            assert_eq!(reader.join().unwrap().map(|r| r.state), Some(ClientState::Active));
        });
        let now = cache.client("alpha", "c1").unwrap().expect("the client");
        assert_eq!((now.state, now.tokens_valid_after), (ClientState::Disabled, 5));
        assert!(!now.honours(6, 6), "a disabled client's tokens are dead");
    }

    #[test]
    fn a_client_is_read_once_until_it_changes_or_its_realm_is_forgotten() {
        let cache = CachedClients::new(Slow::new(row("read"), false));
        let reads = || cache.inner().reads.load(Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(cache.client("alpha", "c1").unwrap(), Some(row("read")));
        }
        assert_eq!(reads(), 1);
        cache.forget_realm("beta");
        cache.client("alpha", "c1").unwrap();
        assert_eq!(reads(), 1, "another realm's deletion keeps this one's clients");
        cache.forget_realm("alpha");
        cache.client("alpha", "c1").unwrap();
        assert_eq!(reads(), 2);
        cache.update_client("alpha", &row("write"), &[2]).unwrap();
        assert_eq!(cache.client("alpha", "c1").unwrap(), Some(row("write")));
        assert_eq!(reads(), 3);
    }

    #[test]
    fn a_full_cache_starts_again_empty() {
        let cache = CachedClients::with_capacity(Slow::new(row("read"), false), 1);
        cache.client("alpha", "c1").unwrap();
        cache.client("beta", "c1").unwrap();
        assert_eq!(cache.lock().rows.len(), 1);
    }
}
