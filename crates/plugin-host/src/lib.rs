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
//!
//! The modules, from the contract inwards:
//! - `bindings`: the only `bindgen!`, one line per hook world.
//! - `hooks`: the list of hooks, which generates the dispatch over hook
//!   kinds, and one module per hook: its input, its call and the checks
//!   of its answer.
//! - `registry`: loading a plugin, checking its imports and exports by
//!   name, and sharing compiled code; `compile` bounds compilation.
//! - `engine`: the wasmtime engine and the path of one call (a turn, an
//!   instance, a deadline); `pool` keeps idle instances and realms' call
//!   slots; `limits` holds every bound and the meter that enforces the
//!   memory ones; `state` is what a plugin's imports reach (WASI that
//!   grants nothing, and the bounded log).

mod bindings;
pub mod case;
mod compile;
mod engine;
mod hooks;
mod language;
mod limits;
mod pool;
mod registry;
mod state;

use std::fmt;

pub use agentauth_core::{Client, HookKind};
pub use case::{CaseOutcome, run_case};
pub use compile::{
    COMPILE_CPU_SECONDS, COMPILE_MEMORY_BYTES, CompileLimits, Compiler, INVALID_COMPONENT_EXIT,
    MAX_CONCURRENT_COMPILES, run_compile_child,
};
pub use engine::{CompileObserver, PluginHost};
pub use hooks::assertion::{AssertionCase, AssertionMapping, AssertionPurpose, ExternalToken, MAX_SUBJECT};
pub use hooks::authorize::{Authorization, AuthorizationRequest, UserView};
pub use hooks::dcr::{Attribute, DcrInput, Operation, RequestContext};
pub use hooks::export_name;
pub use hooks::may_act::{MayActClaim, TokenView};
pub use hooks::scope::ScopeRequest;
pub use language::source_language;
pub use limits::{
    HOST_PLUGIN_BYTES, Limits, MAX_COPIED_BYTES, MAX_PLUGIN_MEMORY, MAX_REALM_CALLS, POOL_INSTANCES, REALM_PLUGIN_BYTES,
};
pub use pool::{CallSlot, CallSlots, Footprint, IDLE_TTL};
pub use registry::{ArtifactCache, ArtifactKey, NoCache, Plugin, sha256_hex};

/// The version of the `agentauth:policy` package this host serves.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// Largest component accepted. Python and JavaScript policies carry their
/// interpreter and weigh 12-18 MB.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

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
    /// The cause is a bounded kind, fit for a metric's label; the text is
    /// for the operator's log.
    Failed(Failure, String),
    /// The call could not start before its deadline: every instance of the
    /// server, or its realm's every turn to run, was taken. Worth a retry.
    Busy(String),
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(why) => write!(f, "denied by policy: {why}"),
            Self::Failed(_, why) => write!(f, "policy failed: {why}"),
            Self::Busy(why) => write!(f, "policy busy: {why}"),
        }
    }
}

impl std::error::Error for HookError {}

/// What kind of failure ended a plugin call: one of a fixed few, so that
/// counting failures by kind never grows with what plugins do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The call ran past its deadline.
    Timeout,
    /// The instance hit its memory or table cap, or its realm's budget.
    Memory,
    /// The guest trapped: a panic, an overflowed stack, an unreachable.
    Trap,
    /// The answer broke the contract's bounds or the host's checks, or the
    /// plugin tried to copy out more than a call may.
    InvalidAnswer,
    /// The plugin reported an error of its own (`other`), or could not run
    /// at all (it could not be instantiated, or serves another hook).
    Error,
}

impl Failure {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 5] = [Self::Timeout, Self::Memory, Self::Trap, Self::InvalidAnswer, Self::Error];

    /// Its name, as metrics label it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Trap => "trap",
            Self::InvalidAnswer => "invalid_answer",
            Self::Error => "error",
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
