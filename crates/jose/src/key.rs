//! Signing keys, their public halves and their JWK form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use std::fmt;

pub use agentauth_core::Algorithm;

/// Why a key could not be made or loaded.
#[derive(Debug)]
pub struct KeyError(pub(crate) String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// Makes a new private key as a PKCS#8 v1 document.
///
/// ring cannot generate RSA keys, so RSA keys come from the `rsa` crate;
/// ring loads and uses them. ECDSA and Ed25519 keys come from ring.
pub fn generate_pkcs8(alg: Algorithm) -> Result<Vec<u8>, KeyError> {
    let rng = SystemRandom::new();
    match alg {
        Algorithm::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| KeyError(format!("RSA key generation failed: {e}")))?;
            let der = key.to_pkcs8_der().map_err(|e| KeyError(format!("RSA key encoding failed: {e}")))?;
            Ok(der.as_bytes().to_vec())
        }
        Algorithm::Es256 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| KeyError("ECDSA key generation failed".into())),
        Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| KeyError("Ed25519 key generation failed".into())),
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key that signs a realm's tokens, with its public half.
pub struct SigningKey {
    pair: Pair,
    verifying: VerifyingKey,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.verifying.kid)
            .field("alg", &self.verifying.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 private key for `alg`.
    pub fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let rejected = |e: ring::error::KeyRejected| KeyError(format!("{} private key rejected: {e}", alg.as_str()));
        let rng = SystemRandom::new();
        let (pair, public) = match alg {
            Algorithm::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(rejected)?;
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                (Pair::Rsa(pair), PublicKey::Rsa { n: c.n, e: c.e })
            }
            Algorithm::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                    .map_err(rejected)?;
                let point = pair.public_key().as_ref().to_vec();
                (Pair::Ecdsa(pair), PublicKey::P256 { point })
            }
            Algorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?;
                let x = pair.public_key().as_ref().to_vec();
                (Pair::Ed25519(pair), PublicKey::Ed25519 { x })
            }
        };
        Ok(Self { pair, verifying: VerifyingKey::new(alg, public), rng })
    }

    pub fn kid(&self) -> &str {
        &self.verifying.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.verifying.alg
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// Signs `message`, returning the JWS signature bytes.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let failed = |_| KeyError("signing failed".into());
        match &self.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig).map_err(failed)?;
                Ok(sig)
            }
            Pair::Ecdsa(pair) => pair.sign(&self.rng, message).map(|s| s.as_ref().to_vec()).map_err(failed),
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// Shortest RSA modulus accepted, in bytes: 2048 bits, as ring counts
/// them (rounded up to whole bytes).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Longest RSA modulus accepted, in bits: ring verifies with 2048 to 8192.
const MAX_RSA_BITS: usize = 8192;
/// Largest RSA public exponent ring verifies with: 2^33 - 1.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;

/// Checks an RSA public key (big-endian, no leading zeros) against what
/// ring's `RSA_PKCS1_2048_8192_SHA256` verifies with, so a key that ring
/// would refuse is refused when it is registered instead of failing every
/// authentication: a modulus of 2048 to [`MAX_RSA_BITS`] bits that is odd,
/// and an odd exponent from 3 to 2^33 - 1.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), &'static str> {
    let bits = (n.len() * 8).saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize));
    // Counted in bits, not bytes: ring's own check (whole bytes) would let
    // a 2041-bit modulus pass.
    if n.len() < MIN_RSA_MODULUS_BYTES || bits < MIN_RSA_MODULUS_BYTES * 8 {
        return Err("RSA keys must have at least 2048 bits");
    }
    if bits > MAX_RSA_BITS {
        return Err("RSA keys must have at most 8192 bits");
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("an RSA modulus is odd");
    }
    if e.len() > 5 {
        return Err("the RSA exponent is too large");
    }
    let e = e.iter().fold(0u64, |value, b| (value << 8) | u64::from(*b));
    if !(3..=MAX_RSA_EXPONENT).contains(&e) || e & 1 == 0 {
        return Err("the RSA exponent must be odd, from 3 to 2^33 - 1");
    }
    Ok(())
}

/// True for the canonical encodings of the eight Ed25519 points of small
/// order (the identity among them): a signature checks against such a key
/// for one message in eight whatever its signer knows, so no client may
/// register one.
fn is_small_order_ed25519(x: &[u8]) -> bool {
    const SMALL_ORDER: [&str; 8] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ];
    let hex: String = x.iter().map(|b| format!("{b:02x}")).collect();
    SMALL_ORDER.contains(&hex.as_str())
}

