//! OAuth error codes and the error value every rule returns.
//!
//! One variant per code of RFC 6749 §5.2, RFC 7591 §3.2.2 and RFC 8693 §2.2.2,
//! each documented with the RFC's words, so an error's meaning and HTTP
//! status live in one place.

use std::borrow::Cow;
use std::fmt;

/// An error code a client receives in the `error` member of the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is missing a required parameter, includes an unsupported
    /// parameter value, repeats a parameter, or is otherwise malformed.
    InvalidRequest,
    /// Client authentication failed (unknown client, no client
    /// authentication included, or unsupported authentication method).
    InvalidClient,
    /// The provided authorization grant or refresh token is invalid,
    /// expired, revoked, or was issued to another client.
    InvalidGrant,
    /// The authenticated client is not authorized to use this grant type.
    UnauthorizedClient,
    /// The authorization grant type is not supported by the server.
    UnsupportedGrantType,
    /// The authorization server does not support obtaining an
    /// authorization code using this method (RFC 6749 §4.1.2.1).
    UnsupportedResponseType,
    /// The requested scope is invalid, unknown, malformed, or exceeds the
    /// scope granted by the resource owner.
    InvalidScope,
    /// The value of one of the client metadata fields is invalid (RFC 7591).
    InvalidClientMetadata,
    /// The value of one or more redirection URIs is invalid (RFC 7591).
    InvalidRedirectUri,
    /// The server cannot issue a token for the requested audience or
    /// resource (RFC 8693).
    InvalidTarget,
    /// The access token provided is expired, revoked, malformed, or invalid
    /// (RFC 6750 §3.1); here, a registration access token (RFC 7592).
    InvalidToken,
    /// The resource owner or the server refused the request, e.g. because
    /// open registration is disabled in the realm.
    AccessDenied,
    /// The server met an unexpected condition, such as a failing policy.
    ServerError,
    /// The server is temporarily unable to handle the request.
    TemporarilyUnavailable,
    /// The client is making requests too quickly (RFC 8628 §3.5's code),
    /// answered here with 429 Too Many Requests (RFC 6585 §4) and the
    /// seconds to wait in `Retry-After`.
    SlowDown,
    /// The DPoP proof is missing where one is required, or invalid
    /// (RFC 9449 §5).
    InvalidDpopProof,
    /// The DPoP proof must carry the server's nonce, sent in the
    /// `DPoP-Nonce` header (RFC 9449 §8).
    UseDpopNonce,
    /// The access token presented to one of the server's own resources
    /// lacks the scope it requires (RFC 6750 §3.1).
    InsufficientScope,
}

impl ErrorCode {
    /// Every code, in the order of the enum.
    pub const ALL: [Self; 18] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::UnsupportedResponseType,
        Self::InvalidScope,
        Self::InvalidClientMetadata,
        Self::InvalidRedirectUri,
        Self::InvalidTarget,
        Self::InvalidToken,
        Self::AccessDenied,
        Self::ServerError,
        Self::TemporarilyUnavailable,
        Self::SlowDown,
        Self::InvalidDpopProof,
        Self::UseDpopNonce,
        Self::InsufficientScope,
    ];

    /// Its place in [`ErrorCode::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidToken => "invalid_token",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::SlowDown => "slow_down",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::InsufficientScope => "insufficient_scope",
        }
    }

    /// The HTTP status that carries the code (RFC 6749 §5.2: 400, except
    /// 401 for a failed client authentication).
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidClient | Self::InvalidToken => 401,
            Self::AccessDenied | Self::InsufficientScope => 403,
            Self::ServerError => 500,
            Self::TemporarilyUnavailable => 503,
            Self::SlowDown => 429,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth error: a code and a human-readable description for the
/// client's developer. Descriptions never contain secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
    /// Seconds after which a retry may succeed (`Retry-After`), for
    /// `slow_down` and `temporarily_unavailable`.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self { code, description: description.into(), retry_after: None }
    }

    /// Too many requests: retry in `seconds`.
    pub fn slow_down(description: impl Into<Cow<'static, str>>, seconds: u64) -> Self {
        Self { retry_after: Some(seconds), ..Self::new(ErrorCode::SlowDown, description) }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client_metadata(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClientMetadata, description)
    }

    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }

    pub fn server_error(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ServerError, description)
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_at_its_index() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code.index(), i, "{code}");
        }
        let mut names: Vec<_> = ErrorCode::ALL.map(ErrorCode::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
