//! Dynamic client registration (RFC 7591) at `register`, and agent
//! registration at `aiagent/register`: the same, with the client marked
//! as an AI agent for the realm's policies.

use agentauth_core::registration::{self, IssuedCredentials};
use agentauth_core::{Client, ClientAttributes, ErrorCode, OAuthError};
use agentauth_plugin_host::{DcrInput, HookKind, Operation};
use agentauth_store::ClientRow;
use hyper::http::request::Parts;
use serde_json::Value;

use super::{hook_error, internal, request_context};
use crate::http::{Reply, has_media_type};
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_client_id, new_secret};
use crate::{App, now};

pub fn register(
    app: &App,
    realm: &RealmRuntime,
    ai_agent: bool,
    parts: &Parts,
    body: &[u8],
) -> Result<Reply, OAuthError> {
    if !realm.settings.open_registration {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "open dynamic client registration is disabled in this realm",
        ));
    }
    if ai_agent && !realm.settings.ai_agents_enabled {
        return Err(OAuthError::new(ErrorCode::AccessDenied, "AI agents are not enabled in this realm"));
    }
    if !has_media_type(&parts.headers, "application/json") {
        return Err(OAuthError::invalid_client_metadata("the request body must be application/json"));
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| OAuthError::invalid_client_metadata(format!("the request body is not valid JSON: {e}")))?;
    let metadata = registration::parse_metadata(&request)?;

    let mut client = Client {
        client_id: new_client_id(),
        metadata,
        attributes: ClientAttributes::default(),
        is_ai_agent: ai_agent,
        issued_at: now(),
    };
    if let Some(dcr) = &realm.settings.dcr_plugin {
        client.attributes = run_dcr_policy(app, realm, dcr, &client, &request, parts, body)?;
    }

    let credentials = IssuedCredentials { client_secret: new_secret(), registration_access_token: new_secret() };
    let row = ClientRow {
        client,
        secret_hash: app.hasher.hash(Purpose::ClientSecret, &credentials.client_secret),
        registration_token_hash: app.hasher.hash(Purpose::RegistrationToken, &credentials.registration_access_token),
    };
    app.store.insert_client(&realm.name, &row).map_err(internal)?;
    let client = row.client;
    tracing::info!(realm = %realm.name, client_id = %client.client_id, ai_agent, "registered a client");

    let path = if ai_agent { "aiagent/register" } else { "register" };
    let uri = format!("{}?client_id={}", realm.endpoint(path), client.client_id);
    Ok(Reply::json(201, &registration::response(&client, &credentials, &uri)))
}

/// Runs the realm's DCR policy on a CREATE and returns the attributes it
/// leaves the client with. Anything it sets is checked: an unknown
/// attribute, or a may-act plugin the realm lacks, fails the registration.
fn run_dcr_policy(
    app: &App,
    realm: &RealmRuntime,
    plugin_name: &str,
    client: &Client,
    request: &Value,
    parts: &Parts,
    body: &[u8],
) -> Result<ClientAttributes, OAuthError> {
    let plugin = realm.plugin(plugin_name, HookKind::Dcr)?;
    let context = request_context(parts, Some(body));
    let input = DcrInput {
        operation: Operation::Create,
        request: &context,
        client,
        software_statement: request.get("software_statement").and_then(Value::as_str),
    };
    let _slot = realm.plugin_slot()?;
    let set = app
        .host
        .run_dcr(plugin, &realm.plugin_limits, &realm.name, &input)
        .map_err(|e| hook_error(e, realm, plugin, ErrorCode::InvalidClientMetadata))?;
    let mut attributes = client.attributes.clone();
    for attribute in set {
        attributes.set(&attribute.name, &attribute.values).map_err(|why| {
            hook_error(
                agentauth_plugin_host::HookError::Failed(format!("invalid answer: {why}")),
                realm,
                plugin,
                ErrorCode::ServerError,
            )
        })?;
    }
    if let Some(may_act) = &attributes.access_token_may_act_script {
        realm.plugin(may_act, HookKind::MayAct)?;
    }
    Ok(attributes)
}
