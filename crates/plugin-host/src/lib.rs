//! Runs a realm's policy plugins: WebAssembly components that export one
//! hook world of `wit/policy.wit`.
//!
//! This crate holds the only `bindgen!` of the contract. A plugin is
//! compiled and type-checked against its hook world once, when it is
//! loaded (`InstancePre`); each call then gets a fresh `Store` with the
//! realm's deadline and memory cap, so no state leaks between calls and a
//! trap never poisons the next one. The WASI a plugin sees grants nothing:
//! no files, no network, no environment, no arguments.
//!
//! Every answer is checked before the host uses it; a trap, a timeout,
//! exhausted memory or an invalid answer is a [`HookError::Failed`], and
//! the caller fails closed.

mod bindings;
mod compile;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use bindings::dcr_world::exports::agentauth::policy::dcr as wit_dcr;
use bindings::dcr_world::{DcrHook, DcrHookPre};
use bindings::may_act_world::exports::agentauth::policy::may_act as wit_may_act;
use bindings::may_act_world::{MayActHook, MayActHookPre};
use bindings::scope_world::exports::agentauth::policy::scope as wit_scope;
use bindings::scope_world::{ScopeHook, ScopeHookPre};
use bindings::token_world::exports::agentauth::policy::token as wit_token;
use bindings::token_world::{TokenHook, TokenHookPre};
use bindings::types as wit_types;

pub use agentauth_core::Client;
pub use compile::{
    COMPILE_CPU_SECONDS, COMPILE_MEMORY_BYTES, CompileLimits, Compiler, INVALID_COMPONENT_EXIT,
    MAX_CONCURRENT_COMPILES, run_compile_child,
};

/// The version of the `agentauth:policy` package this host serves.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// Largest component accepted. Python and JavaScript policies carry their
/// interpreter and weigh 12-18 MB.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// What a plugin may import: the contract's own interfaces, and WASI
/// interfaces that the host links to a context granting nothing (no
/// preopened directories, no environment, no arguments). Rust's standard
/// library, componentize-py and componentize-js import these. Sockets and
/// HTTP are refused by name, before linking.
const ALLOWED_IMPORTS: &[&str] = &[
    "agentauth:policy/log@",
    "agentauth:policy/types@",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
];

/// Plugin calls that may run at once across the server: the size of the
/// instance pool.
const POOL_CALLS: u32 = 128;
/// The most linear memory a realm may give one plugin instance.
pub const MAX_PLUGIN_MEMORY: usize = 256 << 20;

/// How often the epoch ticks; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Longest string a plugin may return in any field.
const MAX_OUTPUT_STRING: usize = 1024;
/// Most attributes a DCR decision may set.
const MAX_ATTRIBUTES: usize = 32;

/// The hook point a plugin serves, named as in its WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    Dcr,
    MayAct,
    Token,
    Scope,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dcr => "dcr",
            Self::MayAct => "may-act",
            Self::Token => "token",
            Self::Scope => "scope",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "dcr" => Some(Self::Dcr),
            "may-act" => Some(Self::MayAct),
            "token" => Some(Self::Token),
            "scope" => Some(Self::Scope),
            _ => None,
        }
    }

    /// Every hook kind.
    pub const ALL: [HookKind; 4] = [HookKind::Dcr, HookKind::MayAct, HookKind::Token, HookKind::Scope];

    /// The interface a plugin of this kind exports, with its version.
    pub fn export_name(self) -> String {
        format!("agentauth:policy/{}@{CONTRACT_VERSION}", self.as_str())
    }
}

/// Resource limits for one hook call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take, instantiation included.
    pub timeout: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout: Duration::from_millis(100), memory: 64 << 20 }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug)]
pub struct LoadError(String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Why a hook call produced no usable decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// The policy refused; the text is meant for the caller.
    Denied(String),
    /// The plugin failed: trap, timeout, memory cap, or an invalid answer.
    /// The text is for the operator's log.
    Failed(String),
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(why) => write!(f, "denied by policy: {why}"),
            Self::Failed(why) => write!(f, "policy failed: {why}"),
        }
    }
}

impl std::error::Error for HookError {}

enum Pre {
    Dcr(DcrHookPre<HostState>),
    MayAct(MayActHookPre<HostState>),
    Token(TokenHookPre<HostState>),
    Scope(ScopeHookPre<HostState>),
}

