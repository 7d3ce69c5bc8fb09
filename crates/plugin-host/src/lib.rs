//! Runs a realm's policy plugins: WebAssembly components that export one
//! hook world of `wit/policy.wit`.
//!
//! This crate holds the only `bindgen!` of the contract. A plugin is
//! compiled and type-checked against its hook world once, when it is
//! loaded (`InstancePre`). A call runs in an instance kept from an earlier
//! call of the same plugin, realm and limits when there is one (see
//! `Idle`), and in a fresh instance otherwise; an instance is never
//! shared between realms, and one whose call trapped, timed out or hit a
//! limit is dropped, so a trap never poisons the next call. The WASI a
//! plugin sees grants nothing: no files, no network, no environment, no
//! arguments.
//!
//! Every bound a plugin could push against is the host's, not the
//! plugin's:
//! - **Time.** Each call, instantiation and copying the answer out
//!   included, has a deadline. Guest code is stopped by epoch
//!   interruption; a guest waiting inside a host call (a WASI clock or
//!   stream poll) is stopped because every WASI import is asynchronous and
//!   the whole call is a future under a timeout. A store whose call was
//!   cut off is dropped.
//! - **Memory.** A `Meter` per store counts every linear memory and
//!   every table of the instance against the realm's cap, against a
//!   per-realm budget ([`REALM_PLUGIN_BYTES`]) and a server-wide one
//!   ([`HOST_PLUGIN_BYTES`]), and bounds the count of core instances,
//!   tables, memories and WASI resources.
//! - **CPU.** A realm runs at most one call per core at once; its other
//!   calls wait for a turn (their deadline running), so one realm's
//!   spinning plugins never keep another realm's calls off the CPU.
//! - **Instances.** Every live instance, running or idle, holds one of the
//!   [`POOL_INSTANCES`] slots, and the pooling allocator is sized so that
//!   this count, never one of its other limits, is what runs out. Idle
//!   instances are the first to go when a call needs a slot or memory,
//!   and are dropped after [`IDLE_TTL`] anyway.
//! - **Answers.** What one call may copy out of a plugin (its answer, or
//!   what it passes to one host call) is bounded by wasmtime's hostcall
//!   fuel ([`MAX_COPIED_BYTES`]), checked as each list or string is lifted,
//!   before it is allocated on the host; aliased lists count every time.
//! - **Logs.** A call's log lines and bytes are capped, and so is each
//!   realm's rate; control characters are escaped, so a message stays one
//!   line.
//!
//! Every answer is checked before the host uses it; a trap, a timeout,
//! exhausted memory or an invalid answer is a [`HookError::Failed`], and
//! the caller fails closed. A call that found no instance or turn before
//! its deadline is [`HookError::Busy`].
//!
//! The `run_*` functions block the calling thread: call them from a
//! blocking context (a plain thread or `spawn_blocking`), never from an
//! async task. A server takes a realm's [`CallSlots`] first, which waits
//! asynchronously, so requests beyond a realm's slots hold no thread.

mod bindings;
mod compile;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, TypedFunc};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use bindings::dcr_world::DcrHookPre;
use bindings::dcr_world::exports::agentauth::policy::dcr as wit_dcr;
use bindings::may_act_world::MayActHookPre;
use bindings::may_act_world::exports::agentauth::policy::may_act as wit_may_act;
use bindings::scope_world::ScopeHookPre;
use bindings::scope_world::exports::agentauth::policy::scope as wit_scope;
use bindings::token_world::TokenHookPre;
use bindings::token_world::exports::agentauth::policy::token as wit_token;
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

