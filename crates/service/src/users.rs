//! A realm's local users: managing them through the admin API, and
//! checking a username and password at login.
//!
//! Users are people who sign in (the login pages of the authorization
//! code grant will call [`Service::authenticate_user`]); their tokens
//! name them by a subject of their own (`usr_...`, see
//! `agentauth_core::user`), never a client's. The admin operations follow
//! the others of `admin`: validated first, stored with their audit entry in
//! one commit, refused with an [`AdminError`]. A password is hashed here
//! (see `password`), never stored, logged, audited or answered.
//!
//! # Login
//!
//! Every failure to sign in (an unknown username, a wrong password, a
//! disabled user) is one [`LoginError::Failed`] with one message, and
//! takes the time of one password hash: an unknown username is checked
//! against a dummy hash, a disabled user's password is checked before
//! the state is. So neither the answer nor its timing tells whether a
//! username exists. Attempts are throttled before anything is looked up,
//! per username (whether or not a user has it) and per source, each by
//! the realm's rate (`logins_per_minute_per_user`,
//! `logins_per_minute_per_source`); past either, the caller is told when
//! to retry. A throttle rather than a lockout: no one can lock a user out
//! by failing on purpose, yet a guesser gets a handful of tries a minute.
//! The attempted username is never logged: people type passwords into
//! it.

use std::net::IpAddr;

use agentauth_core::ports::{AuditEntry, UserRow, UserState};
use agentauth_core::user::{check_display_name, check_email, is_user_subject, normalize_username, user_subject};
use serde::Serialize;
use serde_json::json;

use crate::admin::AdminError;
use crate::password::{HashError, Password};
use crate::realm::RealmRuntime;
use crate::secrets::random_bytes;
use crate::telemetry::RateLimit;
use crate::{Service, transient_store};

/// The one answer to every failed login, whatever failed.
pub const LOGIN_FAILED: &str = "the username or password is incorrect";

/// The most users one page of a listing holds.
pub const MAX_PAGE: i64 = 1000;

/// A user as the admin API shows it, and as a login answers it: never
/// its password, nor the password's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub subject: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// `active` or `disabled`.
    #[serde(serialize_with = "state_name")]
    pub state: UserState,
    pub created_at: i64,
}

fn state_name<S: serde::Serializer>(state: &UserState, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(state.as_str())
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            subject: row.subject,
            username: row.username,
            display_name: row.display_name,
            email: row.email,
            state: row.state,
            created_at: row.created_at,
        }
    }
}

/// A user to create.
#[derive(Debug)]
pub struct NewUser {
    /// As typed: normalised (lowercased) before it is stored.
    pub username: String,
    pub password: Password,
    pub display_name: Option<String>,
    pub email: Option<String>,
}

/// Which users to list: those after `after` (a username), at most
/// `limit` ([`MAX_PAGE`] at most; 100 by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPage {
    pub after: Option<String>,
    pub limit: Option<i64>,
}

/// Why a login did not sign anyone in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginError {
    /// The username or the password is wrong, or the user is disabled:
    /// one answer for all three, [`LOGIN_FAILED`].
    Failed,
    /// Too many attempts for this username or from this source; retry
    /// after this many seconds.
    SlowDown { retry_after: u64 },
    /// The server cannot check a password now (hashing at capacity, the
    /// database busy); retry after this many seconds.
    Busy { retry_after: u64 },
    /// The realm signs users in only at its upstream providers
    /// (`local_login` is off); no password was checked.
    NotHere,
    /// A failure of the server's own, logged where it happened.
    Internal,
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed => f.write_str(LOGIN_FAILED),
            Self::SlowDown { retry_after } => write!(f, "too many login attempts; retry in {retry_after} s"),
            Self::Busy { retry_after } => write!(f, "the server is busy; retry in {retry_after} s"),
            Self::NotHere => f.write_str("this realm signs users in at its identity providers only"),
            Self::Internal => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for LoginError {}

impl From<agentauth_core::ports::Error> for LoginError {
    fn from(e: agentauth_core::ports::Error) -> Self {
        if let Some(retry_after) = transient_store(&e) {
            tracing::warn!("login: {e}");
            return Self::Busy { retry_after };
        }
        tracing::error!("login: {e}");
        Self::Internal
    }
}

impl From<HashError> for LoginError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy { retry_after: 1 },
            HashError::Failed(why) => {
                tracing::error!("login: {why}");
                Self::Internal
            }
        }
    }
}

