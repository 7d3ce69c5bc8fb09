//! Verifying a JWT from an issuer outside the realm.
//!
//! The token names its issuer (`iss`; a SPIFFE JWT-SVID may name only its
//! trust domain, in `sub`), which must be one of the realm's trusted
//! issuers and trusted for the purpose at hand. Its signature is checked
//! with that issuer's keys, under the algorithms it allows; then its
//! audience, its lifetime (with the issuer's clock skew, and never longer
//! than the issuer's bound) and its subject. Whether its `jti` may be used
//! again is the caller's rule: assertions are single-use, workload tokens
//! are not.
//!
//! A refusal says why, for the logs and for the client: none of it is
//! secret, and none of it repeats the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentauth_core::Algorithm;
use agentauth_core::trust::{KeySource, MAX_ISSUER_KEYS, TrustPurpose, TrustedIssuer};
use agentauth_fetch::{Document, FetchError, Fetcher, Limits};
use agentauth_jose::{ExternalType, VerifyError, VerifyingKey};
use serde_json::{Map, Value};

use crate::Service;
use crate::realm::RealmRuntime;

/// Longest subject accepted from an external token.
const MAX_SUBJECT_LEN: usize = 255;

/// Key sets parsed from JWKS documents, at most this many.
const MAX_PARSED_SETS: usize = 1024;

/// Why an external token was refused. The text is for the client and the
/// logs: it names the check that failed, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    /// True when the failure was the issuer's or the network's (its keys
    /// could not be fetched), not the token's: the client may retry.
    pub unavailable: bool,
}

impl Refused {
    fn because(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), unavailable: false }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Which audience a token must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudienceRule {
    /// The issuer's configured audience, or else the realm's issuer or
    /// its token endpoint (RFC 7523 §3), among others.
    Includes,
    /// Exactly one audience, the issuer's configured one or else the
    /// realm's issuer (a one-element array counts): SPIFFE JWT-SVIDs.
    Sole,
    /// Exactly one audience, the realm's issuer, whatever audience the
    /// issuer is configured with: an ID-JAG, whose `aud` is the issuer
    /// identifier of the authorization server it is for
    /// (draft-ietf-oauth-identity-assertion-authz-grant). An issuer
    /// trusted for ID-JAG and plain assertions may be configured with
    /// another audience for the latter; that must not let an ID-JAG
    /// addressed to another server be redeemed here.
    RealmIssuer,
    /// An ID token of an upstream login: the realm's client id at the
    /// provider, among its audiences (OpenID Connect Core §3.1.3.7), and
    /// `azp` that client when there are several.
    LoginClient,
}

/// What is known of a verified external token.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The trusted issuer it came from, as the realm configures it.
    pub issuer: TrustedIssuer,
    /// Its `sub`.
    pub subject: String,
    /// Its `aud`, as a list.
    pub audience: Vec<String>,
    /// Every claim.
    pub claims: Map<String, Value>,
    /// Its `exp`.
    pub expires_at: i64,
    /// Its `jti`, if it has one.
    pub jti: Option<String>,
}

impl Verified {
    /// A string claim.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// The keys of trusted issuers: fetched through the SSRF-hardened
/// [`Fetcher`] (which caches documents by their HTTP caching headers,
/// within bounds) and parsed once per document.
#[derive(Debug)]
pub struct IssuerKeys {
    fetcher: Fetcher,
    /// Parsed key sets, by where they came from: a JWKS URL (with the
    /// time its document was fetched) or a static JWKS's text.
    parsed: Mutex<HashMap<String, Parsed>>,
}

/// A parsed key set, and the fetched document it was parsed from (none
/// for a static JWKS).
type Parsed = (Option<Arc<Document>>, Arc<[VerifyingKey]>);

impl IssuerKeys {
    pub fn new(fetcher: Fetcher) -> Self {
        Self { fetcher, parsed: Mutex::new(HashMap::new()) }
    }

