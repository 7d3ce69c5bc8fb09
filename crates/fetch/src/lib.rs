//! Fetching JSON documents from URLs that others choose, without letting
//! them aim the server at anything but the public internet.
//!
//! The server fetches trusted issuers' OpenID discovery documents and
//! their `jwks_uri` (URLs a realm administrator sets) and OAuth Client ID
//! Metadata Documents, whose URL *is* the `client_id` that whoever calls
//! the authorization endpoint sends: an unauthenticated attacker chooses
//! it. The threat is server-side request forgery, and the fetcher is built
//! against each way of it:
//!
//! - **Aiming at the inside.** A URL naming `127.0.0.1`, `10.0.0.1`, the
//!   cloud metadata service `169.254.169.254`, `[::1]`, or one of these in
//!   another form (`[::ffff:127.0.0.1]`, `0x7f.1`) is refused before any
//!   connection, and so is a name that resolves to such an address, even
//!   one of several. The rules are in [`is_public`]. Only `https` is
//!   fetched.
//! - **DNS rebinding.** A name that resolves to a public address when
//!   checked and a private one when connecting: the fetcher resolves each
//!   host once, through a [`Resolve`] it is given, checks every address,
//!   and the HTTP client connects to exactly those, never resolving again.
//! - **Redirects.** A public URL that redirects inward: the HTTP client
//!   follows none; the fetcher follows at most
//!   [`FetchPolicy::max_redirects`], checking scheme and addresses again
//!   for each, and a caller may forbid them ([`Limits::follow_redirects`]:
//!   a client metadata document is at its URL or nowhere).
//! - **Exhausting the server.** A server that answers slowly, never stops
//!   sending, or sends a huge body: every fetch has one time bound
//!   (resolution, connection, TLS, headers and body together), the body a
//!   byte bound past which reading stops, and at most
//!   [`FetchPolicy::max_in_flight`] fetches run at once, past which callers
//!   get [`FetchError::Busy`] at once rather than tie up worker threads.
//!   Two callers of one URL share one fetch, and results, failures
//!   included, are cached, so asking for a URL again and again fetches it
//!   at most once in a while (see `cache.rs`).
//!
//! Everything is blocking, for the service's worker threads. For
//! development, [`FetchPolicy::allow_loopback_http`] admits loopback
//! addresses, over `http` or `https`, and no other private range.
//!
//! The HTTP client is ureq with rustls on ring and Mozilla's roots
//! (webpki-roots): no system certificate store, proxy setting or
//! compression is used. This crate depends on no other agentauth crate.
//!
//! ```no_run
//! use agentauth_fetch::{FetchPolicy, Fetcher, Limits};
//!
//! let fetcher = Fetcher::new(FetchPolicy::default());
//! let jwks = fetcher.get_json("https://issuer.example/jwks.json", &Limits::default())?;
//! let keys = jwks.json.get("keys");
//! # Ok::<_, agentauth_fetch::FetchError>(())
//! ```

mod address;
mod cache;
mod clock;
mod error;
mod fetcher;
mod http;
mod resolve;
mod target;

#[cfg(test)]
mod https_tests;
#[cfg(test)]
#[path = "../tests/fetch/server.rs"]
mod test_server;

use std::time::Duration;

pub use address::{is_loopback, is_public};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::FetchError;
pub use fetcher::Fetcher;
pub use resolve::{Resolve, StaticResolver, SystemResolver};
pub use target::MAX_URL_LEN;

/// What a [`Fetcher`] allows, for every fetch it makes.
///
/// Start from [`FetchPolicy::default`] and change what differs:
/// `FetchPolicy { timeout: Duration::from_secs(2), ..FetchPolicy::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Development only: allow loopback addresses (127.0.0.0/8, `::1`,
    /// names resolving only to them, such as `localhost`), over plain
    /// HTTP as well as HTTPS. No other private address is ever allowed.
    /// Default false.
    pub allow_loopback_http: bool,
    /// The bound on one fetch, from the call to the last byte of the body,
    /// redirects included; also the longest a caller waits for another's
    /// fetch of the same URL. Default 5 s.
    pub timeout: Duration,
    /// The most redirects followed in one fetch. Default 3.
    pub max_redirects: u8,
    /// The most fetches in flight at once; past it, [`FetchError::Busy`].
    /// Default 16.
    pub max_in_flight: usize,
    /// The most fetches in flight at once on behalf of one owner (a
    /// tenant: see [`Fetcher::get_json_for`]), so that one owner's slow
    /// URLs cannot take every slot; past it, [`FetchError::Busy`] for that
    /// owner only. Default 4.
    pub max_in_flight_per_owner: usize,
    /// The most URLs remembered, documents and failures together.
    /// Default 1024.
    pub max_cache_entries: usize,
    /// The shortest a document is cached, whatever its `Cache-Control`
    /// says. Default 60 s.
    pub min_ttl: Duration,
    /// The longest a document is cached. Default 24 h.
    pub max_ttl: Duration,
    /// How long a document without `max-age` is cached. Default 5 min.
    pub default_ttl: Duration,
    /// How long a failure is remembered. Default 30 s.
    pub negative_ttl: Duration,
    /// The shortest time between two fetches of a URL by
    /// [`Fetcher::refresh`]. Default 30 s.
    pub refresh_interval: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_loopback_http: false,
            timeout: Duration::from_secs(5),
            max_redirects: 3,
            max_in_flight: 16,
            max_in_flight_per_owner: 4,
            max_cache_entries: 1024,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(5 * 60),
            negative_ttl: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(30),
        }
    }
}

/// What one caller accepts of a document. Part of the cache key: a
/// document fetched under looser limits is not served under stricter ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// The longest body read, in bytes; one byte more fails the fetch.
    pub max_bytes: usize,
    /// Whether redirects are followed (up to the policy's bound).
    pub follow_redirects: bool,
    /// Whether the `Content-Type` must be `application/json` or
    /// `application/*+json`.
    pub require_json_content_type: bool,
}

impl Limits {
    /// Discovery documents and JWKS: 256 KiB, redirects followed, a JSON
    /// content type required. The default.
    pub const DOCUMENT: Self = Self { max_bytes: 256 * 1024, follow_redirects: true, require_json_content_type: true };

    /// Client ID Metadata Documents: 5 KiB (the size the specification
    /// suggests servers limit them to), no redirects (the `client_id` URL
    /// is the document's address), a JSON content type required.
    pub const CLIENT_METADATA: Self =
        Self { max_bytes: 5 * 1024, follow_redirects: false, require_json_content_type: true };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DOCUMENT
    }
}

/// A fetched JSON object, shared by everyone who asks for its URL until it
/// expires.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The URL asked for, as parsed and written back (`https://Issuer.Example`
    /// is `https://issuer.example/`); after redirects, still the first one.
    pub url: String,
    /// The body: always a JSON object.
    pub json: serde_json::Map<String, serde_json::Value>,
    /// When it was fetched, in seconds since the Unix epoch (the fetcher's
    /// [`Clock`]).
    pub fetched_at: i64,
    /// When the cache stops serving it.
    pub expires_at: i64,
}
