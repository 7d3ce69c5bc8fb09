//! Client authentication at the token, introspection and revocation
//! endpoints: `client_secret_basic` (RFC 6749 §2.3.1), `client_secret_post`,
//! `private_key_jwt` (RFC 7523), and `none` for public clients at the token
//! and revocation endpoints.
//!
//! A secret client may use either method, whatever it registered: the
//! seed registers with the default `client_secret_basic` and then posts
//! its secret in the form. Using both at once is refused (RFC 6749 §2.3).
//! Every failure looks the same to the caller: 401 `invalid_client`.

use agentauth_core::trust::TrustPurpose;
use agentauth_core::{AuthMethod, Client, ErrorCode, OAuthError};
use agentauth_jose::{ExternalType, VerifyError, VerifyingKey};
use serde_json::Value;

use crate::realm::RealmRuntime;
use crate::secrets::Purpose;
use crate::trust::verify::AudienceRule;
use crate::{Service, internal};

/// The answer to every failed client authentication.
pub fn failed() -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, "client authentication failed")
}

/// The credentials a request presents, as the edge read them from the
/// `Authorization` header and the form (RFC 6749 §2.3, RFC 7523 §2.2).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A client secret, by `client_secret_basic` or `client_secret_post`.
    Secret { client_id: String, secret: String },
    /// A client assertion (`private_key_jwt`), and the `client_id`
    /// parameter if one was sent beside it.
    Assertion { assertion: String, client_id: Option<String> },
    /// A SPIFFE JWT-SVID (`jwt-spiffe`, draft-ietf-oauth-spiffe-client-auth),
    /// and the `client_id` parameter if one was sent beside it.
    Spiffe { assertion: String, client_id: Option<String> },
    /// No credentials, only a `client_id`: a public client
    /// (`token_endpoint_auth_method` `none`), at the token and revocation
    /// endpoints only.
    Public { client_id: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret { client_id, .. } => write!(f, "Secret {{ client_id: {client_id:?}, secret: [redacted] }}"),
            Self::Assertion { client_id, .. } => {
                write!(f, "Assertion {{ assertion: [redacted], client_id: {client_id:?} }}")
            }
            Self::Spiffe { client_id, .. } => write!(f, "Spiffe {{ assertion: [redacted], client_id: {client_id:?} }}"),
            Self::Public { client_id } => write!(f, "Public {{ client_id: {client_id:?} }}"),
        }
    }
}

/// Longest lifetime a client assertion may claim.
const MAX_ASSERTION_LIFETIME: i64 = 600;

/// The client assertion type of RFC 7523 §2.2: a client's own assertion
/// (`private_key_jwt`), or a workload's platform token (`federated_jwt`).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client assertion type of a SPIFFE JWT-SVID
/// (draft-ietf-oauth-spiffe-client-auth §3.1).
pub const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";

impl Service {
    /// Authenticates the request's client in `realm`, at the realm endpoint
    /// `endpoint` (such as `access_token`): by secret, or by a client
    /// assertion signed with one of its registered keys (`private_key_jwt`).
    pub fn authenticate(
        &self,
        realm: &RealmRuntime,
        endpoint: &str,
        credentials: &Credentials,
    ) -> Result<Client, OAuthError> {
        let method = match credentials {
            Credentials::Secret { .. } => "client_secret",
            Credentials::Assertion { .. } => "private_key_jwt",
            Credentials::Spiffe { .. } => "spiffe_jwt",
            Credentials::Public { .. } => "none",
        };
        let authenticating = tracing::debug_span!("authenticate", realm = %realm.name, method).entered();
        let claimed = match credentials {
            Credentials::Secret { client_id, .. } => Some(client_id.as_str()),
            Credentials::Assertion { client_id, .. } | Credentials::Spiffe { client_id, .. } => client_id.as_deref(),
            Credentials::Public { client_id } => Some(client_id.as_str()),
        };
        crate::decisions::note(|d| d.client_id = claimed.map(str::to_string));
        let authenticated = match credentials {
            Credentials::Secret { client_id, secret } => self.authenticate_secret(realm, client_id, secret),
            Credentials::Assertion { assertion, client_id } => {
                self.authenticate_assertion(realm, endpoint, assertion, client_id.as_deref())
            }
            Credentials::Spiffe { assertion, client_id } => {
                self.authenticate_workload(realm, assertion, client_id.as_deref(), true)
            }
            Credentials::Public { client_id } => self.authenticate_public(realm, endpoint, client_id),
        };
        drop(authenticating);
        // The request's log lines from here on name the client.
        if let Ok(client) = &authenticated {
            self.client_uses.note(&realm.name, &client.client_id, self.now());
            tracing::Span::current().record("client_id", client.client_id.as_str());
            crate::decisions::note(|d| d.client_id = Some(client.client_id.clone()));
        }
        authenticated
    }

