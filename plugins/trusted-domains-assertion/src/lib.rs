//! Example assertion plugin: what a token from an issuer outside the realm
//! means here. The host has already verified the token (signature, `iss`,
//! `aud`, lifetime, replay) against one of the realm's trusted issuers;
//! this policy decides who it names, with what scopes.
//!
//! People (`login`, `id-jag`, `jwt-bearer`, `subject-token`):
//! - only with a verified `email` (`email_verified: true`) in one of
//!   [`TRUSTED_DOMAINS`], compared exactly;
//! - the local subject is `ext:<issuer>#<sub>`: an issuer's `sub` is
//!   unique only at that issuer, and the `ext:` prefix never looks like a
//!   local user (`usr_...`);
//! - `admin` is dropped unless the token's `groups` include `admins`;
//! - an `agent` claim names the client that may act for the subject
//!   (`may_act`).
//!
//! Workloads (`client-authentication`): a Kubernetes service account
//! token of namespace [`WORKLOAD_NAMESPACE`]
//! (`sub` = `system:serviceaccount:<namespace>:<name>`) authenticates the
//! client it is presented for when that client's `client_name` is
//! `<name>`. It grants no scopes: the token request asks for those.
//!
//! The same policy is in `plugins/python/trusted_domains_assertion` and
//! `plugins/js/trusted-domains-assertion`.

wit_bindgen::generate!({
    world: "assertion-hook",
    path: "../../wit",
});

use agentauth::policy::types::Error;
use exports::agentauth::policy::assertion::{AssertionCase, Guest, Mapping, MayActClaim, Purpose};
use serde_json::Value;

/// The email domains whose users are trusted.
const TRUSTED_DOMAINS: &[&str] = &["example.com"];
/// The Kubernetes namespace whose service accounts may authenticate clients.
const WORKLOAD_NAMESPACE: &str = "agents";

struct TrustedDomains;

impl Guest for TrustedDomains {
    fn map(case: AssertionCase) -> Result<Mapping, Error> {
        if case.purpose == Purpose::ClientAuthentication {
            return workload(case);
        }
        let claims = json(&case.token.claims)?;
        let email = claims["email"].as_str().unwrap_or_default();
        let domain = email.rsplit_once('@').map_or("", |(_, domain)| domain);
        if claims["email_verified"] != true || !TRUSTED_DOMAINS.contains(&domain) {
            return Err(Error::Denied("only verified users of a trusted email domain".into()));
        }
        let admin = claims["groups"].as_array().is_some_and(|groups| groups.iter().any(|g| g == "admins"));
        let scopes = case.scopes.into_iter().filter(|s| s != "admin" || admin).collect();
        let may_act = claims["agent"].as_str().map(|agent| MayActClaim { client_id: agent.into(), sub: None });
        let subject = format!("ext:{}#{}", case.token.issuer, case.token.subject);
        Ok(Mapping { subject, scopes, may_act })
    }
}

/// A Kubernetes service account authenticating the client of its name.
fn workload(case: AssertionCase) -> Result<Mapping, Error> {
    let account = case.token.subject.strip_prefix("system:serviceaccount:").unwrap_or_default();
    let parts: Vec<&str> = account.split(':').collect();
    let [namespace, name] = parts[..] else {
        return Err(Error::Denied("not a Kubernetes service account".into()));
    };
    let Some(client) = case.client else {
        return Err(Error::Denied("no client to authenticate".into()));
    };
    if namespace != WORKLOAD_NAMESPACE || json(&client.metadata)?["client_name"] != name {
        return Err(Error::Denied(format!("this service account is not the client {:?}", client.client_id)));
    }
    Ok(Mapping { subject: client.client_id, scopes: vec![], may_act: None })
}

fn json(text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::Other(format!("not JSON: {e}")))
}

export!(TrustedDomains);
