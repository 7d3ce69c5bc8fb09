//! Scope values (RFC 6749 §3.3): space-delimited, case-sensitive tokens of
//! printable ASCII other than space, `"` and `\`.

use crate::error::OAuthError;

/// Longest scope token accepted, a bound against abusive input.
const MAX_SCOPE_TOKEN: usize = 128;
/// Most scope tokens one value may hold.
const MAX_SCOPES: usize = 64;

/// An ordered set of scope tokens. Order is kept as first given, so
/// `read write` is echoed back as the client wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Parses a space-delimited scope string. Repeated tokens collapse.
    pub fn parse(value: &str) -> Result<Self, OAuthError> {
        Self::from_tokens(value.split(' ').filter(|t| !t.is_empty()))
    }

    /// Builds a set from individual tokens, checking each one.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Self, OAuthError> {
        let mut scopes = Vec::new();
        for token in tokens {
            if !is_scope_token(token) {
                return Err(OAuthError::invalid_scope("scope contains a malformed scope token"));
            }
            if !scopes.iter().any(|s| s == token) {
                scopes.push(token.to_string());
            }
            if scopes.len() > MAX_SCOPES {
                return Err(OAuthError::invalid_scope("too many scope tokens"));
            }
        }
        Ok(Self(scopes))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|s| s == token)
    }

    /// True when every token of `self` is in `allowed`.
    pub fn is_subset_of(&self, allowed: &Scopes) -> bool {
        self.iter().all(|s| allowed.contains(s))
    }

    /// The tokens of `self` that `allowed` lacks, for error messages.
    pub fn missing_from(&self, allowed: &Scopes) -> Vec<&str> {
        self.iter().filter(|s| !allowed.contains(s)).collect()
    }

    /// The tokens of `self` that `other` also holds, in `self`'s order.
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.iter().filter(|s| other.contains(s)).cloned().collect())
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.clone()
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_SCOPE_TOKEN
        && token.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_order_and_drops_repeats() {
        let s = Scopes::parse("read  write read").unwrap();
        assert_eq!(s.to_string(), "read write");
    }

    #[test]
    fn parse_rejects_quote_and_backslash() {
        assert!(Scopes::parse("re\"ad").is_err());
        assert!(Scopes::parse("a\\b").is_err());
        assert!(Scopes::parse("caf\u{e9}").is_err());
    }

    #[test]
    fn subset_reports_what_is_missing() {
        let allowed = Scopes::parse("read write").unwrap();
        let asked = Scopes::parse("read admin").unwrap();
        assert!(!asked.is_subset_of(&allowed));
        assert_eq!(asked.missing_from(&allowed), vec!["admin"]);
        assert!(Scopes::parse("write").unwrap().is_subset_of(&allowed));
    }
}
