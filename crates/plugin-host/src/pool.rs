//! Where instances wait between calls, and how many calls a realm runs.
//!
//! Instantiating a Python or JavaScript component costs far more than
//! calling it, so an instance whose call returned normally is kept idle
//! for the next call of the same plugin, realm and limits. Idle instances
//! are what gives way first: to a call that needs a pool slot or memory,
//! to the per-plugin, per-realm and server-wide bounds below, and to
//! their time to live. [`CallSlots`] are the other side: each realm's
//! calls in flight, waited for asynchronously before a call takes a
//! thread.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

use crate::hooks::Exports;
use crate::limits::{Limits, MAX_REALM_CALLS, POOL_INSTANCES};
use crate::state::HostState;

/// An instance with the store it lives in. After a call that returned
/// normally it is kept idle: the next call of the same plugin, realm and
/// limits runs in it, skipping instantiation (which for a Python or
/// JavaScript component costs far more than the call). An instance whose
/// call trapped, timed out or hit a limit is never kept. Idle instances
/// are bounded in number and memory per plugin, per realm and server-wide
/// (see `IdleList::keep`), live at most [`IDLE_TTL`], and are the first
/// dropped when a call needs a pool slot or memory.
pub(crate) struct Idle {
    pub(crate) store: Store<HostState>,
    /// `None` until instantiation, which runs under the first call's
    /// deadline.
    pub(crate) exports: Option<Exports>,
    plugin: Weak<()>,
    realm: Arc<str>,
    limits: Limits,
    calls: u32,
    idle_since: Instant,
    /// This instance's slot of the pool.
    _slot: OwnedSemaphorePermit,
}

impl Idle {
    /// A store for a fresh instance of the plugin `plugin` names, holding
    /// `slot` of the pool; the first call instantiates it.
    pub(crate) fn fresh(
        store: Store<HostState>,
        plugin: &Arc<()>,
        realm: Arc<str>,
        limits: Limits,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            store,
            exports: None,
            plugin: Arc::downgrade(plugin),
            realm,
            limits,
            calls: 0,
            idle_since: Instant::now(),
            _slot: slot,
        }
    }

    fn bytes(&self) -> usize {
        self.store.data().meter.held
    }

    /// Counts a call that returned normally; false once the instance has
    /// served its share and should be replaced.
    pub(crate) fn served(&mut self) -> bool {
        self.calls += 1;
        self.calls < CALLS_PER_INSTANCE
    }
}

/// Idle instances one plugin keeps per realm: enough for the calls of two
/// cores.
const IDLE_PER_PLUGIN: usize = 4;
/// Idle instances one realm keeps.
const IDLE_PER_REALM: usize = 16;
/// Idle instances the server keeps: a quarter of the pool.
const IDLE_TOTAL: usize = POOL_INSTANCES as usize / 4;
/// Memory the idle instances of one realm may hold.
const IDLE_BYTES_PER_REALM: usize = 256 << 20;
/// Memory all idle instances may hold.
const IDLE_BYTES_TOTAL: usize = 1 << 30;
/// How long an instance may stay idle before it is dropped.
pub const IDLE_TTL: Duration = Duration::from_secs(30);
/// Calls one instance serves before it is replaced by a fresh one, so
/// whatever a plugin accumulates in its instance stays bounded.
const CALLS_PER_INSTANCE: u32 = 1000;

/// The server's idle instances, oldest first.
pub(crate) struct IdleList {
    pub(crate) entries: VecDeque<Idle>,
    pub(crate) bytes: usize,
    /// How long an instance may stay idle ([`IDLE_TTL`]).
    pub(crate) ttl: Duration,
}

impl IdleList {
    /// The most recently used idle instance for this call, if any.
    pub(crate) fn take(&mut self, plugin: &Arc<()>, realm: &str, limits: &Limits) -> Option<Idle> {
        let at = self.entries.iter().rposition(|i| {
            std::ptr::eq(i.plugin.as_ptr(), Arc::as_ptr(plugin)) && &*i.realm == realm && i.limits == *limits
        })?;
        self.remove(at)
    }

    fn remove(&mut self, at: usize) -> Option<Idle> {
        let idle = self.entries.remove(at)?;
        self.bytes = self.bytes.saturating_sub(idle.bytes());
        Some(idle)
    }

    /// Removes the oldest idle instance, of `realm` if given.
    pub(crate) fn evict_oldest(&mut self, realm: Option<&str>) -> Option<Idle> {
        let at = self.entries.iter().position(|i| realm.is_none_or(|r| &*i.realm == r))?;
        self.remove(at)
    }

