//! The engine every realm shares, and the path of one hook call.
//!
//! [`PluginHost`] owns the wasmtime engine (epoch interruption, the
//! pooling allocator sized so that only its instance count can run out),
//! the linker of the host's imports, the thread that ticks the epoch and
//! sweeps idle instances, and the per-realm usage. A call (`run`) waits
//! for its realm's turn, takes an idle instance or a pool slot for a fresh
//! one, instantiates it if needed, and runs the hook, all under one
//! deadline; only an instance whose call returned in time is kept.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};

use crate::compile::{self, Compiler, MAX_CONCURRENT_COMPILES};
use crate::hooks::{Exports, instantiate, wrong_kind};
use crate::limits::{
    Limits, MAX_COPIED_BYTES, MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_PLUGIN_MEMORY, MAX_REALM_CALLS, MAX_TABLE_ELEMENTS,
    MAX_TABLES, Meter, POOL_INSTANCES, RealmUsage, failure, timed_out,
};
use crate::pool::{Footprint, Idle, Shared};
use crate::registry::{Compiled, Plugin};
use crate::state::{HostState, LogWindow};
use crate::{HookError, HookKind, LoadError, bindings};

/// How often the epoch ticks; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// How often idle instances past their time to live are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The wasmtime engine and linker shared by every realm, the instance
/// pool's slots and budgets, and the thread that drives deadlines.
pub struct PluginHost {
    pub(crate) engine: Engine,
    /// One permit per instance the pool holds ([`POOL_INSTANCES`]).
    slots: Arc<Semaphore>,
    /// Calls of one realm that run at once: the machine's cores.
    running_per_realm: usize,
    shared: Arc<Shared>,
    realms: Mutex<HashMap<Arc<str>, Arc<RealmUsage>>>,
    /// The runtime whose timers bound calls and whose thread ticks the
    /// epoch; calls run on their caller's thread through this handle.
    runtime: tokio::runtime::Handle,
    /// Compiled components by sha256, while some plugin uses them.
    pub(crate) compiled: Mutex<HashMap<String, std::sync::Weak<Compiled>>>,
    /// Names this engine's compilation settings; artifacts are keyed by it.
    pub(crate) engine_fingerprint: String,
    pub(crate) linker: Linker<HostState>,
    stop_ticker: Arc<AtomicBool>,
    /// Where components are compiled, and the server-wide queue for it.
    pub(crate) compiler: Compiler,
    pub(crate) compiles: compile::CompileQueue,
    /// Told of every compilation, for metrics.
    pub(crate) compile_observer: Option<Arc<dyn CompileObserver>>,
}

/// What is told of every compilation the host runs (a precompiled
/// artifact loaded is none): how long it took, its turn in the queue not
/// counted, and whether it succeeded. Called on the compiling thread: it
/// must be quick.
pub trait CompileObserver: Send + Sync {
    fn compiled(&self, elapsed: Duration, succeeded: bool);
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        // Idle instances refer back to the shared state through their
        // meters; drop them so it goes too.
        self.drop_idle();
    }
}

impl PluginHost {
    /// A host that compiles in process: for tools and tests that load
    /// components they trust (see [`Compiler`]).
    pub fn new() -> Result<Self, LoadError> {
        Self::with_compiler(Compiler::InProcess)
    }

    /// A host that compiles plugins with `compiler`: a server that takes
    /// uploads uses [`Compiler::Child`], which bounds each compilation.
    pub fn with_compiler(compiler: Compiler) -> Result<Self, LoadError> {
        let mut config = compile::engine_config();
        // Instances come from a pool of pre-reserved slots: instantiation
        // is then a copy-on-write mapping of the component's memory image,
        // not an allocation, which keeps a fresh instance cheap (idle ones
        // are kept too, see `Idle`). Every count of the pool is the
        // per-instance limit times the number of instances, so only the
        // instance count can run out, and `slots` accounts for it.
        let pool_of = |per_instance: usize| POOL_INSTANCES.saturating_mul(u32::try_from(per_instance).unwrap_or(1));
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(pool_of(MAX_CORE_INSTANCES))
            .max_core_instances_per_component(pool_of(MAX_CORE_INSTANCES) / POOL_INSTANCES)
            .total_memories(pool_of(MAX_MEMORIES))
            .max_memories_per_component(pool_of(MAX_MEMORIES) / POOL_INSTANCES)
            .max_memory_size(MAX_PLUGIN_MEMORY)
            .total_tables(pool_of(MAX_TABLES))
            .max_tables_per_component(pool_of(MAX_TABLES) / POOL_INSTANCES)
            .table_elements(MAX_TABLE_ELEMENTS)
            // One fiber stack per running call.
            .total_stacks(POOL_INSTANCES)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError(format!("wasmtime engine: {e}")))?;

