//! Registered clients, with the keyed hashes of their credentials, and
//! their lifecycle: active or disabled.

use super::{AuditEntry, Result};
use crate::Client;

crate::vocabulary::vocabulary! {
    /// Whether a client may authenticate, and its tokens live; stored by
    /// its name.
    #[derive(Default)]
    pub enum ClientState {
        #[default]
        Active = "active",
        /// Kept, but refused at authentication; every token issued to it,
        /// or naming it as an actor, up to when it was disabled is dead,
        /// and stays dead when it is enabled again.
        Disabled = "disabled",
    }
}

/// A client with the keyed hashes of its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client: Client,
    pub secret_hash: Vec<u8>,
    pub registration_token_hash: Vec<u8>,
    pub state: ClientState,
    /// Tokens issued to the client, or naming it as an actor, at or before
    /// this second (their `iat`) are dead: when it was last disabled; 0
    /// if never.
    pub tokens_valid_after: i64,
    /// When the client expires (RFC 7591's `client_secret_expires_at`):
    /// from then on it is refused as a disabled one is. `None`: never.
    pub expires_at: Option<i64>,
    /// The last second it authenticated, as the replicas last recorded it
    /// (they record uses in batches, about once a minute); its
    /// registration's until then.
    pub last_used_at: i64,
}

impl ClientRow {
    /// Whether a token issued at `iat` that names this client (as its
    /// client or an actor) may still live at `now`: the client is active
    /// and unexpired, and was not disabled since the token was issued.
    pub fn honours(&self, iat: i64, now: i64) -> bool {
        self.is_usable(now) && iat > self.tokens_valid_after
    }

    /// Whether the client may authenticate at `now`: active, and not
    /// expired.
    pub fn is_usable(&self, now: i64) -> bool {
        self.state == ClientState::Active && !self.is_expired(now)
    }

    /// Whether the client has expired by `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }
}

/// Which of a realm's clients to list: those matching every condition set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFilter {
    /// This client only: a read that bypasses any cache.
    pub client_id: Option<String>,
    pub state: Option<ClientState>,
    /// Owned by this owner (their `owner` attribute).
    pub owner: Option<String>,
    /// Agents only (clients registered at `aiagent/register`).
    pub agents_only: bool,
    /// Not used since this second (their `last_used_at` earlier).
    pub unused_since: Option<i64>,
    /// Disabled before this second (their `tokens_valid_after` earlier).
    pub disabled_before: Option<i64>,
    /// Expired at or before this second.
    pub expired_by: Option<i64>,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("client", &self.client)
            .field("state", &self.state)
            .field("tokens_valid_after", &self.tokens_valid_after)
            .finish_non_exhaustive()
    }
}

/// A realm's registered clients.
pub trait ClientRepository: Send + Sync {
    /// Stores a newly registered client, unless the realm already holds
    /// `max_clients`: then it stores nothing and returns false. Racing
    /// registrations never pass the cap. Fails if the id is taken, or the
    /// realm does not exist.
    fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool>;

    /// Replaces a client's metadata, attributes and registration access
    /// token hash (RFC 7592 update), keeping its secret, provided its
    /// registration access token still has the keyed hash `token_hash`;
    /// false if no client of the realm has that id and token. A
    /// compare-and-swap: of racing updates presenting one token, exactly
    /// one succeeds.
    fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool>;

    /// Deletes a client, every server-side token issued to it and every
    /// family derived from its tokens, in one commit, provided its
    /// registration access token still has the keyed hash `token_hash`;
    /// false if no client has that id and token.
    fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool>;

    /// The realm's client `client_id`, as of the last change made through
    /// this repository.
    fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>>;

    /// True when the realm has the client.
    fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool>;

    /// How many clients the realm has, as of the last commit.
    fn count_clients(&self, realm: &str) -> Result<u64>;

    /// The realm's clients matching `filter` with an id after `after`, in
    /// id order, at most `limit` of them.
    fn clients(&self, realm: &str, filter: &ClientFilter, after: &str, limit: i64) -> Result<Vec<ClientRow>>;

    /// Records that the clients `used` (id, second) authenticated then:
    /// each one's `last_used_at` becomes the later of the two. Clients
    /// since deleted are skipped. Not a change the others follow.
    fn touch_clients(&self, realm: &str, used: &[(String, i64)]) -> Result<()>;

    /// Disables the client, or enables it again, recording `audit`, in one
    /// commit; false if the realm has no such client. Disabling at `at`
    /// also makes every token issued up to `at` dead
    /// (`tokens_valid_after`), deletes the server-side tokens issued to
    /// the client and revokes every family derived from its tokens.
    /// Enabling leaves all that dead.
    fn set_client_state(
        &self,
        realm: &str,
        client_id: &str,
        state: ClientState,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<bool>;

    /// Deletes a client as an operator does (without its registration
    /// access token), with what [`ClientRepository::delete_client`]
    /// deletes, recording `audit`; false if the realm has no such client.
    fn remove_client(&self, realm: &str, client_id: &str, audit: &AuditEntry) -> Result<bool>;
}
