//! One test case for a plugin, as JSON: what `agentauth plugin test` runs
//! on a file and the admin API on a stored version (`POST
//! .../plugins/{name}/versions/{version}/test`). Every field has a
//! default, so `{}` works:
//!
//! ```json
//! {
//!   "client": {
//!     "client_id": "agent-1",
//!     "is_ai_agent": true,
//!     "metadata": {"grant_types": ["client_credentials"], "scope": "read write"},
//!     "attributes": {"providerOverridesEnabled": ["true"]}
//!   },
//!   "token": {"grant_type": "client_credentials", "sub": "agent-1", "scopes": ["read"]},
//!   "operation": "create",
//!   "request": {"method": "POST", "uri": "/register", "headers": {}, "parameters": {}, "body": null},
//!   "software_statement": null
//! }
//! ```
//!
//! `token` is for may-act and token plugins (`token.claims`, a JSON
//! object, for the latter); `scope_request` (`{"grant_type", "requested"}`)
//! for scope plugins; `operation`, `request` and `software_statement` for
//! DCR plugins; `user` (`{"sub", "username", "name", "email"}`) and
//! `authorization_request` (`{"scopes", "resources", "consented"}`) for
//! authorize plugins; `assertion` for assertion plugins, the verified
//! external token and what it is presented for:
//!
//! ```json
//! {
//!   "client": {"client_id": "agent-1", "metadata": {"client_name": "helper"}},
//!   "assertion": {
//!     "purpose": "login",
//!     "issuer": "https://idp.example.com",
//!     "claims": {"sub": "248289761001", "email": "ada@example.com", "email_verified": true},
//!     "scopes": ["read", "write"],
//!     "resources": []
//!   }
//! }
//! ```
//!
//! `purpose` is `login` (the default), `id-jag`, `jwt-bearer`,
//! `client-authentication` or `subject-token`; the token's subject is
//! `claims.sub` and its audience `claims.aud` unless `subject` or
//! `audience` say otherwise; `scopes` default to the client's (none for
//! `client-authentication`); `"client": null` presents the token for no
//! client.

use serde_json::{Value, json};

use crate::{
    AssertionCase, AssertionPurpose, AuthorizationRequest, Client, DcrInput, ExternalToken, HookError, HookKind,
    Limits, Operation, Plugin, PluginHost, RequestContext, ScopeRequest, TokenView, UserView,
};
use agentauth_core::ClientAttributes;

/// What a plugin made of a case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseOutcome {
    /// `{"allowed": true, "decision": ...}`, `{"allowed": false,
    /// "denied": why}` (the plugin refused), or `{"allowed": false,
    /// "failed": why}` (it gave no usable answer: a request would fail
    /// closed).
    pub answer: Value,
    /// Whether the plugin failed.
    pub failed: bool,
}

