//! A realm's settings: what its operator and admins configure, stored as
//! JSON, each checked against its range before it is stored.

use agentauth_core::trust::TrustedIssuer;
use agentauth_core::{Algorithm, HookKind};
use serde::{Deserialize, Serialize};

/// The settings only the operator may change: they bound what one realm
/// may take from the server and its other realms.
pub const OPERATOR_SETTINGS: [&str; 14] = [
    "plugin_timeout_ms",
    "plugin_memory_bytes",
    "plugin_concurrency",
    "registrations_per_minute",
    "registrations_per_minute_per_source",
    "max_clients",
    "plugin_storage_versions",
    "plugin_storage_bytes",
    "plugin_pushes_per_minute",
    "key_rotations_per_minute",
    "max_published_keys",
    "decision_retention_days",
    "logins_per_minute_per_user",
    "logins_per_minute_per_source",
];

/// The most event receivers a realm lists.
pub const MAX_EVENT_RECEIVERS: usize = 4;

/// Event receivers are absolute `https` URLs without credentials or a
/// fragment (or `http` to a loopback host, which the server reaches only
/// when started for development), at most [`MAX_EVENT_RECEIVERS`] and
/// none twice. Where they resolve to is checked at each delivery.
fn check_event_receivers(receivers: &[String]) -> Result<(), String> {
    if receivers.len() > MAX_EVENT_RECEIVERS {
        return Err(format!("event_receivers: at most {MAX_EVENT_RECEIVERS}"));
    }
    for (i, receiver) in receivers.iter().enumerate() {
        let refused = |why: &str| Err(format!("event_receivers: {receiver:?} {why}"));
        if receiver.len() > 512 {
            return refused("is longer than 512 characters");
        }
        let Ok(url) = url::Url::parse(receiver) else {
            return refused("is not a URL");
        };
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return refused("must be https (http only to a loopback address)");
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return refused("must have no credentials and no fragment");
        }
        if receivers[..i].contains(receiver) {
            return refused("is listed twice");
        }
    }
    Ok(())
}

