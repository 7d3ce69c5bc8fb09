//! Private keys at rest: sealed with AES-256-GCM under the operator's
//! master key, so a copy of the database alone signs nothing.
//!
//! A sealed blob is `AAS1 || nonce (12 bytes) || ciphertext || tag`. A
//! PKCS#8 document starts with a DER SEQUENCE (0x30), so sealed and plain
//! blobs cannot be confused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

use crate::KeyError;

const MAGIC: &[u8; 4] = b"AAS1";

/// The operator's master key. `Debug` never prints it.
pub struct MasterKey(LessSafeKey);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Reads a key written as 32 bytes of base64url (padding optional).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = B64
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| KeyError("the master key must be 32 bytes of base64url".into()))?;
        if bytes.len() != 32 {
            return Err(KeyError(format!("the master key must be 32 bytes, not {}", bytes.len())));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError("unusable master key".into()))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// A new random key, and its text form to keep.
    pub fn generate() -> Result<(Self, String), KeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| KeyError("the random source failed".into()))?;
        let text = B64.encode(bytes);
        Ok((Self::parse(&text)?, text))
    }

    /// Seals `plaintext`, bound to `context` (say, the realm's name), so a
    /// sealed blob moved to another context does not open.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeyError("the random source failed".into()))?;
        let mut sealed = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut sealed)
            .map_err(|_| KeyError("sealing failed".into()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a blob sealed by [`MasterKey::seal`] with the same context.
    /// Fails for another key, another context, or any change to the blob.
    pub fn open(&self, context: &[u8], blob: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rest = blob.strip_prefix(MAGIC.as_slice()).ok_or_else(|| KeyError("not a sealed blob".into()))?;
        if rest.len() < NONCE_LEN {
            return Err(KeyError("sealed blob is truncated".into()));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError("bad nonce".into()))?;
        let mut buffer = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context), &mut buffer)
            .map_err(|_| KeyError("the master key does not open this blob".into()))?;
        Ok(plain.to_vec())
    }
}

/// True for a blob made by [`MasterKey::seal`].
pub fn is_sealed(blob: &[u8]) -> bool {
    blob.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_key_and_context() {
        let (key, text) = MasterKey::generate().unwrap();
        let sealed = key.seal(b"alpha", b"private key").unwrap();
        assert!(is_sealed(&sealed));
        assert_eq!(MasterKey::parse(&text).unwrap().open(b"alpha", &sealed).unwrap(), b"private key");
        assert!(key.open(b"beta", &sealed).is_err(), "another realm");
        let (other, _) = MasterKey::generate().unwrap();
        assert!(other.open(b"alpha", &sealed).is_err(), "another key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"alpha", &tampered).is_err(), "a changed blob");
        assert!(MasterKey::parse("short").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    }
}
