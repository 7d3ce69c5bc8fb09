//! What a URL must be, and where it may lead, before a connection opens.
//!
//! Every URL the fetcher would request, the caller's and each redirect's,
//! passes here twice: once as text (scheme, credentials, fragment, port)
//! and once as addresses, after the fetcher resolved its host. A URL is
//! parsed once, by the WHATWG parser of the `url` crate, and from then on
//! only that parse counts: the HTTP client is handed the URL as that
//! parser wrote it back, and may reach only the addresses checked here
//! (see `http.rs`), so two parsers that read a URL differently cannot
//! lead to different hosts.

use std::net::IpAddr;
use std::time::Duration;

use url::{Host, Url};

use crate::FetchError;
use crate::address::{is_loopback, is_public};
use crate::resolve::Resolve;

/// The longest URL fetched, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// A URL that passed the checks on its text.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub url: Url,
    /// The host as the URL writes it: a lowercase name, an IPv4 address,
    /// or an IPv6 address in brackets.
    pub host: String,
    pub port: u16,
    pub https: bool,
}

/// Parses a caller's URL and checks its text.
pub(crate) fn parse(input: &str) -> Result<Target, FetchError> {
    if input.len() > MAX_URL_LEN {
        return Err(FetchError::InvalidUrl("too long"));
    }
    let url = Url::parse(input).map_err(|_| FetchError::InvalidUrl("does not parse"))?;
    check(url)
}

/// Checks a parsed URL's text: `http` or `https`, a host, no credentials,
/// no fragment, not port 0.
pub(crate) fn check(url: Url) -> Result<Target, FetchError> {
    if url.as_str().len() > MAX_URL_LEN {
        return Err(FetchError::InvalidUrl("too long"));
    }
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(FetchError::InvalidUrl("scheme is not https")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::InvalidUrl("has credentials"));
    }
    if url.fragment().is_some() {
        return Err(FetchError::InvalidUrl("has a fragment"));
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or(FetchError::InvalidUrl("has no host"))?.to_owned();
    let port = url.port_or_known_default().ok_or(FetchError::InvalidUrl("has no port"))?;
    if port == 0 {
        return Err(FetchError::InvalidUrl("port 0"));
    }
    Ok(Target { url, host, port, https })
}

/// Resolves the target's host and checks every address: each must be
/// public, or loopback when `allow_loopback_http` (the development
/// setting) is on; plain HTTP needs that setting and loopback addresses
/// only. Returns the addresses the connection may use, and no others.
pub(crate) fn admit(
    target: &Target,
    allow_loopback_http: bool,
    resolver: &dyn Resolve,
    timeout: Duration,
) -> Result<Vec<IpAddr>, FetchError> {
    // Plain HTTP is refused before anything is looked up when it could
    // never be allowed.
    if !target.https && !allow_loopback_http {
        return Err(FetchError::NotHttps);
    }
    let addrs = match target.url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(name)) => resolve(resolver, name, timeout)?,
        None => return Err(FetchError::InvalidUrl("has no host")),
    };
    for &addr in &addrs {
        if !(is_public(addr) || (allow_loopback_http && is_loopback(addr))) {
            return Err(FetchError::RefusedAddress { host: target.host.clone(), addr });
        }
    }
    if !target.https && !addrs.iter().all(|&a| is_loopback(a)) {
        return Err(FetchError::NotHttps);
    }
    Ok(addrs)
}

