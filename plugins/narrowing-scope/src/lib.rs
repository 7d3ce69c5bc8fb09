//! Example scope plugin (PingAM's scope validation script): a client named
//! `read-only` never gets `write`, whatever it registered.
//!
//! For tests it misbehaves when the client's name asks: `refuse` refuses
//! every request, `widen` tries to grant `admin` as well.

wit_bindgen::generate!({
    world: "scope-hook",
    path: "../../wit",
});

use agentauth::policy::types::{ClientView, Error};
use exports::agentauth::policy::scope::{Guest, ScopeRequest};

struct Narrowing;

impl Guest for Narrowing {
    fn validate(client: ClientView, request: ScopeRequest) -> Result<Vec<String>, Error> {
        let named = |mode: &str| client.metadata.contains(&format!("\"client_name\":\"{mode}\""));
        if named("refuse") {
            return Err(Error::Denied("this agent may not have tokens".into()));
        }
        if named("widen") {
            let mut scopes = request.requested;
            scopes.push("admin".into());
            return Ok(scopes);
        }
        if named("read-only") {
            return Ok(request.requested.into_iter().filter(|s| s != "write").collect());
        }
        Ok(request.requested)
    }
}

export!(Narrowing);
