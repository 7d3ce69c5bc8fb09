//! Compact JWS (RFC 7515) signing and strict verification of JWTs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use std::fmt;

use crate::key::{Algorithm, KeyError, SigningKey, VerifyingKey};

/// Longest token accepted for verification: larger inputs are refused
/// before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Signs `claims` with `key`, with the given `typ` header (`at+jwt` for
/// access tokens, RFC 9068 §2.1).
pub fn sign(key: &SigningKey, typ: &str, claims: &Value) -> Result<String, KeyError> {
    let header = json!({"alg": key.alg().as_str(), "kid": key.kid(), "typ": typ});
    let mut token = String::with_capacity(512);
    B64.encode_string(header.to_string(), &mut token);
    token.push('.');
    B64.encode_string(claims.to_string(), &mut token);
    let signature = key.sign_bytes(token.as_bytes())?;
    token.push('.');
    B64.encode_string(signature, &mut token);
    Ok(token)
}

/// Why a token did not verify. The variants are for logs and tests; a
/// client is told only that its token is invalid.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    TooLong,
    Malformed,
    UnsupportedAlgorithm,
    UnknownKey,
    WrongType,
    BadSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLong => "token is too long",
            Self::Malformed => "token is not a well-formed JWS",
            Self::UnsupportedAlgorithm => "token's algorithm is not accepted",
            Self::UnknownKey => "token's key is unknown",
            Self::WrongType => "token has the wrong type",
            Self::BadSignature => "token's signature is invalid",
        })
    }
}

impl std::error::Error for VerifyError {}

/// Verifies a compact JWS against `keys` and returns its claims, a JSON
/// object. The caller checks the claims (issuer, expiry, ...).
pub fn verify(token: &str, keys: &[VerifyingKey], typ: &str) -> Result<Value, VerifyError> {
    verify_with(token, keys, Some(typ))
}

/// Verifies a client assertion (RFC 7523 §3) against the client's keys:
/// as [`verify`], except that `typ` may be absent or `JWT`, and without a
/// `kid` every key of the header's algorithm is tried.
pub fn verify_client_assertion(token: &str, keys: &[VerifyingKey]) -> Result<Value, VerifyError> {
    verify_with(token, keys, None)
}

/// How a JWT from an issuer outside the realm must be typed (its header's
/// `typ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalType<'a> {
    /// Exactly this type (`oauth-id-jag+jwt`), compared as RFC 8725 §3.11
    /// says.
    Exactly(&'a str),
    /// `JWT`, or no `typ` at all: ID tokens, workload tokens and generic
    /// JWT bearer assertions.
    Jwt,
}

/// Verifies a JWT from a trusted issuer outside the realm against that
/// issuer's `keys`, accepting only `algorithms`. As [`verify`], except
/// that the header may also carry the informational members other issuers
/// write (`x5t`, `x5t#S256`), and without a `kid` every key of the
/// header's algorithm is tried. Members that change how a token is read
/// (`crit`, `jku`, `jwk`, `x5u`, `x5c`, `b64`, `zip`) are still refused.
pub fn verify_external(
    token: &str,
    keys: &[VerifyingKey],
    algorithms: &[Algorithm],
    typ: ExternalType<'_>,
) -> Result<Value, VerifyError> {
    let profile = Profile {
        typ: match typ {
            ExternalType::Exactly(t) => Some(t),
            ExternalType::Jwt => None,
        },
        algorithms,
        informational: &["x5t", "x5t#S256"],
        kid_required: false,
    };
    verify_profile(token, keys, &profile)
}

/// The `typ` of a DPoP proof (RFC 9449 §4.2).
pub const DPOP_TYPE: &str = "dpop+jwt";

