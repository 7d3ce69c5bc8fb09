//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document):
//! a client that never registered names itself with an `https` URL, and
//! the document at that URL is its metadata.
//!
//! In a realm that takes them (`client_metadata_documents`), a `client_id`
//! that is an `https` URL and no registered client's is looked up there:
//! fetched through the SSRF-hardened fetcher (5 KiB at most, no
//! redirects, public addresses only), held to the draft's rules (its
//! `client_id` is the URL exactly, no secret, a public client or
//! `private_key_jwt` with its keys, inline or at a `jwks_uri` fetched as
//! trusted issuers' keys are), to the registration rules every
//! client meets, and to the realm's DCR policy, which sees it as a
//! registration (`create`): one policy governs both ways in. The client is
//! then stored under its URL, so consents, codes and tokens name it as
//! they name any client; when its document is fetched again (the fetcher
//! follows its caching headers, within bounds), what changed is checked
//! and stored again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use agentauth_core::ports::ClientRow;
use agentauth_core::registration;
use agentauth_core::{AuthMethod, Client, ClientAttributes, ErrorCode, GrantType, OAuthError};
use agentauth_fetch::{FetchError, Limits};
use agentauth_plugin_host::{Operation, RequestContext};
use serde_json::Value;

use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_secret};
use crate::{Service, internal};

/// Longest client ID URL accepted.
const MAX_CLIENT_ID_URL: usize = 512;

/// When each stored document was fetched, per realm and URL: a document
/// fetched again is checked and stored again.
#[derive(Debug, Default)]
pub(crate) struct Applied(Mutex<HashMap<(String, String), i64>>);

impl Applied {
    fn get(&self, realm: &str, url: &str) -> Option<i64> {
        self.lock().get(&(realm.to_string(), url.to_string())).copied()
    }

