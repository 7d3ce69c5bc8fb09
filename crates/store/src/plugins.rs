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

use crate::audit::record;
use crate::coordination::record_change;
use crate::engine::{execute, query_all, query_opt, query_row};
use crate::stored::Stored;
use crate::{
    AuditEntry, ChangeTopic, PluginPush, PluginRepository, PluginRow, PluginVersion, PushOutcome, Result, Store,
};

/// The version number the next version of plugin `name` gets.
const NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE realm = ?1 AND name = ?2";
const DEACTIVATE: &str = "UPDATE plugins SET active = 0 WHERE realm = ?1 AND name = ?2";
const INSERT_VERSION: &str = "INSERT INTO plugins
     (realm, name, version, hook, sha256, component, created_at, active, uploaded_by, language)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

impl PluginRepository for Store {
    fn add_plugin_version(
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
            let (uploaded_by, language) = (None::<&str>, None::<&str>);
            let values =
                params![realm, name, version, hook.as_str(), sha256, component, now, true, uploaded_by, language];
            execute(tx, INSERT_VERSION, values)?;
            record_change(tx, realm, ChangeTopic::Plugins, None)?;
            Ok(version)
        })
    }

    fn active_plugins(&self, realm: &str) -> Result<Vec<PluginRow>> {
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

    fn plugin_versions(&self, realm: &str) -> Result<Vec<PluginVersion>> {
        query_all(
            &self.db.conn(),
            "SELECT name, version, hook, sha256, length(component), created_at, active, uploaded_by, language
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
                    uploaded_by: r.get(7)?,
                    language: r.get(8)?,
                })
            },
        )
    }

    fn plugin_component(&self, realm: &str, name: &str, version: i64) -> Result<Option<Vec<u8>>> {
        query_opt(
            &self.db.conn(),
            "SELECT component FROM plugins WHERE realm = ?1 AND name = ?2 AND version = ?3",
            params![realm, name, version],
            |r| r.get(0),
        )
    }

    fn push_plugin(&self, realm: &str, push: &PluginPush<'_>, audit: &AuditEntry) -> Result<PushOutcome> {
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
                    push.activate,
                    audit.actor,
                    push.language
                ],
            )?;
            if let Some((engine, artifact)) = push.artifact {
                put_artifact(tx, push.sha256, engine, artifact, audit.at)?;
            }
            record(tx, realm, &AuditEntry { version: Some(version), ..audit.clone() })?;
            record_change(tx, realm, ChangeTopic::Plugins, None)?;
            Ok(PushOutcome::Stored { version })
        })
    }

    fn activate_plugin(&self, realm: &str, name: &str, version: i64, audit: &AuditEntry) -> Result<bool> {
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
            record_change(tx, realm, ChangeTopic::Plugins, None)?;
            Ok(true)
        })
    }

    fn delete_plugin(&self, realm: &str, name: &str, version: Option<i64>, audit: &AuditEntry) -> Result<usize> {
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
                record_change(tx, realm, ChangeTopic::Plugins, None)?;
            }
            Ok(deleted)
        })
    }

    fn plugin_usage(&self, realm: &str) -> Result<(i64, i64)> {
        plugin_usage(&self.db.conn(), realm)
    }

    // ---- compiled artifacts ----

    fn plugin_artifact(&self, component_sha256: &str, engine: &str) -> Result<Option<Vec<u8>>> {
        query_opt(
            &self.db.conn(),
            "SELECT artifact FROM plugin_artifacts WHERE component_sha256 = ?1 AND engine = ?2",
            params![component_sha256, engine],
            |r| r.get(0),
        )
    }

    fn put_plugin_artifact(&self, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()> {
        self.db.write(|tx| put_artifact(tx, component_sha256, engine, artifact, now))
    }

    fn delete_plugin_artifacts(&self) -> Result<usize> {
        self.db.write(|tx| execute(tx, "DELETE FROM plugin_artifacts", []))
    }

    fn plugin_artifact_hashes(&self) -> Result<Vec<String>> {
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
    use agentauth_store_conformance::fixtures::{audit, pushed};

    use super::*;
    use crate::ErrorKind;
    use crate::prelude::*;

    #[test]
    fn a_plugin_of_an_unknown_hook_is_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.add_plugin_version("alpha", "p", HookKind::Dcr, "aa", b"v1", 0).unwrap();
        let sql = "UPDATE plugins SET hook = 'no-such-hook' WHERE name = 'p'";
        assert_eq!(store.db.write(|c| execute(c, sql, [])).unwrap(), 1);
        for e in [store.plugin_versions("alpha").unwrap_err(), store.active_plugins("alpha").unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
        let push = PluginPush { hook: HookKind::Dcr, ..pushed("p", "bb", b"v2") };
        let e = store.push_plugin("alpha", &push, &audit("push")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
}
