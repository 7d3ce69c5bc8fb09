//! What the authorization endpoint keeps between a user's consent and the
//! client's token request: authorization codes (RFC 6749 §4.1, as OAuth
//! 2.1 profiles them) and the consents users gave, remembered per user and
//! client until revoked.
//!
//! A code is stored by its keyed hash, never in the clear. It is redeemed
//! exactly once: the redemption that wins records what was issued for it
//! (the refresh family and the access token's `jti`) in the same commit
//! that marks it used, so a later presentation of the same code — a
//! replay, or a stolen copy — finds what to revoke (RFC 6749 §4.1.2).
//!
//! Codes and consents go with their realm, their user and their client.

use super::Result;

/// An authorization code's grant: everything the token request must match
/// and the tokens will carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationCode {
    /// The client the code was issued to.
    pub client_id: String,
    /// The redirect URI the authorization request named, exactly; the
    /// token request must name it again.
    pub redirect_uri: String,
    /// The PKCE `code_challenge` (S256, base64url), RFC 7636.
    pub code_challenge: String,
    /// The user who authorized: the tokens' `sub`.
    pub subject: String,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// The resources (RFC 8707) the tokens are for; empty for the default
    /// audience.
    pub resources: Vec<String>,
    /// The `may_act` claim the authorize hook gave the user's tokens, as
    /// JSON, if any.
    pub may_act: Option<String>,
    /// The JWK thumbprint of the DPoP key the code is bound to
    /// (`dpop_jkt`, RFC 9449 §10), if the request named one: only a token
    /// request with a proof of that key redeems it.
    pub dpop_jkt: Option<String>,
    /// When the user signed in (`auth_time`).
    pub auth_time: i64,
    pub created_at: i64,
    /// From this second on the code is refused (it is live while `now <
    /// expires_at`, as tokens are).
    pub expires_at: i64,
}

/// What a redeemed code issued: revoked together if the code comes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeIssue {
    /// The refresh token family started for the grant.
    pub family: String,
    /// The access token's `jti`, and when it expires.
    pub jti: String,
    pub jti_expires_at: i64,
    /// When the family ends: the used code is kept until then (its expiry
    /// becomes this), so that a replay still finds what to revoke, and
    /// revoking the user's consent, or the user, finds the families to end.
    pub family_expires_at: i64,
}

/// What presenting a code for redemption did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// The code was live and unused: it is now used, with `issue`
    /// recorded against it.
    Redeemed,
    /// The code had been redeemed before (and may have expired since,
    /// until it is swept): this is what that redemption issued, for the
    /// caller to revoke. Nothing was recorded.
    Reused(CodeIssue),
    /// No code of that hash in the realm that is live or was redeemed
    /// (never issued, expired unused, or swept).
    Unknown,
}

/// A user's consent to a client: the scopes and resources they allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub subject: String,
    pub client_id: String,
    /// Space-separated.
    pub scope: String,
    pub resources: Vec<String>,
    pub granted_at: i64,
}

/// Authorization codes and consents.
pub trait AuthorizationRepository: Send + Sync {
    /// Stores a new code of `realm` by its keyed hash. Fails if the realm,
    /// the code's client or its user (a local user of the realm) does not
    /// exist, or the realm has a code of that hash.
    fn insert_code(&self, realm: &str, hash: &[u8], code: &AuthorizationCode) -> Result<()>;

    /// The live, unused code of `realm` with this hash at `now`; a code
    /// used, expired or of another realm is not found.
    fn code(&self, realm: &str, hash: &[u8], now: i64) -> Result<Option<AuthorizationCode>>;

    /// Redeems a code in one commit, exactly once, even for racing
    /// requests: a live, unused code is marked used with `issue` recorded;
    /// a used one answers what its redemption recorded and changes
    /// nothing.
    fn redeem_code(&self, realm: &str, hash: &[u8], issue: &CodeIssue, now: i64) -> Result<Redemption>;

    /// Deletes codes expired as of `before` (`expires_at <= before`), used
    /// or not; how many.
    fn sweep_codes(&self, before: i64) -> Result<usize>;

    /// The consent `subject` gave `client_id`, if they did and it stands.
    fn consent(&self, realm: &str, subject: &str, client_id: &str) -> Result<Option<Consent>>;

    /// Records a consent, replacing an earlier one of the same user and
    /// client. Fails if the realm, the client or the user does not exist.
    fn save_consent(&self, realm: &str, consent: &Consent) -> Result<()>;

    /// The refresh families issued by redeeming codes of `subject` (to
    /// `client_id` only, if given) that may still be live: what ends when
    /// their consent, or the user, goes.
    fn code_families(&self, realm: &str, subject: &str, client_id: Option<&str>) -> Result<Vec<String>>;

    /// Every consent `subject` has given, oldest first.
    fn consents(&self, realm: &str, subject: &str) -> Result<Vec<Consent>>;

    /// Revokes the consent `subject` gave `client_id`; false if there was
    /// none.
    fn revoke_consent(&self, realm: &str, subject: &str, client_id: &str) -> Result<bool>;
}
