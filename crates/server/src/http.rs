//! HTTP plumbing: bounded body reading, form parsing and the one place
//! where outcomes and errors become responses: an OAuth error (RFC 6749
//! §5.2) and an admin refusal each have one rendering, and a busy store
//! is 503 with `Retry-After` on both.

use std::time::Duration;

use agentauth_core::{ErrorCode, OAuthError};
use agentauth_service::AdminError;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

/// A response about to be sent.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    body: Bytes,
    content_type: &'static str,
    /// Token and registration responses carry secrets: never cache them.
    no_store: bool,
    headers: Vec<(header::HeaderName, String)>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            body: Bytes::from(body.to_string()),
            content_type: "application/json",
            no_store: true,
            headers: Vec::new(),
        }
    }

    /// JSON that may be cached for a while (discovery, JWKS).
    pub fn public_json(body: &Value) -> Self {
        let mut reply = Self::json(200, body);
        reply.no_store = false;
        reply.headers.push((header::CACHE_CONTROL, "public, max-age=300".into()));
        reply
    }

    pub fn text(status: u16, text: &'static str) -> Self {
        Self {
            status,
            body: Bytes::from_static(text.as_bytes()),
            content_type: "text/plain",
            no_store: false,
            headers: Vec::new(),
        }
    }

    /// The metrics, in the Prometheus text format.
    pub fn metrics(text: String) -> Self {
        Self {
            status: 200,
            body: Bytes::from(text),
            content_type: agentauth_service::telemetry::CONTENT_TYPE,
            no_store: true,
            headers: Vec::new(),
        }
    }

    /// An OAuth error response (RFC 6749 §5.2).
    pub fn error(error: &OAuthError) -> Self {
        let mut reply = Self::json(
            error.code.http_status(),
            &json!({"error": error.code.as_str(), "error_description": error.description}),
        );
        match error.code {
            // RFC 6749 §5.2: 401 carries a challenge for the scheme used.
            ErrorCode::InvalidClient => {
                reply.headers.push((header::WWW_AUTHENTICATE, "Basic realm=\"agentauth\"".into()));
            }
            // RFC 6750 §3.
            ErrorCode::InvalidToken => {
                reply.headers.push((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"".into()));
            }
            _ => {}
        }
        // RFC 9110 §10.2.3: when to try again.
        let retry_after = match error.code {
            ErrorCode::TemporarilyUnavailable | ErrorCode::SlowDown => Some(error.retry_after.unwrap_or(1)),
            _ => error.retry_after,
        };
        if let Some(seconds) = retry_after {
            reply.headers.push((header::RETRY_AFTER, seconds.to_string()));
        }
        reply
    }

    /// The one rendering of an admin refusal: a status, an `error` code and
    /// its description, with the headers its status calls for.
    pub fn admin_error(error: &AdminError) -> Self {
        let (status, code) = match error {
            AdminError::Invalid(_) => (400, "invalid_request"),
            AdminError::InvalidPlugin(_) => (400, "invalid_plugin"),
            AdminError::Unauthorized => (401, "invalid_token"),
            AdminError::Disabled | AdminError::Forbidden(_) => (403, "access_denied"),
            AdminError::NotFound(_) => (404, "not_found"),
            AdminError::Conflict(_) => (409, "conflict"),
            AdminError::OverQuota(_) => (409, "quota_exceeded"),
            AdminError::SlowDown { .. } => (429, "slow_down"),
            AdminError::Busy { .. } => (503, "temporarily_unavailable"),
            AdminError::Internal => (500, "server_error"),
        };
        let reply = Self::json(status, &json!({"error": code, "error_description": error.to_string()}));
        match error {
            AdminError::Unauthorized => {
                reply.with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"agentauth-admin\"".into())
            }
            AdminError::SlowDown { retry_after, .. } | AdminError::Busy { retry_after, .. } => {
                reply.with_header(header::RETRY_AFTER, retry_after.to_string())
            }
            _ => reply,
        }
    }

    /// A page of the server's own (login, consent, an error a browser
    /// shows): never cached, never framed, running no script, loading
    /// nothing from elsewhere.
    pub fn html(status: u16, page: String) -> Self {
        Self {
            status,
            body: Bytes::from(page),
            content_type: "text/html; charset=utf-8",
            no_store: true,
            headers: vec![
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'".into(),
                ),
                (header::X_FRAME_OPTIONS, "DENY".into()),
                (header::REFERRER_POLICY, "no-referrer".into()),
            ],
        }
    }

    /// One of the console's files: its script and style come from the
    /// server only, it is never framed, and a browser revalidates it.
    pub fn console_file(content_type: &'static str, content: &'static str) -> Self {
        Self {
            status: 200,
            body: Bytes::from_static(content.as_bytes()),
            content_type,
            no_store: false,
            headers: vec![
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                        .into(),
                ),
                (header::CACHE_CONTROL, "no-cache".into()),
                (header::X_FRAME_OPTIONS, "DENY".into()),
                (header::REFERRER_POLICY, "no-referrer".into()),
            ],
        }
    }

    /// 303 See Other to `location`: the browser follows it with a GET.
    pub fn redirect(location: String) -> Self {
        Self {
            status: 303,
            body: Bytes::new(),
            content_type: "text/plain",
            no_store: true,
            headers: vec![(header::LOCATION, location), (header::REFERRER_POLICY, "no-referrer".into())],
        }
    }

    /// 204, for a successful DELETE.
    pub fn no_content() -> Self {
        Self { status: 204, body: Bytes::new(), content_type: "application/json", no_store: true, headers: Vec::new() }
    }

    pub fn not_found() -> Self {
        Self::json(404, &json!({"error": "not_found", "error_description": "no such endpoint or realm"}))
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut reply = Self::json(
            405,
            &json!({"error": "invalid_request", "error_description": format!("this endpoint answers {allow} only")}),
        );
        reply.headers.push((header::ALLOW, allow.into()));
        reply
    }

    pub fn with_header(mut self, name: header::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        // Every answer is what its type says, never sniffed as another.
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if self.no_store {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                // Appended: a page may set two cookies.
                headers.append(name, value);
            }
        }
        response
    }
}

