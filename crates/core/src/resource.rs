//! Resource indicators (RFC 8707): the protected resources a token is
//! for, which become its `aud`.
//!
//! A client names them with `resource`, repeatable, on any grant. Each
//! must be an absolute URI (RFC 3986 §4.3) without a fragment (RFC 8707
//! §2), and allowed to the client: by one of the realm's rules (its
//! `allowed_resources` setting), or by the client's `allowedAudiences`
//! attribute, which only the realm's DCR policy sets. What a client
//! registers itself never widens what it may ask for. Anything else is
//! `invalid_target`, the code RFC 8707 §2 gives a resource that is
//! "invalid, missing, unknown, or malformed".
//!
//! A realm's rules are of two kinds:
//! - an exact URI, compared as a string: RFC 8707 defines no
//!   normalisation, and a resource server compares `aud` with its own
//!   identifier as a string too, so a URI that differs only in case or
//!   by a default port is another resource;
//! - a prefix, written as a URI whose last path segment is `*`:
//!   `https://api.example/tenants/*` allows every URI below
//!   `https://api.example/tenants/` (not that URI itself: list it
//!   exactly). Only `http` and `https` URIs make prefixes, and a prefix
//!   matches only a URI written as the WHATWG URL parser writes it
//!   (lower-case scheme and host, no default port, no dot segments, no
//!   user information, no query, no empty segment) with no encoded `/`,
//!   `\` or `.` in its path. The string prefix then ends on a path-segment
//!   boundary after the very scheme, host and port the rule names, and
//!   no parser reads the URI as another host (`https://api.example.evil/`)
//!   or a path outside the prefix (`.../tenants/../admin`). A host
//!   wildcard is not offered: one rule would then cover servers the realm
//!   does not run.
//!
//! A realm that lists no rules allows no resource, except those a
//! client's `allowedAudiences` lists: failing closed, since a token for
//! a resource nobody vouched for is exactly what RFC 8707 exists to
//! prevent. Without `resource`, a grant's audience is what it was before
//! (the client itself).
//!
//! The grants use two functions. [`resolve`] checks what a request asks
//! for against what is allowed now: client credentials, token exchange,
//! and the authorization request of the code grant. [`narrow`] checks a
//! later request against what an earlier one granted (a refresh, the
//! redemption of a code), which it may narrow but never widen (RFC 8707
//! §2.2).

use std::borrow::Cow;

use crate::client::{Client, MAX_AUDIENCE, MAX_AUDIENCES};
use crate::error::{ErrorCode, OAuthError};

/// Longest resource a request may name, in bytes: as long as an audience
/// a client may be allowed.
pub const MAX_RESOURCE: usize = MAX_AUDIENCE;
/// Most resources (and, for an exchange, audiences) one request may name:
/// as many as a client may be allowed, and few enough that a token
/// naming them all stays well within the size of a token this server
/// accepts back.
pub const MAX_RESOURCES: usize = MAX_AUDIENCES;
/// Most rules a realm's `allowed_resources` may hold.
pub const MAX_RULES: usize = 64;

/// `invalid_target` with `why`.
pub(crate) fn invalid_target(why: impl Into<Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidTarget, why)
}

/// Checks one `resource` value (RFC 8707 §2): an absolute URI, without a
/// fragment, of at most [`MAX_RESOURCE`] bytes; `invalid_target` with
/// what is wrong otherwise.
pub fn check_resource(value: &str) -> Result<(), OAuthError> {
    syntax(value).map_err(|why| invalid_target(format!("resource {:?} {why}", shown(value))))
}

/// The client may have tokens for `resource`: a rule of the realm allows
/// it, or the client's `allowedAudiences` lists it. `resource` must have
/// passed [`check_resource`].
pub fn is_allowed(resource: &str, rules: &ResourceRules, client: &Client) -> bool {
    rules.allows(resource) || client.attributes.allowed_audiences.iter().any(|a| a == resource)
}

/// The audience for the resources a request names: each checked
/// ([`check_resource`]) and allowed to the client ([`is_allowed`]), in
/// the order asked, repeats collapsed. Empty when none was named, and the
/// grant's default audience applies.
pub fn resolve(requested: &[String], rules: &ResourceRules, client: &Client) -> Result<Vec<String>, OAuthError> {
    bounded(requested)?;
    let mut audience: Vec<String> = Vec::with_capacity(requested.len());
    for resource in requested {
        check_resource(resource)?;
        if !is_allowed(resource, rules, client) {
            return Err(invalid_target(format!("the client may not request tokens for {:?}", shown(resource))));
        }
        if !audience.contains(resource) {
            audience.push(resource.clone());
        }
    }
    Ok(audience)
}

