//! What ties a request's log lines together: its request id and its W3C
//! trace context.
//!
//! A request id comes from a valid incoming `X-Request-Id` (so a proxy's id
//! carries through) or is made here; the trace id comes from a valid
//! `traceparent` (W3C Trace Context, level 1, §3.2), so the request's lines
//! join the caller's trace, or is made here. Anything invalid is ignored
//! and replaced, never echoed: a header is attacker-controlled text bound
//! for logs.

use std::sync::atomic::{AtomicBool, Ordering};

use hyper::HeaderMap;
use hyper::header::HeaderName;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use ring::rand::{SecureRandom, SystemRandom};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether spans are exported (an OpenTelemetry layer is installed): only
/// then is a request's span joined to its caller's trace, so a server
/// that exports nothing pays nothing for it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says that spans are exported: request spans join their callers' traces
/// from now on.
pub fn export_traces() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// The header that carries the request id, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// A request's id, kept in its extensions for the handlers that record it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A request's identifiers.
#[derive(Debug, PartialEq, Eq)]
pub struct Context {
    pub request_id: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span, from a valid `traceparent`: its id and flags.
    parent: Option<(String, u8)>,
}

impl Context {
    /// The identifiers of a request with `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let request_id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_request_id(id))
            .map_or_else(|| hex(&random::<16>()), str::to_string);
        let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        match parent {
            Some((trace_id, span_id, flags)) => {
                Self { request_id, trace_id: trace_id.to_string(), parent: Some((span_id.to_string(), flags)) }
            }
            None => Self { request_id, trace_id: hex(&random::<16>()), parent: None },
        }
    }

    /// Records the request's trace id in its `span` (a field left empty at
    /// its creation). When spans are exported, the span joins the caller's
    /// trace as the child of its span, or, without one, starts a trace whose
    /// id is the one recorded.
    pub fn join(&self, span: &tracing::Span) {
        if !EXPORTING.load(Ordering::Relaxed) {
            span.record("trace_id", self.trace_id.as_str());
            return;
        }
        let remote = self.parent.as_ref().and_then(|(span_id, flags)| {
            let trace_id = TraceId::from_hex(&self.trace_id).ok()?;
            let span_id = SpanId::from_hex(span_id).ok()?;
            Some(SpanContext::new(trace_id, span_id, TraceFlags::new(*flags), true, TraceState::default()))
        });
        match remote {
            Some(remote) => {
                let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
                span.record("trace_id", self.trace_id.as_str());
            }
            None => {
                let started = span.context().span().span_context().trace_id();
                span.record("trace_id", started.to_string().as_str());
            }
        }
    }
}

/// A request id worth keeping: 1 to 128 characters of letters, digits and
/// `-_.:+/=` (UUIDs, ULIDs, base64 and the ids of common proxies), nothing
/// that could forge a log line or a header.
fn is_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b))
}

/// The trace id of a valid `traceparent`.
#[cfg(test)]
fn trace_id_of(header: &str) -> Option<&str> {
    parse_traceparent(header).map(|(trace_id, _, _)| trace_id)
}

/// The trace id, parent span id and flags of a valid `traceparent`:
/// `version-traceid-parentid-flags`, lowercase hex, version `00` exactly
/// four fields, neither id all zeros; a later version may add fields after
/// the four (§3.2.4), and version `ff` is invalid.
fn parse_traceparent(header: &str) -> Option<(&str, &str, u8)> {
    let mut fields = header.trim().split('-');
    let (version, trace_id, parent_id, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let lower_hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || fields.next().is_none())
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    let flags = u8::from_str_radix(flags, 16).ok()?;
    valid.then_some((trace_id, parent_id, flags))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    // Ids only need to be unique, not secret: a failed random source
    // leaves zeros rather than stopping the request.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_valid_request_id_is_kept_and_anything_else_replaced() {
        let kept = Context::of(&headers(&[("x-request-id", "0f8c2e6a-7d0b-4c1e-9f3a-2b5d8e1c4a7f")]));
        assert_eq!(kept.request_id, "0f8c2e6a-7d0b-4c1e-9f3a-2b5d8e1c4a7f");
        for bad in ["", "a b", "x\"y", "{\"level\":\"ERROR\"}", &"a".repeat(129), "é"] {
            let made = Context::of(&headers(&[("x-request-id", bad)]));
            assert_ne!(made.request_id, bad);
            assert_eq!(made.request_id.len(), 32, "{bad:?}");
        }
        let (a, b) = (Context::of(&HeaderMap::new()), Context::of(&HeaderMap::new()));
        assert_ne!(a.request_id, b.request_id);
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(Context::of(&headers(&[("traceparent", parent)])).trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        // A later version may carry more fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(trace_id_of(later), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
            let made = Context::of(&headers(&[("traceparent", bad)])).trace_id;
            assert_eq!(made.len(), 32);
            assert!(!bad.contains(&made), "{bad}");
        }
    }
}
