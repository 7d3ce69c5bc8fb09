//! What a policy's failure means to the caller, and what it counts for.

use std::time::Instant;

use agentauth_core::{ErrorCode, OAuthError};
use agentauth_plugin_host::{Failure, HookError, Plugin};

use crate::realm::RealmRuntime;
use crate::telemetry::PluginFailure;

/// Runs `call`, one call of the realm's `plugin`, and counts its time.
pub(crate) fn timed<T>(
    realm: &RealmRuntime,
    plugin: &Plugin,
    call: impl FnOnce() -> Result<T, HookError>,
) -> Result<T, HookError> {
    let started = Instant::now();
    let answer = call();
    if let Some(metrics) = realm.plugin_metrics(plugin) {
        metrics.called(started.elapsed());
    }
    answer
}

/// Turns a hook's failure into the error the caller sees. A refusal
/// carries the policy's words with `denied_code`; a failing plugin is
/// logged in full and answered with `server_error`, naming only what kind
/// of failure it was (fail closed); a call that found no room to run is
/// `temporarily_unavailable` (503).
pub(crate) fn hook_error(
    error: HookError,
    realm: &RealmRuntime,
    plugin: &Plugin,
    denied_code: ErrorCode,
) -> OAuthError {
    if let Some(metrics) = realm.plugin_metrics(plugin) {
        metrics.failed(match &error {
            HookError::Denied(_) => PluginFailure::Denied,
            HookError::Failed(cause, _) => PluginFailure::from(*cause),
            HookError::Busy(_) => PluginFailure::Busy,
        });
    }
    match error {
        HookError::Denied(why) => OAuthError::new(denied_code, why),
        HookError::Failed(_, why) => {
            tracing::error!(realm = %realm.name, plugin = plugin.name(), version = plugin.version(), "policy failed: {why}");
            OAuthError::server_error(format!("the realm's {} policy failed: {why}", plugin.kind().as_str()))
        }
        HookError::Busy(why) => {
            tracing::warn!(realm = %realm.name, plugin = plugin.name(), "policy busy: {why}");
            OAuthError::new(ErrorCode::TemporarilyUnavailable, "the realm's policies are busy; retry shortly")
        }
    }
}

/// Calls a plugin in a span of its own (realm, plugin, version, hook),
/// timed for its metrics, and notes its answer in the decision being audited (the plugin, its version
/// and sha256, and whether it answered, refused, failed or found no room
/// to run) before passing it on.
pub(crate) fn audited<T>(
    realm: &RealmRuntime,
    plugin: &Plugin,
    call: impl FnOnce() -> Result<T, HookError>,
) -> Result<T, HookError> {
    let span = tracing::debug_span!(
        "plugin",
        realm = %realm.name,
        plugin = plugin.name(),
        version = plugin.version(),
        hook = plugin.kind().as_str(),
    );
    let answer = span.in_scope(|| timed(realm, plugin, call));
    crate::decisions::plugin_ran(plugin, &answer, |e| match e {
        HookError::Denied(_) => "denied",
        HookError::Failed(..) => "failed",
        HookError::Busy(_) => "busy",
    });
    answer
}

/// A plugin answer the host accepted but the service cannot use.
pub(crate) fn invalid_answer(why: impl std::fmt::Display, realm: &RealmRuntime, plugin: &Plugin) -> OAuthError {
    let failed = HookError::Failed(Failure::InvalidAnswer, format!("invalid answer: {why}"));
    hook_error(failed, realm, plugin, ErrorCode::ServerError)
}
