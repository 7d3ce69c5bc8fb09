//! DPoP (RFC 9449): a client proves, with each token request, that it
//! holds a private key, and the tokens it gets are bound to that key
//! (`cnf.jkt`), so that a token leaked through an agent's logs or prompt
//! is useless without the key.
//!
//! A proof is checked in full (§4.3): its form and signature by
//! [`agentauth_jose::verify_dpop_proof`], then here `htm` and `htu` (the
//! request's method and URL, without query or fragment), `iat` within
//! [`IAT_WINDOW`] of the server's clock, a `jti` never seen before from
//! the same key (kept in the database until the proof could no longer be
//! accepted, so that every replica refuses a replay), and, when the realm
//! asks for them, a server nonce (§8).
//!
//! Nonces are stateless and the same on every replica: a time period's
//! number and a MAC of it under the server's key. One is valid in its
//! period and the [`NONCE_PERIODS`] before it; the server sends the
//! current one in `DPoP-Nonce` with every token response of the realm.

use agentauth_core::{ErrorCode, OAuthError};
use agentauth_jose::{Algorithm, verify_dpop_proof};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::Service;
use crate::realm::RealmRuntime;
use crate::secrets::Purpose;

/// The signature algorithms a proof may use, as discovery advertises them.
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256];

/// How far a proof's `iat` may be from the server's clock, either way,
/// seconds.
pub const IAT_WINDOW: i64 = 60;

/// The length of a nonce's period, seconds.
const NONCE_PERIOD: i64 = 60;

/// How many periods before the current one a nonce stays valid.
const NONCE_PERIODS: i64 = 4;

/// The longest `jti` accepted (RFC 9449 asks for 96 bits of randomness;
/// this leaves room for any encoding of them).
const MAX_JTI: usize = 256;

/// A proof that checked out: the key the request was signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dpop {
    /// The key's RFC 7638 thumbprint.
    pub jkt: String,
}

fn invalid(why: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidDpopProof, why)
}

/// `ath` of a proof presented with `token`: the base64url SHA-256 of its
/// ASCII (RFC 9449 §4.2).
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()))
}

/// `url` as `htu` compares it: scheme, host, port and path, normalised as
/// RFC 3986 §6.2.2–6.2.3 do (case, default port), without query or
/// fragment.
fn comparable(url: &str) -> Option<String> {
    let mut url = url::Url::parse(url).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.to_string())
}

impl Service {
    /// Checks the `DPoP` header of a request to `url` with `method`: none
    /// is `Ok(None)`; more than one, or one that does not hold, is
    /// `invalid_dpop_proof`, and one without the realm's current nonce
    /// when it asks for nonces `use_dpop_nonce`. With `access_token`, the
    /// token the request presents (at a protected resource, RFC 9449 §7),
    /// the proof must also carry its hash in `ath` (§4.3 step 11).
    pub fn check_dpop(
        &self,
        realm: &RealmRuntime,
        headers: &[&str],
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<Option<Dpop>, OAuthError> {
        let proof = match headers {
            [] => return Ok(None),
            [proof] => *proof,
            _ => return Err(invalid("a request carries at most one DPoP proof")),
        };
        let verified = verify_dpop_proof(proof, &ALGORITHMS).map_err(|e| invalid(format!("the DPoP proof: {e}")))?;
        let claims = &verified.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        if text("htm") != Some(method) {
            return Err(invalid(format!("the DPoP proof's htm is not {method}")));
        }
        if text("htu").and_then(comparable).is_none_or(|htu| Some(htu) != comparable(url)) {
            return Err(invalid(format!("the DPoP proof's htu is not {url}")));
        }
        let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| invalid("the DPoP proof has no iat"))?;
        let now = self.now();
        if iat.abs_diff(now) > IAT_WINDOW.unsigned_abs() {
            return Err(invalid(format!("the DPoP proof's iat is more than {IAT_WINDOW} s from the server's clock")));
        }
        let jti = text("jti").filter(|j| !j.is_empty() && j.len() <= MAX_JTI);
        let jti = jti.ok_or_else(|| invalid(format!("the DPoP proof needs a jti of 1 to {MAX_JTI} characters")))?;
        if let Some(token) = access_token
            && text("ath").is_none_or(|ath| !bool::from(ath.as_bytes().ct_eq(token_hash(token).as_bytes())))
        {
            return Err(invalid("the DPoP proof's ath is not the hash of the access token presented"));
        }
        if realm.settings.dpop_nonces && !text("nonce").is_some_and(|n| self.is_dpop_nonce(realm, n)) {
            return Err(OAuthError::new(ErrorCode::UseDpopNonce, "the DPoP proof must carry the server's nonce"));
        }
        // Spent last, once everything else holds: a refused proof may be
        // corrected and sent again with the same jti.
        let namespace = format!("dpop:{}", verified.jkt);
        let fresh = self.store.use_assertion_jti(&realm.name, &namespace, jti, iat + IAT_WINDOW).map_err(|e| {
            tracing::error!(realm = %realm.name, "recording a DPoP proof's jti: {e}");
            OAuthError::new(ErrorCode::TemporarilyUnavailable, "the DPoP proof could not be recorded; try again")
        })?;
        if !fresh {
            return Err(invalid("the DPoP proof was used before"));
        }
        Ok(Some(Dpop { jkt: verified.jkt }))
    }

    /// The nonce a DPoP proof to `realm` must carry now, when the realm
    /// asks for nonces.
    pub fn dpop_nonce(&self, realm: &RealmRuntime) -> Option<String> {
        realm.settings.dpop_nonces.then(|| self.nonce_of(realm, self.now().div_euclid(NONCE_PERIOD)))
    }

    fn nonce_of(&self, realm: &RealmRuntime, period: i64) -> String {
        let mac = self.hasher.hash(Purpose::DpopNonce, &format!("{}\0{period}", realm.name));
        format!("{period}.{}", URL_SAFE_NO_PAD.encode(&mac[..16]))
    }

    /// Whether `nonce` is one of `realm`'s, of the current period or one
    /// of the [`NONCE_PERIODS`] before it.
    fn is_dpop_nonce(&self, realm: &RealmRuntime, nonce: &str) -> bool {
        let Some(period) = nonce.split_once('.').and_then(|(p, _)| p.parse::<i64>().ok()) else {
            return false;
        };
        let current = self.now().div_euclid(NONCE_PERIOD);
        (current - NONCE_PERIODS..=current).contains(&period)
            && bool::from(self.nonce_of(realm, period).as_bytes().ct_eq(nonce.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_compares_without_query_fragment_case_or_default_port() {
        let same = |a: &str, b: &str| comparable(a) == comparable(b);
        assert!(same("https://AS.example:443/realms/a/access_token?x=1#f", "https://as.example/realms/a/access_token"));
        assert!(!same("https://as.example/realms/a/access_token", "https://as.example/realms/b/access_token"));
        assert!(!same("http://as.example/realms/a/access_token", "https://as.example/realms/a/access_token"));
        assert!(!same("https://as.example:8443/realms/a/access_token", "https://as.example/realms/a/access_token"));
        assert!(comparable("not a url").is_none());
    }

    #[test]
    fn ath_is_the_base64url_sha256_of_the_token() {
        // RFC 9449 §7.1's example: this access token's ath.
        assert_eq!(
            token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
