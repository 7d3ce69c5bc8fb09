//! Compiling uploaded components within bounds.
//!
//! wasmtime cannot interrupt a compilation, and a component can be built
//! to make Cranelift work for an hour (one enormous function is enough).
//! So the server compiles in a child process: the `agentauth` binary run
//! again with a hidden subcommand, which caps its own CPU time and address
//! space (`RLIMIT_CPU`, `RLIMIT_AS`) before it reads the component on
//! stdin, compiles it on one thread and writes the serialized artifact on
//! stdout. The parent adds a wall-clock deadline, kills the child past it,
//! and loads the artifact with its own engine, whose settings that shape
//! compiled code are the child's ([`engine_config`]); wasmtime checks that
//! they agree before it loads anything.
//!
//! Compilations also queue server-wide behind [`MAX_CONCURRENT_COMPILES`],
//! so uploads, wherever they come from, never take more than that many
//! cores from the requests of other realms.
//!
//! Library users and tests without the binary compile in process
//! ([`Compiler::InProcess`]): no bound then but the queue, so only for
//! components they trust.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine};

use crate::{LoadError, MAX_COMPONENT_BYTES};

/// CPU time one compilation may take, in seconds. Compiling the Python
/// and JavaScript policies (18 and 12 MB, an interpreter each) on one core
/// took 7.5 and 8.8 CPU-seconds here; a 383 KB function built to be slow
/// to compile takes 45.
pub const COMPILE_CPU_SECONDS: u64 = 30;
/// Address space one compiling process may map, in bytes. Compiling the
/// Python or JavaScript policy peaks at 330 MiB resident, and succeeds
/// within 512 MiB of address space.
pub const COMPILE_MEMORY_BYTES: u64 = 1 << 30;
/// Compilations that may run at once, server-wide; the rest wait their
/// turn. One leaves the other cores to the requests.
pub const MAX_CONCURRENT_COMPILES: usize = 1;

/// Largest function body accepted, in bytes of Wasm code: a first, cheap
/// line against components built to be slow to compile, checked before a
/// compilation is queued. The Python policy's largest function has 427 KB
/// of code, the JavaScript policy's 172 KB. The bound itself is the
/// compilation's CPU time.
pub const MAX_FUNCTION_BODY_BYTES: usize = 1 << 20;

