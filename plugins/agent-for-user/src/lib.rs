//! Example authorization plugin, in the seed's spirit ("AI agent acting on
//! behalf of a user"): when a user signs in to authorize an AI agent, the
//! agent may act for that user, as itself, with the tokens issued: the
//! user's token carries `may_act` naming the agent as `(age!<client_id>)`,
//! so the agent can exchange it (RFC 8693) for a token whose `sub` is the
//! user and whose `act` is the agent.
//!
//! An agent never gets `admin` for a user, and asking to `write` needs
//! the user's consent every time. Other clients get what they asked for,
//! with consent remembered, and no `may_act`.
//!
//! For tests it misbehaves when the client's name asks: `refuse` refuses,
//! `widen` grants `admin` as well.

wit_bindgen::generate!({
    world: "authorize-hook",
    path: "../../wit",
});

use agentauth::policy::types::{ClientView, Error};
use exports::agentauth::policy::authorize::{AuthorizationRequest, Decision, Guest, MayActClaim, UserView};

struct AgentForUser;

impl Guest for AgentForUser {
    fn decide(_user: UserView, client: ClientView, request: AuthorizationRequest) -> Result<Decision, Error> {
        let named = |mode: &str| client.metadata.contains(&format!("\"client_name\":\"{mode}\""));
        if named("refuse") {
            return Err(Error::Denied("this client may not act for users".into()));
        }
        if named("widen") {
            let mut scopes = request.scopes;
            scopes.push("admin".into());
            return Ok(Decision { scopes, require_consent: false, may_act: None });
        }
        if !client.is_ai_agent {
            return Ok(Decision { scopes: request.scopes, require_consent: false, may_act: None });
        }
        let scopes: Vec<String> = request.scopes.into_iter().filter(|s| s != "admin").collect();
        let require_consent = scopes.iter().any(|s| s == "write");
        let may_act = MayActClaim { sub: Some(format!("(age!{})", client.client_id)), client_id: client.client_id };
        Ok(Decision { scopes, require_consent, may_act: Some(may_act) })
    }
}

export!(AgentForUser);
