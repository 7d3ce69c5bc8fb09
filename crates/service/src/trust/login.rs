//! Signing users in at an upstream OpenID provider, for the authorization
//! endpoint: the authorization code grant with PKCE there, the ID token
//! checked against the trusted issuer, its subject mapped by the realm's
//! assertion policy (purpose `login`).
//!
//! Nothing is stored between the two legs. The `state` sent upstream is
//! sealed (a MAC under the database's key) and holds the pending request,
//! the issuer and a random nonce, which is also a cookie of the browser
//! that started: a callback in another browser (login CSRF) finds no
//! cookie. The PKCE verifier and the OpenID `nonce` are derived from the
//! random one under the server's key, so the state, which the browser can
//! read, reveals neither.

use agentauth_core::trust::{TrustPurpose, TrustedIssuer};
use agentauth_core::{ErrorCode, OAuthError};
use agentauth_fetch::Limits;
use agentauth_jose::ExternalType;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::verify::AudienceRule;
use crate::authorize::{FORM_LIFETIME, Pending, Session};
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_secret};
use crate::users::User;
use crate::{Service, internal};

/// What the `state` sent upstream carries.
#[derive(Debug, Serialize, Deserialize)]
struct UpstreamState {
    /// Marks the sealed value as this kind, and no other.
    upstream_login: String,
    realm: String,
    pending: Pending,
    nonce: String,
    expires_at: i64,
}

/// Where to send the browser, and the cookie it must carry back.
#[derive(Debug)]
pub struct UpstreamStart {
    pub location: String,
    /// The value of the browser-binding cookie.
    pub nonce: String,
}

/// A user signed in at an upstream provider, as its ID token described
/// them.
struct ExternalUser {
    /// `preferred_username`, else `email`, else the provider's `sub`.
    username: String,
    name: Option<String>,
    email: Option<String>,
}

/// Why a sign-in at a provider did not sign anyone in.
#[derive(Debug)]
pub struct UpstreamRefused {
    /// The request the sign-in was for, once the answer is known to come
    /// back to the browser that started it: the login page can be shown
    /// again, with the error, for the user to try again or another way.
    /// `None` for an answer that is not this browser's.
    pub pending: Option<Box<Pending>>,
    pub error: OAuthError,
}

/// The provider's endpoints, from its discovery document.
struct Endpoints {
    authorization: String,
    token: String,
}

fn login_error(why: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::AccessDenied, why)
}

impl Service {
    /// The realm's upstream providers, as the login page offers them:
    /// their names and labels.
    pub fn upstream_logins(&self, realm: &RealmRuntime) -> Vec<(String, String)> {
        realm
            .settings
            .trusted_issuers
            .iter()
            .filter(|t| t.serves(TrustPurpose::Login))
            .filter_map(|t| {
                let login = t.login.as_ref()?;
                Some((t.name.clone(), login.label.clone().unwrap_or_else(|| t.issuer.clone())))
            })
            .collect()
    }

