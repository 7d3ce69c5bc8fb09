//! A realm's plugins (versioned Wasm components, one hook kind per name)
//! and their compiled artifacts.
//!
//! Components are stored whole, by version; one version per name is
//! active. Compiled artifacts are shared by every version with the same
//! component bytes (keyed by its sha256 and the engine that compiled it),
//! and live only as long as some stored version has those bytes, so a
//! deleted plugin or realm leaves no compiled code behind.

use agentauth_core::HookKind;
use rusqlite::{Connection, params};

use crate::audit::{AuditEntry, record};
use crate::engine::{execute, query_all, query_opt, query_row};
use crate::stored::Stored;
use crate::{Result, Store};

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
}

/// A plugin version to store.
#[derive(Debug)]
pub struct PluginPush<'a> {
    pub name: &'a str,
    pub hook: HookKind,
    pub sha256: &'a str,
    pub component: &'a [u8],
    pub activate: bool,
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

/// The version number the next version of plugin `name` gets.
const NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE realm = ?1 AND name = ?2";
const DEACTIVATE: &str = "UPDATE plugins SET active = 0 WHERE realm = ?1 AND name = ?2";
const INSERT_VERSION: &str = "INSERT INTO plugins (realm, name, version, hook, sha256, component, created_at, active)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

impl Store {
    /// Stores a new version of a plugin and makes it the active one;
    /// returns the version number.
    pub fn add_plugin_version(
        &self,
        realm: &str,
        name: &str,
        hook: HookKind,
        sha256: &str,
        component: &[u8],
        now: i64,
    ) -> Result<i64> {
        self.db.write(|tx| {
            let version: i64 = query_row(tx, NEXT_VERSION, params![realm, name], |r| r.get(0))?;
            execute(tx, DEACTIVATE, params![realm, name])?;
            execute(tx, INSERT_VERSION, params![realm, name, version, hook.as_str(), sha256, component, now, true])?;
            Ok(version)
        })
    }

    /// The active version of each of the realm's plugins.
    pub fn active_plugins(&self, realm: &str) -> Result<Vec<PluginRow>> {
        query_all(
            &self.db.conn(),
            "SELECT name, version, hook, sha256, component FROM plugins WHERE realm = ?1 AND active = 1 ORDER BY name",
            [realm],
            |r| {
                Ok(PluginRow {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    hook: r.get::<_, Stored<HookKind>>(2)?.0,
                    sha256: r.get(3)?,
                    component: r.get(4)?,
                })
            },
        )
    }

    /// Every version of every plugin of the realm, without the component
    /// bytes, by name and version.
    pub fn plugin_versions(&self, realm: &str) -> Result<Vec<PluginVersion>> {
        query_all(
            &self.db.conn(),
            "SELECT name, version, hook, sha256, length(component), created_at, active
             FROM plugins WHERE realm = ?1 ORDER BY name, version",
            [realm],
            |r| {
                Ok(PluginVersion {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    hook: r.get::<_, Stored<HookKind>>(2)?.0,
                    sha256: r.get(3)?,
                    size: r.get(4)?,
                    created_at: r.get(5)?,
                    active: r.get(6)?,
                })
            },
        )
    }

    /// The component bytes of one plugin version.
    pub fn plugin_component(&self, realm: &str, name: &str, version: i64) -> Result<Option<Vec<u8>>> {
        query_opt(
            &self.db.conn(),
            "SELECT component FROM plugins WHERE realm = ?1 AND name = ?2 AND version = ?3",
            params![realm, name, version],
            |r| r.get(0),
        )
    }

