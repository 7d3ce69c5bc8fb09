//! The authorization endpoint's work (RFC 6749 §4.1 as OAuth 2.1 profiles
//! it, PKCE, RFC 8707 resources, RFC 9207 `iss`), with no HTTP in it: the
//! edge shows the pages and carries what this module seals.
//!
//! A request is checked once ([`Service::authorization_request`]); what it
//! asks for then travels through the login and consent forms *sealed*: a
//! MAC under the database's key, so every replica can open it, with an
//! expiry and a nonce that must equal the browser's CSRF cookie. The
//! signed-in user travels the same way in the session cookie. Nothing is
//! stored until the user has consented: then the code, by its keyed hash,
//! single use, for [`CODE_LIFETIME`] seconds.
//!
//! Once a user is signed in, the realm's authorize hook (if it selects
//! one) decides what the client may have: narrower scopes, consent asked
//! again, the `may_act` of the user's tokens, or a refusal. Consent is
//! remembered per user and client; a request within what was consented
//! to is not asked again unless the hook says so.

use agentauth_core::authorize::{self, Authorization, Refusal};
use agentauth_core::ports::{AuthorizationCode, Consent};
use agentauth_core::{Client, ErrorCode, MayAct, OAuthError, Scopes};
use agentauth_plugin_host::{AuthorizationRequest, HookKind, UserView};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::policy::{audited, hook_error};
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_jti, new_secret};
use crate::users::User;
use crate::{Service, internal};

/// How long a code may wait for its token request, seconds (RFC 6749
/// §4.1.2 recommends ten minutes at most; clients redeem at once).
pub const CODE_LIFETIME: i64 = 60;
/// How long a login or consent form may stay open, seconds.
pub const FORM_LIFETIME: i64 = 600;
/// How long a sign-in lasts, seconds.
pub const SESSION_LIFETIME: i64 = 8 * 3600;

/// An authorization request between its check and the user's answer, as
/// the login and consent forms carry it (sealed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub realm: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: String,
    pub code_challenge: String,
    pub resources: Vec<String>,
    /// The DPoP key the code is to be bound to, if the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// Equals the browser's CSRF cookie: a form posted from elsewhere has
    /// no way to know it.
    pub nonce: String,
    pub expires_at: i64,
}

/// A signed-in user, as the session cookie carries them (sealed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub realm: String,
    pub sub: String,
    pub auth_time: i64,
    pub expires_at: i64,
}

/// What the endpoint does next for a signed-in user.
#[derive(Debug)]
pub enum Step {
    /// Send the browser back to the client: with a code, or an error.
    Redirect(String),
    /// Ask the user: may this client have these scopes for these
    /// resources?
    Consent { client_name: String, client_id: String, scopes: Vec<String>, resources: Vec<String> },
}

impl Service {
    /// Checks an authorization request's parameters in `realm`: the
    /// client and redirect URI first (a failure there is shown, never
    /// redirected), then the rest.
    /// A client known only by its metadata document is first seen here,
    /// and counted against `source`'s registrations.
    pub fn authorization_request(
        &self,
        realm: &RealmRuntime,
        params: &[(String, String)],
        source: Option<std::net::IpAddr>,
    ) -> Result<Pending, Refusal> {
        let client_ids: Vec<&str> = params.iter().filter(|(n, _)| n == "client_id").map(|(_, v)| v.as_str()).collect();
        let client_id = match client_ids.as_slice() {
            [one] => *one,
            [] => return Err(Refusal::Page(OAuthError::invalid_request("client_id is required"))),
            _ => return Err(Refusal::Page(OAuthError::invalid_request("client_id is repeated"))),
        };
        let client = match self.find_or_admit_client(realm, client_id, source) {
            Ok(Some(row)) => row.client,
            Ok(None) => return Err(Refusal::Page(OAuthError::invalid_request("no such client in this realm"))),
            // A client metadata document that cannot be used: the request
            // names no usable client. (One that could not be fetched just
            // now is 503, as it is.)
            Err(e) if e.code == ErrorCode::InvalidClient => {
                return Err(Refusal::Page(OAuthError::invalid_request(e.description)));
            }
            Err(e) => return Err(Refusal::Page(e)),
        };
        let checked = authorize::check(&client, params, &realm.resource_rules)?;
        Ok(self.pending(realm, checked))
    }

    fn pending(&self, realm: &RealmRuntime, a: Authorization) -> Pending {
        Pending {
            realm: realm.name.clone(),
            client_id: a.client_id,
            redirect_uri: a.redirect_uri,
            state: a.state,
            scope: a.scopes.to_string(),
            code_challenge: a.code_challenge,
            resources: a.resources,
            dpop_jkt: a.dpop_jkt,
            nonce: new_jti(),
            expires_at: self.now().saturating_add(FORM_LIFETIME),
        }
    }

    /// A new session for `user`, signed in now.
    pub fn session(&self, realm: &RealmRuntime, user: &User) -> Session {
        let now = self.now();
        Session {
            realm: realm.name.clone(),
            sub: user.subject.clone(),
            auth_time: now,
            expires_at: now.saturating_add(SESSION_LIFETIME),
        }
    }