    /// Removes what has been idle too long or whose plugin is gone.
    pub(crate) fn expire(&mut self, now: Instant, dropped: &mut Vec<Idle>) {
        let mut at = 0;
        while at < self.entries.len() {
            let entry = &self.entries[at];
            if now.duration_since(entry.idle_since) >= self.ttl || entry.plugin.strong_count() == 0 {
                dropped.extend(self.remove(at));
            } else {
                at += 1;
            }
        }
    }

    /// Keeps `instance` within the budgets, moving what it displaces into
    /// `dropped` (the caller drops them outside the lock). An instance that
    /// alone exceeds a budget is not kept.
    pub(crate) fn keep(&mut self, mut instance: Idle, now: Instant, dropped: &mut Vec<Idle>) {
        let bytes = instance.bytes();
        if bytes > IDLE_BYTES_PER_REALM {
            dropped.push(instance);
            return;
        }
        self.expire(now, dropped);
        let same = |i: &Idle| std::ptr::eq(i.plugin.as_ptr(), instance.plugin.as_ptr()) && i.realm == instance.realm;
        if self.entries.iter().filter(|i| same(i)).count() >= IDLE_PER_PLUGIN {
            dropped.push(instance);
            return;
        }
        loop {
            let (count, held) = self
                .entries
                .iter()
                .filter(|i| i.realm == instance.realm)
                .fold((0, 0), |(n, b), i| (n + 1, b + i.bytes()));
            if count < IDLE_PER_REALM && held + bytes <= IDLE_BYTES_PER_REALM {
                break;
            }
            match self.evict_oldest(Some(&instance.realm)) {
                Some(old) => dropped.push(old),
                None => break,
            }
        }
        while self.entries.len() >= IDLE_TOTAL || self.bytes + bytes > IDLE_BYTES_TOTAL {
            match self.evict_oldest(None) {
                Some(old) => dropped.push(old),
                None => break,
            }
        }
        instance.idle_since = now;
        self.bytes += bytes;
        self.entries.push_back(instance);
    }
}

/// State shared by the host and every store's meter.
pub(crate) struct Shared {
    /// Bytes of memories and tables of every live instance.
    pub(crate) bytes: AtomicUsize,
    pub(crate) idle: Mutex<IdleList>,
}

impl Shared {
    /// No instance yet, idle instances kept for [`IDLE_TTL`].
    pub(crate) fn new() -> Self {
        Self {
            bytes: AtomicUsize::new(0),
            idle: Mutex::new(IdleList { entries: VecDeque::new(), bytes: 0, ttl: IDLE_TTL }),
        }
    }

    pub(crate) fn idle(&self) -> std::sync::MutexGuard<'_, IdleList> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops one idle instance (of `realm` if given) to free its memory
    /// and pool slot; false if there was none.
    pub(crate) fn evict_one(&self, realm: Option<&str>) -> bool {
        let evicted = self.idle().evict_oldest(realm);
        evicted.is_some()
    }
}

/// What the plugin instances of the server hold, for operators and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Instances kept idle.
    pub idle_instances: usize,
    /// Bytes of memories and tables the idle instances hold.
    pub idle_bytes: usize,
    /// Bytes of memories and tables all live instances hold.
    pub live_bytes: usize,
    /// Pool slots free.
    pub free_slots: usize,
}

/// A realm's plugin calls in flight: an asynchronous semaphore, so one
/// realm's slow or looping plugins cannot take every slot of the shared
/// instance pool, a caller waits for its turn without holding a thread,
/// and a caller that cannot get a turn in time is told the realm is busy.
#[derive(Debug)]
pub struct CallSlots {
    limit: usize,
    semaphore: Arc<Semaphore>,
}

/// A held call slot, returned when dropped.
#[derive(Debug)]
pub struct CallSlot {
    _permit: OwnedSemaphorePermit,
}

impl CallSlots {
    /// Slots for `limit` calls at once, at most [`MAX_REALM_CALLS`].
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, MAX_REALM_CALLS);
        Self { limit, semaphore: Arc::new(Semaphore::new(limit)) }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a slot, waiting at most `patience`; `None` if none came free.
    pub async fn acquire(&self, patience: Duration) -> Option<CallSlot> {
        let wait = Arc::clone(&self.semaphore).acquire_owned();
        match tokio::time::timeout(patience, wait).await {
            Ok(Ok(permit)) => Some(CallSlot { _permit: permit }),
            _ => None,
        }
    }
}