/// The audience for a request made under an earlier grant of `granted`:
/// all of it when no resource is named, else the resources named, each of
/// which must be one of `granted` (RFC 8707 §2.2: a refresh may ask for
/// a token for fewer resources, never for more).
pub fn narrow(requested: &[String], granted: &[String]) -> Result<Vec<String>, OAuthError> {
    if requested.is_empty() {
        return Ok(granted.to_vec());
    }
    bounded(requested)?;
    let mut audience: Vec<String> = Vec::with_capacity(requested.len());
    for resource in requested {
        check_resource(resource)?;
        if !granted.contains(resource) {
            return Err(invalid_target(format!(
                "{:?} is not a resource this grant was given; it may be narrowed, never widened",
                shown(resource)
            )));
        }
        if !audience.contains(resource) {
            audience.push(resource.clone());
        }
    }
    Ok(audience)
}

/// At most [`MAX_RESOURCES`] resources.
fn bounded(requested: &[String]) -> Result<(), OAuthError> {
    if requested.len() > MAX_RESOURCES {
        return Err(invalid_target(format!("a request may name at most {MAX_RESOURCES} resources")));
    }
    Ok(())
}

/// A realm's allowed resources, parsed from its `allowed_resources`
/// setting: exact URIs and prefixes (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceRules {
    exact: Vec<String>,
    /// Each ends with `/`: the rule's URI without its final `*`.
    prefixes: Vec<String>,
}

impl ResourceRules {
    /// Parses the setting's entries; the refusal names the entry and what
    /// is wrong with it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        if entries.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} entries"));
        }
        let mut rules = Self::default();
        for entry in entries {
            let entry = entry.as_ref();
            let refused = |why: &str| format!("{:?} {why}", shown(entry));
            match entry.strip_suffix('*') {
                Some(base) => {
                    if base.contains('*') || !base.ends_with('/') {
                        return Err(refused("may use '*' only as its whole last path segment"));
                    }
                    syntax(base).map_err(refused)?;
                    if !is_plain(base) {
                        return Err(refused(
                            "is not a prefix this server can match safely: use an http or https URI with a host, \
                             written as browsers write it (lower case, no default port, no user information, \
                             query, dot segments, empty segments or encoded '/', '\\' or '.')",
                        ));
                    }
                    rules.prefixes.push(base.to_string());
                }
                None if entry.contains('*') => {
                    return Err(refused("may use '*' only as its whole last path segment"));
                }
                None => {
                    syntax(entry).map_err(refused)?;
                    rules.exact.push(entry.to_string());
                }
            }
        }
        Ok(rules)
    }

    /// True when no resource is allowed by the realm.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// A rule allows `resource`: an exact URI equal to it, or a prefix it
    /// lies below, written in the form a prefix can match safely.
    pub fn allows(&self, resource: &str) -> bool {
        let below_a_prefix = || {
            self.prefixes.iter().any(|base| resource.strip_prefix(base.as_str()).is_some_and(|rest| !rest.is_empty()))
                && is_plain(resource)
        };
        self.exact.iter().any(|uri| uri == resource) || below_a_prefix()
    }
}

/// Why `value` is not an absolute URI without a fragment, if it is not:
/// a scheme (a letter, then letters, digits, `+`, `-` and `.`), `:`, and
/// something after it, in the characters RFC 3986 allows, with
/// well-formed percent-encodings. An `http` or `https` URI must name a
/// host (`//` and an authority), which any resource server has.
fn syntax(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > MAX_RESOURCE {
        return Err("must be an absolute URI of at most 256 bytes");
    }
    if value.contains('#') {
        return Err("must not contain a fragment");
    }
    let bytes = value.as_bytes();
    if !bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=%".contains(&b)) {
        return Err("must contain only the characters of a URI (no spaces, quotes, backslashes or non-ASCII)");
    }
    let percents_well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !percents_well_formed {
        return Err("has a malformed percent-encoding");
    }
    let Some((scheme, rest)) = value.split_once(':') else {
        return Err("must be an absolute URI, starting with a scheme");
    };
    let scheme_well_formed = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_well_formed {
        return Err("must be an absolute URI, starting with a scheme");
    }
    if rest.is_empty() {
        return Err("must name something after its scheme");
    }
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") {
        let authority = rest.strip_prefix("//").map(|r| &r[..r.find(['/', '?']).unwrap_or(r.len())]);
        if authority.is_none_or(str::is_empty) {
            return Err("must name a host");
        }
    }
    Ok(())
}

