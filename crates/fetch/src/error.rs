//! Why a fetch failed, in words safe to log and to show an administrator.
//!
//! Messages name what was refused (a scheme, an address, a status) and
//! never carry what a remote server chose to send: a header value, a body,
//! or a certificate's names, which an attacker controls, are left out or
//! reduced to printable ASCII of bounded length.

use std::fmt;
use std::net::IpAddr;

/// A fetch that did not produce a document.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL does not parse, or has what a document URL must not:
    /// credentials, a fragment, a scheme other than `http(s)`, port 0, or
    /// more than [`MAX_URL_LEN`](crate::MAX_URL_LEN) bytes.
    InvalidUrl(&'static str),
    /// The URL is `http:` (or a redirect leads to one) and plain HTTP is
    /// not allowed there: only to loopback, and only with
    /// [`FetchPolicy::allow_loopback_http`](crate::FetchPolicy::allow_loopback_http).
    NotHttps,
    /// The host is, or resolves to, an address the server must not
    /// connect to (loopback, private, link-local, ...). Refused before any
    /// connection is opened.
    RefusedAddress { host: String, addr: IpAddr },
    /// The host's name did not resolve.
    Resolve { host: String },
    /// No connection could be opened to any of the host's addresses.
    Connect { host: String },
    /// The TLS handshake failed: most often a certificate that does not
    /// verify against the bundled roots or does not name the host.
    Tls(String),
    /// The fetch, or the wait for another caller's fetch of the same URL,
    /// exceeded [`FetchPolicy::timeout`](crate::FetchPolicy::timeout).
    TimedOut,
    /// The body is longer than [`Limits::max_bytes`](crate::Limits::max_bytes).
    TooLarge { limit: usize },
    /// The final response's status was not `200 OK`.
    Status(u16),
    /// The server redirected, and the caller forbids redirects
    /// ([`Limits::follow_redirects`](crate::Limits::follow_redirects)).
    RedirectNotAllowed,
    /// More redirects than [`FetchPolicy::max_redirects`](crate::FetchPolicy::max_redirects).
    TooManyRedirects,
    /// A redirect without a usable `Location`.
    BadRedirect,
    /// The `Content-Type` is not `application/json` or `application/*+json`.
    NotJsonContentType,
    /// The body is not JSON.
    NotJson,
    /// The body is JSON but not an object.
    NotObject,
    /// The response broke HTTP/1.1, or the connection failed mid-way.
    Http(String),
    /// Too many fetches are in flight already; try again later. Never
    /// cached.
    Busy,
}

impl FetchError {
    /// Whether this failure says something about the URL worth
    /// remembering for a while (negative caching): all but [`Self::Busy`],
    /// which says something about this server. (A caller's invalid URL is
    /// refused before the cache is consulted; one met in a redirect is
    /// the URL's own failure, and is remembered.)
    pub(crate) fn is_cacheable(&self) -> bool {
        !matches!(self, Self::Busy)
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            Self::NotHttps => f.write_str("not https"),
            Self::RefusedAddress { host, addr } => write!(f, "refused address {addr} for host {host}"),
            Self::Resolve { host } => write!(f, "could not resolve host {host}"),
            Self::Connect { host } => write!(f, "could not connect to host {host}"),
            Self::Tls(why) => write!(f, "TLS failure: {why}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::TooLarge { limit } => write!(f, "too large: over {limit} bytes"),
            Self::Status(status) => write!(f, "status {status}"),
            Self::RedirectNotAllowed => f.write_str("redirect not allowed"),
            Self::TooManyRedirects => f.write_str("too many redirects"),
            Self::BadRedirect => f.write_str("redirect without a valid location"),
            Self::NotJsonContentType => f.write_str("not JSON: content type"),
            Self::NotJson => f.write_str("not JSON"),
            Self::NotObject => f.write_str("not a JSON object"),
            Self::Http(why) => write!(f, "HTTP failure: {why}"),
            Self::Busy => f.write_str("busy"),
        }
    }
}

impl std::error::Error for FetchError {}

/// A foreign message (from the TLS library, the HTTP parser, the OS) made
/// safe to log: printable ASCII only, at most 200 bytes. Some of these
/// quote what the peer sent, such as the names in its certificate.
pub(crate) fn sanitize(message: &str) -> String {
    const MAX: usize = 200;
    let mut out: String =
        message.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(MAX).collect();
    if message.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_refused() {
        let refused = FetchError::RefusedAddress { host: "x".into(), addr: "10.0.0.1".parse().unwrap() };
        assert_eq!(refused.to_string(), "refused address 10.0.0.1 for host x");
        assert_eq!(FetchError::NotHttps.to_string(), "not https");
        assert_eq!(FetchError::Status(404).to_string(), "status 404");
        assert_eq!(FetchError::TooLarge { limit: 10 }.to_string(), "too large: over 10 bytes");
    }

    #[test]
    fn foreign_messages_lose_control_characters_and_length() {
        assert_eq!(sanitize("bad\r\nname\u{1b}[31m é"), "bad??name?[31m ?");
        let long = "a".repeat(1_000);
        assert_eq!(sanitize(&long).len(), 203);
    }
}
