//! Test fixture: an assertion plugin that answers the mapping its input
//! asks for, valid or not, so each check the host makes of an answer can
//! be shown to fail closed. The external token's `sub` picks the answer;
//! any other `sub` is mapped to itself with the scopes asked for.

wit_bindgen::generate!({
    world: "assertion-hook",
    path: "../../wit",
});

use agentauth::policy::types::Error;
use exports::agentauth::policy::assertion::{AssertionCase, Guest, Mapping, MayActClaim};

struct Misbehaving;

impl Guest for Misbehaving {
    fn map(case: AssertionCase) -> Result<Mapping, Error> {
        let mode = case.token.subject;
        let mut answer = Mapping { subject: mode.clone(), scopes: case.scopes, may_act: None };
        let may_act = |client_id: String, sub: Option<String>| Some(MayActClaim { client_id, sub });
        match mode.as_str() {
            "deny" => return Err(Error::Denied("this issuer's users may not sign in here".into())),
            "subject-empty" => answer.subject = String::new(),
            "subject-long" => answer.subject = "s".repeat(256),
            "subject-control" => answer.subject = "ada\u{1b}[2J".into(),
            "subject-padded" => answer.subject = " usr_1".into(),
            "widen" => answer.scopes.push("admin".into()),
            "repeat" => answer.scopes.extend(answer.scopes.clone()),
            "some-scope" => answer.scopes = vec!["read".into()],
            "may-act-empty" => answer.may_act = may_act(String::new(), None),
            "may-act-long" => answer.may_act = may_act("c".repeat(257), None),
            "may-act-control" => answer.may_act = may_act("agent\n1".into(), None),
            "may-act-sub-control" => answer.may_act = may_act("agent-1".into(), Some("a\u{7f}".into())),
            "may-act" => answer.may_act = may_act("agent-1".into(), Some("(age!agent-1)".into())),
            _ => {}
        }
        Ok(answer)
    }
}

export!(Misbehaving);
