//! A realm's plugins (versioned Wasm components, one hook kind per name)
//! and their compiled artifacts.
//!
//! Components are stored whole, by version; one version per name is
//! active. Writes to a realm's plugins lock the realm's row first, so
//! racing pushes (of any process) number their versions one after the
//! other and never pass the quota together. Compiled artifacts are shared
//! by every version with the same component bytes (keyed by its sha256 and
//! the engine that compiled it), and live only as long as some stored
//! version has those bytes. Storing, activating or deleting a version is a
//! change replicas follow.

use agentauth_core::HookKind;
use agentauth_core::ports::{
    AuditEntry, ChangeTopic, PluginPush, PluginRepository, PluginRow, PluginVersion, PushOutcome, Result,
};
use deadpool_postgres::GenericClient;

use crate::PgStore;
use crate::audit::record;
use crate::coordination::record_change;
use crate::db::{conn, execute, get, named, query, query_one, query_opt, transaction};
use crate::keys::lock_realm;

/// The version number the next version of plugin `name` gets.
const NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE realm = $1 AND name = $2";
const DEACTIVATE: &str = "UPDATE plugins SET active = FALSE WHERE realm = $1 AND name = $2 AND active";
const INSERT_VERSION: &str = "INSERT INTO plugins
     (realm, name, version, hook, sha256, component, created_at, active, uploaded_by, language)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

