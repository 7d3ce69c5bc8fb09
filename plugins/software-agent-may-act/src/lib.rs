//! The seed page's "Software agent may act script", as a `may-act-hook`
//! component: the agent may act on its own tokens, as itself.
//!
//! PingAM's script:
//!
//! ```javascript
//! token.setMayAct({
//!     client_id: clientProperties.clientId,
//!     sub: `(age!${clientProperties.clientId})`
//! });
//! ```
//!
//! `age` marks the identity after the `!` as an automated agent.

wit_bindgen::generate!({
    world: "may-act-hook",
    path: "../../wit",
});

use agentauth::policy::types::{ClientView, Error};
use exports::agentauth::policy::may_act::{Guest, MayActClaim, TokenView};

struct SoftwareAgentMayAct;

impl Guest for SoftwareAgentMayAct {
    fn decide(client: ClientView, _token: TokenView) -> Result<Option<MayActClaim>, Error> {
        Ok(Some(MayActClaim { sub: Some(format!("(age!{})", client.client_id)), client_id: client.client_id }))
    }
}

export!(SoftwareAgentMayAct);
