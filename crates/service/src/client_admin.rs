//! A realm's clients as its operators manage them: listed, shown,
//! disabled, enabled and deleted, each change audited.
//!
//! Disabling a client stops it at once, on every replica (the change is
//! one the others follow): it can no longer authenticate, and every token
//! issued to it or naming it as an actor up to then is dead, at
//! introspection and as a subject or actor token, whether a JWT or kept
//! server-side; its refresh families and the families derived from its
//! tokens are revoked. Enabling it again brings none of that back. A JWT
//! already handed to a resource server that does not introspect lives
//! until it expires: access tokens are short-lived for that reason.

use agentauth_core::ports::{ClientFilter, ClientRow, ClientState};
use agentauth_core::registration::metadata_json;
use serde_json::{Value, json};

use crate::Service;
use crate::admin::{AdminError, audit};
use crate::users::MAX_PAGE;

/// A client as the admin API shows it at `now`: its registration (never
/// its credentials' hashes), attributes and lifecycle. Its `state` is
/// `active`, `disabled`, or `expired` (an active client past its
/// `client_secret_expires_at`).
pub fn client_json(row: &ClientRow, now: i64) -> Value {
    let client = &row.client;
    let mut shown = metadata_json(&client.metadata);
    shown["client_id"] = json!(client.client_id);
    shown["client_id_issued_at"] = json!(client.issued_at);
    shown["client_secret_expires_at"] = json!(row.expires_at.unwrap_or(0));
    shown["last_used_at"] = json!(row.last_used_at);
    shown["is_ai_agent"] = json!(client.is_ai_agent);
    shown["attributes"] = serde_json::to_value(&client.attributes).unwrap_or(Value::Null);
    let state = if row.state == ClientState::Active && row.is_expired(now) { "expired" } else { row.state.as_str() };
    shown["state"] = json!(state);
    if row.tokens_valid_after > 0 {
        shown["tokens_valid_after"] = json!(row.tokens_valid_after);
    }
    shown
}

fn no_client(realm: &str, client_id: &str) -> AdminError {
    AdminError::NotFound(format!("no client {client_id:?} in realm {realm}"))
}

impl Service {
    /// A page of the realm's clients in id order, after `after`, at most
    /// `limit` (100 by default, [`MAX_PAGE`] at most); and the id to ask
    /// the next page after, when the page is full.
    pub fn list_clients(
        &self,
        realm: &str,
        filter: &ClientFilter,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<ClientRow>, Option<String>), AdminError> {
        let limit = limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(AdminError::Invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        self.realm_settings(realm)?;
        let clients = self.store.clients(realm, filter, after.unwrap_or_default(), limit)?;
        let next = clients.last().filter(|_| clients.len() as i64 == limit).map(|c| c.client.client_id.clone());
        Ok((clients, next))
    }

    /// How many live server-side tokens each of `clients` holds (see
    /// `TokenRepository::live_token_counts`: JWTs outside a token family
    /// are not stored, so not counted), by client id.
    pub fn live_tokens(
        &self,
        realm: &str,
        clients: &[ClientRow],
    ) -> Result<std::collections::HashMap<String, i64>, AdminError> {
        let ids: Vec<String> = clients.iter().map(|c| c.client.client_id.clone()).collect();
        Ok(self.store.live_token_counts(realm, &ids, self.now())?.into_iter().collect())
    }

    /// The realm's client `client_id` (404 if none), read past the cache,
    /// so that its `last_used_at` is the latest recorded.
    pub fn admin_client(&self, realm: &str, client_id: &str) -> Result<ClientRow, AdminError> {
        self.realm_settings(realm)?;
        let only = ClientFilter { client_id: Some(client_id.to_string()), ..ClientFilter::default() };
        self.store.clients(realm, &only, "", 1)?.pop().ok_or_else(|| no_client(realm, client_id))
    }

    /// Disables the client, or enables it again (see the module's
    /// documentation); the client as it is now.
    pub fn set_client_state(
        &self,
        realm: &str,
        client_id: &str,
        state: ClientState,
        actor: &str,
    ) -> Result<ClientRow, AdminError> {
        self.realm_settings(realm)?;
        let action = match state {
            ClientState::Active => "enable-client",
            ClientState::Disabled => "disable-client",
        };
        let detail = json!({ "client_id": client_id }).to_string();
        let entry = audit(self.now(), actor, action, None, Some(detail));
        if !self.store.set_client_state(realm, client_id, state, self.now(), &entry)? {
            return Err(no_client(realm, client_id));
        }
        tracing::info!(realm, client_id, state = state.as_str(), "client state set");
        self.admin_client(realm, client_id)
    }

    /// Disables every active client of `owner` in the realm (each audited
    /// as a disabling); how many.
    pub fn disable_owned(&self, realm: &str, owner: &str, actor: &str) -> Result<usize, AdminError> {
        self.realm_settings(realm)?;
        let filter = ClientFilter {
            owner: Some(owner.to_string()),
            state: Some(ClientState::Active),
            ..ClientFilter::default()
        };
        let mut disabled = 0;
        let mut after = String::new();
        loop {
            let page = self.store.clients(realm, &filter, &after, MAX_PAGE)?;
            for row in &page {
                let id = row.client.client_id.as_str();
                let detail = json!({ "client_id": id, "owner": owner }).to_string();
                let entry = audit(self.now(), actor, "disable-client", None, Some(detail));
                if self.store.set_client_state(realm, id, ClientState::Disabled, self.now(), &entry)? {
                    disabled += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == MAX_PAGE => after = last.client.client_id.clone(),
                _ => break,
            }
        }
        tracing::info!(realm, owner, disabled, "disabled an owner's clients");
        Ok(disabled)
    }

    /// Deletes the client, with every token issued to it and every family
    /// derived from them, its codes and the consents users gave it.
    pub fn delete_client_as_admin(&self, realm: &str, client_id: &str, actor: &str) -> Result<(), AdminError> {
        self.realm_settings(realm)?;
        let detail = json!({ "client_id": client_id }).to_string();
        let entry = audit(self.now(), actor, "delete-client", None, Some(detail));
        if !self.store.remove_client(realm, client_id, &entry)? {
            return Err(no_client(realm, client_id));
        }
        tracing::info!(realm, client_id, "client deleted by an admin");
        Ok(())
    }
}
