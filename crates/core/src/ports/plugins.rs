//! A realm's plugins (versioned Wasm components, one hook kind per name)
//! and their compiled artifacts, shared by component hash.

use super::{AuditEntry, Result};
use crate::HookKind;

/// One stored version of a realm's plugin.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginRow {
    pub name: String,
    pub version: i64,
    pub hook: HookKind,
    pub sha256: String,
    pub component: Vec<u8>,
}

impl std::fmt::Debug for PluginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("hook", &self.hook)
            .field("sha256", &self.sha256)
            .field("size", &self.component.len())
            .finish()
    }
}

/// One version of a plugin, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginVersion {
    pub name: String,
    pub version: i64,
    pub hook: HookKind,
    pub sha256: String,
    pub size: i64,
    pub created_at: i64,
    pub active: bool,
    /// Who pushed it (the actor of its push), if it was pushed.
    pub uploaded_by: Option<String>,
    /// The language it was written in, if its producers sections said.
    pub language: Option<String>,
}

/// A plugin version to store.
#[derive(Debug)]
pub struct PluginPush<'a> {
    pub name: &'a str,
    pub hook: HookKind,
    pub sha256: &'a str,
    pub component: &'a [u8],
    pub activate: bool,
    /// The language it was written in, if known (see
    /// `agentauth_plugin_host::source_language`); who pushed it is the
    /// audit entry's actor.
    pub language: Option<&'a str>,
    /// The component compiled, and the engine it was compiled for: stored
    /// in the same commit as the version, so a refused push stores neither.
    pub artifact: Option<(&'a str, &'a [u8])>,
    /// What the realm may store in all; the push is refused past it.
    pub quota: PluginQuota,
}

/// What one realm may keep of plugins: versions (of all its plugins,
/// active or not) and their components' bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginQuota {
    pub versions: i64,
    pub bytes: i64,
}

impl PluginQuota {
    /// No bound, for callers that are not a realm's admins (the demo
    /// realm's provisioning).
    pub const UNLIMITED: Self = Self { versions: i64::MAX, bytes: i64::MAX };
}

/// What storing a plugin version did.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored {
        version: i64,
    },
    /// The name already serves another hook.
    HookMismatch {
        existing: HookKind,
    },
    /// The realm's plugins already use this much of its quota: with this
    /// push they would exceed it.
    OverQuota {
        versions: i64,
        bytes: i64,
    },
}

/// A realm's plugin versions, and compiled artifacts of their components.
pub trait PluginRepository: Send + Sync {
    /// Stores a new version of a plugin and makes it the active one;
    /// returns the version number (one more than the newest stored).
    fn add_plugin_version(
        &self,
        realm: &str,
        name: &str,
        hook: HookKind,
        sha256: &str,
        component: &[u8],
        now: i64,
    ) -> Result<i64>;

    /// The active version of each of the realm's plugins, by name.
    fn active_plugins(&self, realm: &str) -> Result<Vec<PluginRow>>;

    /// Every version of every plugin of the realm, without the component
    /// bytes, by name and version.
    fn plugin_versions(&self, realm: &str) -> Result<Vec<PluginVersion>>;

    /// The component bytes of one plugin version.
    fn plugin_component(&self, realm: &str, name: &str, version: i64) -> Result<Option<Vec<u8>>>;

    /// Stores a new plugin version, activating it if `activate`, with its
    /// artifact if given, and records `audit` (with the version) in the
    /// same commit. A name keeps one hook kind; a push past the quota
    /// stores nothing.
    fn push_plugin(&self, realm: &str, push: &PluginPush<'_>, audit: &AuditEntry) -> Result<PushOutcome>;

    /// Makes `version` of plugin `name` the active one (a rollback, when it
    /// is older); false if there is no such version. Records `audit`, with
    /// the version and its sha256, in the same commit.
    fn activate_plugin(&self, realm: &str, name: &str, version: i64, audit: &AuditEntry) -> Result<bool>;

    /// Deletes one version of a plugin, or all of them (`version: None`);
    /// returns how many went. The compiled artifacts of their components
    /// go too, unless a version still stored (in any realm) has the same
    /// bytes. Records `audit` in the same commit.
    fn delete_plugin(&self, realm: &str, name: &str, version: Option<i64>, audit: &AuditEntry) -> Result<usize>;

    /// How many plugin versions the realm stores, and their components'
    /// bytes in all.
    fn plugin_usage(&self, realm: &str) -> Result<(i64, i64)>;

    /// A compiled artifact of the component with this sha256, for
    /// `engine`, if one is stored.
    fn plugin_artifact(&self, component_sha256: &str, engine: &str) -> Result<Option<Vec<u8>>>;

    /// Keeps a compiled artifact; artifacts of engines other than `engine`
    /// for the same component are dropped, as no build of this server can
    /// use them again.
    fn put_plugin_artifact(&self, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()>;

    /// Deletes every stored compiled artifact, so the next load compiles
    /// again (as benchmarks of a first start need). Returns how many there
    /// were.
    fn delete_plugin_artifacts(&self) -> Result<usize>;

    /// The components that have a compiled artifact stored, by sha256.
    fn plugin_artifact_hashes(&self) -> Result<Vec<String>>;
}