    /// `client_secret_basic` or `client_secret_post`.
    fn authenticate_secret(&self, realm: &RealmRuntime, client_id: &str, secret: &str) -> Result<Client, OAuthError> {
        let row = self.store.client(&realm.name, client_id).map_err(internal)?;
        // Hash even for an unknown client so both failures take as long.
        let stored = row.as_ref().map_or(&[0u8; 32][..], |r| &r.secret_hash);
        let matches = self.hasher.matches(Purpose::ClientSecret, secret, stored);
        let by_secret = |m: AuthMethod| matches!(m, AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost);
        match row {
            // A disabled client fails as an unknown one does.
            Some(row)
                if matches
                    && by_secret(row.client.metadata.token_endpoint_auth_method)
                    && row.is_usable(self.now()) =>
            {
                Ok(row.client)
            }
            _ => Err(failed()),
        }
    }

    /// `none`: a public client names itself, at the token endpoint (where
    /// PKCE and rotating refresh tokens bind what it gets to it) and the
    /// revocation endpoint (RFC 7009 §5); a client registered with
    /// credentials must use them.
    fn authenticate_public(&self, realm: &RealmRuntime, endpoint: &str, client_id: &str) -> Result<Client, OAuthError> {
        if !matches!(endpoint, "access_token" | "token/revoke") {
            return Err(failed());
        }
        match self.find_client(realm, client_id).map_err(|_| failed())? {
            Some(row) if row.client.metadata.token_endpoint_auth_method == AuthMethod::None => Ok(row.client),
            _ => Err(failed()),
        }
    }

