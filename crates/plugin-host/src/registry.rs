//! Loading plugins: from bytes to a [`Plugin`] ready to run.
//!
//! A component is refused before it can run unless it exports exactly one
//! hook interface of this contract version and imports nothing but the
//! contract's own interfaces and WASI that grants nothing; each refusal
//! says by name what is wrong. It is then compiled (in a bounded child
//! process for uploads, see `compile`), linked and type-checked against
//! its hook's world once. Compiled code is shared by every plugin of the
//! same bytes, and its serialized artifact is kept by the caller
//! ([`ArtifactCache`]) so a restart need not compile again.

use std::fmt;
use std::sync::Arc;

use wasmtime::component::Component;

use crate::compile::{self, Compiler};
use crate::engine::PluginHost;
use crate::hooks::{Pre, export_name};
use crate::{CONTRACT_VERSION, HookKind, LoadError, MAX_COMPONENT_BYTES};

/// What a plugin may import: the contract's own interfaces, and WASI
/// interfaces that the host links to a context granting nothing (no
/// preopened directories, no environment, no arguments). Rust's standard
/// library, componentize-py and componentize-js import these. Sockets and
/// HTTP are refused by name, before linking.
const ALLOWED_IMPORTS: &[&str] = &[
    "agentauth:policy/log@",
    "agentauth:policy/types@",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
];

/// A compiled, type-checked plugin version, ready to run.
pub struct Plugin {
    name: String,
    version: i64,
    kind: HookKind,
    /// The component's SHA-256, lowercase hex: which bytes decided.
    sha256: Arc<str>,
    pre: Pre,
    /// Names this plugin among the idle instances; those of a plugin that
    /// is gone are dropped at the next sweep.
    id: Arc<()>,
    /// Keeps the compiled code listed as shared while this plugin lives.
    _compiled: Arc<Compiled>,
}

/// Compiled code, shared by every plugin loaded from the same bytes in
/// any realm: realms that run the same policy hold one copy of its machine
/// code. Each call still gets its own store and instance, so nothing but
/// the code is shared.
pub(crate) struct Compiled(Component);

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn kind(&self) -> HookKind {
        self.kind
    }

    /// The component's SHA-256, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The same compiled plugin under the version number the store gave it.
    pub fn with_version(self, version: i64) -> Self {
        Self { version, ..self }
    }

    /// Names this plugin among idle instances.
    pub(crate) fn id(&self) -> &Arc<()> {
        &self.id
    }

    /// The plugin's component, linked and checked against its world.
    pub(crate) fn pre(&self) -> &Pre {
        &self.pre
    }
}

impl PluginHost {
    /// Compiles `component` and checks, by name, that it exports exactly
    /// `kind`'s hook interface of this contract version and imports only
    /// what `ALLOWED_IMPORTS` allows; then type-checks it against the
    /// hook's world.
    pub fn load(&self, kind: HookKind, name: &str, version: i64, component: &[u8]) -> Result<Plugin, LoadError> {
        self.load_cached(kind, name, version, component, &NoCache)
    }

    /// As [`PluginHost::load`], reusing a precompiled artifact from `cache`
    /// when it holds one for this component and engine, and storing one
    /// after compiling otherwise.
    pub fn load_cached(
        &self,
        kind: HookKind,
        name: &str,
        version: i64,
        component: &[u8],
        cache: &dyn ArtifactCache,
    ) -> Result<Plugin, LoadError> {
        self.load_detecting(Some(kind), name, version, component, cache)
    }

