//! Generated secrets and their keyed hashes.
//!
//! Client secrets, registration access tokens and server-side tokens are
//! 256 random bits, so a keyed SHA-256 (HMAC) is the right way to store
//! them: a slow password hash would add nothing but latency. The key is
//! made once per database and kept in it. (People's passwords are another
//! matter: see `password`.)

use agentauth_core::ports::ServerSecretRepository;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// What a hashed secret is, so a hash of one kind never matches another.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    ClientSecret,
    RegistrationToken,
    AccessToken,
    RefreshToken,
    /// A JWT's `jti`, to find the JWTs of a token family.
    JwtId,
    /// A realm admin's bearer token.
    AdminToken,
    /// An authorization code.
    AuthorizationCode,
    /// What the server hands the browser and reads back: a sign-in
    /// session, a pending authorization request.
    Browser,
    /// A DPoP nonce's MAC.
    DpopNonce,
    /// A console session's seal: apart from every other browser value.
    ConsoleSession,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::ClientSecret => b"client-secret\0",
            Self::RegistrationToken => b"registration-token\0",
            Self::AccessToken => b"access-token\0",
            Self::RefreshToken => b"refresh-token\0",
            Self::JwtId => b"jwt-id\0",
            Self::AdminToken => b"admin-token\0",
            Self::AuthorizationCode => b"authorization-code\0",
            Self::Browser => b"browser\0",
            Self::DpopNonce => b"dpop-nonce\0",
            Self::ConsoleSession => b"console-session\0",
        }
    }
}

/// Hashes secrets with the database's HMAC key.
pub struct Hasher {
    key: hmac::Key,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher { [redacted] }")
    }
}

impl Hasher {
    pub fn load(store: &dyn ServerSecretRepository) -> Result<Self, agentauth_core::ports::Error> {
        let key = store.server_secret("secret-hash-key", &mut || random_bytes::<32>().to_vec())?;
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, &key) })
    }

    pub fn hash(&self, purpose: Purpose, secret: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(purpose.label());
        ctx.update(secret.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// Compares in constant time.
    pub fn matches(&self, purpose: Purpose, secret: &str, stored: &[u8]) -> bool {
        bool::from(self.hash(purpose, secret).ct_eq(stored))
    }
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    // The OS random source failing is not something to serve through.
    #[allow(clippy::expect_used)]
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A new 256-bit secret, base64url.
pub fn new_secret() -> String {
    B64.encode(random_bytes::<32>())
}

/// A new token identifier (`jti`), 128 random bits.
pub fn new_jti() -> String {
    B64.encode(random_bytes::<16>())
}

/// A new client identifier: a random (version 4) UUID.
pub fn new_client_id() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_separated_by_purpose() {
        let store = agentauth_store::Store::open_in_memory().unwrap();
        let h = Hasher::load(&store).unwrap();
        let stored = h.hash(Purpose::ClientSecret, "s3cret");
        assert!(h.matches(Purpose::ClientSecret, "s3cret", &stored));
        assert!(!h.matches(Purpose::ClientSecret, "s3cret!", &stored));
        assert!(!h.matches(Purpose::RegistrationToken, "s3cret", &stored));
        // The key persists with the database.
        assert!(Hasher::load(&store).unwrap().matches(Purpose::ClientSecret, "s3cret", &stored));
    }

    #[test]
    fn client_ids_are_uuid_v4_and_secrets_are_long() {
        let id = new_client_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_client_id());
        assert_eq!(new_secret().len(), 43);
    }
}
