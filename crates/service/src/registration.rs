//! Dynamic client registration (RFC 7591) and client configuration
//! (RFC 7592), with the realm's DCR policy deciding on each.
//!
//! Agents registering at `aiagent/register` are registered the same way,
//! marked as AI agents for the realm's policies. A registration is
//! admitted ([`Service::admit_registration`]: open registration, the
//! realm's rate and capacity) before its body is even parsed.
//!
//! Client configuration is reached with the registration access token.
//! An unknown client, a wrong or missing token, and a token of another
//! client all get the same 401 `invalid_token` (RFC 7592 §2). So does a
//! token spent by a racing request: an update or delete checks the token
//! and replaces (or removes) it in one compare-and-swap, so of requests
//! racing with one token exactly one succeeds.

use std::net::IpAddr;

use agentauth_core::ports::ClientRow;
use agentauth_core::registration::{self, IssuedCredentials};
use agentauth_core::{Client, ClientAttributes, ClientMetadata, ErrorCode, OAuthError};
use agentauth_plugin_host::{DcrInput, HookKind, Operation, RequestContext};
use serde_json::Value;

use crate::policy::{audited, hook_error, invalid_answer};
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_client_id, new_secret};
use crate::{Service, internal};

/// A registration's answer: the client and the credentials issued to it
/// (RFC 7591 §3.2.1), ready to render. `Debug` shows only the client_id.
pub struct Registered(pub Value);

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("client_id", &self.0.get("client_id")).finish_non_exhaustive()
    }
}

/// A client reached with its registration access token; the token's
/// keyed hash is what an update or delete compares and swaps.
pub struct ManagedClient {
    row: ClientRow,
    presented: Vec<u8>,
}

impl std::fmt::Debug for ManagedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedClient").field("client_id", &self.row.client.client_id).finish_non_exhaustive()
    }
}

impl ManagedClient {
    pub fn client(&self) -> &Client {
        &self.row.client
    }
}

