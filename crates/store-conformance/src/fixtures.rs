//! Rows the tests store: a client, an audit entry, a plugin push, a user,
//! an authorization code, a consent. Also used by a backend's own tests.

use agentauth_core::ports::{
    AuditEntry, AuthorizationCode, ClientRow, Consent, PluginPush, PluginQuota, UserRow, UserState,
};
use agentauth_core::{ApplicationType, AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType, HookKind};

/// A client `id` whose secret hashes to `[1; 32]` and whose registration
/// access token hashes to `[2; 32]`.
pub fn client_row(id: &str) -> ClientRow {
    ClientRow {
        client: Client {
            client_id: id.into(),
            metadata: ClientMetadata {
                redirect_uris: vec!["https://a.example/cb".into()],
                grant_types: vec![GrantType::ClientCredentials],
                response_types: vec!["token".into()],
                client_name: Some("agent".into()),
                scope: "read write".into(),
                token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
                jwks_uri: None,
                application_type: ApplicationType::Native,
                workload: None,
                dpop_bound_access_tokens: false,
            },
            attributes: ClientAttributes { stateless_tokens_enabled: true, ..Default::default() },
            is_ai_agent: true,
            issued_at: 42,
        },
        secret_hash: vec![1; 32],
        registration_token_hash: vec![2; 32],
        state: agentauth_core::ports::ClientState::Active,
        tokens_valid_after: 0,
        expires_at: None,
        // As stored: a new client was last used when it registered.
        last_used_at: 42,
    }
}

/// An administrator's `action` at time 1.
pub fn audit(action: &str) -> AuditEntry {
    AuditEntry { at: 1, actor: "admin".into(), action: action.into(), ..Default::default() }
}

/// An active may-act plugin version with a compiled artifact, unbounded.
pub fn pushed<'a>(name: &'a str, sha256: &'a str, component: &'a [u8]) -> PluginPush<'a> {
    PluginPush {
        name,
        hook: HookKind::MayAct,
        sha256,
        component,
        activate: true,
        language: Some("Rust"),
        artifact: Some(("engine", b"compiled")),
        quota: PluginQuota::UNLIMITED,
    }
}

/// An active user `username` of subject `subject`, created at time 7,
/// whose password hash names the user (a PHC-shaped string; nothing here
/// verifies it).
pub fn user_row(subject: &str, username: &str) -> UserRow {
    UserRow {
        subject: subject.into(),
        username: username.into(),
        display_name: Some(format!("{username} (display)")),
        email: None,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${username}"),
        state: UserState::Active,
        created_at: 7,
    }
}

/// A code client `client_id` got for user `subject`, created at 10 and
/// expiring at 100, with every optional field set.
pub fn authorization_code(client_id: &str, subject: &str) -> AuthorizationCode {
    AuthorizationCode {
        client_id: client_id.into(),
        redirect_uri: "https://a.example/cb".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        subject: subject.into(),
        scope: "openid read".into(),
        resources: vec!["https://api.example/".into(), "calendar".into()],
        may_act: Some("{\"sub\":\"agent\"}".into()),
        dpop_jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into()),
        auth_time: 5,
        created_at: 10,
        expires_at: 100,
    }
}

/// The consent user `subject` gave client `client_id` at `granted_at`.
pub fn consent(subject: &str, client_id: &str, granted_at: i64) -> Consent {
    Consent {
        subject: subject.into(),
        client_id: client_id.into(),
        scope: "read".into(),
        resources: vec!["https://api.example/".into()],
        granted_at,
    }
}
