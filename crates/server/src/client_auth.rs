//! Client authentication at the token endpoint: `client_secret_basic`
//! (RFC 6749 §2.3.1) and `client_secret_post`.
//!
//! A secret client may use either method, whatever it registered: the
//! seed registers with the default `client_secret_basic` and then posts
//! its secret in the form. Using both at once is refused (RFC 6749 §2.3).
//! Every failure looks the same to the caller: 401 `invalid_client`.

use agentauth_core::{Client, ErrorCode, OAuthError};
use agentauth_store::Store;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use crate::http::Form;
use crate::secrets::{Hasher, Purpose};

fn failed() -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, "client authentication failed")
}

/// The client credentials a request presents.
struct Presented {
    client_id: String,
    secret: String,
}

fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let basic = match headers.get(AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| failed())?;
            let (scheme, credentials) = value.split_once(' ').ok_or_else(failed)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(failed());
            }
            let decoded = STANDARD.decode(credentials.trim()).map_err(|_| failed())?;
            let decoded = String::from_utf8(decoded).map_err(|_| failed())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(failed)?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded first.
            let decode =
                |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some(Presented { client_id: decode(id).unwrap_or_default(), secret: decode(secret).unwrap_or_default() })
        }
    };
    match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request("use one client authentication method, not two")),
        (Some(b), Some(id), None) if id != b.client_id => {
            Err(OAuthError::invalid_request("client_id does not match the Authorization header"))
        }
        (Some(b), _, None) => Ok(b),
        (None, Some(id), Some(secret)) => Ok(Presented { client_id: id.into(), secret: secret.into() }),
        (None, _, _) => Err(failed()),
    }
}

/// Authenticates the request's client in `realm`.
pub fn authenticate(
    store: &Store,
    hasher: &Hasher,
    realm: &str,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Client, OAuthError> {
    let p = presented(headers, form)?;
    let row = store.client(realm, &p.client_id).map_err(|e| {
        tracing::error!("{e}");
        OAuthError::server_error("internal error")
    })?;
    // Hash even for an unknown client so both failures take as long.
    let stored = row.as_ref().map_or(&[0u8; 32][..], |r| &r.secret_hash);
    let matches = hasher.matches(Purpose::ClientSecret, &p.secret, stored);
    match row {
        Some(row) if matches => Ok(row.client),
        _ => Err(failed()),
    }
}
