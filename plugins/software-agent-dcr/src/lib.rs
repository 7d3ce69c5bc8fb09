//! The seed page's "Software agent DCR script", as a `dcr-hook` component.
//!
//! PingAM's script:
//!
//! ```javascript
//! if (operation === "CREATE" && clientIdentity.isAIAgent()) {
//!     clientIdentity.setAttribute("providerOverridesEnabled", ["true"]);
//!     clientIdentity.setAttribute("accessTokenMayActScript", ["4478ca08-..."]);
//!     clientIdentity.setAttribute("statelessTokensEnabled", ["true"]);
//!     clientIdentity.store();
//! };
//! ```
//!
//! In agentauth the may-act script is a plugin stored in the realm, so the
//! attribute names that plugin instead of a script id.

wit_bindgen::generate!({
    world: "dcr-hook",
    path: "../../wit",
});

use agentauth::policy::types::{Attribute, Error};
use exports::agentauth::policy::dcr::{Decision, Guest, Operation, Registration};

/// The realm plugin that decides `may_act` for the agents this policy admits.
const MAY_ACT_PLUGIN: &str = "software-agent-may-act";

struct SoftwareAgentDcr;

fn attribute(name: &str, value: &str) -> Attribute {
    Attribute { name: name.to_string(), values: vec![value.to_string()] }
}

impl Guest for SoftwareAgentDcr {
    fn evaluate(registration: Registration) -> Result<Decision, Error> {
        let set_attributes = match registration.operation {
            Operation::Create if registration.client.is_ai_agent => vec![
                attribute("providerOverridesEnabled", "true"),
                attribute("accessTokenMayActScript", MAY_ACT_PLUGIN),
                attribute("statelessTokensEnabled", "true"),
            ],
            _ => Vec::new(),
        };
        Ok(Decision { set_attributes })
    }
}

export!(SoftwareAgentDcr);