        let mut linker = Linker::new(&engine);
        // Every WASI import is asynchronous: a guest that waits in one (a
        // clock subscription, a stream) leaves a pending future, which the
        // call's timeout drops.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| LoadError(format!("linking WASI: {e}")))?;
        // What the `host` world imports, which every hook world includes:
        // an import added there is linked here, once for every hook.
        bindings::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError(format!("linking the policy imports: {e}")))?;

        let shared = Arc::new(Shared::new());
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| LoadError(format!("starting the plugin timer: {e}")))?;
        let handle = runtime.handle().clone();
        let (ticking, stop, sweeping) = (engine.weak(), stop_ticker.clone(), Arc::downgrade(&shared));
        // This thread owns the runtime, drives its timers for every call,
        // ticks the epoch and drops idle instances past their time.
        std::thread::Builder::new()
            .name("agentauth-plugins".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tick = tokio::time::interval(EPOCH_TICK);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut swept = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        match ticking.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                        if swept.elapsed() >= SWEEP_EVERY {
                            swept = Instant::now();
                            let Some(shared) = sweeping.upgrade() else { break };
                            let mut expired = Vec::new();
                            shared.idle().expire(swept, &mut expired);
                            drop(expired);
                        }
                    }
                });
            })
            .map_err(|e| LoadError(format!("starting the epoch thread: {e}")))?;
        let engine_fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            format!("wasmtime-{}-{:016x}", env!("CARGO_PKG_VERSION"), hasher.finish())
        };
        Ok(Self {
            engine,
            slots: Arc::new(Semaphore::new(POOL_INSTANCES as usize)),
            running_per_realm: std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_REALM_CALLS),
            shared,
            realms: Mutex::new(HashMap::new()),
            runtime: handle,
            compiled: Mutex::new(HashMap::new()),
            engine_fingerprint,
            linker,
            stop_ticker,
            compiler,
            compiles: compile::CompileQueue::new(MAX_CONCURRENT_COMPILES),
            compile_observer: None,
        })
    }

    /// Tells `observer` of every compilation from now on.
    pub fn observe_compiles(&mut self, observer: Arc<dyn CompileObserver>) {
        self.compile_observer = Some(observer);
    }

    /// What the instances hold now.
    pub fn footprint(&self) -> Footprint {
        let idle = self.shared.idle();
        Footprint {
            idle_instances: idle.entries.len(),
            idle_bytes: idle.bytes,
            live_bytes: self.shared.bytes.load(Ordering::SeqCst),
            free_slots: self.slots.available_permits(),
        }
    }

    /// Sets how long an instance may stay idle ([`crate::IDLE_TTL`] by
    /// default).
    pub fn set_idle_ttl(&self, ttl: Duration) {
        self.shared.idle().ttl = ttl;
    }

    /// Drops every idle instance.
    pub fn drop_idle(&self) {
        let dropped = {
            let mut idle = self.shared.idle();
            idle.bytes = 0;
            std::mem::take(&mut idle.entries)
        };
        drop(dropped);
    }
}

impl PluginHost {
    /// What the instances of `realm` hold together.
    fn realm_usage(&self, realm: &str) -> Arc<RealmUsage> {
        let mut realms = self.realms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(usage) = realms.get(realm) {
            return Arc::clone(usage);
        }
        let name: Arc<str> = realm.into();
        let usage = Arc::new(RealmUsage {
            name: Arc::clone(&name),
            running: Arc::new(Semaphore::new(self.running_per_realm)),
            bytes: AtomicUsize::new(0),
            log: Mutex::new(LogWindow::new(Instant::now())),
        });
        realms.insert(name, Arc::clone(&usage));
        usage
    }

