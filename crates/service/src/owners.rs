//! Users as the owners of their agents.
//!
//! A client's `owner` attribute names who registered or sponsors it. Most
//! owners are labels only an operator acts on (`team:payments`, a
//! metadata document's `document:<host>`); one kind can act itself: a
//! user of the realm, named `user:<its subject>` (the `sub` of its
//! tokens, stable and never reused). In a realm with
//! `owner_self_service` on, such a user, holding an access token of the
//! realm with the scope [`AGENTS_SCOPE`]:
//! - becomes the owner of an agent it registers with that token (RFC 7591
//!   §3's initial access token), unless the realm's DCR policy names
//!   another owner;
//! - lists and reads its agents at the realm's `agents` endpoint, and
//!   disables one, or all of them at once: every token an agent holds
//!   then dies, as when an admin disables it. Enabling an agent again is
//!   left to the realm's admins, so an owner cannot undo their decision.
//!
//! The token is checked as a resource server checks one (RFC 6750,
//! RFC 9449 §7): live in this realm, of an active user, the user's own
//! (issued by the code grant, or a refresh of it, to a client the user
//! signed in to and consented for: such tokens carry `auth_time`; not an
//! agent's acting for it, which carries `act`, nor one an ID-JAG or a
//! token exchange made in its name), for this API (its
//! default audience, the client that asked for it, or the `agents`
//! endpoint as an RFC 8707 resource; a token for another resource server
//! is not one this server accepts), and, when bound to a DPoP key, with a
//! proof of that key naming the token in `ath`.

use agentauth_core::ports::{ClientFilter, ClientRow, ClientState};
use agentauth_core::user::is_user_subject;
use agentauth_core::{ErrorCode, OAuthError};
use serde_json::json;

use crate::admin::{AdminError, audit};
use crate::realm::RealmRuntime;
use crate::{Service, internal};

/// The scope a token needs to manage its user's agents.
pub const AGENTS_SCOPE: &str = "agentauth:agents";

/// The owner name of the user of subject `subject`.
pub fn user_owner(subject: &str) -> String {
    format!("user:{subject}")
}

/// The scheme a request presents its access token with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750 §2.1).
    Bearer,
    /// `Authorization: DPoP`, with a proof in the `DPoP` header (RFC 9449
    /// §7.1).
    Dpop,
}

/// An access token as a request presents it.
pub struct Presented<'a> {
    pub scheme: Scheme,
    pub token: &'a str,
    /// The request's `DPoP` headers.
    pub proofs: &'a [&'a str],
    pub method: &'a str,
    /// The URL the request was made to, as a proof's `htu` names it.
    pub url: &'a str,
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented").field("scheme", &self.scheme).field("url", &self.url).finish_non_exhaustive()
    }
}

/// A user of the realm, authenticated by a token it presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    subject: String,
}

impl Owner {
    /// The user's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The name its agents carry in their `owner` attribute.
    pub fn name(&self) -> String {
        user_owner(&self.subject)
    }
}

fn invalid_token(why: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidToken, why)
}

impl Service {
    /// The user `presented` speaks for at the realm's own resources (see
    /// the module's documentation), or why not: `invalid_token`,
    /// `invalid_dpop_proof`, `use_dpop_nonce` or `insufficient_scope`.
    pub fn owner_of(&self, realm: &RealmRuntime, presented: &Presented<'_>) -> Result<Owner, OAuthError> {
        let claims = self
            .access_token_claims(realm, presented.token)?
            .ok_or_else(|| invalid_token("the access token is not live in this realm"))?;
        match (&claims.cnf, presented.scheme) {
            (Some(cnf), Scheme::Dpop) => {
                let proof =
                    self.check_dpop(realm, presented.proofs, presented.method, presented.url, Some(presented.token))?;
                let proof = proof.ok_or_else(|| {
                    OAuthError::new(ErrorCode::InvalidDpopProof, "a DPoP-bound access token needs a DPoP proof")
                })?;
                if proof.jkt != cnf.jkt {
                    return Err(invalid_token("the DPoP proof's key is not the one the access token is bound to"));
                }
            }
            // RFC 9449 §7.2: a bound token is never accepted as a bearer one.
            (Some(_), Scheme::Bearer) => {
                return Err(invalid_token(
                    "the access token is DPoP-bound: present it with the DPoP scheme and a proof",
                ));
            }
            (None, Scheme::Dpop) => {
                return Err(invalid_token("the access token is not DPoP-bound: present it with the Bearer scheme"));
            }
            (None, Scheme::Bearer) => {}
        }
        // The user's own: given by the user signing in (the code grant and
        // its refreshes carry `auth_time`), not an agent's acting for the
        // user (`act`), nor a token another grant made in the user's name
        // (an ID-JAG, a JWT bearer assertion, an impersonating exchange).
        if claims.act.is_some() {
            return Err(invalid_token("the access token is an agent's acting for a user, not the user's own"));
        }
        if claims.auth_time.is_none() {
            return Err(invalid_token(
                "the access token was not given by a user signing in (the authorization code grant)",
            ));
        }
        let agents = realm.endpoint("agents");
        let default_audience = claims.aud == claims.client_id && claims.more_aud.is_empty();
        if !default_audience && claims.aud != agents && !claims.more_aud.contains(&agents) {
            return Err(invalid_token("the access token is for another resource"));
        }
        // A client's own token (client credentials) names the client.
        let not_a_user = || invalid_token("the access token does not name an active user of this realm");
        if !is_user_subject(&claims.sub) {
            return Err(not_a_user());
        }
        if !claims.scope.split(' ').any(|s| s == AGENTS_SCOPE) {
            return Err(OAuthError::new(
                ErrorCode::InsufficientScope,
                format!("the access token needs the scope {AGENTS_SCOPE}"),
            ));
        }
        match self.store.user(&realm.name, &claims.sub).map_err(internal)? {
            Some(user) if user.state == agentauth_core::ports::UserState::Active => Ok(Owner { subject: user.subject }),
            _ => Err(not_a_user()),
        }
    }

