//! The access token modification hook (`token-hook`): a realm's policy
//! adds custom claims to every access token before it is signed or
//! stored.
//!
//! The answer is checked here and handed on parsed: a JSON object of at
//! most [`MAX_CUSTOM_CLAIMS`] bytes that sets none of the claims the host
//! owns and nests at most 8 levels (`agentauth_core::token::custom_claims`).

use serde_json::{Map, Value};

use crate::bindings::token_world::TokenHookPre;
use crate::bindings::token_world::exports::agentauth::policy::token as wit;
use crate::bindings::types as wit_types;
use crate::engine::PluginHost;
use crate::hooks::{Hook, client_view, invalid_answer};
use crate::limits::Limits;
use crate::registry::Plugin;
use crate::state::HostState;
use crate::{Client, Failure, HookError};

/// Largest custom-claims answer a token plugin may give, as JSON text.
const MAX_CUSTOM_CLAIMS: usize = 4096;

/// The token hook: `token.modify(client, token) -> result<string, error>`.
pub(crate) struct Token;

impl Hook for Token {
    const FUNCTION: &'static str = "modify";
    type Pre = TokenHookPre<HostState>;
    type Params = (wit_types::ClientView, wit::TokenView);
    type Answer = String;
}

impl PluginHost {
    /// Runs a token plugin on a token about to be issued, whose claims so
    /// far are `claims_json`, and returns the custom claims it adds,
    /// checked: none of them is the host's.
    pub fn run_token(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        client: &Client,
        grant_type: &str,
        claims_json: &str,
    ) -> Result<Map<String, Value>, HookError> {
        let view = wit::TokenView {
            realm: realm.to_string(),
            grant_type: grant_type.to_string(),
            claims: claims_json.to_string(),
        };
        let custom = self.call::<Token>(plugin, limits, realm, (client_view(client), view))?;
        if custom.len() > MAX_CUSTOM_CLAIMS {
            return Err(HookError::Failed(
                Failure::InvalidAnswer,
                format!("custom claims exceed {MAX_CUSTOM_CLAIMS} bytes"),
            ));
        }
        agentauth_core::token::custom_claims(&custom).map_err(invalid_answer)
    }
}
