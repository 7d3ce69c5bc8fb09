//! JWS and JWK with ring: key generation, signing, strict verification and
//! the JWKS a realm publishes.
//!
//! This is the only crate that touches private key bytes. Keys enter as
//! PKCS#8 documents and leave only as public JWKs; `Debug` never prints
//! key material.
//!
//! Verification is strict (RFC 8725): the header must name an algorithm
//! this server signs with, a `kid` it knows whose algorithm matches, and
//! the expected `typ`. `alg: none`, unknown `crit` headers, and keys
//! chosen by the token (`jwk`, `jku`, `x5u`) are refused, and so is a
//! header or claim set that names a member twice, at any depth.

mod jwt;
mod key;
mod seal;
mod strict_json;

pub use jwt::{
    DPOP_TYPE, DpopProof, ExternalType, MAX_TOKEN_LEN, VerifyError, sign, sign_dpop_proof, unverified_claims, verify,
    verify_client_assertion, verify_dpop_proof, verify_external,
};
pub use key::{Algorithm, KeyError, SigningKey, VerifyingKey, generate_pkcs8};
pub use seal::{MasterKey, is_sealed};