/// Component instances live at once across the server, running or idle:
/// the size of the instance pool. Each holds one slot; when none is free
/// an idle instance is dropped, and when every slot runs a call the next
/// call waits, until its deadline, for one to come free.
pub const POOL_INSTANCES: u32 = 256;
/// The most calls one realm may run at once (the ceiling of its
/// `plugin_concurrency`): an eighth of the pool, so that seven realms
/// whose plugins all hang still leave slots for the others.
pub const MAX_REALM_CALLS: usize = POOL_INSTANCES as usize / 8;
/// The most linear memory a realm may give one plugin instance.
pub const MAX_PLUGIN_MEMORY: usize = 256 << 20;
/// Memory (linear memories and tables) all instances of one realm may
/// hold together, running and idle. Calls that would go past it fail as
/// if they had hit their own cap.
pub const REALM_PLUGIN_BYTES: usize = 1 << 30;
/// Memory (linear memories and tables) all plugin instances of the server
/// may hold together, running and idle.
pub const HOST_PLUGIN_BYTES: usize = 4 << 30;

/// Core module instances one plugin instance may create. componentize-py
/// components create about 110, componentize-js ones 5, Rust ones 1-3.
const MAX_CORE_INSTANCES: usize = 256;
/// Tables one plugin instance may define. Python and JavaScript
/// components define 2.
const MAX_TABLES: usize = 16;
/// Linear memories one plugin instance may define. Python and JavaScript
/// components define 1.
const MAX_MEMORIES: usize = 2;
/// Elements one table may hold (the pool's slot size).
const MAX_TABLE_ELEMENTS: usize = 20_000;
/// Elements all tables of one instance may hold together. Python's
/// tables hold about 5,800, JavaScript's about 7,700.
const MAX_INSTANCE_TABLE_ELEMENTS: usize = 40_000;
/// What one table element costs the host, counted against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;
/// WASI resources (streams, pollables, ...) one instance may hold at once.
const MAX_WASI_RESOURCES: usize = 1024;
/// Largest `wasi:random` request a plugin may make.
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// How often the epoch ticks; deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// How often idle instances past [`IDLE_TTL`] are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Longest string a plugin may return in any field.
const MAX_OUTPUT_STRING: usize = 1024;
/// Most attributes a DCR decision may set.
const MAX_ATTRIBUTES: usize = 32;
/// Bytes of guest data one call may copy into the host: its answer, or
/// the arguments of one host call. Lists count the bytes of their elements
/// as laid out in guest memory, strings their length; a list that the
/// answer refers to twice counts twice.
pub const MAX_COPIED_BYTES: usize = 1 << 20;

/// Log lines one call may write; later ones are dropped and counted.
const LOG_LINES_PER_CALL: u32 = 32;
/// Log bytes one call may write.
const LOG_BYTES_PER_CALL: usize = 8 << 10;
/// Log lines all calls of one realm may write in a second.
const LOG_LINES_PER_REALM_SECOND: u32 = 100;
/// Log bytes all calls of one realm may write in a second.
const LOG_BYTES_PER_REALM_SECOND: usize = 64 << 10;

pub use agentauth_core::HookKind;

/// The function of a hook's interface.
fn hook_function(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Dcr => "evaluate",
        HookKind::MayAct => "decide",
        HookKind::Token => "modify",
        HookKind::Scope => "validate",
    }
}

/// The interface a plugin of `kind` exports, with its version.
pub fn export_name(kind: HookKind) -> String {
    format!("agentauth:policy/{}@{CONTRACT_VERSION}", kind.as_str())
}

/// Resource limits for one hook call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time one call may take: waiting for its realm's turn,
    /// instantiation, the call, and copying the answer out.
    pub timeout: Duration,
    /// Bytes one instance may hold in all its linear memories and tables
    /// together.
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
    /// The call could not start before its deadline: every instance of the
    /// server, or its realm's every turn to run, was taken. Worth a retry.
    Busy(String),
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(why) => write!(f, "denied by policy: {why}"),
            Self::Failed(why) => write!(f, "policy failed: {why}"),
            Self::Busy(why) => write!(f, "policy busy: {why}"),
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

