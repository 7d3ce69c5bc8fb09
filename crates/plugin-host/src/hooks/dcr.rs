//! The dynamic client registration hook (`dcr-hook`): a realm's policy
//! approves, amends (by setting client attributes) or refuses a
//! registration, an update or a deletion (RFC 7591 / RFC 7592).
//!
//! The answer is checked here, in full: its size, and each attribute
//! against the table of attributes the host knows
//! (`agentauth_core::ClientAttribute`), so a caller can apply it as is.

use crate::bindings::dcr_world::DcrHookPre;
use crate::bindings::dcr_world::exports::agentauth::policy::dcr as wit;
use crate::bindings::types as wit_types;
use crate::engine::PluginHost;
use crate::hooks::{Hook, client_view, invalid_answer};
use crate::limits::{Limits, MAX_OUTPUT_STRING};
use crate::registry::Plugin;
use crate::state::HostState;
use crate::{Client, Failure, HookError};

/// Most attributes a DCR decision may set, and most values one may hold.
const MAX_ATTRIBUTES: usize = 32;

/// A registration operation (RFC 7591 / RFC 7592).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// The HTTP request a hook runs for, with credentials already removed.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
    pub body: Option<String>,
}

impl RequestContext {
    fn to_wit(&self) -> wit_types::RequestContext {
        let pairs = |v: &[(String, String)]| {
            v.iter().map(|(name, value)| wit_types::Pair { name: name.clone(), value: value.clone() }).collect()
        };
        wit_types::RequestContext {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers: pairs(&self.headers),
            parameters: pairs(&self.parameters),
            body: self.body.clone(),
        }
    }
}

/// Input of the DCR hook.
#[derive(Debug)]
pub struct DcrInput<'a> {
    pub operation: Operation,
    pub request: &'a RequestContext,
    pub client: &'a Client,
    pub software_statement: Option<&'a str>,
}

/// An attribute a DCR plugin sets: a name the host knows, with values of
/// the shape that name takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub values: Vec<String>,
}

/// The DCR hook: `dcr.evaluate(registration) -> result<decision, error>`.
pub(crate) struct Dcr;

impl Hook for Dcr {
    const FUNCTION: &'static str = "evaluate";
    type Pre = DcrHookPre<HostState>;
    type Params = (wit::Registration,);
    type Answer = wit::Decision;
}

impl PluginHost {
    /// Runs a DCR plugin on one registration operation and returns the
    /// attributes it sets, each a known attribute with values of its shape.
    pub fn run_dcr(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        realm: &str,
        input: &DcrInput<'_>,
    ) -> Result<Vec<Attribute>, HookError> {
        let registration = wit::Registration {
            operation: match input.operation {
                Operation::Create => wit::Operation::Create,
                Operation::Update => wit::Operation::Update,
                Operation::Delete => wit::Operation::Delete,
            },
            request: input.request.to_wit(),
            client: client_view(input.client),
            software_statement: input.software_statement.map(str::to_string),
        };
        let decision = self.call::<Dcr>(plugin, limits, realm, (registration,))?;
        checked(decision, input.client)
    }
}

/// The attributes of `decision`: first bounded in size, then each applied,
/// in order, to `client`'s attributes as the caller will apply them.
fn checked(decision: wit::Decision, client: &Client) -> Result<Vec<Attribute>, HookError> {
    if decision.set_attributes.len() > MAX_ATTRIBUTES {
        return Err(HookError::Failed(
            Failure::InvalidAnswer,
            format!("the decision sets more than {MAX_ATTRIBUTES} attributes"),
        ));
    }
    let oversized = |a: &wit_types::Attribute| {
        a.name.len() > MAX_OUTPUT_STRING
            || a.values.len() > MAX_ATTRIBUTES
            || a.values.iter().any(|v| v.len() > MAX_OUTPUT_STRING)
    };
    if decision.set_attributes.iter().any(oversized) {
        return Err(HookError::Failed(Failure::InvalidAnswer, "the decision holds an oversized attribute".into()));
    }
    let mut applied = client.attributes.clone();
    decision
        .set_attributes
        .into_iter()
        .map(|a| {
            applied.set(&a.name, &a.values).map_err(invalid_answer)?;
            Ok(Attribute { name: a.name, values: a.values })
        })
        .collect()
}