impl PluginRepository for PgStore {
    fn add_plugin_version(
        &self,
        realm: &str,
        name: &str,
        hook: HookKind,
        sha256: &str,
        component: &[u8],
        now: i64,
    ) -> Result<i64> {
        let (pool, realm, name, sha256, component) =
            (self.db.pool.clone(), realm.to_owned(), name.to_owned(), sha256.to_owned(), component.to_vec());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_realm(&tx, &realm).await?;
                let version: i64 = get(&query_one(&tx, NEXT_VERSION, &[&realm, &name]).await?, 0)?;
                execute(&tx, DEACTIVATE, &[&realm, &name]).await?;
                execute(
                    &tx,
                    INSERT_VERSION,
                    &[
                        &realm,
                        &name,
                        &version,
                        &hook.as_str(),
                        &sha256,
                        &component,
                        &now,
                        &true,
                        &None::<String>,
                        &None::<String>,
                    ],
                )
                .await?;
                record_change(&tx, &realm, ChangeTopic::Plugins, None).await?;
                version
            })
        })
    }

    fn active_plugins(&self, realm: &str) -> Result<Vec<PluginRow>> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT name, version, hook, sha256, component FROM plugins WHERE realm = $1 AND active ORDER BY name",
                &[&realm],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(PluginRow {
                        name: get(r, 0)?,
                        version: get(r, 1)?,
                        hook: named(r, 2, "hook kind", HookKind::parse)?,
                        sha256: get(r, 3)?,
                        component: get(r, 4)?,
                    })
                })
                .collect()
        })
    }

    fn plugin_versions(&self, realm: &str) -> Result<Vec<PluginVersion>> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT name, version, hook, sha256, octet_length(component)::BIGINT, created_at, active, uploaded_by,
                        language
                 FROM plugins WHERE realm = $1 ORDER BY name, version",
                &[&realm],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(PluginVersion {
                        name: get(r, 0)?,
                        version: get(r, 1)?,
                        hook: named(r, 2, "hook kind", HookKind::parse)?,
                        sha256: get(r, 3)?,
                        size: get(r, 4)?,
                        created_at: get(r, 5)?,
                        active: get(r, 6)?,
                        uploaded_by: get(r, 7)?,
                        language: get(r, 8)?,
                    })
                })
                .collect()
        })
    }

    fn plugin_component(&self, realm: &str, name: &str, version: i64) -> Result<Option<Vec<u8>>> {
        let (pool, realm, name) = (self.db.pool.clone(), realm.to_owned(), name.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(
                &c,
                "SELECT component FROM plugins WHERE realm = $1 AND name = $2 AND version = $3",
                &[&realm, &name, &version],
            )
            .await?;
            row.map(|r| get(&r, 0)).transpose()
        })
    }

    fn push_plugin(&self, realm: &str, push: &PluginPush<'_>, audit: &AuditEntry) -> Result<PushOutcome> {
        let pool = self.db.pool.clone();
        let realm = realm.to_owned();
        let (name, hook, sha256, component, activate, quota) = (
            push.name.to_owned(),
            push.hook,
            push.sha256.to_owned(),
            push.component.to_vec(),
            push.activate,
            push.quota,
        );
        let language = push.language.map(str::to_owned);
        let artifact = push.artifact.map(|(engine, artifact)| (engine.to_owned(), artifact.to_vec()));
        let audit = audit.clone();
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_realm(&tx, &realm).await?;
                let existing =
                    query_opt(&tx, "SELECT hook FROM plugins WHERE realm = $1 AND name = $2 LIMIT 1", &[&realm, &name])
                        .await?;
                let existing = existing.map(|r| named(&r, 0, "hook kind", HookKind::parse)).transpose()?;
                let (versions, bytes) = plugin_usage(&tx, &realm).await?;
                let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
                match existing {
                    Some(existing) if existing != hook => PushOutcome::HookMismatch { existing },
                    _ if versions >= quota.versions || bytes.saturating_add(size) > quota.bytes => {
                        PushOutcome::OverQuota { versions, bytes }
                    }
                    _ => {
                        let version: i64 = get(&query_one(&tx, NEXT_VERSION, &[&realm, &name]).await?, 0)?;
                        if activate {
                            execute(&tx, DEACTIVATE, &[&realm, &name]).await?;
                        }
                        execute(
                            &tx,
                            INSERT_VERSION,
                            &[
                                &realm,
                                &name,
                                &version,
                                &hook.as_str(),
                                &sha256,
                                &component,
                                &audit.at,
                                &activate,
                                &audit.actor,
                                &language,
                            ],
                        )
                        .await?;
                        if let Some((engine, artifact)) = &artifact {
                            put_artifact(&tx, &sha256, engine, artifact, audit.at).await?;
                        }
                        record(&tx, &realm, &AuditEntry { version: Some(version), ..audit.clone() }).await?;
                        record_change(&tx, &realm, ChangeTopic::Plugins, None).await?;
                        PushOutcome::Stored { version }
                    }
                }
            })
        })
    }

    fn activate_plugin(&self, realm: &str, name: &str, version: i64, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, name, audit) = (self.db.pool.clone(), realm.to_owned(), name.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_realm(&tx, &realm).await?;
                match version_sha256(&tx, &realm, &name, version).await? {
                    None => false,
                    Some(sha256) => {
                        execute(
                            &tx,
                            "UPDATE plugins SET active = (version = $3) WHERE realm = $1 AND name = $2",
                            &[&realm, &name, &version],
                        )
                        .await?;
                        let entry = AuditEntry { version: Some(version), sha256: Some(sha256), ..audit.clone() };
                        record(&tx, &realm, &entry).await?;
                        record_change(&tx, &realm, ChangeTopic::Plugins, None).await?;
                        true
                    }
                }
            })
        })
    }

    fn delete_plugin(&self, realm: &str, name: &str, version: Option<i64>, audit: &AuditEntry) -> Result<usize> {
        let (pool, realm, name, audit) = (self.db.pool.clone(), realm.to_owned(), name.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_realm(&tx, &realm).await?;
                let sha256 = match version {
                    Some(v) => version_sha256(&tx, &realm, &name, v).await?,
                    None => None,
                };
                let deleted = execute(
                    &tx,
                    "DELETE FROM plugins WHERE realm = $1 AND name = $2 AND ($3::BIGINT IS NULL OR version = $3)",
                    &[&realm, &name, &version],
                )
                .await?;
                if deleted > 0 {
                    delete_unused_artifacts(&tx).await?;
                    record(&tx, &realm, &AuditEntry { version, sha256, ..audit.clone() }).await?;
                    record_change(&tx, &realm, ChangeTopic::Plugins, None).await?;
                }
                usize::try_from(deleted).unwrap_or(usize::MAX)
            })
        })
    }

    fn plugin_usage(&self, realm: &str) -> Result<(i64, i64)> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            plugin_usage(&c, &realm).await
        })
    }

    // ---- compiled artifacts ----

    fn plugin_artifact(&self, component_sha256: &str, engine: &str) -> Result<Option<Vec<u8>>> {
        let (pool, sha256, engine) = (self.db.pool.clone(), component_sha256.to_owned(), engine.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(
                &c,
                "SELECT artifact FROM plugin_artifacts WHERE component_sha256 = $1 AND engine = $2",
                &[&sha256, &engine],
            )
            .await?;
            row.map(|r| get(&r, 0)).transpose()
        })
    }

    fn put_plugin_artifact(&self, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()> {
        let (pool, sha256, engine, artifact) =
            (self.db.pool.clone(), component_sha256.to_owned(), engine.to_owned(), artifact.to_vec());
        self.db.run(
            async move { transaction!(&pool, |tx| { put_artifact(&tx, &sha256, &engine, &artifact, now).await? }) },
        )
    }

    fn delete_plugin_artifacts(&self) -> Result<usize> {
        let pool = self.db.pool.clone();
        self.db.run(async move {
            let c = conn(&pool).await?;
            let n = execute(&c, "DELETE FROM plugin_artifacts", &[]).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn plugin_artifact_hashes(&self) -> Result<Vec<String>> {
        let pool = self.db.pool.clone();
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(&c, "SELECT DISTINCT component_sha256 FROM plugin_artifacts ORDER BY 1", &[]).await?;
            rows.iter().map(|r| get(r, 0)).collect()
        })
    }
}

/// Keeps an artifact for `engine`, dropping those of other engines.
async fn put_artifact<C: GenericClient + ?Sized>(
    tx: &C,
    component_sha256: &str,
    engine: &str,
    artifact: &[u8],
    now: i64,
) -> Result<()> {
    execute(
        tx,
        "DELETE FROM plugin_artifacts WHERE component_sha256 = $1 AND engine <> $2",
        &[&component_sha256, &engine],
    )
    .await?;
    execute(
        tx,
        "INSERT INTO plugin_artifacts (component_sha256, engine, artifact, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (component_sha256, engine) DO UPDATE SET artifact = EXCLUDED.artifact, created_at = EXCLUDED.created_at",
        &[&component_sha256, &engine, &artifact, &now],
    )
    .await?;
    Ok(())
}

async fn plugin_usage<C: GenericClient + ?Sized>(c: &C, realm: &str) -> Result<(i64, i64)> {
    let row = query_one(
        c,
        "SELECT COUNT(*), COALESCE(SUM(octet_length(component)), 0)::BIGINT FROM plugins WHERE realm = $1",
        &[&realm],
    )
    .await?;
    Ok((get(&row, 0)?, get(&row, 1)?))
}

/// Deletes the compiled artifacts whose component no stored version has.
pub(crate) async fn delete_unused_artifacts<C: GenericClient + ?Sized>(tx: &C) -> Result<u64> {
    execute(
        tx,
        "DELETE FROM plugin_artifacts
         WHERE NOT EXISTS (SELECT 1 FROM plugins p WHERE p.sha256 = plugin_artifacts.component_sha256)",
        &[],
    )
    .await
}

async fn version_sha256<C: GenericClient + ?Sized>(
    tx: &C,
    realm: &str,
    name: &str,
    version: i64,
) -> Result<Option<String>> {
    let row = query_opt(
        tx,
        "SELECT sha256 FROM plugins WHERE realm = $1 AND name = $2 AND version = $3",
        &[&realm, &name, &version],
    )
    .await?;
    row.map(|r| get(&r, 0)).transpose()
}