impl Pre {
    fn instance_pre(&self) -> &wasmtime::component::InstancePre<HostState> {
        match self {
            Self::Dcr(pre) => pre.instance_pre(),
            Self::MayAct(pre) => pre.instance_pre(),
            Self::Token(pre) => pre.instance_pre(),
            Self::Scope(pre) => pre.instance_pre(),
        }
    }
}

/// A compiled, type-checked plugin version, ready to run.
pub struct Plugin {
    name: String,
    version: i64,
    kind: HookKind,
    pre: Pre,
    /// Names this plugin among the idle instances; those of a plugin that
    /// is gone are dropped at the next sweep.
    id: Arc<()>,
    /// Keeps the compiled code listed as shared while this plugin lives.
    _compiled: Arc<Compiled>,
}

/// Compiled code, shared by every plugin loaded from the same bytes in
/// any realm: realms that run the same policy hold one copy of its machine
/// code. Each call still gets its own store and instance, so nothing but
/// the code is shared.
struct Compiled(Component);

type DcrFunc = TypedFunc<(wit_dcr::Registration,), (Result<wit_dcr::Decision, wit_types::Error>,)>;
type MayActFunc = TypedFunc<
    (wit_types::ClientView, wit_may_act::TokenView),
    (Result<Option<wit_may_act::MayActClaim>, wit_types::Error>,),
>;
type TokenFunc = TypedFunc<(wit_types::ClientView, wit_token::TokenView), (Result<String, wit_types::Error>,)>;
type ScopeFunc = TypedFunc<(wit_types::ClientView, wit_scope::ScopeRequest), (Result<Vec<String>, wit_types::Error>,)>;

/// The hook function of an instance.
#[derive(Clone, Copy)]
enum Exports {
    Dcr(DcrFunc),
    MayAct(MayActFunc),
    Token(TokenFunc),
    Scope(ScopeFunc),
}

/// An instance with the store it lives in. After a call that returned
/// normally it is kept idle: the next call of the same plugin, realm and
/// limits runs in it, skipping instantiation (which for a Python or
/// JavaScript component costs far more than the call). An instance whose
/// call trapped, timed out or hit a limit is never kept. Idle instances
/// are bounded in number and memory per plugin, per realm and server-wide
/// (see `IdleList::keep`), live at most [`IDLE_TTL`], and are the first
/// dropped when a call needs a pool slot or memory.
struct Idle {
    store: Store<HostState>,
    /// `None` until instantiation, which runs under the first call's
    /// deadline.
    exports: Option<Exports>,
    plugin: Weak<()>,
    realm: Arc<str>,
    limits: Limits,
    calls: u32,
    idle_since: Instant,
    /// This instance's slot of the pool.
    _slot: OwnedSemaphorePermit,
}

