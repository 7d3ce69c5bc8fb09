//! Signing in to the web console with an admin token.
//!
//! The console's browser never keeps the token: it presents it once, and
//! gets back a session, sealed under the server key (for this purpose
//! alone: no other value the server seals opens as one) into an `HttpOnly`,
//! `SameSite=Strict` cookie. The session names the token by its keyed
//! hash (as the store keeps a realm admin's), never the token itself, and
//! each request resolves it again: revoking a realm admin, or starting the
//! server with another operator token, ends its sessions at once, on every
//! replica. Writes also carry the session's CSRF secret, which the console
//! reads from `GET /console/api/session` and keeps in memory only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::Service;
use crate::admin::{AdminError, Principal};
use crate::secrets::{Purpose, random_bytes};

/// How long a console session lasts, seconds: a working day. There is no
/// sliding renewal; the console asks for the token again.
pub const CONSOLE_SESSION_LIFETIME: i64 = 8 * 3600;

/// What the cookie holds, sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// Marks a console session, so that no other value the server seals
    /// for a browser reads as one.
    console_session: u8,
    /// The token's keyed hash (`Purpose::AdminToken`), base64url.
    admin: String,
    operator: bool,
    expires_at: i64,
    csrf: String,
}

/// A signed-in console session.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub principal: Principal,
    /// What a write must carry in its CSRF header.
    pub csrf: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("principal", &self.principal)
            .field("csrf", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl ConsoleSession {
    /// Whether `presented` is this session's CSRF secret (in constant
    /// time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

impl Service {
    /// Whether the admin API (and so the console) is enabled: the server
    /// has an operator token.
    pub fn admin_enabled(&self) -> bool {
        self.config.admin_token.is_some()
    }

    /// Signs in with an admin token (the operator's or a realm admin's):
    /// the session and the cookie value that carries it.
    pub fn console_sign_in(&self, token: &str) -> Result<(ConsoleSession, String), AdminError> {
        let principal = self.admin_principal(Some(token))?;
        let sealed = Sealed {
            console_session: 1,
            admin: URL_SAFE_NO_PAD.encode(self.hasher.hash(Purpose::AdminToken, token)),
            operator: principal == Principal::Operator,
            expires_at: self.now() + CONSOLE_SESSION_LIFETIME,
            csrf: URL_SAFE_NO_PAD.encode(random_bytes::<32>()),
        };
        let cookie = self.seal_for(Purpose::ConsoleSession, &sealed);
        let session = ConsoleSession { principal, csrf: sealed.csrf, expires_at: sealed.expires_at };
        Ok((session, cookie))
    }

    /// The session a cookie value carries, if it is one of this server's,
    /// unexpired, and its token still admits: 401 otherwise; the admin
    /// API's refusal while it is disabled.
    pub fn console_session(&self, cookie: Option<&str>) -> Result<ConsoleSession, AdminError> {
        let Some(operator) = &self.config.admin_token else {
            return Err(AdminError::Disabled);
        };
        let sealed = cookie
            .filter(|c| c.len() <= 1024)
            .and_then(|c| self.unseal_for::<Sealed>(Purpose::ConsoleSession, c))
            .filter(|s| s.console_session == 1 && s.expires_at > self.now())
            .ok_or(AdminError::Unauthorized)?;
        let hash = URL_SAFE_NO_PAD.decode(&sealed.admin).map_err(|_| AdminError::Unauthorized)?;
        let principal = if sealed.operator {
            let current = self.hasher.hash(Purpose::AdminToken, operator.secret());
            if !bool::from(current.ct_eq(&hash)) {
                return Err(AdminError::Unauthorized);
            }
            Principal::Operator
        } else {
            match self.store.realm_admin_by_token(&hash)? {
                Some(admin) => Principal::RealmAdmin { realm: admin.realm, name: admin.name },
                None => return Err(AdminError::Unauthorized),
            }
        };
        Ok(ConsoleSession { principal, csrf: sealed.csrf, expires_at: sealed.expires_at })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agentauth_plugin_host::PluginHost;
    use agentauth_store::Store;

    use super::*;
    use crate::admin::AdminToken;
    use crate::{Clock, Config, ManualClock};

    const OPERATOR: &str = "operator-token-0123456789";

    fn service(clock: &Arc<ManualClock>) -> Service {
        let config = Config {
            master_key: Arc::new(agentauth_jose::MasterKey::generate().unwrap().0),
            admin_token: Some(AdminToken::new(OPERATOR.into()).unwrap()),
            issuer_prefix: "https://as.example.test/am".into(),
            fetch: Default::default(),
        };
        let clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
        Service::new(config, Arc::new(Store::open_in_memory().unwrap()), PluginHost::new().unwrap(), clock).unwrap()
    }

    #[test]
    fn a_session_opens_only_as_sealed_for_the_console_and_until_it_expires() {
        let clock = Arc::new(ManualClock::new(1_900_000_000));
        let service = service(&clock);
        let (session, cookie) = service.console_sign_in(OPERATOR).unwrap();
        assert_eq!(service.console_session(Some(&cookie)).unwrap(), session);
        assert!(!format!("{session:?}").contains(&session.csrf), "the CSRF secret stays out of Debug");

        // The same value sealed for any other browser use is no session.
        let (body, _) = cookie.split_once('.').unwrap();
        let value: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        let elsewhere = service.seal(&value);
        assert_eq!(service.console_session(Some(&elsewhere)), Err(AdminError::Unauthorized));

        clock.advance(CONSOLE_SESSION_LIFETIME);
        assert_eq!(service.console_session(Some(&cookie)), Err(AdminError::Unauthorized), "expired");
        assert_eq!(service.console_sign_in("not-the-token").err(), Some(AdminError::Unauthorized));
    }
}