/// `uri` is an `http` or `https` URI with a host, written exactly as the
/// WHATWG URL parser writes it, with no user information, query, empty
/// path segment, or encoded `/`, `\` or `.`: the form in which a string
/// prefix ending in `/` is a path-segment boundary that every parser
/// agrees on.
fn is_plain(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    let path = url.path();
    let encoded_separator = ["%2f", "%5c", "%2e"]
        .iter()
        .any(|encoded| path.as_bytes().windows(3).any(|w| w.eq_ignore_ascii_case(encoded.as_bytes())));
    url.as_str() == uri
        && matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && !path.contains("//")
        && !encoded_separator
}

/// A value as error messages show it: at most 64 characters of it.
fn shown(value: &str) -> &str {
    match value.char_indices().nth(64) {
        Some((i, _)) => &value[..i],
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{GrantType, test_agent};

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn rules(entries: &[&str]) -> ResourceRules {
        ResourceRules::parse(entries).unwrap()
    }

    fn agent() -> Client {
        test_agent("a1", "read", &[GrantType::ClientCredentials])
    }

    #[test]
    fn a_resource_must_be_an_absolute_uri_without_a_fragment() {
        for ok in [
            "https://api.example",
            "https://api.example/mcp",
            "https://API.Example:443/a/./b?x=1",
            "http://localhost:8080/",
            "urn:example:calendar",
            "https://api.example/caf%C3%A9",
        ] {
            assert_eq!(check_resource(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/relative/path",
            "api.example/mcp",
            "//api.example/mcp",
            "https://api.example/mcp#section",
            "https://api.example/#",
            "https:",
            "https:/api.example",
            "https:///path",
            "1https://api.example",
            "https://api.example/a b",
            "https://api.example\\@evil.example/",
            "https://api.example/caf\u{e9}",
            "https://api.example/%zz",
            "https://api.example/%2",
            &format!("https://api.example/{}", "a".repeat(MAX_RESOURCE)),
        ] {
            assert_eq!(check_resource(bad).unwrap_err().code, ErrorCode::InvalidTarget, "{bad}");
        }
    }

    #[test]
    fn a_refusal_says_what_is_wrong_and_shows_a_bounded_part_of_the_value() {
        let refusal = check_resource("https://api.example/mcp#x").unwrap_err();
        assert_eq!(refusal.description, r#"resource "https://api.example/mcp#x" must not contain a fragment"#);
        let long = format!("/{}", "a".repeat(10_000));
        assert!(check_resource(&long).unwrap_err().description.len() < 200);
    }

    #[test]
    fn exact_rules_compare_uris_as_strings() {
        let realm = rules(&["https://api.example/mcp", "urn:example:calendar"]);
        assert!(realm.allows("https://api.example/mcp"));
        assert!(realm.allows("urn:example:calendar"));
        for other in [
            "https://api.example/mcp/",
            "https://API.example/mcp",
            "https://api.example:443/mcp",
            "https://api.example/mcp/tools",
            "https://api.example/mc",
        ] {
            assert!(!realm.allows(other), "{other}");
        }
    }

    #[test]
    fn a_prefix_rule_allows_what_lies_below_it_on_a_segment_boundary() {
        let realm = rules(&["https://api.example/tenants/*"]);
        assert!(realm.allows("https://api.example/tenants/acme"));
        assert!(realm.allows("https://api.example/tenants/acme/calendar"));
        for other in [
            // The prefix itself, and a sibling path that shares its letters.
            "https://api.example/tenants/",
            "https://api.example/tenants",
            "https://api.example/tenantsacme",
            // Another host that starts with the same letters, another port
            // or scheme, user information that moves the host.
            "https://api.example.evil.example/tenants/acme",
            "https://api.example:8443/tenants/acme",
            "http://api.example/tenants/acme",
            "https://api.example@evil.example/tenants/acme",
            // Paths a server would resolve outside the prefix.
            "https://api.example/tenants/../admin",
            "https://api.example/tenants/./acme",
            "https://api.example/tenants/%2e%2e/admin",
            "https://api.example/tenants/.%2E/admin",
            "https://api.example/tenants/acme%2F..%2F..%2Fadmin",
            "https://api.example/tenants/acme%5cadmin",
            "https://api.example/tenants//acme",
            // Forms a parser would rewrite, and a query.
            "https://API.example/tenants/acme",
            "https://api.example:443/tenants/acme",
            "https://api.example/tenants/acme?x=1",
        ] {
            assert!(!realm.allows(other), "{other}");
        }
        let host_wide = rules(&["https://api.example/*"]);
        assert!(host_wide.allows("https://api.example/anything"));
        assert!(!host_wide.allows("https://api.example/"));
        assert!(!host_wide.allows("https://api.example.evil.example/anything"));
    }

    #[test]
    fn rules_that_cannot_be_matched_safely_are_refused_naming_the_entry() {
        for bad in [
            "https://*.example/",
            "https://api.example/*/calendar",
            "https://api.example/tenants*",
            "https://api.example/tenants/*?x=1",
            "https://API.example/tenants/*",
            "https://api.example:443/tenants/*",
            "https://user@api.example/tenants/*",
            "https://api.example/a/../tenants/*",
            "https://api.example/a%2Fb/*",
            "https://api.example//*",
            "urn:example:*",
            "*",
            "/relative/*",
            "https://api.example/mcp#x",
            "relative",
        ] {
            let refusal = ResourceRules::parse(&[bad]).unwrap_err();
            assert!(refusal.contains(bad), "{bad}: {refusal}");
        }
        let too_many: Vec<String> = (0..=MAX_RULES).map(|i| format!("https://api.example/{i}")).collect();
        assert!(ResourceRules::parse(&too_many).is_err());
        assert!(ResourceRules::parse::<String>(&[]).unwrap().is_empty());
    }

    #[test]
    fn resolve_gives_the_resources_asked_for_in_order_without_repeats() {
        let realm = rules(&["https://a.example/mcp", "https://b.example/*"]);
        let asked = strings(&["https://b.example/x", "https://a.example/mcp", "https://b.example/x"]);
        assert_eq!(
            resolve(&asked, &realm, &agent()).unwrap(),
            strings(&["https://b.example/x", "https://a.example/mcp"])
        );
        assert_eq!(resolve(&[], &realm, &agent()).unwrap(), Vec::<String>::new(), "none asked: the default applies");
    }

    #[test]
    fn resolve_refuses_a_relative_uri_a_fragment_or_a_resource_not_allowed() {
        let realm = rules(&["https://a.example/mcp"]);
        for asked in [
            strings(&["/mcp"]),
            strings(&["https://a.example/mcp#tools"]),
            strings(&["https://elsewhere.example/mcp"]),
            // One refused resource refuses the request, not just itself.
            strings(&["https://a.example/mcp", "https://elsewhere.example/mcp"]),
        ] {
            assert_eq!(resolve(&asked, &realm, &agent()).unwrap_err().code, ErrorCode::InvalidTarget, "{asked:?}");
        }
        let many: Vec<String> = (0..=MAX_RESOURCES).map(|_| "https://a.example/mcp".to_string()).collect();
        assert_eq!(resolve(&many, &realm, &agent()).unwrap_err().code, ErrorCode::InvalidTarget);
    }

    #[test]
    fn a_realm_without_rules_allows_only_what_the_clients_policy_set() {
        let none = ResourceRules::default();
        let asked = strings(&["https://a.example/mcp"]);
        assert_eq!(resolve(&asked, &none, &agent()).unwrap_err().code, ErrorCode::InvalidTarget);
        let mut allowed = agent();
        allowed.attributes.allowed_audiences = strings(&["https://a.example/mcp"]);
        assert_eq!(resolve(&asked, &none, &allowed).unwrap(), asked);
    }

    #[test]
    fn narrow_may_drop_resources_of_the_grant_but_add_none() {
        let granted = strings(&["https://a.example/mcp", "https://b.example/api"]);
        assert_eq!(narrow(&[], &granted).unwrap(), granted, "none asked: the whole grant");
        let one = strings(&["https://b.example/api"]);
        assert_eq!(narrow(&one, &granted).unwrap(), one);
        for asked in [
            strings(&["https://c.example/other"]),
            strings(&["https://a.example/mcp", "https://c.example/other"]),
            strings(&["https://a.example/mcp#x"]),
        ] {
            assert_eq!(narrow(&asked, &granted).unwrap_err().code, ErrorCode::InvalidTarget, "{asked:?}");
        }
        // A grant of the default audience has no resource to narrow to.
        assert_eq!(narrow(&one, &[]).unwrap_err().code, ErrorCode::InvalidTarget);
    }
}