    /// As [`PluginHost::load_cached`]; with `kind: None` the hook is the one
    /// the component exports.
    pub fn load_detecting(
        &self,
        kind: Option<HookKind>,
        name: &str,
        version: i64,
        component: &[u8],
        cache: &dyn ArtifactCache,
    ) -> Result<Plugin, LoadError> {
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError(format!(
                "plugin {name} is {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                component.len()
            )));
        }
        let key = ArtifactKey { component_sha256: sha256_hex(component), engine: self.engine_fingerprint.clone() };
        let shared = match self.already_compiled(&key.component_sha256) {
            Some(shared) => shared,
            None => {
                let compiled = match cache.get(&key).and_then(|artifact| self.deserialize(&artifact, &key)) {
                    Some(compiled) => compiled,
                    None => {
                        let (compiled, artifact) = self.compile(&format!("plugin {name} v{version}"), component)?;
                        match artifact {
                            Ok(artifact) => cache.put(&key, &artifact),
                            Err(e) => tracing::warn!(plugin = name, "cannot serialise the compiled plugin: {e}"),
                        }
                        compiled
                    }
                };
                self.remember_compiled(&key.component_sha256, compiled)
            }
        };
        let compiled = &shared.0;
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let ty = compiled.component_type();
                let exported: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
                HookKind::ALL.into_iter().find(|k| exported.contains(&export_name(*k))).ok_or_else(|| {
                    LoadError(format!(
                        "plugin {name} v{version} exports no hook of agentauth:policy@{CONTRACT_VERSION} \
                         (it exports: {})",
                        exported.join(", ")
                    ))
                })?
            }
        };
        self.check_interface(compiled, kind).map_err(|why| LoadError(format!("plugin {name} v{version} {why}")))?;
        let pre = self
            .linker
            .instantiate_pre(compiled)
            .map_err(|e| LoadError(format!("plugin {name} v{version} cannot be linked: {e:#}")))?;
        let wrong_world = |e: wasmtime::Error| {
            LoadError(format!("plugin {name} v{version} does not export the {} hook: {e:#}", kind.as_str()))
        };
        let pre = Pre::new(kind, pre).map_err(wrong_world)?;
        let sha256 = key.component_sha256.into();
        Ok(Plugin { name: name.to_string(), version, kind, sha256, pre, id: Arc::new(()), _compiled: shared })
    }

    /// Compiles `component`, in its turn, where [`Compiler`] says; returns
    /// it with its serialized artifact, for the cache.
    fn compile(
        &self,
        label: &str,
        component: &[u8],
    ) -> Result<(Component, Result<Vec<u8>, wasmtime::Error>), LoadError> {
        compile::precheck(label, component)?;
        let _turn = self.compiles.turn();
        let started = std::time::Instant::now();
        let compiled = self.compile_now(label, component);
        if let Some(observer) = &self.compile_observer {
            observer.compiled(started.elapsed(), compiled.is_ok());
        }
        compiled
    }

    /// Compiles `component` where [`Compiler`] says, its turn taken.
    fn compile_now(
        &self,
        label: &str,
        component: &[u8],
    ) -> Result<(Component, Result<Vec<u8>, wasmtime::Error>), LoadError> {
        match &self.compiler {
            Compiler::InProcess => {
                let compiled = Component::new(&self.engine, component)
                    .map_err(|e| LoadError(format!("{label} is not a valid component: {e:#}")))?;
                let artifact = compiled.serialize();
                Ok((compiled, artifact))
            }
            Compiler::Child { program, args, limits } => {
                let artifact = compile::compile_in_child(program, args, limits, label, component)?;
                let key = ArtifactKey { component_sha256: sha256_hex(component), engine: String::new() };
                let compiled = self
                    .deserialize(&artifact, &key)
                    .ok_or_else(|| LoadError(format!("{label} was compiled but its code could not be loaded")))?;
                Ok((compiled, Ok(artifact)))
            }
        }
    }

    /// The compiled component of these bytes, if a plugin still uses it.
    fn already_compiled(&self, sha256: &str) -> Option<Arc<Compiled>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner()).get(sha256).and_then(std::sync::Weak::upgrade)
    }

    /// Shares `component` with later loads of the same bytes, for as long
    /// as a plugin uses it.
    fn remember_compiled(&self, sha256: &str, component: Component) -> Arc<Compiled> {
        let shared = Arc::new(Compiled(component));
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.retain(|_, weak| weak.strong_count() > 0);
        compiled.insert(sha256.to_string(), Arc::downgrade(&shared));
        shared
    }

    /// Loads an artifact this server compiled and stored earlier.
    #[allow(unsafe_code)]
    fn deserialize(&self, artifact: &[u8], key: &ArtifactKey) -> Option<Component> {
        // SAFETY: `Component::deserialize` runs the artifact's machine code
        // unchecked, so it must only ever see bytes this server produced
        // with `Component::serialize`. Artifacts reach this function only
        // from the server's own database, keyed by the component's sha256
        // and this engine's fingerprint, written by `load_cached` above,
        // or straight from the compiling child (`compile.rs`): this same
        // binary, run by the server with arguments it chose, whose only
        // input is the component and whose output goes nowhere else. A
        // component that could subvert Cranelift in the child could equally
        // have done so in process, where compilation ran before.
        // Anyone able to write that database could equally replace signing
        // keys and client secrets, so it is trusted like the binary itself.
        // wasmtime also refuses artifacts from another version or config.
        match unsafe { Component::deserialize(&self.engine, artifact) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(sha256 = %key.component_sha256, "stored artifact refused, compiling again: {e}");
                None
            }
        }
    }

    /// Checks a compiled component's imports and exports by name, so a
    /// refusal says exactly what is wrong.
    fn check_interface(&self, compiled: &Component, kind: HookKind) -> Result<(), String> {
        let ty = compiled.component_type();
        for (import, _) in ty.imports(&self.engine) {
            let allowed = ALLOWED_IMPORTS.iter().any(|prefix| import.starts_with(prefix))
                && (!import.starts_with("agentauth:") || import.ends_with(&format!("@{CONTRACT_VERSION}")));
            if !allowed {
                return Err(format!(
                    "imports {import}, which is not allowed: plugins may import agentauth:policy/log \
                     and WASI cli, clocks, filesystem, io and random (granting nothing), \
                     never sockets or HTTP"
                ));
            }
        }
        let wanted = export_name(kind);
        let hooks: Vec<&str> =
            ty.exports(&self.engine).map(|(n, _)| n).filter(|n| n.starts_with("agentauth:")).collect();
        match hooks.as_slice() {
            [only] if *only == wanted => Ok(()),
            [] => Err(format!("exports no hook; a {} plugin exports {wanted}", kind.as_str())),
            [only] => Err(format!("exports {only}, not {wanted}")),
            many => Err(format!("exports {} hooks ({}); a plugin serves exactly one", many.len(), many.join(", "))),
        }
    }
}

/// Identifies a precompiled artifact: the component it came from and the
/// engine settings it was compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    pub component_sha256: String,
    pub engine: String,
}

/// Where precompiled plugins are kept between runs. Only this server's own
/// `Component::serialize` output may be put in it.
pub trait ArtifactCache {
    fn get(&self, key: &ArtifactKey) -> Option<Vec<u8>>;
    fn put(&self, key: &ArtifactKey, artifact: &[u8]);
}

/// A cache that keeps nothing.
#[derive(Debug)]
pub struct NoCache;

impl ArtifactCache for NoCache {
    fn get(&self, _: &ArtifactKey) -> Option<Vec<u8>> {
        None
    }

    fn put(&self, _: &ArtifactKey, _: &[u8]) {}
}

/// Lower-case hex SHA-256, as plugin versions are identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
