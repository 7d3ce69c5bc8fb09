//! Tokens once issued: verifying an access token presented to the
//! server, introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Introspection answers any client of the realm (resource servers are
//! clients); a token that is not live in this realm is `{"active": false}`
//! and nothing else. Revocation accepts a token it does not know (RFC 7009
//! §2.2), and refuses a token issued to another client.

use agentauth_core::grant::refresh_token::RefreshGrant;
use agentauth_core::ports::TokenKind;
use agentauth_core::{AccessTokenClaims, Client, OAuthError};
use serde_json::{Value, json};

use crate::realm::RealmRuntime;
use crate::secrets::Purpose;
use crate::{Service, internal};

/// What a token is, once found.
enum Found {
    Access(Box<AccessTokenClaims>),
    /// A refresh token; `used` once rotated (then only revocation cares).
    Refresh {
        hash: Vec<u8>,
        grant: Box<RefreshGrant>,
        family: Option<String>,
        used: bool,
    },
}

impl Service {
    /// The claims of a live access token of this realm: a JWT signed with
    /// one of the realm's keys, of type `at+jwt`, issued here, unexpired,
    /// not revoked, to a client that still exists; or a live opaque token
    /// of the realm. `None` for anything else (the reason is logged at
    /// debug level).
    pub fn access_token_claims(
        &self,
        realm: &RealmRuntime,
        token: &str,
    ) -> Result<Option<AccessTokenClaims>, OAuthError> {
        let refused = |why: &dyn std::fmt::Display| {
            tracing::debug!(realm = %realm.name, "access token refused: {why}");
            Ok(None)
        };
        if token.len() > agentauth_jose::MAX_TOKEN_LEN {
            return refused(&"too long");
        }
        let now = self.now();
        let is_jwt = token.contains('.');
        let claims: AccessTokenClaims = if is_jwt {
            let claims = match agentauth_jose::verify(token, &realm.verifying_keys, "at+jwt") {
                Ok(claims) => claims,
                Err(e) => return refused(&e),
            };
            match serde_json::from_value(claims) {
                Ok(claims) => claims,
                Err(e) => return refused(&e),
            }
        } else {
            let hash = self.hasher.hash(Purpose::AccessToken, token);
            match self.store.token(&hash, &realm.name, TokenKind::Access, now).map_err(internal)? {
                Some(stored) => match serde_json::from_str(&stored) {
                    Ok(claims) => claims,
                    Err(e) => {
                        // Not the caller's fault, but nothing to honour either.
                        tracing::error!(realm = %realm.name, "a stored access token's claims cannot be read: {e}");
                        return Ok(None);
                    }
                },
                None => return refused(&"unknown opaque token"),
            }
        };
        if claims.iss != realm.issuer {
            return refused(&"issued by another realm");
        }
        if claims.is_expired(now) {
            return refused(&"expired");
        }
        if is_jwt && self.store.is_jwt_revoked(&realm.name, &claims.jti).map_err(internal)? {
            return refused(&"revoked");
        }
        // A deleted client's tokens die with it (RFC 7592 §2.3); a disabled
        // one's, and those naming it as an actor, die with the disabling,
        // and stay dead.
        if !self.honoured_by(realm, &claims.client_id, claims.iat)? {
            return refused(&"its client was deleted or disabled");
        }
        let mut actor = claims.act.as_ref();
        while let Some(act) = actor {
            if let Some(client_id) = &act.client_id
                && !self.honoured_by(realm, client_id, claims.iat)?
            {
                return refused(&"an actor's client was deleted or disabled");
            }
            actor = act.act.as_deref();
        }
        Ok(Some(claims))
    }

    /// Whether the client `client_id` exists and still honours a token
    /// issued at `iat` that names it
    /// ([`agentauth_core::ports::ClientRow::honours`]).
    fn honoured_by(&self, realm: &RealmRuntime, client_id: &str, iat: i64) -> Result<bool, OAuthError> {
        let row = self.store.client(&realm.name, client_id).map_err(internal)?;
        Ok(row.is_some_and(|row| row.honours(iat, self.now())))
    }

    fn find_token(&self, realm: &RealmRuntime, token: &str) -> Result<Option<Found>, OAuthError> {
        if let Some(claims) = self.access_token_claims(realm, token)? {
            return Ok(Some(Found::Access(Box::new(claims))));
        }
        if token.contains('.') || token.len() > agentauth_jose::MAX_TOKEN_LEN {
            return Ok(None);
        }
        let hash = self.hasher.hash(Purpose::RefreshToken, token);
        let row = self.store.token_row(&hash, &realm.name, self.now()).map_err(internal)?;
        match row {
            Some(row) if row.kind == TokenKind::Refresh => match serde_json::from_str(&row.grant) {
                Ok(grant) => Ok(Some(Found::Refresh { hash, grant, family: row.family, used: row.used })),
                Err(e) => {
                    tracing::error!(realm = %realm.name, "a stored refresh token cannot be read: {e}");
                    Ok(None)
                }
            },
            _ => Ok(None),
        }
    }

    /// The introspection response for `token` (RFC 7662 §2.2).
    pub fn introspect(&self, realm: &RealmRuntime, _caller: &Client, token: &str) -> Result<Value, OAuthError> {
        Ok(match self.find_token(realm, token)? {
            None | Some(Found::Refresh { used: true, .. }) => json!({"active": false}),
            Some(Found::Access(claims)) => {
                let mut answer = serde_json::to_value(&*claims).map_err(internal)?;
                answer["active"] = json!(true);
                // RFC 9449 §6.2: a bound token says so, and its `cnf` (in
                // the claims) names the key.
                answer["token_type"] = json!(if claims.cnf.is_some() { "DPoP" } else { "Bearer" });
                answer
            }
            Some(Found::Refresh { grant, .. }) => {
                let mut answer = json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "client_id": grant.client_id,
                    "sub": grant.sub,
                    "scope": grant.scope,
                    "exp": grant.expires_at,
                    "iss": realm.issuer,
                });
                if let Some(act) = &grant.act {
                    answer["act"] = serde_json::to_value(act).map_err(internal)?;
                }
                answer
            }
        })
    }

    /// Revokes `token` of `caller` (RFC 7009 §2.1), and whatever was
    /// issued or exchanged from it.
    pub fn revoke(&self, realm: &RealmRuntime, caller: &Client, token: &str) -> Result<(), OAuthError> {
        let not_yours = || OAuthError::invalid_request("the token was not issued to this client");
        match self.find_token(realm, token)? {
            None => {}
            Some(Found::Access(claims)) => {
                if claims.client_id != caller.client_id {
                    return Err(not_yours());
                }
                // Tokens exchanged from this one are revoked with it.
                if token.contains('.') {
                    self.store.revoke_jwt(&realm.name, &claims.jti, claims.exp).map_err(internal)?;
                } else {
                    let hash = self.hasher.hash(Purpose::AccessToken, token);
                    self.store.revoke_opaque(&realm.name, &hash, &claims.jti).map_err(internal)?;
                }
            }
            Some(Found::Refresh { hash, grant, family, .. }) => {
                if grant.client_id != caller.client_id {
                    return Err(not_yours());
                }
                // Revoking a refresh token revokes what was issued from it,
                // and what was exchanged from that; a rotated one too, since
                // its family may have leaked.
                self.store.revoke_token(&realm.name, &hash, family.as_deref(), None).map_err(internal)?;
            }
        }
        Ok(())
    }
}
