//! Access token claims (RFC 9068) and the delegation claims of RFC 8693:
//! `may_act` (who may act for the subject) and `act` (who is acting).

use serde::{Deserialize, Serialize};

use crate::scope::Scopes;

/// RFC 8693 §4.4: the party that may act on behalf of the token's subject.
/// `client_id` is required here: a `may_act` that names nobody to exchange
/// the token would be useless, and one that names only a subject would let
/// any client holding the token act as it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// RFC 8693 §4.1: the acting party, with any earlier actor nested inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

/// The claims of an access token this server issues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
}

impl AccessTokenClaims {
    pub fn scopes(&self) -> Scopes {
        Scopes::parse(&self.scope).unwrap_or_default()
    }

    /// True once `now` has reached the expiry time.
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.exp
    }
}

/// What a token is about to become, before the may-act policy runs and the
/// host fills in `iat`, `exp` and `jti`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub sub: String,
    pub client_id: String,
    pub scopes: Scopes,
    pub act: Option<Act>,
}

impl TokenRequest {
    /// The claims of the token, issued by `iss` at `now` for `lifetime`
    /// seconds. The audience is the client itself until resource
    /// indicators are supported.
    pub fn into_claims(
        self,
        iss: &str,
        now: i64,
        lifetime: i64,
        jti: String,
        may_act: Option<MayAct>,
    ) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: iss.to_string(),
            aud: self.client_id.clone(),
            sub: self.sub,
            client_id: self.client_id,
            scope: self.scopes.to_string(),
            iat: now,
            exp: now.saturating_add(lifetime),
            jti,
            may_act,
            act: self.act,
        }
    }
}
