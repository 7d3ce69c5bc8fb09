//! Test fixture: a DCR plugin that misbehaves on demand. The registration's
//! `client_name` picks the misbehaviour; any other name is allowed with the
//! seed's attributes.

wit_bindgen::generate!({
    world: "dcr-hook",
    path: "../../wit",
});

use agentauth::policy::types::{Attribute, Error};
use exports::agentauth::policy::dcr::{Decision, Guest, Registration};

struct Misbehaving;

fn set(name: &str, value: &str) -> Attribute {
    Attribute { name: name.into(), values: vec![value.into()] }
}

impl Guest for Misbehaving {
    fn evaluate(registration: Registration) -> Result<Decision, Error> {
        let metadata = &registration.client.metadata;
        let is = |mode: &str| metadata.contains(&format!("\"client_name\":\"{mode}\""));
        if is("deny") {
            return Err(Error::Denied("registrations named deny are refused".into()));
        }
        if is("loop") {
            loop {
                std::hint::black_box(());
            }
        }
        if is("trap") {
            panic!("asked to trap");
        }
        if is("unknown-attribute") {
            return Ok(Decision { set_attributes: vec![set("clientId", "chosen-by-plugin")] });
        }
        Ok(Decision { set_attributes: vec![set("statelessTokensEnabled", "true")] })
    }
}

export!(Misbehaving);