impl Idle {
    fn bytes(&self) -> usize {
        self.store.data().meter.held
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
struct IdleList {
    entries: VecDeque<Idle>,
    bytes: usize,
    /// How long an instance may stay idle ([`IDLE_TTL`]).
    ttl: Duration,
}

impl IdleList {
    /// The most recently used idle instance for this call, if any.
    fn take(&mut self, plugin: &Arc<()>, realm: &str, limits: &Limits) -> Option<Idle> {
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
    fn evict_oldest(&mut self, realm: Option<&str>) -> Option<Idle> {
        let at = self.entries.iter().position(|i| realm.is_none_or(|r| &*i.realm == r))?;
        self.remove(at)
    }

    /// Removes what has been idle too long or whose plugin is gone.
    fn expire(&mut self, now: Instant, dropped: &mut Vec<Idle>) {
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
    fn keep(&mut self, mut instance: Idle, now: Instant, dropped: &mut Vec<Idle>) {
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

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
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

/// Why a store may not take more: a limit of the instance, its realm or
/// the server. Raised by the [`Meter`], it ends the call.
#[derive(Debug)]
struct Exhausted(String);

/// The server-wide budget ran out: other realms hold it, so the call is
/// told to come back ([`HookError::Busy`]), not that its plugin failed.
#[derive(Debug)]
struct ServerExhausted(String);

impl fmt::Display for ServerExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerExhausted {}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Exhausted {}

/// What the plugin instances of one realm hold together.
#[derive(Debug)]
struct RealmUsage {
    name: Arc<str>,
    /// One permit per call of the realm that may run guest code at once
    /// (the machine's cores): one realm's spinning plugins can take that
    /// much CPU, never all of it for long, so other realms' calls still
    /// meet their deadlines.
    running: Arc<Semaphore>,
    /// Bytes of memories and tables of the realm's live instances.
    bytes: AtomicUsize,
    log: Mutex<LogWindow>,
}

/// A realm's log budget for the current second.
#[derive(Debug)]
struct LogWindow {
    started: Instant,
    lines: u32,
    bytes: usize,
    suppressed: u64,
}

/// State shared by the host and every store's meter.
struct Shared {
    /// Bytes of memories and tables of every live instance.
    bytes: AtomicUsize,
    idle: Mutex<IdleList>,
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, IdleList> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops one idle instance (of `realm` if given) to free its memory
    /// and pool slot; false if there was none.
    fn evict_one(&self, realm: Option<&str>) -> bool {
        let evicted = self.idle().evict_oldest(realm);
        evicted.is_some()
    }
}

/// Adds `n` to `counter` unless that would pass `cap`.
fn try_add(counter: &AtomicUsize, n: usize, cap: usize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_add(n).filter(|t| *t <= cap)).is_ok()
}

/// A store's resource limiter: sums every memory and table of the
/// instance against the realm's cap, the realm's budget and the server's,
/// and bounds how many of each the instance may create.
struct Meter {
    cap: usize,
    held: usize,
    table_elements: usize,
    realm: Arc<RealmUsage>,
    shared: Arc<Shared>,
}

impl Meter {
    fn reserve(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        if self.held.saturating_add(bytes) > self.cap {
            return Err(Exhausted(format!("exceeded its memory limit of {} bytes", self.cap)).into());
        }
        while !try_add(&self.realm.bytes, bytes, REALM_PLUGIN_BYTES) {
            if !self.shared.evict_one(Some(&self.realm.name)) {
                return Err(Exhausted(format!(
                    "exceeded the memory all plugins of its realm may hold ({REALM_PLUGIN_BYTES} bytes)"
                ))
                .into());
            }
        }
        while !try_add(&self.shared.bytes, bytes, HOST_PLUGIN_BYTES) {
            if !self.shared.evict_one(None) {
                self.realm.bytes.fetch_sub(bytes, Ordering::SeqCst);
                return Err(ServerExhausted(format!(
                    "the memory all plugins of the server may hold ({HOST_PLUGIN_BYTES} bytes) is in use"
                ))
                .into());
            }
        }
        self.held += bytes;
        Ok(true)
    }
}

impl ResourceLimiter for Meter {
    // wasmtime asks before it checks the memory's or table's own maximum:
    // a growth past that maximum fails anyway, so it must not be charged.
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.reserve(desired.saturating_sub(current))
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let added = desired.saturating_sub(current);
        if self.table_elements.saturating_add(added) > MAX_INSTANCE_TABLE_ELEMENTS {
            return Err(Exhausted(format!("exceeded its limit of {MAX_INSTANCE_TABLE_ELEMENTS} table elements")).into());
        }
        self.reserve(added.saturating_mul(TABLE_ELEMENT_BYTES))?;
        self.table_elements += added;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.realm.bytes.fetch_sub(self.held, Ordering::SeqCst);
        self.shared.bytes.fetch_sub(self.held, Ordering::SeqCst);
    }
}

/// A store's state: a WASI that grants nothing, the meter, and the label
/// and budget of the plugin's log lines.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    meter: Meter,
    label: Arc<str>,
    log: CallLog,
}

/// What the current call has logged.
#[derive(Default)]
struct CallLog {
    lines: u32,
    bytes: usize,
    suppressed: u64,
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
        let message = escape_log(truncate(&message, MAX_OUTPUT_STRING));
        if !self.may_log(message.len()) {
            return;
        }
        let plugin = &*self.label;
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl HostState {
    /// Whether a line of `bytes` fits the call's and the realm's log
    /// budgets; counts it if so, and counts it as suppressed if not.
    fn may_log(&mut self, bytes: usize) -> bool {
        let call = &mut self.log;
        if call.lines >= LOG_LINES_PER_CALL || call.bytes + bytes > LOG_BYTES_PER_CALL {
            call.suppressed += 1;
            return false;
        }
        let realm = &self.meter.realm;
        let mut window = realm.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            if window.suppressed > 0 {
                tracing::warn!(realm = %realm.name, suppressed = window.suppressed, "plugin log lines over the realm's rate were dropped");
            }
            *window = LogWindow { started: now, lines: 0, bytes: 0, suppressed: 0 };
        }
        if window.lines >= LOG_LINES_PER_REALM_SECOND || window.bytes + bytes > LOG_BYTES_PER_REALM_SECOND {
            window.suppressed += 1;
            return false;
        }
        window.lines += 1;
        window.bytes += bytes;
        call.lines += 1;
        call.bytes += bytes;
        true
    }

    /// Ends a call's log budget; what it dropped is reported with its
    /// realm's, at most once a second.
    fn end_call(&mut self) {
        let log = std::mem::take(&mut self.log);
        if log.suppressed > 0 {
            let mut window = self.meter.realm.log.lock().unwrap_or_else(|p| p.into_inner());
            window.suppressed += log.suppressed;
        }
    }
}

/// A plugin's log message as one line: control characters (newlines, carriage
/// returns, escape sequences) and Unicode line separators are escaped, so a
/// message can neither forge a log line nor rewrite the terminal.
fn escape_log(message: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !message.chars().any(escaped) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The wasmtime engine and linker shared by every realm, the instance
/// pool's slots and budgets, and the thread that drives deadlines.
pub struct PluginHost {
    engine: Engine,
    /// One permit per instance the pool holds ([`POOL_INSTANCES`]).
    slots: Arc<Semaphore>,
    /// Calls of one realm that run at once: the machine's cores.
    running_per_realm: usize,
    shared: Arc<Shared>,
    realms: Mutex<std::collections::HashMap<Arc<str>, Arc<RealmUsage>>>,
    /// The runtime whose timers bound calls and whose thread ticks the
    /// epoch; calls run on their caller's thread through this handle.
    runtime: tokio::runtime::Handle,
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
        // Idle instances refer back to the shared state through their
        // meters; drop them so it goes too.
        self.drop_idle();
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

        let shared = Arc::new(Shared {
            bytes: AtomicUsize::new(0),
            idle: Mutex::new(IdleList { entries: VecDeque::new(), bytes: 0, ttl: IDLE_TTL }),
        });
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
            realms: Mutex::new(std::collections::HashMap::new()),
            runtime: handle,
            compiled: Mutex::new(std::collections::HashMap::new()),
            engine_fingerprint,
            linker,
            stop_ticker,
            compiler,
            compiles: compile::CompileQueue::new(MAX_CONCURRENT_COMPILES),
        })
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

    /// Sets how long an instance may stay idle ([`IDLE_TTL`] by default).
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
                HookKind::ALL.into_iter().find(|k| exported.contains(&export_name(*k))).ok_or_else(|| {
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
        Ok(Plugin { name: name.to_string(), version, kind, pre, id: Arc::new(()), _compiled: shared })
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
        let wanted = export_name(kind);
        let hooks: Vec<&str> =
            ty.exports(&self.engine).map(|(n, _)| n).filter(|n| n.starts_with("agentauth:")).collect();
        match hooks.as_slice() {
            [only] if *only == wanted => Ok(()),
            [] => Err(format!("exports no hook; a {} plugin exports {wanted}", kind.as_str())),
            [only] => Err(format!("exports {only}, not {wanted}")),
            many => Err(format!("exports {} hooks ({}); a plugin serves exactly one", many.len(), many.join(", "))),
        }
    }

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
            log: Mutex::new(LogWindow { started: Instant::now(), lines: 0, bytes: 0, suppressed: 0 }),
        });
        realms.insert(name, Arc::clone(&usage));
        usage
    }