    /// `private_key_jwt` (RFC 7523 §3): `iss` and `sub` are the client, `aud`
    /// names this realm (its issuer, or the endpoint called), the assertion
    /// expires within ten minutes, and its `jti` is used once.
    fn authenticate_assertion(
        &self,
        realm: &RealmRuntime,
        endpoint: &str,
        assertion: &str,
        presented_id: Option<&str>,
    ) -> Result<Client, OAuthError> {
        let refused = |why: &str| {
            tracing::debug!(realm = %realm.name, "client assertion refused: {why}");
            failed()
        };
        let unverified = agentauth_jose::unverified_claims(assertion).map_err(|e| refused(&e.to_string()))?;
        let client_id = unverified.get("sub").and_then(Value::as_str).ok_or_else(|| refused("no sub"))?;
        // A client's own assertion is issued by the client (RFC 7523 §3);
        // one issued by someone else is a workload's platform token.
        if unverified.get("iss").and_then(Value::as_str) != Some(client_id) {
            return self.authenticate_workload(realm, assertion, presented_id, false);
        }
        if presented_id.is_some_and(|id| id != client_id) {
            return Err(refused("client_id does not match the assertion"));
        }
        let row = self
            .find_client(realm, client_id)
            .map_err(|e| refused(&e.description))?
            .ok_or_else(|| refused("unknown client"))?;
        let client = row.client;
        if client.metadata.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
            return Err(refused("the client does not use private_key_jwt"));
        }
        let claims = match &client.metadata.jwks_uri {
            None => {
                let keys: Vec<VerifyingKey> = client
                    .metadata
                    .jwks
                    .iter()
                    .flat_map(|j| j["keys"].as_array().into_iter().flatten())
                    .filter_map(|jwk| VerifyingKey::from_jwk(jwk).ok())
                    .collect();
                agentauth_jose::verify_client_assertion(assertion, &keys)
            }
            // A client known by its metadata document may publish its keys:
            // fetched and cached as trusted issuers' are, and fetched again
            // (at most every 30 s) for a key not seen yet, as it rotates.
            Some(uri) => {
                let keys = self.trust.keys_at(&realm.name, uri, false).map_err(|e| refused(&e.reason))?;
                match agentauth_jose::verify_client_assertion(assertion, &keys) {
                    Err(VerifyError::UnknownKey) => {
                        let keys = self.trust.keys_at(&realm.name, uri, true).map_err(|e| refused(&e.reason))?;
                        agentauth_jose::verify_client_assertion(assertion, &keys)
                    }
                    verified => verified,
                }
            }
        }
        .map_err(|e| refused(&e.to_string()))?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        if text("iss") != Some(client_id) || text("sub") != Some(client_id) {
            return Err(refused("iss and sub must both be the client_id"));
        }
        let accepted = [realm.issuer.clone(), realm.endpoint(endpoint)];
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => accepted.contains(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(|a| accepted.iter().any(|x| x == a)),
            _ => false,
        };
        if !aud_ok {
            return Err(refused("aud does not name this server"));
        }
        let now = self.now();
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| refused("no exp"))?;
        if exp <= now || exp > now + MAX_ASSERTION_LIFETIME {
            return Err(refused("expired, or valid for too long"));
        }
        if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf > now + 60) {
            return Err(refused("not yet valid"));
        }
        let jti = text("jti").filter(|j| !j.is_empty() && j.len() <= 256).ok_or_else(|| refused("no jti"))?;
        if !self.store.use_assertion_jti(&realm.name, client_id, jti, exp).map_err(internal)? {
            return Err(refused("jti replayed"));
        }
        Ok(client)
    }

    /// `federated_jwt` and `spiffe_jwt`: a token from an issuer the realm
    /// trusts for client authentication, verified with that issuer's keys
    /// (for a SPIFFE JWT-SVID, with the realm's issuer as its only
    /// audience). The client is the one the request names, or without a
    /// name the one the realm's assertion policy maps the token to (a
    /// policy may also refuse); either way it must authenticate this way,
    /// name this issuer, and have registered the token's subject. Platform
    /// tokens are reused until they expire, so their `jti` is not spent;
    /// their lifetime is bounded by the issuer's settings.
    fn authenticate_workload(
        &self,
        realm: &RealmRuntime,
        assertion: &str,
        presented_id: Option<&str>,
        spiffe: bool,
    ) -> Result<Client, OAuthError> {
        let refused = |why: &str| {
            tracing::debug!(realm = %realm.name, "workload client authentication refused: {why}");
            failed()
        };
        let audience = if spiffe { AudienceRule::Sole } else { AudienceRule::Includes };
        let verified = self
            .verify_external(realm, assertion, TrustPurpose::ClientAuth, ExternalType::Jwt, audience, spiffe)
            .map_err(|r| {
                if r.unavailable {
                    OAuthError::new(ErrorCode::TemporarilyUnavailable, r.reason)
                } else {
                    refused(&r.reason)
                }
            })?;
        if spiffe != verified.subject.starts_with("spiffe://") {
            return Err(refused("a SPIFFE ID is presented as a JWT-SVID, and only then"));
        }
        let named = match presented_id {
            Some(id) => self.find_client(realm, id).map_err(|e| refused(&e.description))?,
            None => None,
        };
        let by_policy = realm.settings.assertion_plugin.is_some();
        let client = if by_policy {
            let named_client = named.as_ref().map(|row| &row.client);
            let mapped = self
                .map_external(
                    realm,
                    &verified,
                    TrustPurpose::ClientAuth,
                    named_client,
                    &[],
                    &[],
                    ErrorCode::InvalidClient,
                )
                .map_err(|e| refused(&e.description))?;
            if presented_id.is_some_and(|id| id != mapped.subject) {
                return Err(refused("the policy mapped the token to another client than the one named"));
            }
            match named {
                Some(row) => row.client,
                None => {
                    self.find_client(realm, &mapped.subject)
                        .map_err(|e| refused(&e.description))?
                        .ok_or_else(|| refused("the policy named no client of this realm"))?
                        .client
                }
            }
        } else {
            named.ok_or_else(|| refused("no client_id, and no policy to name the client"))?.client
        };
        let method = if spiffe { AuthMethod::SpiffeJwt } else { AuthMethod::FederatedJwt };
        if client.metadata.token_endpoint_auth_method != method {
            return Err(refused("the client does not authenticate this way"));
        }
        let Some(workload) = &client.metadata.workload else {
            return Err(refused("the client names no workload"));
        };
        if workload.issuer != verified.issuer.issuer {
            return Err(refused("the client trusts another issuer"));
        }
        if !workload.matches(&verified.subject) {
            return Err(refused("the token's subject is not the client's"));
        }
        Ok(client)
    }
}
