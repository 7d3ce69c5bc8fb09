//! One HTTP exchange with ureq, pinned to addresses already checked.
//!
//! Each exchange gets an agent of its own whose resolver knows one host
//! and port and answers only the addresses `target::admit` checked: ureq
//! never resolves a name itself, so it connects to nothing else, whatever
//! the URL says. The agent follows no redirect (the fetcher does, checking
//! each), reads no proxy from the environment, asks for no compression
//! and keeps no connection for later. The TLS connector, and with it the
//! rustls configuration (ring, Mozilla's roots), is shared by every agent
//! and built once.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{ConnectionDetails, Connector, NextTimeout, RustlsConnector, TcpConnector};

use crate::cache::Fetched;
use crate::error::sanitize;
use crate::target::Target;
use crate::{FetchError, Limits};

/// What one exchange sends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Send<'a> {
    Get,
    /// A form (`application/x-www-form-urlencoded`), with an
    /// `Authorization` header if given: a token endpoint's request.
    PostForm {
        body: &'a str,
        authorization: Option<&'a str>,
    },
    /// A Security Event Token (`application/secevent+jwt`, RFC 8935 §2):
    /// any `2xx` is its acknowledgement, and what comes back is not read.
    PostSet {
        body: &'a str,
    },
}

/// Whether an exchange expects a document back or only an acknowledgement.
#[derive(Clone, Copy)]
enum SendKind {
    Document,
    Set,
}

/// What one exchange came to.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A `200` with a JSON object.
    Document(Fetched),
    /// A redirect, to this `Location` (not yet resolved against the URL).
    Redirect(String),
    /// A `2xx` to a [`Send::PostSet`].
    Accepted,
}

/// The connectors every agent shares: TCP, then rustls for `https`.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    connector: Arc<Chain>,
    #[cfg(test)]
    roots: Option<ureq::tls::RootCerts>,
    /// Tests only: the address every connection goes to, in place of the
    /// checked ones, standing in for a public host. What is checked is
    /// unchanged (the URL's host, what it resolves to); only where the
    /// socket connects differs, so the production policy can be tested
    /// against a server that can only be on loopback.
    #[cfg(test)]
    stand_in: Option<SocketAddr>,
}

type Chain = ureq::unversioned::transport::ChainedConnector<
    (),
    ureq::unversioned::transport::ChainedConnector<(), (), TcpConnector>,
    RustlsConnector,
>;

impl Client {
    pub fn new() -> Self {
        Self {
            connector: Arc::new(().chain(TcpConnector::default()).chain(RustlsConnector::default())),
            #[cfg(test)]
            roots: None,
            #[cfg(test)]
            stand_in: None,
        }
    }

    /// A client trusting only `roots`, for tests that serve HTTPS.
    #[cfg(test)]
    pub fn trusting(roots: ureq::tls::RootCerts) -> Self {
        Self { roots: Some(roots), ..Self::new() }
    }

    /// This client, connecting to `addr` whatever admitted addresses it
    /// is given (see the `stand_in` field).
    #[cfg(test)]
    pub fn standing_in(self, addr: SocketAddr) -> Self {
        Self { stand_in: Some(addr), ..self }
    }

    /// GETs `target` from `addrs`, finishing by `deadline`.
    pub fn exchange(
        &self,
        target: &Target,
        addrs: &[IpAddr],
        deadline: Instant,
        limits: &Limits,
        send: Send<'_>,
    ) -> Result<Answer, FetchError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(FetchError::TimedOut);
        }
        let builder = Config::builder()
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .https_only(target.https)
            .timeout_global(Some(remaining))
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .max_response_header_size(16 * 1024)
            .user_agent("agentauth")
            .accept("application/json");
        #[cfg(test)]
        let builder = match &self.roots {
            Some(roots) => builder.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots.clone()).build()),
            None => builder,
        };
        let addrs: Vec<SocketAddr> = addrs.iter().map(|&ip| SocketAddr::new(ip, target.port)).collect();
        #[cfg(test)]
        let addrs = self.stand_in.map_or(addrs, |stand_in| vec![stand_in]);
        let pinned = Pinned { host: target.host.clone(), port: target.port, addrs };
        let agent = ureq::Agent::with_parts(builder.build(), Shared(Arc::clone(&self.connector)), pinned);

        let send_kind = if matches!(send, Send::PostSet { .. }) { SendKind::Set } else { SendKind::Document };
        let sent = match send {
            Send::Get => agent.get(target.url.as_str()).call(),
            Send::PostForm { body, authorization } => {
                let request =
                    agent.post(target.url.as_str()).header("content-type", "application/x-www-form-urlencoded");
                match authorization {
                    Some(value) => request.header("authorization", value).send(body),
                    None => request.send(body),
                }
            }
            Send::PostSet { body } => {
                agent.post(target.url.as_str()).header("content-type", "application/secevent+jwt").send(body)
            }
        };
        let mut response = sent.map_err(|e| failure(e, target, limits))?;
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = response.headers().get("location").and_then(|v| v.to_str().ok());
            return location.map(|l| Answer::Redirect(l.to_owned())).ok_or(FetchError::BadRedirect);
        }
        if matches!(send_kind, SendKind::Set) {
            return if (200..300).contains(&status) { Ok(Answer::Accepted) } else { Err(FetchError::Status(status)) };
        }
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        if limits.require_json_content_type {
            let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok());
            if !content_type.is_some_and(is_json) {
                return Err(FetchError::NotJsonContentType);
            }
        }
        let cache_control = response
            .headers()
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let body = read_body(response.body_mut(), deadline, limits, target)?;
        let json = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(FetchError::NotObject),
            Err(_) => return Err(FetchError::NotJson),
        };
        Ok(Answer::Document(Fetched { json, cache_control }))
    }
}