    /// Starts signing in at the provider `name` for `pending`.
    pub fn start_upstream_login(
        &self,
        realm: &RealmRuntime,
        pending: &Pending,
        name: &str,
    ) -> Result<UpstreamStart, OAuthError> {
        let issuer = upstream(realm, name)?;
        let login = issuer.login.as_ref().ok_or_else(|| login_error("no such provider"))?;
        let endpoints = self.endpoints(realm, issuer)?;
        let nonce = new_secret();
        let state = UpstreamState {
            upstream_login: issuer.name.clone(),
            realm: realm.name.clone(),
            pending: pending.clone(),
            nonce: nonce.clone(),
            expires_at: self.now().saturating_add(FORM_LIFETIME),
        };
        let challenge = crate::grant::authorization_code::s256(&self.derived(&nonce, "pkce"));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &login.client_id)
            .append_pair("redirect_uri", &realm.endpoint("authorize/upstream"))
            .append_pair("scope", &login.scope)
            .append_pair("state", &self.seal(&state))
            .append_pair("nonce", &self.derived(&nonce, "nonce"))
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if endpoints.authorization.contains('?') { '&' } else { '?' };
        Ok(UpstreamStart { location: format!("{}{separator}{query}", endpoints.authorization), nonce })
    }

    /// Finishes signing in: the provider's answer (`params`, the callback's
    /// query) in the browser holding `cookie`. The pending request it
    /// started from, and the signed-in user's session.
    pub fn finish_upstream_login(
        &self,
        realm: &RealmRuntime,
        params: &[(String, String)],
        cookie: Option<&str>,
    ) -> Result<(Pending, Session, User), UpstreamRefused> {
        let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let not_this_browser = |error| UpstreamRefused { pending: None, error };
        let state: UpstreamState = param("state")
            .and_then(|s| self.unseal(s))
            .ok_or_else(|| not_this_browser(OAuthError::invalid_request("the sign-in's state is not this server's")))?;
        let same_browser =
            cookie.is_some_and(|c| bool::from(subtle::ConstantTimeEq::ct_eq(c.as_bytes(), state.nonce.as_bytes())));
        if state.realm != realm.name || state.expires_at <= self.now() || !same_browser {
            return Err(not_this_browser(OAuthError::invalid_request(
                "the sign-in expired, or was started in another browser",
            )));
        }
        let answer = self.redeem_upstream(realm, &state, &param);
        answer.map_err(|error| UpstreamRefused { pending: Some(Box::new(state.pending.clone())), error }).map(
            |(session, user)| {
                tracing::info!(realm = %realm.name, upstream = %state.upstream_login, "a user signed in upstream");
                (state.pending, session, user)
            },
        )
    }

    /// The provider's answer to the sign-in `state`, whose browser is
    /// known: the code redeemed, the ID token checked, its user mapped to
    /// the realm's.
    fn redeem_upstream<'a>(
        &self,
        realm: &RealmRuntime,
        state: &UpstreamState,
        param: &impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(Session, User), OAuthError> {
        let issuer = upstream(realm, &state.upstream_login)?;
        let login = issuer.login.as_ref().ok_or_else(|| login_error("no such provider"))?;
        if let Some(error) = param("error") {
            tracing::info!(realm = %realm.name, upstream = %issuer.name, error, "the provider refused the sign-in");
            return Err(login_error("the provider did not sign you in"));
        }
        // RFC 9207: an answer naming another issuer is a mix-up.
        if param("iss").is_some_and(|iss| iss != issuer.issuer) {
            return Err(login_error("the answer came from another provider"));
        }
        let code = param("code").ok_or_else(|| OAuthError::invalid_request("the provider sent no code"))?;
        let endpoints = self.endpoints(realm, issuer)?;
        let secret = match &login.client_secret_env {
            Some(env) => Some(std::env::var(env).map_err(|_| {
                tracing::error!(realm = %realm.name, upstream = %issuer.name, env, "the upstream client secret is not set");
                OAuthError::server_error("the provider's sign-in is not configured")
            })?),
            None => None,
        };
        let verifier = self.derived(&state.nonce, "pkce");
        let redirect_uri = realm.endpoint("authorize/upstream");
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        if secret.is_none() {
            form.push(("client_id", login.client_id.as_str()));
        }
        let basic = secret.as_deref().map(|s| (login.client_id.as_str(), s));
        let tokens = self
            .trust
            .fetcher()
            .post_form_for(&realm.name, &endpoints.token, &form, basic, &Limits::DOCUMENT)
            .map_err(|e| {
                tracing::warn!(realm = %realm.name, upstream = %issuer.name, "redeeming the provider's code: {e}");
                OAuthError::new(ErrorCode::TemporarilyUnavailable, "the provider's answer could not be redeemed")
            })?;
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| login_error("the provider returned no ID token"))?;
        let verified = self
            .verify_external(realm, id_token, TrustPurpose::Login, ExternalType::Jwt, AudienceRule::LoginClient, false)
            .map_err(|refused| {
                tracing::warn!(realm = %realm.name, upstream = %issuer.name, "ID token refused: {refused}");
                login_error(format!("the provider's ID token: {}", refused.reason))
            })?;
        // Another provider of the realm's token, relayed by this one, is
        // not this sign-in's.
        if verified.issuer.name != issuer.name {
            return Err(login_error("the provider's ID token was issued by another provider"));
        }
        if verified.text("nonce") != Some(self.derived(&state.nonce, "nonce").as_str()) {
            return Err(login_error("the provider's ID token is not for this sign-in"));
        }
        let pending = &state.pending;
        let client = self.find_client(realm, &pending.client_id)?.map(|row| row.client);
        let scopes: Vec<String> = pending.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect();
        let mapped = self.map_external(
            realm,
            &verified,
            TrustPurpose::Login,
            client.as_ref(),
            &scopes,
            &pending.resources,
            ErrorCode::AccessDenied,
        )?;
        let text = |name: &str| verified.text(name).map(str::to_string);
        let external = ExternalUser {
            username: text("preferred_username").or_else(|| text("email")).unwrap_or_else(|| verified.subject.clone()),
            name: text("name"),
            email: text("email"),
        };
        let user = self.upstream_user(realm, issuer, &mapped.subject, &external)?;
        Ok((self.session(realm, &user), user))
    }

    /// The realm's user for an upstream one: made on their first sign-in
    /// (as a user of the realm, so consents, codes and the admin's
    /// disable and delete apply; with a password no one knows, so only
    /// the provider signs them in), refused while disabled.
    fn upstream_user(
        &self,
        realm: &RealmRuntime,
        issuer: &TrustedIssuer,
        subject: &str,
        external: &ExternalUser,
    ) -> Result<User, OAuthError> {
        use agentauth_core::ports::{UserRow, UserState};
        // The realm's users are `usr_` subjects: a policy may name one (it
        // was checked to be an enabled user); any other mapped subject
        // names the user derived from it under the server's key, the same
        // at every sign-in and on every replica.
        let derived;
        let subject = if agentauth_core::user::is_user_subject(subject) {
            subject
        } else {
            let mac = self.hasher.hash(Purpose::Browser, &format!("upstream-subject:{subject}"));
            let hex: String = mac.iter().take(16).map(|b| format!("{b:02x}")).collect();
            derived = format!("{}{hex}", agentauth_core::user::SUBJECT_PREFIX);
            derived.as_str()
        };
        if let Some(row) = self.store.user(&realm.name, subject).map_err(internal)? {
            return match row.state {
                UserState::Active => Ok(User::from(row)),
                UserState::Disabled => Err(login_error("this user is disabled in this realm")),
            };
        }
        let unusable = crate::password::Password::new(new_secret());
        let password_hash = self
            .passwords
            .hash(&unusable)
            .map_err(|_| OAuthError::new(ErrorCode::TemporarilyUnavailable, "the server is busy; try again shortly"))?;
        // A username of the realm's alphabet, naming the provider: the
        // upstream one may be anything, and taken here.
        let cleaned: String = external
            .username
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-@+".contains(c) { c.to_ascii_lowercase() } else { '_' })
            .take(96)
            .collect();
        let base = format!("{cleaned}+{}", issuer.name);
        let hashed = URL_SAFE_NO_PAD.encode(self.hasher.hash(Purpose::Browser, &format!("upstream-user:{subject}")));
        for username in [base.clone(), format!("{base}.{}", &hashed[..8].to_ascii_lowercase())] {
            let row = UserRow {
                subject: subject.to_string(),
                username: username.clone(),
                display_name: external.name.clone(),
                email: external.email.clone(),
                password_hash: password_hash.clone(),
                state: UserState::Active,
                created_at: self.now(),
            };
            let entry = crate::users::audit(
                self.now(),
                &format!("upstream:{}", issuer.name),
                "create-user",
                subject,
                Some(&username),
            );
            match self.store.create_user(&realm.name, &row, &entry) {
                Ok(true) => return Ok(User::from(row)),
                Ok(false) => continue,
                // Made by a racing sign-in of the same user.
                Err(e) => {
                    return match self.store.user(&realm.name, subject).map_err(internal)? {
                        Some(row) => Ok(User::from(row)),
                        None => Err(internal(e)),
                    };
                }
            }
        }
        Err(login_error("no username is free for this user"))
    }

    /// A value derived from the sign-in's random `nonce` under the
    /// server's key, for `what` (the PKCE verifier, the OpenID nonce):
    /// 43 base64url characters, unknowable from the state.
    fn derived(&self, nonce: &str, what: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.hasher.hash(Purpose::Browser, &format!("upstream-{what}:{nonce}")))
    }

    /// The provider's endpoints, from its discovery document.
    fn endpoints(&self, realm: &RealmRuntime, issuer: &TrustedIssuer) -> Result<Endpoints, OAuthError> {
        let document = self
            .trust
            .fetcher()
            .get_json_for(&realm.name, &issuer.discovery_url(), &Limits::DOCUMENT)
            .map_err(|e| {
                tracing::warn!(realm = %realm.name, upstream = %issuer.name, "fetching the provider's discovery: {e}");
                OAuthError::new(ErrorCode::TemporarilyUnavailable, "the provider cannot be reached")
            })?;
        let endpoint = |name: &str| {
            document
                .json
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| OAuthError::server_error(format!("the provider's discovery document has no {name}")))
        };
        if document.json.get("issuer").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
            return Err(OAuthError::server_error("the provider's discovery document names another issuer"));
        }
        Ok(Endpoints { authorization: endpoint("authorization_endpoint")?, token: endpoint("token_endpoint")? })
    }
}

/// The realm's upstream provider `name`.
fn upstream<'a>(realm: &'a RealmRuntime, name: &str) -> Result<&'a TrustedIssuer, OAuthError> {
    realm
        .settings
        .trusted_issuers
        .iter()
        .find(|t| t.name == name && t.serves(TrustPurpose::Login) && t.login.is_some())
        .ok_or_else(|| login_error("no such provider"))
}
