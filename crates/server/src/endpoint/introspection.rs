//! Token introspection (RFC 7662) at `introspect`, and revocation
//! (RFC 7009) at `token/revoke`.
//!
//! Both take the caller's client authentication like the token endpoint.
//! Introspection answers any client of the realm (resource servers are
//! clients); a token that is not live in this realm is `{"active": false}`
//! and nothing else. Revocation answers 200 for a token it does not know
//! (RFC 7009 §2.2), and refuses a token issued to another client.

use agentauth_core::OAuthError;
use agentauth_core::grant::refresh_token::RefreshGrant;
use agentauth_store::TokenKind;
use hyper::http::request::Parts;
use serde_json::{Value, json};

use super::internal;
use super::token::access_token_claims;
use crate::http::{Form, Reply, has_media_type};
use crate::realm::RealmRuntime;
use crate::secrets::Purpose;
use crate::{App, client_auth, now};

fn form_of(
    app: &App,
    realm: &RealmRuntime,
    endpoint: &str,
    parts: &Parts,
    body: &[u8],
) -> Result<(agentauth_core::Client, Form), OAuthError> {
    if !has_media_type(&parts.headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the request body must be application/x-www-form-urlencoded"));
    }
    let form = Form::parse(body)?;
    let client = client_auth::authenticate(app, realm, endpoint, &parts.headers, &form)?;
    Ok((client, form))
}

/// What a token is, once found.
enum Found {
    Access(Box<agentauth_core::AccessTokenClaims>),
    /// A refresh token; `used` once rotated (then only revocation cares).
    Refresh {
        hash: Vec<u8>,
        grant: Box<RefreshGrant>,
        family: Option<String>,
        used: bool,
    },
}

fn find(app: &App, realm: &RealmRuntime, token: &str) -> Result<Option<Found>, OAuthError> {
    if let Some(claims) = access_token_claims(app, realm, token)? {
        return Ok(Some(Found::Access(Box::new(claims))));
    }
    if token.contains('.') || token.len() > agentauth_jose::MAX_TOKEN_LEN {
        return Ok(None);
    }
    let hash = app.hasher.hash(Purpose::RefreshToken, token);
    let row = app.store.token_row(&hash, &realm.name, now()).map_err(internal)?;
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

pub fn introspect(app: &App, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    let (_caller, form) = form_of(app, realm, "introspect", parts, body)?;
    let token = form.require("token")?;
    let answer = match find(app, realm, token)? {
        None | Some(Found::Refresh { used: true, .. }) => json!({"active": false}),
        Some(Found::Access(claims)) => {
            let mut answer = serde_json::to_value(&*claims).map_err(internal)?;
            answer["active"] = json!(true);
            answer["token_type"] = json!("Bearer");
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
    };
    Ok(Reply::json(200, &answer))
}

pub fn revoke(app: &App, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    let (caller, form) = form_of(app, realm, "token/revoke", parts, body)?;
    let token = form.require("token")?;
    let not_yours = || OAuthError::invalid_request("the token was not issued to this client");
    match find(app, realm, token)? {
        None => {}
        Some(Found::Access(claims)) => {
            if claims.client_id != caller.client_id {
                return Err(not_yours());
            }
            // Tokens exchanged from this one are revoked with it.
            if token.contains('.') {
                app.store.revoke_jwt(&realm.name, &claims.jti, claims.exp).map_err(internal)?;
            } else {
                let hash = app.hasher.hash(Purpose::AccessToken, token);
                app.store.revoke_opaque(&realm.name, &hash, &claims.jti).map_err(internal)?;
            }
        }
        Some(Found::Refresh { hash, grant, family, .. }) => {
            if grant.client_id != caller.client_id {
                return Err(not_yours());
            }
            // Revoking a refresh token revokes what was issued from it, and
            // what was exchanged from that; a rotated one too, since its
            // family may have leaked.
            app.store.revoke_token(&realm.name, &hash, family.as_deref()).map_err(internal)?;
        }
    }
    Ok(Reply::json(200, &Value::Object(serde_json::Map::new())))
}