/// A realm's configuration, stored as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealmSettings {
    /// Agents may register at `aiagent/register`.
    pub ai_agents_enabled: bool,
    /// Anyone may register a client, with no initial access token.
    pub open_registration: bool,
    /// The plugin that serves the DCR hook, if any.
    pub dcr_plugin: Option<String>,
    /// The plugin that adds custom claims to access tokens, if any.
    pub token_plugin: Option<String>,
    /// The plugin that narrows or refuses requested scopes, if any.
    pub scope_plugin: Option<String>,
    /// The plugin that decides what a signed-in user authorizes a client
    /// to do (scopes, consent, `may_act`), if any. Left out of the stored
    /// JSON when unset, so replicas that predate it can still read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize_plugin: Option<String>,
    /// The plugin that decides what a verified token from an issuer
    /// outside the realm means here (local subject, scopes, `may_act`),
    /// if any. Left out of the stored JSON when unset, as
    /// `authorize_plugin` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_plugin: Option<String>,
    /// The realm's name on its login and consent pages (at most 100
    /// characters), if it wants one shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_title: Option<String>,
    /// CSS added after the pages' own (at most 16 KiB, no `<`): the
    /// realm's colours and fonts, changed without a rebuild. The pages
    /// load nothing from elsewhere, so neither may it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_css: Option<String>,
    /// The scopes clients may register; `None` allows any.
    pub allowed_scopes: Option<Vec<String>>,
    /// The resources (RFC 8707) any client of the realm may ask tokens
    /// for: exact absolute URIs, or prefixes ending in a `*` path segment
    /// (`https://api.example/tenants/*`); see
    /// [`agentauth_core::resource`]. Empty, the default, allows none but
    /// those a client's `allowedAudiences` attribute lists. Left out of
    /// the stored JSON while empty, so that replicas of a version without
    /// it, which refuse unknown settings, still read the realms that do
    /// not use it during a rolling upgrade.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_resources: Vec<String>,
    /// Issuers outside the realm whose JWTs it accepts, and for what
    /// (see [`agentauth_core::trust`]): at most 32, managed whole here or
    /// one at a time through `trusted-issuers`. Left out of the stored
    /// JSON while empty, for replicas that predate it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Whether a `client_id` that is an `https` URL names a client by its
    /// metadata document (draft-ietf-oauth-client-id-metadata-document),
    /// fetched when first used and run through the realm's DCR policy as a
    /// registration. Off by default: it lets anyone on the internet be a
    /// client, under that policy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_metadata_documents: bool,
    /// Whether the login page signs users in with a username and
    /// password of the realm (the default). Off, users sign in only at the
    /// realm's upstream providers (`trusted_issuers` with a `login`), and a
    /// posted password is refused unchecked; at least one such provider
    /// must then be configured. Left out of the stored JSON while on, for
    /// replicas that predate it.
    #[serde(skip_serializing_if = "is_true")]
    pub local_login: bool,
    /// Whether every agent (a client registered at `aiagent/register`)
    /// must prove possession of a key with DPoP (RFC 9449) at the token
    /// endpoint, so that each token it gets is bound to that key. Other
    /// clients choose with `dpop_bound_access_tokens`. Left out of the
    /// stored JSON while off, for replicas that predate it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dpop_required_for_agents: bool,
    /// Whether DPoP proofs must carry a nonce of the server's (RFC 9449
    /// §8), which bounds how long before its use a proof can be made.
    /// Left out of the stored JSON while off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dpop_nonces: bool,
    /// Days an agent registered at `aiagent/register` lives (its
    /// `client_secret_expires_at`); expired, it is refused as a disabled
    /// client is. 0, the default: agents do not expire. Left out of the
    /// stored JSON while 0, for replicas that predate it.
    #[serde(skip_serializing_if = "is_zero")]
    pub agent_lifetime_days: u32,
    /// Days an agent may go without authenticating before housekeeping
    /// disables it (audited). 0, the default: never.
    #[serde(skip_serializing_if = "is_zero")]
    pub disable_unused_agents_after_days: u32,
    /// Days an agent stays disabled or expired before housekeeping deletes
    /// it (audited). 0, the default: never.
    #[serde(skip_serializing_if = "is_zero")]
    pub delete_disabled_agents_after_days: u32,
    /// Clients one owner (the `owner` attribute a DCR policy sets, or a
    /// metadata document's host) may hold in the realm; a registration
    /// past it is refused. 0, the default: no cap but the realm's.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_clients_per_owner: u32,
    /// Whether a user of the realm may manage the agents it owns (those
    /// whose `owner` is `user:<its subject>`) at the realm's `agents`
    /// endpoints, with an access token carrying the scope
    /// [`crate::owners::AGENTS_SCOPE`], and becomes the owner of an agent
    /// it registers with such a token. Off by default: the scope is then
    /// just a name. Left out of the stored JSON while off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub owner_self_service: bool,
    /// Where the realm's security events go (RFC 8935 push delivery of
    /// RFC 8417 SETs signed with the realm's key): up to
    /// [`MAX_EVENT_RECEIVERS`] `https` URLs (`http` on loopback for
    /// development). See `events`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_receivers: Vec<String>,
    /// `RS256`, `ES256` or `EdDSA`.
    pub signing_alg: String,
    /// Access token lifetime, seconds.
    pub access_token_lifetime: i64,
    /// Refresh token lifetime, seconds.
    pub refresh_token_lifetime: i64,
    /// Time one plugin call may take, milliseconds.
    pub plugin_timeout_ms: u64,
    /// Memory one plugin instance may use in all its memories and tables
    /// together, bytes (at most 256 MiB).
    pub plugin_memory_bytes: usize,
    /// Registrations the realm accepts a minute, from all sources.
    pub registrations_per_minute: u32,
    /// Registrations the realm accepts a minute from one source (an IPv4
    /// address, or an IPv6 /64).
    pub registrations_per_minute_per_source: u32,
    /// Clients the realm may hold (10,000 by default; operator only): past
    /// it, registration answers 403 `access_denied` until a client is
    /// deleted, so open registration cannot grow the database without
    /// bound. With each registration's metadata bounded (32 KiB), the
    /// default bounds a realm's clients to about 320 MiB.
    pub max_clients: u32,
    /// Seconds a rotated-in key is published in the JWKS before it signs,
    /// so resource servers that cache the JWKS know it first.
    pub key_publish_seconds: i64,
    /// Days a signing key signs before a new one is rotated in
    /// automatically; 0 turns the schedule off.
    pub key_rotation_days: u32,
    /// Requests of this realm that may run its plugins at once (at most
    /// [`agentauth_plugin_host::MAX_REALM_CALLS`]); the others wait for a
    /// turn without holding a thread, and one that cannot start within the
    /// plugin timeout is answered 503.
    pub plugin_concurrency: usize,
    /// Whether token exchange may impersonate: a subject token whose
    /// `may_act` names no `sub` then yields a token without a new `act`.
    /// Off, the exchanging client is always named in `act`.
    pub token_exchange_impersonation: bool,
    /// The most actors a token's nested `act` chain may name; an exchange
    /// that would name more is `invalid_request`.
    pub max_delegation_depth: usize,
    /// Plugin versions the realm may store, of all its plugins, active or
    /// not; a push past it is refused (409) until versions are deleted.
    pub plugin_storage_versions: u32,
    /// Bytes of plugin components the realm may store, all versions
    /// together (the Python and JavaScript policies weigh 18 and 12 MB).
    pub plugin_storage_bytes: u64,
    /// Plugin uploads the realm accepts a minute, refused ones included
    /// (each may cost a compilation); past it, 429 with `Retry-After`.
    pub plugin_pushes_per_minute: u32,
    /// Signing key rotations the realm accepts a minute through the admin
    /// API (each makes a key, and keys stay published for a token
    /// lifetime); past it, 429 with `Retry-After`.
    pub key_rotations_per_minute: u32,
    /// Keys the realm may publish at once: each rotation keeps the keys
    /// before it in the JWKS for a token lifetime, so past this many a
    /// rotation through the admin API waits (429 with `Retry-After`) until
    /// the oldest retires. Rotations on schedule are not held back.
    pub max_published_keys: u32,
    /// Days the realm's decisions (each token issued or refused, each
    /// registration) are kept in its audit before housekeeping deletes
    /// them (operator only: they take the server's storage).
    pub decision_retention_days: u32,
    /// Login attempts a minute for one username of the realm, whether or
    /// not a user has it, in bursts of as many; past it the attempt is
    /// refused before the password is checked. Each costs a password hash
    /// (operator only: hashing is the server's CPU and memory).
    pub logins_per_minute_per_user: u32,
    /// Login attempts a minute to the realm from one source (an IPv4
    /// address, or an IPv6 /64), whatever the usernames tried.
    pub logins_per_minute_per_source: u32,
}