/// A compiled, type-checked plugin version, ready to run.
pub struct Plugin {
    name: String,
    version: i64,
    kind: HookKind,
    pre: Pre,
    idle: IdleInstances,
    /// Keeps the compiled code listed as shared while this plugin lives.
    _compiled: Arc<Compiled>,
}

/// Compiled code, shared by every plugin loaded from the same bytes in
/// any realm: realms that run the same policy hold one copy of its machine
/// code. Each call still gets its own store and instance, so nothing but
/// the code is shared.
struct Compiled(Component);

/// An instance of a plugin's world, as its bindings see it.
enum Bindings {
    Dcr(DcrHook),
    MayAct(MayActHook),
    Token(TokenHook),
    Scope(ScopeHook),
}

/// An instance kept after a call that returned normally, with the store it
/// lives in: the next call of the same realm with the same limits runs in
/// it, skipping instantiation (which for a Python or JavaScript component
/// costs far more than the call). An instance whose call trapped, timed
/// out or hit its memory cap is never kept.
struct Idle {
    store: Store<HostState>,
    bindings: Bindings,
    realm: Box<str>,
    limits: Limits,
    calls: u32,
}

/// A plugin's idle instances, counted against the host-wide budget (each
/// holds a slot of the pooling allocator).
struct IdleInstances {
    instances: Mutex<Vec<Idle>>,
    budget: Arc<AtomicUsize>,
}