    /// A page of `owner`'s clients in id order, after `after`, at most
    /// `limit` (100 by default, 1,000 at most); and the id to ask
    /// the next page after, when the page is full.
    pub fn owned_clients(
        &self,
        realm: &RealmRuntime,
        owner: &Owner,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<ClientRow>, Option<String>), OAuthError> {
        let filter = ClientFilter { owner: Some(owner.name()), ..ClientFilter::default() };
        self.list_clients(&realm.name, &filter, after, limit).map_err(from_admin)
    }

    /// `owner`'s client `client_id`; `None` if there is none, or it is
    /// another's.
    pub fn owned_client(
        &self,
        realm: &RealmRuntime,
        owner: &Owner,
        client_id: &str,
    ) -> Result<Option<ClientRow>, OAuthError> {
        let only = ClientFilter {
            client_id: Some(client_id.to_string()),
            owner: Some(owner.name()),
            ..ClientFilter::default()
        };
        Ok(self.store.clients(&realm.name, &only, "", 1).map_err(internal)?.pop())
    }

    /// Disables `owner`'s client `client_id` (audited, the user as the
    /// actor): the client as it is now, or `None` if it is not the
    /// owner's. Disabling a disabled client changes nothing.
    pub fn disable_owned_client(
        &self,
        realm: &RealmRuntime,
        owner: &Owner,
        client_id: &str,
    ) -> Result<Option<ClientRow>, OAuthError> {
        let Some(row) = self.owned_client(realm, owner, client_id)? else {
            return Ok(None);
        };
        if row.state == ClientState::Disabled {
            return Ok(Some(row));
        }
        let detail = json!({ "client_id": client_id, "owner": owner.name() }).to_string();
        let entry = audit(self.now(), &owner.name(), "disable-client", None, Some(detail));
        let now = self.now();
        self.store.set_client_state(&realm.name, client_id, ClientState::Disabled, now, &entry).map_err(internal)?;
        tracing::info!(realm = %realm.name, client_id, owner = %owner.name(), "an owner disabled its client");
        self.owned_client(realm, owner, client_id)
    }

    /// Disables every active client of `owner` (each audited); how many.
    pub fn disable_all_owned(&self, realm: &RealmRuntime, owner: &Owner) -> Result<usize, OAuthError> {
        self.disable_owned(&realm.name, &owner.name(), &owner.name()).map_err(from_admin)
    }
}