    fn store(&self, plugin: &Plugin, limits: &Limits, realm: &Arc<RealmUsage>) -> Store<HostState> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_WASI_RESOURCES);
        let state = HostState {
            wasi: WasiCtx::builder().max_random_size(MAX_RANDOM_BYTES).build(),
            table,
            meter: Meter {
                cap: limits.memory,
                held: 0,
                table_elements: 0,
                realm: Arc::clone(realm),
                shared: Arc::clone(&self.shared),
            },
            label: format!("{}/{}@{}", realm.name, plugin.name, plugin.version).into(),
            log: CallLog::default(),
        };
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
            idle.take(&plugin.id, realm, limits)
        };
        if let Some(instance) = kept {
            return Ok(instance);
        }
        let slot = self.pool_slot(deadline, limits)?;
        let usage = self.realm_usage(realm);
        Ok(Idle {
            store: self.store(plugin, limits, &usage),
            exports: None,
            plugin: Arc::downgrade(&plugin.id),
            realm: Arc::clone(&usage.name),
            limits: *limits,
            calls: 0,
            idle_since: Instant::now(),
            _slot: slot,
        })
    }

    /// Keeps an instance whose call returned normally, within the budgets.
    fn checkin(&self, mut instance: Idle) {
        instance.calls += 1;
        if instance.calls >= CALLS_PER_INSTANCE {
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
    fn run<T>(
        &self,
        plugin: &Plugin,
        kind: HookKind,
        limits: &Limits,
        realm: &str,
        call: impl AsyncFnOnce(Exports, &mut Store<HostState>) -> wasmtime::Result<Result<T, HookError>>,
    ) -> Result<T, HookError> {
        if plugin.kind != kind {
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
        let decision = self.run(plugin, HookKind::Dcr, limits, realm, async move |exports, store| {
            let Exports::Dcr(evaluate) = exports else { return Ok(Err(wrong_kind(plugin, HookKind::Dcr))) };
            let (answer,) = evaluate.call_async(&mut *store, (registration,)).await?;
            Ok(answer.map_err(|error| refusal(error, &store.data().label)))
        })?;
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
        let client = client_view(client);
        let answer = self.run(plugin, HookKind::MayAct, limits, realm, async move |exports, store| {
            let Exports::MayAct(decide) = exports else { return Ok(Err(wrong_kind(plugin, HookKind::MayAct))) };
            let (answer,) = decide.call_async(&mut *store, (client, view)).await?;
            Ok(answer.map_err(|error| refusal(error, &store.data().label)))
        })?;
        let Some(claim) = answer else {
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
        let client = client_view(client);
        let custom = self.run(plugin, HookKind::Token, limits, realm, async move |exports, store| {
            let Exports::Token(modify) = exports else { return Ok(Err(wrong_kind(plugin, HookKind::Token))) };
            let (answer,) = modify.call_async(&mut *store, (client, view)).await?;
            Ok(answer.map_err(|error| refusal(error, &store.data().label)))
        })?;
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
        let client = client_view(client);
        let granted = self.run(plugin, HookKind::Scope, limits, realm, async move |exports, store| {
            let Exports::Scope(validate) = exports else { return Ok(Err(wrong_kind(plugin, HookKind::Scope))) };
            let (answer,) = validate.call_async(&mut *store, (client, wit_request)).await?;
            Ok(answer.map_err(|error| refusal(error, &store.data().label)))
        })?;
        if let Some(extra) = granted.iter().find(|s| !request.requested.contains(s)) {
            return Err(HookError::Failed(format!(
                "granted scope {:?}, which was not requested; a scope policy may only narrow",
                truncate(extra, 64)
            )));
        }
        Ok(granted)
    }
}

/// Instantiates `plugin` in `store` and finds its hook function.
async fn instantiate(plugin: &Plugin, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
    let instance = plugin.pre.instance_pre().instantiate_async(&mut *store).await?;
    let missing = || wasmtime::format_err!("the {} hook function is missing", plugin.kind.as_str());
    let interface = instance.get_export_index(&mut *store, None, &export_name(plugin.kind)).ok_or_else(missing)?;
    let function =
        instance.get_export_index(&mut *store, Some(&interface), hook_function(plugin.kind)).ok_or_else(missing)?;
    Ok(match plugin.kind {
        HookKind::Dcr => Exports::Dcr(instance.get_typed_func(&mut *store, function)?),
        HookKind::MayAct => Exports::MayAct(instance.get_typed_func(&mut *store, function)?),
        HookKind::Token => Exports::Token(instance.get_typed_func(&mut *store, function)?),
        HookKind::Scope => Exports::Scope(instance.get_typed_func(&mut *store, function)?),
    })
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

/// A plugin's own words, as the host passes them on: bounded, and with
/// control characters escaped, so they cannot forge a line of the log.
/// A refusal (`denied`) is meant for the caller; an `other` error is
/// logged, and the caller is told only that the policy failed, as the
/// contract (`wit/policy.wit`) promises.
fn refusal(error: wit_types::Error, label: &str) -> HookError {
    match error {
        wit_types::Error::Denied(why) => HookError::Denied(escape_log(truncate(&why, MAX_OUTPUT_STRING)).into_owned()),
        wit_types::Error::Other(why) => {
            let why = escape_log(truncate(&why, MAX_OUTPUT_STRING));
            tracing::warn!(plugin = label, "the plugin reported an error: {why}");
            HookError::Failed("the plugin reported an error (its text is in the server log)".into())
        }
    }
}

fn wrong_kind(plugin: &Plugin, kind: HookKind) -> HookError {
    HookError::Failed(format!("plugin {} is not a {} plugin", plugin.name, kind.as_str()))
}

/// Lets guest code run for `left` more, counted from now.
fn set_deadline(store: &mut Store<HostState>, left: Duration) {
    let ticks = left.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
}

fn timed_out(limits: &Limits) -> HookError {
    HookError::Failed(format!("timed out after {} ms", limits.timeout.as_millis()))
}

/// Names what went wrong in a call that did not return.
fn failure(error: &wasmtime::Error, limits: &Limits) -> HookError {
    let why = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return timed_out(limits),
        Some(Trap::StackOverflow) => "overflowed its stack".to_string(),
        Some(trap) => format!("trapped: {trap}"),
        None if error.downcast_ref::<ServerExhausted>().is_some() => {
            return HookError::Busy(format!("{error}"));
        }
        None => match error.downcast_ref::<Exhausted>() {
            Some(exhausted) => exhausted.0.clone(),
            None if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") => {
                format!("copied more than {MAX_COPIED_BYTES} bytes out of the plugin in one call")
            }
            None => format!("failed: {}", escape_log(truncate(&format!("{error:#}"), MAX_OUTPUT_STRING))),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_version_of_the_wit_package() {
        let wit = include_str!("../../../wit/policy.wit");
        let declared = wit
            .lines()
            .find_map(|line| line.trim().strip_prefix("package agentauth:policy@"))
            .and_then(|rest| rest.strip_suffix(';'));
        assert_eq!(declared, Some(CONTRACT_VERSION), "wit/policy.wit declares another version");
    }
}
