//! The scope validation hook (`scope-hook`): a realm's policy may narrow,
//! or refuse, the scopes a token request is about to be granted.
//!
//! The answer is checked here: every scope granted was requested (a
//! policy never widens), and the answer is a valid scope value (RFC 6749
//! §3.3), repeats dropped, in the policy's order.

use agentauth_core::Scopes;

use crate::bindings::scope_world::ScopeHookPre;
use crate::bindings::scope_world::exports::agentauth::policy::scope as wit;
use crate::bindings::types as wit_types;
use crate::engine::PluginHost;
use crate::hooks::{Hook, client_view, invalid_answer};
use crate::limits::Limits;
use crate::registry::Plugin;
use crate::state::{HostState, truncate};
use crate::{Client, Failure, HookError};

/// The scopes a scope plugin is asked about.
#[derive(Debug)]
pub struct ScopeRequest<'a> {
    pub grant_type: &'a str,
    pub requested: &'a [String],
    pub registered: &'a [String],
}

/// The scope hook:
/// `scope.validate(client, request) -> result<list<string>, error>`.
pub(crate) struct Scope;

impl Hook for Scope {
    const FUNCTION: &'static str = "validate";
    type Pre = ScopeHookPre<HostState>;
    type Params = (wit_types::ClientView, wit::ScopeRequest);
    type Answer = Vec<String>;
}

impl PluginHost {
    /// Runs a scope plugin and returns the scopes it grants: a subset of
    /// `requested`, each a valid scope token, each once.
    pub fn run_scope(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        client: &Client,
        request: &ScopeRequest<'_>,
    ) -> Result<Vec<String>, HookError> {
        let wit_request = wit::ScopeRequest {
            realm: realm.to_string(),
            grant_type: request.grant_type.to_string(),
            requested: request.requested.to_vec(),
            registered: request.registered.to_vec(),
        };
        let granted = self.call::<Scope>(plugin, limits, realm, (client_view(client), wit_request))?;
        if let Some(extra) = granted.iter().find(|s| !request.requested.contains(s)) {
            return Err(HookError::Failed(
                Failure::InvalidAnswer,
                format!(
                    "granted scope {:?}, which was not requested; a scope policy may only narrow",
                    truncate(extra, 64)
                ),
            ));
        }
        let granted =
            Scopes::from_tokens(granted.iter().map(String::as_str)).map_err(|e| invalid_answer(e.description))?;
        Ok(granted.to_vec())
    }
}
