//! Every bound a plugin could push against, and the meter that enforces
//! the memory ones.
//!
//! The numbers live together so that the pool's sizes, the meter's caps
//! and the refusals at upload are read off one list, and so that what a
//! failing call reports ([`failure`]) names the bound it hit. Each
//! store carries a [`Meter`]: wasmtime asks it before any memory or table
//! grows, and it charges the growth to the instance, to its realm and to
//! the server, giving idle instances' memory back first when a budget is
//! short.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::{ResourceLimiter, Trap};

use crate::pool::Shared;
use crate::state::{LogWindow, escape_log, truncate};
use crate::{Failure, HookError};

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
pub(crate) const MAX_CORE_INSTANCES: usize = 256;
/// Tables one plugin instance may define. Python and JavaScript
/// components define 2.
pub(crate) const MAX_TABLES: usize = 16;
/// Linear memories one plugin instance may define. Python and JavaScript
/// components define 1.
pub(crate) const MAX_MEMORIES: usize = 2;
/// Elements one table may hold (the pool's slot size).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;
/// Elements all tables of one instance may hold together. Python's
/// tables hold about 5,800, JavaScript's about 7,700.
const MAX_INSTANCE_TABLE_ELEMENTS: usize = 40_000;
/// What one table element costs the host, counted against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;
/// WASI resources (streams, pollables, ...) one instance may hold at once.
pub(crate) const MAX_WASI_RESOURCES: usize = 1024;
/// Largest `wasi:random` request a plugin may make.
pub(crate) const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// Longest string a plugin may return in any field, or write in one log
/// line.
pub(crate) const MAX_OUTPUT_STRING: usize = 1024;
/// Bytes of guest data one call may copy into the host: its answer, or
/// the arguments of one host call. Lists count the bytes of their elements
/// as laid out in guest memory, strings their length; a list that the
/// answer refers to twice counts twice.
pub const MAX_COPIED_BYTES: usize = 1 << 20;

/// Why a store may not take more: a limit of the instance, its realm or
/// the server. Raised by the [`Meter`], it ends the call.
#[derive(Debug)]
pub(crate) struct Exhausted(String);

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Exhausted {}

/// The server-wide budget ran out: other realms hold it, so the call is
/// told to come back ([`HookError::Busy`]), not that its plugin failed.
#[derive(Debug)]
pub(crate) struct ServerExhausted(String);

impl fmt::Display for ServerExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerExhausted {}

/// What the plugin instances of one realm hold together.
#[derive(Debug)]
pub(crate) struct RealmUsage {
    pub(crate) name: Arc<str>,
    /// One permit per call of the realm that may run guest code at once
    /// (the machine's cores): one realm's spinning plugins can take that
    /// much CPU, never all of it for long, so other realms' calls still
    /// meet their deadlines.
    pub(crate) running: Arc<Semaphore>,
    /// Bytes of memories and tables of the realm's live instances.
    pub(crate) bytes: AtomicUsize,
    pub(crate) log: Mutex<LogWindow>,
}

/// Adds `n` to `counter` unless that would pass `cap`.
fn try_add(counter: &AtomicUsize, n: usize, cap: usize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_add(n).filter(|t| *t <= cap)).is_ok()
}

/// A store's resource limiter: sums every memory and table of the
/// instance against the realm's cap, the realm's budget and the server's,
/// and bounds how many of each the instance may create.
pub(crate) struct Meter {
    pub(crate) cap: usize,
    pub(crate) held: usize,
    pub(crate) table_elements: usize,
    pub(crate) realm: Arc<RealmUsage>,
    pub(crate) shared: Arc<Shared>,
}

impl Meter {
    /// A meter for a fresh store of `realm`, capped at `cap` bytes.
    pub(crate) fn new(cap: usize, realm: Arc<RealmUsage>, shared: Arc<Shared>) -> Self {
        Self { cap, held: 0, table_elements: 0, realm, shared }
    }

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

pub(crate) fn timed_out(limits: &Limits) -> HookError {
    HookError::Failed(Failure::Timeout, format!("timed out after {} ms", limits.timeout.as_millis()))
}

/// Names what went wrong in a call that did not return: the bound it hit,
/// or the trap.
pub(crate) fn failure(error: &wasmtime::Error, limits: &Limits) -> HookError {
    let (cause, why) = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return timed_out(limits),
        Some(Trap::StackOverflow) => (Failure::Trap, "overflowed its stack".to_string()),
        Some(trap) => (Failure::Trap, format!("trapped: {trap}")),
        None if error.downcast_ref::<ServerExhausted>().is_some() => {
            return HookError::Busy(format!("{error}"));
        }
        None => match error.downcast_ref::<Exhausted>() {
            Some(exhausted) => (Failure::Memory, exhausted.0.clone()),
            None if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") => (
                Failure::InvalidAnswer,
                format!("copied more than {MAX_COPIED_BYTES} bytes out of the plugin in one call"),
            ),
            None => {
                (Failure::Error, format!("failed: {}", escape_log(truncate(&format!("{error:#}"), MAX_OUTPUT_STRING))))
            }
        },
    };
    HookError::Failed(cause, why)
}
