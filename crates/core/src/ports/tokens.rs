//! Server-side tokens and what ends them: refresh token families and
//! their rotation, the lineage of families derived by token exchange,
//! revoked JWT ids, and client assertion ids seen.

use super::{AuditEntry, Result};

/// What a server-side token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An opaque access token; its grant is the token's claims.
    Access,
    /// A refresh token; its grant says what it may be refreshed into.
    Refresh,
    /// A JWT access token issued within a family, kept so that revoking
    /// the family can revoke it; its grant is the token's `jti`.
    Jwt,
}

impl TokenKind {
    /// The kind's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::Jwt => "jwt",
        }
    }

    /// The kind named `kind`, as [`TokenKind::as_str`] spells it.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "access" => Some(Self::Access),
            "refresh" => Some(Self::Refresh),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }
}

/// A live server-side token, as found by its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub kind: TokenKind,
    pub grant: String,
    pub client_id: String,
    pub family: Option<String>,
    /// For a refresh token: already rotated.
    pub used: bool,
    pub expires_at: i64,
}

/// What presenting a refresh token for rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live and unused: it is now used, its successors stored.
    Rotated,
    /// The token had already been used: its whole family is now revoked
    /// (RFC 9700 §4.14.2), and nothing was stored.
    Reused,
    /// No live token of that kind in the realm.
    Unknown,
}

/// A server-side token to store: its keyed hash, what it is, its grant
/// as JSON, and when it expires.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub hash: &'a [u8],
    /// The client the token was issued to.
    pub client_id: &'a str,
    /// The refresh token family it belongs to, if any.
    pub family: Option<&'a str>,
    pub kind: TokenKind,
    pub grant: &'a str,
    pub expires_at: i64,
}

/// Where a token family came from: the token it was derived from (by
/// token exchange), that token's own family if it had one, and the client
/// it was issued to.
#[derive(Debug)]
pub struct Lineage<'a> {
    pub family: &'a str,
    pub parent_jti: &'a str,
    /// The keyed hash of the parent when it is a server-side (opaque)
    /// token, whose row must still be there.
    pub parent_hash: Option<&'a [u8]>,
    pub parent_family: Option<&'a str>,
    pub parent_client: &'a str,
    /// When nothing of the family can be live any more.
    pub expires_at: i64,
}

/// Server-side tokens, revocations and replay records.
pub trait TokenRepository: Send + Sync {
    /// Stores tokens by their keyed hashes, all in one commit.
    fn insert_tokens(&self, realm: &str, tokens: &[NewToken<'_>]) -> Result<()>;

    /// Starts a token family derived from another token (an exchange):
    /// records where it came from and stores its first tokens, in one
    /// commit. Unless the parent is still live at that commit (not
    /// revoked, its row and family still there, its client registered),
    /// nothing is stored and the answer is false: a revocation may have
    /// raced the exchange.
    fn insert_derived_family(&self, realm: &str, lineage: &Lineage<'_>, tokens: &[NewToken<'_>]) -> Result<bool>;

    /// The grant of a live token of `kind` in `realm`: a token of another
    /// realm or kind, or expired at `now`, is not found.
    fn token(&self, hash: &[u8], realm: &str, kind: TokenKind, now: i64) -> Result<Option<String>>;

    /// Any live server-side token of the realm, by hash.
    fn token_row(&self, hash: &[u8], realm: &str, now: i64) -> Result<Option<TokenRow>>;

    /// How many server-side tokens of `kind` the realm holds.
    fn count_tokens(&self, realm: &str, kind: TokenKind) -> Result<i64>;

    /// How many live server-side tokens (unexpired at `now`; refresh
    /// tokens not yet used) each of `client_ids` holds in the realm;
    /// clients holding none are left out. JWTs outside a token family are
    /// never stored, so never counted.
    fn live_token_counts(&self, realm: &str, client_ids: &[String], now: i64) -> Result<Vec<(String, i64)>>;

    /// Rotates a refresh token in one commit, exactly once: a live, unused
    /// token is marked used and its successors stored; a token used before
    /// revokes its whole family (and the families derived from it) and
    /// stores nothing but `reused`, recorded in the audit in the same
    /// commit if anything was revoked, since the token has leaked (RFC 9700
    /// §4.14.2). So a refresh token works once, even for racing requests.
    fn rotate_token(
        &self,
        realm: &str,
        old_hash: &[u8],
        successors: &[NewToken<'_>],
        now: i64,
        reused: &AuditEntry,
    ) -> Result<Rotation>;

    /// Revokes one server-side token; with a family, every token of it.
    /// Either way, every family derived from what is revoked goes too.
    /// `audit`, when given, is recorded in the same commit if anything was
    /// revoked (so of racing revocations of one family, one records it).
    fn revoke_token(&self, realm: &str, hash: &[u8], family: Option<&str>, audit: Option<&AuditEntry>) -> Result<()>;

    /// Revokes one opaque access token, outside any family, and every
    /// family derived from it (its `jti`).
    fn revoke_opaque(&self, realm: &str, hash: &[u8], jti: &str) -> Result<()>;

    /// Records a JWT access token as revoked until it expires, and revokes
    /// every family derived from it.
    fn revoke_jwt(&self, realm: &str, jti: &str, expires_at: i64) -> Result<()>;

    /// True when the JWT with `jti` was revoked in `realm`.
    fn is_jwt_revoked(&self, realm: &str, jti: &str) -> Result<bool>;

    /// Records a client assertion's `jti`; false if it was seen before (a
    /// replay, RFC 7523 §3).
    fn use_assertion_jti(&self, realm: &str, client_id: &str, jti: &str, expires_at: i64) -> Result<bool>;
}
