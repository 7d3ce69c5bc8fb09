//! Registered clients, with the keyed hashes of their credentials.

use super::Result;
use crate::Client;

/// A client with the keyed hashes of its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client: Client,
    pub secret_hash: Vec<u8>,
    pub registration_token_hash: Vec<u8>,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow").field("client", &self.client).finish_non_exhaustive()
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
}