/// A DPoP proof whose signature verified with the key it carries.
#[derive(Debug)]
pub struct DpopProof {
    /// Its claims (`jti`, `htm`, `htu`, `iat`, and `ath` or `nonce` when
    /// sent), for the caller to check.
    pub claims: Value,
    /// The RFC 7638 thumbprint of its key: what a token bound to that key
    /// names in `cnf.jkt`.
    pub jkt: String,
}

/// Signs a DPoP proof (RFC 9449 §4.2) of `claims` with `key`, its public
/// JWK in the header: what a client sends in the `DPoP` header.
pub fn sign_dpop_proof(key: &SigningKey, claims: &Value) -> Result<String, KeyError> {
    let header = json!({"typ": DPOP_TYPE, "alg": key.alg().as_str(), "jwk": key.verifying_key().jwk()});
    let mut proof = String::with_capacity(768);
    B64.encode_string(header.to_string(), &mut proof);
    proof.push('.');
    B64.encode_string(claims.to_string(), &mut proof);
    let signature = key.sign_bytes(proof.as_bytes())?;
    proof.push('.');
    B64.encode_string(signature, &mut proof);
    Ok(proof)
}

/// Verifies a DPoP proof's form and signature (RFC 9449 §4.3, checks 2 to
/// 6): a JWS with `typ` `dpop+jwt`, an `alg` of `algorithms`, and in its
/// header a public `jwk` of that algorithm, which the signature must
/// verify with. Any other header member (`kid`, `crit`, `jku`, `x5c`...)
/// is refused. The caller checks the claims.
pub fn verify_dpop_proof(proof: &str, algorithms: &[Algorithm]) -> Result<DpopProof, VerifyError> {
    let jws = Jws::parse(proof)?;
    let header = &jws.header;
    if header.keys().any(|k| !matches!(k.as_str(), "alg" | "typ" | "jwk")) {
        return Err(VerifyError::Malformed);
    }
    if !header.get("typ").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case(DPOP_TYPE)) {
        return Err(VerifyError::WrongType);
    }
    let alg = jws.alg(algorithms)?;
    // A private key in the header is refused by `from_jwk`: its holder
    // has leaked it.
    let key = header.get("jwk").ok_or(VerifyError::UnknownKey).and_then(|jwk| {
        if jwk.is_object() {
            VerifyingKey::from_jwk(jwk).map_err(|_| VerifyError::UnknownKey)
        } else {
            Err(VerifyError::Malformed)
        }
    })?;
    if key.alg() != alg {
        return Err(VerifyError::UnsupportedAlgorithm);
    }
    let signature = jws.signature()?;
    if !key.verify_bytes(jws.signed, &signature) {
        return Err(VerifyError::BadSignature);
    }
    Ok(DpopProof { claims: jws.claims()?, jkt: key.thumbprint() })
}

/// A compact JWS taken apart, its header decoded: what every
/// verification starts from.
struct Jws<'a> {
    header: serde_json::Map<String, Value>,
    /// What the signature covers: the header and claims, as sent.
    signed: &'a [u8],
    claims_b64: &'a str,
    sig_b64: &'a str,
}

impl<'a> Jws<'a> {
    /// `token`'s three parts, if it has exactly three, is not too long,
    /// and its header is a JSON object.
    fn parse(token: &'a str) -> Result<Self, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let Value::Object(header) = decode_json(header_b64)? else {
            return Err(VerifyError::Malformed);
        };
        let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
        Ok(Self { header, signed, claims_b64, sig_b64 })
    }

    /// The header's `alg`, if it is one of `allowed`.
    fn alg(&self, allowed: &[Algorithm]) -> Result<Algorithm, VerifyError> {
        self.header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Algorithm::parse)
            .filter(|alg| allowed.contains(alg))
            .ok_or(VerifyError::UnsupportedAlgorithm)
    }

    fn signature(&self) -> Result<Vec<u8>, VerifyError> {
        B64.decode(self.sig_b64).map_err(|_| VerifyError::Malformed)
    }

    /// The claims, which must be a JSON object.
    fn claims(&self) -> Result<Value, VerifyError> {
        let claims: Value = decode_json(self.claims_b64)?;
        if claims.is_object() { Ok(claims) } else { Err(VerifyError::Malformed) }
    }
}

