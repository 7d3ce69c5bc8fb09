//! The seed example's two policies, compiled to WebAssembly components by
//! this crate's build script and embedded as bytes.
//!
//! The binary embeds them so `agentauth serve --demo` needs nothing built
//! beforehand, and they are all it embeds: example plugins and hostile
//! test fixtures live in `agentauth-plugins`, which only tests and the
//! benchmark depend on. Tests use these same bytes (`agentauth-plugins`
//! re-exports them).

/// The seed's "Software agent DCR script" (`plugins/software-agent-dcr`).
pub const SOFTWARE_AGENT_DCR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/software_agent_dcr.wasm"));

/// The seed's "Software agent may act script" (`plugins/software-agent-may-act`).
pub const SOFTWARE_AGENT_MAY_ACT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/software_agent_may_act.wasm"));