    /// Stores a new plugin version, activating it if `activate`, and
    /// records `audit` in the same commit. A name keeps one hook kind.
    pub fn push_plugin(&self, realm: &str, push: &PluginPush<'_>, audit: &AuditEntry) -> Result<PushOutcome> {
        self.db.write(|tx| {
            let existing = query_opt(
                tx,
                "SELECT hook FROM plugins WHERE realm = ?1 AND name = ?2 LIMIT 1",
                params![realm, push.name],
                |r| Ok(r.get::<_, Stored<HookKind>>(0)?.0),
            )?;
            if let Some(hook) = existing.filter(|h| *h != push.hook) {
                return Ok(PushOutcome::HookMismatch { existing: hook });
            }
            let (versions, bytes) = plugin_usage(tx, realm)?;
            let size = i64::try_from(push.component.len()).unwrap_or(i64::MAX);
            if versions >= push.quota.versions || bytes.saturating_add(size) > push.quota.bytes {
                return Ok(PushOutcome::OverQuota { versions, bytes });
            }
            let version: i64 = query_row(tx, NEXT_VERSION, params![realm, push.name], |r| r.get(0))?;
            if push.activate {
                execute(tx, DEACTIVATE, params![realm, push.name])?;
            }
            execute(
                tx,
                INSERT_VERSION,
                params![
                    realm,
                    push.name,
                    version,
                    push.hook.as_str(),
                    push.sha256,
                    push.component,
                    audit.at,
                    push.activate
                ],
            )?;
            if let Some((engine, artifact)) = push.artifact {
                put_artifact(tx, push.sha256, engine, artifact, audit.at)?;
            }
            record(tx, realm, &AuditEntry { version: Some(version), ..audit.clone() })?;
            Ok(PushOutcome::Stored { version })
        })
    }

    /// Makes `version` of plugin `name` the active one; returns false if
    /// there is no such version. Records `audit`, with the version and its
    /// sha256, in the same commit.
    pub fn activate_plugin(&self, realm: &str, name: &str, version: i64, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let Some(sha256) = version_sha256(tx, realm, name, version)? else {
                return Ok(false);
            };
            execute(
                tx,
                "UPDATE plugins SET active = (version = ?3) WHERE realm = ?1 AND name = ?2",
                params![realm, name, version],
            )?;
            record(tx, realm, &AuditEntry { version: Some(version), sha256: Some(sha256), ..audit.clone() })?;
            Ok(true)
        })
    }

    /// Deletes one version of a plugin, or all of them (`version: None`);
    /// returns how many rows went. The compiled artifacts of their
    /// components go too, unless a version still stored (in any realm)
    /// has the same bytes. Records `audit` in the same commit.
    pub fn delete_plugin(&self, realm: &str, name: &str, version: Option<i64>, audit: &AuditEntry) -> Result<usize> {
        self.db.write(|tx| {
            let sha256 = match version {
                Some(v) => version_sha256(tx, realm, name, v)?,
                None => None,
            };
            let deleted = execute(
                tx,
                "DELETE FROM plugins WHERE realm = ?1 AND name = ?2 AND (?3 IS NULL OR version = ?3)",
                params![realm, name, version],
            )?;
            if deleted > 0 {
                delete_unused_artifacts(tx)?;
                record(tx, realm, &AuditEntry { version, sha256, ..audit.clone() })?;
            }
            Ok(deleted)
        })
    }

    /// How many plugin versions the realm stores, and their components'
    /// bytes in all.
    pub fn plugin_usage(&self, realm: &str) -> Result<(i64, i64)> {
        plugin_usage(&self.db.conn(), realm)
    }

    // ---- compiled artifacts ----

    /// A precompiled plugin artifact, if one is stored.
    pub fn plugin_artifact(&self, component_sha256: &str, engine: &str) -> Result<Option<Vec<u8>>> {
        query_opt(
            &self.db.conn(),
            "SELECT artifact FROM plugin_artifacts WHERE component_sha256 = ?1 AND engine = ?2",
            params![component_sha256, engine],
            |r| r.get(0),
        )
    }

    /// Keeps a precompiled plugin artifact; artifacts of engines other than
    /// `engine` for the same component are dropped, as no build of this
    /// server can use them again.
    pub fn put_plugin_artifact(&self, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()> {
        self.db.write(|tx| put_artifact(tx, component_sha256, engine, artifact, now))
    }

    /// Deletes every stored compiled artifact, so the next load compiles
    /// again (benchmarks of a first start). Returns how many there were.
    pub fn delete_plugin_artifacts(&self) -> Result<usize> {
        self.db.write(|tx| execute(tx, "DELETE FROM plugin_artifacts", []))
    }

    /// The components that have a compiled artifact stored, by sha256.
    pub fn plugin_artifact_hashes(&self) -> Result<Vec<String>> {
        query_all(&self.db.conn(), "SELECT DISTINCT component_sha256 FROM plugin_artifacts ORDER BY 1", [], |r| {
            r.get(0)
        })
    }
}

