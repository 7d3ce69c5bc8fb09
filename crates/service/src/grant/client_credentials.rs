//! The client credentials grant (RFC 6749 §4.4): a client's token for
//! itself, within its registered scopes, for the resources it names
//! (RFC 8707) if the realm or the client's policy allows them.

use agentauth_core::grant::client_credentials;
use agentauth_core::{Client, GrantType, OAuthError, Scopes};

use super::{TokenResponse, mint, persist};
use crate::Service;
use crate::dpop::Dpop;
use crate::realm::RealmRuntime;

pub(crate) fn issue(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    scope: Option<Scopes>,
    resources: &[String],
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, OAuthError> {
    let request = client_credentials::decide(client, scope, resources, &realm.resource_rules)?;
    let minted = mint(svc, realm, client, request, GrantType::ClientCredentials, dpop)?;
    persist(svc, realm, &minted.stored(None))?;
    minted.count(realm, GrantType::ClientCredentials, false);
    Ok(minted.response(None, false))
}
