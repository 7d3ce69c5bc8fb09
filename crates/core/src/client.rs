//! Registered clients: their metadata (RFC 7591 §2), the attributes a
//! realm's DCR policy sets on them, and the subject they act as.

use serde::{Deserialize, Serialize};

use crate::scope::Scopes;
use crate::vocabulary::vocabulary;

vocabulary! {
    /// A grant type this server issues tokens for, named as in
    /// `grant_type` and in a client's `grant_types` (RFC 7591 §2).
    pub enum GrantType {
        /// RFC 6749 §4.4: a client gets a token for itself.
        ClientCredentials = "client_credentials",
        /// RFC 8693: a client trades a subject token (and maybe an actor
        /// token) for a new one.
        TokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange",
        /// RFC 6749 §6: a refresh token, from a token exchange or an
        /// authorization code, for a new access token.
        RefreshToken = "refresh_token",
        /// RFC 6749 §4.1 as OAuth 2.1 profiles it: a user authorizes the
        /// client at the authorization endpoint, with PKCE.
        AuthorizationCode = "authorization_code",
        /// RFC 7523 §2.1: a client trades a JWT from an issuer the realm
        /// trusts for a token; an Identity Assertion JWT Authorization
        /// Grant (ID-JAG) is one, naming the user it was issued for.
        JwtBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer",
    }
}

impl GrantType {
    pub const TOKEN_EXCHANGE_URN: &'static str = Self::TokenExchange.as_str();
}

vocabulary! {
    /// How a client authenticates at the token, introspection and
    /// revocation endpoints (RFC 7591 §2 `token_endpoint_auth_method`).
    /// Every endpoint accepts every method but `none`, which only the
    /// token endpoint does, for its two grants.
    pub enum AuthMethod {
        /// The client secret in HTTP Basic (RFC 6749 §2.3.1); the default.
        ClientSecretBasic = "client_secret_basic",
        /// The client secret as form parameters (RFC 6749 §2.3.1).
        ClientSecretPost = "client_secret_post",
        /// A JWT signed with one of the client's registered keys (RFC 7523).
        PrivateKeyJwt = "private_key_jwt",
        /// A public client (RFC 7591 §2 `none`): it has no credentials and
        /// names itself with `client_id`. It may use the authorization code
        /// grant, whose PKCE binds the code to it, and refresh tokens,
        /// which rotate on every use; nothing else.
        None = "none",
        /// A workload's platform token (a Kubernetes service account
        /// token, a cloud or CI workload token) from an issuer the realm
        /// trusts for client authentication, as a `jwt-bearer` client
        /// assertion: the client registers the issuer and the subject the
        /// token must carry (`federated_issuer`, `federated_subject`).
        FederatedJwt = "federated_jwt",
        /// A SPIFFE JWT-SVID (draft-ietf-oauth-spiffe-client-auth), with
        /// the `jwt-spiffe` assertion type: the client registers its
        /// SPIFFE ID (`spiffe_id`, exact or ending in `/*`), and the realm
        /// trusts its trust domain (`spiffe://<trust-domain>`).
        SpiffeJwt = "spiffe_jwt",
    }
}

/// Who a client is when it authenticates as a workload
/// (`federated_jwt`, `spiffe_jwt`): the issuer of its platform's tokens,
/// as the realm trusts it, and the subject they carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadIdentity {
    /// The trusted issuer's identifier (`iss`; for SPIFFE, the trust
    /// domain as `spiffe://<trust-domain>`).
    pub issuer: String,
    /// The token's `sub` exactly, or for SPIFFE a prefix ending in `/*`
    /// that matches whole path segments.
    pub subject: String,
}

impl WorkloadIdentity {
    /// Whether a token's subject is this workload's.
    pub fn matches(&self, subject: &str) -> bool {
        match self.subject.strip_suffix("/*") {
            Some(prefix) if self.issuer.starts_with("spiffe://") => {
                subject.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
            }
            _ => self.subject == subject,
        }
    }
}