fn put_artifact(tx: &Connection, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()> {
    execute(
        tx,
        "DELETE FROM plugin_artifacts WHERE component_sha256 = ?1 AND engine <> ?2",
        params![component_sha256, engine],
    )?;
    execute(
        tx,
        "INSERT OR REPLACE INTO plugin_artifacts (component_sha256, engine, artifact, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![component_sha256, engine, artifact, now],
    )?;
    Ok(())
}

fn plugin_usage(conn: &Connection, realm: &str) -> Result<(i64, i64)> {
    query_row(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(length(component)), 0) FROM plugins WHERE realm = ?1",
        [realm],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Deletes the compiled artifacts whose component no stored version has.
pub(crate) fn delete_unused_artifacts(tx: &Connection) -> Result<usize> {
    execute(
        tx,
        "DELETE FROM plugin_artifacts
         WHERE NOT EXISTS (SELECT 1 FROM plugins p WHERE p.sha256 = plugin_artifacts.component_sha256)",
        [],
    )
}

fn version_sha256(tx: &Connection, realm: &str, name: &str, version: i64) -> Result<Option<String>> {
    query_opt(
        tx,
        "SELECT sha256 FROM plugins WHERE realm = ?1 AND name = ?2 AND version = ?3",
        params![realm, name, version],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_plugin_of_an_unknown_hook_is_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.add_plugin_version("alpha", "p", HookKind::Dcr, "aa", b"v1", 0).unwrap();
        let sql = "UPDATE plugins SET hook = 'authorize' WHERE name = 'p'";
        assert_eq!(store.db.write(|c| execute(c, sql, [])).unwrap(), 1);
        for e in [store.plugin_versions("alpha").unwrap_err(), store.active_plugins("alpha").unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
        let push = PluginPush { hook: HookKind::Dcr, ..pushed("p", "bb", b"v2") };
        let e = store.push_plugin("alpha", &push, &audit("push")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
    use crate::fixtures::{audit, pushed};

    #[test]
    fn pushes_activations_and_deletions_are_audited_in_the_same_commit() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let push = |c: &'static [u8], activate| PluginPush {
            name: "p",
            hook: HookKind::MayAct,
            sha256: "aa",
            component: c,
            activate,
            artifact: None,
            quota: PluginQuota::UNLIMITED,
        };
        assert_eq!(
            store.push_plugin("alpha", &push(b"v1", true), &audit("push")).unwrap(),
            PushOutcome::Stored { version: 1 }
        );
        assert_eq!(
            store.push_plugin("alpha", &push(b"v2", false), &audit("push")).unwrap(),
            PushOutcome::Stored { version: 2 }
        );
        let dcr = PluginPush { hook: HookKind::Dcr, ..push(b"v3", true) };
        assert_eq!(
            store.push_plugin("alpha", &dcr, &audit("push")).unwrap(),
            PushOutcome::HookMismatch { existing: HookKind::MayAct }
        );
        let active = |s: &Store| {
            s.plugin_versions("alpha").unwrap().iter().filter(|v| v.active).map(|v| v.version).collect::<Vec<_>>()
        };
        assert_eq!(active(&store), vec![1], "an inactive push leaves the active version");
        assert!(store.activate_plugin("alpha", "p", 2, &audit("activate")).unwrap());
        assert_eq!(active(&store), vec![2]);
        assert!(!store.activate_plugin("alpha", "p", 9, &audit("activate")).unwrap());
        assert_eq!(store.plugin_component("alpha", "p", 2).unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap(), 1);
        let log: Vec<_> =
            store.audit("alpha", 0, 100).unwrap().into_iter().map(|(_, e)| (e.action, e.version)).collect();
        assert_eq!(
            log,
            [
                ("push".into(), Some(1)),
                ("push".into(), Some(2)),
                ("activate".into(), Some(2)),
                ("delete".into(), Some(1))
            ]
        );
    }

    fn artifacts(store: &Store) -> Vec<String> {
        ["aa", "bb"]
            .into_iter()
            .filter(|h| store.plugin_artifact(h, "engine").unwrap().is_some())
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_deleted_version_takes_its_artifact_unless_stored_bytes_still_use_it() {
        let store = Store::open_in_memory().unwrap();
        for realm in ["alpha", "beta"] {
            store.create_realm_if_absent(realm, "{}", 0).unwrap();
        }
        store.push_plugin("alpha", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
        store.push_plugin("alpha", &pushed("p", "bb", b"v2"), &audit("push")).unwrap();
        store.push_plugin("beta", &pushed("q", "bb", b"v2"), &audit("push")).unwrap();
        assert_eq!(artifacts(&store), ["aa", "bb"]);

        store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap();
        assert_eq!(artifacts(&store), ["bb"], "version 1's artifact went with it");
        store.delete_plugin("alpha", "p", None, &audit("delete")).unwrap();
        assert_eq!(artifacts(&store), ["bb"], "realm beta still stores the same bytes");
        store.delete_realm("beta", &audit("delete-realm")).unwrap();
        assert!(artifacts(&store).is_empty(), "the last version gone, so is its artifact");
    }

    #[test]
    fn a_refused_push_stores_neither_the_version_nor_its_artifact() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let quota = PluginQuota { versions: 2, bytes: 5 };
        let within = PluginPush { quota, ..pushed("p", "aa", b"abc") };
        assert_eq!(store.push_plugin("alpha", &within, &audit("push")).unwrap(), PushOutcome::Stored { version: 1 });
        let too_big = PluginPush { quota, ..pushed("p", "bb", b"abc") };
        assert_eq!(
            store.push_plugin("alpha", &too_big, &audit("push")).unwrap(),
            PushOutcome::OverQuota { versions: 1, bytes: 3 }
        );
        let mismatch = PluginPush { hook: HookKind::Dcr, ..pushed("p", "bb", b"a") };
        assert!(matches!(
            store.push_plugin("alpha", &mismatch, &audit("push")).unwrap(),
            PushOutcome::HookMismatch { .. }
        ));
        assert_eq!(store.plugin_usage("alpha").unwrap(), (1, 3));
        assert_eq!(artifacts(&store), ["aa"]);
        let small = PluginPush { quota, ..pushed("p", "bb", b"ab") };
        assert_eq!(store.push_plugin("alpha", &small, &audit("push")).unwrap(), PushOutcome::Stored { version: 2 });
        let third = PluginPush { quota, ..pushed("p", "cc", b"") };
        assert!(matches!(store.push_plugin("alpha", &third, &audit("push")).unwrap(), PushOutcome::OverQuota { .. }));
    }

    #[test]
    fn plugin_versions_count_up_and_the_newest_is_active() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        assert_eq!(store.add_plugin_version("alpha", "p", HookKind::MayAct, "aa", b"v1", 0).unwrap(), 1);
        assert_eq!(store.add_plugin_version("alpha", "p", HookKind::MayAct, "bb", b"v2", 0).unwrap(), 2);
        let active = store.active_plugins("alpha").unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].version, active[0].component.as_slice()), (2, &b"v2"[..]));
    }
}