    /// `value` sealed for the browser: its JSON, and a MAC under the
    /// database's key.
    pub fn seal<T: Serialize>(&self, value: &T) -> String {
        self.seal_for(Purpose::Browser, value)
    }

    /// A sealed value of this server, if `sealed` is one (untouched).
    pub fn unseal<T: DeserializeOwned>(&self, sealed: &str) -> Option<T> {
        self.unseal_for(Purpose::Browser, sealed)
    }

    /// `value` sealed under `purpose`: only [`Service::unseal_for`] with
    /// the same purpose opens it.
    pub(crate) fn seal_for<T: Serialize>(&self, purpose: Purpose, value: &T) -> String {
        let json = serde_json::to_vec(value).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(&json);
        let mac = URL_SAFE_NO_PAD.encode(self.hasher.hash(purpose, &body));
        format!("{body}.{mac}")
    }

    /// A value this server sealed under `purpose`, if `sealed` is one.
    pub(crate) fn unseal_for<T: DeserializeOwned>(&self, purpose: Purpose, sealed: &str) -> Option<T> {
        let (body, mac) = sealed.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        if !self.hasher.matches(purpose, body, &mac) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
    }

    /// The pending request a form carried, if it is this realm's, live,
    /// and posted by the browser it was shown to (`csrf`, its cookie).
    pub fn open_pending(&self, realm: &RealmRuntime, sealed: &str, csrf: Option<&str>) -> Option<Pending> {
        let pending: Pending = self.unseal(sealed)?;
        let fresh = pending.realm == realm.name && pending.expires_at > self.now();
        let same_browser =
            csrf.is_some_and(|c| bool::from(subtle::ConstantTimeEq::ct_eq(c.as_bytes(), pending.nonce.as_bytes())));
        (fresh && same_browser).then_some(pending)
    }

    /// The signed-in user a session cookie names, if it is this realm's,
    /// live, and the user still active.
    pub fn open_session(&self, realm: &RealmRuntime, sealed: &str) -> Option<(Session, User)> {
        let session: Session = self.unseal(sealed)?;
        if session.realm != realm.name || session.expires_at <= self.now() {
            return None;
        }
        let user = self.user(&realm.name, &session.sub).ok()?;
        (user.state == agentauth_core::ports::UserState::Active).then_some((session, user))
    }

    /// Decides `pending` for the signed-in `user`: a redirect with a code,
    /// or the consent to ask. `consented` is the user's answer to a
    /// consent page for this very request. An error is for the client:
    /// send it with [`Service::error_redirect`].
    pub fn authorize(
        &self,
        realm: &RealmRuntime,
        pending: &Pending,
        session: &Session,
        user: &User,
        consented: bool,
    ) -> Result<Step, OAuthError> {
        let client = match self.store.client(&realm.name, &pending.client_id).map_err(internal)? {
            Some(row) if row.is_usable(self.now()) => row.client,
            // Deleted or disabled while the user was signing in.
            _ => return Err(OAuthError::new(ErrorCode::AccessDenied, "the client no longer exists or is disabled")),
        };
        crate::decisions::note(|d| {
            d.client_id = Some(client.client_id.clone());
            d.grant = Some("authorization_code".into());
            d.subject = Some(user.subject.clone());
            d.audience = pending.resources.clone();
        });
        let asked: Vec<String> = Scopes::parse(&pending.scope).unwrap_or_default().to_vec();
        let remembered = self.store.consent(&realm.name, &user.subject, &client.client_id).map_err(internal)?;
        let covered = remembered.as_ref().is_some_and(|c| {
            let scopes = Scopes::parse(&c.scope).unwrap_or_default();
            asked.iter().all(|s| scopes.contains(s)) && pending.resources.iter().all(|r| c.resources.contains(r))
        });
        let decided = match realm.settings.authorize_plugin.as_deref() {
            None => {
                agentauth_plugin_host::Authorization { scopes: asked.clone(), require_consent: false, may_act: None }
            }
            Some(name) => self.run_authorize(realm, name, user, &client, &asked, &pending.resources, covered)?,
        };
        let may_act = match decided.may_act {
            Some(claim)
                if claim.client_id != client.client_id
                    && !self.store.client_exists(&realm.name, &claim.client_id).map_err(internal)? =>
            {
                tracing::warn!(realm = %realm.name, "the authorize policy named a may_act client that does not exist");
                return Err(OAuthError::server_error("the realm's authorization policy failed"));
            }
            Some(claim) => Some(MayAct { client_id: claim.client_id, sub: claim.sub }),
            None => None,
        };
        if !consented && (!covered || decided.require_consent) {
            return Ok(Step::Consent {
                client_name: client.metadata.client_name.clone().unwrap_or_else(|| client.client_id.clone()),
                client_id: client.client_id.clone(),
                scopes: decided.scopes,
                resources: pending.resources.clone(),
            });
        }
        crate::decisions::note(|d| d.scope = Some(decided.scopes.join(" ")));
        let now = self.now();
        if consented {
            let consent = Consent {
                subject: user.subject.clone(),
                client_id: client.client_id.clone(),
                scope: decided.scopes.join(" "),
                resources: pending.resources.clone(),
                granted_at: now,
            };
            self.store.save_consent(&realm.name, &consent).map_err(internal)?;
        }
        let code = new_secret();
        let stored = AuthorizationCode {
            client_id: client.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge.clone(),
            subject: user.subject.clone(),
            scope: decided.scopes.join(" "),
            resources: pending.resources.clone(),
            may_act: may_act.map(|m| serde_json::to_string(&m)).transpose().map_err(internal)?,
            dpop_jkt: pending.dpop_jkt.clone(),
            auth_time: session.auth_time,
            created_at: now,
            expires_at: now.saturating_add(CODE_LIFETIME),
        };
        let hash = self.hasher.hash(Purpose::AuthorizationCode, &code);
        self.store.insert_code(&realm.name, &hash, &stored).map_err(internal)?;
        Ok(Step::Redirect(self.answer(realm, pending, &[("code", code.as_str())])))
    }