    fn set(&self, realm: &str, url: &str, fetched_at: i64) {
        let mut applied = self.lock();
        if applied.len() >= 100_000 {
            applied.clear();
        }
        applied.insert((realm.to_string(), url.to_string()), fetched_at);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `client_id` has the form of a client ID URL at all: the
/// realm's own clients never do (this server's ids are not URLs). In
/// development (`loopback`), `http://` on a loopback address too.
pub fn is_client_id_url(client_id: &str, loopback: bool) -> bool {
    client_id.starts_with("https://") || (loopback && client_id.starts_with("http://"))
}

/// The draft's §3 rules for a client ID URL: `https`, a path other than
/// `/`, no `.` or `..` segments (encoded or not), no fragment, no user
/// name or password. A query is allowed, as the draft only discourages it.
/// In development (`loopback`), `http` to a loopback address is allowed
/// too, as the draft's §6.5 allows loopback for a server on loopback.
fn check_url(client_id: &str, loopback: bool) -> Result<(), String> {
    if client_id.len() > MAX_CLIENT_ID_URL {
        return Err(format!("a client ID URL is at most {MAX_CLIENT_ID_URL} bytes"));
    }
    let url = url::Url::parse(client_id).map_err(|e| format!("the client ID is not a URL: {e}"))?;
    let loopback_http = loopback
        && url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
    if (url.scheme() != "https" && !loopback_http) || url.host().is_none() {
        return Err("a client ID URL is https, with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err("a client ID URL has no user name, password or fragment".into());
    }
    // The URL as written, not as parsed: the parser removes dot segments.
    let path = client_id
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("")
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    if path.is_empty() || path == "/" {
        return Err("a client ID URL has a path".into());
    }
    let dot = |segment: &str| {
        let lower = segment.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    };
    if path.split('/').any(dot) {
        return Err("a client ID URL has no . or .. segments".into());
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains(';') || lower.contains("%2f") || lower.contains("%5c") || lower.contains('\\') {
        return Err("a client ID URL's path has no ';', and no '/' or '\\' encoded or otherwise".into());
    }
    if url.as_str() != client_id {
        return Err(
            "a client ID URL is written in its normal form (lower-case scheme and host, no default port)".into()
        );
    }
    Ok(())
}

/// The draft's §4.1 rules for the document, then the metadata it holds
/// read as a registration: a public client (`none`) unless it says
/// `private_key_jwt`, for the authorization code grant unless it says
/// otherwise.
fn read_document(client_id: &str, document: &serde_json::Map<String, Value>) -> Result<Value, String> {
    if document.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err("its client_id is not the URL it was fetched from".into());
    }
    for forbidden in ["client_secret", "client_secret_expires_at"] {
        if document.contains_key(forbidden) {
            return Err(format!("it holds {forbidden}, which a metadata document never does"));
        }
    }
    let mut body = document.clone();
    let method = body
        .entry("token_endpoint_auth_method")
        .or_insert_with(|| Value::from(AuthMethod::None.as_str()))
        .as_str()
        .and_then(AuthMethod::parse);
    match method {
        Some(AuthMethod::None) => {}
        Some(AuthMethod::PrivateKeyJwt) => {
            if !body.contains_key("jwks") && !body.contains_key("jwks_uri") {
                return Err("a private_key_jwt client's document holds its keys (jwks) or their URL (jwks_uri)".into());
            }
        }
        _ => return Err("token_endpoint_auth_method is none or private_key_jwt: no shared secret".into()),
    }
    body.entry("grant_types").or_insert_with(|| serde_json::json!(["authorization_code", "refresh_token"]));
    body.remove("client_id");
    Ok(Value::Object(body))
}

impl Service {
    /// The client `client_id` of `realm`: a registered one, or in a realm
    /// that takes client metadata documents, one already known by its
    /// document, checked again if the document's cached copy expired.
    /// `None` for no client; an error says what is wrong with a document.
    /// A document never seen is not fetched here: only the authorization
    /// endpoint admits new clients ([`Service::find_or_admit_client`]).
    /// A disabled client is no client here.
    pub fn find_client(&self, realm: &RealmRuntime, client_id: &str) -> Result<Option<ClientRow>, OAuthError> {
        Ok(self.client_by_document(realm, client_id, None)?.filter(|row| row.is_usable(self.now())))
    }

    /// As [`Service::find_client`], and a client whose document was never
    /// seen is fetched, checked and stored, counted against the realm's
    /// registrations and `source`'s.
    pub fn find_or_admit_client(
        &self,
        realm: &RealmRuntime,
        client_id: &str,
        source: Option<IpAddr>,
    ) -> Result<Option<ClientRow>, OAuthError> {
        Ok(self.client_by_document(realm, client_id, Some(source))?.filter(|row| row.is_usable(self.now())))
    }

    fn client_by_document(
        &self,
        realm: &RealmRuntime,
        client_id: &str,
        admit: Option<Option<IpAddr>>,
    ) -> Result<Option<ClientRow>, OAuthError> {
        let loopback = self.client_fetcher.policy().allow_loopback_http;
        if !is_client_id_url(client_id, loopback) {
            return self.store.client(&realm.name, client_id).map_err(internal);
        }
        // A realm that stopped taking documents knows none of their
        // clients: registered clients never have URLs for ids.
        if !realm.settings.client_metadata_documents {
            return Ok(None);
        }
        let shown: String = client_id.chars().take(128).collect();
        let refused = |why: String| {
            tracing::info!(realm = %realm.name, client_id = %shown, "client metadata document refused: {why}");
            OAuthError::new(ErrorCode::InvalidClient, format!("the client's metadata document: {why}"))
        };
        check_url(client_id, loopback).map_err(refused)?;
        let stored = self.store.client(&realm.name, client_id).map_err(internal)?;
        if stored.is_none() && admit.is_none() {
            return Ok(None);
        }
        let document = match self.client_fetcher.get_json_for(&realm.name, client_id, &Limits::CLIENT_METADATA) {
            Ok(document) => document,
            Err(e) => {
                // The caller chose the URL: what its host resolves to, or
                // why a connection failed, is not theirs to learn.
                tracing::info!(realm = %realm.name, client_id = %shown, "client metadata document not fetched: {e}");
                let transient = matches!(
                    e,
                    FetchError::Busy | FetchError::TimedOut | FetchError::Connect { .. } | FetchError::Resolve { .. }
                );
                let code = if transient { ErrorCode::TemporarilyUnavailable } else { ErrorCode::InvalidClient };
                return Err(OAuthError::new(code, "the client's metadata document could not be fetched"));
            }
        };
        if stored.is_some() && self.client_documents.get(&realm.name, client_id) == Some(document.fetched_at) {
            return Ok(stored);
        }
        let request = read_document(client_id, &document.json).map_err(refused)?;
        let metadata =
            registration::parse_document_metadata(&request).map_err(|e| refused(e.description.into_owned()))?;
        // A client anyone can name is one that acts for a user who signs
        // in: the code grant and its refresh tokens, nothing a machine
        // client gets by registering.
        if let Some(other) =
            metadata.grant_types.iter().find(|g| !matches!(g, GrantType::AuthorizationCode | GrantType::RefreshToken))
        {
            return Err(refused(format!("grant type {other} is not for clients known by their document")));
        }
        crate::registration::check_allowed_scopes(realm, &metadata)?;
        crate::registration::check_jwks(&metadata)?;
        let mut client = Client {
            client_id: client_id.to_string(),
            metadata,
            attributes: ClientAttributes::default(),
            is_ai_agent: false,
            issued_at: stored.as_ref().map_or(self.now(), |row| row.client.issued_at),
        };
        if let Some(dcr) = &realm.settings.dcr_plugin {
            let context =
                RequestContext { method: "GET".into(), uri: client_id.to_string(), ..RequestContext::default() };
            client.attributes = self.run_dcr_policy(realm, dcr, Operation::Create, &client, &request, context)?;
        }
        // Owned by whoever serves the document, unless the policy says.
        if client.attributes.owner.is_none() {
            let host = url::Url::parse(client_id).ok().and_then(|u| u.host_str().map(str::to_string));
            client.attributes.owner = host.map(|host| format!("document:{host}"));
        }
        let row = match stored {
            Some(old) if old.client == client => old,
            Some(old) => {
                let row = ClientRow { client, ..old.clone() };
                if !self.store.update_client(&realm.name, &row, &old.registration_token_hash).map_err(internal)? {
                    // Another request stored it first: its row stands.
                    return self.store.client(&realm.name, client_id).map_err(internal);
                }
                tracing::info!(realm = %realm.name, client_id, "client metadata document changed; stored again");
                row
            }
            None => {
                let limits =
                    (realm.settings.registrations_per_minute, realm.settings.registrations_per_minute_per_source);
                if let Err(wait) = self.registrations.take(&realm.name, admit.flatten(), limits.0, limits.1) {
                    realm.metrics.registrations_rate_limited();
                    return Err(OAuthError::slow_down(format!("too many new clients; retry in {wait} s"), wait));
                }
                self.check_owner_cap(realm, &client)?;
                // Neither is ever shown or accepted: the client has no
                // secret and no registration access token.
                let row = ClientRow {
                    client,
                    secret_hash: self.hasher.hash(Purpose::ClientSecret, &new_secret()),
                    registration_token_hash: self.hasher.hash(Purpose::RegistrationToken, &new_secret()),
                    state: agentauth_core::ports::ClientState::Active,
                    tokens_valid_after: 0,
                    expires_at: None,
                    last_used_at: 0,
                };
                match self.store.insert_client(&realm.name, &row, u64::from(realm.settings.max_clients)) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(OAuthError::new(
                            ErrorCode::AccessDenied,
                            "this realm holds its maximum of clients",
                        ));
                    }
                    // Another request stored it first: its row stands.
                    Err(e) => {
                        return match self.store.client(&realm.name, client_id).map_err(internal)? {
                            Some(row) => Ok(Some(row)),
                            None => Err(internal(e)),
                        };
                    }
                }
                tracing::info!(realm = %realm.name, client_id, "client known by its metadata document");
                row
            }
        };
        self.client_documents.set(&realm.name, client_id, document.fetched_at);
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_id_urls_follow_the_drafts_rules() {
        for good in ["https://app.example/client.json", "https://app.example:8443/c/meta?v=1"] {
            assert_eq!(check_url(good, false), Ok(()), "{good}");
        }
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/a/../client.json",
            "https://app.example/a/%2E%2e/client.json",
            "https://app.example/./client.json",
            "https://user:pw@app.example/client.json",
            "https://app.example/client.json#frag",
            "https://APP.example/client.json",
            "https://app.example:443/client.json",
            "https://app.example/a/..;/client.json",
            "https://app.example/a%2F..%2Fclient.json",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://app.example/{}", "a".repeat(600)), false).is_err());
        assert!(check_url("http://127.0.0.1:8080/client.json", false).is_err());
        assert_eq!(check_url("http://127.0.0.1:8080/client.json", true), Ok(()), "in development");
        assert!(check_url("http://app.example/client.json", true).is_err(), "loopback only");
    }

    #[test]
    fn a_document_names_itself_and_holds_no_secret() {
        let url = "https://app.example/client.json";
        let doc = |v: Value| v.as_object().cloned().unwrap_or_default();
        let read =
            read_document(url, &doc(json!({"client_id": url, "redirect_uris": ["https://app.example/cb"]}))).unwrap();
        assert_eq!(read["token_endpoint_auth_method"], "none", "a public client by default");
        assert_eq!(read["grant_types"], json!(["authorization_code", "refresh_token"]));
        for (bad, why) in [
            (json!({"client_id": "https://other.example/client.json"}), "not the URL"),
            (json!({"client_id": url, "client_secret": "s"}), "client_secret"),
            (json!({"client_id": url, "token_endpoint_auth_method": "client_secret_basic"}), "no shared secret"),
            (json!({"client_id": url, "token_endpoint_auth_method": "private_key_jwt"}), "jwks"),
        ] {
            let refusal = read_document(url, &doc(bad.clone())).unwrap_err();
            assert!(refusal.contains(why), "{bad}: {refusal}");
        }
    }
}