/// What one kind of JWT must look like before its signature is checked.
struct Profile<'a> {
    /// The `typ` required, or `None` for `JWT` or none.
    typ: Option<&'a str>,
    algorithms: &'a [Algorithm],
    /// Header members allowed beside `alg`, `kid` and `typ`, which say
    /// nothing about how to read the token.
    informational: &'a [&'a str],
    kid_required: bool,
}

/// Reads a JWT's claims without verifying it, to learn who claims to have
/// sent it before its keys are looked up. Never trust the result alone.
pub fn unverified_claims(token: &str) -> Result<Value, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLong);
    }
    let claims = token.split('.').nth(1).ok_or(VerifyError::Malformed)?;
    let claims = decode_json(claims)?;
    if claims.is_object() { Ok(claims) } else { Err(VerifyError::Malformed) }
}

fn verify_with(token: &str, keys: &[VerifyingKey], typ: Option<&str>) -> Result<Value, VerifyError> {
    // The server's own tokens always name their key; a client assertion
    // may not.
    let profile = Profile { typ, algorithms: &Algorithm::ALL, informational: &[], kid_required: typ.is_some() };
    verify_profile(token, keys, &profile)
}

fn verify_profile(token: &str, keys: &[VerifyingKey], profile: &Profile<'_>) -> Result<Value, VerifyError> {
    let typ = profile.typ;
    let jws = Jws::parse(token)?;
    let header = &jws.header;
    // Only the members this server writes; anything else (crit, jku, jwk,
    // x5u, b64, zip, ...) could change how the token must be read.
    if header
        .keys()
        .any(|k| !matches!(k.as_str(), "alg" | "kid" | "typ") && !profile.informational.contains(&k.as_str()))
    {
        return Err(VerifyError::Malformed);
    }
    let alg = jws.alg(profile.algorithms)?;
    // RFC 8725 §3.11: compare `typ` case-insensitively, with or without
    // the `application/` prefix.
    let token_typ = header.get("typ").and_then(Value::as_str);
    let token_typ = token_typ.map(|t| t.strip_prefix("application/").unwrap_or(t));
    let typ_ok = match (typ, token_typ) {
        (Some(expected), Some(got)) => got.eq_ignore_ascii_case(expected),
        (Some(_), None) => false,
        (None, got) => got.is_none_or(|t| t.eq_ignore_ascii_case("JWT")),
    };
    if !typ_ok {
        return Err(VerifyError::WrongType);
    }
    let kid = header.get("kid").and_then(Value::as_str);
    if kid.is_none() && profile.kid_required {
        return Err(VerifyError::UnknownKey);
    }
    let mut candidates = keys.iter().filter(|k| k.alg() == alg && kid.is_none_or(|kid| k.kid() == kid)).peekable();
    if candidates.peek().is_none() {
        return Err(VerifyError::UnknownKey);
    }
    let signature = jws.signature()?;
    if !candidates.any(|key| key.verify_bytes(jws.signed, &signature)) {
        // Without a `kid`, no key of the set verifying it is a key the set
        // does not hold (yet: an issuer may have rotated), as with a `kid`
        // the set does not list.
        return Err(if kid.is_none() { VerifyError::UnknownKey } else { VerifyError::BadSignature });
    }
    jws.claims()
}