impl From<OAuthError> for Reply {
    fn from(error: OAuthError) -> Self {
        Self::error(&error)
    }
}

impl From<AdminError> for Reply {
    fn from(error: AdminError) -> Self {
        Self::admin_error(&error)
    }
}

/// How much more of a body past its limit is read (and dropped) so that
/// the 413 reaches the client: see [`discard_body`]. A client sending more
/// than this sees its connection reset instead.
const DRAIN_PAST_LIMIT: usize = 16 << 20;

/// Reads a whole body of at most `limit` bytes within `timeout`.
pub async fn read_body<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, Reply>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = Box::pin(body);
    if body.size_hint().lower() > limit as u64 {
        discard_body(body, DRAIN_PAST_LIMIT, timeout).await;
        return Err(too_large(limit));
    }
    let read = async {
        let lower = usize::try_from(body.size_hint().lower()).unwrap_or(limit).min(limit);
        let mut data = Vec::with_capacity(lower);
        while let Some(frame) = body.as_mut().frame().await {
            let frame = frame.map_err(|e| Some(e.into().to_string()))?;
            if let Some(chunk) = frame.data_ref() {
                if data.len() + chunk.len() > limit {
                    return Err(None::<String>);
                }
                data.extend_from_slice(chunk);
            }
        }
        Ok(Bytes::from(data))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(None)) => {
            discard_body(body, DRAIN_PAST_LIMIT, timeout).await;
            Err(too_large(limit))
        }
        Ok(Err(Some(e))) => {
            Err(Reply::error(&OAuthError::invalid_request(format!("reading the request body failed: {e}"))))
        }
        Err(_) => Err(Reply::json(
            408,
            &json!({"error": "invalid_request", "error_description": "the request body arrived too slowly"}),
        )),
    }
}

/// Reads and discards what is left of a request body, at most `limit`
/// bytes within `timeout`, holding none of it. A refusal sent before its
/// body was read must be followed by this: a connection closed with bytes
/// still unread is reset, and a reset makes the client's kernel drop the
/// response it had not read yet, so the client would see the connection
/// fail instead of the refusal.
pub async fn discard_body<B>(body: B, limit: usize, timeout: Duration)
where
    B: Body<Data = Bytes>,
{
    let drain = async {
        let mut body = std::pin::pin!(body);
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > limit {
                break;
            }
        }
    };
    // What is not read by then is the client's to lose.
    let _ = tokio::time::timeout(timeout, drain).await;
}

fn too_large(limit: usize) -> Reply {
    Reply::json(
        413,
        &json!({"error": "invalid_request", "error_description": format!("the request body exceeds {limit} bytes")}),
    )
}

/// True when the request's media type is `expected` (parameters such as
/// `charset` allowed).
pub fn has_media_type(headers: &hyper::HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected))
}

/// How deeply JSON bodies may nest. Registration metadata needs four
/// levels (`jwks.keys[].x5c[]`); more is an attack on the parser.
pub const MAX_JSON_DEPTH: usize = 16;

