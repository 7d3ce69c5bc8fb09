//! Builds members of the `plugins/` workspace for wasm32-wasip2 and copies
//! the components into the calling build script's OUT_DIR, for
//! `include_bytes!`.
//!
//! Two crates embed guest components: `agentauth-seed-policies` (the two
//! policies the binary serves) and `agentauth-plugins` (examples and test
//! fixtures). Each builds only its own members, so a build of the binary
//! never compiles a fixture; this crate is the one copy of how.
//!
//! A fresh machine lacks the wasm32-wasip2 standard library and nothing
//! installs it automatically, so this adds it with rustup when missing.
//! The plugins build with their own target directory (`plugins/target`),
//! so the nested cargo never waits on the outer build's lock (two build
//! scripts running at once wait on each other's, which is harmless).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Builds `members` (package names in `plugins/`) in release mode and
/// copies each `<member>.wasm` (dashes as underscores) into OUT_DIR.
/// Panics, failing the build, when anything goes wrong.
pub fn build(members: &[&str]) {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..");
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    for path in ["Cargo.toml", "Cargo.lock"].iter().chain(members) {
        println!("cargo::rerun-if-changed={}", plugins.join(path).display());
    }
    println!("cargo::rerun-if-changed={}", root.join("wit").display());

    ensure_target();

    let target_dir = plugins.join("target");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--locked", "--target", TARGET, "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for member in members {
        cargo.args(["--package", member]);
    }
    clear_outer_build_env(&mut cargo);
    run(&mut cargo, "building the plugins in plugins/");

    for member in members {
        let name = member.replace('-', "_");
        let built = target_dir.join(TARGET).join("release").join(format!("{name}.wasm"));
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}

/// Adds the wasm32-wasip2 standard library when the toolchain lacks it.
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().expect("running rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot).join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    run(&mut rustup, "adding the wasm32-wasip2 target with rustup");
}

/// The outer build's settings (flags, wrappers such as clippy-driver, its
/// target directory) must not leak into the plugin build.
fn clear_outer_build_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
            || matches!(
                key,
                "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if outer {
            cmd.env_remove(key);
        }
    }
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()));
    assert!(status.success(), "{what} failed ({status})");
}
