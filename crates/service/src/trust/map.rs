//! What a verified external token means here: the realm's `assertion`
//! policy decides, or without one a safe default.
//!
//! Without a policy, the local subject is `ext:<issuer>#<sub>`: an
//! issuer's `sub` is unique only at that issuer, and no issuer can name a
//! local user (`usr_...`), a client or an agent that way. The scopes are
//! those asked for, and no one may act. A policy may map to any subject,
//! but the host keeps it out of the realm's own namespaces unless it is
//! really there: a `usr_...` subject must be an enabled local user of the
//! realm, no subject may be one of the realm's client ids (a client's own
//! tokens name it), and none may take an agent's `(age!...)` form.

use agentauth_core::ports::UserState;
use agentauth_core::trust::TrustPurpose;
use agentauth_core::{Client, ErrorCode, HookKind, MayAct, OAuthError};
use agentauth_plugin_host::{AssertionCase, AssertionPurpose, ExternalToken};
use serde_json::Value;

use super::verify::Verified;
use crate::policy::{audited, hook_error};
use crate::realm::RealmRuntime;
use crate::{Service, internal};

/// What a token from outside maps to locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub subject: String,
    pub scopes: Vec<String>,
    pub may_act: Option<MayAct>,
}

fn purpose_for_hook(purpose: TrustPurpose) -> AssertionPurpose {
    match purpose {
        TrustPurpose::Login => AssertionPurpose::Login,
        TrustPurpose::IdJag => AssertionPurpose::IdJag,
        TrustPurpose::JwtBearer => AssertionPurpose::JwtBearer,
        TrustPurpose::ClientAuth => AssertionPurpose::ClientAuthentication,
        TrustPurpose::SubjectToken => AssertionPurpose::SubjectToken,
    }
}

impl Service {
    /// Maps `verified`, used for `purpose` by or for `client`, asking for
    /// `scopes` (already within the client's) and `resources`. A refusal
    /// by the policy is `denied_code` with its words.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn map_external(
        &self,
        realm: &RealmRuntime,
        verified: &Verified,
        purpose: TrustPurpose,
        client: Option<&Client>,
        scopes: &[String],
        resources: &[String],
        denied_code: ErrorCode,
    ) -> Result<Mapped, OAuthError> {
        let mapped = match realm.settings.assertion_plugin.as_deref() {
            None => Mapped {
                subject: default_subject(&verified.issuer.issuer, &verified.subject),
                scopes: scopes.to_vec(),
                may_act: None,
            },
            Some(name) => {
                let plugin = realm.plugin(name, HookKind::Assertion)?;
                let claims = Value::Object(verified.claims.clone()).to_string();
                let case = AssertionCase {
                    purpose: purpose_for_hook(purpose),
                    token: ExternalToken {
                        issuer: &verified.issuer.issuer,
                        subject: &verified.subject,
                        audience: &verified.audience,
                        claims: &claims,
                    },
                    client,
                    scopes,
                    resources,
                };
                let call = || self.host.run_assertion(plugin, &realm.plugin_limits, &realm.name, &case);
                let answer = audited(realm, plugin, call).map_err(|e| hook_error(e, realm, plugin, denied_code))?;
                Mapped {
                    subject: answer.subject,
                    scopes: answer.scopes,
                    may_act: answer.may_act.map(|m| MayAct { client_id: m.client_id, sub: m.sub }),
                }
            }
        };
        if purpose != TrustPurpose::ClientAuth {
            self.check_mapped_subject(realm, &mapped.subject, denied_code)?;
        }
        if let Some(may_act) = &mapped.may_act
            && client.is_none_or(|c| c.client_id != may_act.client_id)
            && !self.store.client_exists(&realm.name, &may_act.client_id).map_err(internal)?
        {
            tracing::warn!(realm = %realm.name, "the assertion policy named a may_act client that does not exist");
            return Err(OAuthError::server_error("the realm's assertion policy failed"));
        }
        Ok(mapped)
    }

    /// Refuses a subject in the realm's own namespaces that is not there:
    /// a local user's subject must name an enabled user; an agent's form
    /// is never an external subject.
    fn check_mapped_subject(&self, realm: &RealmRuntime, subject: &str, code: ErrorCode) -> Result<(), OAuthError> {
        if subject.starts_with("(age!") {
            return Err(OAuthError::new(code, "the assertion's subject takes an agent's form"));
        }
        if subject.starts_with(agentauth_core::user::SUBJECT_PREFIX) {
            match self.store.user(&realm.name, subject).map_err(internal)? {
                Some(user) if user.state == UserState::Active => {}
                _ => return Err(OAuthError::new(code, "the assertion's subject is not an enabled user of this realm")),
            }
        }
        if self.store.client_exists(&realm.name, subject).map_err(internal)? {
            return Err(OAuthError::new(code, "the assertion's subject is a client of this realm"));
        }
        Ok(())
    }
}

/// The local subject of an external one, without a policy.
fn default_subject(issuer: &str, subject: &str) -> String {
    format!("ext:{issuer}#{subject}")
}
