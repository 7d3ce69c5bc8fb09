//! Registered clients: their metadata (RFC 7591 §2), the attributes a
//! realm's DCR policy sets on them, and the subject they act as.

use serde::{Deserialize, Serialize};

use crate::scope::Scopes;

/// A grant type this server issues tokens for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantType {
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
    #[serde(rename = "refresh_token")]
    RefreshToken,
}

impl GrantType {
    pub const TOKEN_EXCHANGE_URN: &'static str = "urn:ietf:params:oauth:grant-type:token-exchange";

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "client_credentials" => Some(Self::ClientCredentials),
            Self::TOKEN_EXCHANGE_URN => Some(Self::TokenExchange),
            "refresh_token" => Some(Self::RefreshToken),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => Self::TOKEN_EXCHANGE_URN,
            Self::RefreshToken => "refresh_token",
        }
    }
}

/// How a client authenticates at the token endpoint (RFC 7591 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with one of the client's registered keys (RFC 7523).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// Every method this server accepts, in the order discovery lists them.
    pub const ALL: [AuthMethod; 3] = [Self::ClientSecretBasic, Self::ClientSecretPost, Self::PrivateKeyJwt];

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "private_key_jwt" => Some(Self::PrivateKeyJwt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The metadata a client registered, after validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub response_types: Vec<String>,
    pub client_name: Option<String>,
    /// Registered scopes, space-delimited as in RFC 7591's `scope`.
    pub scope: String,
    pub token_endpoint_auth_method: AuthMethod,
    /// The client's public keys (a JWK Set), for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
}

impl ClientMetadata {
    pub fn scopes(&self) -> Scopes {
        // Stored values were validated on registration; a row edited by
        // hand into something malformed grants nothing.
        Scopes::parse(&self.scope).unwrap_or_default()
    }

    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

/// Attributes a DCR policy sets on a client, with PingAM's names and meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAttributes {
    /// `providerOverridesEnabled`: the client's own settings below apply.
    pub provider_overrides_enabled: bool,
    /// `accessTokenMayActScript`: the realm's may-act plugin that runs when
    /// a token is issued to this client.
    pub access_token_may_act_script: Option<String>,
    /// `statelessTokensEnabled`: access tokens are signed JWTs.
    pub stateless_tokens_enabled: bool,
    /// `allowedAudiences`: the audiences (or resources) the client may ask
    /// a token exchange for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_audiences: Vec<String>,
}

/// The longest plugin name a policy may point at.
const MAX_PLUGIN_NAME: usize = 64;

impl ClientAttributes {
    /// Sets one attribute from a policy's answer. Unknown names and values
    /// of the wrong shape are refused, so a typo in a policy fails loudly
    /// instead of silently doing nothing.
    pub fn set(&mut self, name: &str, values: &[String]) -> Result<(), String> {
        match name {
            "providerOverridesEnabled" => self.provider_overrides_enabled = flag(name, values)?,
            "statelessTokensEnabled" => self.stateless_tokens_enabled = flag(name, values)?,
            "accessTokenMayActScript" => {
                self.access_token_may_act_script = match values {
                    [] => None,
                    [plugin] if is_plugin_name(plugin) => Some(plugin.clone()),
                    _ => {
                        return Err(format!(
                            "attribute {name} takes one plugin name \
                             (letters, digits, '-', '_', '.'; at most {MAX_PLUGIN_NAME})"
                        ));
                    }
                }
            }
            "allowedAudiences" => {
                if values.len() > 16
                    || values.iter().any(|v| v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
                {
                    return Err(format!(
                        "attribute {name} takes at most 16 audiences of 1 to 256 printable characters"
                    ));
                }
                self.allowed_audiences = values.to_vec();
            }
            _ => return Err(format!("unknown client attribute {:?}", truncate(name, 64))),
        }
        Ok(())
    }

    /// The attributes as a policy sees them (`[\"true\"]` for a flag).
    pub fn as_pairs(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut pairs = vec![
            ("providerOverridesEnabled", vec![self.provider_overrides_enabled.to_string()]),
            ("statelessTokensEnabled", vec![self.stateless_tokens_enabled.to_string()]),
        ];
        if let Some(plugin) = &self.access_token_may_act_script {
            pairs.push(("accessTokenMayActScript", vec![plugin.clone()]));
        }
        if !self.allowed_audiences.is_empty() {
            pairs.push(("allowedAudiences", self.allowed_audiences.clone()));
        }
        pairs
    }

    /// The may-act plugin to run when issuing this client a token: only
    /// when provider overrides are enabled, as in PingAM.
    pub fn may_act_plugin(&self) -> Option<&str> {
        self.access_token_may_act_script.as_deref().filter(|_| self.provider_overrides_enabled)
    }
}

fn flag(name: &str, values: &[String]) -> Result<bool, String> {
    match values {
        [v] if v == "true" => Ok(true),
        [v] if v == "false" => Ok(false),
        _ => Err(format!("attribute {name} takes [\"true\"] or [\"false\"]")),
    }
}

/// Plugin names: what an operator can type and a path can carry.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PLUGIN_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A registered client as the domain sees it. Secrets are not here: only
/// the store holds their keyed hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub metadata: ClientMetadata,
    pub attributes: ClientAttributes,
    /// Registered at `aiagent/register` (PingAM's `isAIAgent()`).
    pub is_ai_agent: bool,
    /// Seconds since the Unix epoch.
    pub issued_at: i64,
}

