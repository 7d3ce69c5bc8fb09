//! Example token plugin (PingAM's access token modification script): adds
//! `{"department": "software-updates", "agent": <is the client an AI
//! agent>}` to every access token.
//!
//! For tests it misbehaves when the client's name asks: `take-sub` tries to
//! overwrite `sub`, `not-json` answers garbage, `token-deny` refuses the token.

wit_bindgen::generate!({
    world: "token-hook",
    path: "../../wit",
});

use agentauth::policy::types::{ClientView, Error};
use exports::agentauth::policy::token::{Guest, TokenView};

struct Department;

impl Guest for Department {
    fn modify(client: ClientView, _token: TokenView) -> Result<String, Error> {
        let named = |mode: &str| client.metadata.contains(&format!("\"client_name\":\"{mode}\""));
        if named("take-sub") {
            return Ok(r#"{"sub": "someone-else"}"#.into());
        }
        if named("not-json") {
            return Ok("department=updates".into());
        }
        if named("token-deny") {
            return Err(Error::Denied("no tokens for this agent today".into()));
        }
        Ok(format!(r#"{{"department": "software-updates", "agent": {}}}"#, client.is_ai_agent))
    }
}

export!(Department);
