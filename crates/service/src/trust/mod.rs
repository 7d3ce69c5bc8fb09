//! Trust in issuers outside the realm: the admin API for a realm's
//! trusted issuers, verifying their tokens with keys fetched safely, and
//! mapping what they say to local subjects through the realm's
//! `assertion` policy. See [`agentauth_core::trust`] for the
//! configuration.

mod admin;
pub mod login;
pub(crate) mod map;
pub(crate) mod verify;

pub use login::{UpstreamRefused, UpstreamStart};
pub use verify::IssuerKeys;