impl From<HashError> for AdminError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => AdminError::Busy {
                description: "the server is hashing other passwords; retry shortly".into(),
                retry_after: 1,
            },
            HashError::Failed(why) => {
                tracing::error!("admin: {why}");
                AdminError::Internal
            }
        }
    }
}

pub(crate) fn audit(at: i64, actor: &str, action: &str, subject: &str, username: Option<&str>) -> AuditEntry {
    let detail = match username {
        Some(username) => json!({"subject": subject, "username": username}),
        None => json!({"subject": subject}),
    };
    AuditEntry {
        at,
        actor: actor.into(),
        action: action.into(),
        detail: Some(detail.to_string()),
        ..Default::default()
    }
}

fn no_user(realm: &str, subject: &str) -> AdminError {
    AdminError::NotFound(format!("no user {subject} in realm {realm}"))
}

impl Service {
    /// Creates a user in `realm`: its username normalised and unique in
    /// the realm (409 otherwise), its password within bounds and hashed,
    /// its subject new. The password is in no answer, log or audit entry.
    pub fn create_user(&self, realm: &str, new: NewUser, actor: &str) -> Result<User, AdminError> {
        let NewUser { username, password, display_name, email } = new;
        let username = normalize_username(&username).ok_or_else(|| {
            AdminError::Invalid(format!(
                "username must be 1 to {} ASCII letters, digits, '.', '_', '-', '@' or '+'",
                agentauth_core::user::MAX_USERNAME
            ))
        })?;
        if let Some(name) = &display_name {
            check_display_name(name).map_err(AdminError::Invalid)?;
        }
        if let Some(email) = &email {
            check_email(email).map_err(AdminError::Invalid)?;
        }
        password.check().map_err(AdminError::Invalid)?;
        // Cheaper than a hash: a taken username is refused before one is
        // made (and again, atomically, when stored).
        if self.store.user_by_username(realm, &username)?.is_some() {
            return Err(taken(realm, &username));
        }
        let row = UserRow {
            subject: user_subject(random_bytes::<16>()),
            username,
            display_name,
            email,
            password_hash: self.passwords.hash(&password)?,
            state: UserState::Active,
            created_at: self.now(),
        };
        let entry = audit(row.created_at, actor, "create-user", &row.subject, Some(&row.username));
        if !self.store.create_user(realm, &row, &entry)? {
            return Err(taken(realm, &row.username));
        }
        tracing::info!(realm, subject = %row.subject, "user created");
        Ok(User::from(row))
    }

