//! Host bindings of `wit/policy.wit`, one module per hook world. The
//! may-act world reuses the DCR world's `types` and `log` so both share
//! one set of Rust types and one `log` implementation.

pub mod dcr_world {
    wasmtime::component::bindgen!({
        world: "dcr-hook",
        path: "../../wit",
    });
}

pub mod may_act_world {
    wasmtime::component::bindgen!({
        world: "may-act-hook",
        path: "../../wit",
        with: {
            "agentauth:policy/types": super::dcr_world::agentauth::policy::types,
            "agentauth:policy/log": super::dcr_world::agentauth::policy::log,
        },
    });
}

pub mod token_world {
    wasmtime::component::bindgen!({
        world: "token-hook",
        path: "../../wit",
        with: {
            "agentauth:policy/types": super::dcr_world::agentauth::policy::types,
            "agentauth:policy/log": super::dcr_world::agentauth::policy::log,
        },
    });
}

pub mod scope_world {
    wasmtime::component::bindgen!({
        world: "scope-hook",
        path: "../../wit",
        with: {
            "agentauth:policy/types": super::dcr_world::agentauth::policy::types,
            "agentauth:policy/log": super::dcr_world::agentauth::policy::log,
        },
    });
}

pub use dcr_world::agentauth::policy::{log, types};
