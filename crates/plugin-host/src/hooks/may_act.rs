//! The may-act hook (`may-act-hook`): a client's policy names who may act
//! on the subject of a token about to be issued to it (RFC 8693 §4.4).
//!
//! The answer's shape is checked here: `client_id`, and `sub` when given,
//! are 1 to 256 printable characters. Whether `client_id` names a client
//! of the realm is for the caller, which holds the store.

use crate::bindings::may_act_world::MayActHookPre;
use crate::bindings::may_act_world::exports::agentauth::policy::may_act as wit;
use crate::bindings::types as wit_types;
use crate::engine::PluginHost;
use crate::hooks::{Hook, client_view};
use crate::limits::Limits;
use crate::registry::Plugin;
use crate::state::HostState;
use crate::{Client, Failure, HookError};

/// Longest value a plugin may put into a token's `may_act`.
const MAX_CLAIM_VALUE: usize = 256;

/// The token a may-act plugin is asked about.
#[derive(Debug)]
pub struct TokenView<'a> {
    pub grant_type: &'a str,
    pub sub: &'a str,
    pub scopes: &'a [String],
}

/// A may-act plugin's answer, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MayActClaim {
    pub client_id: String,
    pub sub: Option<String>,
}

/// The may-act hook:
/// `may-act.decide(client, token) -> result<option<may-act-claim>, error>`.
pub(crate) struct MayAct;

impl Hook for MayAct {
    const FUNCTION: &'static str = "decide";
    type Pre = MayActHookPre<HostState>;
    type Params = (wit_types::ClientView, wit::TokenView);
    type Answer = Option<wit::MayActClaim>;
}

impl PluginHost {
    /// Runs a may-act plugin for a token about to be issued to `client`.
    pub fn run_may_act(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        client: &Client,
        token: &TokenView<'_>,
    ) -> Result<Option<MayActClaim>, HookError> {
        let view = wit::TokenView {
            realm: realm.to_string(),
            grant_type: token.grant_type.to_string(),
            sub: token.sub.to_string(),
            scopes: token.scopes.to_vec(),
        };
        let answer = self.call::<MayAct>(plugin, limits, realm, (client_view(client), view))?;
        let Some(claim) = answer else {
            return Ok(None);
        };
        check_claim_value("may_act.client_id", &claim.client_id)?;
        if let Some(sub) = &claim.sub {
            check_claim_value("may_act.sub", sub)?;
        }
        Ok(Some(MayActClaim { client_id: claim.client_id, sub: claim.sub }))
    }
}

/// A value a plugin puts into a token: printable, non-empty and short.
pub(crate) fn check_claim_value(what: &str, value: &str) -> Result<(), HookError> {
    if value.is_empty() || value.len() > MAX_CLAIM_VALUE || value.chars().any(char::is_control) {
        return Err(HookError::Failed(
            Failure::InvalidAnswer,
            format!("{what} must be 1 to {MAX_CLAIM_VALUE} printable characters"),
        ));
    }
    Ok(())
}