impl IdleInstances {
    fn new(budget: &Arc<AtomicUsize>) -> Self {
        Self { instances: Mutex::new(Vec::new()), budget: Arc::clone(budget) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.instances.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for IdleInstances {
    fn drop(&mut self) {
        let kept = self.lock().len();
        self.budget.fetch_sub(kept, Ordering::SeqCst);
    }
}

/// Idle instances one plugin keeps: enough for the calls of two cores.
const IDLE_PER_PLUGIN: usize = 4;
/// Idle instances all plugins together keep: a quarter of the pool, so
/// calls always find free slots.
const IDLE_TOTAL: usize = POOL_CALLS as usize / 4;
/// Calls one instance serves before it is replaced by a fresh one, so
/// whatever a plugin accumulates in its instance stays bounded.
const CALLS_PER_INSTANCE: u32 = 1000;

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("idle_instances", &self.idle.lock().len())
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn kind(&self) -> HookKind {
        self.kind
    }

    /// The same compiled plugin under the version number the store gave it.
    pub fn with_version(self, version: i64) -> Self {
        Self { version, ..self }
    }
}

/// Per-call state: a WASI that grants nothing, the memory limiter, and the
/// label put on the plugin's log lines.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    label: Arc<str>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit_types::Host for HostState {}

impl bindings::log::Host for HostState {
    fn write(&mut self, level: bindings::log::Level, message: String) {
        use bindings::log::Level;
        let message = truncate(&message, MAX_OUTPUT_STRING);
        let plugin = &*self.label;
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The wasmtime engine and linker shared by every realm, and the thread
/// that drives deadlines.
pub struct PluginHost {
    engine: Engine,
    /// Idle instances kept by all plugins (see [`IDLE_TOTAL`]).
    idle_budget: Arc<AtomicUsize>,
    /// Compiled components by sha256, while some plugin uses them.
    compiled: Mutex<std::collections::HashMap<String, std::sync::Weak<Compiled>>>,
    /// Names this engine's compilation settings; artifacts are keyed by it.
    engine_fingerprint: String,
    linker: Linker<HostState>,
    stop_ticker: Arc<AtomicBool>,
    /// Where components are compiled, and the server-wide queue for it.
    compiler: Compiler,
    compiles: compile::CompileQueue,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
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
        // are kept too, see `Idle`). The pool's counts bound how many plugin
        // calls run at once.
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_CALLS)
            .total_core_instances(POOL_CALLS * 64)
            .max_core_instances_per_component(1024)
            .total_memories(POOL_CALLS * 2)
            .max_memories_per_component(4)
            .max_memory_size(MAX_PLUGIN_MEMORY)
            .total_tables(POOL_CALLS * 64)
            .max_tables_per_component(1024)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError(format!("wasmtime engine: {e}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| LoadError(format!("linking WASI: {e}")))?;
        // Both worlds import the same `log` interface; adding one world's
        // imports serves both.
        DcrHook::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError(format!("linking the policy imports: {e}")))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.weak(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("agentauth-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
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
            idle_budget: Arc::new(AtomicUsize::new(0)),
            compiled: Mutex::new(std::collections::HashMap::new()),
            engine_fingerprint,
            linker,
            stop_ticker,
            compiler,
            compiles: compile::CompileQueue::new(MAX_CONCURRENT_COMPILES),
        })
    }

    /// Compiles `component` and checks, by name, that it exports exactly
    /// `kind`'s hook interface of this contract version and imports only
    /// what [`ALLOWED_IMPORTS`] allows; then type-checks it against the
    /// hook's world.
    pub fn load(&self, kind: HookKind, name: &str, version: i64, component: &[u8]) -> Result<Plugin, LoadError> {
        self.load_cached(kind, name, version, component, &NoCache)
    }

    /// As [`PluginHost::load`], reusing a precompiled artifact from `cache`
    /// when it holds one for this component and engine, and storing one
    /// after compiling otherwise.
    pub fn load_cached(
        &self,
        kind: HookKind,
        name: &str,
        version: i64,
        component: &[u8],
        cache: &dyn ArtifactCache,
    ) -> Result<Plugin, LoadError> {
        self.load_detecting(Some(kind), name, version, component, cache)
    }

    /// As [`PluginHost::load_cached`]; with `kind: None` the hook is the one
    /// the component exports.
    pub fn load_detecting(
        &self,
        kind: Option<HookKind>,
        name: &str,
        version: i64,
        component: &[u8],
        cache: &dyn ArtifactCache,
    ) -> Result<Plugin, LoadError> {
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError(format!(
                "plugin {name} is {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                component.len()
            )));
        }
        let key = ArtifactKey { component_sha256: sha256_hex(component), engine: self.engine_fingerprint.clone() };
        let shared = match self.already_compiled(&key.component_sha256) {
            Some(shared) => shared,
            None => {
                let compiled = match cache.get(&key).and_then(|artifact| self.deserialize(&artifact, &key)) {
                    Some(compiled) => compiled,
                    None => {
                        let (compiled, artifact) = self.compile(&format!("plugin {name} v{version}"), component)?;
                        match artifact {
                            Ok(artifact) => cache.put(&key, &artifact),
                            Err(e) => tracing::warn!(plugin = name, "cannot serialise the compiled plugin: {e}"),
                        }
                        compiled
                    }
                };
                self.remember_compiled(&key.component_sha256, compiled)
            }
        };
        let compiled = &shared.0;
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let ty = compiled.component_type();
                let exported: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
                HookKind::ALL.into_iter().find(|k| exported.contains(&k.export_name())).ok_or_else(|| {
                    LoadError(format!(
                        "plugin {name} v{version} exports no hook of agentauth:policy@{CONTRACT_VERSION} \
                         (it exports: {})",
                        exported.join(", ")
                    ))
                })?
            }
        };
        self.check_interface(compiled, kind).map_err(|why| LoadError(format!("plugin {name} v{version} {why}")))?;
        let pre = self
            .linker
            .instantiate_pre(compiled)
            .map_err(|e| LoadError(format!("plugin {name} v{version} cannot be linked: {e:#}")))?;
        let wrong_world = |e: wasmtime::Error| {
            LoadError(format!("plugin {name} v{version} does not export the {} hook: {e:#}", kind.as_str()))
        };
        let pre = match kind {
            HookKind::Dcr => Pre::Dcr(DcrHookPre::new(pre).map_err(wrong_world)?),
            HookKind::MayAct => Pre::MayAct(MayActHookPre::new(pre).map_err(wrong_world)?),
            HookKind::Token => Pre::Token(TokenHookPre::new(pre).map_err(wrong_world)?),
            HookKind::Scope => Pre::Scope(ScopeHookPre::new(pre).map_err(wrong_world)?),
        };
        Ok(Plugin {
            name: name.to_string(),
            version,
            kind,
            pre,
            idle: IdleInstances::new(&self.idle_budget),
            _compiled: shared,
        })
    }

    /// Compiles `component`, in its turn, where [`Compiler`] says; returns
    /// it with its serialized artifact, for the cache.
    fn compile(
        &self,
        label: &str,
        component: &[u8],
    ) -> Result<(Component, Result<Vec<u8>, wasmtime::Error>), LoadError> {
        compile::precheck(label, component)?;
        let _turn = self.compiles.turn();
        match &self.compiler {
            Compiler::InProcess => {
                let compiled = Component::new(&self.engine, component)
                    .map_err(|e| LoadError(format!("{label} is not a valid component: {e:#}")))?;
                let artifact = compiled.serialize();
                Ok((compiled, artifact))
            }
            Compiler::Child { program, args, limits } => {
                let artifact = compile::compile_in_child(program, args, limits, label, component)?;
                let key = ArtifactKey { component_sha256: sha256_hex(component), engine: String::new() };
                let compiled = self
                    .deserialize(&artifact, &key)
                    .ok_or_else(|| LoadError(format!("{label} was compiled but its code could not be loaded")))?;
                Ok((compiled, Ok(artifact)))
            }
        }
    }

    /// The compiled component of these bytes, if a plugin still uses it.
    fn already_compiled(&self, sha256: &str) -> Option<Arc<Compiled>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(sha256).and_then(std::sync::Weak::upgrade)
    }

    /// Shares `component` with later loads of the same bytes, for as long
    /// as a plugin uses it.
    fn remember_compiled(&self, sha256: &str, component: Component) -> Arc<Compiled> {
        let shared = Arc::new(Compiled(component));
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.retain(|_, weak| weak.strong_count() > 0);
        compiled.insert(sha256.to_string(), Arc::downgrade(&shared));
        shared
    }

    /// Loads an artifact this server compiled and stored earlier.
    #[allow(unsafe_code)]
    fn deserialize(&self, artifact: &[u8], key: &ArtifactKey) -> Option<Component> {
        // SAFETY: `Component::deserialize` runs the artifact's machine code
        // unchecked, so it must only ever see bytes this server produced
        // with `Component::serialize`. Artifacts reach this function only
        // from the server's own database, keyed by the component's sha256
        // and this engine's fingerprint, written by `load_cached` above,
        // or straight from the compiling child (`compile.rs`): this same
        // binary, run by the server with arguments it chose, whose only
        // input is the component and whose output goes nowhere else. A
        // component that could subvert Cranelift in the child could equally
        // have done so in process, where compilation ran before.
        // Anyone able to write that database could equally replace signing
        // keys and client secrets, so it is trusted like the binary itself.
        // wasmtime also refuses artifacts from another version or config.
        match unsafe { Component::deserialize(&self.engine, artifact) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(sha256 = %key.component_sha256, "stored artifact refused, compiling again: {e}");
                None
            }
        }
    }

    /// Checks a compiled component's imports and exports by name, so a
    /// refusal says exactly what is wrong.
    fn check_interface(&self, compiled: &Component, kind: HookKind) -> Result<(), String> {
        let ty = compiled.component_type();
        for (import, _) in ty.imports(&self.engine) {
            let allowed = ALLOWED_IMPORTS.iter().any(|prefix| import.starts_with(prefix))
                && (!import.starts_with("agentauth:") || import.ends_with(&format!("@{CONTRACT_VERSION}")));
            if !allowed {
                return Err(format!(
                    "imports {import}, which is not allowed: plugins may import agentauth:policy/log \
                     and WASI cli, clocks, filesystem, io and random (granting nothing), \
                     never sockets or HTTP"
                ));
            }
        }
        let wanted = kind.export_name();
        let hooks: Vec<&str> =
            ty.exports(&self.engine).map(|(n, _)| n).filter(|n| n.starts_with("agentauth:")).collect();
        match hooks.as_slice() {
            [only] if *only == wanted => Ok(()),
            [] => Err(format!("exports no hook; a {} plugin exports {wanted}", kind.as_str())),
            [only] => Err(format!("exports {only}, not {wanted}")),
            many => Err(format!("exports {} hooks ({}); a plugin serves exactly one", many.len(), many.join(", "))),
        }
    }

    fn store(&self, plugin: &Plugin, limits: &Limits, realm: &str) -> Store<HostState> {
        let state = HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                // Python and JavaScript components hold a few hundred core
                // instances and tables but only a handful of memories; the
                // memory cap applies to each memory, so their count is
                // what bounds the total.
                .instances(1024)
                .tables(1024)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            label: format!("{realm}/{}@{}", plugin.name, plugin.version).into(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store
    }

    /// An instance to run one call of a `kind` plugin in, with its deadline
    /// set: an idle one of this realm and limits if the plugin has one, else
    /// a fresh one (whose instantiation counts against the deadline).
    fn checkout(&self, plugin: &Plugin, kind: HookKind, limits: &Limits, realm: &str) -> Result<Idle, HookError> {
        if plugin.kind != kind {
            return Err(wrong_kind(plugin, kind));
        }
        let kept = {
            let mut idle = plugin.idle.lock();
            let found = idle.iter().rposition(|i| &*i.realm == realm && i.limits == *limits);
            found.map(|at| idle.swap_remove(at))
        };
        let instance = match kept {
            Some(mut instance) => {
                self.idle_budget.fetch_sub(1, Ordering::SeqCst);
                set_deadline(&mut instance.store, limits);
                instance
            }
            None => {
                let mut store = self.store(plugin, limits, realm);
                // Instantiation runs guest code too: it gets the deadline.
                set_deadline(&mut store, limits);
                let failed = |e: wasmtime::Error| failure(&e, limits);
                let bindings = match &plugin.pre {
                    Pre::Dcr(pre) => Bindings::Dcr(pre.instantiate(&mut store).map_err(failed)?),
                    Pre::MayAct(pre) => Bindings::MayAct(pre.instantiate(&mut store).map_err(failed)?),
                    Pre::Token(pre) => Bindings::Token(pre.instantiate(&mut store).map_err(failed)?),
                    Pre::Scope(pre) => Bindings::Scope(pre.instantiate(&mut store).map_err(failed)?),
                };
                Idle { store, bindings, realm: realm.into(), limits: *limits, calls: 0 }
            }
        };
        Ok(instance)
    }

    /// Keeps an instance whose call returned normally, within the budgets.
    fn checkin(&self, plugin: &Plugin, mut instance: Idle) {
        instance.calls += 1;
        if instance.calls >= CALLS_PER_INSTANCE {
            return;
        }
        let mut idle = plugin.idle.lock();
        if idle.len() >= IDLE_PER_PLUGIN {
            return;
        }
        if self.idle_budget.fetch_add(1, Ordering::SeqCst) >= IDLE_TOTAL {
            self.idle_budget.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        idle.push(instance);
    }

    /// Runs a DCR plugin on one registration operation and returns the
    /// attributes it sets.
    pub fn run_dcr(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        input: &DcrInput<'_>,
    ) -> Result<Vec<Attribute>, HookError> {
        let registration = wit_dcr::Registration {
            operation: match input.operation {
                Operation::Create => wit_dcr::Operation::Create,
                Operation::Update => wit_dcr::Operation::Update,
                Operation::Delete => wit_dcr::Operation::Delete,
            },
            request: input.request.to_wit(),
            client: client_view(input.client),
            software_statement: input.software_statement.map(str::to_string),
        };
        let mut instance = self.checkout(plugin, HookKind::Dcr, limits, realm)?;
        let answer = match &instance.bindings {
            Bindings::Dcr(dcr) => dcr.agentauth_policy_dcr().call_evaluate(&mut instance.store, &registration),
            _ => return Err(wrong_kind(plugin, HookKind::Dcr)),
        }
        .map_err(|e| failure(&e, limits))?;
        self.checkin(plugin, instance);
        let decision = answer.map_err(refusal)?;
        if decision.set_attributes.len() > MAX_ATTRIBUTES {
            return Err(HookError::Failed(format!("the decision sets more than {MAX_ATTRIBUTES} attributes")));
        }
        decision
            .set_attributes
            .into_iter()
            .map(|a| {
                if a.name.len() > MAX_OUTPUT_STRING
                    || a.values.len() > MAX_ATTRIBUTES
                    || a.values.iter().any(|v| v.len() > MAX_OUTPUT_STRING)
                {
                    return Err(HookError::Failed("the decision holds an oversized attribute".into()));
                }
                Ok(Attribute { name: a.name, values: a.values })
            })
            .collect()
    }

    /// Runs a may-act plugin for a token about to be issued to `client`.
    pub fn run_may_act(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        client: &Client,
        token: &TokenView<'_>,
    ) -> Result<Option<MayActClaim>, HookError> {
        let view = wit_may_act::TokenView {
            realm: realm.to_string(),
            grant_type: token.grant_type.to_string(),
            sub: token.sub.to_string(),
            scopes: token.scopes.to_vec(),
        };
        let mut instance = self.checkout(plugin, HookKind::MayAct, limits, realm)?;
        let answer = match &instance.bindings {
            Bindings::MayAct(may_act) => {
                may_act.agentauth_policy_may_act().call_decide(&mut instance.store, &client_view(client), &view)
            }
            _ => return Err(wrong_kind(plugin, HookKind::MayAct)),
        }
        .map_err(|e| failure(&e, limits))?;
        self.checkin(plugin, instance);
        let Some(claim) = answer.map_err(refusal)? else {
            return Ok(None);
        };
        check_claim_value("may_act.client_id", &claim.client_id)?;
        if let Some(sub) = &claim.sub {
            check_claim_value("may_act.sub", sub)?;
        }
        Ok(Some(MayActClaim { client_id: claim.client_id, sub: claim.sub }))
    }
}

impl PluginHost {
    /// Runs a token plugin and returns the custom claims it adds, as the
    /// JSON text it answered; the caller parses and checks them.
    pub fn run_token(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        client: &Client,
        grant_type: &str,
        claims_json: &str,
    ) -> Result<String, HookError> {
        let view = wit_token::TokenView {
            realm: realm.to_string(),
            grant_type: grant_type.to_string(),
            claims: claims_json.to_string(),
        };
        let mut instance = self.checkout(plugin, HookKind::Token, limits, realm)?;
        let answer = match &instance.bindings {
            Bindings::Token(token) => {
                token.agentauth_policy_token().call_modify(&mut instance.store, &client_view(client), &view)
            }
            _ => return Err(wrong_kind(plugin, HookKind::Token)),
        }
        .map_err(|e| failure(&e, limits))?;
        self.checkin(plugin, instance);
        let custom = answer.map_err(refusal)?;
        if custom.len() > MAX_CUSTOM_CLAIMS {
            return Err(HookError::Failed(format!("custom claims exceed {MAX_CUSTOM_CLAIMS} bytes")));
        }
        Ok(custom)
    }

    /// Runs a scope plugin and returns the scopes it grants, checked to be
    /// a subset of `requested`.
    pub fn run_scope(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        client: &Client,
        request: &ScopeRequest<'_>,
    ) -> Result<Vec<String>, HookError> {
        let wit_request = wit_scope::ScopeRequest {
            realm: realm.to_string(),
            grant_type: request.grant_type.to_string(),
            requested: request.requested.to_vec(),
            registered: request.registered.to_vec(),
        };
        let mut instance = self.checkout(plugin, HookKind::Scope, limits, realm)?;
        let answer = match &instance.bindings {
            Bindings::Scope(scope) => {
                scope.agentauth_policy_scope().call_validate(&mut instance.store, &client_view(client), &wit_request)
            }
            _ => return Err(wrong_kind(plugin, HookKind::Scope)),
        }
        .map_err(|e| failure(&e, limits))?;
        self.checkin(plugin, instance);
        let granted = answer.map_err(refusal)?;
        if let Some(extra) = granted.iter().find(|s| !request.requested.contains(s)) {
            return Err(HookError::Failed(format!(
                "granted scope {:?}, which was not requested; a scope policy may only narrow",
                truncate(extra, 64)
            )));
        }
        Ok(granted)
    }
}

/// The scopes a scope plugin is asked about.
#[derive(Debug)]
pub struct ScopeRequest<'a> {
    pub grant_type: &'a str,
    pub requested: &'a [String],
    pub registered: &'a [String],
}

