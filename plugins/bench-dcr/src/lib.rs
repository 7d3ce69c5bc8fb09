//! A DCR policy for benchmarks, so one realm can hold every kind of
//! client the token benchmarks compare: metadata (the `client_name`)
//! containing `jwt`
//! gets JWT (stateless) access tokens, else opaque ones; one containing
//! `may-act` gets the seed's may-act policy, as the seed's DCR policy
//! would give it.

wit_bindgen::generate!({
    world: "dcr-hook",
    path: "../../wit",
});

use agentauth::policy::types::{Attribute, Error};
use exports::agentauth::policy::dcr::{Decision, Guest, Operation, Registration};

struct BenchDcr;

fn attribute(name: &str, value: &str) -> Attribute {
    Attribute { name: name.to_string(), values: vec![value.to_string()] }
}

impl Guest for BenchDcr {
    fn evaluate(registration: Registration) -> Result<Decision, Error> {
        let mut set_attributes = Vec::new();
        if let Operation::Create = registration.operation {
            // The benchmark puts the words in `client_name`; nothing else
            // it registers contains them.
            let name = &registration.client.metadata;
            if name.contains("jwt") {
                set_attributes.push(attribute("statelessTokensEnabled", "true"));
            }
            if name.contains("may-act") {
                set_attributes.push(attribute("providerOverridesEnabled", "true"));
                set_attributes.push(attribute("accessTokenMayActScript", "software-agent-may-act"));
            }
        }
        Ok(Decision { set_attributes })
    }
}

export!(BenchDcr);
