//! What agentauth's tests and its benchmark share, written once.
//!
//! The end-to-end tests (`tests/e2e`), the benchmark (`crates/bench`) and
//! the in-process server tests (`crates/server/src/tests.rs`) each start a
//! server, register clients and ask for tokens. This crate is the one way
//! to do each:
//!
//! - [`ServerBuilder`] spawns the real `agentauth serve` on a free
//!   loopback port, with a fresh (or given) data directory, an admin
//!   token, extra arguments and environment; it returns once `/healthz`
//!   answers, and the [`Server`] stops it (SIGTERM) when dropped. The
//!   server speaks HTTP through [`Server`]'s methods and answers with a
//!   [`Reply`].
//! - [`Registration`] (client metadata), [`Credentials`] (what a
//!   registration returns) and [`Form`] (token endpoint requests:
//!   client credentials, token exchange, refresh) are plain values, so
//!   in-process tests that call `App::handle` without a socket build the
//!   same bodies from them.
//! - [`ManualClock`], the service's fixed clock, for in-process tests
//!   that move time.
//!
//! Failures are this crate's [`Error`], not panics, so the benchmark can
//! report them; tests `expect` them. The exceptions are documented
//! assertions ([`Reply::assert_error`], [`jwt_parts`]), which exist to
//! fail a test. No `anyhow` here: that stays in binaries.

mod client;
mod error;
mod reply;
mod server;

pub use agentauth_service::{Clock, ManualClock};
pub use client::{ACCESS_TOKEN_TYPE, Credentials, Form, Registration, TOKEN_EXCHANGE, jwt_parts, realm_path};
pub use error::{Error, ErrorKind};
pub use reply::Reply;
pub use server::{Server, ServerBuilder};
