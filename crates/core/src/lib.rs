//! The OAuth 2.0 domain of agentauth: client metadata, scopes, attributes
//! set by policies, token claims, the rules of each grant, and a realm's
//! local users.
//!
//! This crate performs no I/O. It knows nothing of HTTP, SQL, WebAssembly
//! or an async runtime; time and randomness come in as arguments. The
//! server crate gathers facts (the authenticated client, a verified subject
//! token, a policy decision) and asks this crate what they allow.
//!
//! It also names what the application needs from storage: the repository
//! traits of [`ports`], which storage backends implement.

pub mod alg;
pub mod authorize;
pub mod client;
pub mod error;
pub mod grant;
pub mod hook;
pub mod ports;
pub mod registration;
pub mod resource;
pub mod scope;
pub mod token;
pub mod trust;
pub mod user;
mod vocabulary;

pub use alg::Algorithm;
pub use client::{
    ApplicationType, AttributeShape, AuthMethod, Client, ClientAttribute, ClientAttributes, ClientMetadata, GrantType,
    WorkloadIdentity,
};
pub use error::{ErrorCode, OAuthError};
pub use hook::HookKind;
pub use scope::Scopes;
pub use token::{AccessTokenClaims, Act, Confirmation, MayAct};
