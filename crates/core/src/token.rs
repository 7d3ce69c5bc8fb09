//! Access token claims (RFC 9068) and the delegation claims of RFC 8693:
//! `may_act` (who may act for the subject) and `act` (who is acting).

use serde::{Deserialize, Serialize};

use crate::scope::Scopes;

/// RFC 8693 §4.4: the party that may act on behalf of the token's subject.
/// `client_id` is required here: a `may_act` that names nobody to exchange
/// the token would be useless, and one that names only a subject would let
/// any client holding the token act as it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// RFC 8693 §4.1: the acting party, with any earlier actor nested inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

/// RFC 7800 §3.1 / RFC 9449 §6.1: the key a sender-constrained token is
/// bound to, by its JWK SHA-256 thumbprint (RFC 7638); only a request
/// signed with that key (a DPoP proof) may use the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

/// The claims of an access token this server issues.
///
/// A token has one audience but when it was asked for several resources
/// (RFC 8707). `aud` holds the first as a plain string, which is all most
/// readers want (the audit, a policy's view); `more_aud` the others, in
/// the order asked. On the wire `aud` is one string for one audience and
/// an array for more (RFC 7519 §4.1.3), and both forms are read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireClaims", try_from = "WireClaims")]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The token's (first) audience.
    pub aud: String,
    /// Its audiences after the first, if it has more.
    pub more_aud: Vec<String>,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// The DPoP key the token is bound to, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// When the user signed in (RFC 9068 §2.2.1): on the tokens of a grant
    /// a user gave by signing in (the code grant and its refreshes) and on
    /// no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Custom claims a token policy added.
    #[serde(flatten)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// [`AccessTokenClaims`] as written in a token: `aud` one string or an
/// array.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    sub: String,
    #[serde(with = "one_or_many")]
    aud: Vec<String>,
    client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scope: String,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    may_act: Option<MayAct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<Act>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(flatten)]
    custom: serde_json::Map<String, serde_json::Value>,
}

impl From<AccessTokenClaims> for WireClaims {
    fn from(claims: AccessTokenClaims) -> Self {
        let AccessTokenClaims {
            iss,
            sub,
            aud,
            more_aud,
            client_id,
            scope,
            iat,
            exp,
            jti,
            may_act,
            act,
            cnf,
            auth_time,
            custom,
        } = claims;
        let mut audience = Vec::with_capacity(1 + more_aud.len());
        audience.push(aud);
        audience.extend(more_aud);
        Self { iss, sub, aud: audience, client_id, scope, iat, exp, jti, may_act, act, cnf, auth_time, custom }
    }
}

impl TryFrom<WireClaims> for AccessTokenClaims {
    type Error = &'static str;

    fn try_from(wire: WireClaims) -> Result<Self, Self::Error> {
        let WireClaims { iss, sub, aud, client_id, scope, iat, exp, jti, may_act, act, cnf, auth_time, custom } = wire;
        let mut audience = aud.into_iter();
        let aud = audience.next().ok_or("aud names no audience")?;
        let more_aud = audience.collect();
        Ok(Self { iss, sub, aud, more_aud, client_id, scope, iat, exp, jti, may_act, act, cnf, auth_time, custom })
    }
}

/// A list of strings written as one string when it has one, as an array
/// otherwise, and read from either: RFC 7519's form of `aud`, which a
/// refresh token's grant keeps its audience in too.
pub(crate) mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        match values {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        })
    }
}

/// Claims the host owns: a policy may not set them (RFC 7519 registered
/// claims, RFC 9068's, RFC 8693's, and the ones that would change how a
/// token is read).
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "act",
    "may_act",
    "cnf",
    "typ",
    "auth_time",
    "acr",
    "amr",
];

/// Deepest nesting a custom claim may have.
const MAX_CLAIM_DEPTH: usize = 8;

/// Parses and checks a token policy's custom claims: a JSON object, no
/// reserved claim, at most 8 levels deep.
pub fn custom_claims(json: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("custom claims are not JSON: {e}"))?;
    let serde_json::Value::Object(claims) = value else {
        return Err("custom claims must be a JSON object".into());
    };
    if let Some(reserved) = claims.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
        return Err(format!("custom claims may not set the reserved claim {reserved:?}"));
    }
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if claims.values().map(depth).max().unwrap_or(0) > MAX_CLAIM_DEPTH {
        return Err(format!("custom claims nest deeper than {MAX_CLAIM_DEPTH} levels"));
    }
    Ok(claims)
}

impl Act {
    /// How many actors the chain names: this one and those nested in it.
    pub fn depth(&self) -> usize {
        let mut depth = 1;
        let mut inner = self.act.as_deref();
        while let Some(act) = inner {
            depth += 1;
            inner = act.act.as_deref();
        }
        depth
    }

    /// Who the chain names, the current actor first: each actor's
    /// `client_id`, or its `sub` where it has none.
    pub fn chain(&self) -> Vec<String> {
        let mut chain = Vec::new();
        let mut next = Some(self);
        while let Some(act) = next {
            chain.push(act.client_id.clone().unwrap_or_else(|| act.sub.clone()));
            next = act.act.as_deref();
        }
        chain
    }
}

impl AccessTokenClaims {
    /// Every audience of the token, the first first.
    pub fn audience(&self) -> Vec<String> {
        std::iter::once(&self.aud).chain(&self.more_aud).cloned().collect()
    }

    pub fn scopes(&self) -> Scopes {
        Scopes::parse(&self.scope).unwrap_or_default()
    }