/// Runs `plugin` on `case` under `limits`, logged under `realm`; an error
/// says what is wrong with the case.
pub fn run_case(
    host: &PluginHost,
    plugin: &Plugin,
    limits: &Limits,
    realm: &str,
    case: &Value,
) -> Result<CaseOutcome, String> {
    let client = client(&case["client"])?;
    let kind = plugin.kind();
    let outcome = match kind {
        HookKind::MayAct => {
            let token = &case["token"];
            let scopes: Vec<String> = strings(&token["scopes"]).unwrap_or_else(|| vec!["read".into()]);
            let view = TokenView {
                grant_type: token["grant_type"].as_str().unwrap_or("client_credentials"),
                sub: token["sub"].as_str().unwrap_or(&client.client_id),
                scopes: &scopes,
            };
            host.run_may_act(plugin, limits, realm, &client, &view)
                .map(|claim| json!({"may_act": claim.map(|c| json!({"client_id": c.client_id, "sub": c.sub}))}))
        }
        HookKind::Dcr => {
            let operation = match case["operation"].as_str().unwrap_or("create") {
                "create" => Operation::Create,
                "update" => Operation::Update,
                "delete" => Operation::Delete,
                other => return Err(format!("operation must be create, update or delete, not {other:?}")),
            };
            let request = request(&case["request"]);
            let input = DcrInput {
                operation,
                request: &request,
                client: &client,
                software_statement: case["software_statement"].as_str(),
            };
            host.run_dcr(plugin, limits, realm, &input).map(|set| {
                let attributes: serde_json::Map<String, Value> =
                    set.into_iter().map(|a| (a.name, json!(a.values))).collect();
                json!({"set_attributes": attributes})
            })
        }
        HookKind::Scope => {
            let request = &case["scope_request"];
            let registered = client.metadata.scopes().to_vec();
            let requested = strings(&request["requested"]).unwrap_or_else(|| registered.clone());
            let scope_request = ScopeRequest {
                grant_type: request["grant_type"].as_str().unwrap_or("client_credentials"),
                requested: &requested,
                registered: &registered,
            };
            host.run_scope(plugin, limits, realm, &client, &scope_request).map(|granted| json!({"scopes": granted}))
        }
        HookKind::Token => {
            let token = &case["token"];
            let claims = token.get("claims").cloned().unwrap_or_else(|| {
                json!({"iss": "https://as.example/am/oauth2/realms/root/realms/test", "sub": client.client_id,
                       "aud": client.client_id, "client_id": client.client_id, "scope": "read"})
            });
            let grant_type = token["grant_type"].as_str().unwrap_or("client_credentials");
            host.run_token(plugin, limits, realm, &client, grant_type, &claims.to_string())
                .map(|custom| json!({"custom_claims": custom}))
        }
        HookKind::Authorize => {
            let (user, request) = (&case["user"], &case["authorization_request"]);
            let scopes = strings(&request["scopes"]).unwrap_or_else(|| client.metadata.scopes().to_vec());
            let resources = strings(&request["resources"]).unwrap_or_default();
            let view = UserView {
                sub: user["sub"].as_str().unwrap_or("usr_test"),
                username: user["username"].as_str().unwrap_or("ada"),
                name: user["name"].as_str(),
                email: user["email"].as_str(),
            };
            let authorization = AuthorizationRequest {
                scopes: &scopes,
                resources: &resources,
                consented: request["consented"].as_bool().unwrap_or(false),
            };
            host.run_authorize(plugin, limits, realm, &view, &client, &authorization).map(|decided| {
                json!({
                    "scopes": decided.scopes,
                    "require_consent": decided.require_consent,
                    "may_act": decided.may_act.map(|c| json!({"client_id": c.client_id, "sub": c.sub})),
                })
            })
        }
        HookKind::Assertion => {
            let spec = &case["assertion"];
            let purpose = match spec["purpose"].as_str() {
                None => AssertionPurpose::Login,
                Some(name) => AssertionPurpose::parse(name).ok_or_else(|| {
                    let names: Vec<_> = AssertionPurpose::ALL.iter().map(|p| p.as_str()).collect();
                    format!("assertion.purpose must be one of {}, not {name:?}", names.join(", "))
                })?,
            };
            let claims = spec.get("claims").cloned().unwrap_or_else(|| json!({"sub": "248289761001"}));
            if !claims.is_object() {
                return Err("assertion.claims must be a JSON object".into());
            }
            let issuer = spec["issuer"].as_str().or(claims["iss"].as_str()).unwrap_or("https://idp.example.com");
            let subject = spec["subject"].as_str().or(claims["sub"].as_str()).unwrap_or_default();
            let audience = strings(&spec["audience"])
                .or_else(|| strings(&claims["aud"]))
                .or_else(|| claims["aud"].as_str().map(|aud| vec![aud.to_string()]))
                .unwrap_or_else(|| vec!["https://as.example/am/oauth2/realms/root/realms/test".into()]);
            let scopes = match strings(&spec["scopes"]) {
                Some(scopes) => scopes,
                None if purpose == AssertionPurpose::ClientAuthentication => vec![],
                None => client.metadata.scopes().to_vec(),
            };
            let resources = strings(&spec["resources"]).unwrap_or_default();
            let claims = claims.to_string();
            let assertion = AssertionCase {
                purpose,
                token: ExternalToken { issuer, subject, audience: &audience, claims: &claims },
                client: (case.get("client") != Some(&Value::Null)).then_some(&client),
                scopes: &scopes,
                resources: &resources,
            };
            host.run_assertion(plugin, limits, realm, &assertion).map(|mapped| {
                json!({
                    "subject": mapped.subject,
                    "scopes": mapped.scopes,
                    "may_act": mapped.may_act.map(|c| json!({"client_id": c.client_id, "sub": c.sub})),
                })
            })
        }
    };
    Ok(match outcome {
        Ok(decision) => CaseOutcome { answer: json!({"allowed": true, "decision": decision}), failed: false },
        Err(HookError::Denied(why)) => CaseOutcome { answer: json!({"allowed": false, "denied": why}), failed: false },
        Err(HookError::Failed(_, why) | HookError::Busy(why)) => {
            CaseOutcome { answer: json!({"allowed": false, "failed": why}), failed: true }
        }
    })
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
}

fn client(spec: &Value) -> Result<Client, String> {
    let metadata = match spec.get("metadata") {
        Some(m) => m.clone(),
        None => {
            json!({"grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"], "scope": "read write"})
        }
    };
    let metadata =
        agentauth_core::registration::parse_metadata(&metadata).map_err(|e| format!("client.metadata: {e}"))?;
    let mut attributes = ClientAttributes::default();
    if let Some(set) = spec["attributes"].as_object() {
        for (name, values) in set {
            let values =
                strings(values).ok_or_else(|| format!("client.attributes.{name} must be an array of strings"))?;
            attributes.set(name, &values).map_err(|e| format!("client.attributes: {e}"))?;
        }
    }
    Ok(Client {
        client_id: spec["client_id"].as_str().unwrap_or("agent-1").to_string(),
        metadata,
        attributes,
        is_ai_agent: spec["is_ai_agent"].as_bool().unwrap_or(true),
        issued_at: 0,
    })
}

fn request(spec: &Value) -> RequestContext {
    let pairs = |v: &Value| {
        v.as_object()
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default()
    };
    RequestContext {
        method: spec["method"].as_str().unwrap_or("POST").to_string(),
        uri: spec["uri"].as_str().unwrap_or("/am/oauth2/realms/root/realms/test/aiagent/register").to_string(),
        headers: pairs(&spec["headers"]),
        parameters: pairs(&spec["parameters"]),
        body: spec["body"].as_str().map(str::to_string),
    }
}
