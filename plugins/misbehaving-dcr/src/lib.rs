//! Test fixture: a DCR plugin that misbehaves on demand. The registration's
//! `client_name` picks the misbehaviour (`dcr-keep` refuses DELETE only,
//! `dcr-show-body` refuses with the request body it was shown,
//! `dcr-deny`, `dcr-loop`, `dcr-sleep` (waits in a host call),
//! `dcr-trap`, `dcr-unknown-attribute`, `dcr-missing-may-act`,
//! `dcr-expires-in:<seconds>` admits it with that `expiresIn`); any other
//! client is admitted with stateless tokens, the audience
//! `https://updates.example`, and the `misbehaving-may-act` plugin, whose
//! misbehaviour its `client_name` then picks.

wit_bindgen::generate!({
    world: "dcr-hook",
    path: "../../wit",
});

use agentauth::policy::types::{Attribute, Error};
use exports::agentauth::policy::dcr::{Decision, Guest, Operation, Registration};

struct Misbehaving;

fn set(name: &str, value: &str) -> Attribute {
    Attribute { name: name.into(), values: vec![value.into()] }
}

fn admitted(may_act_plugin: &str) -> Decision {
    Decision {
        set_attributes: vec![
            set("providerOverridesEnabled", "true"),
            set("accessTokenMayActScript", may_act_plugin),
            set("statelessTokensEnabled", "true"),
            set("allowedAudiences", "https://updates.example"),
        ],
    }
}

/// What follows `prefix` in the client's name, if its name starts so.
fn name_after<'a>(metadata: &'a str, prefix: &str) -> Option<&'a str> {
    let start = metadata.find(&format!("\"client_name\":\"{prefix}"))? + "\"client_name\":\"".len() + prefix.len();
    let rest = &metadata[start..];
    Some(&rest[..rest.find('"')?])
}

impl Guest for Misbehaving {
    fn evaluate(registration: Registration) -> Result<Decision, Error> {
        let metadata = &registration.client.metadata;
        let is = |mode: &str| metadata.contains(&format!("\"client_name\":\"{mode}\""));
        if is("dcr-keep") && registration.operation == Operation::Delete {
            return Err(Error::Denied("this client may not be deleted".into()));
        }
        if is("dcr-show-body") {
            return Err(Error::Denied(registration.request.body.unwrap_or_default()));
        }
        if is("dcr-deny") {
            return Err(Error::Denied("registrations named dcr-deny are refused".into()));
        }
        if is("dcr-loop") {
            loop {
                std::hint::black_box(());
            }
        }
        if is("dcr-sleep") {
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        if is("dcr-trap") {
            panic!("asked to trap");
        }
        if is("dcr-unknown-attribute") {
            return Ok(Decision { set_attributes: vec![set("clientId", "chosen-by-plugin")] });
        }
        if is("dcr-missing-may-act") {
            return Ok(admitted("no-such-plugin"));
        }
        if let Some(seconds) = name_after(metadata, "dcr-expires-in:") {
            let mut decision = admitted("misbehaving-may-act");
            decision.set_attributes.push(set("expiresIn", seconds));
            return Ok(decision);
        }
        Ok(admitted("misbehaving-may-act"))
    }
}

export!(Misbehaving);
