//! The versions that make up this build, for `agentauth --version` and
//! `GET /version`: agentauth's, the compiler's, wasmtime's, the plugin
//! contract's and the storage schemas'. Nothing about the host.

use serde_json::{Map, Value, json};

const AGENTAUTH: &str = env!("CARGO_PKG_VERSION");
/// Recorded by build.rs.
const RUSTC: &str = env!("AGENTAUTH_RUSTC_VERSION");
/// The locked wasmtime, recorded by build.rs.
const WASMTIME: &str = env!("AGENTAUTH_WASMTIME_VERSION");

/// The WIT package plugins are built against.
fn plugin_contract() -> String {
    format!("agentauth:policy@{}", agentauth_plugin_host::CONTRACT_VERSION)
}

/// The body of `GET /version`.
pub fn json() -> Map<String, Value> {
    [
        ("agentauth", json!(AGENTAUTH)),
        ("rustc", json!(RUSTC)),
        ("wasmtime", json!(WASMTIME)),
        ("plugin_contract", json!(plugin_contract())),
        ("sqlite_schema", json!(agentauth_store::SCHEMA_VERSION)),
        ("postgres_schema", json!(agentauth_store_postgres::SCHEMA_VERSION)),
    ]
    .into_iter()
    .map(|(name, version)| (name.to_string(), version))
    .collect()
}

/// `agentauth --version`: the version, then one line per component.
pub fn long() -> String {
    format!(
        "{AGENTAUTH}\nrustc {RUSTC}\nwasmtime {WASMTIME}\nplugin contract {}\nstorage schema: SQLite {}, PostgreSQL {}",
        plugin_contract(),
        agentauth_store::SCHEMA_VERSION,
        agentauth_store_postgres::SCHEMA_VERSION,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_versions_are_known_and_agree() {
        let versions = super::json();
        assert_eq!(versions["agentauth"], env!("CARGO_PKG_VERSION"));
        for name in ["rustc", "wasmtime"] {
            let version = versions[name].as_str().unwrap_or_default();
            assert!(version.starts_with(|c: char| c.is_ascii_digit()), "{name}: {version:?}");
        }
        assert!(super::long().contains(&format!("wasmtime {}", versions["wasmtime"].as_str().unwrap_or_default())));
    }
}