    /// Runs the realm's authorize policy for `user` and `client`.
    #[allow(clippy::too_many_arguments)]
    fn run_authorize(
        &self,
        realm: &RealmRuntime,
        plugin_name: &str,
        user: &User,
        client: &Client,
        scopes: &[String],
        resources: &[String],
        consented: bool,
    ) -> Result<agentauth_plugin_host::Authorization, OAuthError> {
        let plugin = realm.plugin(plugin_name, HookKind::Authorize)?;
        let view = UserView {
            sub: &user.subject,
            username: &user.username,
            name: user.display_name.as_deref(),
            email: user.email.as_deref(),
        };
        let request = AuthorizationRequest { scopes, resources, consented };
        let call = || self.host.run_authorize(plugin, &realm.plugin_limits, &realm.name, &view, client, &request);
        audited(realm, plugin, call).map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))
    }

    /// The redirect that answers `pending` with `error` (RFC 6749
    /// §4.1.2.1).
    pub fn error_redirect(&self, realm: &RealmRuntime, pending: &Pending, error: &OAuthError) -> String {
        self.answer(realm, pending, &[("error", error.code.as_str()), ("error_description", &error.description)])
    }

    /// The redirect to `redirect_uri` with `params`, the client's `state`
    /// and the issuer (RFC 9207).
    fn answer(&self, realm: &RealmRuntime, pending: &Pending, params: &[(&str, &str)]) -> String {
        redirect_to(&pending.redirect_uri, params, pending.state.as_deref(), &realm.issuer)
    }
}

impl Service {
    /// The name a client registered, for the pages to show; its id if it
    /// has none.
    pub fn client_name(&self, realm: &RealmRuntime, client_id: &str) -> String {
        match self.store.client(&realm.name, client_id) {
            Ok(Some(row)) => row.client.metadata.client_name.unwrap_or_else(|| client_id.to_string()),
            _ => client_id.to_string(),
        }
    }

    /// The consents the user `subject` of `realm` has given.
    pub fn consents(&self, realm: &str, subject: &str) -> Result<Vec<Consent>, crate::admin::AdminError> {
        self.user(realm, subject)?;
        Ok(self.store.consents(realm, subject)?)
    }

    /// Revokes the consent the user gave `client_id`, and ends every token
    /// family issued under it (each redeemed code's refresh tokens, access
    /// tokens, and what was exchanged from them): the client asks again,
    /// and what it holds stops working.
    pub fn revoke_consent(
        &self,
        realm: &str,
        subject: &str,
        client_id: &str,
        actor: &str,
    ) -> Result<(), crate::admin::AdminError> {
        self.user(realm, subject)?;
        let families = self.store.code_families(realm, subject, Some(client_id))?;
        let revoked = self.store.revoke_consent(realm, subject, client_id)?;
        self.end_families(realm, &families)?;
        if !revoked && families.is_empty() {
            return Err(crate::admin::AdminError::NotFound(format!(
                "user {subject} has given no consent to client {client_id}"
            )));
        }
        tracing::info!(realm, subject, client_id, actor, families = families.len(), "consent revoked");
        Ok(())
    }

    /// Ends the token families a user's codes issued (to every client):
    /// when the user is disabled or deleted.
    pub(crate) fn end_user_families(&self, realm: &str, subject: &str) -> Result<(), agentauth_core::ports::Error> {
        let families = self.store.code_families(realm, subject, None)?;
        self.end_families(realm, &families)
    }

    fn end_families(&self, realm: &str, families: &[String]) -> Result<(), agentauth_core::ports::Error> {
        for family in families {
            self.store.revoke_token(realm, &[], Some(family), None)?;
        }
        Ok(())
    }
}

/// `redirect_uri` with `params`, `state` and `iss` added to its query.
pub fn redirect_to(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, issuer: &str) -> String {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        // Checked at registration: never here.
        return redirect_uri.to_string();
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    url.to_string()
}