/// Largest custom-claims answer a token plugin may give.
const MAX_CUSTOM_CLAIMS: usize = 4096;

/// A value a plugin puts into a token: printable, non-empty and short.
fn check_claim_value(what: &str, value: &str) -> Result<(), HookError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(HookError::Failed(format!("{what} must be 1 to 256 printable characters")));
    }
    Ok(())
}

fn refusal(error: wit_types::Error) -> HookError {
    match error {
        wit_types::Error::Denied(why) => HookError::Denied(truncate(&why, MAX_OUTPUT_STRING).to_string()),
        wit_types::Error::Other(why) => {
            HookError::Failed(format!("plugin error: {}", truncate(&why, MAX_OUTPUT_STRING)))
        }
    }
}

fn wrong_kind(plugin: &Plugin, kind: HookKind) -> HookError {
    HookError::Failed(format!("plugin {} is not a {} plugin", plugin.name, kind.as_str()))
}

/// Gives a call its deadline, counted from now.
fn set_deadline(store: &mut Store<HostState>, limits: &Limits) {
    let ticks = limits.timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
}

/// Names what went wrong in a call that did not return.
fn failure(error: &wasmtime::Error, limits: &Limits) -> HookError {
    let why = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("timed out after {} ms", limits.timeout.as_millis()),
        Some(Trap::StackOverflow) => "overflowed its stack".to_string(),
        Some(trap) => format!("trapped: {trap}"),
        None if format!("{error:#}").contains("forcing trap when growing memory") => {
            format!("exceeded its memory limit of {} bytes", limits.memory)
        }
        None => format!("failed: {}", truncate(&format!("{error:#}"), MAX_OUTPUT_STRING)),
    };
    HookError::Failed(why)
}

