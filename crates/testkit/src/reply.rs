//! A server's answer, read whole: status, the headers tests look at, and
//! the body as text and as JSON.

use serde_json::Value;

use crate::error::{Error, ErrorKind};

/// A response: status, headers of interest and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The body as JSON; `Null` when it is not JSON.
    pub json: Value,
    pub cache_control: Option<String>,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<String>,
    /// The server's DPoP nonce (RFC 9449 §8), when it sent one.
    pub dpop_nonce: Option<String>,
}

impl Reply {
    /// Reads what an HTTP call returned (ureq with statuses not turned
    /// into errors): an error only when there was no answer to read.
    pub fn read(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Self, Error> {
        let mut response = result.map_err(|e| Error::caused_by(ErrorKind::Http, "no answer", e))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (cache_control, www_authenticate) = (header("cache-control"), header("www-authenticate"));
        let (retry_after, dpop_nonce) = (header("retry-after"), header("dpop-nonce"));
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::caused_by(ErrorKind::Http, "reading a text body", e))?;
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Ok(Self { status, body, json, cache_control, www_authenticate, retry_after, dpop_nonce })
    }

    /// This reply when its status is `expected`, else an error naming
    /// `what` was asked and what came back.
    pub fn expect_status(self, expected: u16, what: &str) -> Result<Self, Error> {
        if self.status == expected { Ok(self) } else { Err(self.unexpected(what)) }
    }

    /// This reply when its status is a success (2xx), else an error naming
    /// `what` was asked and what came back.
    pub fn successful(self, what: &str) -> Result<Self, Error> {
        if (200..300).contains(&self.status) { Ok(self) } else { Err(self.unexpected(what)) }
    }

    fn unexpected(&self, what: &str) -> Error {
        Error::new(ErrorKind::Unexpected, format!("{what}: {} {}", self.status, self.body))
    }

    /// Asserts an RFC 6749 §5.2 error response: this status and `error`
    /// code, an `error_description`, and `Cache-Control: no-store`.
    ///
    /// # Panics
    ///
    /// When the reply is anything else: this fails a test.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.json["error"].as_str()), (status, Some(code)), "{}", self.body);
        assert!(self.json["error_description"].is_string(), "{}", self.body);
        assert_eq!(self.cache_control.as_deref(), Some("no-store"));
    }
}
