//! Records the versions `agentauth --version` and `GET /version` report
//! that the code cannot see: the compiler's, and wasmtime's (the locked
//! one, which wasmtime does not expose).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=crates/cli/build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|version| version.trim().trim_start_matches("rustc ").to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AGENTAUTH_RUSTC_VERSION={rustc}");
    let wasmtime = std::fs::read_to_string("Cargo.lock")
        .ok()
        .and_then(|lock| locked_version(&lock, "wasmtime"))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AGENTAUTH_WASMTIME_VERSION={wasmtime}");
}

/// The version of package `name` in a Cargo.lock: the `version` line
/// after its `name` line.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    lines.find(|line| line.trim() == wanted)?;
    let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
    Some(version.to_string())
}
