//! Rows the tests of several aggregates share.

use agentauth_core::{AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType, HookKind};

use crate::{AuditEntry, ClientRow, PluginPush, PluginQuota};

pub(crate) fn client_row(id: &str) -> ClientRow {
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
            },
            attributes: ClientAttributes { stateless_tokens_enabled: true, ..Default::default() },
            is_ai_agent: true,
            issued_at: 42,
        },
        secret_hash: vec![1; 32],
        registration_token_hash: vec![2; 32],
    }
}

pub(crate) fn audit(action: &str) -> AuditEntry {
    AuditEntry { at: 1, actor: "admin".into(), action: action.into(), ..Default::default() }
}

pub(crate) fn pushed<'a>(name: &'a str, sha256: &'a str, component: &'a [u8]) -> PluginPush<'a> {
    PluginPush {
        name,
        hook: HookKind::MayAct,
        sha256,
        component,
        activate: true,
        artifact: Some(("engine", b"compiled")),
        quota: PluginQuota::UNLIMITED,
    }
}
