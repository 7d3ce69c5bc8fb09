//! The authorization hook (`authorize-hook`): once a user has signed in at
//! the authorization endpoint, a realm's policy decides what the client
//! asking may do for them: narrow the scopes, insist on consent, refuse,
//! and name who may act for the user with the tokens issued (`may_act`).
//!
//! The answer is checked here: every scope granted was asked for (a
//! policy never widens), each a valid scope value, repeats dropped; the
//! `may_act` values are 1 to 256 printable characters. Whether its
//! `client_id` names a client of the realm is for the caller.

use agentauth_core::Scopes;

use crate::bindings::authorize_world::AuthorizeHookPre;
use crate::bindings::authorize_world::exports::agentauth::policy::authorize as wit;
use crate::bindings::types as wit_types;
use crate::engine::PluginHost;
use crate::hooks::may_act::check_claim_value;
use crate::hooks::{Hook, client_view, invalid_answer};
use crate::limits::Limits;
use crate::registry::Plugin;
use crate::state::{HostState, truncate};
use crate::{Client, Failure, HookError, MayActClaim};

/// The user an authorization plugin is told about.
#[derive(Debug)]
pub struct UserView<'a> {
    pub sub: &'a str,
    pub username: &'a str,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// What the client asks the user for.
#[derive(Debug)]
pub struct AuthorizationRequest<'a> {
    pub scopes: &'a [String],
    pub resources: &'a [String],
    /// The user already consented to these scopes for this client.
    pub consented: bool,
}

/// An authorization plugin's decision, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// A subset of the scopes asked for, each once.
    pub scopes: Vec<String>,
    /// Consent is to be asked even if given before.
    pub require_consent: bool,
    pub may_act: Option<MayActClaim>,
}

/// The authorization hook:
/// `authorize.decide(user, client, request) -> result<decision, error>`.
pub(crate) struct Authorize;

impl Hook for Authorize {
    const FUNCTION: &'static str = "decide";
    type Pre = AuthorizeHookPre<HostState>;
    type Params = (wit::UserView, wit_types::ClientView, wit::AuthorizationRequest);
    type Answer = wit::Decision;
}

impl PluginHost {
    /// Runs an authorization plugin for `user` authorizing `client`.
    pub fn run_authorize(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        user: &UserView<'_>,
        client: &Client,
        request: &AuthorizationRequest<'_>,
    ) -> Result<Authorization, HookError> {
        let wit_user = wit::UserView {
            sub: user.sub.to_string(),
            username: user.username.to_string(),
            name: user.name.map(str::to_string),
            email: user.email.map(str::to_string),
        };
        let wit_request = wit::AuthorizationRequest {
            realm: realm.to_string(),
            scopes: request.scopes.to_vec(),
            resources: request.resources.to_vec(),
            consented: request.consented,
        };
        let decision = self.call::<Authorize>(plugin, limits, realm, (wit_user, client_view(client), wit_request))?;
        let scopes = narrowed_scopes(&decision.scopes, request.scopes, "an authorization policy")?;
        let may_act = decision.may_act.map(|claim| checked_may_act(claim.client_id, claim.sub)).transpose()?;
        Ok(Authorization { scopes, require_consent: decision.require_consent, may_act })
    }
}

/// The scopes a policy granted, when each was `asked` for (`policy` names
/// it in the refusal: a policy may only narrow), as valid scope values
/// without repeats.
pub(crate) fn narrowed_scopes(granted: &[String], asked: &[String], policy: &str) -> Result<Vec<String>, HookError> {
    if let Some(extra) = granted.iter().find(|s| !asked.contains(s)) {
        return Err(HookError::Failed(
            Failure::InvalidAnswer,
            format!("granted scope {:?}, which was not asked for; {policy} may only narrow", truncate(extra, 64)),
        ));
    }
    Ok(Scopes::from_tokens(granted.iter().map(String::as_str)).map_err(|e| invalid_answer(e.description))?.to_vec())
}

/// A `may_act` claim a policy answered, its values checked as claim
/// values.
pub(crate) fn checked_may_act(client_id: String, sub: Option<String>) -> Result<MayActClaim, HookError> {
    check_claim_value("may_act.client_id", &client_id)?;
    if let Some(sub) = &sub {
        check_claim_value("may_act.sub", sub)?;
    }
    Ok(MayActClaim { client_id, sub })
}
