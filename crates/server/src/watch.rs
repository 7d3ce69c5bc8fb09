//! Development mode: `serve --watch-plugins DIR` re-validates and
//! re-activates a plugin whenever its file changes, without the admin API.
//!
//! Layout: `DIR/<realm>/<plugin-name>.wasm`; the hook is the one the
//! component exports. The directory is polled (twice a second), and a file
//! is pushed once it has stopped changing between two polls, so a build
//! still writing it is not picked up half-written. A file that fails
//! validation is logged and the active version keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::App;
use crate::route::is_realm_name;

const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct FileState {
    /// (modified, length) when last polled.
    stamp: Option<(SystemTime, u64)>,
    /// The stamp already handled, pushed or refused.
    handled: Option<(SystemTime, u64)>,
}

/// Polls `dir` until the process ends.
pub async fn watch_plugins(app: Arc<App>, dir: PathBuf) {
    tracing::info!(dir = %dir.display(), "watching plugins: DIR/<realm>/<plugin-name>.wasm");
    let mut files: HashMap<PathBuf, FileState> = HashMap::new();
    loop {
        let (app_for_scan, dir_for_scan) = (Arc::clone(&app), dir.clone());
        files = match tokio::task::spawn_blocking(move || {
            scan(&app_for_scan, &dir_for_scan, &mut files);
            files
        })
        .await
        {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("plugin watcher failed: {e}");
                HashMap::new()
            }
        };
        tokio::time::sleep(POLL).await;
    }
}

fn scan(app: &App, dir: &Path, files: &mut HashMap<PathBuf, FileState>) {
    let Ok(realms) = std::fs::read_dir(dir) else {
        return;
    };
    for realm_dir in realms.flatten() {
        let path = realm_dir.path();
        let Some(realm) = path.file_name().and_then(|n| n.to_str()).filter(|n| is_realm_name(n)).map(str::to_string)
        else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&path) else { continue };
        for entry in entries.flatten() {
            let file = entry.path();
            let Some(name) = file
                .extension()
                .filter(|e| *e == "wasm")
                .and_then(|_| file.file_stem())
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
            let state = files.entry(file.clone()).or_default();
            let settled = state.stamp == Some(stamp);
            state.stamp = Some(stamp);
            if !settled || state.handled == Some(stamp) {
                continue;
            }
            state.handled = Some(stamp);
            push(app, &realm, &name, &file);
        }
    }
}

fn push(app: &App, realm: &str, name: &str, file: &Path) {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(file = %file.display(), "cannot read plugin: {e}");
            return;
        }
    };
    // A file that is already the active version (say, after a restart)
    // makes no new version.
    let sha256 = agentauth_plugin_host::sha256_hex(&bytes);
    match app.service.store().plugin_versions(realm) {
        Ok(versions) if versions.iter().any(|v| v.name == name && v.active && v.sha256 == sha256) => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("plugin watcher: {e}");
            return;
        }
    }
    match app.service.store().realm(realm) {
        Ok(Some(_)) => {}
        _ => {
            tracing::warn!(file = %file.display(), "no realm {realm}: not loading the plugin");
            return;
        }
    }
    let upload =
        agentauth_service::admin::Upload { name, kind: None, component: &bytes, activate: true, actor: "watch".into() };
    match app.service.push_plugin_unbounded(realm, upload) {
        Ok(pushed) => {
            tracing::info!(file = %file.display(), version = pushed.version, sha256 = %pushed.sha256, "activated plugin {name}")
        }
        Err(e) => tracing::warn!(file = %file.display(), "plugin refused: {e}"),
    }
}