impl Service {
    /// Admits a registration to `realm` before its body is read: the realm
    /// must take open registrations, or this one is `by_user` (a user of
    /// the realm registering its own agent with its token, see
    /// [`crate::owners`]); of AI agents, for `ai_agent`; within its rates
    /// (per realm and per `source`) and its `max_clients`.
    pub fn admit_registration(
        &self,
        realm: &RealmRuntime,
        ai_agent: bool,
        source: Option<IpAddr>,
        by_user: bool,
    ) -> Result<(), OAuthError> {
        if !realm.settings.open_registration && !by_user {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                "open dynamic client registration is disabled in this realm",
            ));
        }
        if ai_agent && !realm.settings.ai_agents_enabled {
            return Err(OAuthError::new(ErrorCode::AccessDenied, "AI agents are not enabled in this realm"));
        }
        let limits = (realm.settings.registrations_per_minute, realm.settings.registrations_per_minute_per_source);
        if let Err(wait) = self.registrations.take(&realm.name, source, limits.0, limits.1) {
            tracing::warn!(realm = %realm.name, ?source, "registration rate limit reached");
            realm.metrics.registrations_rate_limited();
            return Err(OAuthError::slow_down(format!("too many registrations; retry in {wait} s"), wait));
        }
        // Checked first without the writer, so a full realm turns
        // registrations away before any policy runs; checked again, with
        // the insert, in `register`.
        if self.store.count_clients(&realm.name).map_err(internal)? >= u64::from(realm.settings.max_clients) {
            return Err(realm_full(realm));
        }
        Ok(())
    }

    /// Registers a client with the metadata in `request` (a JSON object),
    /// after the realm's DCR policy approved it; `context` is the request
    /// as the policy may see it. A client registered by `owner` (a user
    /// who presented its token) is the user's, unless the policy names
    /// another owner.
    pub fn register(
        &self,
        realm: &RealmRuntime,
        ai_agent: bool,
        request: &Value,
        context: RequestContext,
        owner: Option<&crate::owners::Owner>,
    ) -> Result<Registered, OAuthError> {
        let metadata = registration::parse_metadata(request)?;
        check_allowed_scopes(realm, &metadata)?;
        check_jwks(&metadata)?;

        let mut client = Client {
            client_id: new_client_id(),
            metadata,
            // Set before the policy runs, so that it sees who registers
            // and may name another owner.
            attributes: ClientAttributes { owner: owner.map(|o| o.name()), ..ClientAttributes::default() },
            is_ai_agent: ai_agent,
            issued_at: self.now(),
        };
        crate::decisions::note(|d| d.client_id = Some(client.client_id.clone()));
        if let Some(dcr) = &realm.settings.dcr_plugin {
            client.attributes = self.run_dcr_policy(realm, dcr, Operation::Create, &client, request, context)?;
        }

        self.check_owner_cap(realm, &client)?;
        let (client_secret, registration_access_token) = (new_secret(), new_secret());
        // The policy's `expiresIn`, if it set one; for an agent, else, the
        // realm's agent lifetime, if it sets one.
        let lifetime_days = i64::from(realm.settings.agent_lifetime_days);
        let expires_at = match client.attributes.expires_in {
            Some(seconds) => Some(client.issued_at.saturating_add(seconds)),
            None => (ai_agent && lifetime_days > 0).then(|| client.issued_at + lifetime_days * 86_400),
        };
        let row = ClientRow {
            client,
            secret_hash: self.hasher.hash(Purpose::ClientSecret, &client_secret),
            registration_token_hash: self.hasher.hash(Purpose::RegistrationToken, &registration_access_token),
            state: agentauth_core::ports::ClientState::Active,
            tokens_valid_after: 0,
            expires_at,
            last_used_at: 0,
        };
        // A private_key_jwt client authenticates with its keys, and a
        // public one with nothing: the secret made for them (so every row
        // has one) is never shown, and never accepted.
        let uses_secret = matches!(
            row.client.metadata.token_endpoint_auth_method,
            agentauth_core::AuthMethod::ClientSecretBasic | agentauth_core::AuthMethod::ClientSecretPost
        );
        let credentials = IssuedCredentials {
            client_secret: uses_secret.then_some(client_secret),
            registration_access_token: Some(registration_access_token),
        };
        let stored = tracing::debug_span!("store_write", realm = %realm.name, rows = 1)
            .in_scope(|| self.store.insert_client(&realm.name, &row, u64::from(realm.settings.max_clients)));
        if !stored.map_err(internal)? {
            return Err(realm_full(realm));
        }
        let client = row.client;
        tracing::info!(realm = %realm.name, client_id = %client.client_id, ai_agent, "registered a client");
        let mut response = registration::response(&client, &credentials, &client_uri(realm, &client));
        // RFC 7591 §3.2.1: when the client (its secret with it) expires.
        response["client_secret_expires_at"] = serde_json::json!(expires_at.unwrap_or(0));
        Ok(Registered(response))
    }

    /// Refuses a new `client` whose owner holds the realm's
    /// `max_clients_per_owner` already. Counted before the insert, so
    /// registrations of one owner racing each other may pass the cap by as
    /// many as race; the realm's own cap is exact.
    pub(crate) fn check_owner_cap(&self, realm: &RealmRuntime, client: &Client) -> Result<(), OAuthError> {
        let cap = realm.settings.max_clients_per_owner;
        let Some(owner) = client.attributes.owner.as_deref().filter(|_| cap > 0) else {
            return Ok(());
        };
        let filter = agentauth_core::ports::ClientFilter { owner: Some(owner.to_string()), ..Default::default() };
        let held = self.store.clients(&realm.name, &filter, "", i64::from(cap)).map_err(internal)?.len();
        if held >= cap as usize {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                format!("the owner {owner:?} holds its maximum of {cap} clients in this realm"),
            ));
        }
        Ok(())
    }

    /// The client `client_id` of `realm`, if `token` is its registration
    /// access token; otherwise `invalid_token`, whatever was wrong.
    pub fn managed_client(
        &self,
        realm: &RealmRuntime,
        client_id: &str,
        token: &str,
    ) -> Result<ManagedClient, OAuthError> {
        let row = self.store.client(&realm.name, client_id).map_err(internal)?;
        let stored = row.as_ref().map_or(&[0u8; 32][..], |r| &r.registration_token_hash);
        let matches = self.hasher.matches(Purpose::RegistrationToken, token, stored);
        let Some(row) = row.filter(|_| matches) else {
            return Err(invalid_token());
        };
        // What the store compares and swaps: the check above may have read
        // a row that a racing request is rotating, so the store checks again.
        Ok(ManagedClient { row, presented: self.hasher.hash(Purpose::RegistrationToken, token) })
    }

    /// The client's configuration (RFC 7592 §2.1), without credentials.
    pub fn read_client(&self, realm: &RealmRuntime, managed: &ManagedClient) -> Value {
        let client = managed.client();
        registration::response(client, &IssuedCredentials::default(), &client_uri(realm, client))
    }

    /// Replaces the client's metadata (RFC 7592 §2.2), rotating its
    /// registration access token.
    pub fn update_client(
        &self,
        realm: &RealmRuntime,
        managed: ManagedClient,
        request: &Value,
        context: RequestContext,
    ) -> Result<Value, OAuthError> {
        let ManagedClient { row, presented } = managed;
        crate::decisions::note(|d| d.client_id = Some(row.client.client_id.clone()));
        if request.get("client_id").and_then(Value::as_str) != Some(row.client.client_id.as_str()) {
            return Err(OAuthError::invalid_client_metadata("client_id must be present and match the client's"));
        }
        if let Some(field) = registration::SERVER_MANAGED_FIELDS.iter().find(|f| request.get(**f).is_some()) {
            return Err(OAuthError::invalid_client_metadata(format!(
                "{field} is managed by the server and may not be sent"
            )));
        }
        if let Some(secret) = request.get("client_secret") {
            let same = secret.as_str().is_some_and(|s| self.hasher.matches(Purpose::ClientSecret, s, &row.secret_hash));
            if !same {
                return Err(OAuthError::invalid_client_metadata("client_secret may not be changed by the client"));
            }
        }
        let metadata = registration::parse_metadata(request)?;
        check_allowed_scopes(realm, &metadata)?;
        check_jwks(&metadata)?;
        let mut client = Client { metadata, ..row.client };
        if let Some(dcr) = &realm.settings.dcr_plugin {
            client.attributes = self.run_dcr_policy(realm, dcr, Operation::Update, &client, request, context)?;
        }
        let registration_access_token = new_secret();
        let updated = ClientRow {
            client,
            secret_hash: row.secret_hash,
            registration_token_hash: self.hasher.hash(Purpose::RegistrationToken, &registration_access_token),
            state: row.state,
            tokens_valid_after: row.tokens_valid_after,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        };
        // A racing update or delete that presented the same token and won
        // leaves this one with a spent token.
        if !self.store.update_client(&realm.name, &updated, &presented).map_err(internal)? {
            return Err(invalid_token());
        }
        tracing::info!(realm = %realm.name, client_id = %updated.client.client_id, "updated a client");
        let credentials =
            IssuedCredentials { client_secret: None, registration_access_token: Some(registration_access_token) };
        Ok(registration::response(&updated.client, &credentials, &client_uri(realm, &updated.client)))
    }

    /// Deletes the client (RFC 7592 §2.3), ending its server-side tokens,
    /// if the realm's DCR policy allows it.
    pub fn delete_client(
        &self,
        realm: &RealmRuntime,
        managed: ManagedClient,
        context: RequestContext,
    ) -> Result<(), OAuthError> {
        let client = managed.client();
        crate::decisions::note(|d| d.client_id = Some(client.client_id.clone()));
        if let Some(dcr) = &realm.settings.dcr_plugin {
            self.run_dcr_policy(realm, dcr, Operation::Delete, client, &Value::Null, context)?;
        }
        if !self.store.delete_client(&realm.name, &client.client_id, &managed.presented).map_err(internal)? {
            return Err(invalid_token());
        }
        tracing::info!(realm = %realm.name, client_id = %client.client_id, "deleted a client");
        Ok(())
    }

    /// Runs the realm's DCR policy on an operation and returns the
    /// attributes it leaves the client with. Anything it sets is checked:
    /// an unknown attribute, or a may-act plugin the realm lacks, fails the
    /// operation. A refusal is `invalid_client_metadata` on CREATE and
    /// UPDATE, and `access_denied` on DELETE.
    ///
    /// The policy sees the request body with any credential taken out (an
    /// update may echo the client's secret): credentials never reach
    /// plugins.
    pub(crate) fn run_dcr_policy(
        &self,
        realm: &RealmRuntime,
        plugin_name: &str,
        operation: Operation,
        client: &Client,
        request: &Value,
        mut context: RequestContext,
    ) -> Result<ClientAttributes, OAuthError> {
        let plugin = realm.plugin(plugin_name, HookKind::Dcr)?;
        context.body = None;
        if let Value::Object(fields) = request {
            let mut shown = fields.clone();
            for credential in ["client_secret", "registration_access_token", "client_assertion"] {
                shown.remove(credential);
            }
            context.body = Some(Value::Object(shown).to_string());
        }
        let input = DcrInput {
            operation,
            request: &context,
            client,
            software_statement: request.get("software_statement").and_then(Value::as_str),
        };
        let call = || self.host.run_dcr(plugin, &realm.plugin_limits, &realm.name, &input);
        let set = audited(realm, plugin, call).map_err(|e| {
            let refused =
                if operation == Operation::Delete { ErrorCode::AccessDenied } else { ErrorCode::InvalidClientMetadata };
            hook_error(e, realm, plugin, refused)
        })?;
        let mut attributes = client.attributes.clone();
        for attribute in set {
            attributes.set(&attribute.name, &attribute.values).map_err(|why| invalid_answer(why, realm, plugin))?;
        }
        if let Some(may_act) = &attributes.access_token_may_act_script {
            realm.plugin(may_act, HookKind::MayAct)?;
        }
        Ok(attributes)
    }
}