impl RealmSettings {
    /// Checks every setting's range, so a typo cannot make a realm that
    /// fails at its first request.
    pub fn validate(&self) -> Result<(), String> {
        if Algorithm::parse(&self.signing_alg).is_none() {
            return Err(format!("signing_alg {:?}: use RS256, ES256 or EdDSA", self.signing_alg));
        }
        let within = |name: &str, value: i64, low: i64, high: i64| {
            if (low..=high).contains(&value) { Ok(()) } else { Err(format!("{name} must be between {low} and {high}")) }
        };
        within("access_token_lifetime", self.access_token_lifetime, 60, 86_400)?;
        within("refresh_token_lifetime", self.refresh_token_lifetime, 60, 90 * 86_400)?;
        within("plugin_timeout_ms", self.plugin_timeout_ms as i64, 1, 10_000)?;
        within(
            "plugin_memory_bytes",
            self.plugin_memory_bytes as i64,
            1 << 20,
            agentauth_plugin_host::MAX_PLUGIN_MEMORY as i64,
        )?;
        within("plugin_concurrency", self.plugin_concurrency as i64, 1, agentauth_plugin_host::MAX_REALM_CALLS as i64)?;
        within("max_delegation_depth", self.max_delegation_depth as i64, 1, 32)?;
        within("key_publish_seconds", self.key_publish_seconds, 0, 86_400)?;
        within("key_rotation_days", i64::from(self.key_rotation_days), 0, 3650)?;
        within("registrations_per_minute", i64::from(self.registrations_per_minute), 1, 1_000_000)?;
        within(
            "registrations_per_minute_per_source",
            i64::from(self.registrations_per_minute_per_source),
            1,
            1_000_000,
        )?;
        within("max_clients", i64::from(self.max_clients), 1, 100_000_000)?;
        within("plugin_storage_versions", i64::from(self.plugin_storage_versions), 1, 10_000)?;
        within("plugin_storage_bytes", i64::try_from(self.plugin_storage_bytes).unwrap_or(i64::MAX), 1 << 20, 1 << 40)?;
        within("plugin_pushes_per_minute", i64::from(self.plugin_pushes_per_minute), 1, 10_000)?;
        within("key_rotations_per_minute", i64::from(self.key_rotations_per_minute), 1, 10_000)?;
        within("max_published_keys", i64::from(self.max_published_keys), 2, 1000)?;
        within("decision_retention_days", i64::from(self.decision_retention_days), 1, 3650)?;
        agentauth_core::resource::ResourceRules::parse(&self.allowed_resources)
            .map_err(|e| format!("allowed_resources: {e}"))?;
        agentauth_core::trust::validate_all(&self.trusted_issuers)?;
        for issuer in &self.trusted_issuers {
            check_static_jwks(issuer)?;
        }
        if !self.local_login
            && !self
                .trusted_issuers
                .iter()
                .any(|t| t.login.is_some() && t.serves(agentauth_core::trust::TrustPurpose::Login))
        {
            return Err("local_login: false needs a trusted issuer that signs users in (purpose login, with login \
                        settings); otherwise no one could sign in"
                .into());
        }
        within("agent_lifetime_days", i64::from(self.agent_lifetime_days), 0, 3650)?;
        within("disable_unused_agents_after_days", i64::from(self.disable_unused_agents_after_days), 0, 3650)?;
        within("delete_disabled_agents_after_days", i64::from(self.delete_disabled_agents_after_days), 0, 3650)?;
        within("max_clients_per_owner", i64::from(self.max_clients_per_owner), 0, 10_000)?;
        check_event_receivers(&self.event_receivers)?;
        within("logins_per_minute_per_user", i64::from(self.logins_per_minute_per_user), 1, 1000)?;
        within("logins_per_minute_per_source", i64::from(self.logins_per_minute_per_source), 1, 100_000)?;
        if let Some(title) = &self.page_title
            && (title.is_empty() || title.chars().count() > 100 || title.chars().any(char::is_control))
        {
            return Err("page_title: 1 to 100 printable characters".into());
        }
        if let Some(css) = &self.page_css
            && (css.len() > 16 * 1024 || css.contains('<') || css.contains('\\'))
        {
            return Err("page_css: at most 16 KiB of CSS, without '<' or '\\'".into());
        }
        if let Some(scopes) = &self.allowed_scopes {
            agentauth_core::Scopes::from_tokens(scopes.iter().map(String::as_str))
                .map_err(|e| format!("allowed_scopes: {}", e.description))?;
        }
        Ok(())
    }