impl Client {
    /// The subject this client has when it acts for itself: `(age!<id>)`
    /// for an AI agent, as on the seed page, else its client_id.
    pub fn actor_subject(&self) -> String {
        if self.is_ai_agent { format!("(age!{})", self.client_id) } else { self.client_id.clone() }
    }
}

/// A confidential AI agent registered with `scope` and `grant_types`, for
/// the grant rules' tests.
#[cfg(test)]
pub(crate) fn test_agent(client_id: &str, scope: &str, grant_types: &[GrantType]) -> Client {
    Client {
        client_id: client_id.into(),
        metadata: ClientMetadata {
            redirect_uris: vec![],
            grant_types: grant_types.to_vec(),
            response_types: vec![],
            client_name: None,
            scope: scope.into(),
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
        },
        attributes: ClientAttributes::default(),
        is_ai_agent: true,
        issued_at: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn attributes_take_pingam_shapes() {
        let mut a = ClientAttributes::default();
        a.set("providerOverridesEnabled", &strings(&["true"])).unwrap();
        a.set("accessTokenMayActScript", &strings(&["software-agent-may-act"])).unwrap();
        assert_eq!(a.may_act_plugin(), Some("software-agent-may-act"));
    }

    #[test]
    fn may_act_plugin_needs_provider_overrides() {
        let mut a = ClientAttributes::default();
        a.set("accessTokenMayActScript", &strings(&["p"])).unwrap();
        assert_eq!(a.may_act_plugin(), None);
    }

    #[test]
    fn attributes_refuse_unknown_names_and_bad_values() {
        let mut a = ClientAttributes::default();
        assert!(a.set("clientId", &strings(&["evil"])).is_err());
        assert!(a.set("statelessTokensEnabled", &strings(&["yes"])).is_err());
        assert!(a.set("statelessTokensEnabled", &strings(&["true", "true"])).is_err());
        assert!(a.set("accessTokenMayActScript", &strings(&["../etc/passwd"])).is_err());
        assert_eq!(a, ClientAttributes::default());
    }

    #[test]
    fn ai_agents_act_as_age_subjects() {
        let metadata = ClientMetadata {
            redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
            response_types: vec![],
            client_name: None,
            scope: String::new(),
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
        };
        let mut c = Client {
            client_id: "abc".into(),
            metadata,
            attributes: ClientAttributes::default(),
            is_ai_agent: true,
            issued_at: 0,
        };
        assert_eq!(c.actor_subject(), "(age!abc)");
        c.is_ai_agent = false;
        assert_eq!(c.actor_subject(), "abc");
    }

    #[test]
    fn every_auth_method_is_listed_once_and_reads_back() {
        for method in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(method.as_str()), Some(method));
            // A method missing from `ALL` fails to compile here.
            match method {
                AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost | AuthMethod::PrivateKeyJwt => {}
            }
        }
        let names: std::collections::HashSet<_> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names.len(), AuthMethod::ALL.len());
    }
}