/// The answer to a registration in a realm that holds its `max_clients`.
///
/// RFC 7591 §3.2.2 has no code for it, and the client's metadata is not at
/// fault, so not `invalid_client_metadata`. It is 403 `access_denied`, as
/// when open registration is off: the realm accepts no registration now,
/// and retrying will not help until its operator raises the cap or clients
/// are deleted (429 or 503 would invite retries).
fn realm_full(realm: &RealmRuntime) -> OAuthError {
    tracing::warn!(realm = %realm.name, max_clients = realm.settings.max_clients, "registration refused: the realm is full");
    OAuthError::new(
        ErrorCode::AccessDenied,
        format!(
            "this realm holds its maximum of {} clients; registration is closed until clients are deleted",
            realm.settings.max_clients
        ),
    )
}

/// The one answer to a registration access token that is wrong, missing,
/// another client's, or spent by a racing request (RFC 7592 §2).
pub fn invalid_token() -> OAuthError {
    OAuthError::new(ErrorCode::InvalidToken, "the registration access token is invalid")
}

/// Refuses a JWK Set whose keys this server cannot verify with.
pub(crate) fn check_jwks(metadata: &ClientMetadata) -> Result<(), OAuthError> {
    for jwk in metadata.jwks.iter().flat_map(|j| j["keys"].as_array().into_iter().flatten()) {
        agentauth_jose::VerifyingKey::from_jwk(jwk)
            .map_err(|e| OAuthError::invalid_client_metadata(format!("jwks: {e}")))?;
    }
    Ok(())
}

/// Refuses scopes outside the realm's allowlist, when it has one.
pub(crate) fn check_allowed_scopes(realm: &RealmRuntime, metadata: &ClientMetadata) -> Result<(), OAuthError> {
    let Some(allowed) = &realm.settings.allowed_scopes else {
        return Ok(());
    };
    let scopes = metadata.scopes();
    let outside: Vec<&str> = scopes.iter().filter(|s| !allowed.iter().any(|a| a == s)).collect();
    if outside.is_empty() {
        Ok(())
    } else {
        Err(OAuthError::invalid_client_metadata(format!(
            "scope {} is not offered in this realm (offered: {})",
            outside.join(" "),
            allowed.join(" ")
        )))
    }
}

/// The client's `registration_client_uri`, PingAM's form: the endpoint it
/// registered at, with its client_id as a query parameter.
fn client_uri(realm: &RealmRuntime, client: &Client) -> String {
    let path = if client.is_ai_agent { "aiagent/register" } else { "register" };
    format!("{}?client_id={}", realm.endpoint(path), client.client_id)
}