/// Parses a JSON body, refusing nesting deeper than [`MAX_JSON_DEPTH`]
/// before the parser sees it. The error says what is wrong, for the
/// caller's error response.
pub fn parse_json(body: &[u8]) -> Result<Value, String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!("the JSON nests deeper than {MAX_JSON_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    serde_json::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))
}

/// Most parameters a form may carry. Token requests use at most nine.
pub const MAX_FORM_FIELDS: usize = 32;

/// The parameters a request may repeat: RFC 8707 §2's `resource` (one
/// per resource) and RFC 8693 §2.1's `audience`. Read them with
/// [`Form::get_all`].
pub const REPEATABLE: [&str; 2] = ["resource", "audience"];

/// Form parameters (application/x-www-form-urlencoded). RFC 6749 §3.2:
/// parameters sent without a value are treated as omitted, and request
/// parameters must not be included more than once, but for the
/// extensions' [`REPEATABLE`] ones.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params: Vec<(String, String)> = Vec::new();
        for (i, (name, value)) in form_urlencoded::parse(body).enumerate() {
            if i == MAX_FORM_FIELDS {
                return Err(OAuthError::invalid_request(format!("more than {MAX_FORM_FIELDS} form parameters")));
            }
            if value.is_empty() {
                continue;
            }
            if !REPEATABLE.contains(&name.as_ref()) && params.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(params))
    }

    /// The value of a parameter sent once. Of a [`REPEATABLE`] one, the
    /// first: read those with [`Form::get_all`].
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a parameter, in the order sent.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is required")))
    }
}

/// The value of cookie `name` in the request, if it sent one.
pub(crate) fn cookie<'a>(headers: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The request's `DPoP` proofs (RFC 9449 §4.1), each header a proof; one
/// that is not text is kept, empty, so that it fails as a proof and
/// counts toward "one proof per request".
pub(crate) fn dpop_proofs(headers: &hyper::HeaderMap) -> Vec<&str> {
    headers.get_all("dpop").iter().map(|v| v.to_str().unwrap_or_default()).collect()
}

/// A bearer token in the `Authorization` header (RFC 6750 §2.1), if any.
pub(crate) fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_refuse_repeats_and_drop_empty_values() {
        let form = Form::parse(b"grant_type=client_credentials&scope=&scope=read%20write").unwrap();
        assert_eq!(form.get("scope"), Some("read write"));
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert!(Form::parse(b"a=1&a=2").is_err());
    }

    #[test]
    fn resource_and_audience_may_repeat_and_are_read_in_order() {
        let form =
            Form::parse(b"resource=https%3A%2F%2Fa.example&resource=&audience=x&resource=urn%3Ab&audience=y").unwrap();
        assert_eq!(form.get_all("resource"), ["https://a.example", "urn:b"]);
        assert_eq!(form.get_all("audience"), ["x", "y"]);
        assert_eq!(form.get_all("scope"), Vec::<String>::new());
        assert!(Form::parse(b"scope=a&scope=b").is_err(), "other parameters still may not");
    }

    #[test]
    fn forms_have_a_bounded_number_of_fields() {
        let fields = |n: usize| (0..n).map(|i| format!("p{i}=v")).collect::<Vec<_>>().join("&");
        assert!(Form::parse(fields(MAX_FORM_FIELDS).as_bytes()).is_ok());
        let error = Form::parse(fields(MAX_FORM_FIELDS + 1).as_bytes()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn json_nesting_is_bounded_and_brackets_in_strings_do_not_count() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_json(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let error = parse_json(nested(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(error.contains("nests deeper"), "{error}");
        // A megabyte of brackets fails fast, without recursion.
        assert!(parse_json(nested(1 << 20).as_bytes()).is_err());
        let text = format!(r#"{{"name": "{}\" [[", "k": [1]}}"#, "[".repeat(100));
        assert_eq!(parse_json(text.as_bytes()).unwrap()["k"][0], 1);
    }

    #[test]
    fn errors_render_as_rfc6749_json_and_are_not_cached() {
        let reply = Reply::error(&OAuthError::new(ErrorCode::InvalidClient, "nope")).into_response();
        assert_eq!(reply.status(), 401);
        assert_eq!(reply.headers()[header::CACHE_CONTROL], "no-store");
        assert!(reply.headers().contains_key(header::WWW_AUTHENTICATE));
        let busy = Reply::error(&OAuthError::new(ErrorCode::TemporarilyUnavailable, "busy")).into_response();
        assert_eq!(busy.status().as_u16(), 503);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
    }
}