    /// The realm's users by username, a page at a time; the username to
    /// start the next page after, when this one is full.
    pub fn users(&self, realm: &str, page: &UserPage) -> Result<(Vec<User>, Option<String>), AdminError> {
        let limit = page.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(AdminError::Invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        let users: Vec<User> = self
            .store
            .users(realm, page.after.as_deref().unwrap_or_default(), limit)?
            .into_iter()
            .map(User::from)
            .collect();
        let next = users.last().filter(|_| users.len() as i64 == limit).map(|u| u.username.clone());
        Ok((users, next))
    }

    /// The realm's user of username `username` (normalised first), if any.
    pub fn find_user(&self, realm: &str, username: &str) -> Result<Option<User>, AdminError> {
        let Some(username) = normalize_username(username) else {
            return Ok(None);
        };
        Ok(self.store.user_by_username(realm, &username)?.map(User::from))
    }

    /// The realm's user of subject `subject` (404 if none).
    pub fn user(&self, realm: &str, subject: &str) -> Result<User, AdminError> {
        if !is_user_subject(subject) {
            return Err(no_user(realm, subject));
        }
        self.store.user(realm, subject)?.map(User::from).ok_or_else(|| no_user(realm, subject))
    }

    /// Disables the user (refused at every login from now on) or enables
    /// it again; the user as it is now.
    pub fn set_user_state(
        &self,
        realm: &str,
        subject: &str,
        state: UserState,
        actor: &str,
    ) -> Result<User, AdminError> {
        if !is_user_subject(subject) {
            return Err(no_user(realm, subject));
        }
        let action = match state {
            UserState::Active => "enable-user",
            UserState::Disabled => "disable-user",
        };
        if !self.store.set_user_state(realm, subject, state, &audit(self.now(), actor, action, subject, None))? {
            return Err(no_user(realm, subject));
        }
        if state == UserState::Disabled {
            // What the user authorized stops with them; enabling the user
            // again does not bring it back.
            self.end_user_families(realm, subject)?;
        }
        tracing::info!(realm, subject, state = state.as_str(), "user state set");
        self.user(realm, subject)
    }

    /// Replaces the user's password (within the bounds a new one must
    /// meet), hashed.
    pub fn set_user_password(
        &self,
        realm: &str,
        subject: &str,
        password: &Password,
        actor: &str,
    ) -> Result<(), AdminError> {
        password.check().map_err(AdminError::Invalid)?;
        // Looked up first, so that no hash is made for no one.
        self.user(realm, subject)?;
        let hash = self.passwords.hash(password)?;
        let entry = audit(self.now(), actor, "set-password", subject, None);
        if !self.store.set_user_password(realm, subject, &hash, &entry)? {
            return Err(no_user(realm, subject));
        }
        tracing::info!(realm, subject, "user password set");
        Ok(())
    }

    /// Deletes the user. Its subject is never given to another.
    pub fn delete_user(&self, realm: &str, subject: &str, actor: &str) -> Result<(), AdminError> {
        if !is_user_subject(subject) {
            return Err(no_user(realm, subject));
        }
        // Before the user's codes go with it: they name what to end.
        self.end_user_families(realm, subject)?;
        if !self.store.delete_user(realm, subject, &audit(self.now(), actor, "delete-user", subject, None))? {
            return Err(no_user(realm, subject));
        }
        tracing::info!(realm, subject, "user deleted");
        Ok(())
    }

    /// Signs a user of `realm` in with `username` and `password`, from
    /// `source` (the peer's address, when there is one): the user, when
    /// the password is right and the user active. See the module's
    /// documentation for what a failure tells and how attempts are
    /// throttled.
    pub fn authenticate_user(
        &self,
        realm: &RealmRuntime,
        username: &str,
        password: &Password,
        source: Option<IpAddr>,
    ) -> Result<User, LoginError> {
        if !realm.settings.local_login {
            return Err(LoginError::NotHere);
        }
        let username = normalize_username(username);
        // Throttled before anything is looked up or hashed: by the
        // username tried (a malformed one counts under no user), and by
        // where the attempt comes from.
        let user_key = username.as_deref().map(|u| format!("{}/{u}", realm.name));
        let mut buckets = Vec::with_capacity(2);
        if let Some(ip) = source {
            buckets.push((realm.name.as_str(), Some(ip), realm.settings.logins_per_minute_per_source));
        }
        if let Some(key) = &user_key {
            buckets.push((key.as_str(), None, realm.settings.logins_per_minute_per_user));
        }
        if let Err(retry_after) = self.logins.take_each(&buckets) {
            tracing::warn!(realm = %realm.name, ?source, "login rate limit reached");
            self.metrics.rate_limited(&realm.name, RateLimit::Logins);
            return Err(LoginError::SlowDown { retry_after });
        }
        let Some(username) = username else {
            // No user can have this name: nothing to look up, and nothing
            // to hide in the time it takes.
            tracing::debug!(realm = %realm.name, "login failed: not a username");
            return Err(LoginError::Failed);
        };
        let Some(row) = self.store.user_by_username(&realm.name, &username)? else {
            self.passwords.verify_nobody(password)?;
            tracing::debug!(realm = %realm.name, "login failed: no such user");
            return Err(LoginError::Failed);
        };
        // The password is checked whatever the user's state, so a disabled
        // user's login takes the time anyone's does.
        let right = self.passwords.verify(password, &row.password_hash).map_err(|e| {
            if let HashError::Failed(why) = &e {
                tracing::error!(realm = %realm.name, subject = %row.subject, "login: {why}");
                return LoginError::Internal;
            }
            LoginError::from(e)
        })?;
        if !right {
            tracing::debug!(realm = %realm.name, subject = %row.subject, "login failed: wrong password");
            return Err(LoginError::Failed);
        }
        if row.state != UserState::Active {
            tracing::debug!(realm = %realm.name, subject = %row.subject, "login failed: user disabled");
            return Err(LoginError::Failed);
        }
        tracing::debug!(realm = %realm.name, subject = %row.subject, "user signed in");
        Ok(User::from(row))
    }
}

fn taken(realm: &str, username: &str) -> AdminError {
    AdminError::Conflict(format!("realm {realm} already has a user named {username}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agentauth_plugin_host::PluginHost;
    use agentauth_store::Store;

    use super::*;
    use crate::{Clock, Config, ManualClock, RealmSettings};

    const REALM: &str = "people";

    fn service_with(settings: RealmSettings) -> Service {
        let config = Config {
            master_key: Arc::new(agentauth_jose::MasterKey::generate().unwrap().0),
            admin_token: None,
            issuer_prefix: "https://as.example.test/am".into(),
            fetch: Default::default(),
        };
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_900_000_000));
        let store = Arc::new(Store::open_in_memory().unwrap());
        let service = Service::new(config, store, PluginHost::new().unwrap(), clock).unwrap();
        assert!(service.provision_realm(REALM, &settings, &[]).unwrap());
        service
    }

    fn service() -> Service {
        service_with(RealmSettings { logins_per_minute_per_user: 1000, ..RealmSettings::default() })
    }

    fn password(text: &str) -> Password {
        Password::new(text.into())
    }

    fn new_user(username: &str, secret: &str) -> NewUser {
        NewUser { username: username.into(), password: password(secret), display_name: None, email: None }
    }

    fn login(service: &Service, username: &str, secret: &str) -> Result<User, LoginError> {
        let realm = service.realm(REALM).unwrap().unwrap();
        service.authenticate_user(&realm, username, &password(secret), Some([192, 0, 2, 1].into()))
    }

    #[test]
    fn a_created_user_signs_in_with_its_password_under_any_case_of_its_name() {
        let service = service();
        let created = service.create_user(REALM, new_user("Alice", "correct horse battery"), "admin").unwrap();
        assert_eq!(created.username, "alice");
        assert!(is_user_subject(&created.subject), "{}", created.subject);
        assert_eq!(created.state, UserState::Active);
        assert_eq!(created.created_at, 1_900_000_000);
        assert_eq!(login(&service, "alice", "correct horse battery").unwrap(), created);
        assert_eq!(login(&service, "ALICE", "correct horse battery").unwrap(), created);
        // Stored as an Argon2id hash, never as given.
        let row = service.store().user(REALM, &created.subject).unwrap().unwrap();
        assert!(row.password_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!row.password_hash.contains("correct horse"));
    }

    #[test]
    fn a_wrong_password_an_unknown_user_and_a_disabled_user_fail_alike() {
        let service = service();
        let alice = service.create_user(REALM, new_user("alice", "correct horse battery"), "admin").unwrap();
        service.create_user(REALM, new_user("bob", "bob's own password"), "admin").unwrap();
        service.set_user_state(REALM, &alice.subject, UserState::Disabled, "admin").unwrap();
        let failures = [
            login(&service, "bob", "correct horse battery"),
            login(&service, "carol", "correct horse battery"),
            login(&service, "alice", "correct horse battery"),
            login(&service, "alice", "a wrong password"),
            login(&service, "not a username!", "correct horse battery"),
            login(&service, "bob", ""),
        ];
        for failure in &failures {
            assert_eq!(failure, &Err(LoginError::Failed));
        }
        assert_eq!(LoginError::Failed.to_string(), LOGIN_FAILED);
        // Enabled again, the user signs in.
        service.set_user_state(REALM, &alice.subject, UserState::Active, "admin").unwrap();
        assert_eq!(login(&service, "alice", "correct horse battery").unwrap().subject, alice.subject);
    }

    #[test]
    fn logins_are_throttled_per_username_whether_or_not_it_exists() {
        let settings = RealmSettings { logins_per_minute_per_user: 3, ..RealmSettings::default() };
        let service = service_with(settings);
        service.create_user(REALM, new_user("alice", "correct horse battery"), "admin").unwrap();
        for username in ["alice", "nobody"] {
            for _ in 0..3 {
                assert_eq!(login(&service, username, "a wrong password"), Err(LoginError::Failed));
            }
            // The right password too: the attempt is refused before it is checked.
            let refused = login(&service, username, "correct horse battery");
            assert!(matches!(refused, Err(LoginError::SlowDown { retry_after: 1..=20 })), "{username}: {refused:?}");
        }
        // Names differing only in case are one user, and one bucket.
        assert!(matches!(login(&service, "ALICE", "correct horse battery"), Err(LoginError::SlowDown { .. })));
        // Another user is not held back by them.
        service.create_user(REALM, new_user("bob", "bob's own password"), "admin").unwrap();
        assert!(login(&service, "bob", "bob's own password").is_ok());
    }

    #[test]
    fn logins_are_throttled_per_source_across_usernames() {
        let settings = RealmSettings { logins_per_minute_per_source: 4, ..RealmSettings::default() };
        let service = service_with(settings);
        service.create_user(REALM, new_user("alice", "correct horse battery"), "admin").unwrap();
        let realm = service.realm(REALM).unwrap().unwrap();
        let from = |source: [u8; 4], username: &str| {
            service.authenticate_user(&realm, username, &password("correct horse battery"), Some(source.into()))
        };
        for username in ["u1", "u2", "u3", "bad name!"] {
            assert_eq!(from([198, 51, 100, 7], username), Err(LoginError::Failed));
        }
        assert!(matches!(from([198, 51, 100, 7], "alice"), Err(LoginError::SlowDown { .. })));
        // Another source still gets through to the same user.
        assert!(from([203, 0, 113, 9], "alice").is_ok());
        let metrics = service.metrics().encode();
        assert!(metrics.contains(r#"agentauth_rate_limited_total{realm="people",limit="logins"} 1"#), "{metrics}");
    }

    #[test]
    fn a_taken_username_is_a_conflict_in_any_case() {
        let service = service();
        service.create_user(REALM, new_user("alice", "correct horse battery"), "admin").unwrap();
        let taken = service.create_user(REALM, new_user("ALICE", "another password"), "admin").unwrap_err();
        assert!(matches!(&taken, AdminError::Conflict(why) if why.contains("alice")), "{taken:?}");
        assert_eq!(service.users(REALM, &UserPage::default()).unwrap().0.len(), 1);
    }

    #[test]
    fn bad_input_is_refused_without_quoting_the_password() {
        let service = service();
        let mut bad = vec![
            new_user("al ice", "correct horse battery"),
            new_user("", "correct horse battery"),
            new_user("alice", "short"),
            new_user("alice", &"x".repeat(crate::password::MAX_PASSWORD_BYTES + 1)),
        ];
        bad.push(NewUser { display_name: Some("a\nb".into()), ..new_user("alice", "correct horse battery") });
        bad.push(NewUser { email: Some("not an address".into()), ..new_user("alice", "correct horse battery") });
        for new in bad {
            let shown = format!("{new:?}");
            assert!(!shown.contains("horse") && !shown.contains("short"), "{shown}");
            let refused = service.create_user(REALM, new, "admin").unwrap_err();
            assert!(matches!(&refused, AdminError::Invalid(why) if !why.contains("horse")), "{refused:?}");
        }
        assert!(service.users(REALM, &UserPage::default()).unwrap().0.is_empty());
    }

    #[test]
    fn a_new_password_replaces_the_old_one() {
        let service = service();
        let alice = service.create_user(REALM, new_user("alice", "correct horse battery"), "admin").unwrap();
        service.set_user_password(REALM, &alice.subject, &password("a brand new password"), "admin").unwrap();
        assert_eq!(login(&service, "alice", "correct horse battery"), Err(LoginError::Failed));
        assert!(login(&service, "alice", "a brand new password").is_ok());
        let short = service.set_user_password(REALM, &alice.subject, &password("short"), "admin");
        assert!(matches!(short, Err(AdminError::Invalid(_))));
        let nobody = service.set_user_password(
            REALM,
            "usr_00000000000000000000000000000000",
            &password("whatever it is"),
            "admin",
        );
        assert!(matches!(nobody, Err(AdminError::NotFound(_))));
    }

    #[test]
    fn users_are_listed_a_page_at_a_time_and_deleted() {
        let service = service();
        for name in ["carol", "alice", "bob"] {
            service.create_user(REALM, new_user(name, "correct horse battery"), "admin").unwrap();
        }
        let page = |after: Option<&str>, limit| {
            let (users, next) =
                service.users(REALM, &UserPage { after: after.map(String::from), limit: Some(limit) }).unwrap();
            (users.into_iter().map(|u| u.username).collect::<Vec<_>>(), next)
        };
        assert_eq!(page(None, 2), (vec!["alice".to_string(), "bob".to_string()], Some("bob".to_string())));
        assert_eq!(page(Some("bob"), 2), (vec!["carol".to_string()], None));
        assert!(matches!(service.users(REALM, &UserPage { after: None, limit: Some(0) }), Err(AdminError::Invalid(_))));

        let bob = service.find_user(REALM, "BOB").unwrap().unwrap();
        service.delete_user(REALM, &bob.subject, "admin").unwrap();
        assert!(matches!(service.user(REALM, &bob.subject), Err(AdminError::NotFound(_))));
        assert!(matches!(service.delete_user(REALM, &bob.subject, "admin"), Err(AdminError::NotFound(_))));
        assert_eq!(login(&service, "bob", "correct horse battery"), Err(LoginError::Failed));
        // Not a subject at all: not found, without a look.
        assert!(matches!(service.user(REALM, "../alpha"), Err(AdminError::NotFound(_))));

        let actions: Vec<String> = service.audit_log(REALM, 0).unwrap().into_iter().map(|(_, e)| e.action).collect();
        assert_eq!(actions, ["create-user", "create-user", "create-user", "delete-user"]);
    }
}