    /// The plugin selected for a realm-wide hook.
    pub fn hook_plugin(&self, kind: HookKind) -> Option<&str> {
        match kind {
            HookKind::Dcr => self.dcr_plugin.as_deref(),
            HookKind::Token => self.token_plugin.as_deref(),
            HookKind::Scope => self.scope_plugin.as_deref(),
            HookKind::Authorize => self.authorize_plugin.as_deref(),
            HookKind::Assertion => self.assertion_plugin.as_deref(),
            // May-act plugins are chosen per client, by its attributes.
            HookKind::MayAct => None,
        }
    }

    /// Selects the plugin for a realm-wide hook; false for a per-client
    /// hook, which cannot be selected here.
    pub fn set_hook_plugin(&mut self, kind: HookKind, plugin: Option<String>) -> bool {
        match kind {
            HookKind::Dcr => self.dcr_plugin = plugin,
            HookKind::Token => self.token_plugin = plugin,
            HookKind::Scope => self.scope_plugin = plugin,
            HookKind::Authorize => self.authorize_plugin = plugin,
            HookKind::Assertion => self.assertion_plugin = plugin,
            HookKind::MayAct => return false,
        }
        true
    }
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// A trusted issuer's static JWKS: public keys only (a private one has
/// leaked, and would be shown and audited with the settings), at least one
/// of which this server can verify with.
fn check_static_jwks(issuer: &agentauth_core::trust::TrustedIssuer) -> Result<(), String> {
    let Some(jwks) = &issuer.jwks else { return Ok(()) };
    let keys = jwks.get("keys").and_then(serde_json::Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let private = ["d", "p", "q", "dp", "dq", "qi", "k"];
    if keys.iter().any(|jwk| private.iter().any(|member| jwk.get(*member).is_some())) {
        return Err(format!(
            "trusted issuer {:?}: jwks holds private key material; give public keys only",
            issuer.name
        ));
    }
    // The keys verification uses: an encryption key, or a SPIFFE bundle's
    // X.509 authority, verifies nothing.
    if !crate::trust::verify::parse_jwks(jwks).is_ok_and(|usable| !usable.is_empty()) {
        return Err(format!(
            "trusted issuer {:?}: jwks has no signing key this server verifies with (RSA 2048+, EC P-256, \
             Ed25519; use sig, jwt-svid or none)",
            issuer.name
        ));
    }
    Ok(())
}

impl Default for RealmSettings {
    fn default() -> Self {
        Self {
            ai_agents_enabled: false,
            open_registration: false,
            dcr_plugin: None,
            token_plugin: None,
            scope_plugin: None,
            authorize_plugin: None,
            assertion_plugin: None,
            page_title: None,
            page_css: None,
            allowed_scopes: None,
            allowed_resources: Vec::new(),
            trusted_issuers: Vec::new(),
            client_metadata_documents: false,
            local_login: true,
            dpop_required_for_agents: false,
            dpop_nonces: false,
            agent_lifetime_days: 0,
            disable_unused_agents_after_days: 0,
            delete_disabled_agents_after_days: 0,
            max_clients_per_owner: 0,
            owner_self_service: false,
            event_receivers: Vec::new(),
            // ring signs ES256 about thirty times faster than RS256, and
            // the tokens are smaller; RS256 stays a setting away.
            signing_alg: "ES256".into(),
            access_token_lifetime: 3600,
            refresh_token_lifetime: 7 * 24 * 3600,
            plugin_timeout_ms: 100,
            plugin_memory_bytes: 64 << 20,
            plugin_concurrency: 16,
            key_publish_seconds: 300,
            key_rotation_days: 90,
            registrations_per_minute: 6000,
            registrations_per_minute_per_source: 600,
            token_exchange_impersonation: false,
            max_delegation_depth: 8,
            max_clients: 10_000,
            plugin_storage_versions: 32,
            // Room for several versions of an interpreter-carrying policy;
            // each stored version may also be compiled and held in memory.
            plugin_storage_bytes: 128 << 20,
            plugin_pushes_per_minute: 10,
            key_rotations_per_minute: 2,
            max_published_keys: 10,
            decision_retention_days: 30,
            // A person mistyping gets several tries at once; a guesser gets
            // one every six seconds for each username.
            logins_per_minute_per_user: 10,
            logins_per_minute_per_source: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_resources_are_checked_when_set_and_stored_only_when_listed() {
        let with = |entries: &[&str]| RealmSettings {
            allowed_resources: entries.iter().map(|e| e.to_string()).collect(),
            ..RealmSettings::default()
        };
        assert_eq!(with(&["https://mcp.example/mcp", "https://api.example/tenants/*"]).validate(), Ok(()));
        for bad in ["mcp", "https://mcp.example/mcp#x", "https://*.example/", "https://API.example/t/*"] {
            let refusal = with(&[bad]).validate().unwrap_err();
            assert!(refusal.starts_with("allowed_resources: "), "{bad}: {refusal}");
        }
        let stored = serde_json::to_value(RealmSettings::default()).unwrap();
        assert!(stored.get("allowed_resources").is_none(), "{stored}");
        let listed = serde_json::to_value(with(&["https://mcp.example/mcp"])).unwrap();
        assert_eq!(listed["allowed_resources"], serde_json::json!(["https://mcp.example/mcp"]));
        let back: RealmSettings = serde_json::from_value(listed).unwrap();
        assert_eq!(back, with(&["https://mcp.example/mcp"]));
    }

    #[test]
    fn the_assertion_plugin_is_selected_like_the_other_realm_hooks_and_stored_only_when_set() {
        let mut settings = RealmSettings::default();
        assert!(HookKind::Assertion.is_realm_wide());
        assert!(settings.set_hook_plugin(HookKind::Assertion, Some("trusted-domains-assertion".into())));
        assert_eq!(settings.hook_plugin(HookKind::Assertion), Some("trusted-domains-assertion"));
        assert_eq!(settings.assertion_plugin.as_deref(), Some("trusted-domains-assertion"));
        assert_eq!(settings.validate(), Ok(()));
        let stored = serde_json::to_value(&settings).unwrap();
        assert_eq!(stored["assertion_plugin"], "trusted-domains-assertion");
        assert_eq!(serde_json::from_value::<RealmSettings>(stored).unwrap(), settings);
        // Unset, it is left out, so replicas that predate it read the realm.
        let stored = serde_json::to_value(RealmSettings::default()).unwrap();
        assert!(stored.get("assertion_plugin").is_none(), "{stored}");
    }
}