/// An admin operation's refusal as the owner sees it.
fn from_admin(error: AdminError) -> OAuthError {
    match error {
        AdminError::Invalid(why) => OAuthError::invalid_request(why),
        other => {
            tracing::error!("an owner's request: {other}");
            OAuthError::new(ErrorCode::ServerError, "the request could not be completed")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agentauth_core::{AccessTokenClaims, Act, Confirmation};
    use agentauth_plugin_host::{PluginHost, RequestContext};
    use agentauth_store::Store;

    use super::*;
    use crate::users::NewUser;
    use crate::{Clock, Config, ManualClock, RealmSettings};

    const REALM: &str = "people";
    const NOW: i64 = 1_900_000_000;

    /// A service whose realm has a user and a client; the realm, the
    /// user's subject and the client's id.
    fn setup() -> (Service, Arc<RealmRuntime>, String, String) {
        let config = Config {
            master_key: Arc::new(agentauth_jose::MasterKey::generate().unwrap().0),
            admin_token: None,
            issuer_prefix: "https://as.example.test/am".into(),
            fetch: Default::default(),
        };
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(NOW));
        let store = Arc::new(Store::open_in_memory().unwrap());
        let service = Service::new(config, store, PluginHost::new().unwrap(), clock).unwrap();
        let settings = RealmSettings { owner_self_service: true, ..RealmSettings::default() };
        assert!(service.provision_realm(REALM, &settings, &[]).unwrap());
        let new = NewUser {
            username: "ada".into(),
            password: crate::password::Password::new("correct horse battery".into()),
            display_name: None,
            email: None,
        };
        let ada = service.create_user(REALM, new, "admin").unwrap();
        let realm = service.realm(REALM).unwrap().unwrap();
        let request = json!({"client_name": "Inspector", "redirect_uris": ["http://127.0.0.1/cb"]});
        let registered = service.register(&realm, false, &request, RequestContext::default(), None).unwrap();
        let client_id = registered.0["client_id"].as_str().unwrap().to_string();
        (service, realm, ada.subject, client_id)
    }

    /// What the code grant gives `subject` through `client_id`, scoped to
    /// manage agents.
    fn users_claims(realm: &RealmRuntime, subject: &str, client_id: &str) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: realm.issuer.clone(),
            sub: subject.into(),
            aud: client_id.into(),
            more_aud: vec![],
            client_id: client_id.into(),
            scope: format!("read {AGENTS_SCOPE}"),
            iat: NOW,
            exp: NOW + 300,
            jti: "j1".into(),
            may_act: None,
            act: None,
            cnf: None,
            auth_time: Some(NOW - 60),
            custom: serde_json::Map::new(),
        }
    }

    fn owner(service: &Service, realm: &RealmRuntime, claims: &AccessTokenClaims) -> Result<Owner, OAuthError> {
        let payload = serde_json::to_value(claims).unwrap();
        let token = agentauth_jose::sign(&realm.signing_key, "at+jwt", &payload).unwrap();
        let url = realm.endpoint("agents");
        let presented = Presented { scheme: Scheme::Bearer, token: &token, proofs: &[], method: "GET", url: &url };
        service.owner_of(realm, &presented)
    }

    #[test]
    fn only_the_users_own_signed_in_token_for_this_api_with_the_scope_speaks_for_the_user() {
        let (service, realm, ada, client_id) = setup();
        let good = users_claims(&realm, &ada, &client_id);
        assert_eq!(owner(&service, &realm, &good).map(|o| o.name()), Ok(format!("user:{ada}")));
        let for_the_api = AccessTokenClaims { aud: realm.endpoint("agents"), ..good.clone() };
        assert!(owner(&service, &realm, &for_the_api).is_ok(), "the agents endpoint as an RFC 8707 resource");

        let code = |claims: &AccessTokenClaims| owner(&service, &realm, claims).map_err(|e| e.code);
        let refused = [
            // An ID-JAG, a JWT bearer assertion or an impersonating exchange
            // may name the user, but the user did not sign in for it.
            ("no auth_time", AccessTokenClaims { auth_time: None, ..good.clone() }, ErrorCode::InvalidToken),
            (
                "an agent acting for the user",
                AccessTokenClaims {
                    act: Some(Act { sub: "agent".into(), client_id: Some(client_id.clone()), act: None }),
                    ..good.clone()
                },
                ErrorCode::InvalidToken,
            ),
            (
                "for another resource",
                AccessTokenClaims { aud: "https://mcp.example/".into(), ..good.clone() },
                ErrorCode::InvalidToken,
            ),
            (
                "for the client and another resource",
                AccessTokenClaims { more_aud: vec!["https://mcp.example/".into()], ..good.clone() },
                ErrorCode::InvalidToken,
            ),
            ("the client's own", AccessTokenClaims { sub: client_id.clone(), ..good.clone() }, ErrorCode::InvalidToken),
            (
                "without the scope",
                AccessTokenClaims { scope: "read".into(), ..good.clone() },
                ErrorCode::InsufficientScope,
            ),
            (
                "DPoP-bound, as a bearer token",
                AccessTokenClaims { cnf: Some(Confirmation { jkt: "k".repeat(43) }), ..good.clone() },
                ErrorCode::InvalidToken,
            ),
            ("expired", AccessTokenClaims { exp: NOW, ..good.clone() }, ErrorCode::InvalidToken),
            (
                "another realm's",
                AccessTokenClaims { iss: realm.issuer.replace("/people", "/other"), ..good.clone() },
                ErrorCode::InvalidToken,
            ),
            ("of no user", AccessTokenClaims { sub: "usr_nobody".into(), ..good.clone() }, ErrorCode::InvalidToken),
        ];
        for (why, claims, expected) in refused {
            assert_eq!(code(&claims), Err(expected), "{why}");
        }
    }
}