vocabulary! {
    /// The kind of application a client is: OpenID Connect Dynamic Client
    /// Registration 1.0 §2's `application_type`, which MCP clients send
    /// when they register.
    #[derive(Default)]
    pub enum ApplicationType {
        /// An application served from the web; the default.
        #[default]
        Web = "web",
        /// An application on the user's own device (a desktop or mobile
        /// app, a command-line agent): the authorization code grant will
        /// apply RFC 8252's rules to its redirect URIs (any port on a
        /// loopback address).
        Native = "native",
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
    /// Where the client's public keys are published, for
    /// `private_key_jwt`: only a client known by its metadata document
    /// gives one (a registration gives `jwks`), and its keys are fetched
    /// and cached as a trusted issuer's `jwks_uri` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `web` or `native`; clients registered before it was kept are
    /// `web`, the default.
    #[serde(default)]
    pub application_type: ApplicationType,
    /// For `federated_jwt` and `spiffe_jwt`: the workload it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadIdentity>,
    /// RFC 9449 §5.2: the client always uses DPoP, so a token request
    /// without a proof is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound_access_tokens: bool,
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

vocabulary! {
    /// A client attribute a realm's DCR policy may set, by PingAM's name
    /// (`clientIdentity.setAttribute`): the one list of them. Setting one
    /// ([`ClientAttributes::set`]), showing them to policies
    /// ([`ClientAttributes::as_pairs`]), the registration response
    /// ([`ClientAttributes::as_json`]) and the contract's documentation
    /// follow it; a name not in it fails the registration.
    pub enum ClientAttribute {
        /// `["true"]` or `["false"]`: the client's own settings (its may-act
        /// plugin) apply.
        ProviderOverridesEnabled = "providerOverridesEnabled",
        /// `["true"]` or `["false"]`: access tokens are signed JWTs (RFC
        /// 9068) rather than opaque.
        StatelessTokensEnabled = "statelessTokensEnabled",
        /// `[plugin-name]`: the realm's may-act plugin that runs when a
        /// token is issued to the client (`[]` clears it).
        AccessTokenMayActScript = "accessTokenMayActScript",
        /// The resources (RFC 8707 `resource`, on any grant) and
        /// audiences (RFC 8693 `audience`, in an exchange) the client may
        /// ask tokens for, beside those the realm's `allowed_resources`
        /// allows.
        AllowedAudiences = "allowedAudiences",
        /// `[owner]`: who registered or sponsors the client (`user:alice`,
        /// `team:payments`, `issuer:https://idp.example`), for listings,
        /// bulk changes and the realm's per-owner cap (`[]` clears it).
        Owner = "owner",
        /// `[seconds]`: the client expires this long after it registered
        /// (`client_secret_expires_at`), whatever the realm's default for
        /// agents; `[]` leaves the default.
        ExpiresIn = "expiresIn",
    }
}

/// The values a client attribute takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeShape {
    /// `["true"]` or `["false"]`; a JSON boolean in responses.
    Flag,
    /// One plugin name, or none; a JSON string in responses.
    PluginName,
    /// At most [`MAX_AUDIENCES`] printable strings of 1 to
    /// [`MAX_AUDIENCE`] bytes; a JSON array in responses.
    Audiences,
    /// One printable string of 1 to [`MAX_OWNER`] bytes, or none; a JSON
    /// string in responses.
    Owner,
    /// One whole number of seconds from [`MIN_EXPIRES_IN`] to
    /// [`MAX_EXPIRES_IN`], or none; a JSON number in responses.
    Seconds,
}

impl ClientAttribute {
    /// The values this attribute takes.
    pub fn shape(self) -> AttributeShape {
        match self {
            Self::ProviderOverridesEnabled | Self::StatelessTokensEnabled => AttributeShape::Flag,
            Self::AccessTokenMayActScript => AttributeShape::PluginName,
            Self::AllowedAudiences => AttributeShape::Audiences,
            Self::Owner => AttributeShape::Owner,
            Self::ExpiresIn => AttributeShape::Seconds,
        }
    }
}

/// The longest plugin name a policy may point at.
const MAX_PLUGIN_NAME: usize = 64;
/// Most audiences a client may be allowed.
pub const MAX_AUDIENCES: usize = 16;
/// Longest audience a client may be allowed, in bytes.
pub const MAX_AUDIENCE: usize = 256;
/// Longest owner a client may name, in bytes.
pub const MAX_OWNER: usize = 256;
/// The shortest life a policy may give a client, seconds: a minute.
pub const MIN_EXPIRES_IN: i64 = 60;
/// The longest life a policy may give a client, seconds: ten years.
pub const MAX_EXPIRES_IN: i64 = 10 * 366 * 86_400;

/// Whether `owner` may name a client's owner: 1 to [`MAX_OWNER`] bytes, no
/// control characters.
pub fn is_owner(owner: &str) -> bool {
    !owner.is_empty() && owner.len() <= MAX_OWNER && !owner.chars().any(char::is_control)
}

impl AttributeShape {
    /// Checks `values` for the attribute `name` of this shape; the refusal
    /// says what the attribute takes.
    fn check(self, name: &str, values: &[String]) -> Result<(), String> {
        let fits = match self {
            Self::Flag => matches!(values, [v] if v == "true" || v == "false"),
            Self::PluginName => matches!(values, [] | [_]) && values.iter().all(|v| is_plugin_name(v)),
            Self::Audiences => {
                values.len() <= MAX_AUDIENCES
                    && values
                        .iter()
                        .all(|v| !v.is_empty() && v.len() <= MAX_AUDIENCE && !v.chars().any(char::is_control))
            }
            Self::Owner => matches!(values, [] | [_]) && values.iter().all(|v| is_owner(v)),
            Self::Seconds => {
                matches!(values, [] | [_])
                    && values.iter().all(|v| {
                        v.bytes().all(|b| b.is_ascii_digit())
                            && v.parse::<i64>().is_ok_and(|s| (MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&s))
                    })
            }
        };
        if fits {
            return Ok(());
        }
        Err(match self {
            Self::Flag => format!("attribute {name} takes [\"true\"] or [\"false\"]"),
            Self::PluginName => format!(
                "attribute {name} takes one plugin name (letters, digits, '-', '_', '.'; at most {MAX_PLUGIN_NAME})"
            ),
            Self::Audiences => format!(
                "attribute {name} takes at most {MAX_AUDIENCES} audiences of 1 to {MAX_AUDIENCE} printable characters"
            ),
            Self::Owner => format!("attribute {name} takes one owner of 1 to {MAX_OWNER} printable characters"),
            Self::Seconds => {
                format!("attribute {name} takes one whole number of seconds, {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}")
            }
        })
    }
}

/// Attributes a DCR policy sets on a client, with PingAM's names and
/// meaning (see [`ClientAttribute`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAttributes {
    /// `providerOverridesEnabled`: the client's own settings below apply.
    pub provider_overrides_enabled: bool,
    /// `accessTokenMayActScript`: the realm's may-act plugin that runs when
    /// a token is issued to this client.
    pub access_token_may_act_script: Option<String>,
    /// `statelessTokensEnabled`: access tokens are signed JWTs.
    pub stateless_tokens_enabled: bool,
    /// `allowedAudiences`: the resources and audiences the client may ask
    /// tokens for, beside those its realm allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_audiences: Vec<String>,
    /// `owner`: who registered or sponsors the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `expiresIn`: seconds from registration to the client's expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

impl ClientAttributes {
    /// Sets one attribute from a policy's answer. Unknown names and values
    /// of the wrong shape are refused, so a typo in a policy fails loudly
    /// instead of silently doing nothing.
    pub fn set(&mut self, name: &str, values: &[String]) -> Result<(), String> {
        let Some(attribute) = ClientAttribute::parse(name) else {
            return Err(format!("unknown client attribute {:?}", truncate(name, 64)));
        };
        attribute.shape().check(name, values)?;
        let flag = || values.first().is_some_and(|v| v == "true");
        match attribute {
            ClientAttribute::ProviderOverridesEnabled => self.provider_overrides_enabled = flag(),
            ClientAttribute::StatelessTokensEnabled => self.stateless_tokens_enabled = flag(),
            ClientAttribute::AccessTokenMayActScript => self.access_token_may_act_script = values.first().cloned(),
            ClientAttribute::AllowedAudiences => self.allowed_audiences = values.to_vec(),
            ClientAttribute::Owner => self.owner = values.first().cloned(),
            ClientAttribute::ExpiresIn => self.expires_in = values.first().and_then(|v| v.parse().ok()),
        }
        Ok(())
    }

    /// The values of `attribute` as a policy sets and sees them (`["true"]`
    /// for a flag); `None` when it is not set (flags always are).
    pub fn values(&self, attribute: ClientAttribute) -> Option<Vec<String>> {
        match attribute {
            ClientAttribute::ProviderOverridesEnabled => Some(vec![self.provider_overrides_enabled.to_string()]),
            ClientAttribute::StatelessTokensEnabled => Some(vec![self.stateless_tokens_enabled.to_string()]),
            ClientAttribute::AccessTokenMayActScript => self.access_token_may_act_script.clone().map(|p| vec![p]),
            ClientAttribute::AllowedAudiences => {
                Some(self.allowed_audiences.clone()).filter(|audiences| !audiences.is_empty())
            }
            ClientAttribute::Owner => self.owner.clone().map(|o| vec![o]),
            ClientAttribute::ExpiresIn => self.expires_in.map(|s| vec![s.to_string()]),
        }
    }

    /// The attributes that are set, as a policy sees them, in the table's
    /// order.
    pub fn as_pairs(&self) -> Vec<(&'static str, Vec<String>)> {
        ClientAttribute::ALL.into_iter().filter_map(|a| Some((a.as_str(), self.values(a)?))).collect()
    }

    /// The attributes that are set, as registration responses show them:
    /// flags as booleans, a plugin name as a string, audiences as an array.
    pub fn as_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        ClientAttribute::ALL
            .into_iter()
            .filter_map(|attribute| {
                let mut values = self.values(attribute)?;
                let value = match attribute.shape() {
                    AttributeShape::Flag => Value::Bool(values.first().is_some_and(|v| v == "true")),
                    AttributeShape::PluginName | AttributeShape::Owner => Value::String(values.pop()?),
                    AttributeShape::Seconds => Value::from(values.pop()?.parse::<i64>().ok()?),
                    AttributeShape::Audiences => Value::from(values),
                };
                Some((attribute.as_str().to_string(), value))
            })
            .collect()
    }

    /// The may-act plugin to run when issuing this client a token: only
    /// when provider overrides are enabled, as in PingAM.
    pub fn may_act_plugin(&self) -> Option<&str> {
        self.access_token_may_act_script.as_deref().filter(|_| self.provider_overrides_enabled)
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
            jwks_uri: None,
            application_type: ApplicationType::Web,
            workload: None,
            dpop_bound_access_tokens: false,
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
            jwks_uri: None,
            application_type: ApplicationType::Web,
            workload: None,
            dpop_bound_access_tokens: false,
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
    fn every_table_reads_back_its_own_names() {
        crate::vocabulary::assert_table(&GrantType::ALL, GrantType::as_str, GrantType::parse);
        crate::vocabulary::assert_table(&AuthMethod::ALL, AuthMethod::as_str, AuthMethod::parse);
        crate::vocabulary::assert_table(&ClientAttribute::ALL, ClientAttribute::as_str, ClientAttribute::parse);
        crate::vocabulary::assert_table(&ApplicationType::ALL, ApplicationType::as_str, ApplicationType::parse);
        assert_eq!(GrantType::TOKEN_EXCHANGE_URN, "urn:ietf:params:oauth:grant-type:token-exchange");
    }

    #[test]
    fn stored_metadata_keeps_its_names() {
        // Rows written before the tables existed must read back the same.
        let stored = r#"{"redirect_uris":[],"grant_types":["client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange","refresh_token"],"response_types":[],
            "client_name":null,"scope":"read","token_endpoint_auth_method":"private_key_jwt"}"#;
        let metadata: ClientMetadata = serde_json::from_str(stored).unwrap();
        assert_eq!(
            metadata.grant_types,
            [GrantType::ClientCredentials, GrantType::TokenExchange, GrantType::RefreshToken]
        );
        assert_eq!(metadata.token_endpoint_auth_method, AuthMethod::PrivateKeyJwt);
        assert_eq!(metadata.application_type, ApplicationType::Web, "rows without it are web clients");
        let written = serde_json::to_value(&metadata).unwrap();
        assert_eq!(written["grant_types"][1], GrantType::TOKEN_EXCHANGE_URN);
        assert_eq!(written["token_endpoint_auth_method"], "private_key_jwt");
    }

    #[test]
    fn every_attribute_sets_reads_back_and_shows_in_its_shape() {
        let mut a = ClientAttributes::default();
        for attribute in ClientAttribute::ALL {
            let values = match attribute.shape() {
                AttributeShape::Flag => strings(&["true"]),
                AttributeShape::PluginName => strings(&["some-plugin"]),
                AttributeShape::Audiences => strings(&["https://a.example", "https://b.example"]),
                AttributeShape::Owner => strings(&["team:payments"]),
                AttributeShape::Seconds => strings(&["3600"]),
            };
            a.set(attribute.as_str(), &values).unwrap();
            assert_eq!(a.values(attribute), Some(values.clone()), "{attribute}");
            let shown = &a.as_json()[attribute.as_str()];
            match attribute.shape() {
                AttributeShape::Flag => assert_eq!(shown, &serde_json::json!(true)),
                AttributeShape::PluginName => assert_eq!(shown, &serde_json::json!("some-plugin")),
                AttributeShape::Audiences => assert_eq!(shown, &serde_json::json!(values)),
                AttributeShape::Owner => assert_eq!(shown, &serde_json::json!("team:payments")),
                AttributeShape::Seconds => assert_eq!(shown, &serde_json::json!(3600)),
            }
        }
        let names: Vec<_> = a.as_pairs().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ClientAttribute::ALL.map(ClientAttribute::as_str));
    }

    #[test]
    fn attribute_refusals_say_what_the_attribute_takes() {
        let mut a = ClientAttributes::default();
        let refusal =
            |a: &mut ClientAttributes, name: &str, values: &[&str]| a.set(name, &strings(values)).unwrap_err();
        assert_eq!(refusal(&mut a, "clientId", &["x"]), r#"unknown client attribute "clientId""#);
        assert_eq!(
            refusal(&mut a, "statelessTokensEnabled", &["yes"]),
            r#"attribute statelessTokensEnabled takes ["true"] or ["false"]"#
        );
        assert_eq!(
            refusal(&mut a, "accessTokenMayActScript", &["a", "b"]),
            "attribute accessTokenMayActScript takes one plugin name (letters, digits, '-', '_', '.'; at most 64)"
        );
        assert_eq!(
            refusal(&mut a, "allowedAudiences", &[""]),
            "attribute allowedAudiences takes at most 16 audiences of 1 to 256 printable characters"
        );
        for bad in [&["59"][..], &["-3600"], &["+3600"], &["1e4"], &["999999999999"], &["60", "61"]] {
            assert_eq!(
                refusal(&mut a, "expiresIn", bad),
                "attribute expiresIn takes one whole number of seconds, 60 to 316224000",
                "{bad:?}"
            );
        }
        assert_eq!(
            refusal(&mut a, "owner", &["a\nb"]),
            "attribute owner takes one owner of 1 to 256 printable characters"
        );
        a.set("accessTokenMayActScript", &strings(&["p"])).unwrap();
        a.set("accessTokenMayActScript", &[]).unwrap();
        assert_eq!(a, ClientAttributes::default(), "an empty list clears the plugin");
    }

    /// The documentation a policy author reads: wit/policy.wit's
    /// `set-attributes` and docs/PLUGINS.md name every attribute, and the
    /// contract names none the table lacks.
    #[test]
    fn the_contract_and_the_plugin_guide_name_every_attribute() {
        let wit = include_str!("../../../wit/policy.wit");
        let guide = include_str!("../../../docs/PLUGINS.md");
        for attribute in ClientAttribute::ALL {
            let quoted = format!("`{attribute}`");
            assert!(wit.contains(&format!("/// - {quoted}:")), "wit/policy.wit does not document {quoted}");
            assert!(guide.contains(&quoted), "docs/PLUGINS.md does not name {quoted}");
        }
        let documented: Vec<&str> = wit
            .lines()
            .filter_map(|line| line.trim().strip_prefix("/// - `"))
            .filter_map(|rest| rest.split_once("`:").map(|(name, _)| name))
            .collect();
        assert!(!documented.is_empty(), "the set-attributes list moved");
        for name in documented {
            assert!(ClientAttribute::parse(name).is_some(), "wit/policy.wit documents {name}, which is no attribute");
        }
    }

    /// The README names every grant type and authentication method.
    #[test]
    fn the_readme_names_every_grant_and_authentication_method() {
        let readme = include_str!("../../../README.md");
        let names = GrantType::ALL.map(GrantType::as_str).into_iter().chain(AuthMethod::ALL.map(AuthMethod::as_str));
        for name in names {
            assert!(readme.contains(&format!("`{name}`")), "README.md does not name `{name}`");
        }
    }
}