fn resolve(resolver: &dyn Resolve, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, FetchError> {
    match resolver.resolve(name, timeout) {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err(FetchError::Resolve { host: name.to_owned() }),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::TimedOut => FetchError::TimedOut,
            std::io::ErrorKind::ResourceBusy => FetchError::Busy,
            _ => FetchError::Resolve { host: name.to_owned() },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;

    const T: Duration = Duration::from_secs(1);

    fn refusal(input: &str) -> &'static str {
        match parse(input) {
            Err(FetchError::InvalidUrl(why)) => why,
            other => panic!("{input}: {other:?}"),
        }
    }

    #[test]
    fn urls_with_credentials_fragments_or_other_schemes_are_refused() {
        assert_eq!(refusal("https://user:pw@issuer.example/"), "has credentials");
        assert_eq!(refusal("https://user@issuer.example/"), "has credentials");
        assert_eq!(refusal("https://issuer.example/#frag"), "has a fragment");
        assert_eq!(refusal("ftp://issuer.example/"), "scheme is not https");
        assert_eq!(refusal("file:///etc/passwd"), "scheme is not https");
        assert_eq!(refusal("https://issuer.example:0/"), "port 0");
        assert_eq!(refusal("not a url"), "does not parse");
        assert_eq!(refusal(&format!("https://issuer.example/{}", "a".repeat(MAX_URL_LEN))), "too long");
    }

    #[test]
    fn hosts_are_read_as_a_browser_reads_them() {
        // Hex, octal and short forms of 127.0.0.1 are IPv4 addresses, not names.
        for input in ["https://0x7f.1/", "https://0177.0.0.1/", "https://2130706433/", "https://%31%32%37.0.0.1/"] {
            let target = parse(input).unwrap();
            assert_eq!(target.host, "127.0.0.1", "{input}");
            let err = admit(&target, false, &StaticResolver::new(), T).unwrap_err();
            assert!(matches!(err, FetchError::RefusedAddress { .. }), "{input}: {err:?}");
        }
        let target = parse("https://ISSUER.Example:8443/x?y=1").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.https), ("issuer.example", 8443, true));
    }

    #[test]
    fn every_resolved_address_must_be_public() {
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        let resolver = StaticResolver::new().with("ok.example", &[public]).with("mixed.example", &[public, private]);
        let ok = parse("https://ok.example/").unwrap();
        assert_eq!(admit(&ok, false, &resolver, T).unwrap(), vec![public]);
        let mixed = parse("https://mixed.example/").unwrap();
        assert_eq!(
            admit(&mixed, false, &resolver, T).unwrap_err(),
            FetchError::RefusedAddress { host: "mixed.example".into(), addr: private }
        );
        let unknown = parse("https://unknown.example/").unwrap();
        assert_eq!(
            admit(&unknown, false, &resolver, T).unwrap_err(),
            FetchError::Resolve { host: "unknown.example".into() }
        );
    }

    #[test]
    fn plain_http_needs_the_development_setting_and_loopback_only() {
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let resolver = StaticResolver::new()
            .with("localhost", &["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
            .with("public.example", &[public]);
        for input in ["http://127.0.0.1/", "http://localhost/", "http://[::1]/", "http://public.example/"] {
            assert_eq!(
                admit(&parse(input).unwrap(), false, &resolver, T).unwrap_err(),
                FetchError::NotHttps,
                "{input}"
            );
        }
        for input in ["http://127.0.0.1/", "http://127.9.9.9/", "http://localhost/", "http://[::1]/"] {
            assert!(admit(&parse(input).unwrap(), true, &resolver, T).is_ok(), "{input}");
        }
        assert_eq!(
            admit(&parse("http://public.example/").unwrap(), true, &resolver, T).unwrap_err(),
            FetchError::NotHttps
        );
        // The setting admits loopback, and no other private range.
        for input in ["http://10.0.0.1/", "https://10.0.0.1/", "http://169.254.169.254/", "https://[fd00::1]/"] {
            let err = admit(&parse(input).unwrap(), true, &resolver, T).unwrap_err();
            assert!(matches!(err, FetchError::RefusedAddress { .. }), "{input}: {err:?}");
        }
        assert!(admit(&parse("https://127.0.0.1/").unwrap(), true, &resolver, T).is_ok());
        assert!(admit(&parse("https://public.example/").unwrap(), true, &resolver, T).is_ok());
    }
}