/// Decodes a header or claim set: base64url, then JSON in which no member
/// name repeats (see [`crate::strict_json`]).
fn decode_json(part: &str) -> Result<Value, VerifyError> {
    let bytes = B64.decode(part).map_err(|_| VerifyError::Malformed)?;
    crate::strict_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::generate_pkcs8;

    fn key(alg: Algorithm) -> SigningKey {
        SigningKey::from_pkcs8(alg, &generate_pkcs8(alg).unwrap()).unwrap()
    }

    /// A JWS of `claims` with exactly `header`, signed by `key`.
    fn signed_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature = key.sign_bytes(signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", B64.encode(signature))
    }

    #[test]
    fn a_dpop_proof_verifies_with_its_own_key_and_names_its_thumbprint() {
        for alg in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
            let k = key(alg);
            let proof = sign_dpop_proof(&k, &json!({"htm": "POST"})).unwrap();
            let verified = verify_dpop_proof(&proof, &Algorithm::ALL).unwrap();
            assert_eq!(verified.claims["htm"], "POST", "{alg:?}");
            assert_eq!(verified.jkt, k.verifying_key().thumbprint(), "{alg:?}");
            assert_eq!(verified.jkt.len(), 43, "{alg:?}");
        }
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s_whatever_kid_the_jwk_gives_itself() {
        // RFC 7638 §3.1's example key and thumbprint.
        let jwk = json!({
            "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        });
        let key = VerifyingKey::from_jwk(&jwk).unwrap();
        assert_eq!(key.kid(), "2011-04-29");
        assert_eq!(key.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn dpop_proofs_of_another_type_key_or_form_are_refused() {
        let k = key(Algorithm::Es256);
        let jwk = k.verifying_key().jwk();
        let claims = json!({"htm": "POST"});
        let proof = |header: Value| signed_with_header(&k, &header, &claims);
        let refused = |proof: &str| verify_dpop_proof(proof, &Algorithm::ALL).unwrap_err();
        assert_eq!(refused(&proof(json!({"typ": "JWT", "alg": "ES256", "jwk": jwk}))), VerifyError::WrongType);
        assert_eq!(refused(&proof(json!({"alg": "ES256", "jwk": jwk}))), VerifyError::WrongType);
        assert_eq!(refused(&proof(json!({"typ": "dpop+jwt", "alg": "ES256"}))), VerifyError::UnknownKey);
        assert_eq!(
            refused(&proof(json!({"typ": "dpop+jwt", "alg": "none", "jwk": jwk}))),
            VerifyError::UnsupportedAlgorithm
        );
        // The header's alg must be the key's.
        assert_eq!(
            refused(&proof(json!({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}))),
            VerifyError::UnsupportedAlgorithm
        );
        for extra in ["kid", "crit", "jku", "x5c"] {
            let mut header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
            header[extra] = json!("x");
            assert_eq!(refused(&proof(header)), VerifyError::Malformed, "{extra}");
        }
        // A private key in the header has leaked, and is no key here.
        let pkcs8 = generate_pkcs8(Algorithm::Es256).unwrap();
        let mut private = jwk.clone();
        private["d"] = json!(B64.encode(&pkcs8[..32]));
        assert_eq!(
            refused(&proof(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}))),
            VerifyError::UnknownKey
        );
        // Signed by another key than the header's.
        let other = key(Algorithm::Es256);
        let forged = signed_with_header(&other, &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}), &claims);
        assert_eq!(refused(&forged), VerifyError::BadSignature);
        // Only the algorithms asked for.
        let good = sign_dpop_proof(&k, &claims).unwrap();
        assert_eq!(verify_dpop_proof(&good, &[Algorithm::Rs256]).unwrap_err(), VerifyError::UnsupportedAlgorithm);
    }

    #[test]
    fn each_algorithm_round_trips() {
        for alg in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
            let k = key(alg);
            let token = sign(&k, "at+jwt", &json!({"sub": "a"})).unwrap();
            let claims = verify(&token, &[k.verifying_key().clone()], "at+jwt").unwrap();
            assert_eq!(claims["sub"], "a", "{alg:?}");
        }
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_jwk_carries_it() {
        let k = key(Algorithm::Es256);
        let jwk = k.verifying_key().jwk();
        assert_eq!(jwk["kid"], k.kid());
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(k.kid().len(), 43);
    }

    #[test]
    fn tampered_payload_is_refused() {
        let k = key(Algorithm::Es256);
        let token = sign(&k, "at+jwt", &json!({"scope": "read"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], B64.encode(r#"{"scope":"admin"}"#), parts[2]);
        assert_eq!(verify(&forged, &[k.verifying_key().clone()], "at+jwt"), Err(VerifyError::BadSignature));
    }

    #[test]
    fn without_a_kid_a_signature_no_key_verifies_is_an_unknown_key() {
        let (k, other) = (key(Algorithm::Es256), key(Algorithm::Es256));
        let header = B64.encode(r#"{"alg":"ES256"}"#);
        let claims = B64.encode(r#"{"sub":"a"}"#);
        let input = format!("{header}.{claims}");
        let token = format!("{input}.{}", B64.encode(other.sign_bytes(input.as_bytes()).unwrap()));
        let known = [k.verifying_key().clone()];
        assert_eq!(
            verify_external(&token, &known, &[Algorithm::Es256], ExternalType::Jwt),
            Err(VerifyError::UnknownKey)
        );
        let both = [k.verifying_key().clone(), other.verifying_key().clone()];
        let verified = verify_external(&token, &both, &[Algorithm::Es256], ExternalType::Jwt);
        assert_eq!(verified.map(|c| c["sub"].clone()), Ok(json!("a")), "once the set holds the key");
    }

    #[test]
    fn alg_none_and_foreign_headers_are_refused() {
        let k = key(Algorithm::Es256);
        let claims = B64.encode(r#"{"sub":"a"}"#);
        let none =
            format!("{}.{claims}.", B64.encode(format!(r#"{{"alg":"none","kid":"{}","typ":"at+jwt"}}"#, k.kid())));
        assert_eq!(verify(&none, &[k.verifying_key().clone()], "at+jwt"), Err(VerifyError::UnsupportedAlgorithm));
        let jku = format!("{}.{claims}.AA", B64.encode(r#"{"alg":"ES256","jku":"https://evil","typ":"at+jwt"}"#));
        assert_eq!(verify(&jku, &[k.verifying_key().clone()], "at+jwt"), Err(VerifyError::Malformed));
    }

    #[test]
    fn wrong_type_unknown_key_and_algorithm_confusion_are_refused() {
        let k = key(Algorithm::Es256);
        let other = key(Algorithm::Es256);
        let token = sign(&k, "JWT", &json!({})).unwrap();
        assert_eq!(verify(&token, &[k.verifying_key().clone()], "at+jwt"), Err(VerifyError::WrongType));
        let token = sign(&k, "at+jwt", &json!({})).unwrap();
        assert_eq!(verify(&token, &[other.verifying_key().clone()], "at+jwt"), Err(VerifyError::UnknownKey));
        // A header naming the right kid with another algorithm finds no key.
        let (_, rest) = token.split_once('.').unwrap();
        let header = B64.encode(format!(r#"{{"alg":"EdDSA","kid":"{}","typ":"at+jwt"}}"#, k.kid()));
        assert_eq!(
            verify(&format!("{header}.{rest}"), &[k.verifying_key().clone()], "at+jwt"),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn client_keys_from_jwks_verify_client_assertions() {
        for alg in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
            let k = key(alg);
            let mut jwk = k.verifying_key().jwk();
            jwk["kid"] = json!("client-chosen");
            let from_jwk = VerifyingKey::from_jwk(&jwk).unwrap();
            assert_eq!(from_jwk.kid(), "client-chosen");
            let token = sign(&k, "JWT", &json!({"iss": "c"})).unwrap();
            // The header names the thumbprint kid, which the JWK renamed:
            // an assertion with an unknown kid is refused...
            assert_eq!(
                verify_client_assertion(&token, std::slice::from_ref(&from_jwk)),
                Err(VerifyError::UnknownKey),
                "{alg:?}"
            );
            // ...and one without a kid is tried against every key.
            let (_, rest) = token.split_once('.').unwrap();
            let header = B64.encode(format!(r#"{{"alg":"{}"}}"#, alg.as_str()));
            let unsigned = format!("{header}.{}", rest.rsplit_once('.').unwrap().0);
            let signature = B64.encode(k.sign_bytes(unsigned.as_bytes()).unwrap());
            let no_kid = format!("{unsigned}.{signature}");
            assert_eq!(verify_client_assertion(&no_kid, &[from_jwk]).unwrap()["iss"], "c", "{alg:?}");
        }
    }

    #[test]
    fn weak_or_odd_jwks_are_refused() {
        for bad in [
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"}),
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "crv": "P-256", "x": B64.encode([1u8; 32]), "y": B64.encode([2u8; 32]), "d": "private"}),
        ] {
            assert!(VerifyingKey::from_jwk(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_ring_cannot_verify_with_are_refused_when_read() {
        let rsa = key(Algorithm::Rs256).verifying_key().jwk();
        let n = B64.decode(rsa["n"].as_str().unwrap()).unwrap();
        let with = |n: &[u8], e: &[u8]| json!({"kty": "RSA", "n": B64.encode(n), "e": B64.encode(e)});
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        let mut huge = vec![0xc3; 1025];
        *huge.last_mut().unwrap() |= 1;
        // 256 bytes, but 2047 bits.
        let mut short = n.clone();
        short[0] = 0x7f;
        for bad in [
            with(&huge, &[1, 0, 1]),
            with(&short, &[1, 0, 1]),
            with(&even, &[1, 0, 1]),
            with(&n, &[1]),
            with(&n, &[1, 0, 0]),
            with(&n, &[1, 0, 0, 0, 0, 1]),
            with(&n, &[]),
            json!({"kty": "EC", "crv": "P-256", "x": B64.encode([1u8; 32]), "y": B64.encode([2u8; 32])}),
            // The Ed25519 identity point: a key of small order.
            json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode({ let mut x = [0u8; 32]; x[0] = 1; x })}),
        ] {
            assert!(VerifyingKey::from_jwk(&bad).is_err(), "{bad}");
        }
        // Leading zero bytes are only an encoding: the key is the same one.
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&n);
        let same = VerifyingKey::from_jwk(&with(&padded, &[0, 1, 0, 1])).unwrap();
        assert_eq!(same.kid(), rsa["kid"].as_str().unwrap());
        let ec = key(Algorithm::Es256).verifying_key().jwk();
        assert!(VerifyingKey::from_jwk(&ec).is_ok());
        let ed = key(Algorithm::EdDsa).verifying_key().jwk();
        assert!(VerifyingKey::from_jwk(&ed).is_ok(), "a real Ed25519 key is kept");
    }

    /// Signs `header` and `claims` exactly as written, so a test can forge
    /// what [`sign`] never writes.
    fn sign_raw(k: &SigningKey, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = B64.encode(k.sign_bytes(input.as_bytes()).unwrap());
        format!("{input}.{signature}")
    }

    #[test]
    fn a_signed_token_with_a_duplicate_member_anywhere_is_refused() {
        let k = key(Algorithm::Es256);
        let keys = [k.verifying_key().clone()];
        let kid = k.kid();
        let header = format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"at+jwt"}}"#);
        assert_eq!(verify(&sign_raw(&k, &header, r#"{"sub":"a"}"#), &keys, "at+jwt").unwrap()["sub"], "a");
        for (header, claims) in [
            (format!(r#"{{"alg":"ES256","alg":"ES256","kid":"{kid}","typ":"at+jwt"}}"#), r#"{"sub":"a"}"#),
            (format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","typ":"at+jwt"}}"#), r#"{"sub":"a"}"#),
            (header.clone(), r#"{"sub":"a","sub":"admin"}"#),
            (header.clone(), r#"{"sub":"a","scope":"read","scope":"read write"}"#),
            (header.clone(), r#"{"sub":"a","act":{"sub":"x","sub":"y"}}"#),
            (header.clone(), r#"{"sub":"a","aud":[{"k":1,"k":2}]}"#),
        ] {
            let forged = sign_raw(&k, &header, claims);
            assert_eq!(verify(&forged, &keys, "at+jwt"), Err(VerifyError::Malformed), "{header} {claims}");
        }
    }

    #[test]
    fn a_client_assertion_with_a_duplicate_member_is_refused_before_and_after_verifying() {
        let k = key(Algorithm::EdDsa);
        let keys = [k.verifying_key().clone()];
        let twice = sign_raw(&k, r#"{"alg":"EdDSA","typ":"JWT"}"#, r#"{"iss":"c","sub":"other","sub":"c"}"#);
        assert_eq!(unverified_claims(&twice), Err(VerifyError::Malformed));
        assert_eq!(verify_client_assertion(&twice, &keys), Err(VerifyError::Malformed));
        let alg_twice = sign_raw(&k, r#"{"alg":"none","alg":"EdDSA"}"#, r#"{"iss":"c","sub":"c"}"#);
        assert_eq!(verify_client_assertion(&alg_twice, &keys), Err(VerifyError::Malformed));
    }

    #[test]
    fn external_tokens_are_held_to_their_issuers_algorithms_and_type() {
        let k = key(Algorithm::Es256);
        let keys = [k.verifying_key().clone()];
        let kid = k.kid();
        let jag =
            sign_raw(&k, &format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"oauth-id-jag+jwt"}}"#), r#"{"sub":"u"}"#);
        let id_jag = ExternalType::Exactly("oauth-id-jag+jwt");
        assert_eq!(verify_external(&jag, &keys, &[Algorithm::Es256], id_jag).unwrap()["sub"], "u");
        assert_eq!(verify_external(&jag, &keys, &[Algorithm::Es256], ExternalType::Jwt), Err(VerifyError::WrongType));
        assert_eq!(
            verify_external(&jag, &keys, &[Algorithm::Rs256], id_jag),
            Err(VerifyError::UnsupportedAlgorithm),
            "an algorithm the issuer does not use is refused even with a matching key"
        );
        // Workload tokens: no typ, no kid, an x5t thumbprint.
        let workload = sign_raw(&k, r#"{"alg":"ES256","x5t":"abc"}"#, r#"{"sub":"system:serviceaccount:ns:a"}"#);
        assert!(verify_external(&workload, &keys, &[Algorithm::Es256], ExternalType::Jwt).is_ok());
        for header in [r#"{"alg":"ES256","jku":"https://evil/jwks"}"#, r#"{"alg":"ES256","crit":["exp"]}"#] {
            let forged = sign_raw(&k, header, r#"{"sub":"a"}"#);
            assert_eq!(
                verify_external(&forged, &keys, &[Algorithm::Es256], ExternalType::Jwt),
                Err(VerifyError::Malformed),
                "{header}"
            );
        }
        // The realm's own verifier still refuses what external tokens may carry.
        let own = sign_raw(&k, &format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"at+jwt","x5t":"a"}}"#), "{}");
        assert_eq!(verify(&own, &keys, "at+jwt"), Err(VerifyError::Malformed));
    }

    #[test]
    fn oversized_and_malformed_tokens_are_refused() {
        let k = key(Algorithm::EdDsa);
        let keys = [k.verifying_key().clone()];
        assert_eq!(verify(&"a".repeat(MAX_TOKEN_LEN + 1), &keys, "at+jwt"), Err(VerifyError::TooLong));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(verify(bad, &keys, "at+jwt").is_err(), "{bad}");
        }
    }
}