/// Looks through a component, nested modules included, without compiling
/// it: refuses what cannot be a component, and functions over
/// [`MAX_FUNCTION_BODY_BYTES`].
pub(crate) fn precheck(label: &str, component: &[u8]) -> Result<(), LoadError> {
    use wasmparser::{Parser, Payload};
    for payload in Parser::new(0).parse_all(component) {
        match payload {
            Err(e) => return Err(LoadError(format!("{label} is not a valid component: {e}"))),
            Ok(Payload::CodeSectionEntry(body)) if body.range().len() > MAX_FUNCTION_BODY_BYTES => {
                return Err(LoadError(format!(
                    "{label} has a function of {} bytes of code; the limit is {MAX_FUNCTION_BODY_BYTES}",
                    body.range().len()
                )));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The bounds of one compilation in a child process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU seconds (`RLIMIT_CPU` of the child).
    pub cpu_seconds: u64,
    /// Bytes of address space (`RLIMIT_AS` of the child).
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self { cpu_seconds: COMPILE_CPU_SECONDS, memory_bytes: COMPILE_MEMORY_BYTES }
    }
}

impl CompileLimits {
    /// The wall-clock deadline of a compilation: twice its CPU time and
    /// then some, as a busy machine gives the child less than a core. A
    /// child that sleeps or blocks uses no CPU; this ends it all the same.
    pub fn wall_clock(&self) -> Duration {
        Duration::from_secs(self.cpu_seconds.saturating_mul(2).saturating_add(5))
    }
}

/// Where plugins are compiled.
#[derive(Clone, Debug, Default)]
pub enum Compiler {
    /// In this process, unbounded but for the server-wide queue: for
    /// tools and tests that compile components they trust.
    #[default]
    InProcess,
    /// In a child process, `program` with `args`, which must run
    /// [`run_compile_child`] (the `agentauth` binary's hidden
    /// `compile-plugin` subcommand), within `limits`.
    Child { program: PathBuf, args: Vec<OsString>, limits: CompileLimits },
}

/// The engine settings that shape compiled code, shared by the host's
/// engine and the compiling child's, so that the host can load what the
/// child compiled. The host adds its instance allocator; the child does
/// not need one.
pub(crate) fn engine_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // A plugin that recurses without bound hits this and traps.
    config.max_wasm_stack(512 << 10);
    config
}

/// The compiling child: caps its CPU time and address space, reads a
/// component on stdin, and writes its serialized artifact on stdout.
/// Returns the process's exit code: 0, [`INVALID_COMPONENT_EXIT`] for a
/// component that does not compile (the reason, meant for the uploader, on
/// stderr), or 1 if the child could not set itself up. Past its CPU time
/// the kernel ends the process; past its memory an allocation fails and
/// the process aborts.
pub fn run_compile_child(limits: CompileLimits) -> i32 {
    match compile_child(limits) {
        Ok(()) => 0,
        Err((code, why)) => {
            eprintln!("{why}");
            code
        }
    }
}

fn compile_child(limits: CompileLimits) -> Result<(), (i32, String)> {
    use rlimit::Resource;
    let setup = |e: String| (1, e);
    // The soft limit signals (SIGXCPU ends the process), the hard one kills.
    Resource::CPU
        .set(limits.cpu_seconds, limits.cpu_seconds.saturating_add(1))
        .map_err(|e| setup(format!("setting RLIMIT_CPU: {e}")))?;
    Resource::AS.set(limits.memory_bytes, limits.memory_bytes).map_err(|e| setup(format!("setting RLIMIT_AS: {e}")))?;
    // Both ends (SIGXCPU, an abort) would otherwise dump a core of up to
    // the whole address space.
    Resource::CORE.set(0, 0).map_err(|e| setup(format!("setting RLIMIT_CORE: {e}")))?;

    let mut component = Vec::new();
    std::io::stdin()
        .take(MAX_COMPONENT_BYTES as u64 + 1)
        .read_to_end(&mut component)
        .map_err(|e| setup(format!("reading the component: {e}")))?;
    if component.len() > MAX_COMPONENT_BYTES {
        return Err((INVALID_COMPONENT_EXIT, format!("the component is over {MAX_COMPONENT_BYTES} bytes")));
    }
    let mut config = engine_config();
    // One core: the bound is on CPU time, and the other cores serve requests.
    config.parallel_compilation(false);
    let engine = Engine::new(&config).map_err(|e| setup(format!("wasmtime engine: {e}")))?;
    let artifact = engine.precompile_component(&component).map_err(|e| (INVALID_COMPONENT_EXIT, format!("{e:#}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&artifact).and_then(|()| out.flush()).map_err(|e| setup(format!("writing the artifact: {e}")))
}

/// The exit code of a child that refused the component; its reason is on
/// stderr.
pub const INVALID_COMPONENT_EXIT: i32 = 3;

/// A counting semaphore: compilations waiting for their turn.
#[derive(Debug)]
pub(crate) struct CompileQueue {
    running: Mutex<usize>,
    done: Condvar,
    limit: usize,
}

/// A turn to compile, given back when dropped.
pub(crate) struct Turn<'a>(&'a CompileQueue);

impl CompileQueue {
    pub(crate) fn new(limit: usize) -> Self {
        Self { running: Mutex::new(0), done: Condvar::new(), limit: limit.max(1) }
    }

    /// Waits for a turn.
    pub(crate) fn turn(&self) -> Turn<'_> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.limit {
            running = self.done.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        self.0.done.notify_one();
    }
}

/// Compiles `component` in a child process (see the module doc) and
/// returns the serialized artifact, or why there is none: the component's
/// own fault as [`LoadError`] text naming the bound it broke.
pub(crate) fn compile_in_child(
    program: &PathBuf,
    args: &[OsString],
    limits: &CompileLimits,
    label: &str,
    component: &[u8],
) -> Result<Vec<u8>, LoadError> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .arg("--cpu-seconds")
        .arg(limits.cpu_seconds.to_string())
        .arg("--memory-bytes")
        .arg(limits.memory_bytes.to_string())
        .env_clear()
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LoadError(format!("cannot start the plugin compiler ({}): {e}", program.display())))?;
    // The pipes are drained by threads of their own, so neither side ever
    // waits on a full pipe while the deadline runs.
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A child that died early closes the pipe: its status says why.
                let _ = stdin.write_all(component);
            }
        });
        let artifact = scope.spawn(move || {
            let mut artifact = Vec::new();
            if let Some(stdout) = stdout {
                let _ = stdout.take(limits.memory_bytes).read_to_end(&mut artifact);
            }
            artifact
        });
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            if let Some(stderr) = stderr {
                let _ = stderr.take(64 << 10).read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).trim().to_string()
        });
        let deadline = started + limits.wall_clock();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LoadError(format!("waiting for the plugin compiler: {e}")));
                }
            }
        };
        let artifact = artifact.join().unwrap_or_default();
        let errors = errors.join().unwrap_or_default();
        let took = started.elapsed();
        let cpu = limits.cpu_seconds;
        let memory_mib = limits.memory_bytes >> 20;
        let Some(status) = status else {
            tracing::warn!(plugin = label, ?took, "compilation killed past its wall-clock deadline");
            return Err(LoadError(format!(
                "{label} did not compile within {} s: refused (compilation is bounded to {cpu} CPU-seconds)",
                limits.wall_clock().as_secs()
            )));
        };
        if status.success() {
            tracing::debug!(plugin = label, ?took, bytes = artifact.len(), "compiled in a child process");
            return Ok(artifact);
        }
        use std::os::unix::process::ExitStatusExt;
        const SIGABRT: i32 = 6;
        const SIGKILL: i32 = 9;
        const SIGXCPU: i32 = 24;
        tracing::warn!(plugin = label, ?took, %status, "compilation failed: {errors}");
        Err(LoadError(match (status.code(), status.signal()) {
            (Some(INVALID_COMPONENT_EXIT), _) => format!("{label} is not a valid component: {errors}"),
            (_, Some(SIGXCPU | SIGKILL)) => {
                format!("{label} needs more than the {cpu} CPU-seconds allowed to compile: refused")
            }
            (_, Some(SIGABRT)) => {
                format!("{label} needs more than the {memory_mib} MiB allowed to compile: refused")
            }
            _ => format!("{label} could not be compiled ({status}): {errors}"),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiling_child_and_the_host_build_compatible_code() {
        use std::hash::{Hash, Hasher};
        let hash = |engine: &Engine| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.finish()
        };
        let mut child = engine_config();
        child.parallel_compilation(false);
        let child = Engine::new(&child).unwrap();
        let host = crate::PluginHost::new().unwrap();
        assert_eq!(hash(&child), hash(&host.engine), "the host could not load what the child compiles");
    }

    #[test]
    fn compilations_past_the_limit_wait_their_turn() {
        let queue = std::sync::Arc::new(CompileQueue::new(1));
        let first = queue.turn();
        let waiter = {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || {
                let started = Instant::now();
                drop(queue.turn());
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(first);
        assert!(waiter.join().unwrap() >= Duration::from_millis(90));
    }
}