fn client_view(client: &Client) -> wit_types::ClientView {
    wit_types::ClientView {
        client_id: client.client_id.clone(),
        is_ai_agent: client.is_ai_agent,
        metadata: agentauth_core::registration::metadata_json(&client.metadata).to_string(),
        attributes: client
            .attributes
            .as_pairs()
            .into_iter()
            .map(|(name, values)| wit_types::Attribute { name: name.to_string(), values })
            .collect(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Identifies a precompiled artifact: the component it came from and the
/// engine settings it was compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    pub component_sha256: String,
    pub engine: String,
}

/// Where precompiled plugins are kept between runs. Only this server's own
/// `Component::serialize` output may be put in it.
pub trait ArtifactCache {
    fn get(&self, key: &ArtifactKey) -> Option<Vec<u8>>;
    fn put(&self, key: &ArtifactKey, artifact: &[u8]);
}

/// A cache that keeps nothing.
#[derive(Debug)]
pub struct NoCache;

impl ArtifactCache for NoCache {
    fn get(&self, _: &ArtifactKey) -> Option<Vec<u8>> {
        None
    }

    fn put(&self, _: &ArtifactKey, _: &[u8]) {}
}

/// Lower-case hex SHA-256, as plugin versions are identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A registration operation (RFC 7591 / RFC 7592).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// The HTTP request a hook runs for, with credentials already removed.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
    pub body: Option<String>,
}

impl RequestContext {
    fn to_wit(&self) -> wit_types::RequestContext {
        let pairs = |v: &[(String, String)]| {
            v.iter().map(|(name, value)| wit_types::Pair { name: name.clone(), value: value.clone() }).collect()
        };
        wit_types::RequestContext {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers: pairs(&self.headers),
            parameters: pairs(&self.parameters),
            body: self.body.clone(),
        }
    }
}

/// Input of the DCR hook.
#[derive(Debug)]
pub struct DcrInput<'a> {
    pub operation: Operation,
    pub request: &'a RequestContext,
    pub client: &'a Client,
    pub software_statement: Option<&'a str>,
}