/// True when ring accepts `point` (uncompressed SEC1) as a P-256 public
/// key. ring validates a peer's point only when it uses it, so this runs
/// one key agreement with a throwaway key: a point off the curve fails.
fn is_p256_point(point: &[u8]) -> bool {
    use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
    EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new())
        .is_ok_and(|mine| agree_ephemeral(mine, &UnparsedPublicKey::new(&ECDH_P256, point), |_| ()).is_ok())
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point: 0x04 || x || y.
    P256 {
        point: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

/// RFC 7638 §3: the SHA-256 of the JWK's required members, in
/// lexicographic order and without whitespace, base64url.
fn thumbprint(public: &PublicKey) -> String {
    let input = match public {
        PublicKey::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, B64.encode(e), B64.encode(n)),
        PublicKey::P256 { point } => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            B64.encode(&point[1..33]),
            B64.encode(&point[33..65])
        ),
        PublicKey::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x)),
    };
    B64.encode(ring::digest::digest(&ring::digest::SHA256, input.as_bytes()))
}

/// A public key that verifies a realm's tokens, named by its `kid`: the
/// RFC 7638 thumbprint of its JWK.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    public: PublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    fn new(alg: Algorithm, public: PublicKey) -> Self {
        Self { kid: thumbprint(&public), alg, public }
    }

    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: what a
    /// DPoP-bound token's `cnf.jkt` names (RFC 9449 §6.1), whatever `kid`
    /// the JWK gave itself.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.public)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Reads a client's public key from its JWK (RFC 7517): RSA of 2048 to
    /// 8192 bits (RS256; see [`check_rsa`]), EC P-256 (ES256) or OKP
    /// Ed25519 (EdDSA). A
    /// JWK holding private parameters is refused: a client that sends its
    /// private key has leaked it. The `kid` is the JWK's own, else its
    /// RFC 7638 thumbprint.
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let bad = |why: &str| KeyError(format!("unusable JWK: {why}"));
        let field = |name: &str| -> Result<Vec<u8>, KeyError> {
            let text = jwk.get(name).and_then(Value::as_str).ok_or_else(|| bad(&format!("{name} is missing")))?;
            B64.decode(text).map_err(|_| bad(&format!("{name} is not base64url")))
        };
        if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|p| jwk.get(*p).is_some()) {
            return Err(bad("it holds private key material"));
        }
        let (alg, public) = match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                let (n, e) = (field("n")?, field("e")?);
                let (n, e) = (without_leading_zeros(&n), without_leading_zeros(&e));
                check_rsa(n, e).map_err(bad)?;
                (Algorithm::Rs256, PublicKey::Rsa { n: n.to_vec(), e: e.to_vec() })
            }
            Some("EC") if jwk.get("crv").and_then(Value::as_str) == Some("P-256") => {
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad("P-256 coordinates are 32 bytes"));
                }
                let mut point = vec![4];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                if !is_p256_point(&point) {
                    return Err(bad("the point is not on the P-256 curve"));
                }
                (Algorithm::Es256, PublicKey::P256 { point })
            }
            Some("OKP") if jwk.get("crv").and_then(Value::as_str) == Some("Ed25519") => {
                let x = field("x")?;
                if x.len() != 32 {
                    return Err(bad("Ed25519 keys are 32 bytes"));
                }
                if is_small_order_ed25519(&x) {
                    return Err(bad("the Ed25519 key is a point of small order, with which anyone can forge"));
                }
                (Algorithm::EdDsa, PublicKey::Ed25519 { x })
            }
            _ => return Err(bad("supported keys: RSA, EC P-256, OKP Ed25519")),
        };
        if jwk.get("alg").and_then(Value::as_str).is_some_and(|a| a != alg.as_str()) {
            return Err(bad(&format!("this key signs with {}", alg.as_str())));
        }
        let mut key = Self::new(alg, public);
        if let Some(kid) = jwk.get("kid").and_then(Value::as_str) {
            key.kid = kid.to_string();
        }
        Ok(key)
    }

    /// The public JWK (RFC 7517), with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self) -> Value {
        let mut jwk = match &self.public {
            PublicKey::Rsa { n, e } => json!({"kty": "RSA", "n": B64.encode(n), "e": B64.encode(e)}),
            PublicKey::P256 { point } => json!({
                "kty": "EC", "crv": "P-256",
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
            }),
            PublicKey::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(x)}),
        };
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg.as_str());
        jwk["use"] = json!("sig");
        jwk
    }

    /// True when `signature` is a valid signature of `message`.
    pub(crate) fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        use signature::{ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
        match &self.public {
            PublicKey::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            PublicKey::P256 { point } => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, signature).is_ok()
            }
            PublicKey::Ed25519 { x } => UnparsedPublicKey::new(&ED25519, x).verify(message, signature).is_ok(),
        }
    }
}
