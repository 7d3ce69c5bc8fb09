//! What a client sends and gets back: its registration metadata, its
//! credentials, and its token endpoint requests, as plain values.
//!
//! Values rather than calls, so each caller sends them its own way: the
//! end-to-end tests and the benchmark through [`Server`](crate::Server),
//! the in-process tests as the body of a request to `App::handle`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind};

/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693's token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The path of a realm's OAuth `endpoint` (such as `access_token` or
/// `aiagent/register`) under the default base path, `/am`.
pub fn realm_path(realm: &str, endpoint: &str) -> String {
    format!("/am/oauth2/realms/root/realms/{realm}/{endpoint}")
}

/// Client metadata for a registration (RFC 7591), field by field.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration(Map<String, Value>);

impl Registration {
    /// The registration request body of the seed page, verbatim: a
    /// software agent that uses client credentials and token exchange,
    /// with PingAM's `scopes` array `["read", "write"]`.
    pub fn seed() -> Self {
        Self::from_json(json!({
            "grant_types": ["client_credentials", TOKEN_EXCHANGE],
            "client_name": "software agent",
            "response_types": ["token"],
            "redirect_uris": ["https://www.example.com:443/callback"],
            "scopes": ["read", "write"]
        }))
    }

    /// Metadata with only `grant_types`.
    pub fn grants(grant_types: &[&str]) -> Self {
        Self::from_json(json!({ "grant_types": grant_types }))
    }

    fn from_json(value: Value) -> Self {
        match value {
            Value::Object(fields) => Self(fields),
            _ => unreachable!("built from an object literal"),
        }
    }

    /// Sets `client_name` (policies in `plugins/` read it to choose what
    /// to do).
    pub fn client_name(self, name: &str) -> Self {
        self.field("client_name", name)
    }

    /// Sets `scope`, RFC 7591's space-separated string.
    pub fn scope(self, scope: &str) -> Self {
        self.field("scope", scope)
    }

    /// Sets any field, replacing it when present.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.insert(name.to_string(), value.into());
        self
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The JSON request body.
    pub fn body(&self) -> String {
        self.to_json().to_string()
    }
}

/// A registered client's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: String,
}

impl Credentials {
    /// The credentials in a registration response, empty where missing:
    /// the request that uses them then fails, and says so. Where a
    /// missing field must fail at once, use `Credentials::try_from`.
    pub fn from_registration(response: &Value) -> Self {
        Self {
            client_id: response["client_id"].as_str().unwrap_or_default().into(),
            client_secret: response["client_secret"].as_str().unwrap_or_default().into(),
        }
    }

    /// The `Authorization` header value of `client_secret_basic`.
    pub fn basic_authorization(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.client_id, self.client_secret)))
    }
}

/// The credentials in a registration response; an error when either is
/// missing.
impl TryFrom<&Value> for Credentials {
    type Error = Error;

    fn try_from(response: &Value) -> Result<Self, Error> {
        let field = |name: &str| {
            response[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::new(ErrorKind::Unexpected, format!("no {name} in {response}")))
        };
        Ok(Self { client_id: field("client_id")?, client_secret: field("client_secret")? })
    }
}

/// A token endpoint request (`application/x-www-form-urlencoded`), field
/// by field, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// A form with no fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// `grant_type=client_credentials`.
    pub fn client_credentials() -> Self {
        Self::new().field("grant_type", "client_credentials")
    }

    /// A token exchange (RFC 8693) of the access token `subject_token`.
    pub fn token_exchange(subject_token: &str) -> Self {
        Self::new()
            .field("grant_type", TOKEN_EXCHANGE)
            .field("subject_token", subject_token)
            .field("subject_token_type", ACCESS_TOKEN_TYPE)
    }

    /// A refresh (RFC 6749 §6) with `refresh_token`.
    pub fn refresh(refresh_token: &str) -> Self {
        Self::new().field("grant_type", "refresh_token").field("refresh_token", refresh_token)
    }

    /// Adds `scope`.
    pub fn scope(self, scope: &str) -> Self {
        self.field("scope", scope)
    }

    /// Adds `client_id` and `client_secret` (`client_secret_post`).
    pub fn client_secret_post(self, client: &Credentials) -> Self {
        self.field("client_id", &client.client_id).field("client_secret", &client.client_secret)
    }

    /// Adds any field, after those already there.
    pub fn field(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_string(), value.to_string()));
        self
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The request body, each name and value percent-encoded.
    pub fn encode(&self) -> String {
        form_urlencoded::Serializer::new(String::new()).extend_pairs(self.fields()).finish()
    }
}

/// The header and claims of a JWT, unverified.
///
/// # Panics
///
/// When `token` is not three base64url parts of JSON: a test that asks
/// has been given something that is no JWT, and fails here.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = || {
        let part = parts.next().expect("a JWT part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    (decode(), decode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_encodes_its_fields_in_order() {
        let client = Credentials { client_id: "c".into(), client_secret: "s/+".into() };
        let form = Form::token_exchange("a.b.c").scope("read write").client_secret_post(&client);
        assert_eq!(
            form.encode(),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &scope=read+write&client_id=c&client_secret=s%2F%2B"
        );
    }

    #[test]
    fn credentials_from_a_registration_are_strict_only_when_asked() {
        let partial = json!({"client_id": "c"});
        assert_eq!(Credentials::from_registration(&partial).client_secret, "");
        let err = Credentials::try_from(&partial).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unexpected);
        assert!(err.to_string().contains("client_secret"), "{err}");
    }

    #[test]
    fn a_registration_changes_only_the_fields_it_is_told() {
        let named = Registration::seed().client_name("bench jwt");
        let mut expected = Registration::seed().to_json();
        expected["client_name"] = json!("bench jwt");
        assert_eq!(named.to_json(), expected);
        assert_eq!(
            Registration::grants(&["client_credentials"]).scope("read").to_json(),
            json!({"grant_types": ["client_credentials"], "scope": "read"})
        );
    }
}