    fn store(&self, plugin: &Plugin, limits: &Limits, realm: &Arc<RealmUsage>) -> Store<HostState> {
        let meter = Meter::new(limits.memory, Arc::clone(realm), Arc::clone(&self.shared));
        let label = format!("{}/{}@{}", realm.name, plugin.name(), plugin.version());
        let state = HostState::new(meter, label.into());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.meter);
        store.set_hostcall_fuel(MAX_COPIED_BYTES);
        store
    }

    /// A slot of the pool for a fresh instance: a free one, else one an
    /// idle instance gives up, else the first to come free before
    /// `deadline`.
    fn pool_slot(&self, deadline: Instant, limits: &Limits) -> Result<OwnedSemaphorePermit, HookError> {
        loop {
            if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                return Ok(slot);
            }
            if !self.shared.evict_one(None) {
                break;
            }
        }
        let wait = Arc::clone(&self.slots).acquire_owned();
        match self.runtime.block_on(async { tokio::time::timeout_at(deadline.into(), wait).await }) {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(HookError::Busy(format!(
                "no plugin instance came free within {} ms: all {POOL_INSTANCES} of the server are running calls",
                limits.timeout.as_millis()
            ))),
        }
    }

    /// The realm's turn to run guest code, waited for until `deadline`.
    fn turn_to_run(&self, realm: &str, deadline: Instant, limits: &Limits) -> Result<OwnedSemaphorePermit, HookError> {
        let running = Arc::clone(&self.realm_usage(realm).running);
        if let Ok(turn) = Arc::clone(&running).try_acquire_owned() {
            return Ok(turn);
        }
        let wait = running.acquire_owned();
        match self.runtime.block_on(async { tokio::time::timeout_at(deadline.into(), wait).await }) {
            Ok(Ok(turn)) => Ok(turn),
            _ => Err(HookError::Busy(format!(
                "the realm's other calls kept every turn to run for {} ms",
                limits.timeout.as_millis()
            ))),
        }
    }

    /// An instance to run one call of `plugin` in: an idle one of this
    /// realm and limits if there is one, else a store for a fresh one,
    /// which the call instantiates under its deadline.
    fn checkout(&self, plugin: &Plugin, limits: &Limits, realm: &str, deadline: Instant) -> Result<Idle, HookError> {
        let kept = {
            let mut idle = self.shared.idle();
            idle.take(plugin.id(), realm, limits)
        };
        if let Some(instance) = kept {
            return Ok(instance);
        }
        let slot = self.pool_slot(deadline, limits)?;
        let usage = self.realm_usage(realm);
        let store = self.store(plugin, limits, &usage);
        Ok(Idle::fresh(store, plugin.id(), Arc::clone(&usage.name), *limits, slot))
    }

    /// Keeps an instance whose call returned normally, within the budgets.
    fn checkin(&self, mut instance: Idle) {
        if !instance.served() {
            return;
        }
        let mut dropped = Vec::new();
        self.shared.idle().keep(instance, Instant::now(), &mut dropped);
        drop(dropped);
    }

    /// Runs one call of `plugin`: takes an instance, instantiates it if it
    /// is fresh, and runs `call` on it, all under the deadline. `call`
    /// lifts the answer and copies out what it needs, which counts against
    /// the deadline too. The instance is kept for later calls only if the
    /// call returned in time.
    pub(crate) fn run<T>(
        &self,
        plugin: &Plugin,
        kind: HookKind,
        limits: &Limits,
        realm: &str,
        call: impl AsyncFnOnce(Exports, &mut Store<HostState>) -> wasmtime::Result<Result<T, HookError>>,
    ) -> Result<T, HookError> {
        if plugin.kind() != kind {
            return Err(wrong_kind(plugin, kind));
        }
        let deadline = Instant::now() + limits.timeout;
        let _running = self.turn_to_run(realm, deadline, limits)?;
        let mut instance = self.checkout(plugin, limits, realm, deadline)?;
        // Guest code gets what is left of the deadline after the waits, not
        // a whole timeout of its own: a call never runs past its deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HookError::Busy(format!(
                "no time was left of the {} ms deadline to run the plugin",
                limits.timeout.as_millis()
            )));
        }
        set_deadline(&mut instance.store, left);
        let outcome = {
            let Idle { store, exports, .. } = &mut instance;
            let work = async {
                let exports = match *exports {
                    Some(ready) => ready,
                    None => *exports.insert(instantiate(plugin, store).await?),
                };
                call(exports, store).await
            };
            // The timer is made inside the runtime, whose thread drives it.
            self.runtime.block_on(async { tokio::time::timeout_at(deadline.into(), work).await })
        };
        instance.store.data_mut().end_call();
        let answer = match outcome {
            // Cut off while waiting in a host call: the store is dropped.
            Err(_elapsed) => return Err(timed_out(limits)),
            Ok(Err(error)) => return Err(failure(&error, limits)),
            Ok(Ok(answer)) => answer,
        };
        if Instant::now() > deadline {
            return Err(timed_out(limits));
        }
        self.checkin(instance);
        answer
    }
}

/// Lets guest code run for `left` more, counted from now.
fn set_deadline(store: &mut Store<HostState>, left: Duration) {
    let ticks = left.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
}