/// An attribute a DCR plugin sets, not yet interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub values: Vec<String>,
}

/// The token a may-act plugin is asked about.
#[derive(Debug)]
pub struct TokenView<'a> {
    pub grant_type: &'a str,
    pub sub: &'a str,
    pub scopes: &'a [String],
}

/// A may-act plugin's answer, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MayActClaim {
    pub client_id: String,
    pub sub: Option<String>,
}

/// A realm's plugin calls in flight: a counting semaphore with a timed
/// wait, so one realm's slow or looping plugin cannot take every slot of
/// the shared instance pool, and a caller that cannot get a slot in time
/// is told the realm is busy instead of waiting without bound.
#[derive(Debug)]
pub struct CallSlots {
    limit: usize,
    in_use: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A held call slot, returned when dropped.
#[derive(Debug)]
pub struct CallSlot<'a>(&'a CallSlots);

impl CallSlots {
    pub fn new(limit: usize) -> Self {
        Self { limit: limit.max(1), in_use: std::sync::Mutex::new(0), freed: std::sync::Condvar::new() }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a slot, waiting at most `patience`; `None` if none came free.
    pub fn acquire(&self, patience: Duration) -> Option<CallSlot<'_>> {
        let deadline = std::time::Instant::now() + patience;
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *in_use >= self.limit {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            in_use = self.freed.wait_timeout(in_use, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *in_use += 1;
        Some(CallSlot(self))
    }
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        let mut in_use = self.0.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *in_use = in_use.saturating_sub(1);
        self.0.freed.notify_one();
    }
}
