//! The assertion hook (`assertion-hook`): what a verified token from an
//! issuer outside the realm means here. The caller has already checked
//! the token against one of the realm's trusted issuers (signature, `iss`,
//! `aud`, lifetime, replay) and that the issuer may serve this purpose;
//! the realm's policy maps the external identity to a local subject,
//! narrows the scopes, may name who may act, or refuses.
//!
//! The answer's shape is checked here, so a caller gets one it may use:
//! - the subject is 1 to [`MAX_SUBJECT`] bytes, with no control
//!   characters and no whitespace at either end (it becomes a token's
//!   `sub`, compared as a string);
//! - every scope granted was asked for (a policy never widens), each a
//!   valid scope value, repeats dropped; `client-authentication` grants
//!   none, as it is asked for none;
//! - the `may_act` values are 1 to 256 printable characters.
//!
//! What the subject *names* is for the caller, which holds the store: a
//! local user's subject (`usr_...`) only if that user exists and is
//! enabled, and for client authentication only a client of the realm
//! that trusts the token's issuer (see `policy.wit`).

use crate::bindings::assertion_world::AssertionHookPre;
use crate::bindings::assertion_world::exports::agentauth::policy::assertion as wit;
use crate::engine::PluginHost;
use crate::hooks::authorize::{checked_may_act, narrowed_scopes};
use crate::hooks::{Hook, client_view, invalid_answer};
use crate::limits::Limits;
use crate::registry::Plugin;
use crate::state::HostState;
use crate::{Client, HookError, MayActClaim};

/// Longest subject a policy may map a token to, in bytes.
pub const MAX_SUBJECT: usize = 255;

/// What an external token is being used for (`assertion.purpose`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionPurpose {
    /// A user signing in through an upstream OpenID provider (its ID token).
    Login,
    /// An Identity Assertion JWT Authorization Grant, presented by the
    /// client it names.
    IdJag,
    /// Any other JWT bearer grant (RFC 7523 §2.1).
    JwtBearer,
    /// A workload's platform token authenticating a client (RFC 7523 §2.2).
    ClientAuthentication,
    /// The subject token of a token exchange (RFC 8693).
    SubjectToken,
}

impl AssertionPurpose {
    pub const ALL: [Self; 5] =
        [Self::Login, Self::IdJag, Self::JwtBearer, Self::ClientAuthentication, Self::SubjectToken];

    /// The purpose's name in the contract.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::IdJag => "id-jag",
            Self::JwtBearer => "jwt-bearer",
            Self::ClientAuthentication => "client-authentication",
            Self::SubjectToken => "subject-token",
        }
    }

    /// The purpose named `name`, as [`Self::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn to_wit(self) -> wit::Purpose {
        match self {
            Self::Login => wit::Purpose::Login,
            Self::IdJag => wit::Purpose::IdJag,
            Self::JwtBearer => wit::Purpose::JwtBearer,
            Self::ClientAuthentication => wit::Purpose::ClientAuthentication,
            Self::SubjectToken => wit::Purpose::SubjectToken,
        }
    }
}

/// The verified external token, as the caller read it.
#[derive(Debug)]
pub struct ExternalToken<'a> {
    /// `iss`: one of the realm's trusted issuers.
    pub issuer: &'a str,
    /// `sub`, as the issuer names it.
    pub subject: &'a str,
    /// `aud`.
    pub audience: &'a [String],
    /// Every claim of the token, as a JSON object.
    pub claims: &'a str,
}

/// One decision an assertion plugin is asked to make.
#[derive(Debug)]
pub struct AssertionCase<'a> {
    pub purpose: AssertionPurpose,
    pub token: ExternalToken<'a>,
    /// The client the token is presented by or for, when the request
    /// named one.
    pub client: Option<&'a Client>,
    /// The scopes asked for, already within what the client may have.
    /// Client authentication asks for none: whatever is here is not sent.
    pub scopes: &'a [String],
    /// The resources (RFC 8707) asked for.
    pub resources: &'a [String],
}

/// An assertion plugin's mapping, with its shape checked. What the
/// subject names (an existing local user, a client trusting the issuer)
/// is still the caller's to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionMapping {
    /// The local subject: the user the issued tokens name, or for
    /// client authentication the client the token authenticates.
    pub subject: String,
    /// A subset of the scopes asked for, each once, in the policy's order;
    /// empty for client authentication.
    pub scopes: Vec<String>,
    pub may_act: Option<MayActClaim>,
}

/// The assertion hook: `assertion.map(case) -> result<mapping, error>`.
pub(crate) struct Assertion;

impl Hook for Assertion {
    const FUNCTION: &'static str = "map";
    type Pre = AssertionHookPre<HostState>;
    type Params = (wit::AssertionCase,);
    type Answer = wit::Mapping;
}

impl PluginHost {
    /// Runs an assertion plugin on one verified external token and returns
    /// its mapping, checked; a refusal is [`HookError::Denied`], an answer
    /// that fails a check [`HookError::Failed`] (fail closed).
    pub fn run_assertion(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        case: &AssertionCase<'_>,
    ) -> Result<AssertionMapping, HookError> {
        let asked: &[String] = if case.purpose == AssertionPurpose::ClientAuthentication { &[] } else { case.scopes };
        let wit_case = wit::AssertionCase {
            realm: realm.to_string(),
            purpose: case.purpose.to_wit(),
            token: wit::ExternalToken {
                issuer: case.token.issuer.to_string(),
                subject: case.token.subject.to_string(),
                audience: case.token.audience.to_vec(),
                claims: case.token.claims.to_string(),
            },
            client: case.client.map(client_view),
            scopes: asked.to_vec(),
            resources: case.resources.to_vec(),
        };
        let mapping = self.call::<Assertion>(plugin, limits, realm, (wit_case,))?;
        check_subject(&mapping.subject)?;
        if case.purpose == AssertionPurpose::ClientAuthentication && !mapping.scopes.is_empty() {
            return Err(invalid_answer("client authentication grants no scopes, and the mapping has some"));
        }
        let scopes = narrowed_scopes(&mapping.scopes, asked, "an assertion policy")?;
        let may_act = mapping.may_act.map(|claim| checked_may_act(claim.client_id, claim.sub)).transpose()?;
        Ok(AssertionMapping { subject: mapping.subject, scopes, may_act })
    }
}

/// A subject a policy maps a token to: it names who the issued tokens are
/// for, so it is short, printable, and compares equal only to itself (no
/// control characters, no whitespace at either end).
fn check_subject(subject: &str) -> Result<(), HookError> {
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT
        || subject.chars().any(char::is_control)
        || subject.trim() != subject
    {
        return Err(invalid_answer(format_args!(
            "subject must be 1 to {MAX_SUBJECT} bytes of printable characters, without spaces at either end"
        )));
    }
    Ok(())
}
