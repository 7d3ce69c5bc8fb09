//! `agentauth plugin test`: run a plugin on one test case, with the
//! server's limits, and print its decision, like `opa eval`.
//!
//! A case is a JSON file, as `agentauth_plugin_host::case` describes it
//! (`{}` works), plus `"limits": {"timeout_ms": 100, "memory_bytes":
//! 67108864}`. Exit status: 0 when the plugin decided (allowed or
//! refused), 1 when it failed or the case is invalid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentauth_plugin_host::{HookKind, Limits, PluginHost};
use anyhow::{Context, anyhow};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component (.wasm).
    file: PathBuf,
    /// The hook it serves: dcr, may-act, token, scope, authorize or assertion.
    #[arg(long)]
    hook: String,
    /// The test case (JSON); `{}` when omitted.
    #[arg(long)]
    input: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let kind = HookKind::parse(&args.hook)
        .ok_or_else(|| anyhow!("unknown hook {:?}; hooks: {}", args.hook, HookKind::list()))?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let case: Value = match &args.input {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => json!({}),
    };
    let limits = Limits {
        timeout: Duration::from_millis(case["limits"]["timeout_ms"].as_u64().unwrap_or(100)),
        memory: case["limits"]["memory_bytes"].as_u64().map_or(Limits::default().memory, |m| m as usize),
    };
    let host = PluginHost::new()?;
    let plugin = host.load(kind, "under-test", 1, &bytes)?;
    let outcome = agentauth_plugin_host::run_case(&host, &plugin, &limits, "test", &case).map_err(|e| anyhow!(e))?;
    let (printed, code) = (outcome.answer, if outcome.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    println!("{}", serde_json::to_string_pretty(&printed)?);
    Ok(code)
}
