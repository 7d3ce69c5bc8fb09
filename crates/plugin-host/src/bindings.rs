//! Host bindings of `wit/policy.wit`: the crate's only `bindgen!`.
//!
//! The interfaces every hook shares (`types`, and `log` from the `host`
//! world every hook world includes) are generated once, in [`shared`];
//! each hook world is then one line of `hook_worlds!`, whose bindings
//! reuse the shared ones through `with:`. So all hooks see one
//! `ClientView`, one `Error` and one `log` implementation, and a new hook
//! world is bound by adding its line.

/// Generates, for each `module: "world"` pair, a module holding that hook
/// world's bindings (its `*Pre` type and its exported interface), with the
/// shared interfaces taken from [`shared`].
macro_rules! hook_worlds {
    ($($module:ident: $world:literal,)*) => {$(
        pub mod $module {
            wasmtime::component::bindgen!({
                world: $world,
                path: "../../wit",
                with: {
                    "agentauth:policy/types": super::shared::agentauth::policy::types,
                    "agentauth:policy/log": super::shared::agentauth::policy::log,
                },
            });
        }
    )*};
}

/// The interfaces shared by every hook world: the types they pass, and
/// what the `host` world imports. The package version is spelled out
/// here, as WIT requires for a versioned package: a WIT of another version
/// fails to compile, and a test holds `CONTRACT_VERSION` to the WIT's.
pub mod shared {
    wasmtime::component::bindgen!({
        path: "../../wit",
        interfaces: "
            import agentauth:policy/types@0.1.0;
            include agentauth:policy/host@0.1.0;
        ",
    });
}

hook_worlds! {
    dcr_world: "dcr-hook",
    may_act_world: "may-act-hook",
    token_world: "token-hook",
    scope_world: "scope-hook",
    authorize_world: "authorize-hook",
    assertion_world: "assertion-hook",
}

pub use shared::agentauth::policy::{log, types};
