//! The policy plugins in `plugins/` that tests and the benchmark use,
//! compiled to WebAssembly components by this crate's build script and
//! embedded as bytes: example token, scope, authorize and assertion
//! policies, and hostile fixtures that misbehave on demand.
//!
//! Only dev-dependencies and the benchmark depend on this crate, so the
//! production binary embeds (and its build compiles) none of these. The
//! seed's two policies, which the binary does serve, belong to
//! `agentauth-seed-policies`; they are re-exported here so a test names
//! every component from one place.

pub use agentauth_seed_policies::{SOFTWARE_AGENT_DCR, SOFTWARE_AGENT_MAY_ACT};

/// Example token plugin: adds a `department` claim; for clients named
/// `take-sub`, `not-json` or `token-deny`, misbehaves accordingly.
pub const DEPARTMENT_TOKEN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/department_token.wasm"));

/// Example scope plugin: drops `write` for clients named `read-only`; for
/// clients named `refuse` or `widen`, misbehaves accordingly.
pub const NARROWING_SCOPE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/narrowing_scope.wasm"));

/// Example authorize plugin: an AI agent may act for the user who signs in
/// (`may_act` naming it as `(age!<client_id>)`), never with `admin`, and
/// with fresh consent whenever it asks to `write`; for clients named
/// `refuse` or `widen`, misbehaves accordingly.
pub const AGENT_FOR_USER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agent_for_user.wasm"));

/// Example assertion plugin: users from outside issuers when their email
/// is verified and of `example.com` (subject `ext:<issuer>#<sub>`, no
/// `admin` unless in the `admins` group, `may_act` from an `agent`
/// claim), and Kubernetes service accounts of namespace `agents` as the
/// client of their name.
pub const TRUSTED_DOMAINS_ASSERTION: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/trusted_domains_assertion.wasm"));

/// Test fixture: an assertion plugin that answers the invalid mapping
/// (empty, long or unprintable subject, widened scopes, bad `may_act`)
/// the external token's `sub` names.
pub const MISBEHAVING_ASSERTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/misbehaving_assertion.wasm"));

/// Test fixture: a DCR plugin that denies, loops, traps or sets an unknown
/// attribute when the registration's `client_name` says so, and otherwise
/// gives the client the `misbehaving-may-act` plugin.
pub const MISBEHAVING_DCR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/misbehaving_dcr.wasm"));

/// Test fixture: a may-act plugin that loops, traps, allocates without
/// bound, recurses, reads files or the environment, or returns invalid
/// claims (huge, with control characters, not UTF-8) when the client's
/// `client_name` says so.
pub const MISBEHAVING_MAY_ACT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/misbehaving_may_act.wasm"));

/// Test fixture: a may-act plugin that uses `std::net`, so it imports
/// `wasi:sockets` and must be refused at upload.
pub const NOSY_MAY_ACT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nosy_may_act.wasm"));

/// Benchmark fixture: a DCR plugin that gives JWT tokens to clients whose
/// `client_name` contains `jwt` and the seed's may-act policy to those
/// whose name contains `may-act`.
pub const BENCH_DCR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench_dcr.wasm"));