/// Reads at most `limits.max_bytes` of the body, failing as soon as there
/// is one byte more (or a `Content-Length` says there will be): the rest
/// is never read, and the connection is dropped with it.
fn read_body(
    body: &mut ureq::Body,
    deadline: Instant,
    limits: &Limits,
    target: &Target,
) -> Result<Vec<u8>, FetchError> {
    let max = limits.max_bytes;
    let too_large = FetchError::TooLarge { limit: max };
    let declared = body.content_length();
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large);
    }
    let capacity = declared.map_or(8 * 1024, |len| len as usize).min(max);
    let mut out = Vec::with_capacity(capacity);
    let mut reader = body.as_reader();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failure(ureq::Error::from(e), target, limits)),
        };
        if out.len() + n > max {
            return Err(too_large);
        }
        out.extend_from_slice(&chunk[..n]);
        if Instant::now() >= deadline {
            return Err(FetchError::TimedOut);
        }
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or
/// `application/<anything>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else {
        return false;
    };
    subtype == "json" || (subtype.len() > "+json".len() && subtype.ends_with("+json") && !subtype.contains('/'))
}

/// A ureq error as the fetcher reports it.
fn failure(error: ureq::Error, target: &Target, limits: &Limits) -> FetchError {
    use std::io::ErrorKind;
    match error {
        ureq::Error::Timeout(_) => FetchError::TimedOut,
        ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge { limit: limits.max_bytes },
        ureq::Error::HostNotFound => FetchError::Resolve { host: target.host.clone() },
        ureq::Error::ConnectionFailed => FetchError::Connect { host: target.host.clone() },
        ureq::Error::BadUri(_) => FetchError::InvalidUrl("not accepted by the HTTP client"),
        ureq::Error::Tls(why) => FetchError::Tls(sanitize(why)),
        ureq::Error::Rustls(e) => FetchError::Tls(sanitize(&e.to_string())),
        ureq::Error::TlsRequired => FetchError::Tls("TLS required".into()),
        ureq::Error::Io(e) => match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => FetchError::TimedOut,
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable => FetchError::Connect { host: target.host.clone() },
            // rustls reports a failed handshake (a certificate that does
            // not verify, an alert) as invalid data.
            ErrorKind::InvalidData if target.https => FetchError::Tls(sanitize(&e.to_string())),
            _ => FetchError::Http(sanitize(&e.to_string())),
        },
        other => FetchError::Http(sanitize(&other.to_string())),
    }
}

/// Answers the one host and port of an exchange with the addresses
/// checked for it, and refuses any other.
#[derive(Debug)]
struct Pinned {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
}

impl Resolver for Pinned {
    fn resolve(&self, uri: &Uri, _config: &Config, _timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let default_port = match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        };
        let same_host = uri.host().is_some_and(|h| h.eq_ignore_ascii_case(&self.host));
        let same_port = uri.port_u16().or(default_port) == Some(self.port);
        if !(same_host && same_port) {
            return Err(ureq::Error::HostNotFound);
        }
        let mut out = self.empty();
        for &addr in &self.addrs {
            // ureq keeps 16 addresses; every one was checked, so any 16 do.
            if out.try_push(addr).is_err() {
                break;
            }
        }
        if out.is_empty() { Err(ureq::Error::HostNotFound) } else { Ok(out) }
    }
}

/// The shared connector chain, handed to each agent.
#[derive(Debug)]
struct Shared(Arc<Chain>);

impl Connector<()> for Shared {
    type Out = <Chain as Connector<()>>::Out;

    fn connect(&self, details: &ConnectionDetails, chained: Option<()>) -> Result<Option<Self::Out>, ureq::Error> {
        self.0.connect(details, chained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(pinned: &Pinned, uri: &str) -> Result<Vec<SocketAddr>, ureq::Error> {
        pinned.resolve(&uri.parse().unwrap(), &Config::default(), NextTimeout::default()).map(|a| a.to_vec())
    }

    #[test]
    fn the_pinned_resolver_answers_only_its_host_and_port() {
        let v6 = Pinned { host: "[::1]".into(), port: 8443, addrs: vec!["[::1]:8443".parse().unwrap()] };
        assert_eq!(ask(&v6, "https://[::1]:8443/x").unwrap(), v6.addrs);
        assert!(ask(&v6, "https://[::1]/x").is_err());
        assert!(ask(&v6, "https://[::2]:8443/x").is_err());
        let named =
            Pinned { host: "issuer.example".into(), port: 443, addrs: vec!["93.184.216.34:443".parse().unwrap()] };
        assert_eq!(ask(&named, "https://Issuer.Example/jwks").unwrap(), named.addrs);
        assert!(ask(&named, "http://issuer.example/jwks").is_err());
        assert!(ask(&named, "https://evil.example/jwks").is_err());
        assert!(ask(&named, "https://issuer.example.evil.example/").is_err());
    }

    #[test]
    fn json_content_types_are_json_with_or_without_parameters() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/jwk-set+json",
            "application/problem+json;charset=UTF-8",
            " application/json ",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for not in
            ["text/json", "text/html", "application/jsonx", "application/+json", "application/x-json", "", "json"]
        {
            assert!(!is_json(not), "{not}");
        }
    }
}