    /// True once `now` has reached the expiry time.
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.exp
    }
}

/// What a token is about to become, before the may-act policy runs and the
/// host fills in `iat`, `exp` and `jti`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub sub: String,
    pub client_id: String,
    pub scopes: Scopes,
    pub act: Option<Act>,
    /// The token's audience when resources (or, for an exchange,
    /// audiences) were requested and allowed; when empty, the client
    /// itself.
    pub audience: Vec<String>,
    /// The latest the token may expire: a token derived from others (by
    /// exchange or refresh) never outlives them.
    pub not_after: Option<i64>,
    /// A `may_act` the grant carries (a user's, from the authorize hook at
    /// the authorization endpoint); the client's may-act policy, when it
    /// has one, decides otherwise.
    pub may_act: Option<MayAct>,
    /// The DPoP key the token is to be bound to: the one the request's
    /// proof was signed with.
    pub cnf: Option<Confirmation>,
    /// When the user signed in, for a grant a user gave by signing in.
    pub auth_time: Option<i64>,
}

impl TokenRequest {
    /// The claims of the token, issued by `iss` at `now` for `lifetime`
    /// seconds, or until `not_after` if that comes first.
    pub fn into_claims(
        self,
        iss: &str,
        now: i64,
        lifetime: i64,
        jti: String,
        may_act: Option<MayAct>,
    ) -> AccessTokenClaims {
        let mut audience = self.audience.into_iter();
        AccessTokenClaims {
            iss: iss.to_string(),
            aud: audience.next().unwrap_or_else(|| self.client_id.clone()),
            more_aud: audience.collect(),
            sub: self.sub,
            client_id: self.client_id,
            scope: self.scopes.to_string(),
            iat: now,
            exp: self.not_after.map_or(now.saturating_add(lifetime), |end| end.min(now.saturating_add(lifetime))),
            jti,
            may_act,
            act: self.act,
            cnf: self.cnf,
            auth_time: self.auth_time,
            custom: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_claims_may_not_take_the_hosts_claims() {
        assert!(custom_claims(r#"{"department": "updates", "tier": {"level": 2}}"#).is_ok());
        for bad in [
            r#"{"sub": "someone-else"}"#,
            r#"{"may_act": {}}"#,
            r#"["a"]"#,
            "not json",
            r#"{"a": [[[[[[[[[1]]]]]]]]]}"#,
        ] {
            assert!(custom_claims(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_derived_token_expires_no_later_than_its_bound() {
        let request = |not_after| TokenRequest {
            sub: "s".into(),
            client_id: "c".into(),
            scopes: Scopes::default(),
            act: None,
            audience: Vec::new(),
            not_after,
            may_act: None,
            cnf: None,
            auth_time: None,
        };
        assert_eq!(request(None).into_claims("https://as", 100, 60, "j".into(), None).exp, 160);
        assert_eq!(request(Some(130)).into_claims("https://as", 100, 60, "j".into(), None).exp, 130);
        assert_eq!(request(Some(500)).into_claims("https://as", 100, 60, "j".into(), None).exp, 160);
    }

    fn request_for(audience: &[&str]) -> TokenRequest {
        TokenRequest {
            sub: "s".into(),
            client_id: "c".into(),
            scopes: Scopes::default(),
            act: None,
            audience: audience.iter().map(|a| a.to_string()).collect(),
            not_after: None,
            may_act: None,
            cnf: None,
            auth_time: None,
        }
    }

    #[test]
    fn aud_is_the_client_by_default_a_string_for_one_audience_and_an_array_for_more() {
        let written = |audience: &[&str]| {
            let claims = request_for(audience).into_claims("https://as", 0, 60, "j".into(), None);
            let json = serde_json::to_value(&claims).unwrap();
            let back: AccessTokenClaims = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, claims, "read back as written");
            (json["aud"].clone(), claims.audience())
        };
        assert_eq!(written(&[]), (serde_json::json!("c"), vec!["c".to_string()]));
        assert_eq!(written(&["https://a.example"]).0, serde_json::json!("https://a.example"));
        let (aud, audience) = written(&["https://a.example", "https://b.example"]);
        assert_eq!(aud, serde_json::json!(["https://a.example", "https://b.example"]));
        assert_eq!(audience, vec!["https://a.example".to_string(), "https://b.example".to_string()]);
    }

    #[test]
    fn a_token_whose_aud_names_nobody_is_not_read() {
        let mut json =
            serde_json::to_value(request_for(&[]).into_claims("https://as", 0, 60, "j".into(), None)).unwrap();
        json["aud"] = serde_json::json!([]);
        assert!(serde_json::from_value::<AccessTokenClaims>(json.clone()).is_err());
        json["aud"] = serde_json::json!(["one"]);
        assert_eq!(serde_json::from_value::<AccessTokenClaims>(json).unwrap().aud, "one");
    }

    #[test]
    fn custom_claims_round_trip_through_the_token() {
        let mut claims = TokenRequest {
            sub: "s".into(),
            client_id: "c".into(),
            scopes: Scopes::default(),
            act: None,
            audience: Vec::new(),
            not_after: None,
            may_act: None,
            cnf: None,
            auth_time: None,
        }
        .into_claims("https://as", 0, 60, "j".into(), None);
        claims.custom = custom_claims(r#"{"department": "updates"}"#).unwrap();
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["department"], "updates");
        let back: AccessTokenClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims);
    }
}