    /// The fetcher of issuers' documents, for their other endpoints
    /// (an upstream provider's token endpoint).
    pub(crate) fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The issuer's keys. With `refresh`, a fetched key set is fetched
    /// again first, if it was not fetched too recently (a token naming an
    /// unknown `kid`: the issuer may have rotated).
    /// Fetches count against `realm`'s share of the fetcher.
    pub fn keys(&self, realm: &str, issuer: &TrustedIssuer, refresh: bool) -> Result<Arc<[VerifyingKey]>, Refused> {
        match issuer.key_source() {
            KeySource::Static(jwks) => {
                let text = jwks.to_string();
                self.parsed_or(&text, None, || parse_jwks(jwks))
            }
            KeySource::Uri(uri) => self.fetched(realm, uri, refresh),
            KeySource::Discovery => {
                let url = issuer.discovery_url();
                let discovery =
                    self.fetcher.get_json_for(realm, &url, &Limits::DOCUMENT).map_err(unavailable("discovery"))?;
                // OpenID Connect Discovery §4.3: the document's issuer is
                // exactly the one it was fetched for.
                if discovery.json.get("issuer").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
                    return Err(Refused::because("the issuer's discovery document names another issuer"));
                }
                let jwks_uri = discovery
                    .json
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Refused::because("the issuer's discovery document has no jwks_uri"))?
                    .to_string();
                self.fetched(realm, &jwks_uri, refresh)
            }
        }
    }

    /// The keys of the JWKS at `url`, fetched, cached and parsed as an
    /// issuer's `jwks_uri` is, under the same bounds: the keys a client
    /// known by its metadata document publishes. `refresh` as for
    /// [`Self::keys`]; fetches count against `realm`'s share.
    pub(crate) fn keys_at(&self, realm: &str, url: &str, refresh: bool) -> Result<Arc<[VerifyingKey]>, Refused> {
        self.fetched(realm, url, refresh)
    }

    fn fetched(&self, realm: &str, url: &str, refresh: bool) -> Result<Arc<[VerifyingKey]>, Refused> {
        let get = || self.fetcher.get_json_for(realm, url, &Limits::DOCUMENT).map_err(unavailable("keys"));
        let document = if refresh {
            match self.fetcher.refresh_for(realm, url, &Limits::DOCUMENT).map_err(unavailable("keys"))? {
                Some(fresh) => fresh,
                None => get()?,
            }
        } else {
            get()?
        };
        let jwks = Value::Object(document.json.clone());
        match self.parsed_or(url, Some(document), || parse_jwks(&jwks)) {
            // A set that cannot be used (grown past the bound, say) is
            // fetched again as for an unknown kid, at most every 30 s,
            // rather than kept for as long as it said it could be cached:
            // the issuer may have mended it.
            Err(_) if !refresh => self.fetched(realm, url, true),
            parsed => parsed,
        }
    }

    /// The key set parsed from `document` (none for a static JWKS) at
    /// `source`, parsing it now if it was not parsed yet: a document
    /// fetched again is a new one, whenever it was fetched.
    fn parsed_or(
        &self,
        source: &str,
        document: Option<Arc<Document>>,
        parse: impl FnOnce() -> Result<Vec<VerifyingKey>, Refused>,
    ) -> Result<Arc<[VerifyingKey]>, Refused> {
        let same = |seen: &Option<Arc<Document>>| match (seen, &document) {
            (None, None) => true,
            (Some(seen), Some(now)) => Arc::ptr_eq(seen, now),
            _ => false,
        };
        if let Some((seen, keys)) = self.lock().get(source)
            && same(seen)
        {
            return Ok(keys.clone());
        }
        let keys: Arc<[VerifyingKey]> = parse()?.into();
        let mut parsed = self.lock();
        if parsed.len() >= MAX_PARSED_SETS {
            parsed.clear();
        }
        parsed.insert(source.to_string(), (document, keys.clone()));
        Ok(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parsed>> {
        self.parsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A failed fetch of an issuer's documents: the client may retry when
/// the network or the issuer failed for now; a refused address, a
/// document too large or not JSON will fail again.
fn unavailable(what: &'static str) -> impl Fn(FetchError) -> Refused {
    move |e| {
        tracing::warn!("fetching a trusted issuer's {what}: {e}");
        let transient = match &e {
            FetchError::Resolve { .. } | FetchError::Connect { .. } | FetchError::TimedOut | FetchError::Busy => true,
            FetchError::Status(status) => *status >= 500,
            _ => false,
        };
        Refused { reason: format!("the issuer's {what} could not be fetched"), unavailable: transient }
    }
}

/// The signing keys of a JWKS: those this server can verify with and
/// meant for signatures. Others (encryption keys, a SPIFFE bundle's X.509
/// authorities, curves it does not support) are skipped, as a JWKS may
/// list them; a set of more than [`MAX_ISSUER_KEYS`] keys is refused
/// whole. Members beside `keys` (a SPIFFE bundle's `spiffe_sequence` and
/// `spiffe_refresh_hint`) are not read.
pub(crate) fn parse_jwks(jwks: &Value) -> Result<Vec<VerifyingKey>, Refused> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or_else(|| Refused::because("the JWKS has no keys"))?;
    if keys.len() > MAX_ISSUER_KEYS {
        return Err(Refused::because(format!("the issuer's JWKS holds more than {MAX_ISSUER_KEYS} keys")));
    }
    Ok(keys
        .iter()
        .filter(|jwk| jwk.get("use").and_then(Value::as_str).is_none_or(is_signing_use))
        .filter_map(|jwk| VerifyingKey::from_jwk(jwk).ok())
        .collect())
}

/// Whether a JWK's `use` marks a key that signs tokens: `sig` (RFC 7517
/// §4.2), or `jwt-svid`, which a SPIFFE trust bundle gives the keys its
/// JWT-SVIDs are signed with (SPIFFE Trust Domain and Bundle §4.2.2; a
/// realm trusting a trust domain for draft-ietf-oauth-spiffe-client-auth
/// is given that bundle as it is). A bundle's `x509-svid` keys are
/// certificate authorities, never token signers, and `enc` keys encrypt.
fn is_signing_use(usage: &str) -> bool {
    matches!(usage, "sig" | "jwt-svid")
}

/// The issuer a token names: its `iss` (a string), or for a SPIFFE
/// JWT-SVID (`svid`) without one, its trust domain (`spiffe://td` of a
/// `sub` of `spiffe://td/...`).
fn named_issuer(claims: &Value, svid: bool) -> Option<String> {
    match claims.get("iss") {
        Some(Value::String(iss)) => return Some(iss.clone()),
        Some(_) => return None,
        None if !svid => return None,
        None => {}
    }
    let sub = claims.get("sub").and_then(Value::as_str)?;
    let domain = sub.strip_prefix("spiffe://")?.split('/').next().filter(|d| !d.is_empty())?;
    Some(format!("spiffe://{domain}"))
}

impl Service {
    /// Verifies `token` from one of `realm`'s trusted issuers for
    /// `purpose`: see the module's doc.
    pub(crate) fn verify_external(
        &self,
        realm: &RealmRuntime,
        token: &str,
        purpose: TrustPurpose,
        typ: ExternalType<'_>,
        audience_rule: AudienceRule,
        svid: bool,
    ) -> Result<Verified, Refused> {
        let unverified =
            agentauth_jose::unverified_claims(token).map_err(|e| Refused::because(format!("the assertion: {e}")))?;
        let named = named_issuer(&unverified, svid).ok_or_else(|| Refused::because("the assertion names no issuer"))?;
        // One answer whether the issuer is unknown or trusted for other
        // things: which issuers a realm trusts is not the caller's to learn.
        let issuer =
            realm.settings.trusted_issuers.iter().find(|t| t.issuer == named && t.serves(purpose)).ok_or_else(
                || {
                    tracing::debug!(realm = %realm.name, %purpose, "an assertion from an issuer not trusted for it");
                    Refused::because(format!("the assertion's issuer is not trusted here for {purpose}"))
                },
            )?;
        let algorithms: Vec<Algorithm> = issuer.allowed_algorithms();
        let keys = self.trust.keys(&realm.name, issuer, false)?;
        let claims = match agentauth_jose::verify_external(token, &keys, &algorithms, typ) {
            // The issuer may have rotated its keys since they were fetched.
            Err(VerifyError::UnknownKey) if !matches!(issuer.key_source(), KeySource::Static(_)) => {
                let keys = self.trust.keys(&realm.name, issuer, true)?;
                agentauth_jose::verify_external(token, &keys, &algorithms, typ)
            }
            verified => verified,
        }
        .map_err(|e| Refused::because(format!("the assertion: {e}")))?;
        let Value::Object(claims) = claims else {
            return Err(Refused::because("the assertion's claims are not an object"));
        };
        self.check_claims(realm, issuer, claims, &named, audience_rule, svid)
    }

    fn check_claims(
        &self,
        realm: &RealmRuntime,
        issuer: &TrustedIssuer,
        claims: Map<String, Value>,
        named: &str,
        audience_rule: AudienceRule,
        svid: bool,
    ) -> Result<Verified, Refused> {
        let refused = |why: &str| Err(Refused::because(why));
        // Signed, the claims must still name the issuer whose keys
        // verified them.
        if named_issuer(&Value::Object(claims.clone()), svid).as_deref() != Some(named) {
            return refused("the assertion's issuer changed");
        }
        let subject = match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() && sub.len() <= MAX_SUBJECT_LEN && !sub.chars().any(char::is_control) => {
                sub.to_string()
            }
            _ => return refused("the assertion's sub is missing or unusable"),
        };
        let audience: Vec<String> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => return refused("the assertion has no aud"),
        };
        let expected: Vec<String> = match (&issuer.audience, audience_rule) {
            (_, AudienceRule::LoginClient) => issuer.login.iter().map(|l| l.client_id.clone()).collect(),
            (_, AudienceRule::RealmIssuer) | (None, AudienceRule::Sole) => vec![realm.issuer.clone()],
            (Some(configured), _) => vec![configured.clone()],
            (None, AudienceRule::Includes) => vec![realm.issuer.clone(), realm.endpoint("access_token")],
        };
        let audience_ok = match audience_rule {
            AudienceRule::Sole | AudienceRule::RealmIssuer => audience.len() == 1 && expected.contains(&audience[0]),
            AudienceRule::Includes => audience.iter().any(|a| expected.contains(a)),
            AudienceRule::LoginClient => {
                let azp = claims.get("azp").and_then(Value::as_str);
                audience.iter().any(|a| expected.contains(a))
                    && (audience.len() == 1 || azp.is_some_and(|azp| expected.iter().any(|e| e == azp)))
            }
        };
        if !audience_ok {
            return refused("the assertion's aud is not this realm");
        }
        let now = self.now();
        let skew = i64::from(issuer.clock_skew_seconds);
        let time = |name: &str| claims.get(name).and_then(Value::as_i64);
        let Some(exp) = time("exp") else {
            return refused("the assertion has no exp");
        };
        if exp.saturating_add(skew) <= now {
            return refused("the assertion has expired");
        }
        if exp.saturating_sub(now) > i64::from(issuer.max_token_lifetime_seconds) + skew {
            return refused("the assertion is valid for longer than this realm accepts from its issuer");
        }
        if time("nbf").is_some_and(|nbf| nbf > now.saturating_add(skew))
            || time("iat").is_some_and(|iat| iat > now.saturating_add(skew))
        {
            return refused("the assertion is not valid yet");
        }
        if claims.get("iat").is_some_and(|iat| !iat.is_i64()) || claims.get("nbf").is_some_and(|nbf| !nbf.is_i64()) {
            return refused("the assertion's iat or nbf is not a number of seconds");
        }
        let jti = match claims.get("jti") {
            None => None,
            Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= 256 => Some(jti.clone()),
            Some(_) => return refused("the assertion's jti is unusable"),
        };
        Ok(Verified { issuer: issuer.clone(), subject, audience, claims, expires_at: exp, jti })
    }

    /// Spends an external assertion's `jti`: false if its issuer's
    /// assertion of that `jti` was already used (until it expires).
    pub(crate) fn spend_external_jti(&self, realm: &RealmRuntime, verified: &Verified) -> Result<bool, Refused> {
        let Some(jti) = &verified.jti else {
            return Err(Refused::because("the assertion has no jti"));
        };
        // Kept apart from clients' own assertions: `iss:` cannot begin a
        // client id this server generates.
        let namespace = format!("iss:{}", verified.issuer.issuer);
        self.store.use_assertion_jti(&realm.name, &namespace, jti, verified.expires_at).map_err(|e| {
            tracing::error!(realm = %realm.name, "recording an assertion's jti: {e}");
            Refused { reason: "the assertion could not be recorded".into(), unavailable: true }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_spiffe_svid_names_its_trust_domain_when_it_has_no_iss() {
        let svid = json!({"sub": "spiffe://prod.example/ns/a"});
        assert_eq!(named_issuer(&svid, true).as_deref(), Some("spiffe://prod.example"));
        assert_eq!(named_issuer(&svid, false), None, "only a JWT-SVID names its issuer in sub");
        let with_iss = json!({"iss": "https://i", "sub": "spiffe://x/y"});
        assert_eq!(named_issuer(&with_iss, true).as_deref(), Some("https://i"));
        assert_eq!(named_issuer(&json!({"iss": 5, "sub": "spiffe://x/y"}), true), None, "an iss that is no string");
        assert_eq!(named_issuer(&json!({"sub": "spiffe:///nothing"}), true), None);
        assert_eq!(named_issuer(&json!({"sub": "alice"}), true), None);
    }

    #[test]
    fn a_jwks_keeps_its_signing_keys_and_refuses_to_grow_past_the_bound() {
        let key = |alg| {
            let der = agentauth_jose::generate_pkcs8(alg).unwrap();
            agentauth_jose::SigningKey::from_pkcs8(alg, &der).unwrap().verifying_key().jwk()
        };
        let mut encryption = key(Algorithm::Es256);
        encryption["use"] = json!("enc");
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
        let kept =
            parse_jwks(&json!({"keys": [key(Algorithm::Rs256), encryption, p384, key(Algorithm::EdDsa)]})).unwrap();
        assert_eq!(kept.iter().map(VerifyingKey::alg).collect::<Vec<_>>(), [Algorithm::Rs256, Algorithm::EdDsa]);
        // A SPIFFE bundle: its JWT-SVID key signs, its X.509 authority
        // does not, and its own members do not get in the way.
        let (mut svid, mut authority) = (key(Algorithm::Es256), key(Algorithm::Rs256));
        svid["use"] = json!("jwt-svid");
        authority["use"] = json!("x509-svid");
        let bundle = json!({"keys": [authority, svid], "spiffe_sequence": 12, "spiffe_refresh_hint": 300});
        let kept = parse_jwks(&bundle).unwrap();
        assert_eq!(kept.iter().map(VerifyingKey::alg).collect::<Vec<_>>(), [Algorithm::Es256]);
        let many: Vec<Value> = (0..=MAX_ISSUER_KEYS).map(|_| key(Algorithm::Es256)).collect();
        let refused = parse_jwks(&json!({ "keys": many })).unwrap_err();
        assert!(refused.reason.contains("more than"), "{refused}");
        assert!(parse_jwks(&json!({"no": "keys"})).is_err());
    }
}
